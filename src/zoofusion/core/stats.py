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

Bootstrap p-value (two-sided, of "difference = 0"), for every interval: with d the estimate and se the standard
deviation of the B resampled differences (the bootstrap standard error),

    p = erfc(|d / se| / sqrt(2))        (= 2 * (1 - Phi(|d| / se)); 1 where d = 0, 0 where se = 0 and d != 0)

a normal-approximation test with the bootstrap's standard error (Efron & Tibshirani 1993, ch. 16). Not the share of
resamples beyond 0: that p cannot go below 2 / (B + 1), so with 51 secondary hypotheses and B = 1000 Holm could
never reject any (the smallest adjusted p would be 51 x 2/1001 = 0.10).

The primary endpoint's interval (:func:`selection_bootstrap`) is hierarchical and selection-aware: the
difference "test metric of the best-on-val candidate of one side minus that of the other side's" is recomputed on
each resample with the best-on-val choice REDONE on that resample's val images, so the interval also covers the
luck of the choice. Sources of variance, outermost first: pipeline seeds (a list of per-seed score sets, resampled
with replacement; the estimate is their mean), candidates (resampled with replacement within each kind), the
UMAP/clustering seed (a few stored replicate runs per candidate; one drawn per candidate and resample), val images
and test images (stratified by label). Nothing is refitted: it resamples stored per-image scores. Multiplicity:
:func:`holm` (statsmodels' Holm step-down). Power: :func:`min_detectable_difference`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zoofusion.core import scores as _scores
from zoofusion.core.metrics import check_labels

__all__ = [
    "SOURCES",
    "Interval",
    "ScoreSet",
    "SelectionBootstrap",
    "bootstrap_p",
    "holm",
    "min_detectable_difference",
    "selection_bootstrap",
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
    p: float | None = None  # two-sided bootstrap p-value of "the value is 0" (module docstring); None if not computed

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
    return Interval(float(estimate), float(low), float(high), int(boot.size), float(alpha), bootstrap_p(estimate, boot))


def bootstrap_p(estimate: float, boot: np.ndarray | list) -> float:
    """Two-sided p-value of "the difference is 0": the estimate over its bootstrap standard error, against the
    normal distribution (formula: module doc)."""
    import math

    d = np.asarray(boot, dtype=np.float64).ravel()
    if d.size < 2 or not np.isfinite(d).all() or not math.isfinite(estimate):
        raise ValueError("boot must hold at least 2 finite resampled values and the estimate must be finite")
    se = float(d.std(ddof=1))
    if estimate == 0:
        return 1.0
    if se == 0:
        return 0.0
    return float(math.erfc(abs(estimate / se) / math.sqrt(2)))


def holm(p: np.ndarray | list, alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values of one family (statsmodels ``multipletests(method="holm")``): sort the m p-values,
    multiply the i-th smallest by (m - i + 1), take the running maximum, cap at 1. A hypothesis is rejected at
    family-wise level alpha where its adjusted p-value is below alpha."""
    from statsmodels.stats.multitest import multipletests

    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 1 or ((a < 0) | (a > 1) | ~np.isfinite(a)).any():
        raise ValueError(f"p must be a 1-d array of p-values in [0, 1], got {a!r}")
    if a.size == 0:
        return a.copy()
    return multipletests(a, alpha=alpha, method="holm")[1]


def min_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at level alpha detects with the given power, when the
    estimate's standard error is se: (z_{1 - alpha/2} + z_{power}) * se (normal approximation; 2.80 se at
    alpha 0.05 and power 0.8)."""
    from statistics import NormalDist

    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha!r}, {power!r}")
    if not np.isfinite(se) or se < 0:
        raise ValueError(f"se must be finite and >= 0, got {se!r}")
    z = NormalDist()
    return float((z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * se)


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


# --- the primary endpoint: a hierarchical, selection-aware bootstrap ------------------------------------------

SOURCES = ("pipeline_seeds", "candidates", "umap_replicates", "val_images", "test_images")  # outermost first
_GENERATED, _COMPARATOR = 0, 1


@dataclass(frozen=True, eq=False)
class ScoreSet:
    """One pipeline seed's stored per-image arrays for a selection-aware comparison.

    val [k, n_val] / test [k, n_test]: each candidate's continuous scores (AUROC) or cluster ids (ARI) per image;
    with a leading replicate axis [R, k, n] when the UMAP/clustering seed was rerun R times per candidate
    (replicate 0 = the pipeline's own run). side [k]: 0 = the generated side, 1 = the comparator side, anything
    else = in neither. group [k]: each candidate's kind (candidates are resampled within their kind).
    """

    y_val: np.ndarray
    y_test: np.ndarray
    val: np.ndarray
    test: np.ndarray
    side: np.ndarray
    group: np.ndarray

    def checked(self) -> ScoreSet:
        yv, yt = check_labels(self.y_val, "y_val"), check_labels(self.y_test, "y_test")
        v, t = np.asarray(self.val), np.asarray(self.test)
        v, t = (v[None] if v.ndim == 2 else v), (t[None] if t.ndim == 2 else t)
        if v.ndim != 3 or t.ndim != 3 or v.shape[:2] != t.shape[:2]:
            raise ValueError(f"val and test must be [k, n] or [R, k, n] with the same R and k, got {v.shape}, {t.shape}")
        if v.shape[2] != yv.size or t.shape[2] != yt.size:
            raise ValueError(f"val/test hold {v.shape[2]}/{t.shape[2]} images, labels {yv.size}/{yt.size}")
        side, group = np.asarray(self.side), np.asarray(self.group)
        if side.shape != (v.shape[1],) or group.shape != (v.shape[1],):
            raise ValueError(f"side and group must hold one entry per candidate ({v.shape[1]})")
        for which in (_GENERATED, _COMPARATOR):
            if not (side == which).any():
                raise ValueError(f"no candidate on side {which} (0 = generated, 1 = comparator)")
        return ScoreSet(yv, yt, v, t, side, group)

    @property
    def replicates(self) -> int:
        return int(np.asarray(self.val).shape[0]) if np.asarray(self.val).ndim == 3 else 1


@dataclass(frozen=True, eq=False)
class SelectionBootstrap:
    """The primary endpoint: its estimate, percentile interval and p-value with every included source resampled,
    the breakdown (each source resampled alone: its interval and standard error), and what was left out."""

    estimate: float
    low: float
    high: float
    se: float
    p: float
    n_boot: int
    alpha: float
    sources: tuple[str, ...]  # resampled in [low, high]
    not_included: dict[str, str]  # source -> why it could not be resampled
    breakdown: dict[str, dict[str, float]]  # source -> {low, high, width, se} with that source alone
    selected: tuple[tuple[int, int], ...]  # per pipeline seed: (generated, comparator) candidate of the estimate
    boot: np.ndarray  # the n_boot resampled differences

    def as_dict(self) -> dict:
        return {"difference": self.estimate, "low": self.low, "high": self.high, "se": self.se, "p": self.p,
                "n_boot": self.n_boot, "alpha": self.alpha, "sources": list(self.sources),
                "not_included": dict(self.not_included), "breakdown": {k: dict(v) for k, v in self.breakdown.items()}}


def _stratified_counts(rng: np.random.Generator, y: np.ndarray, m: int) -> np.ndarray:
    """[m, n] resample counts, stratified by label: each class's members drawn with replacement as many times as
    the class has members (a multinomial per class and row, the same law as bootstrap_indices(strata=y))."""
    w = np.zeros((m, y.size))
    for value in np.unique(y):
        members = np.flatnonzero(y == value)
        w[:, members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=m)
    return w


def _side_members(s: ScoreSet, side: int, m: int, rng: np.random.Generator, resample: bool) -> np.ndarray:
    """[m, n_side] candidate indices per resample: the side's members, or each kind's resampled with replacement."""
    members = np.flatnonzero(s.side == side)
    if not resample:
        return np.tile(members, (m, 1))
    parts = []
    for g in dict.fromkeys(s.group[members].tolist()):  # kinds in order of appearance: reproducible draws
        mg = members[s.group[members] == g]
        parts.append(mg[rng.integers(0, mg.size, size=(m, mg.size))])
    return np.concatenate(parts, axis=1)


def _one_seed(s: ScoreSet, form, m: int, rngs: dict[str, np.random.Generator], on: frozenset[str]
              ) -> tuple[np.ndarray, np.ndarray]:
    """m resampled differences for one seed's score set, and the (generated, comparator) picks [m, 2]."""
    r_count, k = s.val.shape[:2]
    ar = np.arange(m)
    wv = _stratified_counts(rngs["val_images"], s.y_val, m) if "val_images" in on else np.ones((1, s.y_val.size))
    wt = _stratified_counts(rngs["test_images"], s.y_test, m) if "test_images" in on else np.ones((1, s.y_test.size))
    val = np.stack([form(s.y_val, s.val[r], wv) for r in range(r_count)])  # [R, k, m or 1]
    test = np.stack([form(s.y_test, s.test[r], wt) for r in range(r_count)])
    if not np.isfinite(test).all():
        raise ValueError("the metric is undefined on a test resample (does y_test hold both classes?)")
    val = np.nan_to_num(val, nan=-np.inf)  # an undefined val value is never chosen
    cv, ct = (ar if wv.shape[0] > 1 else np.zeros(m, int)), (ar if wt.shape[0] > 1 else np.zeros(m, int))
    rep = (rngs["umap_replicates"].integers(0, r_count, size=(m, k)) if "umap_replicates" in on
           else np.zeros((m, k), dtype=np.int64))
    picks, values = [], []
    for side in (_GENERATED, _COMPARATOR):
        c = _side_members(s, side, m, rngs["candidates"], "candidates" in on)
        r = np.take_along_axis(rep, c, axis=1)
        v = val[r, c, cv[:, None]]  # [m, n_side]: each drawn candidate's val value on this resample's val
        tie = rngs["ties"].random(v.shape)  # ties go to a random one of the tied candidates, by the seed
        pick = np.argmax(np.where(v == v.max(axis=1, keepdims=True), tie, -1.0), axis=1)
        picks.append(c[ar, pick])
        values.append(test[r[ar, pick], c[ar, pick], ct])
    return values[0] - values[1], np.stack(picks, axis=1)


def _draw(sets: list[ScoreSet], form, m: int, seed: int, on: frozenset[str]) -> tuple[np.ndarray, list]:
    """m resampled values of the mean over seeds of the per-seed difference, resampling the sources in `on`.

    Each source has its own random stream (spawned from `seed`), so a source's draws do not depend on which
    other sources are on."""
    rngs = dict(zip((*SOURCES, "ties"), (np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(6))))
    n_sets = len(sets)
    slots = (rngs["pipeline_seeds"].integers(0, n_sets, size=(m, n_sets)) if "pipeline_seeds" in on
             else np.tile(np.arange(n_sets), (m, 1)))
    d = np.empty((m, n_sets))
    picks = []
    for i, s in enumerate(sets):
        mask = slots == i
        if mask.any():  # each slot gets its own draw of the lower levels
            d_i, p_i = _one_seed(s, form, int(mask.sum()), rngs, on)
            d[mask] = d_i
            picks.append(p_i)
    return d.mean(axis=1), picks


def selection_bootstrap(metric: Metric, sets: ScoreSet | list[ScoreSet], n_boot: int, seed: int,
                        alpha: float = 0.05, resample: tuple[str, ...] = SOURCES,
                        breakdown: bool = True) -> SelectionBootstrap:
    """The best-on-val difference between two sides with an interval over every source in `resample` that the
    data hold (SOURCES; see the module docstring), the selection redone on each resampled val set.

    Estimate: per seed, the side's candidate with the highest val value (ties: at random by the seed) on the
    full val set; test value of the generated pick minus the comparator pick; mean over seeds. A source the data
    cannot resample (one seed; one run per candidate; one candidate per kind) is listed in `not_included`.
    breakdown: for each included source, the interval with that source alone resampled (the others held at the
    estimate's: all seeds, all candidates, replicate 0, all images).
    """
    n_boot = _check_int(n_boot, "n_boot", 1)
    seed = _check_int(seed, "seed", 0)
    form = _scores.weighted_form(metric)
    if form is None:
        raise ValueError("selection_bootstrap needs a metric with a weighted form (e.g. roc_auc, adjusted_rand)")
    unknown = set(resample) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; allowed: {', '.join(SOURCES)}")
    sets = [s.checked() for s in ([sets] if isinstance(sets, ScoreSet) else list(sets))]
    if not sets:
        raise ValueError("no score sets")
    why = {"pipeline_seeds": "one pipeline seed" if len(sets) == 1 else "",
           "umap_replicates": "one UMAP/clustering run per candidate stored"
           if any(s.replicates == 1 for s in sets) else "",
           "candidates": "one candidate per kind on both sides" if all(
               np.unique(s.group[s.side == side], return_counts=True)[1].max() == 1
               for s in sets for side in (_GENERATED, _COMPARATOR)) else ""}
    not_included = {src: why.get(src) or "not requested" for src in SOURCES
                    if src not in resample or why.get(src)}
    on = tuple(src for src in SOURCES if src not in not_included)
    point, picks = _draw(sets, form, 1, seed, frozenset())
    boot, _ = _draw(sets, form, n_boot, seed, frozenset(on))

    def summary(d: np.ndarray) -> dict[str, float]:
        lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
        return {"low": float(lo), "high": float(hi), "width": float(hi - lo),
                "se": float(d.std(ddof=1)) if d.size > 1 else 0.0}

    parts = ({src: summary(_draw(sets, form, n_boot, seed, frozenset({src}))[0]) for src in on}
             if breakdown else {})
    full = summary(boot)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return SelectionBootstrap(float(point[0]), full["low"], full["high"], full["se"], bootstrap_p(float(point[0]), boot), n_boot,
                              float(alpha), on, not_included, parts,
                              tuple((int(p[0, 0]), int(p[0, 1])) for p in picks), boot)
