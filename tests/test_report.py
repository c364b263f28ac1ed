"""The report opens with the primary endpoint, renders the verdict from evaluate's intervals, keeps every
paragraph short, and its HTML works offline."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_params
from zoofusion.config import VARIANTS
from zoofusion.io import save_npz
from zoofusion.render.report import md_to_html
from zoofusion.steps.report import (answers_text, build, comparison_rows, declaration, distance_rows, forest_rows,
                                    primary_sentence, verdict_text)


def _primary(outcome: str = "none") -> dict:
    return {"metric": "auroc", "method": "kmeans", "level": 0.95, "outcome": outcome, "power": 0.8,
            "generated": {"kinds": ["generated-study", "generated-aligned"], "id": "aligned/3/A",
                          "kind": "generated-aligned", "test_value": 0.61},
            "comparator": {"kinds": ["random", "zoo-A", "pixels"], "id": "random-7", "kind": "random",
                           "test_value": 0.63},
            "difference": -0.02, "low": -0.061, "high": 0.015, "se": 0.019, "p": 0.31, "mdd": 0.053, "n_boot": 1000,
            "sources": ["candidates", "val_images", "test_images"],
            "not_included": {"pipeline_seeds": "one pipeline seed",
                             "umap_replicates": "one UMAP/clustering run per candidate stored"},
            "breakdown": {"candidates": {"low": -0.03, "high": 0.0, "width": 0.03, "se": 0.008},
                          "val_images": {"low": -0.05, "high": 0.01, "width": 0.06, "se": 0.015},
                          "test_images": {"low": -0.045, "high": 0.008, "width": 0.053, "se": 0.013}},
            "declared_in": "", "declaration": {"metric": "auroc", "method": "kmeans", "generated": "all",
                                               "comparator": "all"}, "secondary_family": "best_on_val"}


def _comparison(method: str = "kmeans", kind: str = "random", held: str = "generated") -> dict:
    return {"method": method, "metric": "ari" if method == "dbscan" else "auroc", "kind": kind,
            "generated_kind": "generated-aligned", "generated_id": "aligned/3/A", "baseline_id": f"{kind}-1",
            "best_diff": 0.05, "best_low": 0.01, "best_high": 0.09, "mean_diff": -0.01, "mean_low": -0.03,
            "mean_high": 0.02, "outcome": "generated", "mean_outcome": "none", "p": 0.004, "p_holm": 0.02,
            "mean_p": 0.4, "mean_p_holm": None, "adjusted_outcome": held, "mean_adjusted_outcome": None, "alpha": 0.05}


def _ev(no_black_cats: bool = False) -> dict:
    return {"test_images": 300, "test_black_cat_share": 0.1,
            "budget_per_kind": {"generated-study": 48, "generated-aligned": 48, "pixels": 1},
            "primary": _primary(),
            "verdict": {"no_method_finds_black_cats": no_black_cats, "comparisons": [_comparison()],
                        "answers": {"generated-aligned-vs-random": "No: aligned kernels beat random with no method."},
                        "sentence": "With KMeans (AUROC, ...), generated kernels beat random init (untrained)."}}


def test_verdict_states_prevalence_budget_and_the_holm_adjusted_family():
    text = " ".join(verdict_text(_ev()))
    assert "300 images, 10.0% of them black cats" in text and "generated models: 48;" in text
    assert "Holm-adjusted" in text and "1 of 1 show a difference" in text
    assert "No method finds black cats" not in text
    assert "No method finds black cats" in " ".join(verdict_text(_ev(no_black_cats=True)))
    (row,) = comparison_rows(_ev())
    assert row["Best on val: generated − other [95% CI]"] == "+0.050 [+0.010, +0.090]"
    assert (row["p"], row["p (Holm)"]) == ("0.004", "0.020")
    assert row["Verdict (Holm)"] == "generated better" and row["On average (unadjusted)"] == "no difference shown"
    assert answers_text(_ev()) == ["- No: aligned kernels beat random with no method."]


def test_the_primary_sentence_states_endpoint_interval_sources_and_meaning():
    s = primary_sentence(_ev(), "committed in `abc1234`")
    assert s.count(". ") == 0 and s.endswith(".")  # one sentence
    assert "KMeans" in s and "AUROC" in s and "`aligned/3/A`" in s and "`random-7`" in s and "over 3 kinds" in s
    assert "**-0.020** [95% interval -0.061, +0.015]" in s
    assert "candidates within each kind, val images (selection redone), test images" in s
    assert "not included: pipeline seeds, UMAP seeds" in s
    assert "shows no difference" in s and "at least 0.053 (80% power)" in s and "committed in `abc1234`" in s
    ev = _ev()
    ev["primary"]["outcome"] = "baseline"
    assert "the best baseline is better" in primary_sentence(ev, "")
    rows = forest_rows(_ev())
    assert rows[0]["primary"] and rows[0]["label"].startswith("PRIMARY") and rows[1]["label"] == \
        "aligned gen. − random (Holm p 0.02)" and rows[1]["held"]


def test_distance_rows_say_whether_a_translation_moves_toward_the_other_zoo():
    d = {"dist_A_B": 0.48, "dist_GA2B_A_B": 0.86, "dist_GB2A_B_A": 0.3}
    rows = distance_rows({"study": {"conv1": d, "conv2": d}, "aligned": {"conv1": d, "conv2": {**d, "dist_GA2B_A_B": 0.4}}})
    assert [(r["variant"], r["layer"], r["A→B moves toward B"]) for r in rows] == [
        ("study", "conv1", "no"), ("study", "conv2", "no"), ("aligned", "conv1", "no"), ("aligned", "conv2", "yes")]
    assert rows[0]["B→A moves toward A"] == "yes"


def test_html_embeds_images_and_loads_nothing(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    html = md_to_html("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![a figure](fig.png)\n", tmp_path)
    assert "<table>" in html and "<h1>T</h1>" in html
    assert 'src="data:image/png;base64,' in html and "http" not in html


# --- the whole report from a synthetic project ------------------------------------------------------------------

def _csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def synthetic_project(root: Path) -> None:
    """Every file report.build reads, with made-up numbers: 3 methods x 9 kinds of comparisons (the real
    report's size), no pipeline run."""
    ev = _ev()
    kinds = ["random", "zoo-A", "zoo-B", "average", "aligned", "concat", "pixels", "darkness", "generated-study"]
    ev["verdict"]["comparisons"] = [_comparison(m, k, "generated" if i % 4 == 0 else "none")
                                    for m in ("kmeans", "ocsvm", "dbscan") for i, k in enumerate(kinds)]
    ev.update({"n_generated": 96, "n_candidates": 386, "selected": [{"id": "aligned/3/A"}]})
    _json(root / "metrics/evaluate.json", ev)
    for split in ("testset/test", "prepared/val"):
        save_npz(root / f"data/{split}.npz", labels=np.r_[np.ones(10, int), np.zeros(20, int)])
    for d in ("black", "cat"):
        _json(root / f"metrics/zoo_{d}.json", {"count": 96, "val_acc_mean": 0.9, "val_acc_min": 0.8,
                                               "val_acc_max": 0.95, "path": "single"})
    _json(root / "metrics/kernels.json", {"black": {"kept": 96, "dropped": 0}, "cat": {"kept": 90, "dropped": 6},
                                          "alignment": {"reference": "black-3", "black_cosine_to_reference_raw": 0.1,
                                                        "black_cosine_to_reference_aligned": 0.5,
                                                        "cat_cosine_to_reference_raw": 0.1,
                                                        "cat_cosine_to_reference_aligned": 0.4}})
    d = {"dist_A_B": 0.48, "dist_GA2B_A_B": 0.4, "dist_GB2A_B_A": 0.3}
    for v in VARIANTS:
        _json(root / f"metrics/cyclegan_{v}.json", {"conv1": d, "conv2": d, "units": {
            "conv1": {"final_loss_cycle": 0.1, "final_loss_G": 1.0, "epochs": 200}}})
        for m in ("kmeans", "ocsvm", "dbscan"):
            _csv(root / f"reports/tables/study_{m}_{v}.csv", [{"Model": "x", "Accuracy": 0.9}])
    _csv(root / "reports/tables/baselines.csv", [{"Method": "random", "Mean": 0.5}])
    _csv(root / "reports/tables/kinds.csv", [  # as steps.evaluate.kinds_table writes it: every arm's methods
        {"Arm": arm, "Clustering": title, "Metric": metric, "Kind": kind, "Mean": 0.5, "Its test value": value}
        for arm, title, metric in (("UMAP (the study's protocol)", "KMeans", "auroc"), ("no UMAP", "KMeans (no UMAP)",
                                   "auroc"), ("linear probe", "linear probe", "auroc"))
        for kind, value in (("darkness", 0.788 if arm == "no UMAP" else 0.354), ("generated-study", 0.6))])
    _csv(root / "reports/tables/dbscan_arms.csv", [{"Arm": "val", "Kind": "random", "Degenerate on test": 1}])
    _csv(root / "data/tuned/tuned.csv", [{"Model": "aligned/3/A", "Test accuracy tuned": 0.9}])
    _json(root / "reports/replication.json", json.loads((ROOT / "reports/replication.json").read_text()))
    _json(root / "metrics/novelty.json", _novelty())
    (root / "references").mkdir(exist_ok=True)
    (root / "references/patel_jain_2024.yaml").write_text((ROOT / "references/patel_jain_2024.yaml").read_text())


def _novelty() -> dict:
    best = {"id": "study/6/A", "nearest": "zoo-A-6", "distance": 2.6, "relative": 0.51, "near_copy": False,
            "nearest_is_source": True,
            "iou": 0.62, "test_auroc": 0.71}
    return {"near_copy_below": 0.5, "distance": "L2 over conv1+conv2 weights and biases, after weight matching",
            "methods": ["dbscan", "kmeans", "ocsvm"], "nearest_scored_here": 3,
            "zoo": {L: {"typical_distance": 5.1, "nearest_other_median": 4.7, "nearest_other_median_relative": 0.92}
                    for L in "AB"},
            "generated-study": {"n": 48, "relative_median": 0.55, "relative_min": 0.42, "near_copies": 7,
                                "nearest_domain": {"A": 24, "B": 24}, "nearest_is_source": 40, "iou_median_dbscan": 1.0,
                                "iou_median_kmeans": 0.6, "iou_median_ocsvm": None,
                                "best_on_val": {"kmeans": best, "ocsvm": {**best, "near_copy": True, "iou": None}}},
            "zoo-A": {"n": 48, "relative_median": 0.9, "relative_min": 0.7, "near_copies": 0,
                      "nearest_domain": {"A": 48, "B": 0}, "iou_median_dbscan": 1.0, "iou_median_kmeans": 0.5,
                      "iou_median_ocsvm": 0.4}}


def paragraphs(md: str) -> list[str]:
    """Prose blocks of a Markdown text: blank-line separated, each list item on its own; tables, headings,
    images and code left out."""
    out = []
    for block in re.split(r"\n\s*\n", md):
        lines = [x for x in block.splitlines() if x.strip()]
        if not lines or lines[0].startswith(("|", "#", "![", "```", "_(")) or lines[0].startswith("_") and \
                lines[0].endswith("_"):
            continue
        if lines[0].startswith("- "):
            item: list[str] = []
            for x in lines:
                if x.startswith("- ") and item:
                    out.append(" ".join(item))
                    item = []
                item.append(x)
            out.append(" ".join(item))
        else:
            out.append(" ".join(lines))
    return out


def test_the_report_opens_with_the_primary_endpoint_and_no_paragraph_runs_over_100_words(tmp_path):
    synthetic_project(tmp_path)
    md = build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    body = [b for b in md.split("\n\n") if b.strip()]
    assert body[0] == "# zoofusion report"
    assert body[1].startswith("**Primary endpoint** (params.yaml `verdict.primary`, not yet committed")
    assert body[2].startswith("![Every comparison") and "(report/forest.png)" in body[2]
    assert md.index("report/forest.png") < md.index("| ")  # the forest plot before every table
    long = [(len(p.split()), p[:80]) for p in paragraphs(md) if len(p.split()) > 100]
    assert not long, f"paragraphs over 100 words: {long}"
    assert len(paragraphs(md)) > 10  # the walk found the prose
    assert "ARI is 0 at chance whatever the share of black cats, but it is not prevalence-free" in md
    assert not re.search(r"adjusted Rand index[^.]*prevalence-free metric", md)
    assert "this report is ONE run" in md and "`make replicate` runs 5 seeds" in md  # one seed of how many


def test_the_replicated_section_names_its_profile_and_quotes_the_file(tmp_path):
    synthetic_project(tmp_path)
    rep = json.loads((tmp_path / "reports/replication.json").read_text())
    md = build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    section = md[md.index("## Replicated across pipeline seeds"):md.index("## What was run")]
    pe = rep["pooled"]["primary"]
    assert f"commit `{rep['commit'][:7]}`" in section and "The reduced profile, not this run's" in section
    assert all(f"`{k}={json.dumps(v)}`" in section for k, v in rep["profile"].items())
    for s in rep["per_seed"]:  # one row per seed, its difference as the file has it
        assert f"| {s['seed']} | {s['experiment']} |" in section
        assert f"{s['endpoints']['primary']['difference']:+.3f}" in section
    assert f"**{pe['mean']:+.3f}** (sd {pe['sd']:.3f}" in section and f"[{pe['low']:+.3f}, {pe['high']:+.3f}]" in section
    assert f"detects a difference of {pe['mdd_one_run']:.3f} AUROC" in section  # the MDD from the seeds' spread
    _json(tmp_path / "reports/replication.json", {**rep, "pooled": {}})
    md = build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    assert "holds no pooled primary endpoint yet: run `make replicate`" in md


def test_the_report_shows_every_arm_and_names_the_primary_arm(tmp_path):
    synthetic_project(tmp_path)
    md = build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    primary = md.split("\n\n")[1]
    assert "with KMeans in the UMAP arm (the study's protocol" in primary
    # each kind at its best, arm by arm: one row per kind, one column per method of every arm
    assert "| Kind | KMeans (AUROC) | KMeans (no UMAP) (AUROC) | linear probe (AUROC) |" in md
    assert "| darkness | 0.354 | 0.788 | 0.354 |" in md


def test_the_forest_plot_is_drawn(tmp_path):
    from zoofusion.render.figures import forest_plot
    from zoofusion.render.kernel_grid import save_figure

    synthetic_project(tmp_path)
    rows = forest_rows(json.loads((tmp_path / "metrics/evaluate.json").read_text()))
    assert sum(r["primary"] for r in rows) == 1 and len(rows) == 1 + 27
    assert {r["label"] for r in rows} >= {"aligned gen. − aligned merge (Holm p 0.02)",
                                          "aligned gen. − study gen. (Holm p 0.02)"}
    f = save_figure(forest_plot(rows, "t"), tmp_path / "forest.png")
    assert f.read_bytes()[:4] == b"\x89PNG"


def test_declaration_is_checked_against_git(tmp_path):
    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    git("add", "params.yaml")
    git("commit", "-qm", "declare")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert declaration(make_params({"verdict": {"declared_in": ""}}), tmp_path).startswith("not yet committed")
    assert declaration(make_params({"verdict": {"declared_in": head}}), tmp_path) == f"committed in `{head}`"
    other = make_params({"verdict": {"declared_in": head, "primary": {"method": "ocsvm"}}})
    assert "declares a different primary endpoint" in declaration(other, tmp_path)
    assert "could not show" in declaration(make_params({"verdict": {"declared_in": "deadbee"}}), tmp_path)


def test_the_report_has_the_novelty_section_and_the_study_side_by_side(tmp_path):
    synthetic_project(tmp_path)
    md = build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    assert "## Novelty: new models or near-copies of zoo models?" in md and "(novelty/novelty.png)" in md
    assert ("`study/6/A` lies at 0.510 (distance 2.60) from its nearest zoo model `zoo-A-6` (its own source model), "
            "so it is new") in md
    assert "so it is a near-copy by this threshold; error IoU with it not computable" in md
    assert "below 0.5 a candidate is called a near-copy" in md and "arXiv 2506.07998" in md
    assert "## The study side by side" in md and "| Patel & Jain 2024 (reported) | KMeans |" in md
    assert "0.876" in md and "0.887" in md and "0.820" in md and "0.618" in md
    assert "entropy above 1 bit" in md and "purity below accuracy" in md and "precision and recall" in md


def test_a_bad_study_file_stops_the_report_with_one_line(tmp_path):
    from zoofusion.reference import StudyError

    synthetic_project(tmp_path)
    f = tmp_path / "references/patel_jain_2024.yaml"
    f.write_text(f.read_text().replace("value: 0.876", "value: high"))
    with pytest.raises(StudyError) as e:
        build(make_params({"verdict": {"declared_in": ""}}), tmp_path)
    assert "\n" not in str(e.value) and "methods.kmeans.accuracy.value: expected a number, got 'high'" in str(e.value)
