"""Two report sections built from their own inputs: novelty (stage `novelty`, metrics/novelty.json) and the study
side by side (references/patel_jain_2024.yaml beside our best-on-val models' test numbers).

The words follow the numbers: each sentence is built from the values it states and the thresholds it names.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoofusion.core.metrics import all_other_rate
from zoofusion.reference import STUDY_METRICS, StudyReference
from zoofusion.render.tables import METHOD_TITLES

STUDY_METHODS = ("kmeans", "dbscan", "ocsvm")


def _f(x, nd: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


# --- novelty ------------------------------------------------------------------------------------------------------

def novelty_rows(nv: dict) -> list[dict]:
    """One row per kind: candidates, relative distance to the nearest zoo model (median, min), near-copies, which
    zoo holds the nearest model, and the median misprediction IoU with it per method."""
    rows = []
    for kind, k in nv.items():
        if not isinstance(k, dict) or "relative_median" not in k:
            continue
        rows.append({"Kind": kind, "Candidates": k["n"], "Relative distance, median": _f(k["relative_median"]),
                     "min": _f(k["relative_min"]), f"Near-copies (< {nv['near_copy_below']})": k["near_copies"],
                     "Nearest in zoo A / B": f"{k['nearest_domain']['A']} / {k['nearest_domain']['B']}",
                     "Nearest is its source": k.get("nearest_is_source", "") if kind.startswith("generated") else "",
                     **{f"Error IoU, {m}": _f(k.get(f"iou_median_{m}")) for m in nv["methods"]}})
    return rows


def novelty_text(nv: dict) -> list[str]:
    """The scale and threshold, then one sentence per generated kind and verdict method on its best-on-val model:
    its nearest zoo model, the distance, new or near-copy, and how far its test errors overlap that model's."""
    z = nv["zoo"]
    out = [f"Distance: {nv['distance']} (Git Re-Basin), to the nearest model of the black zoo (A) and of the cat zoo "
           f"(B); *relative* = that distance over the zoo's median distance between two of its models (A "
           f"{_f(z['A']['typical_distance'])}, B {_f(z['B']['typical_distance'])}). A zoo model's nearest other zoo "
           f"model lies at a median {_f(z['A']['nearest_other_median_relative'], 2)} (A) and "
           f"{_f(z['B']['nearest_other_median_relative'], 2)} (B).", "",
           f"Threshold (params `novelty.near_copy`): below {nv['near_copy_below']} a candidate is called a near-copy "
           "of its nearest zoo model, at or above it new. Error IoU: |E ∩ E'| / |E ∪ E'| of the test images each "
           "gets wrong (1 = the same mistakes).", ""]
    items = []
    for kind, k in nv.items():
        for m, b in (k.get("best_on_val", {}) if isinstance(k, dict) else {}).items():
            word = "a near-copy" if b["near_copy"] else "new"
            metric = next(key for key in b if key.startswith("test_"))
            own = " (its own source model)" if b.get("nearest_is_source") else ""
            items.append(f"- {kind}, best on val for {METHOD_TITLES.get(m, m)}: `{b['id']}` lies at "
                         f"{_f(b['relative'])} (distance {_f(b['distance'], 2)}) from its nearest zoo model "
                         f"`{b['nearest']}`{own}, so it is {word} by this threshold; error IoU with it "
                         f"{_f(b['iou'], 2) or 'not computable'}; test {metric.removeprefix('test_')} "
                         f"{_f(b[metric])}.")
    return out + items


# --- the study side by side ---------------------------------------------------------------------------------------

def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def our_best(ev: dict, tables: Path, variants) -> list[dict]:
    """Per translation variant and method, the best-on-val generated model (metrics/evaluate.json) with its test
    accuracy, precision, recall, entropy, purity (its row of reports/tables/study_<method>_<variant>.csv)."""
    out = []
    for v in variants:
        for m in STUDY_METHODS:
            best = ev.get(f"generated-{v}", {}).get(m, {}).get("best_on_val")
            row = next((r for r in _read_csv(tables / f"study_{m}_{v}.csv") if r.get("Model") == best), None)
            if best and row:
                out.append({"source": f"ours, {v} translation", "method": m, "id": best,
                            "metrics": {k: float(row[k.capitalize()]) for k in STUDY_METRICS}})
    return out


def side_by_side(study: StudyReference, ours: list[dict], y_test: np.ndarray) -> list[dict]:
    """The study's best models beside ours, one row per (source, method), under the same definitions
    (core.metrics): accuracy with its chance rate (the all-'other' rate of that test set), precision, recall,
    entropy (bits), purity; which split chose the model. Numbers the study file leaves out stay blank."""
    rows = []
    for m in STUDY_METHODS:
        s = study.methods.get(m)
        if s is not None:
            rows.append({"Source": "Patel & Jain 2024 (reported)", "Clustering": METHOD_TITLES[m], "Model": "",
                         "Chosen on": study.selection,
                         "Test images": f"~{study.test_set.images}" if study.test_set.images_approximate
                         else str(study.test_set.images),
                         "Accuracy": _f(s.accuracy.value if s.accuracy else None),
                         "Chance (all 'other')": _f(study.test_set.all_other_rate.value),
                         **{k.capitalize(): _f(getattr(s, k).value if getattr(s, k) else None)
                            for k in STUDY_METRICS[1:]}})
        for o in (o for o in ours if o["method"] == m):
            rows.append({"Source": o["source"], "Clustering": METHOD_TITLES[m], "Model": f"`{o['id']}`",
                         "Chosen on": "val", "Test images": str(len(y_test)),
                         "Accuracy": _f(o["metrics"]["accuracy"]), "Chance (all 'other')": _f(all_other_rate(y_test)),
                         **{k.capitalize(): _f(o["metrics"][k]) for k in STUDY_METRICS[1:]}})
    return rows


def study_text(study: StudyReference) -> list[str]:
    """What the reader should know about the study's numbers: its selection on test, its chance rate, and the
    values in its tables that cannot hold for their own definitions (each with why)."""
    rate = study.test_set.all_other_rate.value
    out = [f"The study chose each method's best model on its own test set (~{study.test_set.images} images), by "
           f"test accuracy; calling every image 'other' already scores {rate:.3f} there, so its accuracies "
           "(numbers with their sources in `references/patel_jain_2024.yaml`) are best read as distances above "
           "that rate, and as optimistic: a maximum over many models on the set that scores them. Ours are chosen "
           "on val and scored once on test, and the accuracy maps clusters to classes with the val labels.", ""]
    if study.inconsistencies:
        out += ["Values in the study's tables that cannot hold for their own definitions:", ""]
        out += [f"- {i.claim}: {' '.join(i.why.split())}. Source: {i.source}." for i in study.inconsistencies]
    return out
