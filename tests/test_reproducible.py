"""One answer: two scratch copies of the project, run at the same time on one machine through the tiny pipeline,
give byte-identical DVC outputs for every stage (same code, params and data; different folders and processes).

A tier of its own (`-m repro`, `make test-repro`), which CI runs after `make test`: two pipelines at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import LABELS, ROOT, TARBALL, TINY, copy_project, deep_merge

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.repro, pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data")]


def scratch(work: Path) -> dict:
    work.mkdir(parents=True)
    copy_project(work)
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["data"].update(path=str(TARBALL), labels=str(LABELS))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(work / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=work, env=env, check=True)
    return env


def repro(work: Path, env: dict) -> str:
    p = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def outputs(work: Path) -> dict[str, str]:
    """Every stage's outs and metrics with the md5 dvc.lock recorded (folders: DVC's md5 of their listing)."""
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    return {f"{stage}:{o['path']}": o["md5"] for stage, body in lock.items() for o in body.get("outs", [])}


def test_two_clones_at_once_give_identical_bytes(tmp_path):
    works = [tmp_path / "one", tmp_path / "two"]
    envs = [scratch(w) for w in works]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(repro, works, envs))
    a, b = (outputs(w) for w in works)
    assert set(a) == set(b) and len(a) >= 15
    differ = sorted(k for k in a if a[k] != b[k])
    detail = []
    for k in differ:  # name the files inside a differing folder
        path = k.split(":", 1)[1]
        one, two = works[0] / path, works[1] / path
        files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file()) if one.is_dir() else [Path("")]
        detail += [f"{path}/{f}" for f in files if (one / f).read_bytes() != (two / f).read_bytes()]
    assert not differ, f"outputs differ between two identical runs: {detail or differ}"
