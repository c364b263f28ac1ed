"""Shared services for real: PostgreSQL (Debian's package) and `mlflow server` on it, started by scripts/services.sh.

Marked `services` (deselected by default; `.ci/run` installs PostgreSQL and runs them): two processes share one
Optuna study in PostgreSQL, and the tiny pipeline runs through `dvc repro` against the tracking server (artifacts
proxied to its --artifacts-destination) and the PostgreSQL Optuna storage. Skipped where the PostgreSQL server
binaries are absent (`scripts/services.sh install`, or `apt-get install -y postgresql`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import LABELS, ROOT, TARBALL, TINY_EVALUATE_RUNS, copy_project

BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "services.sh"
PG_BINARIES = os.environ.get("ZF_PG_BIN") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"))), None)
pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (PG_BINARIES and Path(PG_BINARIES, "pg_ctl").is_file()),
                       reason="PostgreSQL server binaries absent (scripts/services.sh install, "
                              "or apt-get install -y postgresql)"),
]

# The tiny profile of tests/test_pipeline.py (kept here: that module is not imported), on 2 tune workers.
TINY = {
    "data": {"path": str(TARBALL), "labels": str(LABELS), "black_positive": 60, "black_negative": 60,
             "cat_positive": 60, "cat_negative": 60, "negatives_per_positive": 1.0, "sheet_per_class": 10},
    "zoo": {"n_models": {"black": 3, "cat": 3}, "epochs": 2, "group_size": 2, "shard_size": 2, "workers": 2, "path": "single",
            "grid_models": 2},
    "kernels": {"min_val_accuracy": 0.0},
    "cyclegan": {"epochs": 3, "checkpoint_every": 2, "grid_every": 2, "hidden": 8},
    "evaluate": {"n_selected": 1, "budget": 2, "n_boot": 200, "workers": 1},
    "tune": {"n_trials": 2, "top_models": 1, "workers": 2},
}


@dataclass
class Services:
    dir: Path
    tracking_uri: str  # http://127.0.0.1:<port>
    storage: str  # postgresql+psycopg2://...@127.0.0.1:<port>/optuna
    env: dict


def script(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def live_processes(pgids: set[int], pids: set[int]) -> list[str]:
    """Processes (not zombies) in one of the process groups, or with one of the pids or their children."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # state ppid pgrp ...
        pid, state, ppid, pgrp = int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])
        if state not in "ZX" and (pgrp in pgids or pid in pids or ppid in pids):
            out.append(f"{pid} {text[:text.rindex(')') + 1]}")
    return out


@pytest.fixture(scope="module")
def services():
    """PostgreSQL + mlflow server from scripts/services.sh in a fresh folder; stopped, and checked gone, after."""
    # Not pytest's tmp_path: its folders are 0700, and PostgreSQL runs as `postgres` when we are root.
    d = Path(tempfile.mkdtemp(prefix="zoofusion-services-"))
    d.chmod(0o755)
    env = {**os.environ, "ZF_PYTHON": sys.executable, "ZF_MLFLOW": str(BIN / "mlflow"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    pgids: set[int] = set()
    pids: set[int] = set()
    try:
        t = time.monotonic()
        p = script("start", str(d), env=env)
        assert p.returncode == 0, f"services.sh start failed:\n{p.stdout}\n{p.stderr}"
        print(f"services.sh start: {time.monotonic() - t:.1f} s\n{p.stderr}")
        exports = dict(line.removeprefix("export ").split("=", 1) for line in p.stdout.splitlines())
        state = dict(line.split("=", 1) for line in (d / "services.env").read_text().splitlines())
        pgids.add(int(state["MLFLOW_PGID"]))
        pids.add(int((d / "pgdata" / "postmaster.pid").read_text().split()[0]))
        yield Services(d, exports["MLFLOW_TRACKING_URI"], exports["OPTUNA_STORAGE"], env)
    finally:
        p = script("stop", str(d), env=env)
        left = live_processes(pgids, pids)
        if p.returncode == 0 and not left:
            shutil.rmtree(d, ignore_errors=True)
        assert p.returncode == 0, f"services.sh stop failed:\n{p.stdout}\n{p.stderr}"
        assert not left, "processes left after services.sh stop:\n" + "\n".join(left)


def test_services_listen_on_localhost_and_report_status(services):
    assert services.tracking_uri.startswith("http://127.0.0.1:")
    assert services.storage.startswith("postgresql+psycopg2://") and "@127.0.0.1:" in services.storage
    p = script("status", str(services.dir), env=services.env)
    assert p.returncode == 0, p.stderr
    assert "PostgreSQL: running on 127.0.0.1:" in p.stderr and "mlflow server: running on" in p.stderr
    again = script("env", str(services.dir), env=services.env).stdout.splitlines()
    assert again == [f"export MLFLOW_TRACKING_URI={services.tracking_uri}", f"export OPTUNA_STORAGE={services.storage}"]
    conf = (services.dir / "pgdata" / "postgresql.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in conf and "unix_socket_directories = ''" in conf


WORKER = r"""
import os, sys, time
import optuna

storage, name, barrier, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Both processes create-or-load the same study at about the same time.
study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                            sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
open(os.path.join(barrier, str(os.getpid())), "w").close()
deadline = time.time() + 120
while len(os.listdir(barrier)) < 2:  # start optimizing together
    assert time.time() < deadline, "the other worker never got ready"
    time.sleep(0.02)

def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -10, 10)
    time.sleep(0.05)
    return (x - 2) ** 2

study.optimize(objective, n_trials=n)
print(os.getpid())
"""


def test_two_processes_share_one_postgres_study(services, tmp_path):
    import optuna

    name, n = f"services-test/{uuid.uuid4().hex[:8]}", 15
    barrier = tmp_path / "ready"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, services.storage, name, str(barrier), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(
        f"worker {p.pid} exited {p.returncode}:\n{err[-3000:]}" for p, (_, err) in zip(procs, outs))
    worker_pids = {int(out.split()[-1]) for out, _ in outs}

    trials = optuna.load_study(study_name=name, storage=services.storage).get_trials()
    assert len(trials) == 2 * n
    assert sorted(t.number for t in trials) == list(range(2 * n))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_pid = {pid: [t for t in trials if t.user_attrs["pid"] == pid] for pid in worker_pids}
    assert sorted(len(v) for v in by_pid.values()) == [n, n], {k: len(v) for k, v in by_pid.items()}
    # Really concurrent: each process's trials span a time when the other's were running too.
    (a, b) = by_pid.values()
    span = [(min(t.datetime_start for t in v), max(t.datetime_complete for t in v)) for v in (a, b)]
    assert span[0][0] < span[1][1] and span[1][0] < span[0][1], span
    order = [t.user_attrs["pid"] for t in sorted(trials, key=lambda t: t.number)]
    assert sum(x != y for x, y in zip(order, order[1:])) > 1, order  # trial numbers interleave
    optuna.delete_study(study_name=name, storage=services.storage)


# --- the tiny pipeline against the services -------------------------------------------------------------------

def sh(args: list[str], cwd: Path, env: dict) -> str:
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def deep_update(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = deep_update(dict(base.get(k) or {}), v) if isinstance(v, dict) else v
    return base


@pytest.fixture(scope="module")
def pipeline(services, tmp_path_factory):
    """A scratch copy of the project run once through `dvc repro` (tiny profile) against the services."""
    if not TARBALL.is_file():
        pytest.skip("needs ../shared/data beside the repo")
    work = tmp_path_factory.mktemp("services-project")
    copy_project(work)
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["tune"]["storage"] = "env:OPTUNA_STORAGE"  # the URL (with its password) stays in the environment
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**services.env, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_TRACKING_URI": services.tracking_uri, "OPTUNA_STORAGE": services.storage}
    env.pop("MLFLOW_RUN_ID", None)
    sh(["dvc", "init", "--no-scm", "-q"], work, env)
    t = time.monotonic()
    out = sh(["dvc", "repro"], work, env)
    print(f"dvc repro against the services: {time.monotonic() - t:.0f} s")
    return work, env, out


def query_server(services: Services, code: str) -> dict:
    """Run `code` (which prints one JSON line) in a fresh process: a client that knows only the server's URL."""
    env = {**services.env, "MLFLOW_TRACKING_URI": services.tracking_uri}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


RUNS = """
import json, mlflow
c = mlflow.MlflowClient()
out = {}
for name in ("zoo", "cyclegan", "generated-models", "tuning"):
    e = c.get_experiment_by_name(name)
    runs = c.search_runs([e.experiment_id], max_results=5000) if e else []
    out[name] = {"artifact_location": e.artifact_location if e else None,
                 "runs": [{"name": r.info.run_name, "tags": dict(r.data.tags), "params": dict(r.data.params)}
                          for r in runs]}
print(json.dumps(out))
"""


def test_pipeline_runs_land_in_the_server(services, pipeline):
    work, _, _ = pipeline
    exps = query_server(services, RUNS)
    for name, e in exps.items():
        assert e["runs"], f"no runs in experiment {name}"
        assert e["artifact_location"].startswith("mlflow-artifacts:/"), e["artifact_location"]  # proxied
    assert len(exps["zoo"]["runs"]) == 2 + 6  # a parent per domain, a child per CNN
    assert len(exps["generated-models"]["runs"]) == TINY_EVALUATE_RUNS
    assert {r["name"] for r in exps["cyclegan"]["runs"]} >= {"cyclegan-study-conv1", "cyclegan-study-conv2",
                                                            "cyclegan-aligned-pair"}
    password = services.storage.split("@")[0].rsplit(":", 1)[1]
    for e in exps.values():
        for r in e["runs"]:
            assert password not in json.dumps(r), f"the storage password is in run {r['name']}"
    # nor in any file the pipeline wrote: dvc.lock, params, every output, metric and report
    for f in [work / "dvc.lock", work / "params.yaml", *(p for d in ("data", "metrics", "reports")
                                                         for p in (work / d).rglob("*") if p.is_file())]:
        assert password.encode() not in f.read_bytes(), f"the storage password is in {f}"
    # Nothing fell back to local files.
    for f in ("mlflow.db", "mlruns", "mlartifacts", "optuna.db"):
        assert not (work / f).exists(), f


def test_tune_studies_and_trials_are_in_postgres(services, pipeline):
    import optuna

    work, _, _ = pipeline
    methods = yaml.safe_load((work / "params.yaml").read_text())["tune"]["methods"]
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(services.storage)
                 if s.study_name.startswith("zoofusion/")}
    assert {name.split("/")[1] for name in summaries} == set(methods), sorted(summaries)
    for name, s in summaries.items():
        assert s.n_trials == TINY["tune"]["n_trials"], (name, s.n_trials)
        study = optuna.load_study(study_name=name, storage=services.storage)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), name
    # The MLflow side: a `tuning` parent run per study, a child run per trial.
    tuning = query_server(services, RUNS)["tuning"]["runs"]
    parents = [r for r in tuning if "mlflow.parentRunId" not in r["tags"]]
    assert sorted(r["tags"]["optuna_study"] for r in parents) == sorted(summaries)
    assert len(tuning) - len(parents) == sum(s.n_trials for s in summaries.values())
    best = json.loads((work / "data/tune/best_params.json").read_text())
    assert best, "empty best_params.json"


ARTIFACTS = """
import json, mlflow, tempfile
c = mlflow.MlflowClient()
e = c.get_experiment_by_name("zoo")
run = next(r for r in c.search_runs([e.experiment_id], max_results=100)
           if "mlflow.parentRunId" in r.data.tags and any(a.path == "model.pt" for a in c.list_artifacts(r.info.run_id)))
local = c.download_artifacts(run.info.run_id, "model.pt", tempfile.mkdtemp())
print(json.dumps({"experiment_id": e.experiment_id, "run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri,
                  "bytes": open(local, "rb").read().hex()}))
"""


def test_artifacts_go_through_the_server_to_its_destination(services, pipeline):
    got = query_server(services, ARTIFACTS)
    assert got["artifact_uri"].startswith("mlflow-artifacts:/"), got["artifact_uri"]
    on_disk = services.dir / "artifacts" / got["experiment_id"] / got["run_id"] / "artifacts" / "model.pt"
    assert on_disk.is_file(), sorted(str(p) for p in (services.dir / "artifacts").rglob("*"))[:20]
    assert on_disk.read_bytes() == bytes.fromhex(got["bytes"])  # downloaded over HTTP == the stored file
