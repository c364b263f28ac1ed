"""Steps `verdict` and `render` of evaluate: selection on val, the verdict on test, tables and figures.

`judge` reads the per-candidate metrics and per-image scores `steps.scores` saved, picks each generated kind's
top models on val (per method of every arm — through UMAP, without it, the linear probe: core.protocol
VERDICT_METHODS — by the method's verdict metric, ties in a seeded random order: core.selection),
compares every generated kind with every other kind (paired bootstrap intervals,
`core.verdict`), and writes verdict.json and selected.json. `render` writes the study's tables per variant, the
baselines and kinds tables, the verdict table, the figures of the selected models, and the headline metrics file.
Knows nothing of DVC or MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoofusion.config import METHODS, METRICS, EvaluateParams, VerdictParams
from zoofusion.core.candidates import Candidate, generated_kind, is_generated, rank, target_domain
from zoofusion.core.protocol import ARM, VERDICT_METHODS
from zoofusion.core.selection import rank_rows, select_key
from zoofusion.core.seeds import derive_seed
from zoofusion.core.verdict import VERDICT_METRIC, Comparison, answer, compare, holm_adjust, primary, sentence
from zoofusion.io import atomic_dir, atomic_path, load_npz, write_json
from zoofusion.render.figures import kinds_boxplot
from zoofusion.render.kernel_grid import save_figure
from zoofusion.render.tables import ARM_TITLES, KIND_NAMES, METHOD_TITLES, safe, write_table
from zoofusion.steps.candidates import features
from zoofusion.steps.scores import load_scores, load_seed_runs

STUDY_COLUMNS = ["Model", "Generated Filter Domain", "Accuracy", "Precision", "Recall", "Entropy", "Purity"]


# --- tables and summaries (pure) -------------------------------------------------------------------------------

def study_table(rows: list[dict], method: str, selected: set[str]) -> list[dict]:
    """The study's table for one method on test: generated models sorted by test accuracy (as published; the
    clusters are mapped to classes on val, not on test as the study did), plus the val verdict metric each model
    was selected by and whether it was selected on val for this method."""
    key = select_key(method)
    out = []
    for r in rank(rows, f"test/{method}/accuracy"):
        m = r["metrics"]
        out.append({"Model": r["id"], "Generated Filter Domain": f"{target_domain(r['source_domain'])} "
                    f"(from {r['source_domain']})",
                    **{k.capitalize(): round(m[f"test/{method}/{k}"], 4) for k in METRICS},
                    f"Val {key.split('/')[2].upper()}": round(m[key], 4),
                    "Selected on val": "yes" if r["id"] in selected else ""})
    return out


def baseline_table(rows: list[dict], kinds: Sequence[str], seed: int) -> list[dict]:
    """Per kind and method of every arm: test accuracy distribution, and the test scores of the best-on-val model
    (chosen by the method's verdict metric on val, core.selection)."""
    out = []
    for kind in kinds:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        for method in VERDICT_METHODS:
            metric = VERDICT_METRIC[method]
            acc = np.array([r["metrics"][f"test/{method}/accuracy"] for r in group])
            best = rank_rows(group, method, seed)[0]
            out.append({"Method": kind, "Arm": ARM_TITLES[ARM[method]], "Clustering": METHOD_TITLES[method],
                        "Models": len(group),
                        "Test accuracy mean": round(float(acc.mean()), 4), "Test accuracy std": round(float(acc.std()), 4),
                        "Test accuracy max": round(float(acc.max()), 4), "Best on val": best["id"],
                        "Verdict metric": metric,  # one column set for every method (a CSV has one header)
                        "Its val value": round(best["metrics"][f"val/{method}/{metric}"], 4),
                        "Its test value": round(best["metrics"][f"test/{method}/{metric}"], 4),
                        "Its test accuracy": round(best["metrics"][f"test/{method}/accuracy"], 4),
                        "Its test recall": round(best["metrics"][f"test/{method}/recall"], 4),
                        "Its test purity": round(best["metrics"][f"test/{method}/purity"], 4)})
    return out


# arm -> protocol method: the study's eps and the val eps through UMAP, the val eps on the features (no UMAP)
DBSCAN_ARMS = {"study": "dbscan", "val": "dbscan_val_eps", "direct": "dbscan_direct"}


def degenerate(clusters: np.ndarray) -> bool:
    """A clustering that finds no structure: fewer than two clusters besides noise (all noise, or one cluster)."""
    c = np.asarray(clusters)
    return np.unique(c[c != -1]).size < 2


def dbscan_arms(rows: list[dict], kinds: Sequence[str]) -> list[dict]:
    """Per kind and DBSCAN arm (the study's eps; eps from the val k-distance curve; that eps rule on the features
    without UMAP, where a one-dimensional feature's two clusters are its val threshold's): how many candidates are
    degenerate (:func:`degenerate`) on val and on test, and the median test ARI."""
    out = []
    for arm, method in DBSCAN_ARMS.items():
        for kind in kinds:
            group = [r for r in rows if r["kind"] == kind]
            if not group or f"val/{method}/ari" not in group[0]["metrics"]:
                continue
            eps = [r["metrics"].get(f"val/{method}/eps") for r in group]
            out.append({"Arm": arm, "Kind": kind, "Candidates": len(group),
                        "Degenerate on val": sum(degenerate(r["clusters"][f"val/{method}"]) for r in group),
                        "Degenerate on test": sum(degenerate(r["clusters"][f"test/{method}"]) for r in group),
                        "Median eps": round(float(np.nanmedian(eps)), 4) if None not in eps
                        and not np.isnan(eps).all() else "",
                        "Median test ARI": round(float(np.nanmedian([r["metrics"][f"test/{method}/ari"]
                                                                     for r in group])), 4)})
    return out


def kinds_table(rows: list[dict], kinds: Sequence[str], seed: int) -> list[dict]:
    """Per method of every arm and kind, the verdict metric (AUROC; ARI for DBSCAN) on test: how many candidates
    (the budget), the distribution (mean, median, quartiles, spread), and the test value of the kind's best-on-val
    candidate."""
    out = []
    for method in VERDICT_METHODS:
        key = VERDICT_METRIC[method]
        for kind in kinds:
            group = [r for r in rows if r["kind"] == kind]
            if not group:
                continue
            v = np.array([r["metrics"][f"test/{method}/{key}"] for r in group], dtype=float)
            best = rank_rows(group, method, seed)[0]
            ba = np.array([r["metrics"][f"test/{method}/balanced_accuracy"] for r in group], dtype=float)
            out.append({"Arm": ARM_TITLES[ARM[method]], "Clustering": METHOD_TITLES[method], "Metric": key,
                        "Kind": kind, "Candidates": len(group),
                        "Mean": round(float(np.nanmean(v)), 4), "Median": round(float(np.nanmedian(v)), 4),
                        "Q1": round(float(np.nanquantile(v, 0.25)), 4), "Q3": round(float(np.nanquantile(v, 0.75)), 4),
                        "Std": round(float(np.nanstd(v)), 4), "Best on val": best["id"],
                        "Its test value": round(float(best["metrics"][f"test/{method}/{key}"]), 4),
                        "Balanced accuracy mean": round(float(np.nanmean(ba)), 4)})
    return out


def _arrays(rows: list[dict], split: str, method: str) -> np.ndarray:
    """[n_candidates, n_images] of one split: continuous black-cat scores where the method has one (AUROC), the
    clustering for DBSCAN (ARI)."""
    source = "scores" if VERDICT_METRIC[method] == "auroc" else "clusters"
    return np.stack([np.asarray(r[source][f"{split}/{method}"], dtype=float) for r in rows])


def verdict(rows: list[dict], y_test: np.ndarray, n_boot: int, seed: int, *, family: str,
            alpha: float) -> list[Comparison]:
    """Each generated kind vs each baseline kind (and the variants vs each other), per method of every arm, with
    paired bootstrap intervals and p-values, Holm-adjusted over the secondary `family` (see core/verdict.py): one
    family over all arms, so a claim from any arm keeps the family-wise level."""
    ids, kinds = [r["id"] for r in rows], [r["kind"] for r in rows]
    out = []
    for method in VERDICT_METHODS:
        key = VERDICT_METRIC[method]
        val = np.array([r["metrics"][f"val/{method}/{key}"] for r in rows], dtype=float)
        out += compare(method, y_test, kinds, ids, np.nan_to_num(val, nan=-np.inf), _arrays(rows, "test", method),
                       n_boot, derive_seed(seed, "bootstrap", method), alpha=alpha, select_seed=seed)
    return holm_adjust(out, family, alpha)


def replicate_arrays(rows: list[dict], runs: dict, split: str, method: str) -> np.ndarray | None:
    """[1 + S, n_candidates, n_images] of one split: run 0 the main arrays (`_arrays`), runs 1..S the stored UMAP/
    clustering seed runs (steps.scores.seed_runs) where a candidate has them; a candidate without stored runs
    repeats its run 0, so drawing a run leaves it as it is. None when no seed run is stored."""
    ids, seeds = runs.get("ids") or [], runs.get("seeds") or []
    source = "score" if VERDICT_METRIC[method] == "auroc" else "clusters"
    stored = runs.get(f"{source}_{split}_{method}")
    if not ids or not seeds or stored is None:
        return None
    main = _arrays(rows, split, method)
    out = np.repeat(main[None], 1 + len(seeds), axis=0)
    pos = {i: j for j, i in enumerate(ids)}
    for c, r in enumerate(rows):
        if r["id"] in pos:
            out[1:, c] = np.asarray(stored[pos[r["id"]]], dtype=float)
    return out


def primary_endpoint(rows: list[dict], y_val: np.ndarray, y_test: np.ndarray, vp: VerdictParams, n_boot: int,
                     seed: int, kinds: Sequence[str], seed_runs: dict | None = None) -> dict:
    """params.yaml `verdict.primary` on this evaluation (core.verdict.primary): the selection-aware interval over
    the sources the stored scores hold — candidates, val and test images and, from the stored UMAP/clustering seed
    runs (`evaluate.umap_seeds`), the UMAP seed of the candidates that have them (the best-on-val candidate of each
    kind and method; the others hold one run); one pipeline seed here (`make replicate` pools seeds) — and the
    commit the declaration names (`verdict.declared_in`; the report checks it against git)."""
    pp = vp.primary
    present = [k for k in kinds if any(r["kind"] == k for r in rows)]
    runs = seed_runs or {}
    rv, rt = (replicate_arrays(rows, runs, "val", pp.method), replicate_arrays(rows, runs, "test", pp.method))
    out = primary(pp.method, pp.metric, [r["kind"] for r in rows], [r["id"] for r in rows], y_val, y_test,
                  _arrays(rows, "val", pp.method), _arrays(rows, "test", pp.method), pp.generated_kinds(present),
                  pp.comparator_kinds(present), n_boot, derive_seed(seed, "primary"), vp.alpha, vp.power,
                  replicates_val=rv, replicates_test=rt)
    with_runs = sum(r["id"] in set(runs.get("ids") or []) for r in rows) if rv is not None else 0
    # the arm is the method's (the declared methods are the UMAP arm's: the study's protocol)
    return {**out, "arm": ARM[pp.method], "declaration": pp.model_dump(), "declared_in": vp.declared_in,
            "secondary_family": vp.secondary_family,
            "umap_runs": {"seeds": len(runs.get("seeds") or []) if rv is not None else 0,
                          "candidates_with_runs": with_runs, "candidates": len(rows)}}


def nobody_finds_black_cats(rows: list[dict]) -> bool:
    """True when no candidate's clustering or SVM calls any test black cat a black cat (recall 0 everywhere)."""
    return all(r["metrics"][f"test/{m}/recall"] == 0 for r in rows for m in METHODS)


def headline(rows: list[dict], selected: list[dict], kinds: Sequence[str], seed: int) -> dict:
    """metrics/evaluate.json: per kind and method, the best-on-val model (by the method's verdict metric on val)
    with its test verdict metric and accuracy, and the kind's means."""
    out: dict = {"n_generated": sum(is_generated(r["kind"]) for r in rows),
                 "select_metric": {m: select_key(m) for m in VERDICT_METHODS}, "tie_break": "seeded random order",
                 "arms": {m: ARM[m] for m in VERDICT_METHODS}}
    for kind in kinds:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        d: dict = {}
        for method in VERDICT_METHODS:
            metric = VERDICT_METRIC[method]
            best = rank_rows(group, method, seed)[0]
            d[method] = {"best_on_val": best["id"],
                         f"best_on_val_test_{metric}": round(best["metrics"][f"test/{method}/{metric}"], 4),
                         "best_on_val_test_accuracy": round(best["metrics"][f"test/{method}/accuracy"], 4),
                         f"mean_test_{metric}": round(float(np.nanmean([r["metrics"][f"test/{method}/{metric}"]
                                                                         for r in group])), 4),
                         "mean_test_accuracy": round(float(np.mean([r["metrics"][f"test/{method}/accuracy"]
                                                                     for r in group])), 4)}
        out[kind] = d
    out["selected"] = [{"id": r["id"], "kind": r["kind"], **{k: round(v, 4) for k, v in r["metrics"].items() if k.startswith("test/")
                                          and k.endswith(("accuracy", "recall", "precision", "auroc", "ari"))}}
                       for r in selected]
    return out


def select(rows: list[dict], method: str, n: int, kinds: Sequence[str], seed: int) -> dict[str, list[dict]]:
    """Per generated kind, its top `n` models on val by the method's verdict metric (core.selection)."""
    return {kind: rank_rows([r for r in rows if r["kind"] == kind], method, seed)[:n]
            for kind in kinds if is_generated(kind) and any(r["kind"] == kind for r in rows)}


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_rounded(v) for v in d]
    return round(d, 4) if isinstance(d, float) else d
def champion(rows: list[dict], method: str, seed: int) -> dict:
    """The best-on-val generated model over every generated kind (the registry's alias `champion`)."""
    return rank_rows([r for r in rows if is_generated(r["kind"])], method, seed)[0]


def verdict_summary(rows: list[dict], by_kind: dict[str, list[dict]], comparisons: list[Comparison],
                    n_boot: int, alpha: float = 0.05) -> dict:
    """The verdict as metrics/evaluate.json and data/evaluate/verdict.json hold it: the sentence, the answers
    (each generated kind vs random and vs the aligned merge) and every comparison with its intervals, p-values,
    Holm-adjusted p-values and adjusted outcomes (the secondary family)."""
    return {"metric": VERDICT_METRIC, "n_boot": n_boot, "level": round(1 - alpha, 4),
            "no_method_finds_black_cats": nobody_finds_black_cats(rows),
            "sentence": sentence(comparisons, KIND_NAMES),
            "answers": {f"{gk}-vs-{kind}": answer(comparisons, gk, kind, KIND_NAMES)
                        for gk in by_kind for kind in ("random", "aligned")},
            "secondary_family": {"hypotheses": sum(c.p_holm is not None for c in comparisons)
                                 + sum(c.mean_p_holm is not None for c in comparisons), "method": "holm"},
            "comparisons": [_rounded(c.as_dict()) for c in comparisons]}


# --- the verdict step ------------------------------------------------------------------------------------------

@dataclass
class Judged:
    rows: list[dict]  # steps.scores.load_scores
    by_kind: dict[str, list[dict]]  # each generated kind's models selected on val (evaluate.select_method)
    comparisons: list[Comparison]
    summary: dict  # verdict_summary, with the primary endpoint under "primary"
    seconds: float  # the bootstrap
    primary: dict  # primary_endpoint, rounded as written
    by_method: dict[str, dict[str, list[dict]]] = None  # per method, each generated kind's models selected on val
    champion: str = ""  # the best-on-val generated model by evaluate.select_method's verdict metric

    @property
    def selected(self) -> list[dict]:
        return [r for group in self.by_kind.values() for r in group]


def judge(scores: Path, test: Path, out_verdict: Path, out_selected: Path, e: EvaluateParams, seed: int,
          kinds: Sequence[str], *, val: Path, vp: VerdictParams) -> Judged:
    """Selection on val and the verdict on test from saved scores; writes verdict.json and selected.json.

    The verdict: the primary endpoint (params `verdict.primary`, the selection-aware bootstrap) and the secondary
    comparisons, Holm-adjusted over `verdict.secondary_family`."""
    rows = load_scores(scores)
    by_method = {m: select(rows, m, e.n_selected, kinds, seed) for m in VERDICT_METHODS}
    by_kind = by_method[e.select_method]
    best = champion(rows, e.select_method, seed)
    t0 = time.perf_counter()
    y_test = load_npz(test)["labels"]
    comparisons = verdict(rows, y_test, e.n_boot, seed, family=vp.secondary_family, alpha=vp.alpha)
    prim = _rounded(primary_endpoint(rows, load_npz(val)["labels"], y_test, vp, e.n_boot, seed, kinds,
                                     load_seed_runs(scores)))
    summary = {**verdict_summary(rows, by_kind, comparisons, e.n_boot, vp.alpha), "primary": prim}
    j = Judged(rows, by_kind, comparisons, summary, time.perf_counter() - t0, prim, by_method, best["id"])
    with atomic_path(out_selected) as tmp:
        tmp.write_text(json.dumps({
            "select_method": e.select_method, "select_metric": {m: select_key(m) for m in VERDICT_METHODS},
            "tie_break": "seeded random order (core.selection.tie_keys)", "champion": j.champion,
            "selected": [r["id"] for r in j.selected],
            "by_kind": {kind: [r["id"] for r in group] for kind, group in by_kind.items()},
            "by_method": {m: {kind: [r["id"] for r in group] for kind, group in g.items()}
                          for m, g in by_method.items()}}, indent=2) + "\n")
    with atomic_path(out_verdict) as tmp:
        tmp.write_text(json.dumps(j.summary, indent=2) + "\n")
    return j


# --- the render step -------------------------------------------------------------------------------------------

def figures_for(r: dict, cand: Candidate, source_w: torch.Tensor | None, feats_test: np.ndarray,
                y_test: np.ndarray, folder: Path, seed: int) -> list[Path]:
    from zoofusion.render.figures import cosine_heatmap, tsne_scatter, umap_scatter
    from zoofusion.render.kernel_grid import kernel_grid_figure

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


def source_conv1(cand: Candidate, sources: Mapping[str, Mapping[str, dict]]) -> torch.Tensor | None:
    """The conv1 kernels of the zoo model a generated candidate was translated from (None for the others)."""
    if not is_generated(cand.kind):
        return None
    src = sources[cand.kind][cand.source_domain]
    pos = int(np.flatnonzero(src["model_index"].numpy() == cand.source_index)[0])
    return src["conv1.weight"][pos]


def render(j: Judged, pool: list[Candidate], test: Path, sources: Mapping[str, Mapping[str, Path]],
           tables: Path, figures: Path, metrics_file: Path, e: EvaluateParams, seed: int, dark_luminance: int,
           variants: Sequence[str], kinds: Sequence[str], seconds: Mapping[str, float]
           ) -> tuple[dict[str, list[Path]], dict]:
    """Tables (reports/tables), figures of the selected models and of the best random, zoo-A and pixels
    candidates (reports/figures), and the headline metrics file. `sources`: generated kind -> domain letter ->
    the kernel harvest its variant translated (in the channel order it saw). Returns (each figure row's paths,
    the headline metrics as written)."""
    rows, selected = j.rows, j.selected
    by_id = {c.id: c for c in pool}
    t = load_npz(test)
    fig_rows = selected + [rank_rows([r for r in rows if r["kind"] == k], e.select_method, seed)[0]
                           for k in ("random", "zoo-A", "pixels") if any(r["kind"] == k for r in rows)]
    fig_cands = [by_id[r["id"]] for r in fig_rows]
    feats = features(fig_cands, t["images"], e.feature_batch, dark_luminance)  # cheap: a few forward passes
    harvests = {kind: {letter: torch.load(f, weights_only=True) for letter, f in by_letter.items()}
                for kind, by_letter in sources.items()}
    figs: dict[str, list[Path]] = {}
    with atomic_dir(figures) as figdir, atomic_dir(tables) as tabdir:
        for r, cand, f in zip(fig_rows, fig_cands, feats):
            figs[r["id"]] = [figures / p.name for p in figures_for(r, cand, source_conv1(cand, harvests), f,
                                                                    t["labels"], figdir, seed)]
        for v in variants:
            gen_rows = [r for r in rows if r["kind"] == generated_kind(v)]
            for method in ("kmeans", "ocsvm", "dbscan"):
                chosen = {r["id"] for g in (j.by_method or {}).get(method, {}).values() for r in g}
                write_table(study_table(gen_rows, method, chosen), tabdir / f"study_{method}_{v}",
                            f"{METHOD_TITLES[method]} — {v} translation's generated models on test (sorted by test "
                            "accuracy, as the study; clusters mapped to classes on val)")
        write_table(baseline_table(rows, kinds, seed), tabdir / "baselines",
                    "Generated models vs baselines on test (best-on-val model's test score, and the distribution)")
        arms = dbscan_arms(rows, kinds)
        write_table(arms, tabdir / "dbscan_arms", "DBSCAN: candidates that find no structure (fewer than two "
                    "clusters besides noise), per kind, with the study's eps and with eps chosen on val (through UMAP "
                    "and, arm direct, on the features without UMAP)")
        kt = kinds_table(rows, kinds, seed)
        write_table(kt, tabdir / "kinds", "Every kind with the same budget, every arm: the verdict metric on test "
                    "(AUROC; ARI for DBSCAN)")
        for method in VERDICT_METHODS:  # one file per method: DVC plots draw one bar per row, and mixed metrics don't add
            write_table([k for k in kt if k["Clustering"] == METHOD_TITLES[method]], tabdir / f"kinds_{method}",
                        f"{METHOD_TITLES[method]}: every kind with the same budget ({VERDICT_METRIC[method]} on test)")
        write_table([c.as_dict() for c in j.comparisons], tabdir / "verdict",
                    "Each generated kind minus each other kind, with 95% paired bootstrap intervals (test)")
        save_figure(kinds_boxplot({m: {kind: [r["metrics"][f"test/{m}/{VERDICT_METRIC[m]}"] for r in rows
                                              if r["kind"] == kind] for kind in kinds} for m in VERDICT_METHODS},
                                  {m: VERDICT_METRIC[m] for m in VERDICT_METHODS}), figdir / "kinds.png")
    summary = headline(rows, selected, kinds, seed)  # no timings: identical runs, identical bytes
    summary["champion"] = j.champion
    summary["dbscan_degenerate"] = {arm: {a["Kind"]: {"candidates": a["Candidates"], "val": a["Degenerate on val"],
                                                      "test": a["Degenerate on test"]}
                                          for a in arms if a["Arm"] == arm} for arm in DBSCAN_ARMS}
    summary["n_candidates"] = len(rows)
    summary["budget_per_kind"] = {kind: sum(r["kind"] == kind for r in rows) for kind in kinds}
    summary["test_images"] = int(len(t["labels"]))
    summary["test_black_cat_share"] = round(float(np.mean(t["labels"])), 4)
    summary["primary"] = j.primary  # the one pre-registered question, top level (also under verdict)
    summary["verdict"] = j.summary
    write_json(metrics_file, summary)
    return figs, summary
