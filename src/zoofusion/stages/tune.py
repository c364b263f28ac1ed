"""Stage `tune`: Optuna searches over the clustering protocol's knobs, on val only (steps/tune.py `tune`).

One study per clustering method and candidate (the top generated models of each variant and each baseline kind's
best on val), features from evaluate's saved candidates (data/evaluate/candidates.pt); the honesty rules, the
search space and the objective are in steps/tune.py and tuning.py. The test split is never read.

Outputs: data/tune/best_params.json (per method and candidate: best params, best val value, n_trials; plus each
method's `generated` entry: per generated kind, its tuned model with the best val value), metrics/tune.json (per
method: the best val objective of each generated kind's model vs the tuned best-on-val model of each baseline
kind), Optuna studies `zoofusion/<method>/<candidate>` in `tune.storage`, and here the MLflow experiment
`tuning` (a parent run per study, one nested child run per trial) and the stage's own run `tune` in `pipeline` (its
params, metrics/tune.json as metrics, its stage_seconds). The `tuned` stage then scores the best params on test.
"""

from __future__ import annotations

import logging
import time

import numpy as np

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import Params, TuneParams
from zoofusion.steps.tune import tune
from zoofusion.tracking import BatchLogger, dataset_inputs, log_stage_run, run_tags, setup_mlflow
from zoofusion.tuning import Study, TuneError, check_storage, display_url, metric_prefix, objective_of, storage_url

log = logging.getLogger(__name__)

EVALUATED = layout.EVALUATE
VAL = layout.VAL
OUT = layout.BEST_PARAMS
METRICS_FILE = layout.METRICS / "tune.json"
EXPERIMENT = "tuning"


def study_logger(tp: TuneParams, seed: int, tags: dict[str, str]):
    """Log one finished study: a run per study with its best and untuned values, a child run per trial."""
    mlflow = setup_mlflow(EXPERIMENT)
    logger = BatchLogger(mlflow, None, tags, experiment_id=mlflow.get_experiment_by_name(EXPERIMENT).experiment_id)
    datasets = dataset_inputs({VAL: "val"})  # tuning sees val only

    def log_study(r: dict) -> None:
        first, last = r["trials"][0], r["trials"][-1]
        best_so_far, metrics = -np.inf, [("best_value", r["best_value"], 0)]
        for t in r["trials"]:
            best_so_far = max(best_so_far, t["value"])
            metrics += [("trial_value", t["value"], t["number"]), ("best_so_far", best_so_far, t["number"])]
        if r["untuned_value"] is not None:
            metrics.append(("untuned_value", r["untuned_value"], 0))
        params = {"method": r["method"], "candidate": r["candidate"], "kind": r["kind"],
                  "objective": objective_of(r["method"]),
                  "n_trials": tp.n_trials, "sampler": tp.sampler, "seed": seed, "best_trial": r["best_trial"],
                  **{f"best.{k}": v for k, v in r["best_params"].items()}}
        parent = logger.child(r["study"], params, metrics, tags={
            "method": r["method"], "candidate": r["candidate"], "kind": r["kind"], "optuna_study": r["study"],
            "optuna_storage": display_url(tp.storage)}, start_ms=first["start_ms"], end_ms=last["end_ms"],
            datasets=datasets)  # a rerun of the same study returns the run logged before: nothing new
        prefix = metric_prefix(r["method"])
        for t in r["trials"]:
            logger.child(f"trial-{t['number']}", t["params"], [("objective", t["value"], 0), *[
                (f"{prefix}/{k}", float(v), 0) for k, v in t["metrics"].items()]],
                tags={"optuna_study": r["study"], "trial": str(t["number"]), "untuned": str(t["untuned"]).lower()},
                start_ms=t["start_ms"], end_ms=t["end_ms"], parent_id=parent)

    return log_study


def run(params: Params) -> dict:
    tp, e = params.tune, params.evaluate
    t0 = time.perf_counter()
    check_storage(storage_url(tp.storage))  # before anything slow
    inputs = [EVALUATED / "candidates.pt", EVALUATED / "candidates.csv", EVALUATED / "selected.json", VAL]
    logger: list = []

    def on_start(studies: list[Study]) -> None:
        log.info("tune: %d studies (%s x %d candidates) x %d trials, objective each method's val verdict metric, "
                 "sampler %s", len(studies), "/".join(tp.methods), len(studies) // len(tp.methods), tp.n_trials,
                 tp.sampler)
        logger.append(study_logger(tp, params.seed, run_tags("tune", inputs)))

    def on_result(r: dict) -> None:
        log.info("tune %s (%s): best %s %.4f at trial %d (untuned %s) in %.1fs", r["study"], r["kind"],
                 f"{metric_prefix(r['method'])}/{objective_of(r['method'])}", r["best_value"], r["best_trial"],
                 "n/a" if r["untuned_value"] is None else f"{r['untuned_value']:.4f}", r["seconds"])
        logger[0](r)

    best, metrics = tune(*inputs[:3], VAL, OUT, METRICS_FILE, tp, e.clustering, params.seed,
                         e.feature_batch, params.data.dark_luminance, on_start, on_result)
    log.info("tune: %d studies in %.1fs; generated kinds vs best baseline (val verdict metric): %s",
             sum(len(m["candidates"]) for m in best["methods"].values()), time.perf_counter() - t0,
             ", ".join(f"{m} " + " ".join(f"{k} {v:.4f}" for k, v in metrics[m].items() if k.startswith("generated-")
                                          and not k.endswith(("_untuned", "_baseline")))
                       + f" vs {metrics[m].get('best_baseline', 'n/a')}" for m in tp.methods))
    log_stage_run("tune", inputs, {"seed": params.seed, **tp.model_dump()}, metrics, [OUT, METRICS_FILE])
    return best


def main(argv: list[str] | None = None) -> None:
    stage_main("tune", lambda args, params: run(params), argv,
               description="Tune the clustering protocol with Optuna on val only.", errors=(TuneError,))


if __name__ == "__main__":
    main()
