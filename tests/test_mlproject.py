"""The MLflow project (MLproject): one entry point per DVC stage, each running its stage through DVC.

Fast checks parse MLproject and dvc.yaml and run the entry points' shell commands against a fake `dvc`;
the end-to-end test runs `mlflow run <project> -e testset --env-manager local` for real in a scratch copy
of the project (synthetic images, its own DVC repo and MLflow store).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

BIN = Path(sys.executable).parent
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())
ENTRY_POINTS = MLPROJECT["entry_points"]
OWN = {"params_file", "force"}  # parameters every stage entry point has


def dvc_stages() -> dict[str, list | None]:
    """Stage names of dvc.yaml -> their foreach items (None for a plain stage)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: (list(s["foreach"]) if "foreach" in s else None) for name, s in stages.items()}


def load_project():
    from mlflow.projects._project_spec import load_project as load

    return load(str(ROOT))


def command(entry: str, params: dict | None = None, storage: Path | None = None) -> str:
    """The shell command `mlflow run` would execute (path params resolve against the cwd, as in mlflow)."""
    return load_project().get_entry_point(entry).compute_command(params or {}, str(storage or "/tmp"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI")}
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def test_every_dvc_stage_has_an_entry_point_and_vice_versa():
    stages = set(dvc_stages())
    entries = set(ENTRY_POINTS) - {"main"}
    assert stages - entries == set(), f"DVC stages without an MLproject entry point: {sorted(stages - entries)}"
    assert entries - stages == set(), f"MLproject entry points without a DVC stage: {sorted(entries - stages)}"
    assert "main" in ENTRY_POINTS and MLPROJECT.get("conda_env") == "conda.yaml"
    assert (ROOT / "conda.yaml").is_file()


def argv(cmd: str) -> list[str]:
    """The script's arguments after the params file (which mlflow resolves to an absolute path)."""
    words = cmd.split()
    assert words[:2] == ["bash", "scripts/mlflow_stage.sh"] and Path(words[2]).name == "params.yaml", cmd
    return words[3:]


def test_entry_points_run_their_stage_through_dvc():
    """Each entry point hands its params file, force flag and dvc.yaml target to scripts/mlflow_stage.sh."""
    project = load_project()
    for name, items in dvc_stages().items():
        ep = project.get_entry_point(name)
        assert ep.parameters["params_file"].type == "path" and ep.parameters["params_file"].default == "params.yaml"
        assert ep.parameters["force"].default == "false"
        extra = set(ep.parameters) - OWN
        if items is None:
            assert extra == set(), f"{name}: unexpected parameters {extra}"
            assert argv(ep.compute_command({}, "/tmp")) == ["false", name]
        else:  # a foreach stage: one string parameter picks the item, e.g. zoo@black
            assert len(extra) == 1, f"{name}: expected one parameter for the foreach item, got {extra}"
            (param,) = extra
            assert ep.parameters[param].type == "string" and ep.parameters[param].default is None
            for item in items:
                assert argv(ep.compute_command({param: item, "force": "true"}, "/tmp")) == ["true", f"{name}@{item}"]
    main = project.get_entry_point("main")
    assert set(main.parameters) == {"params_file"}
    assert argv(main.compute_command({}, "/tmp")) == ["false"]


@pytest.fixture
def fake_dvc(tmp_path, monkeypatch):
    """A project folder with params.yaml, and a `dvc` on PATH that records its arguments (exit code settable)."""
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "mlflow_stage.sh", proj / "scripts")
    (proj / "params.yaml").write_text("seed: 1\n")
    (proj / "other.yaml").write_text("seed: 2\n")
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    dvc = fakebin / "dvc"
    dvc.write_text('#!/bin/sh\necho "$@" >> "$FAKE_DVC_LOG"\nexit "${FAKE_DVC_RC:-0}"\n')
    dvc.chmod(dvc.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "dvc.log"
    monkeypatch.chdir(proj)  # mlflow resolves `path` parameters against the cwd

    def run(entry: str, params: dict | None = None, rc: int = 0, with_dvc: bool = True):
        cmd = command(entry, params, tmp_path)
        path = f"{fakebin}:/usr/bin:/bin" if with_dvc else "/usr/bin:/bin"
        env = {"PATH": path, "FAKE_DVC_LOG": str(log), "FAKE_DVC_RC": str(rc)}
        p = subprocess.run(["bash", "-c", cmd], cwd=proj, env=env, capture_output=True, text=True)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return p, calls

    return run


def test_entry_point_commands(fake_dvc):
    p, calls = fake_dvc("testset")
    assert p.returncode == 0, p.stderr
    assert calls == ["repro testset"]  # upstream stages that changed run first; DVC decides
    p, calls = fake_dvc("testset", {"force": "true"})
    assert p.returncode == 0 and calls == ["repro --force --single-item testset"]
    p, calls = fake_dvc("zoo", {"domain": "cat"})
    assert p.returncode == 0 and calls == ["repro zoo@cat"]
    p, calls = fake_dvc("cyclegan", {"force": "true"})  # one stage: every variant's units side by side
    assert p.returncode == 0 and calls == ["repro --force --single-item cyclegan"]
    p, calls = fake_dvc("generate", {"variant": "study"})
    assert p.returncode == 0 and calls == ["repro generate@study"]
    p, calls = fake_dvc("main")
    assert p.returncode == 0 and calls == ["repro"]
    p, calls = fake_dvc("evaluate", {"params_file": "params.yaml"})  # the same file, spelled relative
    assert p.returncode == 0 and calls == ["repro evaluate"]


def test_entry_point_commands_refuse_what_dvc_would_ignore(fake_dvc):
    p, calls = fake_dvc("evaluate", {"params_file": "other.yaml"})
    assert p.returncode == 2 and calls == []
    assert "params.yaml" in p.stderr and "other.yaml" in p.stderr
    p, calls = fake_dvc("main", {"params_file": "other.yaml"})
    assert p.returncode == 2 and calls == []
    p, calls = fake_dvc("zoo", {"domain": "dog"})
    assert p.returncode == 2 and calls == [] and "black or cat" in p.stderr
    p, calls = fake_dvc("generate", {"variant": "best"})
    assert p.returncode == 2 and calls == [] and "study or aligned" in p.stderr
    p, calls = fake_dvc("data", {"force": "yes"})
    assert p.returncode == 2 and calls == []
    p, calls = fake_dvc("data", with_dvc=False)
    assert p.returncode == 127 and "activate" in p.stderr
    p, calls = fake_dvc("kernels", rc=3)  # a failing stage fails the entry point (set -e)
    assert p.returncode == 3 and calls == ["repro kernels"]
