"""Step `kernels`: harvest the conv kernels of both zoos (the CycleGAN datasets), as trained and aligned.

Keeps only models whose final validation accuracy reaches `kernels.min_val_accuracy`, and says how many
were dropped. Two harvests of the same models:

- data/kernels/raw/<domain>.pt: the weights as trained (the study's CycleGAN data, and every baseline's);
- data/kernels/aligned/<domain>.pt: every kept model of both zoos with its channels put in one canonical order,
  that of one reference model, the black zoo's best model on validation (ties: lowest index). Weight matching
  (`core.align`, Git Re-Basin) permutes conv1's output channels (with conv2's input channels) and conv2's output
  channels (with fc's input blocks) of each model to maximise its inner product with the reference. Each model
  still computes exactly the same function.

Each file holds conv1 [N,6,3,5,5], conv2 [N,16,6,5,5], their biases, the softmax head fc.weight [N,2,400] and
fc.bias [N,2] (the zoo-head baselines read it; the CycleGANs and generate read the conv tensors only), and
`model_index` (the kept models' indices in their zoo, the ids of generated models later). Which harvest a translation variant uses is its
`translation.<variant>.align`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

import zoofusion.layout as layout
from zoofusion.config import DOMAINS
from zoofusion.core.align import align_many, similarity
from zoofusion.core.cnn import CONV_KEYS, HEAD_KEYS
from zoofusion.io import atomic_dir, load_npz, save_torch, write_json

log = logging.getLogger(__name__)
ZOO = layout.ZOO
OUT = layout.KERNELS
METRICS = layout.METRICS / "kernels.json"


def load_zoo(zoo: Path, domain: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Stacked weights and per-model final validation accuracy of one domain's zoo."""
    f = zoo / domain / "weights.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: missing; run `dvc repro zoo@{domain}` first")
    weights = torch.load(f, weights_only=True)["weights"]
    val_acc = load_npz(zoo / domain / "history.npz")["val_acc"][:, -1]
    return weights, val_acc


def harvest(weights: dict[str, torch.Tensor], val_acc: np.ndarray, floor: float) -> dict[str, torch.Tensor]:
    """The conv tensors and heads of the models at or above the accuracy floor, with their zoo indices."""
    keep = np.flatnonzero(val_acc >= floor)
    idx = torch.from_numpy(keep)
    out = {k: weights[k][idx].clone() for k in (*CONV_KEYS, *HEAD_KEYS)}
    out["model_index"] = idx.to(torch.int64)
    return out


def reference_index(val_acc: np.ndarray) -> int:
    """The model every zoo model is aligned to: the best on validation (ties: the lowest index)."""
    return int(np.argmax(val_acc))


def aligned_harvest(weights: dict[str, torch.Tensor], val_acc: np.ndarray, floor: float,
                    ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`harvest`, each kept model's channels first permuted to match `ref` (all its weights, fc included)."""
    keep = harvest(weights, val_acc, floor)["model_index"]
    aligned = align_many(ref, {k: w[keep] for k, w in weights.items()})
    return {**{k: aligned[k].contiguous() for k in (*CONV_KEYS, *HEAD_KEYS)}, "model_index": keep}


def mean_similarity(ref: dict[str, torch.Tensor], h: dict[str, torch.Tensor]) -> float:
    """Mean over models of the cosine similarity of their conv weights with the reference's."""
    def cos(w: dict) -> float:
        return similarity(ref, w) / np.sqrt(similarity(ref, ref) * similarity(w, w))

    keys = ("conv1.weight", "conv2.weight")
    n = len(h["model_index"])
    return float(np.mean([cos({k: h[k][i] for k in keys}) for i in range(n)])) if n else float("nan")


def run(params, zoo: Path = ZOO, out: Path = OUT, metrics: Path = METRICS) -> dict:
    floor = params.kernels.min_val_accuracy
    loaded = {d: load_zoo(zoo, d) for d in DOMAINS}
    summary: dict = {}
    harvested = {}
    for d, (w, acc) in loaded.items():
        harvested[d] = harvest(w, acc, floor)
        kept = len(harvested[d]["model_index"])
        summary[d] = {"models": len(acc), "kept": kept, "dropped": len(acc) - kept}
        log.info("kernels %s: kept %d of %d models (dropped %d below val accuracy %.2f)", d, kept, len(acc),
                 len(acc) - kept, floor)
        if kept == 0:
            raise ValueError(f"kernels.min_val_accuracy: no {d} model reaches {floor} (best "
                             f"{acc.max():.3f}); lower the floor or train the zoo longer")
    w_black, acc_black = loaded["black"]
    r = reference_index(acc_black)
    ref = {k: t[r] for k, t in w_black.items()}
    aligned = {d: aligned_harvest(w, acc, floor, ref) for d, (w, acc) in loaded.items()}
    summary["alignment"] = {"reference": f"black/{r}", "reference_val_acc": round(float(acc_black[r]), 4),
                            **{f"{d}_cosine_to_reference_{what}": round(mean_similarity(ref, h), 4)
                               for d in DOMAINS for what, h in (("raw", harvested[d]), ("aligned", aligned[d]))}}
    log.info("kernels: aligned both zoos to black/%d; mean cosine to it %s", r,
             ", ".join(f"{d} {summary['alignment'][f'{d}_cosine_to_reference_raw']:.3f} -> "
                       f"{summary['alignment'][f'{d}_cosine_to_reference_aligned']:.3f}" for d in DOMAINS))
    with atomic_dir(out) as tmp:
        for name, sets in (("raw", harvested), ("aligned", aligned)):
            (tmp / name).mkdir()
            for d, h in sets.items():
                save_torch(tmp / name / f"{d}.pt", h)
    write_json(metrics, summary)
    return summary
