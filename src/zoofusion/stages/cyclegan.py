"""Stage `cyclegan@<variant>`: train the CycleGAN(s) that translate zoo kernels for one translation variant.

Domain A is the `black` zoo, B the `cat` zoo (unpaired, different sizes). `translation.<variant>` decides:
`align` picks the harvest (data/kernels/raw, as trained, or data/kernels/aligned, channels in one canonical
order); `translate: layers` trains one CycleGAN per conv layer (the study's: `conv1`, then `conv2`, independent),
`translate: pair` one CycleGAN for each model's conv1 and conv2 together (core/pair.py); `lr_decay`,
`disc_output` and `pool_size` are the reference CycleGAN's training details. Kernels are scaled into the
networks' range by one scalar fitted on both zoos (max |w| / 0.9, stored with the model; for a pair, each layer is
first divided by its own max |w|): linear, so sign, zero and relative structure are kept, and exactly invertible.
A layer's CycleGAN is seeded by the layer (`derive_seed(seed, "cyclegan", layer)`), whatever the variant, so
variants that differ only in a setting start from the same draw.

Outputs data/cyclegan/<variant>/<unit>/ (unit: conv1 and conv2, or pair): `generators.pt` (G_A2B, G_B2A, scaler),
`history.json` (per-epoch losses), `final_grid.png`; metrics/cyclegan_<variant>.json with, per layer, the
distribution distances d(G_A2B(A), B) and d(G_B2A(B), A) beside the reference d(A, B). A checkpoint in
data/cache/cyclegan/ (keyed by config, data and code) lets an interrupted run resume, to the bytes of an
uninterrupted one, or is not used (steps/cyclegan.py). MLflow: experiment
`cyclegan`, one run per unit (`cyclegan-<variant>-<unit>`) with per-epoch losses, kernel grids every
`cyclegan.grid_every` epochs, the final generators and the distances.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from zoofusion.cli import stage_main
from zoofusion.config import VARIANTS, Params
from zoofusion.console import progress
from zoofusion.core.cyclegan import TrainingDiverged
from zoofusion.io import atomic_dir, write_json
from zoofusion.steps.cyclegan import Unit, distances, grid, kernel_files, load_kernels, make_config, train_unit, units
from zoofusion.tracking import dataset_inputs, project_root, run_tags, setup_mlflow

log = logging.getLogger(__name__)
LAYERS = ("conv1", "conv2")
KERNELS = Path("data/kernels")
OUT = Path("data/cyclegan")
CACHE = Path("data/cache/cyclegan")
METRICS = Path("metrics")


def flat_distances(dist: dict[str, dict[str, float]], unit: Unit) -> dict[str, float]:
    """MLflow names: `dist_A_B` for a layer's own run, `<layer>/dist_A_B` in a pair's run."""
    if unit.name in dist:
        return dict(dist[unit.name])
    return {f"{layer}/{k}": v for layer, d in dist.items() for k, v in d.items()}


def train_logged(unit: Unit, variant: str, params: Params, files: list[Path], out: Path, cache: Path) -> tuple[dict, dict]:
    """steps.cyclegan.train_unit inside the unit's MLflow run: params, per-epoch losses, grids, distances."""
    cfg = make_config(params.cyclegan, params.translation.variant(variant), params.seed, params.torch_device(),
                      unit.name)
    name = f"cyclegan-{variant}-{unit.name}"
    mlflow = setup_mlflow("cyclegan")
    from mlflow.entities import Metric

    v = params.translation.variant(variant)
    with mlflow.start_run(run_name=name, tags=run_tags(f"cyclegan@{variant}", files)) as run:
        mlflow.log_params({"variant": variant, "unit": unit.name, "n_A": len(unit.A), "n_B": len(unit.B),
                           "domain_A": "black", "domain_B": "cat", **params.cyclegan.model_dump(),
                           **v.model_dump(), "arch": cfg.arch, "seed": cfg.seed,
                           "scaler": "max|w| of both zoos / 0.9" + (" (each layer / its max|w| first)"
                                                                    if unit.name == "pair" else "")})
        client, run_id = mlflow.MlflowClient(), run.info.run_id
        client.log_inputs(run_id, datasets=dataset_inputs({f: "train" for f in files}))
        pending: list = []
        bar = progress(total=cfg.epochs, desc=name, unit="epoch")

        def on_epoch(epoch: int, losses: dict[str, float], state) -> None:  # epoch counts from 1
            now = int(time.time() * 1000)
            pending.extend(Metric(k, float(x), now, epoch) for k, x in losses.items())
            last = epoch >= cfg.epochs
            if epoch % params.cyclegan.grid_every == 0 or last:
                pending.extend(Metric(k, x, now, epoch) for k, x in flat_distances(distances(state, unit), unit).items())
                mlflow.log_figure(grid(state, unit, f"{variant} {unit.name}", epoch), f"grids/epoch_{epoch:04d}.png")
            if len(pending) >= 500 or last or epoch % params.cyclegan.checkpoint_every == 0:
                client.log_batch(run_id, metrics=pending)  # batched: sqlite costs ~100 ms per call
                pending.clear()
            bar.update(1)

        try:
            done = train_unit(unit, variant, cfg, files, out, cache, on_epoch=on_epoch)
        except TrainingDiverged as e:
            mlflow.set_tag("failed", str(e))
            raise
        bar.close()
        if pending:
            client.log_batch(run_id, metrics=pending)
        history = done.result.history
        summary = {"final_loss_G": history["loss_G"][-1], "final_loss_cycle": history["loss_cycle"][-1],
                   "epochs": cfg.epochs}  # metrics/cyclegan_<variant>.json: no timings, identical runs identical bytes
        mlflow.log_artifact(str(out / unit.name / "generators.pt"))
        mlflow.log_metrics({**summary, "seconds": done.seconds})
    return done.distances, summary


def run(variant: str, params: Params, kernels: Path = KERNELS, out: Path = OUT, cache: Path = CACHE,
        metrics: Path = METRICS) -> dict:
    v = params.translation.variant(variant)
    params.torch_device()  # cuda without a GPU: refused before anything is created
    files = kernel_files(kernels, v)
    black, cat = load_kernels(files)
    summary: dict = {"variant": variant, "align": v.align, "translate": v.translate, "units": {}}
    with atomic_dir(out / variant) as tmp:
        for unit in units(v, black, cat):
            dist, s = train_logged(unit, variant, params, files, tmp, cache)
            summary["units"][unit.name] = s
            for layer, d in dist.items():
                summary[layer] = {**d, "translation_gain_A2B": d["dist_A_B"] - d["dist_GA2B_A_B"],
                                  "translation_gain_B2A": d["dist_A_B"] - d["dist_GB2A_B_A"]}
    write_json(metrics / f"cyclegan_{variant}.json", summary)
    for layer in LAYERS:
        d = summary[layer]
        log.info("cyclegan %s %s: d(A,B)=%.3f d(G_A2B(A),B)=%.3f d(G_B2A(B),A)=%.3f", variant, layer,
                 d["dist_A_B"], d["dist_GA2B_A_B"], d["dist_GB2A_B_A"])
    return summary


def main(argv: list[str] | None = None) -> None:
    # the checkpoints in the project root, also from a queued experiment's temporary copy (tracking.project_root)
    stage_main("cyclegan@{variant}", lambda args, params: run(args.variant, params, cache=project_root() / CACHE),
               argv,
               description="Train the kernel CycleGAN(s) of one translation variant.",
               errors=(ValueError, TrainingDiverged),
               add_arguments=lambda ap: ap.add_argument("--variant", required=True, choices=VARIANTS),
               on_interrupt=f"the checkpoints in {CACHE} resume the next run")


if __name__ == "__main__":
    main()
