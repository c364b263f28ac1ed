"""Bootstrap confidence intervals over test images, paired so that two candidates face the same resamples.

Method: the nonparametric bootstrap with percentile intervals (Efron & Tibshirani 1993, ch. 13). Resample the n
test images with replacement B times (:func:`bootstrap_indices`), evaluate the statistic on each resample, and
report the alpha/2 and 1 - alpha/2 quantiles of the B values around the full-set estimate.

Paired comparison: to compare candidate a with b, both are scored on the SAME resample each time and the
difference is taken per resample. The image-to-image variation that a and b share (hard images are hard for both)
cancels, so the interval of the difference is much narrower than one from independent resamples.

Speed: for :func:`zoofusion.core.scores.balanced_accuracy`, ``roc_auc``, ``average_precision``, ``adjusted_rand``,
``nmi`` and ``metrics.accuracy`` the resamples are turned into counts W[b, i] (how often image i is drawn) and the metric is
evaluated for all candidates and resamples at once (:func:`zoofusion.core.scores.weighted_form`). Any other
callable ``metric(y, s) -> float`` works too, one call per candidate and resample.

Resamples that lack a class make the class-comparing metrics undefined; they raise ValueError here rather than
being dropped silently. Pass ``strata=y`` to :func:`bootstrap_indices` so every resample keeps both classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zoofusion.core import scores as _scores
from zoofusion.core.metrics import check_labels

__all__ = [
    "Interval",
    "bootstrap_indices",
    "metric_interval",
    "paired_difference",
    "paired_mean_difference",
    "resample_counts",
    "resampled",
]

Metric = Callable[[np.ndarray, np.ndarray], float] | str


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval [low, high] at level 1 - alpha."""

    estimate: float
    low: float
    high: float
    n_boot: int
    alpha: float = 0.05

    @property
    def excludes_zero(self) -> bool:
        """True when 0 lies outside [low, high]: the difference is significant at level alpha (two-sided)."""
        return self.low > 0 or self.high < 0


def _check_int(v: object, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
        raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    return int(v)


def bootstrap_indices(n: int, n_boot: int, seed: int, strata: np.ndarray | list | None = None) -> np.ndarray:
    """[n_boot, n] int64 indices into the n test images, drawn with replacement by ``np.random.default_rng(seed)``.

    Same (n, n_boot, seed, strata) -> the same bytes. With ``strata`` (one label per image, e.g. y), column j of
    every row is a draw from the stratum of image j, so each resample keeps every stratum's count exactly and a
    stratified-by-label resample always holds both classes.
    """
    n = _check_int(n, "n", 1)
    n_boot = _check_int(n_boot, "n_boot", 1)
    seed = _check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n), dtype=np.int64)
    st = np.asarray(strata)
    if st.ndim != 1 or st.shape[0] != n:
        raise ValueError(f"strata must be 1-d with one label per image ({n}), got shape {st.shape}")
    idx = np.empty((n_boot, n), dtype=np.int64)
    for value in np.unique(st):  # sorted strata -> a fixed draw order -> reproducible
        members = np.flatnonzero(st == value)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return idx


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """W [B, n] float64: W[b, i] = how many times image i appears in resample b (a bincount per row, at once)."""
    idx = np.asarray(idx)
    b = idx.shape[0]
    flat = (idx + n * np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _rows(s: np.ndarray | list, n: int, name: str) -> np.ndarray:
    a = np.asarray(s)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != n or a.shape[0] == 0:
        raise ValueError(f"{name} must be [n] or [k, n] with n = {n} (one value per image), got shape {a.shape}")
    if not np.all(np.isfinite(a.astype(np.float64))):
        raise ValueError(f"{name} must be finite")
    return a


def _indices(idx: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(idx)
    if a.ndim != 2 or a.shape[0] == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"idx must be an int array [n_boot, m] from bootstrap_indices, got {a.dtype} {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"idx holds indices outside [0, {n}); it was drawn for a different test set")
    return a


def resampled(metric: Metric, y: np.ndarray | list, S: np.ndarray | list, idx: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """(full [k], boot [k, n_boot]): the metric of each candidate row of S on all images, and on each resample.

    ``metric`` is a callable ``metric(y, s) -> float`` or a name known to :func:`scores.weighted_form`; known
    metrics take the vectorised path, others are called once per candidate and resample on (y[idx_b], s[idx_b]).
    """
    y = check_labels(y, "y")
    n = y.size
    s = _rows(S, n, "S")
    idx = _indices(idx, n)
    form = _scores.weighted_form(metric)
    if form is not None:
        if _scores.needs_binary(form) and not np.isin(s, (0, 1)).all():
            raise ValueError("this metric takes 0/1 predictions; S holds other values (use roc_auc for scores)")
        full = form(y, s, np.ones((1, n)))[:, 0]
        boot = form(y, s, resample_counts(idx, n))
        if not np.all(np.isfinite(full)):
            raise ValueError("the metric is undefined on the full set (does y hold both classes?)")
    else:
        full = np.array([float(metric(y, row)) for row in s])
        boot = np.array([[float(metric(y[r], row[r])) for r in idx] for row in s])
    bad = ~np.isfinite(boot).all(axis=0)
    if bad.any():
        raise ValueError(
            f"the metric is undefined on {int(bad.sum())} of {idx.shape[0]} resamples (a resample without one of "
            "the classes); draw the indices with bootstrap_indices(..., strata=y)"
        )
    return full, boot


def _interval(estimate: float, boot: np.ndarray, alpha: float) -> Interval:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])  # percentile interval
    return Interval(float(estimate), float(low), float(high), int(boot.size), float(alpha))


def metric_interval(metric: Metric, y: np.ndarray | list, s: np.ndarray | list, idx: np.ndarray,
                    alpha: float = 0.05) -> Interval:
    """The metric of one candidate (s [n]) with its percentile interval over the resamples idx."""
    full, boot = resampled(metric, y, _one(s, "s"), idx)
    return _interval(full[0], boot[0], alpha)


def _one(s: np.ndarray | list, name: str) -> np.ndarray:
    a = np.asarray(s)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d (one candidate's values per image), got shape {a.shape}")
    return a


def paired_difference(metric: Metric, y: np.ndarray | list, a: np.ndarray | list, b: np.ndarray | list,
                      idx: np.ndarray, alpha: float = 0.05) -> Interval:
    """metric(y, a) - metric(y, b): the full-set difference and its percentile interval, where each resample
    scores a and b on the SAME images (paired bootstrap)."""
    a1, b1 = _one(a, "a"), _one(b, "b")
    if a1.shape != b1.shape:
        raise ValueError(f"a and b must have the same length, got {a1.shape[0]} and {b1.shape[0]}")
    full, boot = resampled(metric, y, np.stack([a1, b1]), idx)
    return _interval(full[0] - full[1], boot[0] - boot[1], alpha)


def paired_mean_difference(metric: Metric, y: np.ndarray | list, A: np.ndarray | list, B: np.ndarray | list,
                           idx: np.ndarray, alpha: float = 0.05) -> Interval:
    """mean_k metric(y, A_k) - mean_k metric(y, B_k): the difference between two kinds of candidates (A [k_a, n],
    B [k_b, n], e.g. generated models vs a baseline kind), every candidate of both kinds on the same resamples."""
    y = check_labels(y, "y")
    a, b = _rows(A, y.size, "A"), _rows(B, y.size, "B")
    full, boot = resampled(metric, y, np.concatenate([a, b]), idx)
    ka = a.shape[0]
    est = full[:ka].mean() - full[ka:].mean()
    return _interval(est, boot[:ka].mean(axis=0) - boot[ka:].mean(axis=0), alpha)
