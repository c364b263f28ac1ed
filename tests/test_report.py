"""The report's verdict is drawn from the numbers, and its HTML works offline."""

from __future__ import annotations

from zoofusion.stages.report import md_to_html, verdict


def _ev(generated: float, baseline: float) -> dict:
    kinds = {"generated": generated, "random": baseline, "pixels": baseline - 0.15}
    return {k: {m: {"best_on_val_test_accuracy": v, "mean_test_accuracy": v - 0.05}
                for m in ("kmeans", "dbscan", "ocsvm")} for k, v in kinds.items()}


def test_verdict_counts_wins_and_reads_the_margin():
    text, rows = verdict(_ev(0.80, 0.70), test_positive_share=1 / 3)
    assert "beat the matching baseline in 6 of 6" in text and "supports the study's claim" in text
    assert rows[0]["Generated (best on val)"] == 0.80 and rows[0]["All 'other' (chance)"] == round(2 / 3, 4)
    text, _ = verdict(_ev(0.70, 0.80), test_positive_share=1 / 3)
    assert "in 3 of 6" in text and "do not support" in text  # beats pixels only
    text, _ = verdict(_ev(0.71, 0.70), test_positive_share=1 / 3)
    assert "within 0.02" in text


def test_html_embeds_images_and_loads_nothing(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    html = md_to_html("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![a figure](fig.png)\n", tmp_path)
    assert "<table>" in html and "<h1>T</h1>" in html
    assert 'src="data:image/png;base64,' in html and "http" not in html
