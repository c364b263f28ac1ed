"""Step `scores`: every saved candidate through the study's protocol, and its per-image scores saved.

Each candidate's val and test features (`steps.candidates.features`) go through `core.protocol.evaluate_features`
(one UMAP per candidate, in worker processes; the no-UMAP arm and the linear probe on the same features, without
one). Written: a compact .npz with, per candidate, every metric (`<split>/<method>/<metric>`, float64, exact) and
what the verdict and later steps resample without rerunning the protocol, one entry per split and method of
`core.protocol.ALL_METHODS` (every arm's methods: a method list enumerates the arms, `core.protocol.ARM` names
each one's arm): ``score_<split>_<method>`` [n_candidates, n_split], the continuous black-cat scores of the
methods in `core.protocol.SCORED_METHODS` (KMeans margin, One-class SVM decision function, in both arms; a
one-dimensional feature's own score in the no-UMAP arm; the probe's log-odds), and ``clusters_<split>_<method>``,
the cluster ids of every method (the SVM's and the probe's 0/1 calls) of every val and test image; the test
embedding (for figures); and candidates.csv, the metrics as a table. Knows nothing of DVC or MLflow.

Extra seed runs (`evaluate.umap_seeds` = S): the best-on-val candidate of every kind and method (core.selection,
chosen from the main run's val numbers) runs through the protocol again with S more UMAP/clustering seeds, so a
bootstrap can include the UMAP seed's variance without refitting. In scores.npz (R = those candidates):

* ``seed_ids`` [R] str: the candidates, in scores order; ``seed_seeds`` [S] int64: the seeds used
  (``derive_seed(seed, "evaluate", "umap-seed", s)``, s = 1..S; the main run's is ``derive_seed(seed, "evaluate")``);
* ``seed_best`` [K*M] str ``<kind>|<method>|<id>``: which candidate is best on val for which kind and method;
* ``seed_score_<split>_<method>`` [R, S, n_split] (kmeans, ocsvm): continuous black-cat scores;
* ``seed_clusters_<split>_<method>`` [R, S, n_split] (kmeans, dbscan, ocsvm, dbscan_val_eps): cluster ids / 0/1
  calls, as the main arrays (the UMAP arm only: the other arms fit no UMAP);
* ``seed_metric_keys`` [k], ``seed_metrics`` [R, S, k] float64: every metric of each seed run.

:func:`load_seed_runs` reads them back.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np

from zoofusion.config import ClusteringParams
from zoofusion.console import progress
from zoofusion.core.candidates import Candidate
from zoofusion.core.protocol import ALL_METHODS, METHODS, SCORED_METHODS, SPLITS, UMAP_METHODS
from zoofusion.core.selection import rank_rows
from zoofusion.core.seeds import derive_seed
from zoofusion.executor import run_tasks
from zoofusion.io import atomic_path, load_npz, save_npz
from zoofusion.steps.candidates import features

log = logging.getLogger(__name__)
SCORED = SCORED_METHODS  # the methods with a continuous black-cat score (every arm)
SEED_SCORED = tuple(m for m in SCORED if m in UMAP_METHODS)  # ... of those the extra UMAP seeds rerun


def _evaluate_one(task: tuple, shared: None = None) -> dict:
    from zoofusion.core.protocol import evaluate_features

    cid, fv, yv, ft, yt, ukw, mp, seed, methods = task[:9]
    t0 = time.perf_counter()
    ev = evaluate_features(fv, yv, ft, yt, **ukw, p=mp, seed=seed, methods=methods)
    return {"id": cid, "metrics": ev.metrics, "emb_val": ev.emb_val, "emb_test": ev.emb_test,
            "clusters": {f"{s}/{m}": v for (s, m), v in ev.clusters.items()},
            "scores": {f"{s}/{m}": v for (s, m), v in ev.scores.items()}, "seconds": time.perf_counter() - t0}


def evaluate_all(cands: list[Candidate], feats: list[np.ndarray], split: int, y_val: np.ndarray,
                 y_test: np.ndarray, c: ClusteringParams, seed: int, workers: int, backend: str = "local",
                 address: str = "") -> list[dict]:
    """Run the protocol for every candidate, in `workers` processes (one UMAP per candidate)."""
    ukw, mp = c.umap_kwargs(), c.method_params()
    tasks = [(cand.id, f[:split], y_val, f[split:], y_test, ukw, mp, umap_seed(seed, 0), ALL_METHODS)
             for cand, f in zip(cands, feats)]
    bar = progress(total=len(tasks), desc="evaluate", unit="model")
    results = []
    for r in run_tasks(_evaluate_one, tasks, workers, backend=backend, address=address):
        results.append(r)
        bar.update(1)
    bar.close()
    return results


def umap_seed(seed: int, s: int) -> int:
    """The UMAP/clustering seed of extra seed run s (1..umap_seeds); run 0 is the main one."""
    return derive_seed(seed, "evaluate") if s == 0 else derive_seed(seed, "evaluate", "umap-seed", s)


def best_on_val_ids(rows: list[dict], seed: int) -> list[tuple[str, str, str]]:
    """(kind, method, id) of the best-on-val candidate of every kind and verdict method (core.selection)."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    return [(k, m, rank_rows([r for r in rows if r["kind"] == k], m, seed)[0]["id"]) for k in kinds for m in METHODS]


def seed_runs(rows: list[dict], feats: list[np.ndarray], cands: list[Candidate], split: int, y_val: np.ndarray,
              y_test: np.ndarray, c: ClusteringParams, seed: int, n_seeds: int, workers: int, backend: str,
              address: str) -> dict[str, np.ndarray]:
    """The extra seed runs' arrays (module docstring) for the best-on-val candidates of every kind and method."""
    best = best_on_val_ids(rows, seed)
    order = [r["id"] for r in rows]
    ids = sorted({i for _, _, i in best}, key=order.index)
    seeds = [umap_seed(seed, s) for s in range(1, n_seeds + 1)]
    out = {"seed_ids": np.array(ids, dtype=str), "seed_seeds": np.array(seeds, dtype=np.int64),
           "seed_best": np.array([f"{k}|{m}|{i}" for k, m, i in best], dtype=str)}
    if not seeds or not ids:
        return out
    pos = {cand.id: j for j, cand in enumerate(cands)}
    ukw, mp = c.umap_kwargs(), c.method_params()
    # the UMAP arm only: the other arms fit no UMAP, so a UMAP seed does not move them
    tasks = [(cid, feats[pos[cid]][:split], y_val, feats[pos[cid]][split:], y_test, ukw, mp, s, UMAP_METHODS)
             for cid in ids for s in seeds]
    res = {(r["id"], r["seed"]): r for r in run_tasks(_evaluate_seed, tasks, workers, backend=backend,
                                                        address=address)}
    grid = [[res[(cid, s)] for s in seeds] for cid in ids]
    keys = list(grid[0][0]["metrics"])
    out["seed_metric_keys"] = np.array(keys)
    out["seed_metrics"] = np.array([[[g["metrics"][k] for k in keys] for g in row] for row in grid])
    for sp in SPLITS:
        for m in UMAP_METHODS:
            out[f"seed_clusters_{sp}_{m}"] = _compact_ids(np.array([[g["clusters"][f"{sp}/{m}"] for g in row]
                                                                    for row in grid]))
        for m in SEED_SCORED:
            out[f"seed_score_{sp}_{m}"] = np.array([[g["scores"][f"{sp}/{m}"] for g in row] for row in grid])
    return out


def _evaluate_seed(task: tuple, shared: None = None) -> dict:
    r = _evaluate_one(task)
    return {**r, "seed": task[7], "emb_val": None, "emb_test": None}


def score(cands: list[Candidate], val: Path, test: Path, out_scores: Path, out_csv: Path, c: ClusteringParams,
          seed: int, feature_batch: int, dark_luminance: int, workers: int, backend: str = "local",
          address: str = "", umap_seeds: int = 0) -> tuple[list[dict], dict[str, float]]:
    """Every candidate through the protocol on val and test; writes `out_scores` (npz) and `out_csv`.

    Returns (one row per candidate: id, kind, source, metrics, scores, clusters, embeddings; seconds spent on
    features and on the protocol)."""
    v, t = load_npz(val), load_npz(test)
    t0 = time.perf_counter()
    feats = features(cands, np.concatenate([v["images"], t["images"]]), feature_batch, dark_luminance)
    t_feat = time.perf_counter() - t0
    log.info("evaluate: features of %d candidates on %d images in %.1fs", len(cands),
             len(v["labels"]) + len(t["labels"]), t_feat)
    results = evaluate_all(cands, feats, len(v["labels"]), v["labels"], t["labels"], c, seed, workers, backend,
                           address)
    by_id = {cand.id: cand for cand in cands}
    rows = [{**r, "kind": by_id[r["id"]].kind, "source_domain": by_id[r["id"]].source_domain,
             "source_index": by_id[r["id"]].source_index} for r in results]
    extra = seed_runs(rows, feats, cands, len(v["labels"]), v["labels"], t["labels"], c, seed, umap_seeds, workers,
                      backend, address)
    save_scores(out_scores, rows, extra)
    write_candidates_csv(out_csv, rows)
    return rows, {"features": t_feat, "protocol": time.perf_counter() - t0 - t_feat}


def _compact_scores(a: np.ndarray) -> np.ndarray:
    """float32 where that ties no two scores that differed (the cast keeps their order, so every rank metric,
    AUROC included, is unchanged); float64 otherwise."""
    f = a.astype(np.float32)
    if all(np.unique(f[i]).size == np.unique(a[i]).size for i in range(len(a))):
        return f
    return a


def _compact_ids(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int16) if a.size == 0 or (a.min() >= -(2 ** 15) and a.max() < 2 ** 15) else a


def save_scores(path: Path, rows: list[dict], extra: dict[str, np.ndarray] | None = None) -> None:
    """rows -> one npz: metadata, metrics [n, keys] float64, per (split, method) the per-image arrays, and the
    extra seed runs' arrays (`seed_*`, module docstring)."""
    keys = list(rows[0]["metrics"])
    arrays = {"ids": np.array([r["id"] for r in rows]), "kinds": np.array([r["kind"] for r in rows]),
              "source_domain": np.array([r["source_domain"] for r in rows]),
              "source_index": np.array([r["source_index"] for r in rows], dtype=np.int64),
              "metric_keys": np.array(keys), "metrics": np.array([[r["metrics"][k] for k in keys] for r in rows]),
              "emb_test": np.stack([r["emb_test"] for r in rows]).astype(np.float32)}
    for s in SPLITS:
        for m in ALL_METHODS:
            arrays[f"clusters_{s}_{m}"] = _compact_ids(np.stack([r["clusters"][f"{s}/{m}"] for r in rows]))
        for m in SCORED:
            arrays[f"score_{s}_{m}"] = _compact_scores(np.stack([r["scores"][f"{s}/{m}"] for r in rows]))
    save_npz(path, **arrays, **(extra or {}))


def load_scores(path: Path) -> list[dict]:
    """The rows `save_scores` wrote: id, kind, source_domain, source_index, metrics, scores, clusters, emb_test."""
    z = load_npz(path)
    keys = [str(k) for k in z["metric_keys"]]
    return [{"id": str(z["ids"][i]), "kind": str(z["kinds"][i]), "source_domain": str(z["source_domain"][i]),
             "source_index": int(z["source_index"][i]),
             "metrics": dict(zip(keys, (float(x) for x in z["metrics"][i]))),
             "scores": {f"{s}/{m}": z[f"score_{s}_{m}"][i].astype(np.float64) for s in SPLITS for m in SCORED},
             "clusters": {f"{s}/{m}": z[f"clusters_{s}_{m}"][i].astype(np.int64) for s in SPLITS
                          for m in ALL_METHODS},
             "emb_test": z["emb_test"][i].astype(np.float64)} for i in range(len(z["ids"]))]


def load_seed_runs(path: Path) -> dict:
    """The extra seed runs of scores.npz: ids, seeds, best ({(kind, method): id}), and per array name
    (``score_<split>_<method>``, ``clusters_<split>_<method>``) the [R, S, n] array; ``metrics`` [R, S, k] with
    ``metric_keys``. Empty arrays (R = 0 or S = 0) when `evaluate.umap_seeds` is 0."""
    z = load_npz(path)
    if "seed_ids" not in z:  # scores written without seed runs
        return {"ids": [], "seeds": [], "best": {}}
    best = {}
    for b in z["seed_best"]:
        k, m, i = str(b).split("|")
        best[(k, m)] = i
    out = {"ids": [str(i) for i in z["seed_ids"]], "seeds": [int(s) for s in z["seed_seeds"]], "best": best}
    for name in z:
        if name.startswith(("seed_score_", "seed_clusters_")):
            out[name.removeprefix("seed_")] = z[name]
    if "seed_metrics" in z:
        out["metrics"], out["metric_keys"] = z["seed_metrics"], [str(k) for k in z["seed_metric_keys"]]
    return out


def write_candidates_csv(path: Path, rows: list[dict]) -> None:
    """Every candidate's metrics, one row each (read by tune, tuned and people)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        keys = sorted(rows[0]["metrics"])
        w = csv.writer(f)
        w.writerow(["id", "kind", "source_domain", "source_index", *keys])
        for r in rows:
            w.writerow([r["id"], r["kind"], r["source_domain"], r["source_index"],
                        *[f"{r['metrics'][k]:.6f}" for k in keys]])


def read_candidates(path: Path) -> list[dict]:
    """Rows of candidates.csv as `core.candidates.rank` expects them: id, kind, metrics."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        fixed = {"id", "kind", "source_domain", "source_index"}
        return [{"id": r["id"], "kind": r["kind"],
                 "metrics": {k: float(v) for k, v in r.items() if k not in fixed}} for r in reader]
