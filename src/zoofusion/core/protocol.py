"""The clustering protocol: features -> (standardise) -> one transductive UMAP -> KMeans / DBSCAN / One-class SVM.

Protocol, as the study runs it:

1. The val and test feature matrices (e.g. 400-d flattened conv2 outputs of an untrained CNN) are
   stacked, optionally standardised with a StandardScaler fitted on that union, and ONE UMAP is
   fitted on the union. This is transductive but unsupervised: labels are never seen before scoring.
2. On each split separately, KMeans and DBSCAN cluster that split's embedding and are scored with
   :func:`zoofusion.metrics.score_clusters` (majority mapping on the split being scored).
3. A One-class SVM is fitted on the embeddings of the *val* black cats only and predicts both
   splits (inlier -> 1); scored with :func:`zoofusion.metrics.score_predictions`. On val this is a
   training-set score by design; test is the honest number.

Beside the study's metrics, each method gets metrics that mean the same at any class balance
(:mod:`zoofusion.core.scores`), keyed the same way: ``balanced_accuracy`` of its predictions; ``ari`` and
``nmi`` of its clustering against the labels (KMeans, DBSCAN); and ``auroc`` / ``average_precision`` of a
continuous black-cat score — the One-class SVM's decision function, and for KMeans how much nearer a point is to
the centroid of the val KMeans cluster with the largest share of val black cats than to the nearest other val
centroid (chosen on val, so the test score never sees a test label; ``balanced_accuracy`` of KMeans uses the same val mapping: a point is called a
black cat when that centroid is its nearest). DBSCAN has no centroid, so its balanced accuracy uses the study's
majority mapping on the scored split.

Degenerate input: when every feature row is identical (a dead network that outputs zeros, say) there
is no structure to embed; UMAP would return random scatter, so :func:`embed` returns an all-zero
embedding instead and logs a warning. The methods then see one point repeated: KMeans finds one
cluster, DBSCAN one cluster, the SVM one verdict for everyone, and the metrics come out at chance
(accuracy = majority-class share, entropy = class entropy) instead of crashing a sweep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from zoofusion.core.metrics import METRIC_KEYS, check_labels, mapped_predictions, score_clusters, score_predictions
from zoofusion.core.scores import adjusted_rand, average_precision, balanced_accuracy, nmi, positive_cluster, roc_auc

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "UMAP_METRICS",
    "MethodParams",
    "Evaluation",
    "rows_identical",
    "embed",
    "black_cat_calls",
    "cluster_split",
    "evaluate_embedding",
    "evaluate_features",
]

METHODS: tuple[str, ...] = ("kmeans", "dbscan", "ocsvm")
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

    def __post_init__(self) -> None:
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


def _check_umap_args(n_total: int, n_neighbors: int, min_dist: float, n_components: int, metric: str) -> None:
    if not (isinstance(n_neighbors, (int, np.integer)) and 2 <= n_neighbors < n_total):
        raise ValueError(f"n_neighbors must be an integer with 2 <= n_neighbors < number of points "
                         f"(val+test = {n_total}), got {n_neighbors!r}; lower n_neighbors")
    if not (isinstance(min_dist, (int, float)) and 0.0 <= min_dist <= 1.0):
        # umap's default spread is 1.0 and it rejects min_dist > spread
        raise ValueError(f"min_dist must be in [0, 1] (umap spread is 1.0), got {min_dist!r}")
    if not (isinstance(n_components, (int, np.integer)) and 1 <= n_components < n_total - 1):
        raise ValueError(f"n_components must be an integer with 1 <= n_components < number of points - 1 "
                         f"({n_total - 1}), got {n_components!r}")
    if metric not in UMAP_METRICS:
        raise ValueError(f"metric must be one of {sorted(UMAP_METRICS)}, got {metric!r}")


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


def embed(feats_val: np.ndarray, feats_test: np.ndarray, *, standardize: bool, n_neighbors: int,
          min_dist: float, n_components: int, metric: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One UMAP fitted on val ∪ test (labels unused), split back into (emb_val, emb_test), float64.

    With ``standardize`` the union is z-scored first (constant features keep scale 1, so no NaN).
    UMAP is fitted on the distinct rows only (in order of first appearance) and every repeat gets its row's
    coordinates: identical rows form zero-distance cliques that disconnect UMAP's graph, and umap lays out such
    components with scipy's ARPACK, which restarts from an unseeded generator on these degenerate graphs — the
    same features gave a different embedding on every fit. Without repeats this is the plain fit. All-identical
    rows, or no more distinct rows than ``n_neighbors``, give an all-zero embedding (see module docstring).
    Deterministic in ``seed`` (umap with random_state and n_jobs=1).
    """
    xv, xt = _features(feats_val, "feats_val"), _features(feats_test, "feats_test")
    if xv.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_val and feats_test must have the same number of features, "
                         f"got {xv.shape[1]} and {xt.shape[1]}")
    x = np.concatenate([xv, xt], axis=0)
    n = x.shape[0]
    _check_umap_args(n, n_neighbors, min_dist, n_components, metric)
    zeros = np.zeros((n, n_components), dtype=np.float64)
    if rows_identical(x):
        log.warning("embed: all %d feature rows are identical (dead network?); returning an all-zero "
                    "embedding, metrics will be at chance", n)
        return zeros[: xv.shape[0]].copy(), zeros[xv.shape[0]:].copy()
    if standardize:
        from sklearn.preprocessing import StandardScaler

        # StandardScaler leaves zero-variance columns at scale 1: they become 0, not NaN
        x = StandardScaler().fit_transform(x)
    first, inverse = _distinct_rows(x)
    if first.size <= n_neighbors or n_components >= first.size - 1:
        log.warning("embed: only %d distinct feature rows among %d (near-dead network?), too few for UMAP with "
                    "n_neighbors=%d; returning an all-zero embedding, metrics will be at chance",
                    first.size, n, n_neighbors)
        return zeros[: xv.shape[0]].copy(), zeros[xv.shape[0]:].copy()
    umap = umap_module()
    t0 = time.perf_counter()
    reducer = umap.UMAP(n_neighbors=int(n_neighbors), min_dist=float(min_dist), n_components=int(n_components),
                        metric=metric, random_state=int(seed), n_jobs=1)
    with threadpool_limits(1):  # see _fit_predict; also pins BLAS summation order
        emb = np.asarray(reducer.fit_transform(x[first]), dtype=np.float64)[inverse]
    log.debug("embed: UMAP on %d distinct of %d x %d took %.2f s", first.size, n, x.shape[1],
              time.perf_counter() - t0)
    if not np.isfinite(emb).all():
        raise ValueError("UMAP returned non-finite coordinates; check the features for extreme values")
    return emb[: xv.shape[0]], emb[xv.shape[0]:]


def _y(y: np.ndarray, n: int, name: str) -> np.ndarray:
    return check_labels(y, name, n)


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    m = tuple(methods)
    if not m:
        raise ValueError(f"methods is empty; pass some of {METHODS}")
    unknown = [x for x in m if x not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
    if len(set(m)) != len(m):
        raise ValueError(f"methods has duplicates: {m}")
    return m


def _fit_predict(emb: np.ndarray, method: str, p: MethodParams, seed: int,
                 ocsvm_train: np.ndarray | None) -> np.ndarray:
    """Cluster ids (kmeans, dbscan) or 0/1 predictions (ocsvm) for each row of emb."""
    # A few hundred low-dim points need no threads; OpenMP spin-waiting on a busy machine made
    # KMeans 100x slower (2 s vs 0.02 s for 300 points on 2 shared cores).
    with threadpool_limits(1):
        return _fit_1thread(emb, method, p, seed, ocsvm_train)[0]


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
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        return DBSCAN(eps=float(p.dbscan_eps), min_samples=int(p.dbscan_min_samples)).fit_predict(emb).astype(np.int64), None
    if method == "ocsvm":
        from sklearn.svm import OneClassSVM

        if ocsvm_train is None:
            raise ValueError("method 'ocsvm' needs ocsvm_train (the val black-cat embeddings)")
        tr = _features(ocsvm_train, "ocsvm_train")
        if tr.shape[1] != emb.shape[1]:
            raise ValueError(f"ocsvm_train has {tr.shape[1]} dims but emb has {emb.shape[1]}; "
                             "use embeddings from the same UMAP")
        gamma = p.ocsvm_gamma if isinstance(p.ocsvm_gamma, str) else float(p.ocsvm_gamma)
        svm = OneClassSVM(kernel=p.ocsvm_kernel, nu=float(p.ocsvm_nu), gamma=gamma).fit(tr)
        return (svm.predict(emb) == 1).astype(np.int64), svm.decision_function(emb)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


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
        out["ari"] = adjusted_rand(y, clusters)
        out["nmi"] = nmi(y, clusters)
    return out


def black_cat_calls(y: np.ndarray, labels: np.ndarray, method: str) -> np.ndarray:
    """0/1 calls of one method on the split it was fitted on, by evaluate's rule for its balanced accuracy:
    KMeans calls the cluster with the highest black-cat share (:func:`positive_cluster`; on its own split that is
    the nearest-centroid call evaluate makes on val), DBSCAN the study's majority mapping, the SVM its inliers."""
    if method == "kmeans":
        return (labels == positive_cluster(y, labels)).astype(np.int64)
    return labels if method == "ocsvm" else mapped_predictions(y, labels)


def cluster_split(emb: np.ndarray, y: np.ndarray, method: str, p: MethodParams, seed: int,
                  ocsvm_train: np.ndarray | None = None) -> dict[str, float]:
    """Metrics (keys METRIC_KEYS, plus balanced_accuracy) of one method on one split's embedding.

    kmeans/dbscan: cluster emb, score with majority mapping; ocsvm: fit on ocsvm_train, predict emb
    (inlier -> 1), score the predictions. balanced_accuracy is taken on :func:`black_cat_calls` (NaN with one class).
    """
    (method,) = _check_methods((method,))
    e = _features(emb, "emb")
    yy = _y(y, e.shape[0], "y")
    labels = _fit_predict(e, method, p, seed, ocsvm_train)
    s = score_predictions(yy, labels) if method == "ocsvm" else score_clusters(yy, labels)
    if len(np.unique(yy)) < 2:  # the black-cat call needs both classes (positive_cluster)
        return {**s, "balanced_accuracy": float("nan")}
    return {**s, "balanced_accuracy": balanced_accuracy(yy, black_cat_calls(yy, labels, method))}


def evaluate_embedding(emb_val: np.ndarray, y_val: np.ndarray, emb_test: np.ndarray, y_test: np.ndarray,
                       p: MethodParams, seed: int,
                       methods: Sequence[str] = METHODS) -> Evaluation:
    """Run the methods on both splits of a given embedding (the OCSVM is fitted on val positives).

    Lets a tuner vary MethodParams without refitting UMAP. Keys ``<split>/<method>/<metric>``.
    """
    m = _check_methods(methods)
    ev, et = _features(emb_val, "emb_val"), _features(emb_test, "emb_test")
    if ev.shape[1] != et.shape[1]:
        raise ValueError(f"emb_val and emb_test must have the same dims, got {ev.shape[1]} and {et.shape[1]}")
    yv, yt = _y(y_val, ev.shape[0], "y_val"), _y(y_test, et.shape[0], "y_test")
    train = None
    if "ocsvm" in m:
        if not (yv == 1).any():
            raise ValueError("ocsvm needs at least one val black cat (y_val == 1) to fit on; "
                             "drop 'ocsvm' from methods or fix the split")
        train = ev[yv == 1]
    metrics: dict[str, float] = {}
    clusters: dict[tuple[str, str], np.ndarray] = {}
    scores: dict[tuple[str, str], np.ndarray] = {}
    centers, positive = None, 0
    for split, e, yy in (("val", ev, yv), ("test", et, yt)):
        for method in m:
            labels, extra = _fit(e, method, p, seed, train)
            clusters[(split, method)] = labels
            s = score_predictions(yy, labels) if method == "ocsvm" else score_clusters(yy, labels)
            for k in METRIC_KEYS:
                metrics[f"{split}/{method}/{k}"] = float(s[k])
            if method == "kmeans":
                if split == "val":  # the val fit decides the black-cat centroid, for both splits
                    centers = extra
                    positive = positive_cluster(yy, labels)
                dist = np.linalg.norm(e[:, None, :] - centers[None, :, :], axis=2)
                others = np.delete(dist, positive, axis=1)
                # margin: how much nearer the black-cat centroid than the nearest other one (>0: called black cat)
                score = (others.min(1) if others.shape[1] else 0.0) - dist[:, positive]
                free = _free_scores(yy, pred=(dist.argmin(1) == positive).astype(np.int64), score=score,
                                    clusters=labels)
            elif method == "ocsvm":
                score = extra
                free = _free_scores(yy, pred=black_cat_calls(yy, labels, method), score=score)
            else:
                score = None
                free = _free_scores(yy, pred=black_cat_calls(yy, labels, method), clusters=labels)
            if score is not None:
                scores[(split, method)] = np.asarray(score, dtype=np.float64)
            for k, v in free.items():
                metrics[f"{split}/{method}/{k}"] = float(v)
    return Evaluation(metrics=metrics, emb_val=ev, emb_test=et, clusters=clusters, scores=scores)


def evaluate_features(feats_val: np.ndarray, y_val: np.ndarray, feats_test: np.ndarray, y_test: np.ndarray, *,
                      standardize: bool, n_neighbors: int, min_dist: float, n_components: int, metric: str,
                      p: MethodParams, seed: int,
                      methods: Sequence[str] = METHODS) -> Evaluation:
    """The whole protocol: :func:`embed` val ∪ test once, then :func:`evaluate_embedding`.

    All inputs are validated before UMAP runs.
    """
    m = _check_methods(methods)
    xv, xt = _features(feats_val, "feats_val"), _features(feats_test, "feats_test")
    yv, yt = _y(y_val, xv.shape[0], "y_val"), _y(y_test, xt.shape[0], "y_test")
    if xv.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_val and feats_test must have the same number of features, "
                         f"got {xv.shape[1]} and {xt.shape[1]}")
    _check_umap_args(xv.shape[0] + xt.shape[0], n_neighbors, min_dist, n_components, metric)
    if "ocsvm" in m and not (yv == 1).any():
        raise ValueError("ocsvm needs at least one val black cat (y_val == 1) to fit on; "
                         "drop 'ocsvm' from methods or fix the split")
    if "kmeans" in m and p.kmeans_k > min(xv.shape[0], xt.shape[0]):
        raise ValueError(f"kmeans_k={p.kmeans_k} exceeds the points in a split "
                         f"(val {xv.shape[0]}, test {xt.shape[0]}); lower kmeans_k")
    t0 = time.perf_counter()
    ev, et = embed(xv, xt, standardize=standardize, n_neighbors=n_neighbors, min_dist=min_dist,
                   n_components=n_components, metric=metric, seed=seed)
    t1 = time.perf_counter()
    out = evaluate_embedding(ev, yv, et, yt, p=p, seed=seed, methods=m)
    log.info("evaluate_features: %d+%d points, umap %.2f s, methods %.2f s",
             xv.shape[0], xt.shape[0], t1 - t0, time.perf_counter() - t1)
    return out
