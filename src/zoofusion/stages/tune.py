"""Stage `tune`: Optuna searches over the clustering protocol's knobs, on val only.

One study per clustering method (`tune.methods`) and per candidate. Candidates are the top `tune.top_models`
generated models of each generated kind (one per translation variant, data/evaluate/selected.json order) and, per
method, the best-on-val model of each baseline kind
(`evaluate.rank` over data/evaluate/candidates.csv by `val/<method>/<criterion of evaluate.select_metric>`, the
same choice evaluate's headline and baseline table make). Every study gets the same budget of `tune.n_trials`
trials, and its first trial is the untuned configuration from `evaluate.clustering` (when it lies in the search
space), so "tuned" is never worse than "default" on the objective.

Search space (:func:`suggest`): standardize (true|false), UMAP n_neighbors (int 5..50, capped at n_val - 1),
min_dist (0..0.99), n_components (int 2..10); KMeans k (2|3); DBSCAN eps (0.1..5, log), min_samples (int 2..15);
One-class SVM nu (0.01..0.5, log) and gamma ("scale" or a float 1e-3..10, log). UMAP metric, KMeans n_init and
the SVM kernel stay as in `evaluate.clustering`.

Honesty, val only: the stage never loads the test split. Each trial standardises and embeds the val features with
one UMAP fitted on val alone (labels unused), then scores the method on val; the objective is the val metric
`tune.objective`. KMeans and DBSCAN are scored as the protocol does (majority mapping on the points scored).
The One-class SVM is *trained* on black cats, so scoring it on the val positives it was fitted on would be an
in-sample number; instead it is cross-validated (:func:`ocsvm_cv_scores`): val is split into `OCSVM_FOLDS` seeded
folds, stratified by label; for each fold an SVM is fitted on the positives of the other folds and predicts every
point of the held-out fold (its positives and negatives). The pooled out-of-fold predictions cover each val point
exactly once, with val's class balance, and no prediction comes from an SVM that saw that point. (Each SVM sees
2/3 of the positives, so the estimate is slightly pessimistic; the UMAP it works in was fitted on all of val,
unsupervised, as the protocol's UMAP is fitted on val and test.) Its metrics are keyed `val_cv/ocsvm/<metric>`.

Determinism: samplers are seeded from `seed` per study (`derive_seed`), UMAP and KMeans use a fixed seed derived
from `seed`, studies run whole inside one process each (trials in order, n_jobs=1), and ties between trials go to
the earliest, so the same params give the same trials and best params whatever the number of worker processes.

Outputs: data/tune/best_params.json (per method and candidate: best params, best val value, n_trials; plus each
method's `generated` entry: per generated kind, its tuned model with the best val value), metrics/tune.json (per
method: the best val objective of each generated kind's model vs the tuned best-on-val model of each baseline
kind), Optuna studies
`zoofusion/<method>/<candidate>` in `tune.storage`, and MLflow experiment `tuning` (a parent run per study, one
nested child run per trial). The `tuned` stage then scores the best params on test.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from zoofusion.cli import stage_main
from zoofusion.config import VARIANTS, Params, TuneParams
from zoofusion.core.candidates import BASELINE_KINDS, is_generated, rank
from zoofusion.io import atomic_dir, load_npz, write_json
from zoofusion.tracking import dataset_inputs, run_tags, setup_mlflow
from zoofusion.tuning import (
    EVALUATED,
    GENERATED,
    KERNELS,
    VAL,
    Study,
    TuneError,
    candidate_features,
    check_storage,
    display_url,
    metric_prefix,
    read_candidates,
    tune_all,
    validate_val,
)

log = logging.getLogger(__name__)

OUT = Path("data/tune")
METRICS_FILE = Path("metrics/tune.json")
EXPERIMENT = "tuning"


def choose_studies(rows: list[dict], selected: dict[str, list[str]], tp: TuneParams,
                   select_metric: str) -> list[Study]:
    """Per method: each generated kind's top models (selected.json order), then each baseline kind's best-on-val
    model. `selected` maps a generated kind to its models selected on val."""
    by_id = {r["id"]: r for r in rows}
    gen: list[tuple[str, str]] = []
    for kind, ids in selected.items():
        if len(ids) < tp.top_models:
            raise TuneError(f"tune.top_models is {tp.top_models} but {EVALUATED / 'selected.json'} lists only "
                            f"{len(ids)} {kind} models; lower tune.top_models or raise evaluate.n_selected")
        for cid in ids[:tp.top_models]:
            if by_id.get(cid, {}).get("kind") != kind or not is_generated(kind):
                raise TuneError(f"selected model {cid!r} is not a {kind} model in candidates.csv; "
                                "rerun `dvc repro evaluate`")
            gen.append((cid, kind))
    crit = select_metric.split("/")[2]
    out = []
    for method in tp.methods:
        key = f"val/{method}/{crit}"
        if rows and key not in rows[0]["metrics"]:
            raise TuneError(f"candidates.csv has no column {key!r}; rerun `dvc repro evaluate`")
        out += [Study(method, cid, kind) for cid, kind in gen]
        for kind in BASELINE_KINDS:
            group = [r for r in rows if r["kind"] == kind]
            if group:
                out.append(Study(method, rank(group, key)[0]["id"], kind))
    return out


def summarize(results: list[dict], tp: TuneParams, seed: int, selected: dict[str, list[str]]) -> tuple[dict, dict]:
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
        for kind, order in selected.items():
            gen = [r for r in rs if r["kind"] == kind]
            if gen:
                tops[kind] = min(gen, key=lambda r: (-r["best_value"], order.index(r["candidate"])))
        methods[method] = {"objective_key": f"{metric_prefix(method)}/{tp.objective}",
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
    best = {"objective": tp.objective, "sampler": tp.sampler, "n_trials": tp.n_trials, "seed": seed,
            "storage": display_url(tp.storage), "methods": methods}
    return best, metrics


class MlflowLogger:
    """A parent run per study and a nested child run per trial, logged directly with MlflowClient.log_batch
    (3 tracking calls per trial: create, log_batch, terminate)."""

    def __init__(self, tp: TuneParams, seed: int, tags: dict[str, str]):
        self.mlflow = setup_mlflow(EXPERIMENT)
        self.client = self.mlflow.MlflowClient()
        self.exp_id = self.mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
        self.tp, self.seed, self.tags = tp, seed, tags
        self.datasets = dataset_inputs({VAL: "val"})  # tuning sees val only

    def __call__(self, r: dict) -> None:
        from mlflow.entities import Metric, Param

        tp, c = self.tp, self.client
        first, last = r["trials"][0], r["trials"][-1]
        parent = c.create_run(self.exp_id, run_name=r["study"], start_time=first["start_ms"], tags={
            **self.tags, "method": r["method"], "candidate": r["candidate"], "kind": r["kind"],
            "optuna_study": r["study"], "optuna_storage": display_url(tp.storage)}).info.run_id
        c.log_inputs(parent, datasets=self.datasets)
        best_so_far, hist = -np.inf, []
        for t in r["trials"]:
            best_so_far = max(best_so_far, t["value"])
            hist += [Metric("trial_value", t["value"], t["end_ms"], t["number"]),
                     Metric("best_so_far", best_so_far, t["end_ms"], t["number"])]
        metrics = [Metric("best_value", r["best_value"], last["end_ms"], 0), *hist]
        if r["untuned_value"] is not None:
            metrics.append(Metric("untuned_value", r["untuned_value"], last["end_ms"], 0))
        params = {"method": r["method"], "candidate": r["candidate"], "kind": r["kind"], "objective": tp.objective,
                  "n_trials": tp.n_trials, "sampler": tp.sampler, "seed": self.seed, "best_trial": r["best_trial"],
                  **{f"best.{k}": v for k, v in r["best_params"].items()}}
        c.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()])
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            c.log_batch(parent, metrics=metrics[i:i + 1000])
        prefix = metric_prefix(r["method"])
        for t in r["trials"]:
            child = c.create_run(self.exp_id, run_name=f"trial-{t['number']}", start_time=t["start_ms"], tags={
                "mlflow.parentRunId": parent, "dvc_stage": "tune", "optuna_study": r["study"],
                "trial": str(t["number"]), "untuned": str(t["untuned"]).lower()}).info.run_id
            c.log_batch(child, metrics=[Metric("objective", t["value"], t["end_ms"], 0),
                                        *[Metric(f"{prefix}/{k}", float(v), t["end_ms"], 0)
                                          for k, v in t["metrics"].items()]],
                        params=[Param(k, str(v)) for k, v in t["params"].items()])
            c.set_terminated(child, "FINISHED", end_time=t["end_ms"])
        c.set_terminated(parent, "FINISHED", end_time=last["end_ms"])


def run(params: Params) -> dict:
    tp, e = params.tune, params.evaluate
    t0 = time.perf_counter()
    check_storage(tp.storage)  # before anything slow
    inputs = [*(GENERATED / v / "models.pt" for v in VARIANTS), KERNELS / "black.pt", KERNELS / "cat.pt", VAL,
              EVALUATED / "candidates.csv", EVALUATED / "selected.json"]
    for f in inputs:
        if not f.is_file():
            how = "dvc repro " + {"generated": f"generate@{f.parent.name}", "kernels": "kernels",
                                  "prepared": "data"}.get(f.parts[1], "evaluate")
            raise FileNotFoundError(f"{f}: missing; run `{how}` first")
    rows = read_candidates(EVALUATED / "candidates.csv")
    selected = json.loads((EVALUATED / "selected.json").read_text())["by_kind"]
    studies = choose_studies(rows, selected, tp, e.select_metric)
    val = load_npz(VAL)  # the test split is never loaded here
    validate_val({}, val["labels"])
    feats = candidate_features(params, [s.candidate for s in studies], val["images"])
    log.info("tune: %d studies (%s x %d candidates) x %d trials, objective val %s, sampler %s",
             len(studies), "/".join(tp.methods), len(studies) // len(tp.methods), tp.n_trials, tp.objective,
             tp.sampler)
    logger = MlflowLogger(tp, params.seed, run_tags("tune", inputs))

    def on_result(r: dict) -> None:
        log.info("tune %s (%s): best %s %.4f at trial %d (untuned %s) in %.1fs", r["study"], r["kind"],
                 f"{metric_prefix(r['method'])}/{tp.objective}", r["best_value"], r["best_trial"],
                 "n/a" if r["untuned_value"] is None else f"{r['untuned_value']:.4f}", r["seconds"])
        logger(r)

    workers = tp.workers
    results = tune_all(studies, feats, val["labels"], tp, e.clustering, params.seed, workers, on_result)
    best, metrics = summarize(results, tp, params.seed, selected)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_dir(OUT) as out:
        write_json(out / "best_params.json", best)
    write_json(METRICS_FILE, metrics)
    log.info("tune: %d studies in %.1fs; generated kinds vs best baseline (val %s): %s", len(results),
             metrics["seconds"], tp.objective,
             ", ".join(f"{m} " + " ".join(f"{k} {metrics[m][k]:.4f}" for k in selected if k in metrics[m])
                       + f" vs {metrics[m].get('best_baseline', 'n/a')}" for m in tp.methods))
    return best


def main(argv: list[str] | None = None) -> None:
    stage_main("tune", lambda args, params: run(params), argv,
               description="Tune the clustering protocol with Optuna on val only.", errors=(TuneError,))


if __name__ == "__main__":
    main()
