"""Stage `zoo@<domain>`: train a zoo of small CNNs on one domain, in resumable shards, and log every one.

Model k of domain d has seed `derive_seed(seed, "zoo", d, k)` (its init and its data order); all models of a
domain share one train/val split of the domain's images. Shards of `zoo.shard_size` models are trained by
`zoo.workers` processes on the path calibrated for this machine (`choose_path`); the models left after the last
whole round of shards are split evenly over `zoo.workers` smaller shards, so no worker idles at the end. A finished
shard is kept in `data/cache/zoo/<domain>-<key>/`, keyed by everything that changes its result — data, params,
device and a fingerprint of the code that trains it — so an interrupted run restarts from the last finished
shard, a finished shard is never retrained, and changed code never reuses an old shard.

Outputs (data/zoo/<domain>/): `weights.pt` (stacked weights + seeds), `models.csv` (per-model seed, final
train/val accuracy and loss), `history.npz` (per-epoch curves); and metrics/zoo_<domain>.json.
MLflow: experiment `zoo`, a parent run per domain with a kernel grid, and a child run per CNN with its params,
per-epoch metrics, final accuracies and its weights (`model.pt`, a SmallCNN state dict). A CNN is logged once per
content (tag `zoofusion.content`): rerunning a stage over cached shards does not log its CNNs again.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS, ZooParams
from zoofusion.console import progress
from zoofusion.core.cnn import unstack
from zoofusion.core.seeds import derive_seed
from zoofusion.executor import run_tasks
from zoofusion.io import atomic_dir, code_fingerprint, file_md5, load_npz, save_npz, write_json
from zoofusion.render.kernel_grid import kernel_grid_figure
from zoofusion.tracking import BatchLogger, dataset_inputs, run_tags, setup_mlflow

log = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
OUT = Path("data/zoo")
CACHE = Path("data/cache/zoo")
METRICS = Path("metrics")


@dataclass(frozen=True)
class ShardJob:
    domain: str
    index: int
    seeds: tuple[int, ...]
    data: str
    epochs: int
    batch_size: int
    lr: float
    group_size: int
    val_fraction: float
    split_seed: int
    device: str
    out: str
    path: str = "batched_g8"  # how the shard trains (zoofusion.core.train.train_models); results equal up to rounding
    data_order: str = "own"
    first: int = 0  # the domain's index of the shard's first model


def model_seeds(seed: int, domain: str, n: int) -> list[int]:
    return [derive_seed(seed, "zoo", domain, k) for k in range(n)]


def split_indices(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One train/val split of a domain's images, shared by all its models."""
    perm = np.random.default_rng(split_seed).permutation(n)
    k = max(1, int(round(val_fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


CALIBRATION = Path("data/cache/calibrate")


def choose_path(z: ZooParams, device: str, backend: str) -> dict:
    """The training path: zoo.path when fixed, else the fastest on this machine (timed once, then cached)."""
    if z.path != "auto":
        return {"path": z.path, "workers": z.workers, "threads": 1 if z.workers > 1 else torch.get_num_threads(),
                "model_images_per_s": 0.0}
    from zoofusion.calibrate import calibrate

    # Ray runs one shard per CPU: calibrate one process of one thread; locally up to zoo.workers processes
    plan = calibrate(device, z.data_order, CALIBRATION, max_group_size=z.group_size, batch_size=z.batch_size,
                     cores=1 if backend == "ray" else z.workers)
    return {"path": plan.path, "workers": plan.workers, "threads": plan.threads,
            "model_images_per_s": round(plan.model_images_per_s, 1)}


def train_shard(job: ShardJob, data: dict[str, np.ndarray]) -> dict:
    """Worker, pure compute: train one shard on the domain's images and return it (the driver saves it)."""
    from zoofusion.core.train import train_models

    train_idx, val_idx = split_indices(len(data["labels"]), job.val_fraction, job.split_seed)
    t0 = time.perf_counter()
    weights, history = train_models(data["images"], data["labels"], train_idx, val_idx, list(job.seeds),
                                    path=job.path, data_order=job.data_order, epochs=job.epochs,
                                    batch_size=job.batch_size, lr=job.lr, device=job.device)
    return {"weights": {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            "history": {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in history.items()},
            "seeds": torch.tensor(job.seeds, dtype=torch.int64), "seconds": time.perf_counter() - t0,
            "n_train": len(train_idx)}


def save_shard(payload: dict, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)


def load_shard(path: Path) -> dict:
    return torch.load(path, weights_only=True)


# The code that decides a shard's weights: this module (train_shard: splits, seeds) and every zoofusion module it
# imports, found by io.import_closure (not spelled out by hand; logging/tracking/rendering left out). Named, not
# __name__, which is "__main__" under `python -m`. The training path is not in the key: every path trains the
# same models up to float rounding.
CODE = "zoofusion.stages.zoo"


def cache_key(data_md5: str, z: ZooParams, seed: int, device: str, code: str | None = None) -> str:
    """Everything that changes a shard's trained weights (not workers, not logging), code included."""
    key = json.dumps({"data": data_md5, "epochs": z.epochs, "batch": z.batch_size, "lr": z.lr,
                      "val_fraction": z.val_fraction, "group": z.group_size, "shard": z.shard_size,
                      "seed": seed, "device": device, "data_order": z.data_order,
                      "code": code or code_fingerprint(CODE)}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def shard_bounds(n_models: int, shard_size: int, group_size: int, workers: int) -> list[tuple[int, int]]:
    """(start, stop) of each shard: full shards while a whole round of `workers` of them remains, then the rest
    split as evenly as whole groups allow over `workers` shards, so the last round keeps every worker busy
    (344 models, shards of 64, 2 workers: 4 x 64 then 48 + 40, not 64 + 24 with one worker idle)."""
    w = max(1, workers)
    head = n_models // (w * shard_size) * w * shard_size
    bounds = [(s, s + shard_size) for s in range(0, head, shard_size)]
    unit = group_size if shard_size % group_size == 0 else 1  # whole groups, never above shard_size
    units = -(-(n_models - head) // unit)
    start = head
    for i in range(w):
        take = (units // w + (i < units % w)) * unit
        if take and start < n_models:
            bounds.append((start, min(n_models, start + take)))
            start = bounds[-1][1]
    return bounds


def plan_shards(domain: str, n_models: int, z: ZooParams, seed: int, data: Path, device: str,
                cache: Path, path: str = "batched_g8") -> list[ShardJob]:
    seeds = model_seeds(seed, domain, n_models)
    jobs = []
    for i, (start, stop) in enumerate(shard_bounds(n_models, z.shard_size, z.group_size, z.workers)):
        # Named by the models it holds: a larger zoo reuses the full shards of a smaller one, never a shard of
        # other models under the same name.
        name = f"shard_{start:05d}-{stop - 1:05d}.pt"
        jobs.append(ShardJob(domain, i, tuple(seeds[start:stop]), str(data), z.epochs, z.batch_size, z.lr,
                             z.group_size, z.val_fraction, derive_seed(seed, "zoo-split", domain), device,
                             str(cache / name), path, z.data_order, start))
    return jobs


def content_hash(weights: dict[str, torch.Tensor], curves: list[np.ndarray]) -> str:
    """What a logged CNN is: its weights and its training curves (same content = same run)."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode() + weights[k].detach().cpu().contiguous().numpy().tobytes())
    for c in curves:
        h.update(np.ascontiguousarray(c, dtype=np.float64).tobytes())
    return h.hexdigest()[:20]


def log_shard(logger: BatchLogger, domain: str, z: ZooParams, first_index: int, shard: dict) -> int:
    """A child run per CNN of the shard not yet logged with the same content; returns how many were new."""
    names = ("train_loss", "train_acc", "val_loss", "val_acc")
    hist = {k: v.numpy() for k, v in shard["history"].items()}
    new = 0
    for j, (seed, weights) in enumerate(zip(shard["seeds"].tolist(), unstack(shard["weights"]))):
        k = first_index + j
        content = content_hash(weights, [hist[n][j] for n in names])
        if logger.find("zoofusion.content", content):
            continue
        metrics = [(n, hist[n][j, e], e) for n in names for e in range(hist[n].shape[1])]
        metrics += [(f"final_{n}", hist[n][j, -1], 0) for n in names]
        params = {"domain": domain, "model_index": k, "seed": seed, "epochs": z.epochs, "batch_size": z.batch_size,
                  "lr": z.lr, "architecture": "conv6-conv16-fc2"}
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({n: t.clone() for n, t in weights.items()}, Path(tmp) / "model.pt")
            logger.child(f"{domain}-{k:05d}", params, metrics, tags={"domain": domain, "zoofusion.content": content},
                         artifacts=[(Path(tmp) / "model.pt", None)])
        new += 1
    return new


def assemble(shards: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], np.ndarray]:
    weights = {k: torch.cat([s["weights"][k] for s in shards]) for k in shards[0]["weights"]}
    history = {k: np.concatenate([s["history"][k].numpy() for s in shards]) for k in shards[0]["history"]}
    seeds = np.concatenate([s["seeds"].numpy() for s in shards])
    return weights, history, seeds


def write_outputs(out: Path, weights: dict, history: dict, seeds: np.ndarray) -> None:
    with atomic_dir(out) as tmp:
        torch.save({"weights": weights, "seeds": torch.from_numpy(seeds)}, tmp / "weights.pt")
        save_npz(tmp / "history.npz", **history)
        with (tmp / "curves.csv").open("w", newline="") as f:  # mean per-epoch curves: a DVC plot
            w = csv.writer(f)
            names = ("train_loss", "train_acc", "val_loss", "val_acc")
            w.writerow(["epoch", *names])
            for e in range(history["val_acc"].shape[1]):
                w.writerow([e + 1, *(f"{history[n][:, e].mean():.6f}" for n in names)])
        with (tmp / "models.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "seed", "train_acc", "val_acc", "train_loss", "val_loss"])
            for k, s in enumerate(seeds):
                w.writerow([k, int(s)] + [f"{history[n][k, -1]:.6f}" for n in ("train_acc", "val_acc", "train_loss", "val_loss")])


def kernel_grid(weights: dict, n: int):
    panels = {f"model {k} conv1": weights["conv1.weight"][k] for k in range(min(n, len(weights["conv1.weight"])))}
    return kernel_grid_figure(panels)


def run(domain: str, params, prepared: Path = PREPARED, out_root: Path = OUT, cache_root: Path = CACHE,
        metrics_root: Path = METRICS) -> dict:
    device = params.torch_device()  # cuda without a GPU: refused before anything is created
    z = params.zoo
    n_models = getattr(z.n_models, domain)
    data = prepared / f"{domain}.npz"
    if not data.is_file():
        raise FileNotFoundError(f"{data}: missing; run `dvc repro data` first")
    cache = cache_root / f"{domain}-{cache_key(file_md5(data), z, params.seed, device)}"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = plan_shards(domain, n_models, z, params.seed, data, device, cache)
    todo = [j for j in jobs if not Path(j.out).is_file()]
    plan = choose_path(z, device, params.executor.backend) if todo else {"path": "-", "workers": 0, "threads": 0,
                                                                          "model_images_per_s": 0.0}
    todo = [dataclasses.replace(j, path=plan["path"]) for j in todo]
    log.info("zoo %s: %d models in %d shards (%d cached, %d to train) on path %s, %d workers x %d threads", domain,
             n_models, len(jobs), len(jobs) - len(todo), len(todo), plan["path"], plan["workers"], plan["threads"])

    mlflow = setup_mlflow("zoo")
    tags = run_tags(f"zoo@{domain}", [data])
    t_start = time.perf_counter()
    train_seconds = 0.0
    logged = 0
    with mlflow.start_run(run_name=f"zoo-{domain}", tags=tags) as parent:
        mlflow.log_params({"domain": domain, "n_models": n_models,
                           **{k: v for k, v in z.model_dump().items() if k != "n_models"},
                           "seed": params.seed, "device": device})
        datasets = dataset_inputs({data: "train"})
        mlflow.MlflowClient().log_inputs(parent.info.run_id, datasets=datasets)
        zl = BatchLogger(mlflow, parent.info.run_id, {k: v for k, v in tags.items()
                                                      if k.startswith(("git", "data", "zoofusion."))}, datasets)
        bar = progress(total=n_models, desc=f"zoo {domain}", unit="model")

        def finished(job: ShardJob) -> None:
            nonlocal train_seconds, logged
            shard = load_shard(Path(job.out))
            train_seconds += float(shard["seconds"])
            logged += log_shard(zl, domain, z, job.first, shard)
            bar.update(len(job.seeds))

        for job in jobs:
            if Path(job.out).is_file():
                finished(job)
        # Ctrl-C or a failed shard stops the queue and the workers; finished shards stay in the cache.
        ex = params.executor
        shared = {k: v for k, v in load_npz(data).items() if k in ("images", "labels")}
        workers = plan["workers"] if device == "cpu" and ex.backend == "local" else 1
        if workers == 1 and ex.backend == "local":
            torch.set_num_threads(plan["threads"])
        t_train = time.perf_counter()
        for job, shard in zip(todo, run_tasks(train_shard, todo, workers, shared,
                                              backend=ex.backend, address=ex.address)):
            save_shard(shard, Path(job.out))
            finished(job)
        bar.close()
        t_train = time.perf_counter() - t_train if todo else 0.0
        shards = [load_shard(Path(j.out)) for j in jobs]
        weights, history, seeds = assemble(shards)
        write_outputs(out_root / domain, weights, history, seeds)
        wall = time.perf_counter() - t_start
        val_acc = history["val_acc"][:, -1]
        n_train = int(shards[0]["n_train"])
        summary = {
            "count": int(n_models), "val_acc_mean": float(val_acc.mean()), "val_acc_min": float(val_acc.min()),
            "val_acc_max": float(val_acc.max()), "train_acc_mean": float(history["train_acc"][:, -1].mean()),
            "wall_seconds": round(wall, 2), "train_seconds_summed_over_workers": round(train_seconds, 2),
            "logging_seconds": round(zl.seconds, 2), "runs_logged": logged,
            "logging_overhead": round(zl.seconds / max(train_seconds, 1e-9), 4),
            "cached_shards": len(jobs) - len(todo), "path": plan["path"], "workers": plan["workers"],
            "calibrated_model_images_per_s": plan["model_images_per_s"],
            # the stage's own rate, wall clock of this run's training, to hold against the calibrated one
            "model_images_per_s": round(sum(len(j.seeds) for j in todo) * n_train * z.epochs / t_train, 1) if todo else 0.0,
            # per core: training seconds are summed over workers (and include shards trained by earlier runs)
            "model_images_per_second_per_core": round(n_models * n_train * z.epochs / max(train_seconds, 1e-9), 1),
        }
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if not isinstance(v, str)})
        mlflow.set_tag("training_path", summary["path"])
        if z.grid_models:
            mlflow.log_figure(kernel_grid(weights, z.grid_models), "kernel_grid_conv1.png")
        mlflow.log_artifact(str(out_root / domain / "models.csv"))
    write_json(metrics_root / f"zoo_{domain}.json", summary)
    log.info("zoo %s: val acc mean %.3f (min %.3f, max %.3f); logging overhead %.1f%%", domain,
             summary["val_acc_mean"], summary["val_acc_min"], summary["val_acc_max"], 100 * summary["logging_overhead"])
    if summary["model_images_per_s"]:
        log.info("zoo %s: trained at %.0f model-images/s on path %s (%d workers); calibration timed %.0f (ratio %.2f)",
                 domain, summary["model_images_per_s"], summary["path"], summary["workers"],
                 summary["calibrated_model_images_per_s"],
                 summary["model_images_per_s"] / max(summary["calibrated_model_images_per_s"], 1e-9))
    return summary


def main(argv: list[str] | None = None) -> None:
    stage_main("zoo@{domain}", lambda args, params: run(args.domain, params), argv,
               description="Train one domain's zoo of small CNNs.",
               add_arguments=lambda ap: ap.add_argument("--domain", required=True, choices=DOMAINS),
               on_interrupt=f"finished shards are kept in {CACHE} and reused on the next run")


if __name__ == "__main__":
    main()
