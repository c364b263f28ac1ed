"""`python -m zoofusion.bench study` end to end on a tiny synthetic study, as the GPU machine runs it: from
PYTHONPATH=src (no installed package), in two commands that resume from --out, without importing MLflow/DVC/Optuna."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, make_params, small_data_params
from zoofusion.stages.data import run as run_data
from zoofusion.stages.testset import run as run_testset

# Runs bench's main, then reports which tracking packages the process imported.
RUNNER = """import sys
from zoofusion.bench import main
rc = main(sys.argv[1:])
print("imported:", sorted({m.split('.')[0] for m in sys.modules} & {"mlflow", "dvc", "optuna"}))
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """black/cat/val/test .npz of a small synthetic source, as the data and testset stages write them."""
    from conftest import make_labels, make_source

    tmp = tmp_path_factory.mktemp("study")
    params = make_params({"data": small_data_params(make_source(tmp / "images"), make_labels(tmp / "labels.csv"))})
    run_data(params.data, seed=1, out=tmp / "data")
    run_testset(params, prepared=tmp / "data", out=tmp / "testset")
    (tmp / "testset" / "test.npz").rename(tmp / "data" / "test.npz")
    return tmp


def study(tmp, stage: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["study", "--stage", stage, "--data", str(tmp / "data"), "--out", str(tmp / "run"),
            "--json", str(tmp / "copy" / "study.json"), "--params", str(ROOT / "params.yaml"), "--device", "cpu",
            "--scale", "0.001", "--zoo-epochs", "2", "--cyclegan-epochs", "2", "--budget", "2", "--workers", "1",
            "--shard-size", "2", "--set", "kernels.min_val_accuracy=0.0", "--set", "evaluate.n_boot=200", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=tmp, env=env, capture_output=True, text=True)


def figures(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def test_tiny_study_in_two_commands_resumes_and_never_imports_tracking(data):
    # a time limit already spent: no shard starts, the run says so and exits 3
    p = study(data, "zoo", "--time-limit-s", "0.001")
    assert p.returncode == 3, p.stderr[-3000:]
    assert figures(p.stdout)["finished"].startswith("no")
    # `rest` needs the kernels of a zoo run with the same params
    p = study(data, "rest")
    assert p.returncode != 0 and "run --stage zoo first" in p.stderr

    p = study(data, "zoo")
    assert p.returncode == 0, p.stderr[-3000:]
    zoo = figures(p.stdout)
    assert zoo["zoo_black_models"] == "3" and zoo["zoo_cat_models"] == "2" and zoo["zoo_path"] == "single"
    assert float(zoo["zoo_black_s"]) > 0 and int(zoo["zoo_model_images_per_s"]) > 0 and "kernels_s" in zoo

    p = study(data, "rest", "--cyclegan-workers", "2")  # the GPU default trains the CycleGANs in parallel processes
    assert p.returncode == 0, p.stderr[-3000:]
    rest = figures(p.stdout)
    assert rest["imported"] == "[]" and rest["absent_packages_imported"] == "none"
    state = json.loads((data / "run" / "study.json").read_text())
    assert state == json.loads((data / "copy" / "study.json").read_text())
    steps = state["steps"]
    assert set(steps) == {"zoo_black", "zoo_cat", "kernels", "cyclegan_study_conv1", "cyclegan_study_conv2",
                          "cyclegan_aligned_pair", "generate_study", "generate_aligned", "evaluate"}
    for step, figure in (("cyclegan_study_conv1", "cyclegan_study_conv1_s"), ("cyclegan_aligned_pair",
                         "dist_aligned_conv2_GA2B_A_B"), ("cyclegan_study_conv2", "dist_study_conv2_A_B"),
                         ("generate_aligned", "generate_aligned_s"), ("evaluate", "evaluate_s")):
        assert steps[step]["figures"][figure] >= 0
    ev = steps["evaluate"]["figures"]
    assert "generated-study 2, generated-aligned 2, random 2" in ev["evaluate_candidates_per_kind"]
    for kind in ("generated-study", "generated-aligned"):
        for method in ("kmeans", "dbscan", "ocsvm"):  # each comparison: best-on-val difference inside its interval
            est, low, high = map(float, re.search(r"best (\S+) \[(\S+), (\S+)\]",
                                                  ev[f"verdict_{method}_{kind}_vs_random"]).groups())
            assert low <= est <= high
    assert ev["verdict"].startswith("With KMeans") and ev["verdict"] == rest["verdict"]
    assert (data / "run" / "generated" / "aligned" / "models.pt").is_file()

    # everything is done: a rerun trains and evaluates nothing, and prints the same figures
    p = study(data, "all")
    assert p.returncode == 0, p.stderr[-3000:]
    again = figures(p.stdout)
    assert again["evaluate_s"] == rest["evaluate_s"] and again["zoo_black_s"] == zoo["zoo_black_s"]
    assert "shard" not in p.stderr and "checkpoint" not in p.stderr


def test_missing_data_stops_at_once_with_the_fix(tmp_path):
    (tmp_path / "data").mkdir()
    p = study(tmp_path, "all")
    assert p.returncode != 0
    assert "missing black.npz, cat.npz, val.npz, test.npz" in p.stderr
    assert "gpu_study_prepare.sh" in p.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the check
