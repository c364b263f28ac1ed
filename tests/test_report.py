"""The report renders the verdict from evaluate's intervals, and its HTML works offline."""

from __future__ import annotations

from zoofusion.render.report import md_to_html
from zoofusion.stages.report import comparison_rows, verdict_text


def _ev(no_black_cats: bool = False) -> dict:
    c = {"method": "kmeans", "metric": "auroc", "kind": "random", "best_diff": 0.05, "best_low": 0.01,
         "best_high": 0.09, "mean_diff": -0.01, "mean_low": -0.03, "mean_high": 0.02, "outcome": "generated",
         "mean_outcome": "none"}
    return {"test_images": 300, "test_black_cat_share": 0.1, "budget_per_kind": {"generated": 48},
            "verdict": {"no_method_finds_black_cats": no_black_cats, "comparisons": [c],
                        "sentence": "With KMeans (AUROC, ...), generated kernels beat random init (untrained)."}}


def test_verdict_states_prevalence_budget_and_the_interval_sentence():
    text = verdict_text(_ev())
    assert "300 images, 10.0% of them black cats" in text and "budget of candidates (generated: 48" in text
    assert text.endswith("generated kernels beat random init (untrained).")
    assert "No method finds black cats" not in text
    assert "No method finds black cats" in verdict_text(_ev(no_black_cats=True))
    (row,) = comparison_rows(_ev())
    assert row["Best on val: generated − baseline [95% CI]"] == "+0.050 [+0.010, +0.090]"
    assert row["Verdict"] == "generated better" and row["On average"] == "no difference shown"


def test_html_embeds_images_and_loads_nothing(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    html = md_to_html("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![a figure](fig.png)\n", tmp_path)
    assert "<table>" in html and "<h1>T</h1>" in html
    assert 'src="data:image/png;base64,' in html and "http" not in html
