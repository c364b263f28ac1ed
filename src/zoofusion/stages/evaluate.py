"""Stage `evaluate`: do generated models separate black cats? The study's protocol, with baselines.

Every candidate (each generated model and each baseline) turns the val and test images into features
(400-d conv outputs; raw pixels for the pixel baseline), then `cluster.evaluate_features` runs the protocol:
standardise -> one UMAP over val+test (labels unused) -> KMeans / DBSCAN on each split, and a One-class SVM
fitted on the val black cats. Metrics are the study's (see `metrics.py`), keyed `<split>/<method>/<metric>`.

Honest selection: generated models are ranked on val only (`evaluate.select_metric`); the numbers reported
for the selected ones, and for every baseline's best-on-val model, come from test.

Generated models of every translation variant (data/generated/<variant>/, kinds `generated-study`,
`generated-aligned`; ids `<variant>/<source>`), each kind with the same budget `evaluate.budget` and the same
source models. Baselines, through the identical protocol: `random` (PyTorch default init, untrained), `zoo-A` /
`zoo-B` (source zoo kernels untranslated, data/kernels/raw), `average` (element-wise mean of a black-zoo and a
cat-zoo model), `aligned` (the same, channels matched first), `concat`, `pixels`, `darkness`. The verdict compares
every generated kind with every baseline kind, and the variants with each other.

Outputs: reports/tables/ (the study's three tables + baselines, CSV and Markdown), reports/figures/ (kernel
grids, cosine heat map, UMAP and t-SNE scatters of the selected models), data/evaluate/ (all candidates'
metrics for tuning and the report), metrics/evaluate.json (headline numbers). MLflow experiment
`generated-models`: a parent run per evaluation and one child run per candidate.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from zoofusion.cli import stage_main
from zoofusion.config import METHODS, METRICS, VARIANTS, ClusteringParams, Params
from zoofusion.console import progress
from zoofusion.core.candidates import (
    CONV_KEYS,
    Candidate,
    all_candidates,
    compute_features,
    generated_kind,
    is_generated,
    kinds_of,
    rank,
    target_domain,
)
from zoofusion.core.cnn import preprocess
from zoofusion.core.seeds import derive_seed
from zoofusion.core.verdict import VERDICT_METRIC, Comparison, answer, compare, sentence
from zoofusion.executor import run_tasks
from zoofusion.io import atomic_dir, load_npz, write_json
from zoofusion.render.figures import kinds_boxplot
from zoofusion.render.kernel_grid import save_figure
from zoofusion.render.tables import KIND_NAMES, METHOD_TITLES, safe, write_table
from zoofusion.tracking import dataset_inputs, run_tags, setup_mlflow

log = logging.getLogger(__name__)
GENERATED = Path("data/generated")
KERNELS = Path("data/kernels/raw")
KINDS = kinds_of(VARIANTS)
VAL = Path("data/prepared/val.npz")
TEST = Path("data/testset/test.npz")
OUT = Path("data/evaluate")
REPORTS = Path("reports")
METRICS_FILE = Path("metrics/evaluate.json")
STUDY_COLUMNS = ["Model", "Generated Filter Domain", "Accuracy", "Precision", "Recall", "Entropy", "Purity"]


def _evaluate_one(task: tuple, shared: None = None) -> dict:
    from zoofusion.core.protocol import evaluate_features

    cid, fv, yv, ft, yt, ukw, mp, seed = task
    t0 = time.perf_counter()
    ev = evaluate_features(fv, yv, ft, yt, **ukw, p=mp, seed=seed)
    return {"id": cid, "metrics": ev.metrics, "emb_val": ev.emb_val, "emb_test": ev.emb_test,
            "clusters": {f"{s}/{m}": v for (s, m), v in ev.clusters.items()},
            "scores": {f"{s}/{m}": v for (s, m), v in ev.scores.items()}, "seconds": time.perf_counter() - t0}


def evaluate_all(cands: list[Candidate], feats: list[np.ndarray], split: int, y_val: np.ndarray,
                 y_test: np.ndarray, c: ClusteringParams, seed: int, workers: int, backend: str = "local",
                 address: str = "") -> list[dict]:
    """Run the protocol for every candidate, in `workers` processes (one UMAP per candidate)."""
    ukw, mp = c.umap_kwargs(), c.method_params()
    tasks = [(cand.id, f[:split], y_val, f[split:], y_test, ukw, mp, derive_seed(seed, "evaluate"))
             for cand, f in zip(cands, feats)]
    bar = progress(total=len(tasks), desc="evaluate", unit="model")
    results = []
    for r in run_tasks(_evaluate_one, tasks, workers, backend=backend, address=address):
        results.append(r)
        bar.update(1)
    bar.close()
    return results


def study_table(rows: list[dict], method: str, selected: set[str]) -> list[dict]:
    """The study's table for one method on test: generated models sorted by test accuracy (as published),
    plus the val accuracy used for selection and whether the model was selected on val."""
    out = []
    for r in rank(rows, f"test/{method}/accuracy"):
        m = r["metrics"]
        out.append({"Model": r["id"], "Generated Filter Domain": f"{target_domain(r['source_domain'])} "
                    f"(from {r['source_domain']})",
                    **{k.capitalize(): round(m[f"test/{method}/{k}"], 4) for k in METRICS},
                    "Val Accuracy": round(m[f"val/{method}/accuracy"], 4),
                    "Selected on val": "yes" if r["id"] in selected else ""})
    return out


def baseline_table(rows: list[dict], select_metric: str) -> list[dict]:
    """Per kind and method: test accuracy distribution, and the test score of the best-on-val model."""
    out = []
    for kind in KINDS:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        for method in METHODS:
            acc = np.array([r["metrics"][f"test/{method}/accuracy"] for r in group])
            best = rank(group, f"val/{method}/{select_metric.split('/')[2]}")[0]
            out.append({"Method": kind, "Clustering": METHOD_TITLES[method], "Models": len(group),
                        "Test accuracy mean": round(float(acc.mean()), 4), "Test accuracy std": round(float(acc.std()), 4),
                        "Test accuracy max": round(float(acc.max()), 4), "Best on val": best["id"],
                        "Its test accuracy": round(best["metrics"][f"test/{method}/accuracy"], 4),
                        "Its test recall": round(best["metrics"][f"test/{method}/recall"], 4),
                        "Its test purity": round(best["metrics"][f"test/{method}/purity"], 4)})
    return out


def kinds_table(rows: list[dict]) -> list[dict]:
    """Per kind and method, the prevalence-free verdict metric on test: how many candidates (the budget), the
    distribution (mean, median, quartiles, spread), and the test value of the kind's best-on-val candidate."""
    out = []
    for method in METHODS:
        key = VERDICT_METRIC[method]
        for kind in KINDS:
            group = [r for r in rows if r["kind"] == kind]
            if not group:
                continue
            v = np.array([r["metrics"][f"test/{method}/{key}"] for r in group], dtype=float)
            best = rank(group, f"val/{method}/{key}")[0]
            ba = np.array([r["metrics"][f"test/{method}/balanced_accuracy"] for r in group], dtype=float)
            out.append({"Clustering": METHOD_TITLES[method], "Metric": key, "Kind": kind, "Candidates": len(group),
                        "Mean": round(float(np.nanmean(v)), 4), "Median": round(float(np.nanmedian(v)), 4),
                        "Q1": round(float(np.nanquantile(v, 0.25)), 4), "Q3": round(float(np.nanquantile(v, 0.75)), 4),
                        "Std": round(float(np.nanstd(v)), 4), "Best on val": best["id"],
                        "Its test value": round(float(best["metrics"][f"test/{method}/{key}"]), 4),
                        "Balanced accuracy mean": round(float(np.nanmean(ba)), 4)})
    return out


def verdict(rows: list[dict], y_test: np.ndarray, n_boot: int, seed: int) -> list[Comparison]:
    """Each generated kind vs each baseline kind (and the variants vs each other), per method, with paired
    bootstrap intervals (see core/verdict.py)."""
    ids, kinds = [r["id"] for r in rows], [r["kind"] for r in rows]
    out = []
    for method in METHODS:
        key = VERDICT_METRIC[method]
        val = np.array([r["metrics"][f"val/{method}/{key}"] for r in rows], dtype=float)
        # continuous black-cat scores where the method has one, the test clustering for DBSCAN (ARI)
        source = "scores" if key == "auroc" else "clusters"
        arrays = np.stack([np.asarray(r[source][f"test/{method}"], dtype=float) for r in rows])
        out += compare(method, y_test, kinds, ids, np.nan_to_num(val, nan=-np.inf), arrays, n_boot,
                       derive_seed(seed, "bootstrap", method))
    return out


def nobody_finds_black_cats(rows: list[dict]) -> bool:
    """True when no candidate's clustering or SVM calls any test black cat a black cat (recall 0 everywhere)."""
    return all(r["metrics"][f"test/{m}/recall"] == 0 for r in rows for m in METHODS)


def figures_for(r: dict, cand: Candidate, source_w: torch.Tensor | None, feats_test: np.ndarray,
                y_test: np.ndarray, folder: Path, seed: int) -> list[Path]:
    from zoofusion.render.figures import cosine_heatmap, tsne_scatter, umap_scatter
    from zoofusion.render.kernel_grid import kernel_grid_figure, save_figure

    name = safe(r["id"])
    paths = []
    if cand.weights is not None:
        panels = {}
        if source_w is not None:
            panels[f"source {cand.source_index}/{cand.source_domain} conv1"] = source_w
        panels[f"{r['id']} conv1"] = cand.weights["conv1.weight"]
        paths.append(save_figure(kernel_grid_figure(panels, title=f"{r['id']}: kernels"), folder / f"{name}_kernels.png"))
    paths.append(save_figure(cosine_heatmap(feats_test, y_test, f"{r['id']}: cosine similarity of test features"),
                             folder / f"{name}_cosine.png"))
    paths.append(save_figure(umap_scatter(r["emb_test"], y_test, r["clusters"]["test/kmeans"],
                                          f"{r['id']}: UMAP of test (true label | KMeans cluster)"),
                             folder / f"{name}_umap.png"))
    paths.append(save_figure(tsne_scatter(feats_test, y_test, derive_seed(seed, "tsne"), f"{r['id']}: t-SNE of test"),
                             folder / f"{name}_tsne.png"))
    return paths


def headline(rows: list[dict], selected: list[dict], select_metric: str) -> dict:
    """metrics/evaluate.json: test scores of the best-on-val model of each kind, and means."""
    out: dict = {"n_generated": sum(is_generated(r["kind"]) for r in rows), "select_metric": select_metric}
    crit = select_metric.split("/")[2]
    for kind in KINDS:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        d: dict = {}
        for method in METHODS:
            best = rank(group, f"val/{method}/{crit}")[0]
            d[method] = {"best_on_val_test_accuracy": round(best["metrics"][f"test/{method}/accuracy"], 4),
                         "mean_test_accuracy": round(float(np.mean([r["metrics"][f"test/{method}/accuracy"]
                                                                     for r in group])), 4)}
        out[kind] = d
    out["selected"] = [{"id": r["id"], "kind": r["kind"], **{k: round(v, 4) for k, v in r["metrics"].items() if k.startswith("test/")
                                          and k.endswith(("accuracy", "recall", "precision"))}} for r in selected]
    return out


REGISTERED_MODEL = "zoofusion-generated"


def log_pyfunc(mlflow, cand: Candidate, example: np.ndarray, tmpdir: Path):
    """The candidate as a pyfunc model from code (zoofusion/serving.py), with a signature, registered."""
    from mlflow.models import infer_signature

    import zoofusion.serving as serving
    from zoofusion.core.cnn import ConvFeatures

    f = tmpdir / f"{safe(cand.id)}.pt"
    torch.save({k: v.clone() for k, v in cand.weights.items()}, f)
    with torch.no_grad():
        out = ConvFeatures(*(cand.weights[k] for k in CONV_KEYS))(preprocess(example)).numpy()
    return mlflow.pyfunc.log_model(name="feature_extractor", python_model=serving.__file__, artifacts={"weights": str(f)},
                                   signature=infer_signature(example, out), input_example=example,
                                   registered_model_name=REGISTERED_MODEL,
                                   pip_requirements=["torch==2.14.1", "numpy", "zoofusion"])


def register_champion(client, versions: dict[str, str], champion: str, ev_verdict: dict) -> None:
    """Alias `champion` = the best-on-val generated model; every version tagged with the verdict it came with:
    the sentence, and the outcome of each comparison of its own variant's kind (`vs_<other kind>_<method>`)."""
    for cid, version in versions.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, "model_id", cid)
        client.set_model_version_tag(REGISTERED_MODEL, version, "verdict", ev_verdict["sentence"][:5000])
        kind = generated_kind(cid.split("/", 1)[0])  # ids are <variant>/<source>
        for c in ev_verdict["comparisons"]:
            if c["generated_kind"] == kind:
                client.set_model_version_tag(REGISTERED_MODEL, version, f"vs_{c['kind']}_{c['method']}", c["outcome"])
    client.set_registered_model_alias(REGISTERED_MODEL, "champion", versions[champion])


def generated_files() -> list[Path]:
    return [GENERATED / v / "models.pt" for v in VARIANTS]


def load_inputs(params: Params):
    for f, how in ((VAL, "dvc repro data"), (TEST, "dvc repro testset"),
                   *((f, f"dvc repro generate@{f.parent.name}") for f in generated_files())):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `{how}` first")
    kernels = {}
    for d in ("black", "cat"):
        f = KERNELS / f"{d}.pt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; run `dvc repro kernels` first")
        kernels[d] = torch.load(f, weights_only=True)
    generated = {v: torch.load(GENERATED / v / "models.pt", weights_only=True) for v in VARIANTS}
    return generated, kernels, load_npz(VAL), load_npz(TEST)


def select(rows: list[dict], select_metric: str, n: int) -> dict[str, list[dict]]:
    """Per generated kind, its top `n` models on val."""
    return {kind: rank([r for r in rows if r["kind"] == kind], select_metric)[:n]
            for kind in KINDS if is_generated(kind) and any(r["kind"] == kind for r in rows)}


def score_all(params: Params, generated: dict, kernels: dict, val: dict, test: dict
              ) -> tuple[list[Candidate], list[np.ndarray], list[dict], float]:
    """Every candidate through the protocol (equal budgets: every kind, each variant's generated models and each
    baseline, gets `evaluate.budget` candidates): (candidates, their val+test features, one row per candidate
    with its metrics, kind and source, seconds spent on features)."""
    e = params.evaluate
    t0 = time.perf_counter()
    cands = all_candidates(generated, kernels, e.budget, params.seed)
    images = np.concatenate([val["images"], test["images"]])
    feats = compute_features(cands, preprocess(images), e.feature_batch, params.data.dark_luminance)
    t_feat = time.perf_counter() - t0
    log.info("evaluate: features of %d candidates on %d images in %.1fs", len(cands), len(images), t_feat)
    results = evaluate_all(cands, feats, len(val["labels"]), val["labels"], test["labels"], e.clustering,
                           params.seed, e.workers, params.executor.backend, params.executor.address)
    by_id = {c.id: c for c in cands}
    rows = [{**r, "kind": by_id[r["id"]].kind, "source_domain": by_id[r["id"]].source_domain,
             "source_index": by_id[r["id"]].source_index} for r in results]
    return cands, feats, rows, t_feat


def verdict_summary(rows: list[dict], by_kind: dict[str, list[dict]], comparisons: list[Comparison],
                    n_boot: int) -> dict:
    """The verdict as metrics/evaluate.json and data/evaluate/verdict.json hold it: the sentence, the answers
    (each generated kind vs random and vs the aligned merge) and every comparison with its intervals."""
    return {"metric": VERDICT_METRIC, "n_boot": n_boot, "level": 0.95,
            "no_method_finds_black_cats": nobody_finds_black_cats(rows),
            "sentence": sentence(comparisons, KIND_NAMES),
            "answers": {f"{gk}-vs-{kind}": answer(comparisons, gk, kind, KIND_NAMES)
                        for gk in by_kind for kind in ("random", "aligned")},
            "comparisons": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.as_dict().items()}
                            for c in comparisons]}


def run(params: Params) -> dict:
    e = params.evaluate
    generated, kernels, val, test = load_inputs(params)
    t0 = time.perf_counter()
    cands, feats, rows, t_feat = score_all(params, generated, kernels, val, test)
    by_id = {c.id: c for c in cands}
    by_kind = select(rows, e.select_metric, e.n_selected)
    selected = [r for group in by_kind.values() for r in group]
    sel_ids = {r["id"] for r in selected}
    t_eval = time.perf_counter() - t0
    comparisons = verdict(rows, test["labels"], e.n_boot, params.seed)
    t_boot = time.perf_counter() - t0 - t_eval

    def source_kernels(kind: str) -> dict:
        """The harvest a variant translated (its sources in the channel order it saw), by domain letter."""
        v = kind.removeprefix("generated-")
        if v in VARIANTS and params.translation.variant(v).align:
            return {letter: torch.load(KERNELS.parent / "aligned" / f"{d}.pt", weights_only=True)
                    for letter, d in (("A", "black"), ("B", "cat"))}
        return {"A": kernels["black"], "B": kernels["cat"]}
    fig_rows = selected + [rank([r for r in rows if r["kind"] == k], e.select_metric)[0]
                           for k in ("random", "zoo-A", "pixels") if any(r["kind"] == k for r in rows)]
    with atomic_dir(REPORTS / "figures") as figdir, atomic_dir(REPORTS / "tables") as tabdir, \
            atomic_dir(OUT) as outdir:
        figs: dict[str, list[Path]] = {}
        for r in fig_rows:
            cand = by_id[r["id"]]
            sw = None
            if is_generated(cand.kind):
                src = source_kernels(cand.kind)
                pos = int(np.flatnonzero(src[cand.source_domain]["model_index"].numpy() == cand.source_index)[0])
                sw = src[cand.source_domain]["conv1.weight"][pos]
            i = [c.id for c in cands].index(r["id"])
            figs[r["id"]] = figures_for(r, cand, sw, feats[i][len(val["labels"]):], test["labels"], figdir, params.seed)
        for v in VARIANTS:
            gen_rows = [r for r in rows if r["kind"] == generated_kind(v)]
            for method in ("kmeans", "ocsvm", "dbscan"):
                write_table(study_table(gen_rows, method, sel_ids), tabdir / f"study_{method}_{v}",
                            f"{METHOD_TITLES[method]} — {v} translation's generated models on test (sorted by test "
                            "accuracy, as the study)")
        write_table(baseline_table(rows, e.select_metric), tabdir / "baselines",
                    "Generated models vs baselines on test (best-on-val model's test score, and the distribution)")
        kinds = kinds_table(rows)
        write_table(kinds, tabdir / "kinds", "Every kind with the same budget: the prevalence-free metric on test")
        for method in METHODS:  # one file per method: DVC plots draw one bar per row, and mixed metrics don't add
            write_table([k for k in kinds if k["Clustering"] == METHOD_TITLES[method]], tabdir / f"kinds_{method}",
                        f"{METHOD_TITLES[method]}: every kind with the same budget ({VERDICT_METRIC[method]} on test)")
        write_table([c.as_dict() for c in comparisons], tabdir / "verdict",
                    "Each generated kind minus each other kind, with 95% paired bootstrap intervals (test)")
        save_figure(kinds_boxplot({m: {kind: [r["metrics"][f"test/{m}/{VERDICT_METRIC[m]}"] for r in rows
                                              if r["kind"] == kind] for kind in KINDS} for m in METHODS},
                                  {m: VERDICT_METRIC[m] for m in METHODS}), figdir / "kinds.png")
        with (outdir / "candidates.csv").open("w", newline="") as f:
            keys = sorted(rows[0]["metrics"])
            w = csv.writer(f)
            w.writerow(["id", "kind", "source_domain", "source_index", *keys])
            for r in rows:
                w.writerow([r["id"], r["kind"], r["source_domain"], r["source_index"],
                            *[f"{r['metrics'][k]:.6f}" for k in keys]])
        (outdir / "selected.json").write_text(json.dumps({
            "select_metric": e.select_metric, "selected": [r["id"] for r in selected],
            "by_kind": {kind: [r["id"] for r in group] for kind, group in by_kind.items()}}, indent=2) + "\n")
        summary = headline(rows, selected, e.select_metric)
        summary["seconds_features"] = round(t_feat, 2)
        summary["seconds_protocol"] = round(t_eval - t_feat, 2)
        summary["seconds_bootstrap"] = round(t_boot, 2)
        summary["n_candidates"] = len(rows)
        summary["budget_per_kind"] = {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS}
        summary["test_images"] = int(len(test["labels"]))
        summary["test_black_cat_share"] = round(float(np.mean(test["labels"])), 4)
        summary["verdict"] = verdict_summary(rows, by_kind, comparisons, e.n_boot)
        (outdir / "verdict.json").write_text(json.dumps(summary["verdict"], indent=2) + "\n")
        log_runs(params, rows, by_id, [r["id"] for r in selected], figs, test["images"][:4], comparisons,
                 summary["verdict"])
    write_json(METRICS_FILE, summary)
    log.info("evaluate: %d candidates in %.1fs; selected on val: %s", len(rows), t_eval, ", ".join(sorted(sel_ids)))
    return summary


def log_runs(params: Params, rows: list[dict], by_id: dict, selected: list[str], figs: dict, example: np.ndarray,
             comparisons: list[Comparison], ev_verdict: dict) -> None:
    """One MLflow child run per candidate under a parent run, so the UI's compare view lines them up."""
    import tempfile

    from mlflow.entities import Metric, Param

    mlflow = setup_mlflow("generated-models")
    inputs = {**{f: "train" for f in generated_files()}, KERNELS / "black.pt": "train", KERNELS / "cat.pt": "train",
              VAL: "val", TEST: "test"}
    tags = run_tags("evaluate", list(inputs))
    datasets = dataset_inputs(inputs)
    client = mlflow.MlflowClient()
    sel_ids = set(selected)
    versions: dict[str, str] = {}
    with mlflow.start_run(run_name="evaluate", tags=tags) as parent:
        client.log_inputs(parent.info.run_id, datasets=datasets)
        mlflow.log_params({"select_metric": params.evaluate.select_metric, "n_candidates": len(rows),
                           "seed": params.seed, "test_manifest": params.testset.manifest or "built split",
                           "budget_per_kind": max(sum(r["kind"] == k for r in rows) for k in KINDS),
                           "n_boot": params.evaluate.n_boot, "variants": ",".join(VARIANTS)})
        # the verdict's intervals: verdict/<method>/<generated kind>-vs-<kind>/{best,mean}_{diff,low,high}
        now = int(time.time() * 1000)
        client.log_batch(parent.info.run_id, metrics=[
            Metric(f"verdict/{c.method}/{c.generated_kind}-vs-{c.kind}/{what}_{part}",
                   float(getattr(c, f"{what}_{part}")), now, 0)
            for c in comparisons for what in ("best", "mean") for part in ("diff", "low", "high")])
        exp = parent.info.experiment_id
        with tempfile.TemporaryDirectory() as tmp:
            for r in rows:
                cand = by_id[r["id"]]
                with mlflow.start_run(run_name=r["id"], nested=True, tags={**tags, "kind": r["kind"],
                                      "selected_on_val": str(r["id"] in sel_ids).lower()}) as child:
                    now = int(time.time() * 1000)
                    client.log_batch(child.info.run_id,
                                     metrics=[Metric(k, float(v), now, 0) for k, v in r["metrics"].items()],
                                     params=[Param(k, str(v)) for k, v in {
                                         "model_id": r["id"], "kind": r["kind"],
                                         "variant": r["kind"].removeprefix("generated-") if is_generated(r["kind"]) else "-",
                                         "source_domain": r["source_domain"] or "-",
                                         "source_index": r["source_index"], **params.evaluate.clustering.umap_kwargs()}.items()])
                    client.log_inputs(child.info.run_id, datasets=datasets[-2:])  # val and test
                    for p in figs.get(r["id"], []):
                        client.log_artifact(child.info.run_id, str(p), "figures")
                    if r["id"] in sel_ids and cand.weights is not None:
                        versions[r["id"]] = str(log_pyfunc(mlflow, cand, example, Path(tmp)).registered_model_version)
        if versions:
            register_champion(client, versions, selected[0], ev_verdict)
        del exp


def main(argv: list[str] | None = None) -> None:
    stage_main("evaluate", lambda args, params: run(params), argv,
               description="Evaluate generated models and baselines with the study's protocol.")


if __name__ == "__main__":
    main()
