"""Stage `cyclegan@<layer>`: train the CycleGAN translating one conv layer's kernels between the zoos.

Domain A is the `black` zoo, B the `cat` zoo (unpaired, different sizes). Kernels are scaled into Tanh's
range by one scalar per layer fitted on both zoos' training kernels (max |w| / 0.9, stored with the model):
linear, so sign, zero and relative structure are kept, and exactly invertible.

Outputs data/cyclegan/<layer>/: `generators.pt` (G_A2B, G_B2A, scaler), `history.json` (per-epoch losses),
`final_grid.png`; metrics/cyclegan_<layer>.json. A checkpoint in data/cache/cyclegan/ (keyed by config and
data) lets an interrupted run resume. MLflow: experiment `cyclegan`, one run per layer with per-epoch losses,
kernel grids every `cyclegan.grid_every` epochs, the final generators, and the distribution distances
d(G_A2B(A), B) and d(G_B2A(B), A) beside the reference d(A, B).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from zoofusion.cli import stage_main
from zoofusion.config import Params
from zoofusion.core.cyclegan import CycleGANConfig, TrainingDiverged, save_generators, train_cyclegan, translate
from zoofusion.core.kernel_stats import kernel_stat_distance
from zoofusion.render.kernel_grid import kernel_grid_figure, save_figure
from zoofusion.tracking import dataset_inputs, run_tags, setup_mlflow
from zoofusion.console import progress
from zoofusion.core.seeds import derive_seed
from zoofusion.io import atomic_dir, code_fingerprint, file_md5, write_json

log = logging.getLogger(__name__)
LAYERS = ("conv1", "conv2")
KERNELS = Path("data/kernels")
OUT = Path("data/cyclegan")
CACHE = Path("data/cache/cyclegan")
METRICS = Path("metrics")


def layer_data(kernels: Path, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A (black zoo) and B (cat zoo) samples of one layer: [N, C, D, 5, 5] each."""
    out = []
    for d in ("black", "cat"):
        f = kernels / f"{d}.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
        out.append(torch.load(f, weights_only=True)[f"{layer}.weight"])
    return out[0], out[1]


def make_config(params: Params, layer: str) -> CycleGANConfig:
    return CycleGANConfig(**params.cyclegan.core_kwargs(), seed=derive_seed(params.seed, "cyclegan", layer),
                          device=params.torch_device())


# The code that decides a checkpoint's content: the CycleGAN, seed derivation, and this stage.
CODE = ("core/cyclegan.py", "core/seeds.py", "stages/cyclegan.py")


def checkpoint_path(cache: Path, layer: str, cfg: CycleGANConfig, data_md5: str, code: str | None = None) -> Path:
    """Keyed by config, data and the training code's fingerprint: other code never resumes an old checkpoint.
    epochs is left out so raising it resumes training instead of starting over."""
    key = {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "checkpoint_every", "max_loss")}
    key["code"] = code or code_fingerprint(*CODE)
    digest = hashlib.sha256(json.dumps([key, data_md5], sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache / f"{layer}-{digest}.ckpt"


def grid(state, A: torch.Tensor, B: torch.Tensor, layer: str, epoch: int):
    panels = {"real A (black zoo)": A[0], "G_A2B(A)": translate(state.G_A2B, state.scaler, A[0]),
              "real B (cat zoo)": B[0], "G_B2A(B)": translate(state.G_B2A, state.scaler, B[0])}
    return kernel_grid_figure(panels, title=f"{layer} kernels, epoch {epoch}")


def distances(state, A: torch.Tensor, B: torch.Tensor) -> dict[str, float]:
    fake_b = translate(state.G_A2B, state.scaler, A)
    fake_a = translate(state.G_B2A, state.scaler, B)
    return {"dist_A_B": kernel_stat_distance(A, B), "dist_GA2B_A_B": kernel_stat_distance(fake_b, B),
            "dist_GB2A_B_A": kernel_stat_distance(fake_a, A)}


def run(layer: str, params: Params, kernels: Path = KERNELS, out: Path = OUT, cache: Path = CACHE,
        metrics: Path = METRICS) -> dict:
    cfg = make_config(params, layer)  # cuda without a GPU: refused before anything is created
    A, B = layer_data(kernels, layer)
    ckpt = checkpoint_path(cache, layer, cfg, file_md5(kernels / "black.pt") + file_md5(kernels / "cat.pt"))
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    log.info("cyclegan %s: A %s, B %s, %d epochs (checkpoint %s%s)", layer, tuple(A.shape), tuple(B.shape),
             cfg.epochs, ckpt, ", resuming" if ckpt.exists() else "")
    mlflow = setup_mlflow("cyclegan")
    from mlflow.entities import Metric

    with mlflow.start_run(run_name=f"cyclegan-{layer}",
                          tags=run_tags(f"cyclegan@{layer}", [kernels / "black.pt", kernels / "cat.pt"])) as run:
        mlflow.log_params({"layer": layer, "n_A": len(A), "n_B": len(B), "domain_A": "black", "domain_B": "cat",
                           **params.cyclegan.model_dump(), "seed": cfg.seed,
                           "scaler": "max|w| of both zoos / 0.9"})
        client, run_id = mlflow.MlflowClient(), run.info.run_id
        client.log_inputs(run_id, datasets=dataset_inputs({kernels / "black.pt": "train", kernels / "cat.pt": "train"}))
        pending: list = []
        bar = progress(total=cfg.epochs, desc=f"cyclegan {layer}", unit="epoch")
        t0 = time.perf_counter()

        def on_epoch(epoch: int, losses: dict[str, float], state) -> None:  # epoch counts from 1
            now = int(time.time() * 1000)
            pending.extend(Metric(k, float(v), now, epoch) for k, v in losses.items())
            last = epoch >= cfg.epochs
            if epoch % params.cyclegan.grid_every == 0 or last:
                pending.extend(Metric(k, v, now, epoch) for k, v in distances(state, A, B).items())
                mlflow.log_figure(grid(state, A, B, layer, epoch), f"grids/epoch_{epoch:04d}.png")
            if len(pending) >= 500 or last or epoch % params.cyclegan.checkpoint_every == 0:
                client.log_batch(run_id, metrics=pending)  # batched: sqlite costs ~100 ms per call
                pending.clear()
            bar.update(1)

        try:
            result = train_cyclegan(A, B, cfg, checkpoint_path=ckpt, on_epoch=on_epoch)
        except TrainingDiverged as e:
            mlflow.set_tag("failed", str(e))
            raise
        bar.close()
        if pending:
            client.log_batch(run_id, metrics=pending)
        dist = distances(result, A, B)
        summary = {**dist, "final_loss_G": result.history["loss_G"][-1],
                   "final_loss_cycle": result.history["loss_cycle"][-1],
                   "epochs": cfg.epochs, "seconds": round(time.perf_counter() - t0, 2),
                   "translation_gain_A2B": dist["dist_A_B"] - dist["dist_GA2B_A_B"],
                   "translation_gain_B2A": dist["dist_A_B"] - dist["dist_GB2A_B_A"]}
        with atomic_dir(out / layer) as tmp:
            save_generators(tmp / "generators.pt", result, meta={"layer": layer})
            (tmp / "history.json").write_text(json.dumps(result.history, indent=1))
            names = list(result.history)
            rows = [",".join(["epoch", *names])]  # losses.csv: a DVC plot
            rows += [",".join([str(e + 1), *(f"{result.history[n][e]:.6g}" for n in names)])
                     for e in range(len(result.history[names[0]]))]
            (tmp / "losses.csv").write_text("\n".join(rows) + "\n")
            save_figure(grid(result, A, B, layer, cfg.epochs), tmp / "final_grid.png")
        mlflow.log_artifact(str(out / layer / "generators.pt"))
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if k not in dist})
    write_json(metrics / f"cyclegan_{layer}.json", summary)
    log.info("cyclegan %s: d(A,B)=%.3f d(G_A2B(A),B)=%.3f d(G_B2A(B),A)=%.3f", layer, dist["dist_A_B"],
             dist["dist_GA2B_A_B"], dist["dist_GB2A_B_A"])
    return summary


def main(argv: list[str] | None = None) -> None:
    stage_main("cyclegan@{layer}", lambda args, params: run(args.layer, params), argv,
               description="Train the kernel CycleGAN of one conv layer.", errors=(ValueError, TrainingDiverged),
               add_arguments=lambda ap: ap.add_argument("--layer", required=True, choices=LAYERS),
               on_interrupt=f"the checkpoint in {CACHE} resumes the next run")


if __name__ == "__main__":
    main()
