"""The study's reported numbers (references/patel_jain_2024.yaml, zoofusion/reference.py) and the report's table
that sets them beside ours (steps/report_sections.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT
from zoofusion.core.metrics import all_other_rate
from zoofusion.reference import StudyError, load_study
from zoofusion.steps.report_sections import side_by_side

FILE = ROOT / "references/patel_jain_2024.yaml"


def test_the_study_file_loads_with_each_number_and_its_source():
    s = load_study(FILE)
    assert {m: s.methods[m].accuracy.value for m in ("kmeans", "dbscan", "ocsvm")} == \
        {"kmeans": 0.876, "dbscan": 0.887, "ocsvm": 0.820}
    assert s.test_set.all_other_rate.value == 0.618 and s.test_set.images == 89 and s.selection == "test"
    assert all(s.methods[m].accuracy.source for m in s.methods)
    assert len(s.inconsistencies) == 3


@pytest.mark.parametrize("old, new, message", [
    ("value: 0.887", "value: '0.887'", "methods.dbscan.accuracy.value: expected a number, got '0.887'"),
    ("images: 89 ", "images: many ", "test_set.images: expected an integer, got 'many'"),
    ("selection: test", "selection: train", "selection: expected one of 'test' or 'val', got 'train'"),
    ("    purity: null\n  dbscan:", "    purity: null\n    ari: 0.1\n  dbscan:", "methods.kmeans.ari: unknown key"),
])
def test_a_wrong_study_file_is_refused_in_one_line(tmp_path, old, new, message):
    text = FILE.read_text()
    assert old in text
    bad = tmp_path / "study.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(StudyError) as e:
        load_study(bad)
    assert "\n" not in str(e.value) and str(e.value) == f"{bad}: {message}"


def test_a_missing_study_file_is_one_line(tmp_path):
    with pytest.raises(StudyError, match="missing"):
        load_study(tmp_path / "nope.yaml")


def test_the_side_by_side_chance_rate_is_the_all_other_rate_of_the_test_labels():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0])  # 6 of 8 'other'
    assert all_other_rate(y) == 0.75
    ours = [{"source": "ours, study translation", "method": "kmeans", "id": "study/6/A",
             "metrics": {"accuracy": 0.8, "precision": 0.5, "recall": 0.25, "entropy": 0.7, "purity": 0.8}}]
    rows = side_by_side(load_study(FILE), ours, y)
    (study_km,) = [r for r in rows if r["Clustering"] == "KMeans" and r["Source"].startswith("Patel")]
    (our_km,) = [r for r in rows if r["Source"] == "ours, study translation"]
    assert our_km["Chance (all 'other')"] == "0.750" and our_km["Test images"] == "8" and our_km["Chosen on"] == "val"
    assert study_km["Chance (all 'other')"] == "0.618" and study_km["Accuracy"] == "0.876"
    assert study_km["Chosen on"] == "test" and study_km["Test images"] == "~89"
    assert study_km["Entropy"] == "" and our_km["Entropy"] == "0.700"  # not stated by any source: blank, not guessed
    assert len(rows) == 4  # the study's three methods, and ours where we have them
