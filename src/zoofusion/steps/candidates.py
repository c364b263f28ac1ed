"""Step `candidates`: evaluate's pool of candidates, built once and saved as conv weights and metadata.

`build_pool` draws every candidate (each variant's generated models and every baseline, alignment included) and
writes them to one torch file (`core.candidates.pack`: ids, kinds, source domain and index, init seed, and the
float32 conv1/conv2 weights and biases; no features), so `tune`, `tuned` and the figures recompute a candidate's
features with a forward pass instead of rebuilding the pool. Knows nothing of DVC or MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from zoofusion.core.candidates import Candidate, all_candidates, compute_features, pack, unpack
from zoofusion.core.cnn import preprocess
from zoofusion.io import save_torch


def _load(path: Path, how: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: missing; run `{how}` first")
    return torch.load(path, weights_only=True)


def build_pool(generated: Mapping[str, Path], kernels: Mapping[str, Path], out: Path, budget: int,
               seed: int, noise_sigmas: Sequence[float], average_k: int, untrained: Mapping[str, Path] | None = None,
               control: Path | None = None) -> list[Candidate]:
    """Every candidate of an evaluation (`core.candidates.all_candidates`), saved to `out`.

    generated: variant -> its generate stage's models.pt; kernels: "black"/"cat" -> the raw kernel harvest (conv
    tensors and heads); noise_sigmas, average_k: evaluate.baselines (the literature's baselines); untrained:
    variant -> its generate stage's untrained.pt (the translation control); control: the control stage's weights.pt
    (the positive control's LeNets).
    """
    gen = {v: _load(f, f"dvc repro generate@{v}") for v, f in generated.items()}
    ks = {d: _load(f, "dvc repro kernels") for d, f in kernels.items()}
    unt = {v: _load(f, f"dvc repro generate@{v}") for v, f in (untrained or {}).items()}
    ctl = None if control is None else _load(control, "dvc repro control")["weights"]
    cands = all_candidates(gen, ks, budget, seed, noise_sigmas, average_k, unt, ctl)
    save_torch(out, pack(cands))
    return cands


def load_pool(path: Path, ids: Iterable[str] | None = None) -> list[Candidate]:
    """The saved candidates (all, or the named ones in the order named; an unknown id is refused)."""
    cands = unpack(_load(path, "dvc repro evaluate"))
    if ids is None:
        return cands
    by_id = {c.id: c for c in cands}
    want = list(dict.fromkeys(ids))
    missing = [i for i in want if i not in by_id]
    if missing:
        raise ValueError(f"{path} holds no candidate(s) {missing}; rerun `dvc repro evaluate`")
    return [by_id[i] for i in want]


def features(cands: list[Candidate], images: np.ndarray, batch: int, dark_luminance: int) -> list[np.ndarray]:
    """Each candidate's features of uint8 images [N,32,32,3] (400-d conv outputs; pixels; darkness; a head's
    1-d log p(class 1))."""
    return compute_features(cands, preprocess(images), batch, dark_luminance)


def pool_features(path: Path, ids: Iterable[str], images: np.ndarray, batch: int,
                  dark_luminance: int) -> dict[str, np.ndarray]:
    """Features of the named saved candidates on `images`: id -> [N, d]."""
    cands = load_pool(path, ids)
    return {c.id: f for c, f in zip(cands, features(cands, images, batch, dark_luminance))}
