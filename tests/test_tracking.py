import os

import pytest
import yaml

from zoofusion import tracking
from zoofusion.io import file_md5


def test_tracking_uri_default_is_repo_sqlite_and_env_overrides(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)  # the store sits in the repo root, not the cwd
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri() == "sqlite:///elsewhere.db"


def test_data_tags_prefer_dvc_lock_and_hash_raw_inputs(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"data": {
        "outs": [{"path": "data/prepared", "md5": "abc123.dir"}]}}}))
    raw = tmp_path / "raw.csv"
    raw.write_text("x\n")
    monkeypatch.chdir(tmp_path)
    tags = tracking.data_tags(["data/prepared", "raw.csv", "nothing.bin"])
    assert tags == {"data.data/prepared.md5": "abc123.dir", "data.raw.csv.md5": file_md5(raw),
                    "data.nothing.bin.md5": "missing"}


def test_run_tags_have_commit_stage_and_launcher(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("MLFLOW_RUN_ID", "launcher123")
    monkeypatch.setenv("ZOOFUSION_LAUNCHER_RUN_ID", "")  # so teardown removes what setup_mlflow sets
    tracking.setup_mlflow("t")
    assert "MLFLOW_RUN_ID" not in os.environ  # would otherwise hijack start_run
    tags = tracking.run_tags("zoo@cat", [])
    assert tags["dvc_stage"] == "zoo@cat" and tags["mlflow_project_run_id"] == "launcher123"
    assert "git_commit" in tags


def test_git_dirty_ignores_dvc_lock_only(tmp_path):
    import subprocess

    from zoofusion.tracking import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "dvc.lock").write_text("a\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (tmp_path / "dvc.lock").write_text("b\n")  # what every `dvc repro` does mid-run
    sha, dirty = git_commit(tmp_path)
    assert len(sha) == 40 and not dirty
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    assert git_commit(tmp_path)[1]


def test_runs_of_a_killed_stage_end_killed_not_running(tmp_path, monkeypatch):
    """A stage killed outright leaves RUNNING runs; the next stage that opens the experiment ends them KILLED."""
    import socket
    import subprocess

    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    exp = mlflow.set_experiment("zoo").experiment_id
    c = mlflow.MlflowClient()
    host = socket.gethostname()
    orphan = c.create_run(exp, tags={"zoofusion.host": host, "zoofusion.pid": str(dead.pid)}).info.run_id
    live = c.create_run(exp, tags={"zoofusion.host": host, "zoofusion.pid": str(os.getpid())}).info.run_id
    tracking.setup_mlflow("zoo")
    assert c.get_run(orphan).info.status == "KILLED"
    assert c.get_run(live).info.status == "RUNNING"  # its process is alive: not ours to end
    c.set_terminated(live)


STAGE_THAT_IS_INTERRUPTED = """
import os, signal, sys
# a shell without job control starts background commands with SIGINT ignored, and Python keeps it so: give the
# stage the handler a terminal's Ctrl-C meets
signal.signal(signal.SIGINT, signal.default_int_handler)
import mlflow
from zoofusion.cli import stage_main
from zoofusion.tracking import run_tags, setup_mlflow

def run(args, params):
    mlflow = setup_mlflow("zoo")
    with mlflow.start_run(run_name="parent", tags=run_tags("zoo@black", [])) as parent:
        with mlflow.start_run(run_name="nested", nested=True):
            open(sys.argv[1], "w").close()
            os.kill(os.getpid(), signal.SIG{sig})
            signal.pause()

stage_main("zoo@black", run, ["--params", sys.argv[2]], description="", on_interrupt="nothing kept")
"""


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_an_interrupted_stage_ends_every_run_killed(tmp_path, sig):
    """Ctrl-C or `kill`: the parent and its nested run end KILLED (not FAILED, not RUNNING forever)."""
    import subprocess
    import sys

    import mlflow

    from conftest import ROOT

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([sys.executable, "-c", STAGE_THAT_IS_INTERRUPTED.replace("{sig}", sig), str(tmp_path / "began"),
                        str(ROOT / "params.yaml")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "began").is_file(), p.stderr[-2000:]
    assert p.returncode == 1 and p.stderr.strip().endswith("zoo@black: interrupted; nothing kept"), p.stderr[-2000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["zoo"], output_format="list")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("nested", "KILLED"), ("parent", "KILLED")]
