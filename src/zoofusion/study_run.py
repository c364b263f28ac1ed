"""``python -m zoofusion.bench study``: the study's science in one process, without DVC, MLflow or Optuna, for a
machine that has torch (a GPU) but not the tracking stack.

The chain, each step with the functions its DVC stage uses, every output in ``--out``:

1. ``zoo_black``, ``zoo_cat``: the zoo stage's shards (``stages.zoo.plan_shards`` / ``train_shard``, so
   ``core.train.train_models``: the same seeds, split and models) on the prepared ``<domain>.npz`` in ``--data``;
2. ``kernels``: ``stages.kernels.run`` (accuracy floor, raw and aligned harvests);
3. ``cyclegan_<variant>_<unit>``: ``steps.cyclegan.train_unit`` on the cyclegan stage's units and configs, and
   its distances d(A,B), d(G_A2B(A),B), d(G_B2A(B),A) per layer;
4. ``generate_<variant>``: ``stages.generate.generate``;
5. ``evaluate``: the evaluate stage's candidates, protocol and verdict (``stages.evaluate.score_all``,
   ``verdict``, ``verdict_summary``), with ``evaluate.budget`` candidates per kind.

Resumable across processes: zoo shards and CycleGAN checkpoints are written as they finish (``torch.save``, read
back with ``torch.load(weights_only=True)``), and ``<out>/study.json`` records every finished step with its
figures and a key of the params it read, so a rerun with the same flags skips what is done. ``--stage zoo`` runs
steps 1-2, ``--stage rest`` 3-5 (on the kernels of an earlier ``--stage zoo``), ``--stage all`` everything.
Every figure is printed as one ``name: value`` line as soon as it is known.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

from zoofusion.calibrate import usable_cores
from zoofusion.config import DOMAINS, METHODS, VARIANTS, Params, parse_params
from zoofusion.io import file_md5, load_npz

log = logging.getLogger(__name__)

STUDY_MODELS = {"black": 2749, "cat": 1749}  # the study's zoo sizes (Makefile STUDY_PARAMS)
CUDA_GROUPS = (64, 128, 256)  # grouped-convolution sizes the CUDA calibration times
ABSENT_ON_GPU_MACHINE = ("mlflow", "dvc", "optuna", "ray", "torchvision")  # so never imported here


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=("zoo", "rest", "all"), default="all",
                   help="zoo: zoos + kernels; rest: CycleGANs, generate, evaluate (after a zoo run); all: both")
    p.add_argument("--data", default=".gpu/data", help="folder of black.npz, cat.npz, val.npz, test.npz")
    p.add_argument("--out", default=".gpu/run", help="folder of every output, shard, checkpoint and study.json")
    p.add_argument("--json", default=None, help="also copy study.json here after every step (e.g. $OUT/study.json)")
    p.add_argument("--params", default="params.yaml", help="the base params; the flags below override it")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the study's zoo sizes (2749 black + 1749 cat models; at least 2 each)")
    p.add_argument("--zoo-epochs", type=int, default=None, help="zoo training epochs (default: params, 20)")
    p.add_argument("--cyclegan-epochs", type=int, default=200, help="the study's 200")
    p.add_argument("--budget", type=int, default=48, help="candidates per kind in evaluate (0 = the study's all)")
    p.add_argument("--workers", type=int, default=None, help="evaluate processes (default: every usable core)")
    p.add_argument("--path", default=None,
                   help="zoo training path (single | batched_g<N> | shared_g<N>); default: cuda calibrates "
                        f"batched_g{{{','.join(map(str, CUDA_GROUPS))}}} and takes the fastest, cpu trains single")
    p.add_argument("--cyclegan-workers", type=int, default=None,
                   help="CycleGANs trained at once, one process each (default: 3, all of them, on cuda; 1 on cpu)")
    p.add_argument("--shard-size", type=int, default=256, help="zoo models per resumable shard")
    p.add_argument("--cudnn-benchmark", choices=("on", "off"), default="on",
                   help="let cuDNN time its convolution algorithms per shape (cuda only; results equal up to rounding)")
    p.add_argument("--time-limit-s", type=float, default=0.0,
                   help="start no new zoo shard or step after this many seconds (0 = none); rerun to resume")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other params.yaml key, as dvc exp run -S (e.g. kernels.min_val_accuracy=0.5)")


def build_params(args: argparse.Namespace) -> Params:
    """params.yaml with the study's scale and the flags on top, validated by zoofusion.config."""
    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    shard = args.shard_size
    sets = {"device": args.device, "zoo.shard_size": shard,
            "zoo.group_size": min(shard, raw.get("zoo", {}).get("group_size", shard)),
            "cyclegan.epochs": args.cyclegan_epochs, "evaluate.budget": args.budget, "evaluate.n_selected": 10,
            "evaluate.workers": args.workers or usable_cores()}
    sets.update({f"zoo.n_models.{d}": max(2, round(n * args.scale)) for d, n in STUDY_MODELS.items()})
    if args.zoo_epochs is not None:
        sets["zoo.epochs"] = args.zoo_epochs
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        sets[key] = yaml.safe_load(value)
    for key, value in sets.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_params(raw)


class Run:
    """The figures and finished steps of one --out folder (study.json), and the time limit of this process."""

    def __init__(self, out: Path, json_copy: str | None, params: Params, device: str, data_md5: dict[str, str],
                 time_limit_s: float) -> None:
        self.out, self.json_copy = out, json_copy
        self.file = out / "study.json"
        self.state = json.loads(self.file.read_text()) if self.file.is_file() else {"steps": {}}
        self.keys = step_keys(params, device, data_md5)
        self.t0 = time.perf_counter()
        self.time_limit_s = time_limit_s

    def key(self, step: str) -> str:
        return self.keys[step.split("_")[0]]  # zoo_black -> the zoo key, cyclegan_study_conv1 -> cyclegan, ...

    def done(self, step: str) -> bool:
        """Finished earlier with the same params: print its figures again (so one log holds them all)."""
        rec = self.state["steps"].get(step)
        if rec is None or rec["key"] != self.key(step):
            return False
        log.info("%s: done earlier, skipped", step)
        for name, value in rec["figures"].items():
            emit(name, value)
        return True

    def out_of_time(self) -> bool:
        return bool(self.time_limit_s) and time.perf_counter() - self.t0 > self.time_limit_s

    def record(self, step: str, figures: dict) -> None:
        for name, value in figures.items():
            emit(name, value)
        self.state["steps"][step] = {"key": self.key(step), "figures": figures}
        self.save()

    def save(self) -> None:
        text = json.dumps(self.state, indent=1) + "\n"
        for path in filter(None, (self.file, self.json_copy)):
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def step_keys(params: Params, device: str, data_md5: dict[str, str]) -> dict[str, str]:
    """A key per step kind over every param it and its upstream steps read (workers and speed knobs left out), so
    a finished step is reused only by a run that would compute the same thing."""
    d = params.model_dump()
    for section, knob in (("zoo", "workers"), ("zoo", "path"), ("zoo", "grid_models"), ("evaluate", "workers")):
        d[section].pop(knob)
    chain = (("zoo", {"seed": d["seed"], "device": device, "zoo": d["zoo"], "data": data_md5}),
             ("kernels", d["kernels"]), ("cyclegan", [d["cyclegan"], d["translation"]]), ("generate", d["generate"]),
             ("evaluate", [d["evaluate"], d["data"]["dark_luminance"]]))
    h, keys = hashlib.sha256(), {}
    for name, part in chain:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        keys[name] = h.hexdigest()[:12]
    return keys


def emit(name: str, value) -> None:
    print(f"{name}: {value}", flush=True)


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def choose_path(args: argparse.Namespace, params: Params, device: str, out: Path) -> tuple[str, dict]:
    """--path, else on cuda the fastest batched group size timed here (calibrate.py, cached in --out), else single."""
    if args.path:
        return args.path, {"zoo_path": args.path}
    if device != "cuda":
        return "single", {"zoo_path": "single"}
    from zoofusion.calibrate import Work, calibrate

    z = params.zoo
    plan = calibrate(device, z.data_order, out / "calibrate", max_group_size=z.shard_size, cores=1,
                     group_sizes=CUDA_GROUPS, work=Work(n_images=1024, batch_size=z.batch_size))
    rates = ", ".join(f"{k} {v:.0f}" for k, v in plan.rates.items())
    return plan.path, {"zoo_path": plan.path, "zoo_calibration_model_images_per_s": rates}


def zoo_step(domain: str, params: Params, device: str, path: str, data_dir: Path, run: Run) -> dict | None:
    """Train (or resume) one domain's zoo shard by shard, as the zoo stage does; None when the time ran out."""
    from zoofusion.stages.zoo import assemble, cache_key, load_shard, plan_shards, save_shard, train_shard, write_outputs

    z = params.zoo
    data_file = data_dir / f"{domain}.npz"
    shards_dir = run.out / "shards" / f"{domain}-{cache_key(file_md5(data_file), z, params.seed, device)}"
    shards_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_shards(domain, getattr(z.n_models, domain), z, params.seed, data_file, device, shards_dir, path)
    data = {k: v for k, v in load_npz(data_file).items() if k in ("images", "labels")}
    for i, job in enumerate(jobs):
        if Path(job.out).is_file():
            continue
        if run.out_of_time():
            log.warning("zoo %s: time limit reached before shard %d of %d; rerun to resume", domain, i + 1, len(jobs))
            return None
        shard = train_shard(job, data)
        save_shard(shard, Path(job.out))
        log.info("zoo %s: shard %d/%d (%d models) in %.1f s", domain, i + 1, len(jobs), len(job.seeds), shard["seconds"])
    shards = [load_shard(Path(j.out)) for j in jobs]
    weights, history, seeds = assemble(shards)
    write_outputs(run.out / "zoo" / domain, weights, history, seeds)
    seconds = sum(float(s["seconds"]) for s in shards)  # training time, over every process that trained a shard
    model_images = len(seeds) * int(shards[0]["n_train"]) * z.epochs
    val_acc = history["val_acc"][:, -1]
    return {f"zoo_{domain}_models": len(seeds), f"zoo_{domain}_train_images": int(shards[0]["n_train"]),
            f"zoo_{domain}_s": _r(seconds, 2), f"zoo_{domain}_model_images": model_images,
            f"zoo_{domain}_model_images_per_s": round(model_images / seconds),
            f"zoo_{domain}_val_acc_mean": _r(val_acc.mean()), f"zoo_{domain}_val_acc_min": _r(val_acc.min()),
            f"zoo_{domain}_val_acc_max": _r(val_acc.max())}


def kernels_step(params: Params, run: Run) -> dict:
    from zoofusion.stages import kernels

    t0 = time.perf_counter()
    s = kernels.run(params, zoo=run.out / "zoo", out=run.out / "kernels", metrics=run.out / "kernels.json")
    a = s["alignment"]
    return {"kernels_s": _r(time.perf_counter() - t0, 2),
            **{f"kernels_{d}_kept": f"{s[d]['kept']} of {s[d]['models']}" for d in DOMAINS},
            "kernels_reference": a["reference"],
            **{f"kernels_{d}_cosine_to_reference": f"raw {a[f'{d}_cosine_to_reference_raw']} -> aligned "
                                                   f"{a[f'{d}_cosine_to_reference_aligned']}" for d in DOMAINS}}


def unit_names(params: Params, variant: str) -> tuple[str, ...]:
    """The CycleGANs of a variant, as the cyclegan stage names them: one per layer, or one for the pair."""
    return ("pair",) if params.translation.variant(variant).translate == "pair" else ("conv1", "conv2")


def cyclegan_unit(task: tuple[Params, str, str, Path], shared: None = None) -> dict:
    """Train one CycleGAN (a variant's layer or pair) with the cyclegan stage's step, checkpointed in --out, and
    return its figures. A worker function: the units train in parallel processes."""
    from zoofusion.steps.cyclegan import kernel_files, load_kernels, make_config, train_unit, units

    params, variant, name, out = task
    v = params.translation.variant(variant)
    files = kernel_files(out / "kernels", v)
    unit = next(u for u in units(v, *load_kernels(files)) if u.name == name)
    cfg = make_config(params.cyclegan, v, params.seed, params.torch_device(), name)
    epochs_here = []  # epochs trained by this process (a resumed checkpoint starts later)
    done = train_unit(unit, variant, cfg, files, out / "cyclegan" / variant, out / "checkpoints",
                      on_epoch=lambda epoch, losses, state: epochs_here.append(epoch))
    result, seconds = done.result, done.seconds
    step = f"cyclegan_{variant}_{name}"
    figures = {f"{step}_s": _r(seconds, 2), f"{step}_samples": f"A {len(unit.A)}, B {len(unit.B)}",
               f"{step}_epochs": cfg.epochs, f"{step}_s_per_epoch": _r(seconds / max(1, len(epochs_here)), 3),
               f"{step}_final_loss_G": _r(result.history["loss_G"][-1]),
               f"{step}_final_loss_cycle": _r(result.history["loss_cycle"][-1])}
    for layer, d in done.distances.items():
        figures.update({f"dist_{variant}_{layer}_{k.removeprefix('dist_')}": _r(v) for k, v in d.items()})
    return figures


def cyclegan_steps(params: Params, run: Run, workers: int) -> bool:
    """Every variant's CycleGANs not yet done, in `workers` processes at once (on a GPU each unit alone is bound by
    kernel launches and one sync per step, so they overlap well); False when out of time."""
    from zoofusion.executor import run_tasks

    todo = []
    for variant in VARIANTS:
        todo += [(params, variant, name, run.out) for name in unit_names(params, variant)
                 if not run.done(f"cyclegan_{variant}_{name}")]
    if todo and run.out_of_time():
        return False
    t0 = time.perf_counter()
    for (_, variant, name, _), figures in zip(todo, run_tasks(cyclegan_unit, todo, workers)):
        run.record(f"cyclegan_{variant}_{name}", figures)
    if todo:
        emit("cyclegan_s", _r(time.perf_counter() - t0, 2))
        emit("cyclegan_workers", min(workers, len(todo)))
    return True


def generate_step(variant: str, params: Params, device: str, run: Run) -> dict:
    from zoofusion.steps.cyclegan import kernel_files, load_generators, load_kernels
    from zoofusion.stages.generate import generate

    v = params.translation.variant(variant)
    t0 = time.perf_counter()
    ks = dict(zip(DOMAINS, load_kernels(kernel_files(run.out / "kernels", v))))
    gens = {u: load_generators(run.out / "cyclegan" / variant / u / "generators.pt", device)
            for u in unit_names(params, variant)}
    g = generate(ks, gens, params.generate.max_per_domain, params.generate.bias)
    out = run.out / "generated" / variant / "models.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(g, out)
    return {f"generate_{variant}_s": _r(time.perf_counter() - t0, 2), f"generate_{variant}_models": len(g["ids"])}


def evaluate_step(params: Params, data_dir: Path, run: Run) -> dict:
    """The evaluate stage's protocol and verdict on every kind (equal budgets), without its figures and runs."""
    from zoofusion.render.tables import METHOD_TITLES
    from zoofusion.stages.evaluate import headline, kinds_table, score_all, select, verdict, verdict_summary

    e = params.evaluate
    t0 = time.perf_counter()
    generated = {v: torch.load(run.out / "generated" / v / "models.pt", weights_only=True) for v in VARIANTS}
    kernels = {d: torch.load(run.out / "kernels" / "raw" / f"{d}.pt", weights_only=True) for d in DOMAINS}
    val, test = load_npz(data_dir / "val.npz"), load_npz(data_dir / "test.npz")
    _, _, rows, t_feat = score_all(params, generated, kernels, val, test)
    t_protocol = time.perf_counter() - t0
    by_kind = select(rows, e.select_metric, e.n_selected)
    comparisons = verdict(rows, test["labels"], e.n_boot, params.seed)
    t_boot = time.perf_counter() - t0 - t_protocol
    summary = verdict_summary(rows, by_kind, comparisons, e.n_boot)
    best = headline(rows, [r for group in by_kind.values() for r in group], e.select_metric)
    folder = run.out / "evaluate"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "verdict.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "headline.json").write_text(json.dumps(best, indent=2) + "\n")
    counts = Counter(r["kind"] for r in rows)
    figures = {"evaluate_s": _r(time.perf_counter() - t0, 2), "evaluate_features_s": _r(t_feat, 2),
               "evaluate_protocol_s": _r(t_protocol - t_feat, 2), "evaluate_bootstrap_s": _r(t_boot, 2),
               "evaluate_workers": e.workers, "evaluate_candidates": len(rows),
               "evaluate_candidates_per_kind": ", ".join(f"{k} {n}" for k, n in counts.items()),
               "evaluate_images": f"val {len(val['labels'])} ({int(val['labels'].sum())} black cats), "
                                  f"test {len(test['labels'])} ({int(test['labels'].sum())} black cats)",
               "evaluate_n_boot": e.n_boot}
    for method in METHODS:
        figures[f"best_on_val_test_accuracy_{method}"] = ", ".join(
            f"{kind} {best[kind][method]['best_on_val_test_accuracy']}" for kind in counts)
    method_of = {title: m for m, title in METHOD_TITLES.items()}
    for row in kinds_table(rows):
        method = method_of[row["Clustering"]]
        figures[f"kind_{method}_{row['Metric']}_{row['Kind']}"] = (
            f"mean {row['Mean']}, median {row['Median']}, best-on-val {row['Its test value']} "
            f"({row['Candidates']} candidates)")
    for c in summary["comparisons"]:
        figures[f"verdict_{c['method']}_{c['generated_kind']}_vs_{c['kind']}"] = (
            f"{c['metric']} best {c['best_diff']:+.4f} [{c['best_low']:+.4f}, {c['best_high']:+.4f}] "
            f"({c['outcome']}; {c['generated_id']} vs {c['baseline_id']}); mean {c['mean_diff']:+.4f} "
            f"[{c['mean_low']:+.4f}, {c['mean_high']:+.4f}] ({c['mean_outcome']})")
    figures.update({f"verdict_answer_{k}": v for k, v in summary["answers"].items()})
    figures["verdict_no_method_finds_black_cats"] = summary["no_method_finds_black_cats"]
    figures["verdict"] = summary["sentence"]
    return figures


def run_study(args: argparse.Namespace) -> int:
    """Run the chosen steps; 0 when they all finished, 3 when the time limit stopped them (rerun to resume)."""
    params = build_params(args)
    device = params.torch_device()
    data_dir, out = Path(args.data), Path(args.out)
    missing = [f"{name}.npz" for name in (*DOMAINS, "val", "test") if not (data_dir / f"{name}.npz").is_file()]
    if missing:
        raise SystemExit(f"{data_dir}: missing {', '.join(missing)}; build them with "
                         f"scripts/gpu_study_prepare.sh (it writes .gpu/data) or point --data at a folder that has them")
    # every input's md5 goes into the step keys
    data_md5 = {name: file_md5(data_dir / f"{name}.npz") for name in (*DOMAINS, "val", "test")}
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, args.json, params, device, data_md5, args.time_limit_s)
    if device == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    emit("stage", args.stage)
    emit("device", device + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    emit("torch", torch.__version__)
    emit("cpu_cores", usable_cores())
    emit("study_params", f"zoo {params.zoo.n_models.black}+{params.zoo.n_models.cat} models x {params.zoo.epochs} "
                         f"epochs, cyclegan {params.cyclegan.epochs} epochs, evaluate budget {params.evaluate.budget}"
                         f" per kind, n_boot {params.evaluate.n_boot}")
    finished = True
    if args.stage in ("zoo", "all"):
        finished = zoo_and_kernels(args, params, device, data_dir, run)
    if finished and args.stage in ("rest", "all"):
        if args.stage == "rest" and not run.done("kernels"):
            raise SystemExit(f"{out}: no kernels of these params yet; run --stage zoo first (with the same flags)")
        finished = rest(args, params, device, data_dir, run)
    emit("this_process_s", _r(time.perf_counter() - run.t0, 2))
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(ABSENT_ON_GPU_MACHINE))
    emit("absent_packages_imported", ", ".join(loaded) or "none")
    emit("finished", "yes" if finished else "no (time limit; rerun the same command to resume)")
    return 0 if finished else 3


def zoo_and_kernels(args: argparse.Namespace, params: Params, device: str, data_dir: Path, run: Run) -> bool:
    path = None
    for domain in DOMAINS:
        if run.done(f"zoo_{domain}"):
            continue
        if path is None:  # calibrate only when there is a zoo to train
            path, chosen = choose_path(args, params, device, run.out)
            for name, value in chosen.items():
                emit(name, value)
        figures = zoo_step(domain, params, device, path, data_dir, run)
        if figures is None:
            return False
        run.record(f"zoo_{domain}", {**figures, f"zoo_{domain}_path": path})
    zoo = [run.state["steps"][f"zoo_{d}"]["figures"] for d in DOMAINS]
    images, seconds = (sum(f[f"zoo_{d}_{k}"] for d, f in zip(DOMAINS, zoo)) for k in ("model_images", "s"))
    emit("zoo_model_images_per_s", round(images / seconds))
    emit("zoo_s", _r(seconds, 2))
    return step(run, "kernels", lambda: kernels_step(params, run))


def rest(args: argparse.Namespace, params: Params, device: str, data_dir: Path, run: Run) -> bool:
    if not cyclegan_steps(params, run, args.cyclegan_workers or (3 if device == "cuda" else 1)):
        return False
    for variant in VARIANTS:
        if not step(run, f"generate_{variant}", lambda: generate_step(variant, params, device, run)):
            return False
    return step(run, "evaluate", lambda: evaluate_step(params, data_dir, run))


def step(run: Run, name: str, compute) -> bool:
    """One step unless it is done; False (not started) when the time limit has passed."""
    if run.done(name):
        return True
    if run.out_of_time():
        return False
    run.record(name, compute())
    return True
