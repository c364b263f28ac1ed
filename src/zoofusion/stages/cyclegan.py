"""Stage `cyclegan`: train every translation variant's CycleGANs, side by side, that translate zoo kernels.

Domain A is the `black` zoo, B the `cat` zoo (unpaired, different sizes). For each variant `translation.<variant>`
decides: `align` picks the harvest (data/kernels/raw, as trained, or data/kernels/aligned, channels in one canonical
order); `translate: layers` trains one CycleGAN per conv layer (the study's: `conv1` and `conv2`, independent),
`translate: pair` one CycleGAN for each model's conv1 and conv2 together (core/pair.py); `lr_decay`,
`disc_output` and `pool_size` are the reference CycleGAN's training details. Kernels are scaled into the
networks' range by one scalar fitted on both zoos (max |w| / 0.9, stored with the model; for a pair, each layer is
first divided by its own max |w|): linear, so sign, zero and relative structure are kept, and exactly invertible.
A unit's CycleGAN is seeded by the unit (`derive_seed(seed, "cyclegan", unit)`), whatever the variant, so
variants that differ only in a setting start from the same draw.

Every (variant, unit) is one task (steps/cyclegan.py `train_units`): `cyclegan.workers` local processes of one
thread each, sharing the GPU on `device: cuda` (or Ray tasks, `executor.backend`), results written in task order, so the bytes do not depend on the
number of workers. Outputs data/cyclegan/<variant>/<unit>/ (unit: conv1 and conv2, or pair): `generators.pt`
(G_A2B, G_B2A, scaler), `history.json` (per-epoch losses), `losses.csv`, `final_grid.png`, `generators_init.pt` (the
generators at initialisation, same seed: the translation control); and per variant
metrics/cyclegan_<variant>.json with, per layer, the distribution distances d(G_A2B(A), B) and d(G_B2A(B), A)
beside the reference d(A, B). A checkpoint in data/cache/cyclegan/ (keyed by config, data and code) lets an
interrupted run resume, to the bytes of an uninterrupted one, or is not used. MLflow: experiment `cyclegan`, a
parent run `cyclegan` and a child run per unit (`cyclegan-<variant>-<unit>`), logged as each unit comes back,
with per-epoch losses, kernel grids every `cyclegan.grid_every` epochs, the final generators and the distances.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import VARIANTS, Params
from zoofusion.console import progress
from zoofusion.core.cyclegan import TrainingDiverged
from zoofusion.executor import check_backend
from zoofusion.io import write_json
from zoofusion.core.cnn import CONV_LAYERS
from zoofusion.steps.cyclegan import UnitRun, UnitTask, plan_units, summarize, train_units
from zoofusion.tracking import BatchLogger, dataset_inputs, project_root, run_tags, setup_mlflow, stage_run

log = logging.getLogger(__name__)
KERNELS = layout.KERNELS
OUT = layout.CYCLEGAN
CACHE = layout.GAN_CACHE
METRICS = layout.METRICS


def flat_distances(dist: dict[str, dict[str, float]], unit: str) -> dict[str, float]:
    """MLflow names: `dist_A_B` for a layer's own run, `<layer>/dist_A_B` in a pair's run."""
    if unit in dist:
        return dict(dist[unit])
    return {f"{layer}/{k}": v for layer, d in dist.items() for k, v in d.items()}


def log_unit(logger: BatchLogger, params: Params, task: UnitTask, run: UnitRun, folder: Path) -> None:
    """A unit's child run: params, per-epoch losses, distances and grids every `grid_every` epochs, generators."""
    cfg = task.cfg
    metrics = [(k, x, e + 1) for k, xs in run.history.items() for e, x in enumerate(xs)]
    metrics += [(k, x, e) for e, d in run.grid_distances.items() for k, x in flat_distances(d, task.unit).items()]
    metrics += [("final_loss_G", run.history["loss_G"][-1], 0), ("final_loss_cycle", run.history["loss_cycle"][-1], 0),
                ("epochs", cfg.epochs, 0), ("seconds", run.seconds, 0), ("resumed_at", run.resumed_at, 0)]
    scaler = "max|w| of both zoos / 0.9" + (" (each layer / its max|w| first)" if task.unit == "pair" else "")
    run_params = {"variant": task.variant, "unit": task.unit, "n_A": run.n_A, "n_B": run.n_B, "domain_A": "black",
                  "domain_B": "cat", **params.cyclegan.model_dump(), **task.v.model_dump(), "arch": cfg.arch,
                  "seed": cfg.seed, "scaler": scaler}
    end = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        grids = []
        for epoch, png in sorted(run.grids.items()):
            (Path(tmp) / f"epoch_{epoch:04d}.png").write_bytes(png)
            grids.append((Path(tmp) / f"epoch_{epoch:04d}.png", "grids"))
        logger.child(f"cyclegan-{task.variant}-{task.unit}", run_params, metrics,
                     tags={"variant": task.variant, "unit": task.unit}, start_ms=end - int(1000 * run.seconds),
                     end_ms=end, artifacts=[(folder / "generators.pt", None), *grids])


def run(params: Params, kernels: Path = KERNELS, out: Path = OUT, cache: Path = CACHE,
        metrics: Path = METRICS) -> dict:
    device = params.torch_device()  # cuda without a GPU: refused before anything is created
    check_backend(params.executor.backend, params.executor.address)  # a Ray cluster that answers, before any work
    variants = {name: params.translation.variant(name) for name in VARIANTS}
    tasks = plan_units(variants, params.cyclegan, params.seed, device, kernels, cache, params.executor.time_limit_s)
    files = sorted({f for t in tasks for f in t.files})
    mlflow = setup_mlflow("cyclegan")
    tags = run_tags("cyclegan", files)
    with stage_run(mlflow, "cyclegan", "cyclegan", files) as parent:
        mlflow.log_params({**params.cyclegan.model_dump(), "seed": params.seed, "device": device,
                           "backend": params.executor.backend, "variants": ",".join(variants),
                           "units": ",".join(f"{t.variant}/{t.unit}" for t in tasks)})
        datasets = dataset_inputs({f: "train" for f in files})
        mlflow.MlflowClient().log_inputs(parent.info.run_id, datasets=datasets)
        logger = BatchLogger(mlflow, parent.info.run_id, tags, datasets)
        bar = progress(total=len(tasks), desc="cyclegan", unit="unit")

        def on_unit(task: UnitTask, run: UnitRun, folder: Path) -> None:
            log_unit(logger, params, task, run, folder)
            bar.update(1)

        t0 = time.perf_counter()
        try:
            runs = train_units(tasks, out, params.cyclegan.workers, params.executor.backend, params.executor.address, on_unit)
        except TrainingDiverged as e:
            mlflow.set_tag("failed", str(e))
            raise
        bar.close()
        mlflow.log_metrics({"wall_seconds": time.perf_counter() - t0, "logging_seconds": logger.seconds,
                            "train_seconds_summed_over_workers": sum(r.seconds for rs in runs.values() for r in rs)})
    summaries = {}
    for name, v in variants.items():  # timings go to MLflow only: identical runs, identical bytes
        summaries[name] = summarize(name, v, runs[name])
        write_json(metrics / f"cyclegan_{name}.json", summaries[name])
        for layer in CONV_LAYERS:
            d = summaries[name][layer]
            log.info("cyclegan %s %s: d(A,B)=%.3f d(G_A2B(A),B)=%.3f d(G_B2A(B),A)=%.3f", name, layer,
                     d["dist_A_B"], d["dist_GA2B_A_B"], d["dist_GB2A_B_A"])
    return summaries


def main(argv: list[str] | None = None) -> None:
    # the checkpoints in the project root, also from a queued experiment's temporary copy (tracking.project_root)
    stage_main("cyclegan", lambda args, params: run(params, cache=project_root() / CACHE), argv,
               description="Train every translation variant's kernel CycleGANs, side by side.",
               errors=(ValueError, TrainingDiverged),
               on_interrupt=f"the checkpoints in {CACHE} resume the next run")


if __name__ == "__main__":
    main()
