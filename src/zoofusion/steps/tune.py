"""Steps `tune` and `tuned`: Optuna searches over the clustering protocol's knobs on val only, then the tuned
params scored once on test.

tune: one study per clustering method (`tune.methods`) and per candidate. Candidates are, per method, the top
`tune.top_models` generated models of each generated kind on val by that method's verdict metric (selected.json
`by_method`) and the best-on-val model of each baseline kind (`core.selection.rank_rows` over candidates.csv: the
same choice evaluate's headline, baseline table and verdict make, ties in the same seeded random order). Every
study gets `tune.n_trials` trials, the first being the untuned configuration from `evaluate.clustering` (when it
lies in the search space), so "tuned" is never worse than "default" on the objective. The search space and the
val-only objective are in `zoofusion.tuning`.

Honesty, val only: `tune` never reads the test split. Each trial standardises and embeds the val features with one
UMAP fitted on val alone (labels unused), as evaluate does, then scores the method on val; the objective is the
method's verdict metric on val (`tuning.objective_of`: AUROC for KMeans and the One-class SVM, ARI for DBSCAN), the
metric selection and the verdict read. The One-class SVM is cross-validated on val (`tuning.ocsvm_cv_scores`; keys
`val_cv/ocsvm/...`). Features come from evaluate's saved candidates (candidates.pt): a forward pass each, no pool
rebuilt.

Determinism: samplers are seeded from `seed` per study, UMAP and KMeans use a fixed seed derived from `seed`,
studies run whole inside one process each, and ties between trials go to the earliest, so the same params give the
same trials and best params whatever the number of worker processes.

tuned: each tuned configuration (each method's tuned candidates) runs through the full protocol once, as evaluate
runs it, and is scored on test beside evaluate's untuned number. Nothing is chosen there.

Knows nothing of DVC or MLflow: `on_result` lets the stage log each study as it finishes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoofusion.config import ClusteringParams, TuneParams
from zoofusion.core.candidates import is_generated
from zoofusion.core.selection import rank_rows, select_key
from zoofusion.io import atomic_path, load_npz, write_json
from zoofusion.steps.candidates import pool_features
from zoofusion.steps.scores import read_candidates
from zoofusion.tuning import (Study, TuneError, display_url, metric_prefix, objective_of, tune_all, tuned_evaluation,
                              validate_val)


def _need(*paths: tuple[Path, str]) -> None:
    for f, how in paths:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: missing; run `{how}` first")


def choose_studies(rows: list[dict], by_method: dict[str, dict[str, list[str]]], tp: TuneParams,
                   seed: int) -> list[Study]:
    """Per method: each generated kind's top models on val by the method's verdict metric (selected.json
    `by_method` order), then each baseline kind's best-on-val model (core.selection, seeded ties)."""
    by_id = {r["id"]: r for r in rows}
    out = []
    for method in tp.methods:
        key = select_key(method)
        if rows and key not in rows[0]["metrics"]:
            raise TuneError(f"candidates.csv has no column {key!r}; rerun `dvc repro evaluate`")
        if method not in by_method:
            raise TuneError(f"selected.json has no selection for {method!r}; rerun `dvc repro evaluate`")
        for kind, ids in by_method[method].items():
            if len(ids) < tp.top_models:
                raise TuneError(f"tune.top_models is {tp.top_models} but selected.json lists only "
                                f"{len(ids)} {kind} models for {method}; lower tune.top_models or raise "
                                "evaluate.n_selected")
            for cid in ids[:tp.top_models]:
                if by_id.get(cid, {}).get("kind") != kind or not is_generated(kind):
                    raise TuneError(f"selected model {cid!r} is not a {kind} model in candidates.csv; "
                                    "rerun `dvc repro evaluate`")
                out.append(Study(method, cid, kind))
        for kind in dict.fromkeys(r["kind"] for r in rows if not is_generated(r["kind"])):  # every baseline kind
            group = [r for r in rows if r["kind"] == kind]
            if group:
                out.append(Study(method, rank_rows(group, method, seed)[0]["id"], kind))
    return out


def summarize(results: list[dict], tp: TuneParams, seed: int,
              by_method: dict[str, dict[str, list[str]]]) -> tuple[dict, dict]:
    """(best_params.json, metrics/tune.json) from the study results."""
    methods: dict[str, dict] = {}
    metrics: dict[str, dict] = {}
    for method in tp.methods:
        rs = [r for r in results if r["method"] == method]
        # n_clusters of the best trial: the majority mapping is fitted on the points it scores, so many small
        # clusters raise accuracy/purity by themselves; the count shows when a tuned value owes much to that
        entries = {r["candidate"]: {"kind": r["kind"], "params": r["best_params"], "value": r["best_value"],
                                    "untuned_value": r["untuned_value"], "n_trials": r["n_trials"],
                                    "best_trial": r["best_trial"], "study": r["study"],
                                    "n_clusters": int(r["best_metrics"]["n_clusters"])}
                   for r in rs}
        # per generated kind, the model chosen on val: best tuned value, selected.json order on ties
        tops = {}
        for kind, order in by_method.get(method, {}).items():
            gen = [r for r in rs if r["kind"] == kind]
            if gen:
                tops[kind] = min(gen, key=lambda r: (-r["best_value"], order.index(r["candidate"])))
        methods[method] = {"objective_key": f"{metric_prefix(method)}/{objective_of(method)}",
                           "generated": {kind: {"candidate": t["candidate"], **entries[t["candidate"]]}
                                         for kind, t in tops.items()},
                           "candidates": entries}
        m: dict = {}
        base = {r["kind"]: r["best_value"] for r in rs if not is_generated(r["kind"])}
        for kind, top in tops.items():
            m[kind] = round(top["best_value"], 4)
            if top["untuned_value"] is not None:
                m[f"{kind}_untuned"] = round(top["untuned_value"], 4)
            if base:
                m[f"{kind}_minus_best_baseline"] = round(top["best_value"] - max(base.values()), 4)
        m.update({k: round(v, 4) for k, v in base.items()})
        if base:
            m["best_baseline"] = round(max(base.values()), 4)
        metrics[method] = m
    best = {"objective": {m: objective_of(m) for m in tp.methods}, "sampler": tp.sampler, "n_trials": tp.n_trials, "seed": seed,
            "storage": display_url(tp.storage), "methods": methods}
    return best, metrics


def _features(pool: Path, ids: list[str], images: np.ndarray, batch: int, dark: int) -> dict[str, np.ndarray]:
    try:
        return pool_features(pool, ids, images, batch, dark)
    except ValueError as e:  # an id of candidates.csv that candidates.pt lacks: evaluate's outputs disagree
        raise TuneError(str(e)) from None


def tune(pool: Path, candidates_csv: Path, selected_json: Path, val: Path, out_best: Path, metrics_file: Path,
         tp: TuneParams, c: ClusteringParams, seed: int, feature_batch: int, dark_luminance: int,
         on_start: Callable[[list[Study]], None] | None = None,
         on_result: Callable[[dict], None] | None = None) -> tuple[dict, dict]:
    """Every study on val features of the saved candidates; writes best_params.json and the tune metrics.
    Returns (best params doc, metrics). `on_start` sees the studies before the first trial."""
    _need((pool, "dvc repro evaluate"), (candidates_csv, "dvc repro evaluate"), (selected_json, "dvc repro evaluate"),
          (val, "dvc repro data"))
    rows = read_candidates(candidates_csv)
    selected = json.loads(Path(selected_json).read_text())
    if "by_method" not in selected:
        raise TuneError(f"{selected_json} has no by_method (written by an older evaluate); rerun `dvc repro evaluate`")
    studies = choose_studies(rows, selected["by_method"], tp, seed)
    v = load_npz(val)  # the test split is never loaded here
    validate_val({}, v["labels"], c.ocsvm_val_folds)
    feats = _features(pool, [s.candidate for s in studies], v["images"], feature_batch, dark_luminance)
    if on_start is not None:
        on_start(studies)
    results = tune_all(studies, feats, v["labels"], tp, c, seed, tp.workers, on_result)
    best, metrics = summarize(results, tp, seed, selected["by_method"])
    write_json(out_best, best)
    write_json(metrics_file, metrics)
    return best, metrics


def tuned_rows(best_json: Path, pool: Path, candidates_csv: Path, val: Path, test: Path, c: ClusteringParams,
               seed: int, feature_batch: int, dark_luminance: int) -> list[dict]:
    """Untuned vs tuned test scores of each method's tuned candidates.

    Tuning saw val only; here the tuned params go through the full protocol once more, scored on test.
    The untuned numbers are evaluate's (same protocol, params.yaml defaults).
    """
    _need((best_json, "dvc repro tune"), (pool, "dvc repro evaluate"), (candidates_csv, "dvc repro evaluate"),
          (val, "dvc repro data"), (test, "dvc repro testset"))
    doc = json.loads(Path(best_json).read_text())
    best = doc["methods"]
    v, t = load_npz(val), load_npz(test)
    rows = {r["id"]: r for r in read_candidates(candidates_csv)}
    ids = sorted({cid for m in best.values() for cid in m["candidates"]})
    n_val = len(v["labels"])
    feats = _features(pool, ids, np.concatenate([v["images"], t["images"]]), feature_batch, dark_luminance)
    out = []
    for method, entry in sorted(best.items()):
        for cid, b in sorted(entry["candidates"].items(), key=lambda kv: (not is_generated(kv[1]["kind"]), kv[0])):
            f = feats[cid]
            m = tuned_evaluation(c, seed, b, method, f[:n_val], v["labels"], f[n_val:], t["labels"])
            before = rows[cid]["metrics"]
            # balanced accuracy beside accuracy: at 1 black cat in 10, calling everything "other" scores accuracy 0.9
            out.append({"Clustering": method, "Model": cid, "Kind": b["kind"],
                        "Val verdict metric": objective_of(method),
                        "Val value (tuned)": round(b["value"], 4),
                        "Test balanced accuracy untuned": round(before[f"test/{method}/balanced_accuracy"], 4),
                        "Test balanced accuracy tuned": round(m[f"test/{method}/balanced_accuracy"], 4),
                        "Test accuracy untuned": round(before[f"test/{method}/accuracy"], 4),
                        "Test accuracy tuned": round(m[f"test/{method}/accuracy"], 4),
                        "Test recall tuned": round(m[f"test/{method}/recall"], 4),
                        "Test clusters tuned": int(m[f"test/{method}/n_clusters"])})
    return out


def tuned(best_json: Path, pool: Path, candidates_csv: Path, val: Path, test: Path, out_csv: Path,
          c: ClusteringParams, seed: int, feature_batch: int, dark_luminance: int) -> list[dict]:
    """:func:`tuned_rows`, written to `out_csv`."""
    rows = tuned_rows(best_json, pool, candidates_csv, val, test, c, seed, feature_batch, dark_luminance)
    with atomic_path(out_csv) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows
