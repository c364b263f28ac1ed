"""Step `zoo`: train one domain's zoo in resumable shards (no DVC, no MLflow: the stage logs what this returns).

Model k of domain d has seed `derive_seed(seed, "zoo", d, k)` (its init and its data order); all models of a
domain share one train/val split of the domain's images. Shards of `zoo.shard_size` models are trained by
`zoo.workers` one-thread processes on the training path `zoo.path` (`spread`); the models left after the last
whole round of shards are split evenly over `zoo.workers` smaller shards, so no worker idles at the end. A finished
shard is kept in the cache folder, keyed by everything that changes its result — data, params, device and a
fingerprint of the code that trains it — so an interrupted run restarts from the last finished shard, a finished
shard is never retrained, and changed code never reuses an old shard.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from zoofusion.core.seeds import derive_seed
from zoofusion.executor import TimeLimitReached, run_tasks
from zoofusion.io import atomic_dir, code_fingerprint, file_md5, load_npz, save_npz, save_torch

if TYPE_CHECKING:  # annotations only: params arrive typed, config's validators stay out of the cache key
    from zoofusion.config import ExecutorParams, ZooParams

log = logging.getLogger(__name__)


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
    path: str  # how the shard trains (zoofusion.core.train.train_models): a param, since paths differ in rounding
    data_order: str
    first: int  # the domain's index of the shard's first model


def model_seeds(seed: int, domain: str, n: int) -> list[int]:
    return [derive_seed(seed, "zoo", domain, k) for k in range(n)]


def split_indices(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One train/val split of a domain's images, shared by all its models."""
    perm = np.random.default_rng(split_seed).permutation(n)
    k = max(1, int(round(val_fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def spread(z: ZooParams) -> dict:
    """How the shards are spread: `zoo.workers` processes of one thread each (on Ray, a task per CPU). Spreading never
    changes the arithmetic: a shard trains in one thread on the path `zoo.path` (a param, so it is in dvc.lock and
    MLflow) whichever worker runs it, so the zoo's bytes depend on code, params and data alone."""
    return {"path": z.path, "workers": z.workers, "threads": 1}


def train_shard(job: ShardJob, data: dict[str, np.ndarray]) -> dict:
    """Worker, pure compute: train one shard on the domain's images and return it (the driver saves it)."""
    from zoofusion.core.train import train_models

    train_idx, val_idx = split_indices(len(data["labels"]), job.val_fraction, job.split_seed)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # threads per model change float rounding: one, wherever the shard runs
    try:
        weights, history = train_models(data["images"], data["labels"], train_idx, val_idx, list(job.seeds),
                                    path=job.path, data_order=job.data_order, epochs=job.epochs,
                                        batch_size=job.batch_size, lr=job.lr, device=job.device)
    finally:
        torch.set_num_threads(threads)
    return {"weights": {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            "history": {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in history.items()},
            "seeds": torch.tensor(job.seeds, dtype=torch.int64), "seconds": time.perf_counter() - t0,
            "n_train": len(train_idx)}


def save_shard(payload: dict, out: Path) -> None:
    save_torch(out, payload)


def load_shard(path: Path) -> dict:
    return torch.load(path, weights_only=True)


# The code that decides the cached result: this module and every zoofusion module it imports, found by
# io.import_closure (computed, never listed by hand; logging, tracking and rendering left out). Named, not __name__,
# which is "__main__" under `python -m`.
# The training path is in the key: paths train the same models only up to float rounding.
CODE = "zoofusion.steps.zoo"


def cache_key(data_md5: str, z: ZooParams, seed: int, device: str, code: str | None = None) -> str:
    """Everything that changes a shard's trained weights (not workers, not logging), code included."""
    key = json.dumps({"data": data_md5, "epochs": z.epochs, "batch": z.batch_size, "lr": z.lr,
                      "val_fraction": z.val_fraction, "group": z.group_size, "shard": z.shard_size,
                      "seed": seed, "device": device, "data_order": z.data_order, "path": z.path,
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
                cache: Path) -> list[ShardJob]:
    seeds = model_seeds(seed, domain, n_models)
    jobs = []
    for i, (start, stop) in enumerate(shard_bounds(n_models, z.shard_size, z.group_size, z.workers)):
        # Named by the models it holds: a larger zoo reuses the full shards of a smaller one, never a shard of
        # other models under the same name.
        name = f"shard_{start:05d}-{stop - 1:05d}.pt"
        jobs.append(ShardJob(domain, i, tuple(seeds[start:stop]), str(data), z.epochs, z.batch_size, z.lr,
                             z.group_size, z.val_fraction, derive_seed(seed, "zoo-split", domain), device,
                             str(cache / name), z.path, z.data_order, start))
    return jobs


def assemble(shards: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], np.ndarray]:
    weights = {k: torch.cat([s["weights"][k] for s in shards]) for k in shards[0]["weights"]}
    history = {k: np.concatenate([s["history"][k].numpy() for s in shards]) for k in shards[0]["history"]}
    seeds = np.concatenate([s["seeds"].numpy() for s in shards])
    return weights, history, seeds


def write_outputs(out: Path, weights: dict, history: dict, seeds: np.ndarray) -> None:
    with atomic_dir(out) as tmp:
        save_torch(tmp / "weights.pt", {"weights": weights, "seeds": torch.from_numpy(seeds)})
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


def train_zoo(domain: str, z: ZooParams, seed: int, device: str, ex: ExecutorParams, data: Path, out: Path,
              cache_root: Path, on_shard: Callable[[ShardJob, dict], None]) -> dict:
    """Train (or take from the cache) every shard of one domain's zoo, write `out`, and return its summary.

    `on_shard(job, shard)` is called once per shard in order of completion (cached ones first), e.g. to log it.
    """
    n_models = getattr(z.n_models, domain)
    if not data.is_file():
        raise FileNotFoundError(f"{data}: missing; run `dvc repro data` first")
    cache = cache_root / f"{domain}-{cache_key(file_md5(data), z, seed, device)}"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = plan_shards(domain, n_models, z, seed, data, device, cache)
    todo = [j for j in jobs if not Path(j.out).is_file()]
    plan = spread(z)
    log.info("zoo %s: %d models in %d shards (%d cached, %d to train) on path %s, %d workers x %d threads", domain,
             n_models, len(jobs), len(jobs) - len(todo), len(todo), plan["path"], plan["workers"], plan["threads"])
    t_start = time.perf_counter()
    train_seconds = 0.0

    def finished(job: ShardJob) -> None:
        nonlocal train_seconds
        shard = load_shard(Path(job.out))
        train_seconds += float(shard["seconds"])
        on_shard(job, shard)

    for job in jobs:
        if Path(job.out).is_file():
            finished(job)
    # Ctrl-C or a failed shard stops the queue and the workers; finished shards stay in the cache.
    shared = {k: v for k, v in load_npz(data).items() if k in ("images", "labels")}
    workers = plan["workers"] if device == "cpu" and ex.backend == "local" else 1
    t_train = time.perf_counter()
    results = run_tasks(train_shard, todo, workers, shared, backend=ex.backend, address=ex.address)
    try:
        for k, (job, shard) in enumerate(zip(todo, results), 1):
            save_shard(shard, Path(job.out))
            finished(job)
            if ex.time_limit_s and k < len(todo) and time.perf_counter() - t_start >= ex.time_limit_s:
                raise TimeLimitReached(
                    f"time limit of {ex.time_limit_s} s (executor.time_limit_s) reached with {len(jobs) - len(todo) + k}"
                    f" of {len(jobs)} shards done, kept in {cache}; run the stage again to go on")
    finally:
        results.close()  # stops the workers still training (their shards are lost, never half-written)
    t_train = time.perf_counter() - t_train if todo else 0.0
    shards = [load_shard(Path(j.out)) for j in jobs]
    weights, history, seeds = assemble(shards)
    write_outputs(out, weights, history, seeds)
    val_acc = history["val_acc"][:, -1]
    n_train = int(shards[0]["n_train"])
    return {
        "count": int(n_models), "val_acc_mean": float(val_acc.mean()), "val_acc_min": float(val_acc.min()),
        "val_acc_max": float(val_acc.max()), "train_acc_mean": float(history["train_acc"][:, -1].mean()),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds_summed_over_workers": round(train_seconds, 2),
        "cached_shards": len(jobs) - len(todo), "path": plan["path"], "workers": plan["workers"],
        # the stage's own rate, wall clock of this run's training
        "model_images_per_s": round(sum(len(j.seeds) for j in todo) * n_train * z.epochs / t_train, 1) if todo else 0.0,
        # per core: training seconds are summed over workers (and include shards trained by earlier runs)
        "model_images_per_second_per_core": round(n_models * n_train * z.epochs / max(train_seconds, 1e-9), 1),
    }
