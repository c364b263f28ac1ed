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
data/cache/cyclegan/ (keyed by config, data and code) lets an interrupted run resume. MLflow: experiment
`cyclegan`, one run per unit (`cyclegan-<variant>-<unit>`) with per-epoch losses, kernel grids every
`cyclegan.grid_every` epochs, the final generators and the distances.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from zoofusion.cli import stage_main
from zoofusion.config import VARIANTS, Params, VariantParams
from zoofusion.console import progress
from zoofusion.core.cyclegan import CycleGANConfig, TrainingDiverged, save_generators, train_cyclegan, translate
from zoofusion.core.kernel_stats import kernel_stat_distance
from zoofusion.core.pair import fit_scales, pack, unpack
from zoofusion.core.seeds import derive_seed
from zoofusion.io import atomic_dir, code_fingerprint, file_md5, write_json
from zoofusion.render.kernel_grid import kernel_grid_figure, save_figure
from zoofusion.tracking import dataset_inputs, run_tags, setup_mlflow

log = logging.getLogger(__name__)
LAYERS = ("conv1", "conv2")
KERNELS = Path("data/kernels")
OUT = Path("data/cyclegan")
CACHE = Path("data/cache/cyclegan")
METRICS = Path("metrics")


def kernel_files(kernels: Path, v: VariantParams) -> list[Path]:
    """The harvest a variant translates: data/kernels/aligned/ or data/kernels/raw/, black then cat."""
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
                     lambda x, layer=layer: {layer: x}, {"layer": layer}) for layer in LAYERS]
    scales = fit_scales(*((d["conv1.weight"], d["conv2.weight"]) for d in (black, cat)))

    def layers(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(LAYERS, unpack(x, scales)))

    return [Unit("pair", pack(black["conv1.weight"], black["conv2.weight"], scales),
                 pack(cat["conv1.weight"], cat["conv2.weight"], scales), layers,
                 {"layer": "pair", "pair_scales": list(scales)})]


def make_config(params: Params, variant: str, unit: str) -> CycleGANConfig:
    return CycleGANConfig(**params.cyclegan.core_kwargs(), **params.translation.variant(variant).core_kwargs(),
                          seed=derive_seed(params.seed, "cyclegan", unit), device=params.torch_device())


# The code that decides a checkpoint's content: this module and its zoofusion import closure (io.import_closure).
CODE = "zoofusion.stages.cyclegan"


def checkpoint_path(cache: Path, name: str, cfg: CycleGANConfig, data_md5: str, code: str | None = None) -> Path:
    """Keyed by config, data and the training code's fingerprint: other code never resumes an old checkpoint.
    epochs is left out so raising it resumes training instead of starting over."""
    key = {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "checkpoint_every", "max_loss")}
    key["code"] = code or code_fingerprint(CODE)
    digest = hashlib.sha256(json.dumps([key, data_md5], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache / f"{name}-{digest}.ckpt"


def grid(state, unit: Unit, title: str, epoch: int):
    """conv1 of the first model of each zoo, real and translated (for a pair, conv1 as the pair translates it)."""
    def first_layer(x: torch.Tensor) -> torch.Tensor:
        return next(iter(unit.layers(x.unsqueeze(0)).values()))[0]

    a, b = unit.A[:1], unit.B[:1]
    panels = {"real A (black zoo)": first_layer(a[0]), "G_A2B(A)": first_layer(translate(state.G_A2B, state.scaler, a)[0]),
              "real B (cat zoo)": first_layer(b[0]), "G_B2A(B)": first_layer(translate(state.G_B2A, state.scaler, b)[0])}
    return kernel_grid_figure(panels, title=f"{title}, epoch {epoch}")


def distances(state, unit: Unit) -> dict[str, dict[str, float]]:
    """Per layer: d(A, B), d(G_A2B(A), B), d(G_B2A(B), A) (core.kernel_stats), in weight units."""
    real_a, real_b = unit.layers(unit.A), unit.layers(unit.B)
    fake_b = unit.layers(translate(state.G_A2B, state.scaler, unit.A))
    fake_a = unit.layers(translate(state.G_B2A, state.scaler, unit.B))
    return {layer: {"dist_A_B": kernel_stat_distance(real_a[layer], real_b[layer]),
                    "dist_GA2B_A_B": kernel_stat_distance(fake_b[layer], real_b[layer]),
                    "dist_GB2A_B_A": kernel_stat_distance(fake_a[layer], real_a[layer])} for layer in real_a}


def flat_distances(dist: dict[str, dict[str, float]], unit: Unit) -> dict[str, float]:
    """MLflow names: `dist_A_B` for a layer's own run, `<layer>/dist_A_B` in a pair's run."""
    if unit.name in dist:
        return dict(dist[unit.name])
    return {f"{layer}/{k}": v for layer, d in dist.items() for k, v in d.items()}


def train_unit(unit: Unit, variant: str, params: Params, files: list[Path], out: Path, cache: Path) -> tuple[dict, dict]:
    cfg = make_config(params, variant, unit.name)
    ckpt = checkpoint_path(cache, f"{variant}-{unit.name}", cfg, "".join(file_md5(f) for f in files))
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    name = f"cyclegan-{variant}-{unit.name}"
    log.info("%s: A %s, B %s, %d epochs (checkpoint %s%s)", name, tuple(unit.A.shape), tuple(unit.B.shape),
             cfg.epochs, ckpt, ", resuming" if ckpt.exists() else "")
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
        t0 = time.perf_counter()

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
            result = train_cyclegan(unit.A, unit.B, cfg, checkpoint_path=ckpt, on_epoch=on_epoch)
        except TrainingDiverged as e:
            mlflow.set_tag("failed", str(e))
            raise
        bar.close()
        if pending:
            client.log_batch(run_id, metrics=pending)
        dist = distances(result, unit)
        summary = {"final_loss_G": result.history["loss_G"][-1], "final_loss_cycle": result.history["loss_cycle"][-1],
                   "epochs": cfg.epochs, "seconds": round(time.perf_counter() - t0, 2)}
        with atomic_dir(out / unit.name) as tmp:
            save_generators(tmp / "generators.pt", result, meta={**unit.meta, "variant": variant})
            (tmp / "history.json").write_text(json.dumps(result.history, indent=1))
            names = list(result.history)
            rows = [",".join(["epoch", *names])]  # losses.csv: a DVC plot
            rows += [",".join([str(e + 1), *(f"{result.history[n][e]:.6g}" for n in names)])
                     for e in range(len(result.history[names[0]]))]
            (tmp / "losses.csv").write_text("\n".join(rows) + "\n")
            save_figure(grid(result, unit, f"{variant} {unit.name}", cfg.epochs), tmp / "final_grid.png")
        mlflow.log_artifact(str(out / unit.name / "generators.pt"))
        mlflow.log_metrics(summary)
    return dist, summary


def run(variant: str, params: Params, kernels: Path = KERNELS, out: Path = OUT, cache: Path = CACHE,
        metrics: Path = METRICS) -> dict:
    v = params.translation.variant(variant)
    params.torch_device()  # cuda without a GPU: refused before anything is created
    files = kernel_files(kernels, v)
    black, cat = load_kernels(files)
    summary: dict = {"variant": variant, "align": v.align, "translate": v.translate, "units": {}}
    with atomic_dir(out / variant) as tmp:
        for unit in units(v, black, cat):
            dist, s = train_unit(unit, variant, params, files, tmp, cache)
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
    stage_main("cyclegan@{variant}", lambda args, params: run(args.variant, params), argv,
               description="Train the kernel CycleGAN(s) of one translation variant.",
               errors=(ValueError, TrainingDiverged),
               add_arguments=lambda ap: ap.add_argument("--variant", required=True, choices=VARIANTS),
               on_interrupt=f"the checkpoints in {CACHE} resume the next run")


if __name__ == "__main__":
    main()
