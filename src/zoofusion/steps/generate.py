"""Step `generate`: build generated feature extractors from one variant's translated zoo kernels.

For each source model i of domain X (A = black zoo, B = cat zoo), taken from the harvest the variant trained on
(data/kernels/raw or data/kernels/aligned, `translation.<variant>.align`), its kernels go through the variant's
X->Y generators (A->B with G_A2B, B->A with G_B2A): conv1 and conv2 each through its own layer's CycleGAN
(`translate: layers`, the study's), or both together through the pair CycleGAN (`translate: pair`,
core/pair.py), which keeps the generated conv2's input slices matched to the generated conv1's channels. Biases
are not translated (the CycleGANs see only kernels): `generate.bias: source` keeps the source model's biases
(permuted with its channels when aligned), `zero` sets them to 0. The result is the CNN's conv part, a 400-d
feature extractor, id'd like the study: "<source index>/<source domain>", e.g. "229/A".

Output data/generated/<variant>/models.pt: the stacked conv tensors of all generated models plus `source_index`,
`source_domain` (0 = A, 1 = B) and their ids; `load_models()` turns it into `torch.nn.Module`s. Beside it,
`untrained.pt` (same layout, same sources and ids): the translation control, the same kernels translated the same
way by the variant's generators at initialisation (cyclegan's `generators_init.pt`), so the evaluation shows
whether training the translation matters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import zoofusion.layout as layout
from zoofusion.config import DOMAINS
from zoofusion.core.cnn import CONV_KEYS, CONV_LAYERS, ConvFeatures
from zoofusion.core.cyclegan import translate
from zoofusion.core.pair import translate_pair
from zoofusion.io import atomic_dir, save_torch
from zoofusion.steps.cyclegan import INITIAL, load_generators

if TYPE_CHECKING:
    from zoofusion.config import GenerateParams, VariantParams

log = logging.getLogger(__name__)
KERNELS = layout.KERNELS
GANS = layout.CYCLEGAN
OUT = layout.GENERATED
DOMAIN_LETTER = dict(zip(DOMAINS, "AB"))  # the study's names: A = black zoo, B = cat zoo


def model_id(index: int, domain: str) -> str:
    return f"{index}/{DOMAIN_LETTER[domain]}"


def translate_models(k: dict[str, torch.Tensor], gens: dict[str, tuple], a2b: bool) -> dict[str, torch.Tensor]:
    """conv1/conv2 kernels of models `k` translated by per-layer generators (`conv1`, `conv2`) or a `pair`."""
    pick = 0 if a2b else 1
    if "pair" in gens:
        g = gens["pair"]
        c1, c2 = translate_pair(g[pick], g[2], tuple(g[3]["pair_scales"]), k["conv1.weight"], k["conv2.weight"])
        return {"conv1.weight": c1, "conv2.weight": c2}
    return {f"{layer}.weight": translate(gens[layer][pick], gens[layer][2], k[f"{layer}.weight"])
            for layer in CONV_LAYERS}


def generate(kernels: dict[str, dict[str, torch.Tensor]], gens: dict[str, tuple], max_per_domain: int,
             bias: str) -> dict[str, torch.Tensor | list[str]]:
    """Translate every selected source model's conv kernels; returns stacked tensors and ids."""
    parts: dict[str, list] = {k: [] for k in (*CONV_KEYS, "source_index", "source_domain")}
    ids: list[str] = []
    for d_i, domain in enumerate(DOMAINS):
        k = kernels[domain]
        n = len(k["model_index"]) if max_per_domain == 0 else min(max_per_domain, len(k["model_index"]))
        translated = translate_models({key: t[:n] for key, t in k.items()}, gens, a2b=domain == "black")
        for layer in CONV_LAYERS:
            parts[f"{layer}.weight"].append(translated[f"{layer}.weight"])
            b = k[f"{layer}.bias"][:n]
            parts[f"{layer}.bias"].append(b.clone() if bias == "source" else torch.zeros_like(b))
        parts["source_index"].append(k["model_index"][:n])
        parts["source_domain"].append(torch.full((n,), d_i, dtype=torch.int64))
        ids += [model_id(int(i), domain) for i in k["model_index"][:n]]
    out: dict = {key: torch.cat(v) for key, v in parts.items()}
    out["ids"] = ids
    return out


def load_models(path: str | Path = OUT / "study" / "models.pt") -> dict[str, ConvFeatures]:
    """Generated models as feature extractors (`torch.nn.Module`, [B,3,32,32] -> [B,400]) keyed by id."""
    g = torch.load(path, weights_only=True)
    return {mid: ConvFeatures(*(g[k][i] for k in CONV_KEYS)).eval() for i, mid in enumerate(g["ids"])}


def run(variant: str, v: VariantParams, g: GenerateParams, kernels: Path = KERNELS, gans: Path = GANS,
        out: Path = OUT) -> dict:
    """Translate the kernels `v` names with the variant's generators and write `out/<variant>/` (models.pt, ids.txt).
    Returns what the stage logs: the generated tensors, the source kernels and the input files."""
    folder = kernels / ("aligned" if v.align else "raw")
    ks = {}
    for d in DOMAINS:
        f = folder / f"{d}.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
        ks[d] = torch.load(f, weights_only=True)
    units = ("pair",) if v.translate == "pair" else CONV_LAYERS
    gens, init, gen_files = {}, {}, []
    for unit in units:
        for name, into in (("generators.pt", gens), (INITIAL, init)):
            f = gans / variant / unit / name
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing; run `dvc repro cyclegan` first")
            into[unit] = load_generators(f)
            gen_files.append(f)
    generated = generate(ks, gens, g.max_per_domain, g.bias)
    untrained = generate(ks, init, g.max_per_domain, g.bias)
    with atomic_dir(out / variant) as tmp:
        save_torch(tmp / "models.pt", generated)
        save_torch(tmp / "untrained.pt", untrained)
        (tmp / "ids.txt").write_text("\n".join(generated["ids"]) + "\n")
    log.info("generate %s: %d generated models (%d from A, %d from B)", variant, len(generated["ids"]),
             int((generated["source_domain"] == 0).sum()), int((generated["source_domain"] == 1).sum()))
    return {"generated": generated, "kernels": ks, "inputs": [folder / f"{d}.pt" for d in DOMAINS] + gen_files}
