"""End to end, second file: tests that change a copy of the tiny pipeline's project (its code, an `mlflow run`
launch) run here, on whichever pytest worker is free, while tests/test_pipeline.py checks the outputs on the other.

`make test` collects this file last (conftest), so the worker that reaches it finds the tiny pipeline done.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import TARBALL, copy_tiny, sh

pytestmark = [pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data beside the repo"), pytest.mark.e2e]


@pytest.fixture(scope="module")
def project(tiny_pipeline, tmp_path_factory):
    """This file's copy of the tiny pipeline's scratch project (conftest.tiny_pipeline: `dvc repro` run once)."""
    return copy_tiny(tiny_pipeline, tmp_path_factory.mktemp("edits") / "project")


def test_mlflow_run_reruns_a_stage_through_dvc_and_fails_a_refused_launch(project):
    """`mlflow run -e testset -P force=true` reruns testset through DVC (same bytes: dvc.lock unchanged), the
    launcher run is FINISHED with dvc.lock and params.yaml attached; a refused params_file ends FAILED."""
    work, env, _ = project
    lock_text = (work / "dvc.lock").read_text()

    def mlflow_run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mlflow", "run", ".", "-e", "testset", "--env-manager", "local",
                               "--experiment-name", "launches", *extra],
                              cwd=work, env=env, capture_output=True, text=True, timeout=300)

    p = mlflow_run("-P", "force=true")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Running stage 'testset'" in p.stdout + p.stderr
    assert (work / "dvc.lock").read_text() == lock_text
    refused = mlflow_run("-P", "params_file=conda.yaml")
    assert refused.returncode != 0 and "DVC reads params.yaml only" in refused.stderr
    assert (work / "dvc.lock").read_text() == lock_text

    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("launches")
    runs = {r.data.params["params_file"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"params.yaml", "conda.yaml"}
    ok, bad = runs["params.yaml"], runs["conda.yaml"]
    assert ok.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert ok.data.tags["mlflow.project.entryPoint"] == "testset"
    assert {a.path for a in client.list_artifacts(ok.info.run_id, "dvc")} == {"dvc/dvc.lock", "dvc/params.yaml"}
    (dst := work.parent / f"{work.name}-launch-artifacts").mkdir(exist_ok=True)
    local = Path(client.download_artifacts(ok.info.run_id, "dvc/dvc.lock", str(dst)))
    assert local.read_text() == lock_text


def test_a_code_edit_makes_what_runs_it_stale_and_retrains_the_zoo(project):
    """Fresh: editing the CNN's code makes every stage that runs it stale and retrains the zoo for real (no stale
    shard); restoring the code restores the old results from the cache, byte for byte."""
    work, env, _ = project
    cnn = work / "src/zoofusion/core/cnn.py"
    original = cnn.read_text()
    before = (work / "data/zoo/black/weights.pt").read_bytes()
    assert "DATA_SEED_OFFSET = 1_000_003" in original
    cnn.write_text(original.replace("DATA_SEED_OFFSET = 1_000_003", "DATA_SEED_OFFSET = 1_000_033"))
    try:
        stale = sh(["dvc", "status"], work, env)  # DVC sees the edit in every stage that runs the CNN's code
        assert all(f"{st}:" in stale for st in ("zoo@black", "zoo@cat", "generate@study", "evaluate")), stale
        # --single-item: only the zoo reruns (validate and data, stale too, would give the same bytes)
        out = sh(["dvc", "repro", "--single-item", "zoo@black"], work, env)
        assert "Running stage 'zoo@black'" in out and "(0 cached, 2 to train)" in out, out[-3000:]
        assert (work / "data/zoo/black/weights.pt").read_bytes() != before, "the zoo did not change with the code"
    finally:
        cnn.write_text(original)
    # --no-run-cache: DVC's run cache would restore the old outputs itself; the zoo's own shard cache must too
    out = sh(["dvc", "repro", "--single-item", "--no-run-cache", "zoo@black"], work, env)
    assert "Running stage 'zoo@black'" in out and "(2 cached, 0 to train)" in out, out[-3000:]
    assert (work / "data/zoo/black/weights.pt").read_bytes() == before
    # everything up to the kernels is as before
    assert "up to date" in sh(["dvc", "status", "kernels"], work, env)
