"""Step `cyclegan`: every translation variant's CycleGAN units, trained side by side from the kernel harvest
(`train_units`: a task per (variant, unit) through `executor.run_tasks`, one thread each, written by the caller in
task order, so the bytes do not depend on the number of workers), each with a resumable checkpoint and written as
generators, loss history and a final kernel grid.

A unit is what one CycleGAN translates: a conv layer's kernels (`translate: layers`, units conv1 and conv2) or a
model's conv1 and conv2 packed together (`translate: pair`, core/pair.py). A unit's CycleGAN is seeded by the unit
(`derive_seed(seed, "cyclegan", unit)`), whatever the variant.

Checkpoints: `core.cyclegan.train_cyclegan` hands out its state every `checkpoint_every` epochs and at the end;
this module writes it atomically to `<cache>/<variant>-<unit>-<key>.ckpt` (key: the config without `epochs`, the
data and the code) and resumes from it only when `core.cyclegan.resume_mismatch` allows, which is exactly when
resuming gives the bytes of a fresh run: otherwise (another `epochs` under lr decay, a checkpoint past the
requested epochs, an unreadable file) it trains afresh and overwrites the checkpoint. The worker training a unit
reads its kernel files and reads and writes its checkpoint itself, under the driver's project folder
(`UnitTask.root`): on a Ray cluster the CycleGAN stage needs the project on a filesystem every node sees at the
same path (zoo shards and evaluate's candidates do not: their data travels through Ray's object store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from zoofusion.core.cyclegan import (CycleGANConfig, CycleGANResult, KernelScaler, OnEpoch, initial_cyclegan,
                                     make_generator, resume_mismatch, train_cyclegan, translate)
from zoofusion.core.cnn import CONV_LAYERS
from zoofusion.core.device import fp32_only
from zoofusion.core.kernel_stats import kernel_stat_distance
from zoofusion.core.pair import fit_scales, pack, unpack
from zoofusion.core.seeds import derive_seed
from zoofusion.executor import TimeLimitReached, run_tasks
from zoofusion.io import atomic_dir, code_fingerprint, file_md5, save_torch
from zoofusion.render.kernel_grid import figure_png, kernel_grid_figure

if TYPE_CHECKING:  # annotations only: params arrive typed, config's validators stay out of the cache key
    from zoofusion.config import CycleGANParams, VariantParams

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2
GENERATORS_FORMAT = 1
# The code that decides the cached result: this module and every zoofusion module it imports, found by
# io.import_closure (computed, never listed by hand; logging, tracking and rendering left out). Named, not __name__,
# which is "__main__" under `python -m`.
# The training path is in the key: paths train the same models only up to float rounding.
CODE = "zoofusion.steps.cyclegan"
INITIAL = "generators_init.pt"  # a unit's generators before training (the translation control), beside generators.pt


def kernel_files(kernels: Path, v: VariantParams) -> list[Path]:
    """The harvest a variant translates: <kernels>/aligned/ or <kernels>/raw/, black then cat."""
    folder = kernels / ("aligned" if v.align else "raw")
    return [folder / f"{d}.pt" for d in ("black", "cat")]


def load_kernels(files: list[Path]) -> list[dict[str, torch.Tensor]]:
    out = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
        out.append(torch.load(f, weights_only=True))
    return out


@dataclass
class Unit:
    """What one CycleGAN translates: its training samples A and B, and how a sample splits into layers."""

    name: str
    A: torch.Tensor
    B: torch.Tensor
    layers: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    meta: dict


def units(v: VariantParams, black: dict, cat: dict) -> list[Unit]:
    """One unit per layer (`translate: layers`), or one for the (conv1, conv2) pair."""
    if v.translate == "layers":
        return [Unit(layer, black[f"{layer}.weight"], cat[f"{layer}.weight"],
                     lambda x, layer=layer: {layer: x}, {"layer": layer}) for layer in CONV_LAYERS]
    scales = fit_scales(*((d["conv1.weight"], d["conv2.weight"]) for d in (black, cat)))

    def layers(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(CONV_LAYERS, unpack(x, scales)))

    return [Unit("pair", pack(black["conv1.weight"], black["conv2.weight"], scales),
                 pack(cat["conv1.weight"], cat["conv2.weight"], scales), layers,
                 {"layer": "pair", "pair_scales": list(scales)})]


def make_config(cyclegan: CycleGANParams, v: VariantParams, seed: int, device: str, unit: str) -> CycleGANConfig:
    """A unit's config: the cyclegan section, the variant's training details, and a seed of its own."""
    return CycleGANConfig(**cyclegan.core_kwargs(), **v.core_kwargs(), seed=derive_seed(seed, "cyclegan", unit),
                          device=device)


def grid(state: CycleGANResult, unit: Unit, title: str, epoch: int):
    """conv1 of the first model of each zoo, real and translated (for a pair, conv1 as the pair translates it)."""
    def first_layer(x: torch.Tensor) -> torch.Tensor:
        return next(iter(unit.layers(x.unsqueeze(0)).values()))[0]

    a, b = unit.A[:1], unit.B[:1]
    panels = {"real A (black zoo)": first_layer(a[0]), "G_A2B(A)": first_layer(translate(state.G_A2B, state.scaler, a)[0]),
              "real B (cat zoo)": first_layer(b[0]), "G_B2A(B)": first_layer(translate(state.G_B2A, state.scaler, b)[0])}
    return kernel_grid_figure(panels, title=f"{title}, epoch {epoch}")


def distances(state: CycleGANResult, unit: Unit) -> dict[str, dict[str, float]]:
    """Per layer: d(A, B), d(G_A2B(A), B), d(G_B2A(B), A) (core.kernel_stats), in weight units."""
    real_a, real_b = unit.layers(unit.A), unit.layers(unit.B)
    fake_b = unit.layers(translate(state.G_A2B, state.scaler, unit.A))
    fake_a = unit.layers(translate(state.G_B2A, state.scaler, unit.B))
    return {layer: {"dist_A_B": kernel_stat_distance(real_a[layer], real_b[layer]),
                    "dist_GA2B_A_B": kernel_stat_distance(fake_b[layer], real_b[layer]),
                    "dist_GB2A_B_A": kernel_stat_distance(fake_a[layer], real_a[layer])} for layer in real_a}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def checkpoint_path(cache: Path, name: str, cfg: CycleGANConfig, data_md5: str, code: str) -> Path:
    """Keyed by config, data and the training code's fingerprint: other code never resumes an old checkpoint.
    `epochs` is left out of the key so a longer constant-lr run finds the shorter run's checkpoint (whether it
    may resume it is the checkpoint's own check, :func:`resume_state`)."""
    key = {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "checkpoint_every")}
    key["code"] = code
    digest = hashlib.sha256(json.dumps([key, data_md5], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache / f"{name}-{digest}.ckpt"


def save_checkpoint(path: Path, state: dict[str, Any], code: str) -> None:
    """Atomically write a state `train_cyclegan` handed out, with the code fingerprint it was computed by."""
    save_torch(path, {"format": CHECKPOINT_FORMAT, "code": code, "state": state})


def resume_state(path: Path, cfg: CycleGANConfig, A: torch.Tensor, B: torch.Tensor,
                 code: str) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's state if `cfg` on (A, B) may resume it, else None; and why, in words, for the log."""
    if not path.is_file():
        return None, "no checkpoint"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file is not worth stopping for: train afresh over it
        return None, f"checkpoint {path} unreadable ({type(e).__name__}: {e})"
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT or blob.get("code") != code:
        return None, f"checkpoint {path} is of another format or code"
    why = resume_mismatch(blob["state"], cfg, A, B)
    if why is not None:
        return None, f"checkpoint {path} not resumable: {why}"
    return blob["state"], f"resuming {path} at epoch {blob['state']['epoch']}"


# --------------------------------------------------------------------------------------------
# Generators: what the generate stage reads
# --------------------------------------------------------------------------------------------


def generators_payload(result: CycleGANResult, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both generators, their sizes and the scaler, as plain tensors and values: what `generators.pt` holds.
    `meta` (plain python values only) is stored alongside the config and epochs trained."""
    g = result.G_A2B
    return {
        "format": GENERATORS_FORMAT,
        "arch": result.config.arch,
        "channels": int(g.channels),
        "hidden": int(g.hidden),
        "G_A2B": {k: v.detach().cpu() for k, v in result.G_A2B.state_dict().items()},
        "G_B2A": {k: v.detach().cpu() for k, v in result.G_B2A.state_dict().items()},
        "scaler": result.scaler.state_dict(),
        "meta": {"config": result.config.to_dict(), "epochs_trained": int(result.epoch),
                 "sample_shape": list(result.sample_shape), **dict(meta or {})},
    }


def canonical(obj: Any) -> Any:
    """`obj` with fresh containers and interned strings: pickle memoizes by identity, so a payload that came back
    from a worker process (its strings unpickled, none shared) pickles to other bytes than an equal one built in
    this process (whose strings may be shared) unless both are put in one form first."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(canonical(x) for x in obj)
    return obj


def save_generators(path: str | os.PathLike[str], result: CycleGANResult,
                    meta: dict[str, Any] | None = None) -> None:
    """Atomically write :func:`generators_payload` for the generate stage (byte-identical for identical
    training, wherever it was trained)."""
    save_torch(path, canonical(generators_payload(result, meta)))


def load_generators(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[nn.Module, nn.Module, KernelScaler, dict[str, Any]]:
    """Load what :func:`save_generators` wrote: ``(G_A2B, G_B2A, scaler, meta)``, in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"generator file {p} does not exist; run the CycleGAN training stage first")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != GENERATORS_FORMAT:
        raise ValueError(f"{p} is not a generators file of format {GENERATORS_FORMAT}; re-run the training stage")
    arch = str(blob.get("arch", "volume"))  # files written before the set family have no arch: volume
    gens = []
    for key in ("G_A2B", "G_B2A"):
        g = make_generator(arch, int(blob["channels"]), int(blob["hidden"]))
        g.load_state_dict(blob[key])
        gens.append(g.to(device).eval())
    meta = dict(blob["meta"])
    meta.update(channels=int(blob["channels"]), hidden=int(blob["hidden"]), arch=arch)
    return gens[0], gens[1], KernelScaler.from_state(blob["scaler"]), meta


# --------------------------------------------------------------------------------------------
# One unit, start to finish
# --------------------------------------------------------------------------------------------


@dataclass
class UnitRun:
    """What training a unit made and measured, in plain values (picklable: it comes back from a worker process):
    the generators file's payload, the loss history, its distances, the final kernel grid and those of every
    `grid_every`-th epoch (PNG bytes) with their distances, the epoch it resumed at (0: fresh) and the seconds it
    took (training, distances and grids)."""

    variant: str
    unit: str
    generators: dict[str, Any]
    history: dict[str, list[float]]
    distances: dict[str, dict[str, float]]
    final_grid: bytes
    grids: dict[int, bytes]
    grid_distances: dict[int, dict[str, dict[str, float]]]
    n_A: int
    n_B: int
    resumed_at: int
    seconds: float
    initial: dict[str, Any] | None = None  # the generators at initialisation (same seed): the translation control


class UnitStopped(Exception):
    """A unit stopped at its deadline (`executor.time_limit_s`) right after writing a checkpoint."""

    def __init__(self, variant: str, unit: str, epoch: int, epochs: int):
        super().__init__(variant, unit, epoch, epochs)
        self.variant, self.unit, self.epoch, self.epochs = variant, unit, epoch, epochs


def train_unit(unit: Unit, variant: str, cfg: CycleGANConfig, files: list[Path], cache: Path, *,
               grid_every: int = 0, on_epoch: OnEpoch | None = None, deadline: float = 0.0) -> UnitRun:
    """Train `unit` (resuming a matching checkpoint in `cache`, writing checkpoints there) and return it, with its
    distances and kernel grids (every `grid_every` epochs and the last; 0: the final grid only). `files` are the
    kernel files `unit` came from (their md5s key the checkpoint). deadline: a wall-clock time (time.time()); past
    it, the first checkpoint before the last epoch is written and UnitStopped raised (a rerun resumes there, to the
    bytes of an uninterrupted run); 0 = none."""
    code = code_fingerprint(CODE)
    ckpt = checkpoint_path(cache, f"{variant}-{unit.name}", cfg, "".join(file_md5(f) for f in files), code)
    resume, why = resume_state(ckpt, cfg, unit.A, unit.B, code)
    log.info("cyclegan-%s-%s: A %s, B %s, %d epochs (%s)", variant, unit.name, tuple(unit.A.shape),
             tuple(unit.B.shape), cfg.epochs, why)
    title = f"{variant} {unit.name}"
    grids: dict[int, bytes] = {}
    grid_distances: dict[int, dict[str, dict[str, float]]] = {}

    def each_epoch(epoch: int, losses: dict[str, float], state: CycleGANResult) -> None:
        if grid_every and (epoch % grid_every == 0 or epoch >= cfg.epochs):
            grid_distances[epoch] = distances(state, unit)
            grids[epoch] = figure_png(grid(state, unit, title, epoch))
        if on_epoch is not None:
            on_epoch(epoch, losses, state)

    def checkpoint(state: dict[str, Any]) -> None:
        save_checkpoint(ckpt, state, code)
        if deadline and time.time() >= deadline and int(state["epoch"]) < cfg.epochs:
            raise UnitStopped(variant, unit.name, int(state["epoch"]), cfg.epochs)

    t0 = time.perf_counter()
    result = train_cyclegan(unit.A, unit.B, cfg, resume=resume, on_epoch=each_epoch, on_checkpoint=checkpoint)
    return UnitRun(variant, unit.name, generators_payload(result, meta={**unit.meta, "variant": variant}),
                   {k: list(v) for k, v in result.history.items()}, distances(result, unit),
                   figure_png(grid(result, unit, title, cfg.epochs)), grids, grid_distances, len(unit.A), len(unit.B),
                   0 if resume is None else int(resume["epoch"]), time.perf_counter() - t0,
                   generators_payload(initial_cyclegan(unit.A, unit.B, cfg), meta={**unit.meta, "variant": variant}))


def write_unit(folder: Path, run: UnitRun) -> None:
    """`folder/`, atomically: `generators.pt`, `history.json` (per-epoch losses), `losses.csv` (a DVC plot),
    `final_grid.png`, and `generators_init.pt`: the same unit's generators at initialisation, before any update (the
    translation control generate translates by; `generators.pt` is unchanged by it)."""
    with atomic_dir(folder) as tmp:
        save_torch(tmp / "generators.pt", canonical(run.generators))
        if run.initial is not None:
            save_torch(tmp / INITIAL, canonical(run.initial))
        (tmp / "history.json").write_text(json.dumps(run.history, indent=1))
        names = list(run.history)
        rows = [",".join(["epoch", *names])]
        rows += [",".join([str(e + 1), *(f"{run.history[n][e]:.6g}" for n in names)])
                 for e in range(len(run.history[names[0]]))]
        (tmp / "losses.csv").write_text("\n".join(rows) + "\n")
        (tmp / "final_grid.png").write_bytes(run.final_grid)


# --------------------------------------------------------------------------------------------
# Every variant's units, side by side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitTask:
    """One CycleGAN to train, all a worker needs (plain values: it reads the unit's kernels from `files`)."""

    variant: str
    v: VariantParams
    unit: str
    cfg: CycleGANConfig
    files: tuple[Path, ...]
    cache: Path
    grid_every: int
    root: Path  # the driver's project folder: a worker (a Ray task starts elsewhere) reads files and cache under it
    deadline: float = 0.0  # wall-clock time (time.time()) after which the unit stops at its next checkpoint; 0 = none


def unit_names(v: VariantParams) -> tuple[str, ...]:
    """A variant's units: its conv layers (`translate: layers`) or the (conv1, conv2) pair."""
    return ("pair",) if v.translate == "pair" else CONV_LAYERS


def plan_units(variants: dict[str, VariantParams], cyclegan: CycleGANParams, seed: int, device: str,
               kernels: Path, cache: Path, time_limit_s: float = 0.0) -> list[UnitTask]:
    """A task per (variant, unit), in variant then unit order; each unit seeded by the one seed and its name.
    time_limit_s (executor.time_limit_s, 0 = none): every unit stops at its first checkpoint past that many
    seconds from now."""
    root = Path.cwd().resolve()
    deadline = time.time() + time_limit_s if time_limit_s else 0.0
    return [UnitTask(name, v, unit, make_config(cyclegan, v, seed, device, unit), tuple(kernel_files(kernels, v)),
                     cache, cyclegan.grid_every, root, deadline)
            for name, v in variants.items() for unit in unit_names(v)]


def train_task(task: UnitTask, shared: Any = None) -> UnitRun | UnitStopped:
    """Worker: train one unit in one thread (threads change float rounding: one, wherever the unit runs); a unit
    stopped at its deadline comes back as its UnitStopped, so the other units still finish their own."""
    files = [task.root / f for f in task.files]  # absolute paths stay as they are
    black, cat = load_kernels(files)
    unit = next(u for u in units(task.v, black, cat) if u.name == task.unit)
    fp32_only(task.cfg.device)  # a worker process on a GPU: its own flags
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_unit(unit, task.variant, task.cfg, files, task.root / task.cache, grid_every=task.grid_every,
                          deadline=task.deadline)
    except UnitStopped as stopped:
        return stopped
    finally:
        torch.set_num_threads(threads)


def train_units(tasks: list[UnitTask], out: Path, workers: int, backend: str = "local", address: str = "",
                on_unit: Callable[[UnitTask, UnitRun, Path], None] | None = None) -> dict[str, list[UnitRun]]:
    """Train every task side by side (`workers` local processes, or Ray tasks) and write `out/<variant>/<unit>/`
    as each comes back, in task order: the same bytes at any number of workers, in any order of finishing. Each
    variant's folder is swapped in whole once every unit is written. `on_unit(task, run, folder)` follows each
    write (e.g. to log it). Returns each variant's runs."""
    for f in {f for t in tasks for f in t.files}:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
    runs: dict[str, list[UnitRun]] = {t.variant: [] for t in tasks}
    with contextlib.ExitStack() as stack:
        tmp = {v: stack.enter_context(atomic_dir(out / v)) for v in runs}
        results = run_tasks(train_task, tasks, workers, backend=backend, address=address)
        stopped: list[UnitStopped] = []
        try:  # Ctrl-C or a failed unit stops the queue and the workers; their checkpoints stay in the cache
            for task, run in zip(tasks, results):
                if isinstance(run, UnitStopped):
                    stopped.append(run)
                    continue
                write_unit(tmp[task.variant] / task.unit, run)
                runs[task.variant].append(run)
                if on_unit is not None:
                    on_unit(task, run, tmp[task.variant] / task.unit)
        finally:
            results.close()
        if stopped:  # nothing is swapped in: the rerun resumes every unit from its checkpoint
            where = ", ".join(f"{s.variant}/{s.unit} at epoch {s.epoch} of {s.epochs}" for s in stopped)
            raise TimeLimitReached(f"time limit of executor.time_limit_s reached: {where}; checkpoints kept in "
                                   f"{tasks[0].cache}; run the stage again to go on")
    return runs


def summarize(variant: str, v: VariantParams, runs: list[UnitRun]) -> dict:
    """metrics/cyclegan_<variant>.json: per unit its final losses, per layer its distances and translation gains
    (no timings: identical runs, identical bytes)."""
    summary: dict = {"variant": variant, "align": v.align, "translate": v.translate, "units": {}}
    for run in runs:
        summary["units"][run.unit] = {"final_loss_G": run.history["loss_G"][-1],
                                      "final_loss_cycle": run.history["loss_cycle"][-1],
                                      "epochs": len(run.history["loss_G"])}
        for layer, d in run.distances.items():
            summary[layer] = {**d, "translation_gain_A2B": d["dist_A_B"] - d["dist_GA2B_A_B"],
                              "translation_gain_B2A": d["dist_A_B"] - d["dist_GB2A_B_A"]}
    return summary
