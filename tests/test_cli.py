"""Every stage's command line: bad params or a missing input end in one line naming the stage, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, params_dict
from zoofusion.stages import kernels, zoo


def test_bad_params_is_one_line_naming_stage_and_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params_dict({"zoo": {"n_models": {"cat": -3}}})))
    with pytest.raises(SystemExit) as e:
        zoo.main(["--domain", "cat", "--params", str(p)])
    assert str(e.value) == "zoo@cat: zoo.n_models.cat: must be > 0, got -3"


def test_missing_input_is_one_line_and_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        kernels.main(["--params", str(ROOT / "params.yaml")])
    assert str(e.value) == "kernels: data/zoo/black/weights.pt: missing; run `dvc repro zoo@black` first"


def test_a_stage_process_prints_one_line_and_exits_1(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params_dict({"seed": 1, "zoo": {"epoch": 3}})))
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.generate", "--variant", "aligned", "--params", str(p)],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "generate@aligned: zoo.epoch: unknown key (allowed under zoo: n_models, epochs, batch_size, lr, val_fraction, "
        "group_size, shard_size, workers, grid_models, data_order, path)"]


@pytest.mark.e2e
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_up_front(tmp_path):
    """One line before any MLflow run or cache folder exists."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params_dict({"device": "cuda"})))
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.zoo", "--domain", "black", "--params", str(p)],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "zoo@black: device: cuda, but torch sees no CUDA GPU on this machine; set device: cpu (or auto) in params.yaml"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.e2e
def test_validate_stage_refuses_a_typo_nobody_reads(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params_dict({"zoo": {"epochs": 2, "epoch": 5}})))
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.validate", "--params", str(p)], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("validate: zoo.epoch: unknown key")
    assert not (tmp_path / "data" / "validated.txt").exists()


@pytest.mark.e2e
def test_an_unreachable_ray_cluster_or_mlflow_server_stops_the_stage_before_any_work(tmp_path):
    """External addresses are checked at the start of each stage (validate does not rerun when only they change)."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = params_dict({"executor": {"backend": "ray", "address": f"127.0.0.1:{port}"}})
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.zoo", "--domain", "black", "--params", str(p)],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"zoo@black: executor.address: no Ray cluster answers at 127.0.0.1:{port}; start it (`ray start --head` "
        "there) or set executor.backend: local"]
    assert not (tmp_path / "data").exists()  # nothing made, nothing read
    raw["executor"].update(backend="local", address="")
    p.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.validate", "--params", str(p)], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"validate: MLFLOW_TRACKING_URI: no MLflow server answers at http://127.0.0.1:{port}; start it "
        "(scripts/services.sh start) or unset MLFLOW_TRACKING_URI for the local store"]
