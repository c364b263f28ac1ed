"""Stage `generate`: build generated feature extractors from translated zoo kernels.

For each source model i of domain X (A = black zoo, B = cat zoo), its conv1 and conv2 kernels go through that
layer's X->Y generator (A->B with G_A2B, B->A with G_B2A). Biases are not translated (the CycleGAN sees only
kernels): `generate.bias: source` keeps the source model's biases, `zero` sets them to 0. The result is the
CNN's conv part, a 400-d feature extractor, id'd like the study: "<source index>/<source domain>", e.g. "229/A".

Output data/generated/models.pt: the stacked conv tensors of all generated models plus `source_index`,
`source_domain` (0 = A, 1 = B) and their ids; `load_models()` turns it into `torch.nn.Module`s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from zoofusion.cli import stage_main
from zoofusion.core.cnn import ConvFeatures
from zoofusion.config import Params
from zoofusion.core.cyclegan import load_generators, translate
from zoofusion.render.kernel_grid import kernel_grid_figure
from zoofusion.tracking import dataset_inputs, run_tags, setup_mlflow
from zoofusion.io import atomic_dir

log = logging.getLogger(__name__)
KERNELS = Path("data/kernels")
GANS = Path("data/cyclegan")
OUT = Path("data/generated")
DOMAIN_LETTER = {"black": "A", "cat": "B"}
CONV_KEYS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")


def model_id(index: int, domain: str) -> str:
    return f"{index}/{DOMAIN_LETTER[domain]}"


def generate(kernels: dict[str, dict[str, torch.Tensor]], gens: dict[str, tuple], max_per_domain: int,
             bias: str) -> dict[str, torch.Tensor | list[str]]:
    """Translate every selected source model's conv kernels; returns stacked tensors and ids."""
    parts: dict[str, list] = {k: [] for k in (*CONV_KEYS, "source_index", "source_domain")}
    ids: list[str] = []
    for d_i, domain in enumerate(("black", "cat")):
        k = kernels[domain]
        n = len(k["model_index"]) if max_per_domain == 0 else min(max_per_domain, len(k["model_index"]))
        for layer in ("conv1", "conv2"):
            g_a2b, g_b2a, scaler, _ = gens[layer]
            g = g_a2b if domain == "black" else g_b2a
            parts[f"{layer}.weight"].append(translate(g, scaler, k[f"{layer}.weight"][:n]))
            b = k[f"{layer}.bias"][:n]
            parts[f"{layer}.bias"].append(b.clone() if bias == "source" else torch.zeros_like(b))
        parts["source_index"].append(k["model_index"][:n])
        parts["source_domain"].append(torch.full((n,), d_i, dtype=torch.int64))
        ids += [model_id(int(i), domain) for i in k["model_index"][:n]]
    out: dict = {key: torch.cat(v) for key, v in parts.items()}
    out["ids"] = ids
    return out


def load_models(path: str | Path = OUT / "models.pt") -> dict[str, ConvFeatures]:
    """Generated models as feature extractors (`torch.nn.Module`, [B,3,32,32] -> [B,400]) keyed by id."""
    g = torch.load(path, weights_only=True)
    return {mid: ConvFeatures(*(g[k][i] for k in CONV_KEYS)).eval() for i, mid in enumerate(g["ids"])}


def run(params: Params, kernels: Path = KERNELS, gans: Path = GANS, out: Path = OUT) -> int:
    ks = {}
    for d in ("black", "cat"):
        f = kernels / f"{d}.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
        ks[d] = torch.load(f, weights_only=True)
    gens = {}
    for layer in ("conv1", "conv2"):
        f = gans / layer / "generators.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro cyclegan@{layer}` first")
        gens[layer] = load_generators(f)
    g = generate(ks, gens, params.generate.max_per_domain, params.generate.bias)
    n = len(g["ids"])
    with atomic_dir(out) as tmp:
        torch.save(g, tmp / "models.pt")
        (tmp / "ids.txt").write_text("\n".join(g["ids"]) + "\n")
    log.info("generate: %d generated models (%d from A, %d from B)", n, int((g["source_domain"] == 0).sum()),
             int((g["source_domain"] == 1).sum()))

    mlflow = setup_mlflow("cyclegan")
    inputs = [kernels / "black.pt", kernels / "cat.pt", gans / "conv1" / "generators.pt", gans / "conv2" / "generators.pt"]
    with mlflow.start_run(run_name="generate", tags=run_tags("generate", inputs)) as run:
        mlflow.MlflowClient().log_inputs(run.info.run_id, datasets=dataset_inputs({f: "train" for f in inputs}))
        mlflow.log_params({"n_generated": n, "bias": params.generate.bias,
                           "max_per_domain": params.generate.max_per_domain})
        for d_i, domain in enumerate(("black", "cat")):
            i = int(np.flatnonzero(g["source_domain"].numpy() == d_i)[0])
            src = ks[domain]["conv1.weight"][0]
            fig = kernel_grid_figure({f"source {g['ids'][i]} conv1": src, f"generated {g['ids'][i]} conv1":
                                      g["conv1.weight"][i]}, title=f"source vs generated ({domain} zoo)")
            mlflow.log_figure(fig, f"source_vs_generated_{domain}.png")
        mlflow.log_artifact(str(out / "ids.txt"))
    return n


def main(argv: list[str] | None = None) -> None:
    stage_main("generate", lambda args, params: run(params), argv,
               description="Assemble generated CNNs from translated kernels.")


if __name__ == "__main__":
    main()
