"""The study's metrics for "does a clustering separate black cats (1) from other images (0)?".

Pure numpy. Two kinds of output are scored:

* a clustering (KMeans, DBSCAN): cluster ids are turned into class predictions with
  :func:`majority_mapping`, computed on the very data being scored (the study's protocol: no
  held-out mapping), then accuracy / precision / recall are taken on those predictions;
* a classifier-like output (One-class SVM, inlier -> 1): accuracy / precision / recall are taken
  on the predictions directly, and entropy / purity treat the two predicted groups as clusters.

Conventions, fixed here once so every caller agrees:

* the positive class is 1;
* a cluster whose members are tied between the classes maps to class 0 (the conservative choice:
  a tie is no evidence for "black cat");
* DBSCAN noise (label -1) is one more cluster, mapped and scored like any other, and counted in
  ``n_clusters``;
* precision with no predicted positives is 0.0, recall with no true positives is 0.0 (rather than
  NaN, so MLflow/Optuna always get a number; a clustering that finds no positives is worthless);
* entropy is in bits.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "METRIC_KEYS",
    "majority_mapping",
    "mapped_predictions",
    "accuracy",
    "precision",
    "recall",
    "cluster_entropy",
    "purity",
    "score_clusters",
    "score_predictions",
    "all_other_rate",
]

METRIC_KEYS: tuple[str, ...] = ("accuracy", "precision", "recall", "entropy", "purity", "n_clusters")


def _one_per_point(x: np.ndarray | list, name: str, what: str) -> np.ndarray:
    """A 1-d, non-empty array (bools as int64), or ValueError naming `name`."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}; pass one {what} per point")
    if a.size == 0:
        raise ValueError(f"{name} is empty; score at least one point")
    return a.astype(np.int64) if a.dtype == bool else a


def check_labels(y: np.ndarray | list, name: str, n: int | None = None) -> np.ndarray:
    """A 1-d, non-empty int64 array of 0/1 labels (``n`` of them, if given), or ValueError naming `name`."""
    a = _one_per_point(y, name, "label")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must be 1-d with one label per point ({n}), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric 0/1 labels, got dtype {a.dtype}")
    bad = ~np.isin(a, (0, 1))
    if bad.any():
        raise ValueError(
            f"{name} must contain only 0 and 1 (1 = black cat), found {np.unique(a[bad])[:5].tolist()}; "
            "binarise the labels first")
    return a.astype(np.int64)


def _clusters(c: np.ndarray | list, name: str = "clusters") -> np.ndarray:
    """A 1-d, non-empty int64 array of cluster ids (any integers; -1 = DBSCAN noise)."""
    a = _one_per_point(c, name, "cluster id")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer cluster ids, got dtype {a.dtype}; cast with .astype(int)")
    return a.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{na} and {nb} must have equal lengths, got {a.shape[0]} and {b.shape[0]}")


def _contingency(y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids sorted, counts[k, j] = |cluster k ∩ class j|) for j in {0, 1}."""
    ids, inv = np.unique(c, return_inverse=True)
    counts = np.zeros((ids.size, 2), dtype=np.int64)
    np.add.at(counts, (inv, y), 1)
    return ids, counts


def majority_mapping(y_true: np.ndarray | list, clusters: np.ndarray | list) -> dict[int, int]:
    """Map each cluster id to its majority true class on these data: m(k) = argmax_j |c_k ∩ t_j|.

    Ties map to class 0. Noise (-1) is a cluster like any other.
    Example: y=[1,1,1,0,0,0], clusters=[0,0,1,1,1,2] -> {0: 1, 1: 0, 2: 0}.
    """
    y, c = check_labels(y_true, "y_true"), _clusters(clusters)
    _same_length(y, c, "y_true", "clusters")
    ids, counts = _contingency(y, c)
    return {int(k): int(n[1] > n[0]) for k, n in zip(ids, counts)}


def mapped_predictions(y_true: np.ndarray | list, clusters: np.ndarray | list) -> np.ndarray:
    """Predicted class of each point: y_hat_i = m(cluster_i) with m from :func:`majority_mapping`."""
    c = _clusters(clusters)
    mapping = majority_mapping(y_true, c)
    ids = np.array(sorted(mapping), dtype=np.int64)
    cls = np.array([mapping[int(k)] for k in ids], dtype=np.int64)
    return cls[np.searchsorted(ids, c)]


def _pair(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    y, p = check_labels(y_true, "y_true"), check_labels(y_pred, "y_pred")
    _same_length(y, p, "y_true", "y_pred")
    return y, p


def accuracy(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> float:
    """(TP + TN) / N."""
    y, p = _pair(y_true, y_pred)
    return float(np.mean(y == p))


def precision(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> float:
    """TP / (TP + FP), positive = 1; 0.0 when nothing is predicted positive."""
    y, p = _pair(y_true, y_pred)
    pp = int(np.sum(p == 1))
    return float(np.sum((p == 1) & (y == 1)) / pp) if pp else 0.0


def recall(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> float:
    """TP / (TP + FN), positive = 1; 0.0 when there are no true positives."""
    y, p = _pair(y_true, y_pred)
    P = int(np.sum(y == 1))
    return float(np.sum((p == 1) & (y == 1)) / P) if P else 0.0


def _entropy_purity(y: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    _, counts = _contingency(y, c)
    n_k = counts.sum(axis=1)
    p = counts / n_k[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)  # 0 log 0 = 0
    n = y.size
    return float(np.sum(n_k / n * h)) + 0.0, float(counts.max(axis=1).sum() / n)


def cluster_entropy(y_true: np.ndarray | list, clusters: np.ndarray | list) -> float:
    """Weighted class entropy of the clusters, in bits: sum_k (n_k/N) H_k, H_k = -sum_j p_kj log2 p_kj.

    p_kj = |c_k ∩ t_j| / n_k. 0 for a perfect clustering; at most 1 bit for two classes.
    """
    y, c = check_labels(y_true, "y_true"), _clusters(clusters)
    _same_length(y, c, "y_true", "clusters")
    return _entropy_purity(y, c)[0]


def purity(y_true: np.ndarray | list, clusters: np.ndarray | list) -> float:
    """Purity = (1/N) sum_k max_j |c_k ∩ t_j|; equals the accuracy of the majority mapping."""
    y, c = check_labels(y_true, "y_true"), _clusters(clusters)
    _same_length(y, c, "y_true", "clusters")
    return _entropy_purity(y, c)[1]


def score_clusters(y_true: np.ndarray | list, clusters: np.ndarray | list) -> dict[str, float]:
    """All metrics of a clustering; keys :data:`METRIC_KEYS`; n_clusters counts noise (-1) as one cluster."""
    y, c = check_labels(y_true, "y_true"), _clusters(clusters)
    _same_length(y, c, "y_true", "clusters")
    pred = mapped_predictions(y, c)
    ent, pur = _entropy_purity(y, c)
    return {
        "accuracy": accuracy(y, pred),
        "precision": precision(y, pred),
        "recall": recall(y, pred),
        "entropy": ent,
        "purity": pur,
        "n_clusters": float(np.unique(c).size),
    }


def score_predictions(y_true: np.ndarray | list, y_pred: np.ndarray | list) -> dict[str, float]:
    """All metrics of 0/1 predictions (e.g. One-class SVM, inlier -> 1); keys :data:`METRIC_KEYS`.

    accuracy/precision/recall use y_pred as is (no majority mapping); entropy and purity treat the
    predicted groups {y_pred == 0}, {y_pred == 1} as clusters; n_clusters = number of non-empty groups.
    """
    y, p = _pair(y_true, y_pred)
    ent, pur = _entropy_purity(y, p)
    return {
        "accuracy": accuracy(y, p),
        "precision": precision(y, p),
        "recall": recall(y, p),
        "entropy": ent,
        "purity": pur,
        "n_clusters": float(np.unique(p).size),
    }


def all_other_rate(y_true: np.ndarray | list) -> float:
    """The share of 'other' images (label 0): the accuracy of calling everything 'other', the chance rate an
    accuracy has to be read against (the study's test set: 0.618)."""
    y = check_labels(y_true, "y_true")
    return float(np.mean(y == 0))
