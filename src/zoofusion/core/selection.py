"""Selection on val: which metric picks a candidate, per method, and how ties fall.

One place decides what "best on val" means everywhere a candidate is chosen (selected.json, the champion, the
figures, the headline, the baseline table, the models tuned, the verdict's best-on-val pairs, the extra UMAP-seed
runs): the method's verdict metric (:data:`VERDICT_METRIC`: AUROC for KMeans and the One-class SVM, the adjusted
Rand index for DBSCAN, in either arm — through UMAP or directly on the features — and AUROC for the linear probe) on val, higher is better, NaN last. Ties are broken by a seeded random order of the ids
(each id gets a key ``derive_seed(seed, "select", "tie", id)``), never by id order: at 1 black cat in 10 many
candidates tie, and "lowest id wins" would be a choice nobody made. The same seed gives the same order, whatever
subset of candidates is ranked.

Pure: ids and numbers in, positions out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoofusion.core.seeds import derive_seed

__all__ = ["VERDICT_METRIC", "select_key", "tie_keys", "rank_on_val", "best_on_val", "rank_rows"]

# Every arm's methods (core.protocol.VERDICT_METHODS): the no-UMAP arm's as its UMAP-arm twin, the probe by AUROC.
VERDICT_METRIC: dict[str, str] = {"kmeans": "auroc", "ocsvm": "auroc", "dbscan": "ari",
                                  "kmeans_direct": "auroc", "ocsvm_direct": "auroc", "dbscan_direct": "ari",
                                  "probe": "auroc"}


def select_key(method: str) -> str:
    """The metrics key a method's candidates are chosen by: ``val/<method>/<verdict metric>``."""
    if method not in VERDICT_METRIC:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(VERDICT_METRIC)}")
    return f"val/{method}/{VERDICT_METRIC[method]}"


def tie_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded random key per id (the tie-break order): the same id and seed give the same key in any subset."""
    return np.array([derive_seed(seed, "select", "tie", str(i)) for i in ids], dtype=np.int64)


def rank_on_val(ids: Sequence[str], val_values: Sequence[float] | np.ndarray, seed: int) -> list[int]:
    """Positions of `ids`, best first: highest val value (NaN last), ties in the seeded random order."""
    v = np.asarray(val_values, dtype=np.float64)
    if v.shape != (len(ids),):
        raise ValueError(f"val_values must hold one value per id ({len(ids)}), got shape {v.shape}")
    v = np.where(np.isnan(v), -np.inf, v)
    keys = tie_keys(ids, seed)
    return sorted(range(len(ids)), key=lambda i: (-v[i], keys[i], str(ids[i])))


def best_on_val(ids: Sequence[str], val_values: Sequence[float] | np.ndarray, seed: int) -> int:
    """Position of the best candidate on val (:func:`rank_on_val`'s first)."""
    if len(ids) == 0:
        raise ValueError("no candidates to choose from")
    return rank_on_val(ids, val_values, seed)[0]


def rank_rows(rows: Sequence[dict], method: str, seed: int) -> list[dict]:
    """Rows (each with ``id`` and ``metrics``) sorted best first on val by the method's verdict metric."""
    key = select_key(method)
    rows = list(rows)
    if rows and key not in rows[0]["metrics"]:
        raise ValueError(f"no {key!r} among the candidates' metrics; rerun `dvc repro evaluate`")
    order = rank_on_val([r["id"] for r in rows], [r["metrics"][key] for r in rows], seed)
    return [rows[i] for i in order]
