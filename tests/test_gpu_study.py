"""scripts/gpu_study.sh, the study on a lent GPU through DVC + MLflow, run tiny on CPU where a device call would run
it: a copy of the tracked files without .git, data/source carried beside them. A first call stops at its call limit
(exit 75), the same command goes on to the end, and a third finds the experiment done."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LABELS, ROOT, TARBALL, TINY, TINY_EVALUATE_RUNS

pytestmark = [pytest.mark.gpu_script, pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data")]


def tiny_overrides(over: dict, prefix: str = "") -> list[str]:
    """The tiny profile as `-S key=value` arguments (the image paths stay params.yaml's data/source)."""
    out = []
    for k, v in over.items():
        if isinstance(v, dict):
            out += tiny_overrides(v, f"{prefix}{k}.")
        elif f"{prefix}{k}" not in ("data.path", "data.labels"):
            out += ["-S", f"{prefix}{k}={json.dumps(v) if isinstance(v, list) else v}"]
    return out


def device_copy(dst: Path) -> Path:
    """What a device call sends: the tracked files (no .git), and data/source as carried."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    for f in (TARBALL, LABELS):
        shutil.copy(f, dst / "data" / "source" / f.name)
    return dst


def left_running(work: Path) -> list[str]:
    """Processes whose working folder is in `work`."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and Path(os.readlink(p / "cwd")).is_relative_to(work):
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def call(work: Path, env: dict, **over: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_study.sh", *tiny_overrides(TINY)], cwd=work, env={**env, **over},
                          capture_output=True, text=True, timeout=900)


def test_the_gpu_study_script_stops_at_its_call_limit_and_goes_on(tmp_path):
    work = device_copy(tmp_path / "copy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "GIT_"))}
    env.update(PY=sys.executable, ZF_DEVICE="cpu", ZF_EXP="tiny-gpu", MLFLOW_DISABLE_TELEMETRY="true",
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    first = call(work, env, ZF_CALL_S="25")
    out = first.stdout + first.stderr
    assert first.returncode == 75, out[-3000:]
    assert "run the same command again to go on" in out
    assert (work / ".git").is_dir()  # made a repository, as dvc exp run needs
    assert not left_running(work)  # dvc and its stage ended with the call

    second = call(work, env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    stage = dict(re.findall(r"^stage_seconds_(\S+): ([\d.]+)", out, re.M))
    assert {"zoo@black", "cyclegan", "generate@study", "evaluate", "total"} <= set(stage), out[-3000:]
    assert re.search(r"^projected_hours_total_16_machines: [\d.]+$", out, re.M)
    assert re.search(r"^zoo_(black|cat)_model_images_per_s: \d+ .*% of the fp32 matmul peak|^zoo_model_images_per_s: none",
                     out, re.M)
    assert (work / "metrics" / "evaluate.json").is_file() and (work / "gpu_study_numbers.txt").is_file()
    code = """
import json, mlflow
c = mlflow.MlflowClient()
exp = {e.name: e.experiment_id for e in c.search_experiments()}
runs = c.search_runs(list(exp.values()), max_results=5000)
kids = lambda name: [r for r in runs if r.info.experiment_id == exp[name] and "mlflow.parentRunId" in r.data.tags
                     and r.info.status == "FINISHED"]
print(json.dumps({"running": sum(r.info.status == "RUNNING" for r in runs), "cnns": len(kids("zoo")),
                  "candidates": len(kids("generated-models")),
                  "exps": sorted({r.data.tags.get("dvc_exp") for r in runs if r.info.status == "FINISHED"})}))
"""
    env_db = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONPATH": str(work / "src")}
    seen = json.loads(subprocess.run([sys.executable, "-c", code], cwd=work, env=env_db, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])
    # every run ended (the interrupted call's as KILLED), each CNN logged once across both calls
    assert seen["running"] == 0 and seen["exps"] == ["tiny-gpu"], seen
    assert seen["cnns"] == TINY["zoo"]["n_models"]["black"] + TINY["zoo"]["n_models"]["cat"], seen
    assert seen["candidates"] == TINY_EVALUATE_RUNS - 1, seen  # the children of one evaluate run
    assert re.search(r"^mlflow_runs: \d+ ", out, re.M)

    third = call(work, env)
    assert third.returncode == 0 and "experiment tiny-gpu has run already" in third.stdout, third.stdout[-2000:]
