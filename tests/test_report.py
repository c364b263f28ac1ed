"""The report renders the verdict from evaluate's intervals, and its HTML works offline."""

from __future__ import annotations

from zoofusion.render.report import md_to_html
from zoofusion.steps.report import answers_text, comparison_rows, distance_rows, verdict_text


def _ev(no_black_cats: bool = False) -> dict:
    c = {"method": "kmeans", "metric": "auroc", "kind": "random", "best_diff": 0.05, "best_low": 0.01,
         "best_high": 0.09, "mean_diff": -0.01, "mean_low": -0.03, "mean_high": 0.02, "outcome": "generated",
         "mean_outcome": "none"}
    return {"test_images": 300, "test_black_cat_share": 0.1,
            "budget_per_kind": {"generated-study": 48, "generated-aligned": 48, "pixels": 1},
            "verdict": {"no_method_finds_black_cats": no_black_cats, "comparisons": [c],
                        "answers": {"generated-aligned-vs-random": "No: aligned kernels beat random with no method."},
                        "sentence": "With KMeans (AUROC, ...), generated kernels beat random init (untrained)."}}


def test_verdict_states_prevalence_budget_and_the_interval_sentence():
    text = verdict_text(_ev())
    assert "300 images, 10.0% of them black cats" in text and "generated models: 48;" in text
    assert text.endswith("generated kernels beat random init (untrained).")
    assert "No method finds black cats" not in text
    assert "No method finds black cats" in verdict_text(_ev(no_black_cats=True))
    (row,) = comparison_rows(_ev())
    assert row["Best on val: generated − other [95% CI]"] == "+0.050 [+0.010, +0.090]"
    assert row["Verdict"] == "generated better" and row["On average"] == "no difference shown"
    assert answers_text(_ev()) == ["- No: aligned kernels beat random with no method."]


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
