"""Metrics whose chance level does not move with the share of black cats, and a continuous score from a clustering.

The study's accuracy/precision/recall (:mod:`zoofusion.core.metrics`) drift with the class balance: a model that
calls every image "other" scores accuracy = 1 - prevalence. The metrics here are written as their formulas (numpy
and scipy only) and pinned against scikit-learn in ``tests/test_scores.py``:

* :func:`balanced_accuracy`  (TPR + TNR) / 2                           chance 0.5 at any prevalence
* :func:`roc_auc`            Mann-Whitney U / (P N), ties count 1/2     chance 0.5 at any prevalence
* :func:`average_precision`  sum_n (R_n - R_{n-1}) P_n (scikit-learn)   chance = prevalence (NOT prevalence-free;
                                                                        report it beside the prevalence)
* :func:`adjusted_rand`      Hubert & Arabie (1985) adjusted Rand index chance 0 (adjusted for chance)
* :func:`nmi`                I(Y;C) / ((H(Y) + H(C)) / 2)              not chance-adjusted: grows with the number of
                                                                        clusters even for random ones

Conventions: labels are 0/1 with 1 = black cat; ``y_true`` must hold both classes (every metric here compares the
two classes, so a one-class set raises ValueError instead of returning a silent number). A constant score gives
AUROC 0.5 (all pairs tied) and average precision = prevalence (one threshold).

The ``*_weighted`` functions evaluate one metric for many candidates on many bootstrap resamples at once, from
resample counts (item i drawn W[b, i] times); :mod:`zoofusion.core.stats` uses them through :func:`weighted_form`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

from zoofusion.core import metrics as _metrics

__all__ = [
    "accuracy_weighted",
    "adjusted_rand",
    "adjusted_rand_weighted",
    "average_precision",
    "average_precision_weighted",
    "balanced_accuracy",
    "balanced_accuracy_weighted",
    "cluster_centroids",
    "cluster_score",
    "needs_binary",
    "nmi",
    "nmi_weighted",
    "positive_cluster",
    "roc_auc",
    "roc_auc_weighted",
    "weighted_form",
]

WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------------------------
# Input checks (one place, messages name the argument)
# ----------------------------------------------------------------------------------------------------------------


def _truth(y: np.ndarray | list) -> np.ndarray:
    """y_true as 0/1 with both classes present."""
    a = _metrics.check_labels(y, "y_true")
    p = int(a.sum())
    if p == 0 or p == a.size:
        raise ValueError(
            f"y_true holds only class {int(a[0])} ({a.size} points); these metrics compare black cats (1) with "
            "other images (0) and are undefined with one class. Score a set that has both."
        )
    return a


def _score(s: np.ndarray | list, n: int, name: str = "score") -> np.ndarray:
    a = np.asarray(s)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be 1-d with one value per point ({n}), got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(a)))} NaN/inf values")
    return a


def _cluster_ids(c: np.ndarray | list, n: int, name: str = "clusters") -> np.ndarray:
    """Integer cluster ids, one per point (the study metrics' check, plus the length)."""
    a = _metrics._clusters(c, name)
    if a.shape[0] != n:
        raise ValueError(f"{name} must be 1-d with one cluster id per point ({n}), got shape {a.shape}")
    return a


# ----------------------------------------------------------------------------------------------------------------
# Scalar metrics
# ----------------------------------------------------------------------------------------------------------------


def balanced_accuracy(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> float:
    """Balanced accuracy = (TPR + TNR) / 2 = (TP/P + TN/N) / 2 (Brodersen et al. 2010; sklearn's
    ``balanced_accuracy_score`` for two classes).

    The mean of the per-class recalls: any constant prediction scores exactly 0.5, whatever the prevalence.
    """
    y = _truth(y_true)
    p = _metrics.check_labels(y_pred, "y_pred")
    if p.shape != y.shape:
        raise ValueError(f"y_true and y_pred must have equal lengths, got {y.size} and {p.size}")
    pos = y == 1
    tpr = np.sum(p[pos] == 1) / pos.sum()
    tnr = np.sum(p[~pos] == 0) / (~pos).sum()
    return float((tpr + tnr) / 2)


def roc_auc(y_true: np.ndarray | list, score: np.ndarray | list) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (Hanley & McNeil 1982):

        AUROC = P(s+ > s-) + 1/2 P(s+ = s-) = (R+ - P(P+1)/2) / (P N),

    R+ = sum of the mid-ranks (ties get their average rank) of the positives' scores. Equal to the trapezoidal area
    sklearn's ``roc_auc_score`` computes. A constant score ties every pair: 0.5.
    """
    y = _truth(y_true)
    s = _score(score, y.size)
    ranks = rankdata(s, method="average")  # mid-ranks: a tied pos/neg pair counts 1/2
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def average_precision(y_true: np.ndarray | list, score: np.ndarray | list) -> float:
    """Average precision as scikit-learn defines it (``average_precision_score``, no interpolation):

        AP = sum_n (R_n - R_{n-1}) P_n,

    over the distinct score values taken as thresholds in decreasing order (R_0 = 0): P_n, R_n are the precision
    and recall of "score >= threshold n". Tied scores enter together at one threshold. Its chance level is the
    prevalence P/(P+N), so it is not prevalence-free: compare it with the prevalence (a constant score gives
    exactly the prevalence).
    """
    y = _truth(y_true)
    s = _score(score, y.size)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # last position of every group of tied scores = the thresholds (sklearn's _binary_clf_curve)
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), y.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    precision = tps / (ends + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _contingency(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """n_ij = |class i ∩ cluster j|."""
    _, ci = np.unique(c, return_inverse=True)
    table = np.zeros((2, int(ci.max()) + 1), dtype=np.int64)
    np.add.at(table, (y, ci), 1)
    return table


def adjusted_rand(y_true: np.ndarray | list, clusters: np.ndarray | list) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985; sklearn's ``adjusted_rand_score``):

        ARI = (sum_ij C(n_ij,2) - E) / ((A + B)/2 - E),   A = sum_i C(a_i,2), B = sum_j C(b_j,2), E = A B / C(n,2),

    from the class x cluster contingency table n_ij with row sums a_i and column sums b_j. 0 is the expected value
    for a random clustering, 1 a perfect one. When the denominator is 0 the two partitions agree on every pair
    (all singletons in both, or one block in both); then 1.0, as sklearn. DBSCAN noise (-1) is one cluster.
    """
    y = _truth(y_true)
    c = _cluster_ids(clusters, y.size)
    t = _contingency(y, c).astype(np.float64)

    def pairs(x: np.ndarray) -> float:
        return float(np.sum(x * (x - 1) / 2))

    index, a, b = pairs(t), pairs(t.sum(axis=1)), pairs(t.sum(axis=0))
    expected = a * b / (y.size * (y.size - 1) / 2)
    denom = (a + b) / 2 - expected
    if denom == 0:
        return 1.0
    return float((index - expected) / denom)


def nmi(y_true: np.ndarray | list, clusters: np.ndarray | list) -> float:
    """Normalised mutual information with arithmetic-mean normalisation (sklearn's
    ``normalized_mutual_info_score`` default, ``average_method="arithmetic"``):

        NMI = I(Y;C) / ((H(Y) + H(C)) / 2),   I = sum_ij (n_ij/n) log(n n_ij / (a_i b_j)),  H = -sum p log p.

    In [0, 1]; the log base cancels. A single cluster gives 0 (I = 0). Not adjusted for chance: many small random
    clusters score above 0. DBSCAN noise (-1) is one cluster.
    """
    y = _truth(y_true)
    c = _cluster_ids(clusters, y.size)
    t = _contingency(y, c).astype(np.float64)
    n = float(y.size)
    a, b = t.sum(axis=1), t.sum(axis=0)
    nz = t > 0  # 0 log 0 = 0
    mi = float(np.sum(t[nz] / n * np.log(n * t[nz] / np.outer(a, b)[nz])))
    mi = max(mi, 0.0)  # rounding can leave -1e-17 for independent partitions

    def entropy(x: np.ndarray) -> float:
        p = x[x > 0] / n
        return float(-np.sum(p * np.log(p)))

    if mi == 0.0:
        return 0.0
    return float(mi / ((entropy(a) + entropy(b)) / 2))


# ----------------------------------------------------------------------------------------------------------------
# A continuous black-cat score from a clustering (so AUROC / AP apply to KMeans and DBSCAN too)
# ----------------------------------------------------------------------------------------------------------------


def cluster_centroids(emb: np.ndarray, clusters: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    """(ids [k], centroids [k, d]): the mean embedding of each cluster, ids sorted, DBSCAN noise (-1) left out.

    For KMeans use the fitted ``cluster_centers_`` instead if preferred; on the fitted data they are the same means.
    """
    e = np.asarray(emb, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"emb must be [n, d], got shape {e.shape}")
    c = _cluster_ids(clusters, e.shape[0])
    ids = np.unique(c[c != -1])
    if ids.size == 0:
        raise ValueError("clusters holds only noise (-1); no cluster has a centroid")
    cents = np.stack([e[c == k].mean(axis=0) for k in ids])
    return ids, cents


def positive_cluster(y_val: np.ndarray | list, clusters_val: np.ndarray | list) -> int:
    """The cluster that the VALIDATION split maps to black cat: the id with the highest share of black cats among
    its val members; ties go to more black cats, then to the lower id. Noise (-1) is never chosen.

    Whenever some cluster has a black-cat majority (the study's majority mapping sends it to 1), the chosen cluster
    is one of those, so this refines the majority mapping to one cluster. Uses val labels only; the test split's
    labels are never looked at.
    """
    y = _truth(y_val)
    c = _cluster_ids(clusters_val, y.size, "clusters_val")
    ids = np.unique(c[c != -1])
    if ids.size == 0:
        raise ValueError("clusters_val holds only noise (-1); there is no cluster to call black cat")
    pos = np.array([y[c == k].sum() for k in ids], dtype=np.float64)
    size = np.array([(c == k).sum() for k in ids], dtype=np.float64)
    # lexsort: last key is primary -> share, then count of positives, then the lowest id (negated)
    best = np.lexsort((-ids, pos, pos / size))[-1]
    return int(ids[best])


def cluster_score(emb_test: np.ndarray, centroids: np.ndarray, positive_cluster: int) -> np.ndarray:
    """Black-cat score of each test point: s_i = -||x_i - mu_+||_2, the negative Euclidean distance (in the
    embedding where the clustering was fitted) to the centroid mu_+ = ``centroids[positive_cluster]``.

    Rule: ``positive_cluster`` is a row of ``centroids`` chosen on VAL (see :func:`positive_cluster`), so the score
    uses no test labels. Higher = more black-cat-like; feed it to :func:`roc_auc` / :func:`average_precision`.
    """
    e = np.asarray(emb_test, dtype=np.float64)
    m = np.asarray(centroids, dtype=np.float64)
    if e.ndim != 2 or m.ndim != 2 or e.shape[1] != m.shape[1]:
        raise ValueError(f"emb_test [n, d] and centroids [k, d] must share d; got {e.shape} and {m.shape}")
    k = int(positive_cluster)
    if not 0 <= k < m.shape[0]:
        raise ValueError(f"positive_cluster must be a row of centroids in [0, {m.shape[0]}), got {positive_cluster}")
    return -np.linalg.norm(e - m[k], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Weighted (resample-count) forms: K candidates x B resamples at once
#   y [n] 0/1, S [K, n] predictions or scores, W [B, n] counts (item i drawn W[b, i] times) -> [K, B]
# A metric on the multiset {i repeated W[b, i] times} equals the metric with per-item weights W[b, i]: duplicates
# share their score, so they fall into the same tie group. NaN where a resample lacks a class.
# ----------------------------------------------------------------------------------------------------------------


def _class_totals(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive indicator [n], positives per resample [B], negatives per resample [B])."""
    pos = (y == 1).astype(np.float64)
    return pos, w @ pos, w @ (1.0 - pos)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def balanced_accuracy_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(TP/P + TN/N)/2 per candidate and resample; counts come from two matrix products, so it is O(K n B) flops."""
    pos, n_pos, n_neg = _class_totals(y, W)
    pred = S.astype(np.float64)
    tp = (pred * pos) @ W.T  # [K, B]
    tn = ((1.0 - pred) * (1.0 - pos)) @ W.T
    return (_safe_div(tp, n_pos[None]) + _safe_div(tn, n_neg[None])) / 2


def accuracy_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(TP + TN) / n per candidate and resample (the study's plain accuracy)."""
    hit = (S == y[None]).astype(np.float64)
    return _safe_div(hit @ W.T, W.sum(axis=1)[None])


def _split(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions of positives / negatives and their resample counts ([B, P], [B, N], contiguous)."""
    ip, ineg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    return ip, ineg, np.ascontiguousarray(w[:, ip]), np.ascontiguousarray(w[:, ineg])


def _cum(w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """[B, m+1] cumulative counts along ``order`` with a leading 0: C[:, t] = weight of the t lowest-scored items."""
    c = np.zeros((w.shape[0], w.shape[1] + 1))
    np.cumsum(w[:, order], axis=1, out=c[:, 1:])
    return c


def roc_auc_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC with weights: sum_i w_i (w-(s < s_i) + w-(s = s_i) / 2) / (P N) over positives i.

    Per candidate, the negatives are sorted once; a positive's "negatives below" and "negatives tied" are read
    from their cumulative counts at searchsorted left/right positions: mean of the two = below + tied/2.
    """
    ip, ineg, wp, wn = _split(y, W)
    out = np.empty((S.shape[0], W.shape[0]))
    for k in range(S.shape[0]):  # one sort per candidate; the B resamples are vectorised
        s = S[k].astype(np.float64)
        sp, sn = s[ip], s[ineg]
        on = np.argsort(sn, kind="stable")
        cn = _cum(wn, on)
        lo, hi = np.searchsorted(sn[on], sp, "left"), np.searchsorted(sn[on], sp, "right")
        out[k] = 0.5 * np.einsum("bi,bi->b", wp, cn[:, lo] + cn[:, hi])
    return _safe_div(out, (wp.sum(axis=1) * wn.sum(axis=1))[None])


def average_precision_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """sum_i (w_i / P) TP(s >= s_i) / (TP(s >= s_i) + FP(s >= s_i)) over positives i: each threshold's recall
    step times its precision, as :func:`average_precision` (the threshold of a positive is its own score, so
    tied items enter together)."""
    ip, ineg, wp, wn = _split(y, W)
    n_pos, n_neg = wp.sum(axis=1), wn.sum(axis=1)
    out = np.empty((S.shape[0], W.shape[0]))
    for k in range(S.shape[0]):
        s = S[k].astype(np.float64)
        sp, sn = s[ip], s[ineg]
        op, on = np.argsort(sp, kind="stable"), np.argsort(sn, kind="stable")
        tp = n_pos[:, None] - _cum(wp, op)[:, np.searchsorted(sp[op], sp, "left")]  # positives scoring >= s_i
        fp = n_neg[:, None] - _cum(wn, on)[:, np.searchsorted(sn[on], sp, "left")]
        # a positive drawn (wp > 0) has tp >= wp > 0; undrawn ones add 0 whatever their precision
        prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=wp > 0)
        out[k] = np.einsum("bi,bi->b", wp, prec)
    return _safe_div(out, n_pos[None])


def _class_weights(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample counts of the positives and of the negatives ([B, n] each, zero elsewhere)."""
    pos = (y == 1).astype(np.float64)
    return w * pos, w * (1.0 - pos)


def _weighted_tables(c: np.ndarray, wpos: np.ndarray, wneg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contingency tables of every resample: (n_1g, n_0g) [B, G], class x cluster counts, as W @ one-hot(c)."""
    _, ci = np.unique(c, return_inverse=True)
    onehot = np.zeros((c.size, int(ci.max()) + 1))
    onehot[np.arange(c.size), ci] = 1.0
    return wpos @ onehot, wneg @ onehot


def adjusted_rand_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """:func:`adjusted_rand` of each candidate's cluster ids (rows of S) on each resample, from the resample's
    contingency table (1.0 where the denominator is 0, as the scalar form)."""
    def pairs(x: np.ndarray) -> np.ndarray:  # sum of C(x, 2) over the last axis
        return np.sum(x * (x - 1) / 2, axis=-1)

    wpos, wneg = _class_weights(y, W)
    out = np.empty((S.shape[0], W.shape[0]))
    for k in range(S.shape[0]):
        t1, t0 = _weighted_tables(S[k], wpos, wneg)
        n = t1.sum(axis=1) + t0.sum(axis=1)
        index = pairs(t1) + pairs(t0)
        a = pairs(np.stack([t1.sum(axis=1), t0.sum(axis=1)], axis=1))
        b = pairs(t1 + t0)
        expected = a * b / (n * (n - 1) / 2)
        denom = (a + b) / 2 - expected
        out[k] = np.where(denom == 0, 1.0, (index - expected) / np.where(denom == 0, 1.0, denom))
    _, n_pos, n_neg = _class_totals(y, W)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def nmi_weighted(y: np.ndarray, S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """:func:`nmi` of each candidate's cluster ids (rows of S) on each resample, from its contingency table."""
    out = np.empty((S.shape[0], W.shape[0]))

    def plogp(x: np.ndarray, n: np.ndarray) -> np.ndarray:  # sum p log p with 0 log 0 = 0, p = x / n
        p = x / n[:, None]
        return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)

    wpos, wneg = _class_weights(y, W)
    for k in range(S.shape[0]):
        t1, t0 = _weighted_tables(S[k], wpos, wneg)
        n = t1.sum(axis=1) + t0.sum(axis=1)
        h_y = -plogp(np.stack([t1.sum(axis=1), t0.sum(axis=1)], axis=1), n)
        h_c = -plogp(t1 + t0, n)
        # I = H(Y) + H(C) - H(Y, C)
        mi = np.maximum(h_y + h_c + plogp(np.concatenate([t1, t0], axis=1), n), 0.0)
        out[k] = np.where(mi > 0, mi / np.where(h_y + h_c > 0, (h_y + h_c) / 2, 1.0), 0.0)
    _, n_pos, n_neg = _class_totals(y, W)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


_WEIGHTED: dict[object, WeightedMetric] = {
    balanced_accuracy: balanced_accuracy_weighted,
    "balanced_accuracy": balanced_accuracy_weighted,
    roc_auc: roc_auc_weighted,
    "roc_auc": roc_auc_weighted,
    average_precision: average_precision_weighted,
    "average_precision": average_precision_weighted,
    _metrics.accuracy: accuracy_weighted,
    "accuracy": accuracy_weighted,
    adjusted_rand: adjusted_rand_weighted,
    "adjusted_rand": adjusted_rand_weighted,
    nmi: nmi_weighted,
    "nmi": nmi_weighted,
}

_NEEDS_BINARY = {balanced_accuracy_weighted, accuracy_weighted}


def weighted_form(metric: Callable | str) -> WeightedMetric | None:
    """The vectorised ``f(y [n], S [K, n], W [B, n]) -> [K, B]`` form of a metric, or None if it has none.

    Known: :func:`balanced_accuracy`, :func:`roc_auc`, :func:`average_precision`, :func:`adjusted_rand`,
    :func:`nmi`, ``metrics.accuracy`` (by the function or by its name). A str that is none of these raises ValueError listing the names.
    """
    if isinstance(metric, str):
        if metric not in _WEIGHTED:
            names = sorted(k for k in _WEIGHTED if isinstance(k, str))
            raise ValueError(f"unknown metric name {metric!r}; allowed: {names} (or pass any callable(y, s))")
        return _WEIGHTED[metric]
    return _WEIGHTED.get(metric)


def needs_binary(form: WeightedMetric) -> bool:
    """True when the weighted form takes 0/1 predictions rather than continuous scores."""
    return form in _NEEDS_BINARY
