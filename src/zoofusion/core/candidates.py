"""The candidates of an evaluation: generated models and the baselines they are compared with, as conv weights.

Every candidate turns images into features the same way (400-d conv2 outputs; raw pixels for `pixels`), so the
protocol treats them identically. Pure: tensors in, candidates and features out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from zoofusion.core.cnn import CONV_KEYS, batched_features, init_weights
from zoofusion.core.seeds import derive_seed

BASELINE_KINDS = ("random", "zoo-A", "zoo-B", "average", "pixels")
KINDS = ("generated", *BASELINE_KINDS)


@dataclass
class Candidate:
    id: str
    kind: str
    source_domain: str = ""  # "A" (black zoo) or "B" (cat zoo) for generated and zoo models
    source_index: int = -1
    weights: dict[str, torch.Tensor] | None = None  # conv tensors of one model; None = raw pixels
    extra: dict = field(default_factory=dict)


def generated_candidates(g: dict, limit: int) -> list[Candidate]:
    n = len(g["ids"]) if limit == 0 else min(limit, len(g["ids"]))
    return [Candidate(g["ids"][i], "generated", "AB"[int(g["source_domain"][i])], int(g["source_index"][i]),
                      {k: g[k][i] for k in CONV_KEYS}) for i in range(n)]


def baseline_candidates(kernels: dict[str, dict], n: int, seed: int) -> list[Candidate]:
    """Random init, untranslated zoo models of each domain, their element-wise average, raw pixels."""
    out = []
    for j in range(n):
        w = init_weights(derive_seed(seed, "baseline-random", j))
        out.append(Candidate(f"random-{j}", "random", weights={k: w[k] for k in CONV_KEYS}))
    na, nb = len(kernels["black"]["model_index"]), len(kernels["cat"]["model_index"])
    for d, letter, m in (("black", "A", na), ("cat", "B", nb)):
        for j in range(min(n, m)):
            idx = int(kernels[d]["model_index"][j])
            out.append(Candidate(f"zoo-{letter}-{idx}", f"zoo-{letter}", letter, idx,
                                 {k: kernels[d][k][j] for k in CONV_KEYS}))
    for j in range(min(n, na, nb)):
        ia, ib = int(kernels["black"]["model_index"][j]), int(kernels["cat"]["model_index"][j])
        w = {k: (kernels["black"][k][j] + kernels["cat"][k][j]) / 2 for k in CONV_KEYS}
        out.append(Candidate(f"avg-{ia}A-{ib}B", "average", weights=w))
    out.append(Candidate("pixels", "pixels"))
    return out


def compute_features(cands: list[Candidate], x: torch.Tensor, batch: int) -> list[np.ndarray]:
    """Features of every candidate on the same images, batched across models (grouped convolutions)."""
    feats: list[np.ndarray | None] = [None] * len(cands)
    conv = [i for i, c in enumerate(cands) if c.weights is not None]
    if conv:
        stacked = {k: torch.stack([cands[i].weights[k] for i in conv]) for k in CONV_KEYS}
        f = batched_features(stacked, x, batch_size=batch).numpy()
        for j, i in enumerate(conv):
            feats[i] = f[j]
    for i, c in enumerate(cands):
        if c.weights is None:
            feats[i] = x.reshape(len(x), -1).numpy()
    return feats  # type: ignore[return-value]


def higher_is_better(metric_key: str) -> bool:
    return not metric_key.endswith("/entropy")


def rank(rows: list[dict], key: str) -> list[dict]:
    """Sort by one metric key, best first (entropy: lower is better); ties keep id order."""
    sign = -1 if higher_is_better(key) else 1
    return sorted(rows, key=lambda r: (sign * r["metrics"][key], r["id"]))


def target_domain(source_domain: str) -> str:
    return {"A": "B", "B": "A"}.get(source_domain, "")
