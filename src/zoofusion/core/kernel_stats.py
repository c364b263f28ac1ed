"""Distances between two sets of conv kernels: per-kernel statistics, compared distribution by distribution."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

KERNEL_STAT_NAMES = ("mean", "std", "mean_abs", "max_abs", "min", "max", "roughness")


def kernel_statistics(kernels: Tensor) -> np.ndarray:
    """Per-slice statistics ``[M, 7]`` (columns ``KERNEL_STAT_NAMES``) of every ``h x w`` slice.

    ``roughness`` is the mean |difference| between horizontally and vertically adjacent weights,
    which separates smooth trained filters from noise of the same amplitude.
    """
    k = torch.as_tensor(kernels).detach().to("cpu", torch.float64)
    k = k.reshape(-1, k.shape[-2], k.shape[-1])
    flat = k.flatten(1)
    rough = torch.cat([(k[:, 1:, :] - k[:, :-1, :]).abs().flatten(1),
                       (k[:, :, 1:] - k[:, :, :-1]).abs().flatten(1)], dim=1).mean(1)
    stats = torch.stack([
        flat.mean(1), flat.std(1, unbiased=False), flat.abs().mean(1), flat.abs().amax(1),
        flat.amin(1), flat.amax(1), rough,
    ], dim=1)
    return stats.numpy()


def kernel_stat_distance(X: Tensor, Y: Tensor) -> float:
    """Distribution distance between two kernel sets from per-slice statistics.

    With ``s_j`` the j-th statistic of :func:`kernel_statistics` over all ``h x w`` slices,
    ``d(X, Y) = (1/J) * sum_j W1(s_j(X), s_j(Y)) / sigma_j``, where W1 is the 1-D Wasserstein
    distance between the empirical distributions and ``sigma_j`` the std of the pooled values
    ``s_j(X) u s_j(Y)`` (terms with ``sigma_j = 0`` are 0, both sets being equal there). It is 0
    for identical sets, symmetric, invariant to a common rescaling, and at most ~2 per statistic.
    """
    for name, t in (("X", X), ("Y", Y)):
        if not isinstance(t, Tensor) or t.ndim < 2 or t.shape[-1] < 2 or t.shape[-2] < 2 or t.numel() == 0:
            raise ValueError(f"{name} must be a non-empty tensor [..., h, w] with h, w >= 2, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN/inf values; kernel_stat_distance needs finite kernels")
    if X.shape[-2:] != Y.shape[-2:]:
        raise ValueError(f"X and Y kernel sizes differ: {tuple(X.shape[-2:])} vs {tuple(Y.shape[-2:])}")
    sx, sy = kernel_statistics(X), kernel_statistics(Y)
    terms = []
    for j in range(sx.shape[1]):
        sigma = float(np.concatenate([sx[:, j], sy[:, j]]).std())
        terms.append(0.0 if sigma == 0.0 else wasserstein_distance(sx[:, j], sy[:, j]) / sigma)
    return float(np.mean(terms))
