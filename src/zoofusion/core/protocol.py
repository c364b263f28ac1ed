"""The clustering protocol: features -> (standardise) -> UMAP -> KMeans / DBSCAN / One-class SVM, fitted on val.

Protocol (inductive: every choice is made on val, test is only transformed, predicted and scored):

1. The val feature matrix (e.g. 400-d flattened conv2 outputs of an untrained CNN) is optionally standardised
   with a StandardScaler fitted on val, and ONE UMAP is fitted on val; the test features go through the same
   scaler and ``UMAP.transform``. The study fitted UMAP on val ∪ test (transductive); here no test image moves a
   val coordinate, and labels are never seen by UMAP.
2. KMeans and DBSCAN cluster the val embedding; test points join their nearest val centroid (KMeans) or the
   cluster of their nearest val core point within eps, else noise (DBSCAN). The study's accuracy, precision and
   recall call each point by the **val** majority mapping of its cluster (the study mapped each split with its
   own labels, test included). Entropy, purity and n_clusters describe the split's clusters.
3. A One-class SVM is fitted on the embeddings of the val black cats and predicts test (inlier -> 1). Its val
   calls and scores are cross-fitted (``ocsvm_val_folds`` stratified folds, each scored by an SVM fitted on the
   other folds' black cats), so the val number is out of sample like the test one.
4. DBSCAN runs in two arms: ``dbscan`` with the study's eps (params), and ``dbscan_val_eps`` with eps chosen from
   the val embedding's own scale (:func:`val_eps`: a quantile of the val k-distance curve, k = min_samples).

Two more arms see the features without UMAP (they never fit one, so they cost little beside it):

5. The no-UMAP arm (:data:`DIRECT_METHODS`, :func:`evaluate_direct`): the features standardised on val as above, then
   the same methods fitted directly on them — ``kmeans_direct`` (KMeans), ``dbscan_direct`` (DBSCAN with the val
   eps rule of ``dbscan_val_eps``) and ``ocsvm_direct`` (the cross-fitted One-class SVM). A one-dimensional feature
   (darkness, any [N, 1] score) skips the methods: it is its own black-cat score, its direction chosen on val
   (:func:`orientation`), and its 0/1 calls — and its two "clusters" — come from a threshold chosen on val
   (:func:`val_threshold`); the three direct methods then agree on it.
6. The linear probe (``probe``, :func:`probe_crossfit`): a logistic regression on the standardised val features,
   its val score cross-fitted over ``probe_val_folds`` stratified folds (out of sample, as the SVM's), test scored
   by a probe fitted on all of val. What a supervised reader of the same features finds: a control for the
   unsupervised methods, not one of the study's.

Beside the study's metrics, each method gets metrics that mean the same at any class balance
(:mod:`zoofusion.core.scores`), keyed the same way: ``balanced_accuracy`` of its black-cat calls; ``ari`` and
``nmi`` of its clustering against the labels (KMeans, DBSCAN); and ``auroc`` / ``average_precision`` of a
continuous black-cat score — the One-class SVM's decision function, and for KMeans how much nearer a point is to
the centroid of the val KMeans cluster with the largest share of val black cats than to the nearest other val
centroid (``balanced_accuracy`` of KMeans calls a point a black cat when that centroid is its nearest). DBSCAN
has no centroid: its balanced accuracy uses the val majority mapping.

Degenerate input: when every val feature row is identical (a dead network that outputs zeros, say) there is no
structure to embed; UMAP would return random scatter, so :func:`embed` returns an all-zero embedding instead and
logs a warning. The methods then see one point repeated: KMeans finds one cluster, DBSCAN one cluster, the SVM
one verdict for everyone, and the metrics come out at chance (accuracy = majority-class share, entropy = class
entropy) instead of crashing a sweep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from zoofusion.core.metrics import (METRIC_KEYS, accuracy, check_labels, majority_mapping, mapped_predictions, precision,
                                    recall, score_clusters)
from zoofusion.core.scores import adjusted_rand, average_precision, balanced_accuracy, nmi, positive_cluster, roc_auc

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "UMAP_METHODS",
    "DIRECT_METHODS",
    "DIRECT_BASE",
    "PROBE",
    "ALL_METHODS",
    "VERDICT_METHODS",
    "SCORED_METHODS",
    "ARM",
    "UMAP_METRICS",
    "MethodParams",
    "Evaluation",
    "rows_identical",
    "embed",
    "black_cat_calls",
    "cluster_split",
    "evaluate_embedding",
    "evaluate_features",
    "evaluate_direct",
    "orientation",
    "val_threshold",
    "probe_crossfit",
]

METHODS: tuple[str, ...] = ("kmeans", "dbscan", "ocsvm")
# The UMAP arm (the study's protocol): the verdict's three and DBSCAN's second arm, eps chosen on val (`val_eps`).
UMAP_METHODS: tuple[str, ...] = (*METHODS, "dbscan_val_eps")
# The no-UMAP arm: each the UMAP-arm method it runs on the standardised features (DBSCAN with the val eps rule).
DIRECT_BASE: dict[str, str] = {"kmeans_direct": "kmeans", "dbscan_direct": "dbscan_val_eps", "ocsvm_direct": "ocsvm"}
DIRECT_METHODS: tuple[str, ...] = tuple(DIRECT_BASE)
PROBE = "probe"  # the linear probe arm
# Every method the protocol runs (scores.npz holds one entry per split and method of this list).
ALL_METHODS: tuple[str, ...] = (*UMAP_METHODS, *DIRECT_METHODS, PROBE)
# The methods the verdict compares kinds with (each judged by core.selection.VERDICT_METRIC).
VERDICT_METHODS: tuple[str, ...] = (*METHODS, *DIRECT_METHODS, PROBE)
# The methods with a continuous black-cat score (AUROC); the others have cluster ids (ARI).
SCORED_METHODS: tuple[str, ...] = ("kmeans", "ocsvm", "kmeans_direct", "ocsvm_direct", PROBE)
# Which arm each method belongs to: "umap" (the study's protocol), "direct" (no UMAP), "probe".
ARM: dict[str, str] = {**{m: "umap" for m in UMAP_METHODS}, **{m: "direct" for m in DIRECT_METHODS}, PROBE: "probe"}
SPLITS: tuple[str, ...] = ("val", "test")
# Checked up front so a typo fails before the ~15 s umap import, not after.
UMAP_METRICS: frozenset[str] = frozenset({
    "euclidean", "manhattan", "chebyshev", "minkowski", "cosine", "correlation", "canberra",
    "braycurtis",
})
_OCSVM_KERNELS = ("rbf", "linear", "poly", "sigmoid")


@dataclass(frozen=True)
class MethodParams:
    """Hyper-parameters of the three separation methods (validated on construction).

    No defaults: the values come from params.yaml (`ClusteringParams.method_params()`), the one place they live.
    """

    kmeans_k: int
    kmeans_n_init: int
    dbscan_eps: float
    dbscan_min_samples: int
    ocsvm_kernel: str
    ocsvm_nu: float
    ocsvm_gamma: float | str
    dbscan_eps_quantile: float  # DBSCAN's val arm: eps = this quantile of the val k-distance curve (k = min_samples)
    ocsvm_val_folds: int  # the One-class SVM's val score is cross-fitted over this many folds
    probe_c: float  # the linear probe's inverse L2 regularisation strength (sklearn LogisticRegression C)
    probe_val_folds: int  # the linear probe's val score is cross-fitted over this many folds

    def __post_init__(self) -> None:
        if not (isinstance(self.probe_c, (int, float)) and not isinstance(self.probe_c, bool) and self.probe_c > 0
                and np.isfinite(self.probe_c)):
            raise ValueError(f"probe_c: must be a number > 0, got {self.probe_c!r}")
        if not (isinstance(self.probe_val_folds, (int, np.integer)) and not isinstance(self.probe_val_folds, bool)
                and self.probe_val_folds >= 2):
            raise ValueError(f"probe_val_folds: must be an integer >= 2 (a probe never scores the val images it "
                             f"was fitted on), got {self.probe_val_folds!r}")
        if not (isinstance(self.dbscan_eps_quantile, (int, float)) and 0 < self.dbscan_eps_quantile <= 1):
            raise ValueError(f"dbscan_eps_quantile: must be in (0, 1], got {self.dbscan_eps_quantile!r}")
        if not (isinstance(self.ocsvm_val_folds, (int, np.integer)) and not isinstance(self.ocsvm_val_folds, bool)
                and self.ocsvm_val_folds >= 2):
            raise ValueError(f"ocsvm_val_folds: must be an integer >= 2 (an SVM never scores the val images it was "
                             f"fitted on), got {self.ocsvm_val_folds!r}")
        if not (isinstance(self.kmeans_k, (int, np.integer)) and self.kmeans_k in (2, 3)):
            raise ValueError(f"kmeans_k: must be 2 or 3 (the study's choices), got {self.kmeans_k!r}")
        if not (isinstance(self.kmeans_n_init, (int, np.integer)) and self.kmeans_n_init >= 1):
            raise ValueError(f"kmeans_n_init: must be an integer >= 1, got {self.kmeans_n_init!r}")
        if not (isinstance(self.dbscan_eps, (int, float)) and self.dbscan_eps > 0):
            raise ValueError(f"dbscan_eps: must be a number > 0, got {self.dbscan_eps!r}")
        if not (isinstance(self.dbscan_min_samples, (int, np.integer)) and self.dbscan_min_samples >= 1):
            raise ValueError(f"dbscan_min_samples: must be an integer >= 1, got {self.dbscan_min_samples!r}")
        if self.ocsvm_kernel not in _OCSVM_KERNELS:
            raise ValueError(f"ocsvm_kernel: must be one of {_OCSVM_KERNELS}, got {self.ocsvm_kernel!r}")
        if not (isinstance(self.ocsvm_nu, (int, float)) and 0 < self.ocsvm_nu <= 1):
            raise ValueError(f"ocsvm_nu: must be in (0, 1], got {self.ocsvm_nu!r}")
        g = self.ocsvm_gamma
        if isinstance(g, str):
            if g not in ("scale", "auto"):
                raise ValueError(f"ocsvm_gamma: must be a float > 0 or 'scale'/'auto', got {g!r}")
        elif not (isinstance(g, (int, float)) and g > 0):
            raise ValueError(f"ocsvm_gamma: must be a float > 0 or 'scale'/'auto', got {g!r}")


@dataclass
class Evaluation:
    """Result of one evaluation.

    metrics: ``"<split>/<method>/<metric>" -> float`` for split in (val, test), metric in METRIC_KEYS.
    emb_val, emb_test: the UMAP embeddings (n, n_components).
    clusters: ``(split, method) -> labels`` per point: cluster ids for kmeans/dbscan (-1 = noise),
    0/1 predictions for ocsvm.
    """

    metrics: dict[str, float]
    emb_val: np.ndarray
    emb_test: np.ndarray
    clusters: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # continuous black-cat scores


def rows_identical(x: np.ndarray, rtol: float = 1e-9) -> bool:
    """True when all rows of x are equal up to rtol * max|x| (e.g. a dead network's all-zero output)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] <= 1:
        return True
    spread = float(np.max(np.ptp(x, axis=0))) if x.size else 0.0
    return spread <= rtol * float(np.max(np.abs(x), initial=0.0))


def _features(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n_points, n_features), got shape {a.shape}; flatten the features")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); need at least one point and one feature")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf ({int((~np.isfinite(a)).sum())} entries); "
                         "fix the feature extractor (e.g. an exploding generated network) before clustering")
    return a


def _check_umap_args(n_total: int, n_neighbors: int, min_dist: float, n_components: int, metric: str,
                     n_epochs: int | None) -> None:
    if not (isinstance(n_neighbors, (int, np.integer)) and 2 <= n_neighbors < n_total):
        raise ValueError(f"n_neighbors must be an integer with 2 <= n_neighbors < number of points UMAP is fitted "
                         f"on (val = {n_total}), got {n_neighbors!r}; lower n_neighbors")
    if not (isinstance(min_dist, (int, float)) and 0.0 <= min_dist <= 1.0):
        # umap's default spread is 1.0 and it rejects min_dist > spread
        raise ValueError(f"min_dist must be in [0, 1] (umap spread is 1.0), got {min_dist!r}")
    if not (isinstance(n_components, (int, np.integer)) and 1 <= n_components < n_total - 1):
        raise ValueError(f"n_components must be an integer with 1 <= n_components < number of points - 1 "
                         f"({n_total - 1}), got {n_components!r}")
    if metric not in UMAP_METRICS:
        raise ValueError(f"metric must be one of {sorted(UMAP_METRICS)}, got {metric!r}")
    if n_epochs is not None and not (isinstance(n_epochs, (int, np.integer)) and n_epochs >= 3):
        # umap transforms test points for n_epochs // 3 epochs, and divides by it
        raise ValueError(f"n_epochs must be None (umap-learn's own schedule) or an integer >= 3, got {n_epochs!r}")


def _distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): indices of the distinct rows of x (exact equality) in order of first appearance,
    and for each row the position of its row among them, so ``x[first][inverse] == x``."""
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # np.unique sorts rows lexicographically; restore appearance order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.reshape(-1)]


# umap-learn's and pynndescent's numba modules: their compiled code is cached on disk (see umap_module).
_NUMBA_MODULES = ("umap.umap_", "umap.layouts", "umap.distances", "umap.spectral", "umap.utils", "umap.sparse",
                  "pynndescent.pynndescent_", "pynndescent.distances", "pynndescent.utils", "pynndescent.rp_trees",
                  "pynndescent.sparse")


def umap_module():
    """umap-learn, imported lazily (it costs seconds), with numba's on-disk cache switched on for its jitted
    functions: without it every process spends ~12 s compiling them before its first fit (each stage, each
    worker). The cache holds the same machine code numba would compile, so the embedding's bytes do not change."""
    import importlib

    import umap
    from numba.core.registry import CPUDispatcher

    for name in _NUMBA_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module another umap/pynndescent release lacks
            continue
        for f in vars(module).values():
            if isinstance(f, CPUDispatcher) and f._cache.__class__.__name__ == "NullCache":
                f.enable_caching()
    return umap


def embed(feats_val: np.ndarray, feats_test: np.ndarray | None, *, standardize: bool, n_neighbors: int,
          min_dist: float, n_components: int, metric: str, n_epochs: int | None,
          seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """UMAP fitted on val alone, test transformed into it (inductive; labels unused): (emb_val, emb_test), float64.
    ``feats_test=None`` embeds val only (emb_test None).

    With ``standardize`` the features are z-scored by a StandardScaler fitted on val (constant features keep
    scale 1, so no NaN) and applied to test. UMAP is fitted on the distinct val rows only (in order of first
    appearance) and every repeat gets its row's coordinates: identical rows form zero-distance cliques that
    disconnect UMAP's graph, and umap lays out such components with scipy's ARPACK, which restarts from an
    unseeded generator on these degenerate graphs — the same features gave a different embedding on every fit.
    Test points are placed by ``UMAP.transform`` (each attracted to its nearest val points; the val layout stays
    fixed), so nothing about the test images moves a val coordinate. All-identical val rows, or no more distinct
    val rows than ``n_neighbors``, give an all-zero embedding of both splits (see module docstring).
    Deterministic in ``seed`` (umap with random_state and n_jobs=1). ``n_epochs`` None keeps umap-learn's own
    schedule (below 10,000 points: 500 epochs fitting, 100 transforming); N gives N fitting and N // 3 transforming.
    """
    xv = _features(feats_val, "feats_val")
    xt = None if feats_test is None else _features(feats_test, "feats_test")
    if xt is not None and xv.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_val and feats_test must have the same number of features, "
                         f"got {xv.shape[1]} and {xt.shape[1]}")
    n = xv.shape[0]
    _check_umap_args(n, n_neighbors, min_dist, n_components, metric, n_epochs)

    def zeros() -> tuple[np.ndarray, np.ndarray | None]:
        return (np.zeros((n, n_components)), None if xt is None else np.zeros((xt.shape[0], n_components)))

    if rows_identical(xv):
        log.warning("embed: all %d val feature rows are identical (dead network?); returning an all-zero "
                    "embedding, metrics will be at chance", n)
        return zeros()
    if standardize:
        from sklearn.preprocessing import StandardScaler

        # StandardScaler leaves zero-variance columns at scale 1: they become 0, not NaN
        scaler = StandardScaler().fit(xv)
        xv = scaler.transform(xv)
        xt = None if xt is None else scaler.transform(xt)
    first, inverse = _distinct_rows(xv)
    if first.size <= n_neighbors or n_components >= first.size - 1:
        log.warning("embed: only %d distinct val feature rows among %d (near-dead network?), too few for UMAP with "
                    "n_neighbors=%d; returning an all-zero embedding, metrics will be at chance",
                    first.size, n, n_neighbors)
        return zeros()
    umap = umap_module()
    t0 = time.perf_counter()
    reducer = umap.UMAP(n_neighbors=int(n_neighbors), min_dist=float(min_dist), n_components=int(n_components),
                        metric=metric, n_epochs=None if n_epochs is None else int(n_epochs),
                        random_state=int(seed), n_jobs=1)
    with threadpool_limits(1):  # see _fit_predict; also pins BLAS summation order
        ev = np.asarray(reducer.fit_transform(xv[first]), dtype=np.float64)[inverse]
        et = None if xt is None else np.asarray(reducer.transform(xt), dtype=np.float64)
    log.debug("embed: UMAP on %d distinct of %d val x %d took %.2f s", first.size, n, xv.shape[1],
              time.perf_counter() - t0)
    if not np.isfinite(ev).all() or (et is not None and not np.isfinite(et).all()):
        raise ValueError("UMAP returned non-finite coordinates; check the features for extreme values")
    return ev, et


def _y(y: np.ndarray, n: int, name: str) -> np.ndarray:
    return check_labels(y, name, n)


def _check_methods(methods: Sequence[str], allowed: tuple[str, ...] = ALL_METHODS) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    m = tuple(methods)
    if not m:
        raise ValueError(f"methods is empty; pass some of {allowed}")
    unknown = [x for x in m if x not in allowed]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {allowed}")
    if len(set(m)) != len(m):
        raise ValueError(f"methods has duplicates: {m}")
    return m


def _fit_predict(emb: np.ndarray, method: str, p: MethodParams, seed: int,
                 ocsvm_train: np.ndarray | None) -> np.ndarray:
    """Cluster ids (kmeans, dbscan) or 0/1 predictions (ocsvm) for each row of emb, fitted on emb itself."""
    # A few hundred low-dim points need no threads; OpenMP spin-waiting on a busy machine made
    # KMeans 100x slower (2 s vs 0.02 s for 300 points on 2 shared cores).
    with threadpool_limits(1):
        return _fit_1thread(emb, method, p, seed, ocsvm_train)[0]


def val_eps(emb_val: np.ndarray, min_samples: int, quantile: float) -> float:
    """DBSCAN's eps from the val embedding's own scale: the `quantile` of the k-distance curve, k = min_samples
    (each val point's distance to its k-th nearest other val point). A point at or below that distance has at
    least min_samples neighbours within eps, so it is a core point: the densest `quantile` of val is core. Labels
    are not used. Floored at 1e-12 (DBSCAN needs eps > 0; all points equal give distance 0)."""
    from sklearn.neighbors import NearestNeighbors

    e = np.asarray(emb_val, dtype=np.float64)
    k = min(int(min_samples), e.shape[0] - 1)
    if k < 1:
        return 1e-12
    with threadpool_limits(1):
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(e).kneighbors(e)  # column 0: the point itself
    return max(float(np.quantile(dist[:, k], quantile)), 1e-12)


def _dbscan_apply(emb_val: np.ndarray, labels_val: np.ndarray, core: np.ndarray, emb: np.ndarray,
                  eps: float) -> np.ndarray:
    """DBSCAN fitted on val applied to new points: the cluster of the nearest val core point within eps, else
    noise (-1) — the points a val core would reach, as DBSCAN itself assigns border points."""
    if core.size == 0:
        return np.full(emb.shape[0], -1, dtype=np.int64)
    from sklearn.neighbors import NearestNeighbors

    with threadpool_limits(1):
        dist, idx = NearestNeighbors(n_neighbors=1).fit(emb_val[core]).kneighbors(emb)
    return np.where(dist[:, 0] <= eps, labels_val[core][idx[:, 0]], -1).astype(np.int64)


def stratified_folds(y: np.ndarray, k: int, seed: int, stream: str = "ocsvm-folds") -> np.ndarray:
    """Fold id (0..k-1) of each point: a seeded permutation within each class, dealt round-robin. `stream` names
    the random stream (the SVM's folds and the probe's are drawn independently)."""
    from zoofusion.core.seeds import rng

    r = rng(seed, "protocol", stream)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):
        idx = r.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(idx.size) % k
    return fold


def _ocsvm(train: np.ndarray, p: MethodParams):
    from sklearn.svm import OneClassSVM

    gamma = p.ocsvm_gamma if isinstance(p.ocsvm_gamma, str) else float(p.ocsvm_gamma)
    return OneClassSVM(kernel=p.ocsvm_kernel, nu=float(p.ocsvm_nu), gamma=gamma).fit(train)


def ocsvm_crossfit(emb_val: np.ndarray, y_val: np.ndarray, p: MethodParams, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 calls, decision function) of every val point from a One-class SVM that never saw it: val is dealt
    into ``p.ocsvm_val_folds`` stratified folds, and each fold is scored by an SVM fitted on the black cats of the
    other folds (cross-fitting). The score of a point is out of sample, as the test score is."""
    k = p.ocsvm_val_folds
    y = np.asarray(y_val)
    if int((y == 1).sum()) < k:
        raise ValueError(f"the One-class SVM's val score is cross-fitted over {k} folds (ocsvm_val_folds), which "
                         f"needs at least {k} val black cats; val has {int((y == 1).sum())}")
    fold = stratified_folds(y, k, seed)
    calls = np.empty(len(y), dtype=np.int64)
    score = np.empty(len(y), dtype=np.float64)
    with threadpool_limits(1):
        for f in range(k):
            held = fold == f
            if not held.any():
                continue
            svm = _ocsvm(emb_val[(y == 1) & ~held], p)
            calls[held] = (svm.predict(emb_val[held]) == 1).astype(np.int64)
            score[held] = svm.decision_function(emb_val[held])
    return calls, score


def _fit(emb: np.ndarray, method: str, p: MethodParams, seed: int,
         ocsvm_train: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, extra): KMeans' centroids or the One-class SVM's decision function on emb; None for DBSCAN."""
    with threadpool_limits(1):
        return _fit_1thread(emb, method, p, seed, ocsvm_train)


def _fit_1thread(emb: np.ndarray, method: str, p: MethodParams, seed: int,
                 ocsvm_train: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        if p.kmeans_k > emb.shape[0]:
            raise ValueError(f"kmeans_k={p.kmeans_k} exceeds the number of points ({emb.shape[0]}); lower kmeans_k")
        k = p.kmeans_k
        n_distinct = np.unique(emb, axis=0).shape[0]
        if n_distinct < k:
            # fewer distinct points than clusters (degenerate embedding): sklearn would only warn
            log.warning("kmeans: only %d distinct points for k=%d; using k=%d", n_distinct, k, n_distinct)
            k = n_distinct
        km = KMeans(n_clusters=k, n_init=p.kmeans_n_init, random_state=int(seed))
        return km.fit_predict(emb).astype(np.int64), km.cluster_centers_
    if method in ("dbscan", "dbscan_val_eps"):
        from sklearn.cluster import DBSCAN

        eps = p.dbscan_eps if method == "dbscan" else val_eps(emb, p.dbscan_min_samples, p.dbscan_eps_quantile)
        return DBSCAN(eps=float(eps), min_samples=int(p.dbscan_min_samples)).fit_predict(emb).astype(np.int64), None
    if method == "ocsvm":
        if ocsvm_train is None:
            raise ValueError("method 'ocsvm' needs ocsvm_train (the val black-cat embeddings)")
        tr = _features(ocsvm_train, "ocsvm_train")
        if tr.shape[1] != emb.shape[1]:
            raise ValueError(f"ocsvm_train has {tr.shape[1]} dims but emb has {emb.shape[1]}; "
                             "use embeddings from the same UMAP")
        svm = _ocsvm(tr, p)
        return (svm.predict(emb) == 1).astype(np.int64), svm.decision_function(emb)
    raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")


def _free_scores(y: np.ndarray, pred: np.ndarray | None = None, score: np.ndarray | None = None,
                 clusters: np.ndarray | None = None) -> dict[str, float]:
    """The prevalence-free metrics that apply; NaN where a split holds one class only."""
    out: dict[str, float] = {}
    two = len(np.unique(y)) == 2
    if pred is not None:
        out["balanced_accuracy"] = balanced_accuracy(y, pred) if two else float("nan")
    if score is not None:
        out["auroc"] = roc_auc(y, score) if two else float("nan")
        out["average_precision"] = average_precision(y, score) if two else float("nan")
    if clusters is not None:
        out["ari"] = adjusted_rand(y, clusters) if two else float("nan")
        out["nmi"] = nmi(y, clusters) if two else float("nan")
    return out


def black_cat_calls(y: np.ndarray, labels: np.ndarray, method: str) -> np.ndarray:
    """0/1 calls of one method on the split it was fitted on, by evaluate's rule for its balanced accuracy:
    KMeans calls the cluster with the highest black-cat share (:func:`positive_cluster`; on its own split that is
    the nearest-centroid call evaluate makes on val), DBSCAN the study's majority mapping, the SVM its inliers."""
    if method == "kmeans":
        return (labels == positive_cluster(y, labels)).astype(np.int64)
    return labels if method == "ocsvm" else mapped_predictions(y, labels)


def _map(mapping: dict[int, int], clusters: np.ndarray) -> np.ndarray:
    """Apply a val cluster -> class map; a cluster val never saw is called 'other' (0)."""
    return np.array([mapping.get(int(c), 0) for c in clusters], dtype=np.int64)


@dataclass
class Fitted:
    """One method fitted on val and applied to val and (optionally) test: per split, cluster ids (the SVM's 0/1
    calls), the study's calls (val majority mapping; the SVM's inliers), the black-cat calls for balanced accuracy
    (KMeans: the val black-cat cluster), and the continuous black-cat score (KMeans, SVM; None for DBSCAN).
    Every choice (clusters, mapping, black-cat cluster, SVM, eps) is made on val; test labels are never read."""

    clusters: dict[str, np.ndarray]
    study_calls: dict[str, np.ndarray]
    calls: dict[str, np.ndarray]
    scores: dict[str, np.ndarray | None]
    eps: float | None = None


def fit_on_val(emb_val: np.ndarray, y_val: np.ndarray, emb_test: np.ndarray | None, method: str,
               p: MethodParams, seed: int) -> Fitted:
    """Fit `method` on the val embedding (labels y_val used only for the val-side choices) and apply it to test.

    KMeans: clusters of val; a test point joins its nearest val centroid; the val majority mapping gives the
    study's calls, the val cluster with the highest black-cat share the black-cat call and the centroid margin
    score. DBSCAN (eps from params, or from the val k-distance curve for ``dbscan_val_eps``): clusters of val; a
    test point joins the cluster of its nearest val core point within eps, else noise; calls by the val majority
    mapping (noise mapped like a cluster). One-class SVM: fitted on the val black cats, predicts test; on val its
    calls and score are cross-fitted (:func:`ocsvm_crossfit`), so no val point is scored by an SVM that saw it.
    """
    ev = emb_val
    splits = {"val": ev} if emb_test is None else {"val": ev, "test": emb_test}
    if method == "ocsvm":
        if not (y_val == 1).any():
            raise ValueError("ocsvm needs at least one val black cat (y_val == 1) to fit on; "
                             "drop 'ocsvm' from methods or fix the split")
        cv_calls, cv_score = ocsvm_crossfit(ev, y_val, p, seed)
        clusters, scores = {"val": cv_calls}, {"val": cv_score}
        if emb_test is not None:
            with threadpool_limits(1):
                svm = _ocsvm(ev[y_val == 1], p)
                clusters["test"] = (svm.predict(emb_test) == 1).astype(np.int64)
                scores["test"] = svm.decision_function(emb_test)
        return Fitted(clusters, dict(clusters), dict(clusters), scores)
    two = len(np.unique(y_val)) == 2
    clusters, scores, calls = {}, {}, {}
    eps = None
    if method == "kmeans":
        labels, centers = _fit(ev, method, p, seed, None)
        clusters["val"] = labels
        mapping = majority_mapping(y_val, labels)
        if emb_test is not None:
            d = np.linalg.norm(emb_test[:, None, :] - centers[None, :, :], axis=2)
            clusters["test"] = d.argmin(1).astype(np.int64)  # KMeans.predict: the nearest val centroid
        positive = positive_cluster(y_val, labels) if two else 0
        for split, e in splits.items():
            dist = np.linalg.norm(e[:, None, :] - centers[None, :, :], axis=2)
            others = np.delete(dist, positive, axis=1)
            # margin: how much nearer the black-cat centroid than the nearest other one (>0: called black cat)
            scores[split] = (others.min(1) if others.shape[1] else np.zeros(len(e))) - dist[:, positive]
            calls[split] = (dist.argmin(1) == positive).astype(np.int64)
    else:
        from sklearn.cluster import DBSCAN

        eps = p.dbscan_eps if method == "dbscan" else val_eps(ev, p.dbscan_min_samples, p.dbscan_eps_quantile)
        with threadpool_limits(1):
            db = DBSCAN(eps=float(eps), min_samples=int(p.dbscan_min_samples)).fit(ev)
        labels = db.labels_.astype(np.int64)
        clusters["val"] = labels
        mapping = majority_mapping(y_val, labels)
        if emb_test is not None:
            clusters["test"] = _dbscan_apply(ev, labels, np.asarray(db.core_sample_indices_, dtype=np.int64),
                                             emb_test, float(eps))
        scores = {s: None for s in splits}
    study = {s: _map(mapping, clusters[s]) for s in splits}
    if method != "kmeans":
        calls = dict(study)
    return Fitted(clusters, study, calls, {s: scores.get(s) for s in splits}, eps)


def _split_metrics(y: np.ndarray, f: Fitted, split: str, method: str) -> dict[str, float]:
    """The study's metrics (accuracy, precision, recall from the val-mapped calls; entropy, purity, n_clusters of
    the split's clusters) and the prevalence-free ones, of one fitted method on one split."""
    c = f.clusters[split]
    s = score_clusters(y, c)  # entropy, purity, n_clusters: descriptive of the clusters; the map is not used
    calls = f.study_calls[split]
    out = {**s, "accuracy": accuracy(y, calls), "precision": precision(y, calls), "recall": recall(y, calls)}
    out = {k: float(out[k]) for k in METRIC_KEYS}
    out.update(_free_scores(y, pred=f.calls[split], score=f.scores[split],
                            clusters=None if method == "ocsvm" else c))
    if f.eps is not None and method == "dbscan_val_eps":
        out["eps"] = float(f.eps)
    return out


def cluster_split(emb: np.ndarray, y: np.ndarray, method: str, p: MethodParams, seed: int,
                  ocsvm_train: np.ndarray | None = None) -> dict[str, float]:
    """Metrics (keys METRIC_KEYS, plus the prevalence-free ones) of one method fitted on one split and scored on
    it, as :func:`evaluate_embedding` scores val (for the SVM: cross-fitted; `ocsvm_train` is not used)."""
    (method,) = _check_methods((method,), UMAP_METHODS)
    e = _features(emb, "emb")
    yy = _y(y, e.shape[0], "y")
    return _split_metrics(yy, fit_on_val(e, yy, None, method, p, seed), "val", method)


def evaluate_embedding(emb_val: np.ndarray, y_val: np.ndarray, emb_test: np.ndarray, y_test: np.ndarray,
                       p: MethodParams, seed: int,
                       methods: Sequence[str] = ALL_METHODS) -> Evaluation:
    """Fit each method on val and apply it to test (:func:`fit_on_val`); keys ``<split>/<method>/<metric>``.

    Lets a tuner vary MethodParams without refitting UMAP. y_test is read only to score. Methods of the UMAP arm
    only (:data:`UMAP_METHODS`); the other arms read the features (:func:`evaluate_direct`).
    """
    m = _check_methods(methods, UMAP_METHODS)
    ev, et = _features(emb_val, "emb_val"), _features(emb_test, "emb_test")
    if ev.shape[1] != et.shape[1]:
        raise ValueError(f"emb_val and emb_test must have the same dims, got {ev.shape[1]} and {et.shape[1]}")
    yv, yt = _y(y_val, ev.shape[0], "y_val"), _y(y_test, et.shape[0], "y_test")
    if "ocsvm" in m and not (yv == 1).any():
        raise ValueError("ocsvm needs at least one val black cat (y_val == 1) to fit on; "
                         "drop 'ocsvm' from methods or fix the split")
    metrics: dict[str, float] = {}
    clusters: dict[tuple[str, str], np.ndarray] = {}
    scores: dict[tuple[str, str], np.ndarray] = {}
    for method in m:
        f = fit_on_val(ev, yv, et, method, p, seed)  # every choice on val; test labels not passed
        for split, yy in (("val", yv), ("test", yt)):
            clusters[(split, method)] = f.clusters[split]
            if f.scores[split] is not None:
                scores[(split, method)] = np.asarray(f.scores[split], dtype=np.float64)
            for k, v in _split_metrics(yy, f, split, method).items():
                metrics[f"{split}/{method}/{k}"] = float(v)
    return Evaluation(metrics=metrics, emb_val=ev, emb_test=et, clusters=clusters, scores=scores)


def orientation(score_val: np.ndarray, y_val: np.ndarray) -> int:
    """+1 or -1: the direction in which a one-dimensional score ranks val black cats first — -1 where its val
    AUROC is below 0.5 (the flipped score's AUROC is 1 minus it), +1 otherwise (and where val holds one class).
    Chosen on val labels only; test is scored in the same direction."""
    y = np.asarray(y_val)
    if len(np.unique(y)) < 2:
        return 1
    return -1 if roc_auc(y, np.asarray(score_val, dtype=np.float64)) < 0.5 else 1


def val_threshold(score_val: np.ndarray, y_val: np.ndarray) -> float:
    """The threshold t of the calls ``score >= t`` with the highest val balanced accuracy, over t at each distinct
    val score (ties: the lowest such t). Chosen on val labels only; with one class on val, the lowest val score
    (every val point called alike)."""
    s, y = np.asarray(score_val, dtype=np.float64), np.asarray(y_val)
    cand = np.unique(s)
    if len(np.unique(y)) < 2:
        return float(cand[0])
    pos, neg = y == 1, y == 0
    calls = s[None, :] >= cand[:, None]  # [threshold, point]
    ba = 0.5 * (calls[:, pos].mean(1) + (~calls[:, neg]).mean(1))
    return float(cand[int(np.argmax(ba))])  # argmax: the first (lowest) of the ties


def _one_dimensional(xv: np.ndarray, yv: np.ndarray, xt: np.ndarray, base: str) -> Fitted:
    """A one-dimensional feature as its own score (direction on val), 0/1 calls and two clusters from the val
    threshold; DBSCAN's arm has no score (it is judged by the ARI of those clusters) and no eps (NaN)."""
    sign = orientation(xv[:, 0], yv)
    sc = {"val": sign * xv[:, 0], "test": sign * xt[:, 0]}
    t = val_threshold(sc["val"], yv)
    calls = {k: (v >= t).astype(np.int64) for k, v in sc.items()}
    scores = {k: None for k in sc} if base == "dbscan_val_eps" else sc
    return Fitted(dict(calls), dict(calls), dict(calls), scores, float("nan") if base == "dbscan_val_eps" else None)


def _standardised(xv: np.ndarray, xt: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The features as the direct arms see them: z-scored on val (as :func:`embed` does before UMAP); all-identical
    val rows (a dead network) become all zeros, so every method sees one repeated point, as the UMAP arm does."""
    if rows_identical(xv):
        return np.zeros_like(xv), np.zeros_like(xt)
    if not standardize:
        return xv, xt
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xv)  # no labels: the scale of val
    return scaler.transform(xv), scaler.transform(xt)


def probe_crossfit(x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray, p: MethodParams, seed: int
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(0/1 calls, scores) per split of the linear probe: a logistic regression (L2, C = ``p.probe_c``) on the
    val features. Its val score is cross-fitted: val is dealt into ``p.probe_val_folds`` stratified folds (own
    random stream) and each fold is scored by a probe fitted on the others, so no val image is scored by a probe
    that saw its label. Test is scored by one probe fitted on all of val. Score: the decision function (the
    log-odds of black cat); call: log-odds > 0."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y_val)
    k = p.probe_val_folds
    if min(int((y == 1).sum()), int((y == 0).sum())) < k:
        raise ValueError(f"the linear probe's val score is cross-fitted over {k} folds (probe_val_folds), which "
                         f"needs at least {k} val images of each class; val has {int((y == 1).sum())} black cats "
                         f"and {int((y == 0).sum())} others")

    def fit(xx: np.ndarray, yy: np.ndarray):
        # lbfgs: deterministic; the iteration cap is high enough for separable few-hundred-point sets
        return LogisticRegression(C=float(p.probe_c), max_iter=5000).fit(xx, yy)

    fold = stratified_folds(y, k, seed, "probe-folds")
    sv = np.empty(len(y), dtype=np.float64)
    with threadpool_limits(1):
        for f in range(k):
            held = fold == f
            sv[held] = fit(x_val[~held], y[~held]).decision_function(x_val[held])
        st = fit(x_val, y).decision_function(x_test).astype(np.float64)
    scores = {"val": sv, "test": st}
    return {s: (v > 0).astype(np.int64) for s, v in scores.items()}, scores


def evaluate_direct(feats_val: np.ndarray, y_val: np.ndarray, feats_test: np.ndarray, y_test: np.ndarray, *,
                    standardize: bool, p: MethodParams, seed: int,
                    methods: Sequence[str] = (*DIRECT_METHODS, PROBE)) -> Evaluation:
    """The arms without UMAP (module docstring, 5 and 6) on the features themselves; keys
    ``<split>/<method>/<metric>`` as :func:`evaluate_embedding` (a direct method has the keys of the UMAP-arm
    method it runs; the probe those of the One-class SVM). Every choice on val; y_test read only to score.
    The Evaluation's embeddings are empty ([n, 0]): these arms have none."""
    m = _check_methods(methods, (*DIRECT_METHODS, PROBE))
    xv, xt = _features(feats_val, "feats_val"), _features(feats_test, "feats_test")
    yv, yt = _y(y_val, xv.shape[0], "y_val"), _y(y_test, xt.shape[0], "y_test")
    if xv.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_val and feats_test must have the same number of features, "
                         f"got {xv.shape[1]} and {xt.shape[1]}")
    zv, zt = _standardised(xv, xt, standardize)
    metrics: dict[str, float] = {}
    clusters: dict[tuple[str, str], np.ndarray] = {}
    scores: dict[tuple[str, str], np.ndarray] = {}
    for method in m:
        if method == PROBE:
            calls, sc = probe_crossfit(zv, yv, zt, p, seed)
            f, base = Fitted(dict(calls), dict(calls), dict(calls), sc), "ocsvm"  # scored like the SVM's calls
        else:
            base = DIRECT_BASE[method]
            if xv.shape[1] == 1:
                f = _one_dimensional(xv, yv, xt, base)  # the raw score: standardising would not change its order
            else:
                f = fit_on_val(zv, yv, zt, base, p, seed)
        for split, yy in (("val", yv), ("test", yt)):
            clusters[(split, method)] = f.clusters[split]
            if f.scores[split] is not None:
                scores[(split, method)] = np.asarray(f.scores[split], dtype=np.float64)
            for k, v in _split_metrics(yy, f, split, base).items():
                metrics[f"{split}/{method}/{k}"] = float(v)
    return Evaluation(metrics=metrics, emb_val=np.zeros((len(yv), 0)), emb_test=np.zeros((len(yt), 0)),
                      clusters=clusters, scores=scores)


def evaluate_features(feats_val: np.ndarray, y_val: np.ndarray, feats_test: np.ndarray, y_test: np.ndarray, *,
                      standardize: bool, n_neighbors: int, min_dist: float, n_components: int, metric: str,
                      n_epochs: int | None, p: MethodParams, seed: int,
                      methods: Sequence[str] = ALL_METHODS) -> Evaluation:
    """The whole protocol: :func:`embed` (UMAP fitted on val, test transformed), then :func:`evaluate_embedding`
    (every UMAP-arm method fitted on val, applied to test), and the arms without UMAP (:func:`evaluate_direct`)
    on the same features. UMAP runs only when a UMAP-arm method is asked for.

    All inputs are validated before UMAP runs.
    """
    m = _check_methods(methods)
    on_umap = tuple(x for x in m if x in UMAP_METHODS)
    direct = tuple(x for x in m if x not in UMAP_METHODS)
    xv, xt = _features(feats_val, "feats_val"), _features(feats_test, "feats_test")
    yv, yt = _y(y_val, xv.shape[0], "y_val"), _y(y_test, xt.shape[0], "y_test")
    if xv.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_val and feats_test must have the same number of features, "
                         f"got {xv.shape[1]} and {xt.shape[1]}")
    _check_umap_args(xv.shape[0], n_neighbors, min_dist, n_components, metric, n_epochs)
    if {"ocsvm", "ocsvm_direct"} & set(m) and int((yv == 1).sum()) < p.ocsvm_val_folds:
        raise ValueError(f"ocsvm needs at least {p.ocsvm_val_folds} val black cats (y_val == 1): it is fitted on "
                         f"them and its val score is cross-fitted over ocsvm_val_folds={p.ocsvm_val_folds} folds; "
                         "drop 'ocsvm' from methods or fix the split")
    if PROBE in m and min(int((yv == 1).sum()), int((yv == 0).sum())) < p.probe_val_folds:
        raise ValueError(f"the linear probe needs at least {p.probe_val_folds} val images of each class: its val "
                         f"score is cross-fitted over probe_val_folds={p.probe_val_folds} folds; "
                         "drop 'probe' from methods or fix the split")
    if {"kmeans", "kmeans_direct"} & set(m) and p.kmeans_k > xv.shape[0]:
        raise ValueError(f"kmeans_k={p.kmeans_k} exceeds the val points ({xv.shape[0]}); lower kmeans_k")
    t0 = time.perf_counter()
    out = Evaluation(metrics={}, emb_val=np.zeros((len(yv), 0)), emb_test=np.zeros((len(yt), 0)))
    if on_umap:
        ev, et = embed(xv, xt, standardize=standardize, n_neighbors=n_neighbors, min_dist=min_dist,
                       n_components=n_components, metric=metric, n_epochs=n_epochs, seed=seed)
        out = evaluate_embedding(ev, yv, et, yt, p=p, seed=seed, methods=on_umap)
    t1 = time.perf_counter()
    if direct:
        d = evaluate_direct(xv, yv, xt, yt, standardize=standardize, p=p, seed=seed, methods=direct)
        out.metrics.update(d.metrics)
        out.clusters.update(d.clusters)
        out.scores.update(d.scores)
    log.info("evaluate_features: %d+%d points, umap arm %.2f s, other arms %.2f s",
             xv.shape[0], xt.shape[0], t1 - t0, time.perf_counter() - t1)
    return out
