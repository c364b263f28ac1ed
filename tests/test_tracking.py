import os

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
