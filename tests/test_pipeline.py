"""End to end: the real DVC pipeline on a tiny profile, in a scratch copy of the project.

Runs `dvc repro` for real (every stage, the real image tarball; once per session, conftest.tiny_pipeline, shared
with tests/test_pipeline_edits.py), then checks the outputs, that a second `dvc repro` does nothing, that a changed data param makes the data stage stale, that MLflow runs carry their
code and data versions, and that `dvc push` / `dvc pull` restore the datasets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import TARBALL, TINY_EVALUATE_RUNS, copy_tiny, sh

pytestmark = [pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data beside the repo"), pytest.mark.e2e]


@pytest.fixture(scope="module")
def project(tiny_pipeline, tmp_path_factory):
    """This file's copy of the tiny pipeline's scratch project (conftest.tiny_pipeline: `dvc repro` run once)."""
    return copy_tiny(tiny_pipeline, tmp_path_factory.mktemp("pipeline") / "project")


def test_pipeline_outputs(project):
    work, _, _ = project
    for f in ("data/prepared/black.npz", "data/testset/test.npz", "data/zoo/black/weights.pt",
              "data/kernels/raw/cat.pt", "data/kernels/aligned/cat.pt", "data/cyclegan/study/conv2/generators.pt",
              "data/cyclegan/aligned/pair/generators.pt", "data/generated/study/models.pt",
              "data/generated/aligned/models.pt", "reports/tables/study_kmeans_study.md",
              "data/cyclegan/study/conv1/generators_init.pt", "data/generated/study/untrained.pt",
              "data/control/weights.pt", "data/control/train_set.csv", "metrics/control.json",
              "reports/tables/study_kmeans_aligned.md", "reports/tables/baselines.csv", "data/evaluate/candidates.csv",
              "reports/novelty/novelty.csv", "reports/novelty/novelty.png", "metrics/novelty.json"):
        assert (work / f).is_file(), f
    zoo = json.loads((work / "metrics/zoo_black.json").read_text())
    assert zoo["count"] == 3 and 0 <= zoo["val_acc_min"] <= zoo["val_acc_max"] <= 1
    control = json.loads((work / "metrics/control.json").read_text())
    assert control["split"] == "test" and control["positives"] >= 2 and control["n_models"] == 4
    for variant in ("study", "aligned"):
        gan = json.loads((work / f"metrics/cyclegan_{variant}.json").read_text())
        assert {"conv1", "conv2"} <= set(gan) and gan["conv2"]["dist_A_B"] > 0
    assert json.loads((work / "metrics/cyclegan_aligned.json").read_text())["translate"] == "pair"
    ev = json.loads((work / "metrics/evaluate.json").read_text())
    assert ev["n_generated"] == 4  # the budget: 2 of each variant's 6 translated models (3 source models per domain)
    assert ev["budget_per_kind"] == {"generated-study": 2, "generated-aligned": 2, "random": 2, "zoo-A": 2,
                                     "zoo-B": 2, "average": 2, "aligned": 2, "concat": 2, "pixels": 1, "darkness": 1,
                                     "avg-k": 2, "gauss-fit": 2, "noise-0.1": 2, "noise-0.5": 2, "head-A": 2,
                                     "head-B": 2, "experts": 2, "control-positive": 2, "control-head": 2,
                                     "untrained-study": 2, "untrained-aligned": 2}
    assert {"generated-study", "generated-aligned", "random", "zoo-A", "zoo-B", "average", "pixels"} <= set(ev)
    v = ev["verdict"]
    # per method of every arm (3 through UMAP, 3 without, the probe): each variant vs the 19 baseline kinds (the
    # literature's 4, the heads' 3, the controls' 4 among them), and aligned vs study
    assert len(v["comparisons"]) == 7 * (19 + 19 + 1) and all(c["best_low"] <= c["best_diff"] <= c["best_high"]
                                                            for c in v["comparisons"])
    assert set(v["answers"]) == {"generated-study-vs-random", "generated-study-vs-aligned",
                                 "generated-aligned-vs-random", "generated-aligned-vs-aligned"}
    assert any(p.suffix == ".png" for p in (work / "reports/figures").iterdir())
    pr = ev["primary"]  # the declared endpoint, its selection-aware interval and what it left out
    assert (pr["metric"], pr["method"], pr["arm"]) == ("auroc", "kmeans", "umap") and pr["low"] <= pr["difference"] <= pr["high"]
    assert "candidates" in pr["sources"] and "pipeline_seeds" in pr["not_included"] and pr["mdd"] >= 0
    assert all("p_holm" in c and "adjusted_outcome" in c for c in v["comparisons"])
    report = (work / "reports/report.md").read_text()
    assert report.split("\n\n")[1].startswith("**Primary endpoint**") and (work / "reports/report/forest.png").is_file()
    assert "## Verdict" in report and "## Tuned vs untuned" in report and "95% CI" in report
    assert "Every kind, same budget" in report and "figures/kinds.png" in report
    assert "Every kind at its best, arm by arm" in report and "in the UMAP arm" in report.split("\n\n")[1]
    assert (work / "reports/tables/kinds_probe.csv").is_file() and (work / "reports/tables/kinds_kmeans.csv").is_file()
    assert "## Translation variants" in report and "kernels of the aligned translation" in report
    assert "## Novelty: new models or near-copies" in report and "novelty/novelty.png" in report
    assert "## The study side by side" in report and "Patel & Jain 2024 (reported)" in report
    nv = json.loads((work / "metrics/novelty.json").read_text())
    assert nv["zoo"]["A"]["typical_distance"] > 0 and "generated-study" in nv and "zoo-A" in nv
    html = (work / "reports/report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "src=\"http" not in html


def test_second_repro_does_nothing(project):
    work, env, _ = project
    out = sh(["dvc", "repro"], work, env)
    assert "Running stage" not in out, out
    assert "up to date" in sh(["dvc", "status"], work, env)


def test_changed_data_param_makes_data_stale(project):
    work, env, _ = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["sheet_per_class"] = 11
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = sh(["dvc", "status", "data"], work, env)
        assert "data:" in status and "params.yaml" in status, status
    finally:
        params["data"]["sheet_per_class"] = 10
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_mlflow_runs_trace_code_and_data(project):
    work, env, _ = project
    code = f"""
import mlflow, json
mlflow.set_tracking_uri({env['MLFLOW_TRACKING_URI']!r})
c = mlflow.MlflowClient()
out = {{}}
for name in ("zoo", "cyclegan", "generated-models", "pipeline"):
    e = c.get_experiment_by_name(name)
    runs = c.search_runs([e.experiment_id], max_results=1000)
    out[name] = [dict(r.data.tags) for r in runs]
print(json.dumps(out))
"""
    runs = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout.strip().splitlines()[-1])
    assert len(runs["zoo"]) == 2 + 6  # a parent per domain, a child per CNN
    # every stage that makes something logs it: those without runs of their own log one in `pipeline`
    assert {t["dvc_stage"] for t in runs["pipeline"]} >= {"data", "testset", "kernels", "control", "novelty", "tune",
                                                          "tuned", "report"}
    assert len(runs["generated-models"]) == TINY_EVALUATE_RUNS
    assert {t["dvc_stage"] for t in runs["cyclegan"]} == {"cyclegan", "generate@study", "generate@aligned"}
    # the cyclegan stage: a parent run and a child run per unit (study conv1, conv2; aligned pair)
    gans = [t for t in runs["cyclegan"] if t["dvc_stage"] == "cyclegan"]
    assert sorted(t.get("unit", "parent") for t in gans) == ["conv1", "conv2", "pair", "parent"]
    parents = [t for t in runs["zoo"] if "mlflow.parentRunId" not in t]
    for t in parents:
        assert t["dvc_stage"].startswith("zoo@")
        md5 = [v for k, v in t.items() if k.startswith("data.data/prepared/")]
        assert md5 and all(len(v) == 32 for v in md5), t


def test_dvc_push_then_pull_restores_data(project):
    work, env, _ = project
    before = (work / "data/prepared/cat.npz").read_bytes()
    sh(["dvc", "push", "-q"], work, env)
    shutil.rmtree(work / ".dvc" / "cache")
    shutil.rmtree(work / "data" / "prepared")
    sh(["dvc", "pull", "-q"], work, env)
    assert (work / "data/prepared/cat.npz").read_bytes() == before


def test_selected_generated_model_serves_400d_features(project):
    work, env, _ = project
    code = f"""
import mlflow, numpy as np
from zoofusion.core.cnn import preprocess
from zoofusion.steps.generate import load_models
from zoofusion.io import load_npz
mlflow.set_tracking_uri({env['MLFLOW_TRACKING_URI']!r})
runs = mlflow.search_runs(experiment_names=["generated-models"],
                          filter_string="tags.selected_on_val = 'true' and tags.kind = 'generated-aligned'")
assert len(runs) == 1, runs
r = runs.iloc[0]
assert r["params.variant"] == "aligned" and r["params.kind"] == "generated-aligned"
x = load_npz("data/testset/test.npz")["images"][:6]
out = np.asarray(mlflow.pyfunc.load_model(f"runs:/{{r.run_id}}/feature_extractor").predict(x))
ref = load_models("data/generated/aligned/models.pt")[r["tags.mlflow.runName"].removeprefix("aligned/")]
ref = ref(preprocess(x)).detach().numpy()
print(out.shape, float(np.abs(out - ref).max()))
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    shape, diff = p.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert shape == "(6, 400)" and float(diff) < 1e-5


def test_champion_is_registered_and_runs_show_their_datasets(project):
    """models:/zoofusion-generated@champion serves the best-on-val model; every run lists its data versions."""
    work, env, _ = project
    code = f"""
import json, mlflow, numpy as np
from zoofusion.core.cnn import preprocess
from zoofusion.steps.generate import load_models
from zoofusion.io import load_npz
mlflow.set_tracking_uri({env['MLFLOW_TRACKING_URI']!r})
c = mlflow.MlflowClient()
v = c.get_model_version_by_alias("zoofusion-generated", "champion")
sel = json.load(open("data/evaluate/selected.json"))["champion"]  # best on val over every generated kind
x = load_npz("data/testset/test.npz")["images"][:5]
out = np.asarray(mlflow.pyfunc.load_model("models:/zoofusion-generated@champion").predict(x))
variant, mid = sel.split("/", 1)  # e.g. aligned/0/A: the variant's own models file
ref = load_models(f"data/generated/{{variant}}/models.pt")[mid](preprocess(x)).detach().numpy()
runs = c.search_runs([c.get_experiment_by_name(n).experiment_id for n in ("generated-models", "zoo", "cyclegan")],
                     max_results=1000)
ctx = [sorted(t.value for d in r.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context") for r in runs]
# its comparison tags are its own variant's: none compares it with itself, and all its kinds are there
own = f"generated-{{variant}}="
assert not any(own in v.tags[f"vs_{{m}}"] for m in ("kmeans", "dbscan", "ocsvm", "probe")), v.tags
outcomes = {{m: dict(o.split("=") for o in v.tags[f"vs_{{m}}"].split(", ")) for m in ("kmeans", "probe")}}
assert all(outcomes[m]["random"].split("/")[0] in ("generated", "baseline", "none") for m in outcomes), v.tags
print(json.dumps([v.tags["model_id"], sel, list(out.shape), float(np.abs(out - ref).max()), "verdict" in v.tags,
                  sum(1 for c_ in ctx if not c_), sorted(set(tuple(c_) for c_ in ctx))]))
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    model_id, sel, shape, diff, has_verdict, no_data, contexts = json.loads(p.stdout.strip().splitlines()[-1])
    assert model_id == sel and shape == [5, 400] and diff < 1e-5 and has_verdict
    # every run lists its inputs; evaluate's parent has the training inputs, val and test
    assert no_data == 0 and any({"train", "val", "test"} <= set(c) for c in contexts), contexts


def test_cyclegan_runs_log_curves_and_grids_per_epoch(project):
    work, env, _ = project
    code = f"""
import mlflow, json
c = mlflow.MlflowClient({env['MLFLOW_TRACKING_URI']!r})
e = c.get_experiment_by_name("cyclegan")
r = c.search_runs([e.experiment_id], "attributes.run_name = 'cyclegan-study-conv1'")[0]
grids = sorted(a.path for a in c.list_artifacts(r.info.run_id, "grids"))
steps = [m.step for m in c.get_metric_history(r.info.run_id, "loss_G")]
print(json.dumps([grids, steps, r.data.tags["dvc_stage"]]))
"""
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    grids, steps, stage = json.loads(p.stdout.strip().splitlines()[-1])
    # TINY: 3 epochs, a grid every 2 and one at the end; curves step by epoch, counted from 1
    assert grids == ["grids/epoch_0002.png", "grids/epoch_0003.png"]
    assert steps == [1, 2, 3] and stage == "cyclegan"


def test_a_params_typo_fails_repro_in_one_line(project):
    """validate runs first on every repro: a key no stage reads still stops the pipeline, naming it."""
    work, env, _ = project
    good = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(good.replace("zoo:\n", "zoo:\n  epoch: 5\n", 1))
    try:
        p = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
        assert p.returncode != 0
        assert "validate: zoo.epoch: unknown key (allowed under zoo:" in p.stderr + p.stdout
        assert "Running stage 'data'" not in p.stdout
    finally:
        (work / "params.yaml").write_text(good)


def test_bench_project_reads_the_runs_per_task_times(project):
    """`bench project` reads the pipeline's per-task times from MLflow and prints every step's hours per machine
    count (from the tiny profile the numbers mean nothing; from a 1/8-scale study they project the study)."""
    work, env, _ = project
    out = sh([sys.executable, "-m", "zoofusion.bench", "project", "--machines", "1,4"], work, env)
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert float(lines["measured_zoo_core_seconds_per_model_black"]) > 0
    assert {f"measured_cyclegan_seconds_per_step_{u}" for u in ("study_conv1", "study_conv2", "aligned_pair")} <= set(lines)
    assert float(lines["measured_evaluate_core_seconds_per_candidate"]) > 0
    assert int(lines["study_zoo_models"]) == 2749 + 1749
    for k in (1, 4):
        hours = {s: float(lines[f"projected_hours_{s}_{k}_machines"]) for s in ("zoo", "cyclegan", "evaluate", "other")}
        assert float(lines[f"projected_hours_total_{k}_machines"]) == pytest.approx(sum(hours.values()), abs=0.02)
    assert float(lines["projected_hours_zoo_4_machines"]) < float(lines["projected_hours_zoo_1_machines"])

