"""Step `report`: the document a person reads first — reports/report.md and an offline reports/report.html.

It states what was run (params, code and data versions), the zoo accuracies, each translation variant's
settings, CycleGAN curves and distribution distances, the study's three tables per variant, the baselines
comparison, tuned vs untuned test numbers for the selected models (tuned on val only, re-evaluated here on test),
the figures, and a verdict on the hypothesis drawn from the numbers, for each variant against every baseline and
the variants against each other. The HTML embeds every image, so it works offline (no CDN).
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import yaml

import zoofusion.layout as layout
from zoofusion.config import DOMAINS, VARIANTS, Params
from zoofusion.core.cnn import CONV_LAYERS
from zoofusion.io import atomic_dir, atomic_path, file_md5, load_npz
from zoofusion.render.kernel_grid import save_figure
from zoofusion.render.figures import forest_plot
from zoofusion.render.report import cyclegan_figure, md_table, md_to_html, zoo_figure
from zoofusion.render.tables import KIND_NAMES, METHOD_TITLES, safe
from zoofusion.reference import load_study
from zoofusion.steps.report_sections import novelty_rows, novelty_text, our_best, side_by_side, study_text

log = logging.getLogger(__name__)
REPORTS = layout.REPORTS
OUT = REPORTS / "report"
TUNED = layout.TUNED_CSV
# Files whose md5 the report prints: every file it reads (its declared DVC deps)
READS = ("metrics/evaluate.json", "metrics/kernels.json", "metrics/zoo_black.json", "metrics/zoo_cat.json",
         "metrics/cyclegan_study.json", "metrics/cyclegan_aligned.json", "data/testset/test.npz",
         "data/prepared/val.npz", "data/tuned/tuned.csv", "reports/tables/baselines.csv", str(layout.REPLICATION_JSON),
         "metrics/novelty.json", str(layout.STUDY_REFERENCE))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `dvc repro` up to the stage that writes it")
    return json.loads(path.read_text())


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def declaration(params: Params, root: Path) -> str:
    """Where `verdict.primary` was declared, checked against git: `verdict.declared_in` names a commit (written in
    a later one); params.yaml at that commit must declare the same primary endpoint, and the commit must be in
    this checkout's history. Read at report time; the words say what could and could not be checked."""
    v = params.verdict
    if not v.declared_in:
        return "not yet committed (`verdict.declared_in` is empty)"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    try:
        then = yaml.safe_load(git("show", f"{v.declared_in}:params.yaml")) or {}
        ancestor = subprocess.run(["git", "-C", str(root), "merge-base", "--is-ancestor", v.declared_in, "HEAD"],
                                  capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return f"said to be commit `{v.declared_in}`, which git could not show here (not checked)"
    if (then.get("verdict") or {}).get("primary") != v.primary.model_dump():
        return f"said to be commit `{v.declared_in}`, but params.yaml there declares a different primary endpoint"
    return f"committed in `{v.declared_in}`" + ("" if ancestor else " (not an ancestor of this checkout's HEAD)")


OUTCOME = {"generated": "generated better", "baseline": "other better", "none": "no difference shown", None: ""}
SOURCE_NAMES = {"pipeline_seeds": "pipeline seeds", "candidates": "candidates within each kind",
                "umap_replicates": "UMAP seeds", "val_images": "val images (selection redone)",
                "test_images": "test images"}


def _kinds(kinds: list[str]) -> str:
    return KIND_NAMES.get(kinds[0], kinds[0]) if len(kinds) == 1 else f"{len(kinds)} kinds"


ARM_WORDS = {"umap": "in the UMAP arm (the study's protocol: standardise, UMAP fitted on val, then the method)",
             "direct": "in the no-UMAP arm (the method on the standardised features)",
             "probe": "(a logistic regression fitted on val features)"}


def primary_sentence(ev: dict, declared: str) -> str:
    """The report's first sentence: the primary endpoint, its difference and interval, the sources of variance
    included (and not), and what it means, with the smallest difference this test set could detect."""
    p = ev["primary"]
    metric = "AUROC" if p["metric"] == "auroc" else "adjusted Rand index"
    meaning = {"generated": "the generated model is better",
               "baseline": "the best baseline is better",
               "none": "the interval includes 0, so this run shows no difference"}[p["outcome"]]
    left_out = ", ".join(SOURCE_NAMES[s] for s in p["not_included"])
    runs = p.get("umap_runs") or {}
    arm = ARM_WORDS[p.get("arm", "umap")]

    def source(s: str) -> str:
        if s == "umap_replicates" and runs.get("candidates_with_runs", 0) < runs.get("candidates", 0):
            return (f"UMAP seeds ({runs['seeds']} more runs of the {runs['candidates_with_runs']} candidates that are "
                    "best on val in their kind; the others one run)")
        return SOURCE_NAMES[s]

    return (f"**Primary endpoint** (params.yaml `verdict.primary`, {declared}): with {METHOD_TITLES[p['method']]} "
            f"{arm}, "
            f"the test {metric} of the best-on-val generated model over {_kinds(p['generated']['kinds'])} "
            f"(`{p['generated']['id']}`) minus that of the best-on-val baseline over "
            f"{_kinds(p['comparator']['kinds'])} (`{p['comparator']['id']}`) is **{p['difference']:+.3f}** "
            f"[{p['level']:.0%} interval {p['low']:+.3f}, {p['high']:+.3f}], resampling "
            f"{', '.join(source(s) for s in p['sources'])}" + (f" (not included: {left_out})" if left_out else "")
            + f"; {meaning}, and this test set can detect only differences of at least {p['mdd']:.3f} "
            f"({p['power']:.0%} power).")


def arm_rows(kinds: list[dict]) -> list[dict]:
    """Each kind at its best, arm by arm: the test verdict metric of the kind's best-on-val candidate per method
    (one row per kind, one column per method; from reports/tables/kinds.csv)."""
    out: dict[str, dict] = {}
    for k in kinds:
        out.setdefault(k["Kind"], {"Kind": k["Kind"]})[f"{k['Clustering']} ({k['Metric'].upper()})"] = k["Its test value"]
    return list(out.values())


ARMS_WHY = (  # two paragraphs
    "Each candidate is scored in three arms. **UMAP** is the study's protocol (standardise, UMAP fitted on val, test "
    "transformed, then KMeans / DBSCAN / the One-class SVM): the primary endpoint's arm. **No UMAP** runs the same "
    "methods on the standardised features themselves (DBSCAN with eps from the val k-distance rule); a "
    "one-dimensional feature (darkness) is its own score there, its direction and its threshold for the 0/1 calls "
    "chosen on val.",
    "The **linear probe** is a logistic regression fitted on the val features, its val score "
    "cross-fitted: what a supervised reader of the same features finds, a control for what the unsupervised "
    "methods miss. Selection is on val in every arm, by the method's verdict metric.")


def breakdown_rows(ev: dict) -> list[dict]:
    """The primary interval's variance by source: each source resampled alone, and all together."""
    p = ev["primary"]
    rows = [{"Source resampled": SOURCE_NAMES[s], "Interval": f"[{b['low']:+.3f}, {b['high']:+.3f}]",
             "Width": f"{b['width']:.3f}", "Standard error": f"{b['se']:.3f}"} for s, b in p["breakdown"].items()]
    rows.append({"Source resampled": "all of the above", "Interval": f"[{p['low']:+.3f}, {p['high']:+.3f}]",
                 "Width": f"{p['high'] - p['low']:.3f}", "Standard error": f"{p['se']:.3f}"})
    rows += [{"Source resampled": f"{SOURCE_NAMES[s]}: not included ({why})", "Interval": "", "Width": "",
              "Standard error": ""} for s, why in p["not_included"].items()]
    return rows


def verdict_text(ev: dict) -> list[str]:
    """The verdict's short paragraphs, from evaluate's intervals only (nothing here looks at a test number to
    choose): the test set, and how many secondary comparisons hold after Holm's adjustment."""
    v = ev["verdict"]
    share = ev["test_black_cat_share"]
    budget = max(ev["budget_per_kind"].values())
    out = [f"The test set has {ev['test_images']} images, {share:.1%} of them black cats. Every kind had the same "
           f"budget of candidates (each translation variant's generated models: {budget}; fewer only where a kind "
           "has fewer members, and one for the deterministic pixels and darkness features)."]
    if v["no_method_finds_black_cats"]:
        out.append("No method finds black cats: for every candidate, generated or baseline, KMeans, DBSCAN and the "
                   "One-class SVM call no test black cat a black cat (recall 0 everywhere), so accuracy here only "
                   "counts the 'other' images.")
    cs = v["comparisons"]
    held = [c for c in cs if c.get("adjusted_outcome") not in (None, "none")]
    fam = ev.get("primary", {}).get("secondary_family", "best_on_val")
    n_methods = len({c["method"] for c in cs})
    out.append(f"Every other comparison is secondary: {len(cs)} best-on-val differences (each generated kind minus "
               f"each other kind, per method of every arm: {n_methods} methods through UMAP, without it and the "
               f"linear probe), Holm-adjusted as one family (`{fam}`; one family over all arms keeps the family-wise "
               "level for a claim from any arm, at the price of a stricter bar for each). After the adjustment "
               f"{len(held)} of {len(cs)} show a difference; the forest plot draws them in black, the others in grey.")
    return out


def held_rows(ev: dict) -> list[str]:
    """One list item per secondary comparison that holds after Holm's adjustment."""
    return [f"- {METHOD_TITLES[c['method']]}, {c['generated_kind']} minus {c['kind']}: {c['best_diff']:+.3f} "
            f"[{c['best_low']:+.3f}, {c['best_high']:+.3f}], Holm p {c['p_holm']:.3f}: {OUTCOME[c['adjusted_outcome']]}"
            for c in ev["verdict"]["comparisons"] if c.get("adjusted_outcome") not in (None, "none")]


def _p(x) -> str:
    return "" if x is None else f"{x:.3f}"


def comparison_rows(ev: dict) -> list[dict]:
    return [{"Generated": c.get("generated_kind", "generated"), "Clustering": METHOD_TITLES[c["method"]],
             "Metric": c["metric"], "Other kind": c["kind"],
             "Best on val: generated − other [95% CI]": f"{c['best_diff']:+.3f} [{c['best_low']:+.3f}, {c['best_high']:+.3f}]",
             "p": _p(c.get("p")), "p (Holm)": _p(c.get("p_holm")),
             "Verdict (Holm)": OUTCOME[c.get("adjusted_outcome")], "Unadjusted": OUTCOME[c["outcome"]],
             "Kind means: generated − other [95% CI]": f"{c['mean_diff']:+.3f} [{c['mean_low']:+.3f}, {c['mean_high']:+.3f}]",
             "On average (unadjusted)": OUTCOME[c["mean_outcome"]]}
            for c in ev["verdict"]["comparisons"]]


def _short(kind: str) -> str:
    """A kind as the forest plot labels it: `study gen.`, `aligned merge` (the baseline), `random`, ..."""
    if kind.startswith("generated"):
        return f"{kind.removeprefix('generated').removeprefix('-') or 'generated'} gen.".replace("generated gen.",
                                                                                                 "generated")
    return "aligned merge" if kind == "aligned" else kind


def forest_rows(ev: dict) -> list[dict]:
    """The forest plot's rows: the primary endpoint, then every secondary comparison, one panel per method."""
    def panel(method: str, metric: str) -> str:
        return f"{METHOD_TITLES[method]} ({'AUROC' if metric == 'auroc' else 'ARI'})"

    p = ev["primary"]
    rows = [{"panel": panel(p["method"], p["metric"]), "label": "PRIMARY: best generated − best baseline",
             "diff": p["difference"], "low": p["low"], "high": p["high"], "primary": True, "held": p["outcome"] != "none"}]
    for c in ev["verdict"]["comparisons"]:
        holm = f" (Holm p {c['p_holm']:.2f})" if c.get("p_holm") is not None else ""
        rows.append({"panel": panel(c["method"], c["metric"]),
                     "label": f"{_short(c['generated_kind'])} − {_short(c['kind'])}{holm}",
                     "diff": c["best_diff"], "low": c["best_low"], "high": c["best_high"], "primary": False,
                     "held": c.get("adjusted_outcome", c["outcome"]) not in (None, "none")})
    return rows


def answers_text(ev: dict) -> list[str]:
    """The plain answers evaluate wrote (unadjusted intervals): does each variant beat untrained random kernels
    and the aligned merge?"""
    out = []
    for key, text in ev["verdict"].get("answers", {}).items():
        if text:
            out += [f"- {text}"]
    return out


def variant_rows(params: Params) -> list[dict]:
    return [{"variant": v, **params.translation.variant(v).model_dump()} for v in VARIANTS]


def distance_rows(gans: dict[str, dict]) -> list[dict]:
    return [{"variant": v, "layer": layer, "d(A,B)": round(g[layer]["dist_A_B"], 4),
             "d(G_A2B(A),B)": round(g[layer]["dist_GA2B_A_B"], 4), "d(G_B2A(B),A)": round(g[layer]["dist_GB2A_B_A"], 4),
             "A→B moves toward B": "yes" if g[layer]["dist_GA2B_A_B"] < g[layer]["dist_A_B"] else "no",
             "B→A moves toward A": "yes" if g[layer]["dist_GB2A_B_A"] < g[layer]["dist_A_B"] else "no"}
            for v, g in gans.items() for layer in CONV_LAYERS]


def unit_rows(gans: dict[str, dict]) -> list[dict]:
    return [{"variant": v, "CycleGAN": unit, "final cycle loss": round(u["final_loss_cycle"], 4),
             "final generator loss": round(u["final_loss_G"], 4), "epochs": u["epochs"]}
            for v, g in gans.items() for unit, u in g["units"].items()]


METRICS_WHY = (
    "Why these metrics: the study's accuracy (majority mapping) depends on the share of black cats: with 1 black "
    "cat in 10, calling everything 'other' scores 0.9. The verdict uses the **AUROC** of a continuous black-cat score "
    "where a method has one (KMeans: how much nearer a point lies to the centroid of the val cluster with the most "
    "black cats than to the other val centroids; One-class SVM: its decision function). AUROC is prevalence-free: "
    "0.5 is chance and its meaning does not change with the share of black cats.",
    "DBSCAN has no centroid, so it is judged by the **adjusted Rand index** of its clustering. ARI is 0 at chance "
    "whatever the share of black cats, but it is not prevalence-free: the values it can reach change with the class "
    "balance, so ARIs compare candidates on this test set only. Balanced accuracy, average precision (read beside "
    "the prevalence) and NMI are in the tables and in MLflow.",
    "Intervals are percentile intervals of a paired bootstrap over test images (stratified by label, the same "
    "resamples for both sides); p-values are two-sided, the difference over its bootstrap standard error, Holm-adjusted within the secondary "
    "family. The primary endpoint's interval also resamples the candidates within each kind and the val images, "
    "redoing the best-on-val choice on every resample.")


def replication_text(rep: dict, ev: dict) -> list[str]:
    """The replicated section: the primary endpoint per pipeline seed and pooled, on the reduced profile it was run
    on (named, with its commit), and the smallest difference one run can detect given the spread between seeds."""
    pe = (rep.get("pooled") or {}).get("primary")
    if not pe:
        return ["`reports/replication.json` holds no pooled primary endpoint yet: run `make replicate` (at least two "
                "seeds must finish)."]
    prof = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in (rep.get("profile") or {}).items()) or "none"
    per = [s for s in rep["per_seed"] if "primary" in s["endpoints"]]
    metric = (per[0]["endpoints"]["primary"].get("metric") or "auroc").upper() if per else "AUROC"
    words = {"generated": "the generated model better", "baseline": "the baseline better",
             "none": "no difference shown"}
    mdd_here = ev.get("primary", {}).get("mdd")
    return [
        f"**The reduced profile, not this run's**: params.yaml at commit `{rep['commit'][:7]}` with "
        f"{prof}, once per pipeline seed (`replicate.seeds`), each a queued DVC experiment (`make replicate`; "
        "`reports/replication.md` has every secondary comparison across seeds).",
        "",
        md_table([{"seed": s["seed"], "experiment": s["experiment"],
                   "comparator (best on val)": s["endpoints"]["primary"].get("comparator"),
                   "difference": f"{s['endpoints']['primary']['difference']:+.3f}",
                   "interval (this seed)": f"[{s['endpoints']['primary']['low']:+.3f}, "
                                           f"{s['endpoints']['primary']['high']:+.3f}]"} for s in per]),
        f"Pooled over {pe['k']} seeds: **{pe['mean']:+.3f}** (sd {pe['sd']:.3f}; {pe['level']:.0%} t-interval of "
        f"the mean [{pe['low']:+.3f}, {pe['high']:+.3f}]): {words[pe['pooled_outcome']]}.",
        "",
        f"**What one run can detect**: from the spread between seeds, one run of that profile detects a difference of "
        f"{pe['mdd_one_run']:.3f} {metric} or more ({rep['power']:.0%} power, level {rep['alpha']:g}), the mean of "
        f"{pe['k']} seeds {pe['mdd_pooled_mean']:.3f}"
        + (f"; this run's own interval (the sources it resamples) implies {mdd_here:.3f}." if mdd_here else "."),
    ]


def build(params: Params, root: Path = Path(".")) -> str:
    ev = read_json(root / "metrics/evaluate.json")
    test = load_npz(root / "data/testset/test.npz")
    val = load_npz(root / "data/prepared/val.npz")
    zoo = {d: read_json(root / f"metrics/zoo_{d}.json") for d in DOMAINS}
    kernels = read_json(root / "metrics/kernels.json")
    gans = {v: read_json(root / f"metrics/cyclegan_{v}.json") for v in VARIANTS}
    rep = read_json(root / layout.REPLICATION_JSON)
    novelty = read_json(root / "metrics/novelty.json")
    study = load_study(root / layout.STUDY_REFERENCE)
    versions = {f: file_md5(root / f) for f in READS}
    z, c, e = params.zoo, params.cyclegan, params.evaluate
    md = [
        "# zoofusion report",
        "",
        primary_sentence(ev, declaration(params, root)),
        "",
        "![Every comparison: difference and interval; the primary endpoint in red, secondary comparisons that hold "
        "after Holm's adjustment in black, the others in grey](report/forest.png)",
        "",
        "Do untrained CNNs whose kernels were generated by per-layer CycleGANs from two model zoos separate black "
        "cats from other images (Patel & Jain, 2024)? Model selection uses val only; every number below labelled "
        "*test* comes from the held-out test set.",
        "",
        "## Verdict",
        "",
        *[x for t in verdict_text(ev) for x in (t, "")],
        *held_rows(ev),
        "",
        "The primary interval's variance, source by source (each resampled alone; the others held fixed):",
        "",
        md_table(breakdown_rows(ev)),
        "Plainly, for each translation variant against untrained random kernels and against the channel-aligned "
        "merge of a black and a cat model (unadjusted intervals):",
        "",
        *answers_text(ev),
        "",
        md_table(comparison_rows(ev)),
        "## Replicated across pipeline seeds",
        "",
        *[x for t in replication_text(rep, ev) for x in (t, "")],
        *[x for t in METRICS_WHY for x in (t, "")],
        "### Every kind at its best, arm by arm (test)",
        "",
        *[x for t in ARMS_WHY for x in (t, "")],
        "The test value of each kind's best-on-val candidate, per method and arm:",
        "",
        md_table(arm_rows(read_csv(root / "reports/tables/kinds.csv"))),
        "### Every kind, same budget (test)",
        "",
        md_table(read_csv(root / "reports/tables/kinds.csv")),
        "![Per-kind distributions of the verdict metric on test](figures/kinds.png)",
        "",
        "### DBSCAN: how many candidates find no structure",
        "",
        f"Degenerate: fewer than two clusters besides noise (all noise, or one cluster). Arm `study`: the study's "
        f"eps {e.clustering.dbscan_eps}; arm `val`: eps = the {e.clustering.dbscan_eps_quantile} quantile of each "
        f"candidate's val k-distance curve (k = min_samples {e.clustering.dbscan_min_samples}), chosen on val "
        "without labels; arm `direct`: that eps rule on the standardised features without UMAP (a one-dimensional "
        "feature's two clusters are its val threshold's). The verdict's DBSCAN rows use the study arm, its "
        "no-UMAP DBSCAN rows the direct arm.",
        "",
        md_table(read_csv(root / "reports/tables/dbscan_arms.csv")),
        "",
        "## Novelty: new models or near-copies of zoo models?",
        "",
        "After Zeng, Yin, Xu & Liu, \"Generative Modeling of Weights: Generalization or Memorization?\" "
        "(arXiv 2506.07998): how near each model lies to its nearest zoo model, and how far its test mistakes "
        "overlap that model's (stage `novelty`, reports/novelty/novelty.csv).",
        "",
        *novelty_text(novelty),
        "",
        md_table(novelty_rows(novelty)),
        "![Test verdict metric against relative distance to the nearest zoo model, per kind](novelty/novelty.png)",
        "",
        "## The study side by side",
        "",
        *study_text(study),
        "",
        md_table(side_by_side(study, our_best(ev, root / "reports/tables", VARIANTS), test["labels"])),
        "## What was run",
        "",
        f"- seed `{params.seed}`: this report is ONE run, one draw of every random choice; `make replicate` runs "
        f"{len(params.replicate.seeds)} seeds (`replicate.seeds`) on a reduced profile and pools them (section "
        "above, and `reports/replication.md`)",
        "- code versions: dvc.lock holds the md5 of each stage's code, and every MLflow "
        "run its git commit",
        f"- zoos: {z.n_models.black} black-domain and {z.n_models.cat} cat-domain CNNs, {z.epochs} epochs, "
        f"batch {z.batch_size}, Adam lr {z.lr}",
        f"- CycleGAN: {c.epochs} epochs, batch {c.batch_size}, lr {c.lr}, hidden {c.hidden}, "
        f"λ_cycle {c.lambda_cycle}, λ_identity {c.lambda_identity}; translation variants below",
        f"- evaluation: {ev['n_generated']} generated models and {ev['n_candidates'] - ev['n_generated']} baselines; "
        f"val {len(val['labels'])} images ({int(val['labels'].sum())} black cats), test {len(test['labels'])} "
        f"images ({int(test['labels'].sum())} black cats, "
        f"{'manifest ' + params.testset.manifest if params.testset.manifest else 'built split'}); selection on "
        f"val by each method's verdict metric (ties in a seeded random order; selected models and champion by "
        f"`{e.select_method}`); UMAP fitted on val, test transformed into it (inductive); UMAP n_neighbors {e.clustering.umap.n_neighbors}, min_dist "
        f"{e.clustering.umap.min_dist}; KMeans k {e.clustering.kmeans_k}; DBSCAN eps {e.clustering.dbscan_eps}, "
        f"min_samples {e.clustering.dbscan_min_samples}; One-class SVM nu {e.clustering.ocsvm_nu}, gamma "
        f"{e.clustering.ocsvm_gamma}; linear probe C {e.clustering.probe_c}, val cross-fitted over "
        f"{e.clustering.probe_val_folds} folds",
        "",
        "Inputs of this report (md5):",
        "",
        md_table([{"path": k, "md5": v} for k, v in sorted(versions.items())]),
        "## Zoos",
        "",
        md_table([{"domain": d, "models": zoo[d]["count"], "val acc mean": round(zoo[d]["val_acc_mean"], 4),
                   "min": round(zoo[d]["val_acc_min"], 4), "max": round(zoo[d]["val_acc_max"], 4),
                   "kept for kernels": kernels[d]["kept"], "dropped": kernels[d]["dropped"],
                   "training path": zoo[d]["path"]}
                  for d in DOMAINS]),
        "Training times, rates and the MLflow logging cost are in MLflow (experiment `zoo`, each domain's parent run), "
        "not here: this report is the same bytes for the same inputs.",
        "",
        "![Zoo validation accuracy](report/zoo_accuracy.png)",
        "",
        "## Translation variants",
        "",
        "`study` is the study's translation: one CycleGAN per conv layer on the kernels as trained. `aligned` first "
        "puts every zoo model's channels in one canonical order (weight matching to the black zoo's best model, "
        f"{kernels['alignment']['reference']}; the mean cosine similarity of a model's conv kernels to it rises from "
        f"{kernels['alignment']['black_cosine_to_reference_raw']} to "
        f"{kernels['alignment']['black_cosine_to_reference_aligned']} in the black zoo and from "
        f"{kernels['alignment']['cat_cosine_to_reference_raw']} to "
        f"{kernels['alignment']['cat_cosine_to_reference_aligned']} in the cat zoo), then translates each model's "
        "conv1 and conv2 together with one CycleGAN (`translate: pair`), so the generated conv2 reads the generated "
        "conv1's channels, with the reference CycleGAN's training details.",
        "",
        md_table(variant_rows(params)),
        "## CycleGANs",
        "",
        "Distribution distance between kernel sets (mean standardised 1-D Wasserstein distance of per-kernel "
        "statistics; lower = closer; it does not depend on channel order, so d(A,B) is the same for both "
        "variants). A translation that works brings G_A2B(A) closer to B than A itself is.",
        "",
        md_table(distance_rows(gans)),
        md_table(unit_rows(gans)),
        "![CycleGAN losses](report/cyclegan_losses.png)",
        "",
        *[f"![{v}: conv1 kernels after training](report/{v}_conv1_grid.png)\n" for v in VARIANTS],
        "## The study's tables (test)",
        "",
    ]
    for v in VARIANTS:
        for method in ("kmeans", "ocsvm", "dbscan"):
            rows = read_csv(root / f"reports/tables/study_{method}_{v}.csv")
            md += [f"### {METHOD_TITLES[method]}: {v} translation", "", md_table(rows, limit=10)]
    md += ["## Generated models vs baselines (test)", "",
           md_table(read_csv(root / "reports/tables/baselines.csv")), ""]
    md += ["## Tuned vs untuned (tuned on val, scored on test)", ""]
    md.append(md_table(read_csv(root / TUNED)))
    md += ["## Figures of the selected models", ""]
    for s in ev["selected"]:
        for kind, title in (("kernels", "kernels: source vs generated"), ("umap", "UMAP of test"),
                            ("cosine", "cosine similarity of test features"), ("tsne", "t-SNE of test")):
            f = root / "reports/figures" / f"{safe(s['id'])}_{kind}.png"
            if f.is_file():
                md.append(f"![{s['id']} {title}](figures/{f.name})")
                md.append("")
    return "\n".join(md) + "\n"


def run(params: Params, root: Path = Path(".")) -> Path:
    with atomic_dir(root / OUT) as tmp:
        acc = {d: load_npz(root / "data/zoo" / d / "history.npz")["val_acc"][:, -1] for d in DOMAINS}
        save_figure(zoo_figure(acc), tmp / "zoo_accuracy.png")
        gans = root / "data/cyclegan"
        hist = {f"{v} {unit}": read_json(gans / v / unit / "history.json")
                for v in VARIANTS for unit in sorted(p.name for p in (gans / v).iterdir() if p.is_dir())}
        save_figure(cyclegan_figure(hist), tmp / "cyclegan_losses.png")
        save_figure(forest_plot(forest_rows(read_json(root / "metrics/evaluate.json")),
                                "Generated minus each other kind on test (best on val)"), tmp / "forest.png")
        for v in VARIANTS:
            first = "conv1" if (gans / v / "conv1").is_dir() else "pair"
            (tmp / f"{v}_conv1_grid.png").write_bytes((gans / v / first / "final_grid.png").read_bytes())
    md = build(params, root)
    for name, text in (("report.md", md), ("report.html", md_to_html(md, root / REPORTS))):
        with atomic_path(root / REPORTS / name) as tmp:
            tmp.write_text(text)
    log.info("report: %s and %s", root / REPORTS / "report.md", root / REPORTS / "report.html")
    return root / REPORTS / "report.md"
