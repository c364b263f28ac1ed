"""Stage `evaluate`: do generated models separate black cats? The study's protocol, with baselines.

Every variant's generated models (kinds `generated-<variant>`, ids `<variant>/<source>`), every baseline and the
controls (core.candidates.kinds_of), each kind with the budget `evaluate.budget` (fewer only where a kind has fewer
members), through the identical protocol; selection on val only (each method's verdict metric, core.selection; `evaluate.select_method`
names the method whose choice is selected.json's list and the champion), numbers from test. The steps, in order:
the candidate pool (steps/candidates.py -> data/evaluate/candidates.pt), the protocol's scores (steps/scores.py ->
data/evaluate/scores.npz, candidates.csv), selection and verdict (steps/evaluate.py `judge` -> verdict.json,
selected.json), and rendering (`render` -> reports/tables/, reports/figures/, metrics/evaluate.json).
Here: the MLflow experiment `generated-models`, a parent run per evaluation and a child run per candidate, and the
selected models as registered pyfunc models (alias `champion`: selected.json's `champion`, the best on val over
every generated kind).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS, VARIANTS, Params
from zoofusion.core.candidates import generated_kind, kinds_of
from zoofusion.core.verdict import Comparison
from zoofusion.executor import check_backend
from zoofusion.io import load_npz
from zoofusion.steps.candidates import build_pool
from zoofusion.steps.evaluate import judge, render
from zoofusion.steps.scores import best_on_val_ids, score
from zoofusion.registry import log_candidates, log_pyfunc, register_champion, verdict_metrics
from zoofusion.tracking import BatchLogger, dataset_inputs, run_tags, setup_mlflow, stage_run

log = logging.getLogger(__name__)
GENERATED = layout.GENERATED
CONTROL = layout.CONTROL / "weights.pt"
KERNELS = layout.KERNELS
VAL = layout.VAL
TEST = layout.TEST
OUT = layout.EVALUATE
TABLES, FIGURES = layout.TABLES, layout.FIGURES
METRICS_FILE = layout.METRICS / "evaluate.json"


def kinds(params: Params) -> tuple[str, ...]:
    """Every kind of this evaluation (the noise kinds follow evaluate.baselines.noise_sigmas)."""
    return kinds_of(VARIANTS, params.evaluate.baselines.noise_sigmas)


def run(params: Params) -> dict:
    e = params.evaluate
    check_backend(params.executor.backend, params.executor.address)  # a Ray cluster that answers, before any work
    for f, how in ((VAL, "dvc repro data"), (TEST, "dvc repro testset")):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `{how}` first")
    t0 = time.perf_counter()
    pool = build_pool({v: GENERATED / v / "models.pt" for v in VARIANTS},
                      {d: KERNELS / "raw" / f"{d}.pt" for d in DOMAINS}, OUT / "candidates.pt", e.budget,
                      params.seed, e.baselines.noise_sigmas, e.baselines.average_k,
                      {v: GENERATED / v / "untrained.pt" for v in VARIANTS}, CONTROL)
    t_pool = time.perf_counter() - t0
    rows, seconds = score(pool, VAL, TEST, OUT / "scores.npz", OUT / "candidates.csv", e.clustering, params.seed,
                          e.feature_batch, params.data.dark_luminance, e.workers, params.executor.backend,
                          params.executor.address, e.umap_seeds)
    j = judge(OUT / "scores.npz", TEST, OUT / "verdict.json", OUT / "selected.json", e, params.seed, kinds(params),
              val=VAL, vp=params.verdict)
    # a variant's figures show the harvest it translated, in the channel order it saw
    sources = {generated_kind(v): {letter: KERNELS / ("aligned" if params.translation.variant(v).align else "raw")
                                   / f"{d}.pt" for letter, d in (("A", "black"), ("B", "cat"))} for v in VARIANTS}
    figs, summary = render(j, pool, TEST, sources, TABLES, FIGURES, METRICS_FILE, e, params.seed, params.data.dark_luminance,
                  VARIANTS, kinds(params), {**seconds, "features": seconds["features"] + t_pool})
    timings = {"seconds_features": seconds["features"] + t_pool, "seconds_protocol": seconds["protocol"],
               "seconds_bootstrap": j.seconds}  # to MLflow, not into metrics/evaluate.json
    took = {r["id"]: r["seconds"] for r in rows}  # each candidate's protocol seconds: its MLflow run only
    log_runs(params, [{**r, "seconds": took[r["id"]]} for r in j.rows], {c.id: c for c in pool}, [r["id"] for r in j.selected], figs,
             load_npz(TEST)["images"][:4], j.comparisons, j.summary, timings, j.champion)
    log.info("evaluate: %d candidates in %.1fs; selected on val: %s", len(rows), time.perf_counter() - t0,
             ", ".join(sorted(r["id"] for r in j.selected)))
    return summary


def log_runs(params: Params, rows: list[dict], by_id: dict, selected: list[str], figs: dict, example: np.ndarray,
             comparisons: list[Comparison], ev_verdict: dict, timings: dict[str, float], champion: str) -> None:
    """One MLflow child run per candidate under a parent run, so the UI's compare view lines them up: logged in bulk
    (registry.log_candidates), then each selected model's pyfunc into its candidate's run, and the champion."""
    import tempfile

    from mlflow.entities import Metric

    mlflow = setup_mlflow("generated-models")
    inputs = {**{GENERATED / v / f: "train" for v in VARIANTS for f in ("models.pt", "untrained.pt")},
              KERNELS / "raw" / "black.pt": "train", KERNELS / "raw" / "cat.pt": "train", CONTROL: "train", VAL: "val",
              TEST: "test"}
    tags = run_tags("evaluate", list(inputs))
    datasets = dataset_inputs(inputs)
    client = mlflow.MlflowClient()
    sel_ids = set(selected)
    best = {(k, m): i for k, m, i in best_on_val_ids(rows, params.seed)}  # each kind's pick on val, per method
    versions: dict[str, str] = {}
    with stage_run(mlflow, "evaluate", "evaluate", list(inputs)) as parent:
        client.log_inputs(parent.info.run_id, datasets=datasets)
        pp = params.verdict.primary
        mlflow.log_params({"primary_metric": pp.metric, "primary_method": pp.method,
                           "primary_generated": pp.generated, "primary_comparator": pp.comparator,
                           "secondary_family": params.verdict.secondary_family, "alpha": params.verdict.alpha,
                           "power": params.verdict.power})
        mlflow.log_params({"select_method": params.evaluate.select_method, "n_candidates": len(rows),
                           "umap_seeds": params.evaluate.umap_seeds,
                           "seed": params.seed, "test_manifest": params.testset.manifest or "built split",
                           "budget_per_kind": max(sum(r["kind"] == k for r in rows) for k in kinds(params)),
                           "n_boot": params.evaluate.n_boot, "variants": ",".join(VARIANTS)})
        now = int(time.time() * 1000)  # the verdict's intervals and the primary endpoint (registry.verdict_metrics)
        client.log_batch(parent.info.run_id, metrics=[
            Metric(k, v, now, 0) for k, v in {**verdict_metrics(comparisons, ev_verdict["primary"]), **timings}.items()])
        pr = ev_verdict["primary"]
        mlflow.set_tags({"primary_endpoint": f"{pr['method']} {pr['metric']}: best-on-val {pr['generated']['id']} "
                                             f"minus best-on-val {pr['comparator']['id']}",
                         "primary_outcome": pr["outcome"], "primary_declared_in": pr["declared_in"] or "uncommitted",
                         "primary_sources": ",".join(pr["sources"])})
        ids = dict(zip((r["id"] for r in rows), log_candidates(  # in bulk; figures under `figures`
            BatchLogger(mlflow, parent.info.run_id, tags, datasets[-2:]), rows, sel_ids, best, figs,
            params.evaluate.clustering.umap_kwargs())))
        with tempfile.TemporaryDirectory() as tmp:
            for cid in (r["id"] for r in rows if r["id"] in sel_ids and by_id[r["id"]].weights is not None):
                with mlflow.start_run(run_id=ids[cid], nested=True):  # the model goes into the candidate's run
                    versions[cid] = str(log_pyfunc(mlflow, by_id[cid], example, Path(tmp)).version)
        if versions:
            register_champion(client, versions, champion if champion in versions else selected[0], ev_verdict)


def main(argv: list[str] | None = None) -> None:
    stage_main("evaluate", lambda args, params: run(params), argv,
               description="Evaluate generated models and baselines with the study's protocol.")


if __name__ == "__main__":
    main()
