"""Benchmarks. ``python -m zoofusion.bench zoo ...`` times every zoo training path (one model at a time, batched
grouped convolutions, shared-order groups; in one process or one process per core) and the path that the zoo
stage's calibration (:mod:`zoofusion.calibrate`) picks on this machine. ``python -m zoofusion.bench study ...``
runs and times the study's whole chain, zoos to verdict, in one process without DVC or MLflow
(:mod:`zoofusion.study_run`), e.g. at full scale on a GPU.

Everything printed is one ``name: value`` per line so numbers can be quoted directly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch

from zoofusion import study_run
from zoofusion.core import train

logger = logging.getLogger(__name__)

STUDY_ZOO_SIZES = tuple(study_run.STUDY_MODELS.values())


def cnn_macs_per_image() -> dict[str, int]:
    """Multiply-accumulates of one SmallCNN forward pass on one 3x32x32 image, per layer."""
    conv1 = 6 * 28 * 28 * (3 * 5 * 5)
    conv2 = 16 * 10 * 10 * (6 * 5 * 5)
    fc = 2 * 400
    return {"conv1": conv1, "conv2": conv2, "fc": fc}


def train_flop_per_image() -> int:
    """Training FLOPs per image: MACs x 2 (FLOP per MAC) x 3 (forward + ~2x for backward)."""
    return sum(cnn_macs_per_image().values()) * 2 * 3


def matmul_peak_gflops(n: int = 1024, reps: int = 10, device: str = "cpu") -> float:
    """Best-of-``reps`` float32 n x n matmul rate in GFLOP/s on ``device`` (CPU: the current torch threads)."""
    if n < 1 or reps < 1:
        raise ValueError(f"matmul_peak_gflops needs n >= 1 and reps >= 1; got n={n}, reps={reps}.")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    a @ b  # warm-up: MKL initialisation and thread pool start (or CUDA kernel selection)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _scratch_mlflow():
    """A throw-away MLflow store (sqlite + artifacts in a temp folder), as the zoo stage uses one."""
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="zoofusion-bench-") as tmp:
        os.chdir(tmp)  # the default artifact root is relative to the cwd
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            from zoofusion.tracking import setup_mlflow

            yield setup_mlflow("bench-zoo")
        finally:
            os.chdir(old_cwd)
            if old_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_uri


def time_logging(result: tuple, epochs: int, batch_size: int) -> float:
    """Seconds the zoo stage's MLflow logging (a child run per CNN: params, per-epoch metrics, weights) takes for
    the models of ``result`` = (stacked weights, history, seeds); excludes the store's one-off creation."""
    from zoofusion.config import ZooParams
    from zoofusion.stages.zoo import log_shard
    from zoofusion.tracking import BatchLogger

    weights, history, seeds = result
    shard = {"weights": weights, "seeds": torch.tensor(seeds, dtype=torch.int64),
             "history": {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in history.items()}}
    # log_shard reads only these three; the rest of a zoo section (no defaults: params.yaml's) means nothing here
    z = ZooParams.model_construct(epochs=epochs, batch_size=batch_size, lr=1e-3)
    with _scratch_mlflow() as mlflow, mlflow.start_run(run_name="bench") as parent:
        zl = BatchLogger(mlflow, parent.info.run_id)
        log_shard(zl, "bench", z, 0, shard)
    return zl.seconds


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 8 or 4,8,16; got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"group sizes must be ints >= 1; got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; got {text!r}") from exc
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """CLI: the ``zoo`` and ``study`` subcommands."""
    parser = argparse.ArgumentParser(prog="python -m zoofusion.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zoo", help="zoo training throughput of every training path, and the one calibration picks")
    z.add_argument("--models", type=_positive_int, default=16, help="models per process")
    z.add_argument("--images", type=_positive_int, default=1024, help="training images per model")
    z.add_argument("--epochs", type=_positive_int, default=2)
    z.add_argument("--batch-size", type=_positive_int, default=128)
    z.add_argument("--group-size", type=_positive_int_list, default=None,
                   help="group sizes of the grouped paths, a comma list (default: 4,8,16 on CPU, 16,64 on CUDA)")
    z.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads of the one-process paths (default: one per usable core)")
    z.add_argument("--cores", type=_positive_int, default=None,
                   help="processes of the one-process-per-core paths (default: usable cores; 1 = none)")
    z.add_argument("--data-order", choices=train.DATA_ORDERS, default="own",
                   help="the zoo's data order: calibration picks among the paths that train it (zoo.data_order)")
    z.add_argument("--repeats", type=_positive_int, default=1, help="timings per path (best is kept)")
    z.add_argument("--cache-dir", default=None,
                   help="calibration cache to read/write (default: a fresh calibration in a scratch folder)")
    z.add_argument("--study-images", type=_positive_int, default=1600, help="training images per study model")
    z.add_argument("--study-epochs", type=_positive_int, default=20)
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--device", default="cpu", help="cpu | cuda: where to train (the same code runs on both)")
    z.add_argument("--no-logging", action="store_true", help="skip timing the MLflow logging of the zoo")
    study_run.add_arguments(sub.add_parser("study", help="the study's chain, zoos to verdict, in one process "
                                           "without DVC/MLflow/Optuna (resumable in --out)"))
    return parser


def run_zoo(args: argparse.Namespace) -> list[str]:
    """Run the zoo benchmark and return its report lines.

    1. Calibrate as the zoo stage does (a fresh, short calibration unless ``--cache-dir``): its choice is
       ``chosen_path``.
    2. Time every path of both data orders on the benchmark's zoo (``--models`` per process x ``--images`` x
       ``--epochs``; a multi-process path runs that zoo in each of its processes at once) and report model-images/s
       of each, and the chosen path's rate against the one-model loop and against the matmul peak.
    """
    from zoofusion import calibrate as cal

    cores = args.cores or cal.usable_cores()
    threads = args.threads or (cores if args.cores else torch.get_num_threads())
    torch.set_num_threads(threads)
    macs = cnn_macs_per_image()
    flop = train_flop_per_image()
    lines = [
        f"device: {args.device}",
        f"cpu: {cal._cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {cal.usable_cores()} usable cores)",
        f"torch: {torch.__version__}",
        f"threads: {threads}",
        f"cores: {cores}",
        f"models: {args.models}",
        f"images_per_model: {args.images}",
        f"epochs: {args.epochs}",
        f"batch_size: {args.batch_size}",
        f"data_order: {args.data_order}",
        f"macs_per_image_fwd: {sum(macs.values())} (conv1 {macs['conv1']} + conv2 {macs['conv2']} + fc {macs['fc']})",
        f"flop_per_image_train: {flop} (MACs x2 x3 for fwd+bwd)",
    ]
    n = 8192 if torch.device(args.device).type == "cuda" else 1024
    peak = matmul_peak_gflops(n, device=args.device)
    lines.append(f"matmul_peak_gflops: {peak:.1f} (float32 {n}x{n} on {args.device}, {threads} threads, best of 10)")

    gangs: dict = {}
    try:
        with contextlib.ExitStack() as stack:
            cache = args.cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="zoofusion-cal-"))
            # the zoo stage's calibration; its synthetic shard no larger than the benchmark's (tiny test runs)
            cal_work = cal.Work(n_images=min(cal.Work.n_images, args.images), batch_size=args.batch_size)
            plan = cal.calibrate(args.device, args.data_order, cache, cores=cores, threads=threads,
                                 group_sizes=args.group_size, max_group_size=args.models, work=cal_work, gangs=gangs,
                                 refresh=args.cache_dir is None)
        work = cal.Work(n_models=args.models, n_images=args.images, epochs=args.epochs, batch_size=args.batch_size,
                        repeats=args.repeats, seed=args.seed)
        kw = dict(cores=cores, threads=threads, group_sizes=args.group_size, max_group_size=args.models)
        own = cal.candidates(args.device, "own", **kw)
        shared = [c for c in cal.candidates(args.device, "shared", **kw) if c.path != "single"]
        cands = own + shared
        timer = cal.RealTimer(work, args.device, gangs)
        rates = cal.measure(cands, timer, args.repeats, prune_below=0.0)
        result = timer.shard.last if timer.shard is not None else None
    finally:
        cal.close_gangs(gangs)

    single = rates["single"]
    for c in cands:
        order = "shared data order" if c.path.startswith("shared") else "own data order"
        lines.append(f"{c.name}_model_images_per_s: {rates[c.name]:.0f} ({c.workers} x {c.threads} threads, {order})")
    batched = [c.name for c in cands if c.path.startswith("batched") and c.workers == 1]
    if batched:
        best_b = max(batched, key=rates.get)
        lines += [f"best_batched: {best_b}",
                  f"speedup_{best_b}_over_single: {rates[best_b] / single:.2f}"]
    for order, group in (("own", own), ("shared", [c for c in own if c.path == "single"] + shared)):
        names = [c.name for c in group if c.name in rates]
        best = max(names, key=rates.get)
        lines.append(f"best_measured_{order}_order: {best} ({rates[best] / single:.2f}x single)")
    chosen = plan.name
    rate = rates.get(chosen, plan.model_images_per_s)
    gflops = rate * flop / 1e9
    lines += [
        f"calibration: {plan.seconds:.1f} s ({'cached' if plan.from_cache else 'measured'}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in plan.rates.items()) + ")",
        f"chosen_path: {chosen} (path {plan.path}, {plan.workers} processes x {plan.threads} threads, "
        f"data_order {plan.data_order})",
        f"chosen_model_images_per_s: {rate:.0f}",
        f"speedup_chosen_over_single: {rate / single:.2f}",
        f"chosen_gflops: {gflops:.1f}",
        f"chosen_gflops_fraction_of_peak: {gflops / peak:.3f}",
    ]
    if not args.no_logging and result is not None:
        log_s = time_logging(result, args.epochs, args.batch_size)
        train_s = args.models * args.images * args.epochs / rate
        lines += [f"mlflow_logging_seconds: {log_s:.2f} ({args.models} child runs: params, "
                  f"{4 * args.epochs + 4} metrics, weights artifact)",
                  f"mlflow_logging_overhead: {100 * log_s / train_s:.1f}% of {chosen} training time "
                  f"(this run's {args.epochs} epochs x {args.images} images)"]
    study = sum(STUDY_ZOO_SIZES) * args.study_images * args.study_epochs
    lines += [
        f"study_model_images: {study} ({'+'.join(map(str, STUDY_ZOO_SIZES))} models x {args.study_images} images"
        f" x {args.study_epochs} epochs)",
        f"study_hours_estimate: {study / rate / 3600:.2f} ({chosen}, training only)",
    ]
    if cores > 1:
        multi = [c.name for c in cands if c.workers == cores and c.path in (plan.path, "single")]
        best_m = max(multi, key=rates.get)
        lines.append(f"study_hours_estimate_{cores}_processes: {study / rates[best_m] / 3600:.2f} ({best_m}, measured)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and print the chosen benchmark's report."""
    args = build_parser().parse_args(argv)
    if args.command == "study":  # progress (shards, steps) on stderr, the figures on stdout
        from zoofusion.console import setup_logging

        from zoofusion.config import ConfigError

        setup_logging()
        try:
            return study_run.run_study(args)
        except (ConfigError, FileNotFoundError) as e:  # a bad flag or a missing input: one line, no traceback
            raise SystemExit(f"bench study: {e}") from None
    logging.basicConfig(level=logging.WARNING)
    if args.command == "zoo":
        for line in run_zoo(args):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
