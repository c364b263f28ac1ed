"""Benchmarks. ``python -m zoofusion.bench zoo ...`` times zoo training batched vs one model at a time.

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
from dataclasses import dataclass

import numpy as np
import torch

from zoofusion import cnn

logger = logging.getLogger(__name__)

STUDY_ZOO_SIZES = (2749, 1749)


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


@dataclass(frozen=True)
class ZooTiming:
    """Wall time of training one synthetic zoo."""

    label: str
    seconds: float
    model_images: int
    result: tuple | None = None  # (stacked weights, history, seeds) of the batched run, for the logging timing

    @property
    def model_images_per_s(self) -> float:
        return self.model_images / self.seconds

    @property
    def gflops(self) -> float:
        return self.model_images_per_s * train_flop_per_image() / 1e9


def synthetic_data(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 HWC images and random {0,1} labels (throughput does not depend on content)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, n_images)


def time_zoo(
    n_models: int, n_images: int, epochs: int, batch_size: int, group_size: int | None, seed: int = 0,
    device: str = "cpu",
) -> ZooTiming:
    """Train ``n_models`` on ``n_images`` random images: batched if ``group_size`` is set, else one at a time."""
    images, labels = synthetic_data(n_images, seed)
    train_idx, val_idx = np.arange(n_images), np.arange(0)
    seeds = list(range(seed, seed + n_models))
    kw = dict(epochs=epochs, batch_size=batch_size, lr=1e-3, device=device)
    # Warm-up so oneDNN primitive creation (or CUDA start-up) is not timed.
    warm = np.arange(min(n_images, batch_size))
    result = None
    if group_size is None:
        cnn.train_single(images, labels, warm, val_idx, seed, **{**kw, "epochs": 1})
        _sync(device)
        t0 = time.perf_counter()
        for s in seeds:
            cnn.train_single(images, labels, train_idx, val_idx, s, **kw)
        label = "single"
    else:
        g = min(group_size, n_models)
        cnn.train_batched(images, labels, warm, val_idx, seeds[:g], group_size=g, **{**kw, "epochs": 1})
        _sync(device)
        t0 = time.perf_counter()
        weights, history = cnn.train_batched(images, labels, train_idx, val_idx, seeds, group_size=group_size, **kw)
        result = (weights, history, seeds)
        label = f"batched_g{group_size}"
    _sync(device)
    timing = ZooTiming(label, time.perf_counter() - t0, n_models * n_images * epochs, result)
    logger.info("%s: %.2f s for %d model-images", label, timing.seconds, timing.model_images)
    return timing


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


def time_logging(timing: ZooTiming, epochs: int, batch_size: int) -> float:
    """Seconds the zoo stage's MLflow logging (a child run per CNN: params, per-epoch metrics, weights) takes
    for the models of a batched timing; excludes the store's one-off creation."""
    from zoofusion.config import ZooParams
    from zoofusion.zoo import ZooLogger

    weights, history, seeds = timing.result
    shard = {"weights": weights, "seeds": torch.tensor(seeds, dtype=torch.int64),
             "history": {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in history.items()}}
    z = ZooParams(epochs=epochs, batch_size=batch_size, lr=1e-3)
    with _scratch_mlflow() as mlflow, mlflow.start_run(run_name="bench") as parent:
        zl = ZooLogger(mlflow, parent.info.run_id, "bench", z, {})
        zl.log_shard(0, shard)
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
    """CLI: ``zoo`` subcommand (others may be added)."""
    parser = argparse.ArgumentParser(prog="python -m zoofusion.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zoo", help="batched vs one-at-a-time zoo training throughput")
    z.add_argument("--models", type=_positive_int, default=16)
    z.add_argument("--images", type=_positive_int, default=1024, help="training images per model")
    z.add_argument("--epochs", type=_positive_int, default=2)
    z.add_argument("--batch-size", type=_positive_int, default=128)
    z.add_argument("--group-size", type=_positive_int_list, default=[8],
                   help="models per batched group; a comma list (4,8,16) times each")
    z.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: torch's)")
    z.add_argument("--study-images", type=_positive_int, default=1600, help="training images per study model")
    z.add_argument("--study-epochs", type=_positive_int, default=20)
    z.add_argument("--skip-single", action="store_true", help="time only the batched path")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--device", default="cpu", help="cpu | cuda: where to train (the same code runs on both)")
    z.add_argument("--no-logging", action="store_true", help="skip timing the MLflow logging of the batched zoo")
    return parser


def run_zoo(args: argparse.Namespace) -> list[str]:
    """Run the zoo benchmark and return its report lines."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    macs = cnn_macs_per_image()
    lines = [
        f"device: {args.device}",
        f"threads: {threads}",
        f"models: {args.models}",
        f"images_per_model: {args.images}",
        f"epochs: {args.epochs}",
        f"batch_size: {args.batch_size}",
        f"macs_per_image_fwd: {sum(macs.values())} (conv1 {macs['conv1']} + conv2 {macs['conv2']} + fc {macs['fc']})",
        f"flop_per_image_train: {train_flop_per_image()} (MACs x2 x3 for fwd+bwd)",
    ]
    n = 8192 if torch.device(args.device).type == "cuda" else 1024
    peak = matmul_peak_gflops(n, device=args.device)
    lines.append(f"matmul_peak_gflops: {peak:.1f} (float32 {n}x{n} on {args.device}, best of 10)")
    timings = []
    for g in args.group_size:
        t = time_zoo(args.models, args.images, args.epochs, args.batch_size, g, args.seed, args.device)
        timings.append(t)
        lines += [
            f"{t.label}_seconds: {t.seconds:.2f}",
            f"{t.label}_model_images_per_s: {t.model_images_per_s:.0f}",
            f"{t.label}_gflops: {t.gflops:.1f} ({100 * t.gflops / peak:.0f}% of matmul peak)",
        ]
    best = max(timings, key=lambda t: t.model_images_per_s)
    lines.append(f"best_batched: {best.label}")
    if not args.skip_single:
        single = time_zoo(args.models, args.images, args.epochs, args.batch_size, None, args.seed, args.device)
        lines += [
            f"single_seconds: {single.seconds:.2f}",
            f"single_model_images_per_s: {single.model_images_per_s:.0f}",
            f"single_gflops: {single.gflops:.1f} ({100 * single.gflops / peak:.0f}% of matmul peak)",
            f"speedup_{best.label}_over_single: {best.model_images_per_s / single.model_images_per_s:.2f}",
        ]
    if not args.no_logging:
        log_s = time_logging(best, args.epochs, args.batch_size)
        lines += [f"mlflow_logging_seconds: {log_s:.2f} ({args.models} child runs: params, "
                  f"{4 * args.epochs + 4} metrics, weights artifact)",
                  f"mlflow_logging_overhead: {100 * log_s / best.seconds:.1f}% of {best.label} training time "
                  f"(this run's {args.epochs} epochs x {args.images} images)"]
    study = sum(STUDY_ZOO_SIZES) * args.study_images * args.study_epochs
    hours = study / best.model_images_per_s / 3600
    lines += [
        f"study_model_images: {study} ({'+'.join(map(str, STUDY_ZOO_SIZES))} models x {args.study_images} images"
        f" x {args.study_epochs} epochs)",
        f"study_hours_estimate: {hours:.2f} (1 process, {threads} threads, {best.label}, training only)",
    ]
    if threads == 1:
        lines.append(f"study_hours_estimate_2_processes: {hours / 2:.2f} (2 workers x 1 thread, ideal scaling)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and print the chosen benchmark's report."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "zoo":
        for line in run_zoo(args):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
