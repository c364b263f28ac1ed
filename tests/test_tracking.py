import os
from pathlib import Path

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
from zoofusion.tracking import setup_mlflow, stage_run

def run(args, params):
    mlflow = setup_mlflow("zoo")
    with stage_run(mlflow, "parent", "zoo@black", []) as parent:  # the stages' keyed run
        with mlflow.start_run(run_name="nested", nested=True):
            open(sys.argv[1], "w").close()
            os.kill(os.getpid(), signal.SIG{sig})
            signal.pause()

stage_main("zoo@black", run, ["--params", sys.argv[2]], description="", on_interrupt="nothing kept")
"""


@pytest.mark.e2e
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


def _store(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "in.csv").write_text("x\n1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")


def _a_stage(seed: int, weight: float) -> None:
    """A stage's tracking as evaluate does it: a keyed parent run, nested child runs, a model registered."""
    import torch

    mlflow = tracking.setup_mlflow("generated-models")
    with tracking.stage_run(mlflow, "evaluate", "evaluate", ["in.csv"], params={"seed": seed}):
        mlflow.log_metric("seconds", 1.0)  # outputs never key a run
        for i in range(3):
            with mlflow.start_run(run_name=f"cand-{i}", nested=True):
                mlflow.log_metric("auroc", 0.5 + i)
        with mlflow.start_run(run_name="selected", nested=True):
            f = Path("w.txt")
            f.write_text(str(weight))
            mlflow.log_artifact(str(f), "model")
            uri = mlflow.get_artifact_uri("model")
            tracking.register_version(mlflow, "zf-test", uri, tracking.content_hash({"w": torch.tensor([weight])}),
                                      "generated-aligned")


def _counts() -> tuple[int, int]:
    import mlflow

    c = mlflow.MlflowClient()
    exp = c.get_experiment_by_name("generated-models").experiment_id
    return len(c.search_runs([exp], max_results=1000)), len(c.search_model_versions("name = 'zf-test'"))


def test_a_rerun_with_the_same_inputs_adds_no_run_and_no_version(tmp_path, monkeypatch):
    """Issue 20 item 6: rerunning a stage's tracking on identical inputs leaves runs and versions as they were; a
    changed input adds one run (with its children); a changed model one version, an unchanged one none."""
    _store(tmp_path, monkeypatch)
    _a_stage(seed=1, weight=0.5)
    assert _counts() == (5, 1)
    _a_stage(seed=1, weight=0.5)  # `dvc repro -f`: same inputs, same outputs
    assert _counts() == (5, 1)
    import mlflow

    c = mlflow.MlflowClient()
    exp = c.get_experiment_by_name("generated-models").experiment_id
    from mlflow.entities import ViewType

    dup = c.search_runs([exp], run_view_type=ViewType.DELETED_ONLY, max_results=1000)
    assert len(dup) == 5 and all(tracking.DUPLICATE_TAG in r.data.tags for r in dup)  # deleted, said why
    _a_stage(seed=2, weight=0.5)  # a changed param: a new evaluation, but the same model: no new version
    assert _counts() == (10, 1)
    _a_stage(seed=2, weight=0.25)  # same inputs, other bytes: not a no-op, so kept; the new model is a version
    assert _counts() == (15, 2)
    (tmp_path / "in.csv").write_text("x\n2\n")  # a changed input file
    _a_stage(seed=2, weight=0.25)
    assert _counts() == (20, 2)
    _a_stage(seed=2, weight=0.25)
    assert _counts() == (20, 2)


def test_a_batch_logged_rerun_returns_the_runs_logged_before(tmp_path, monkeypatch):
    """tune's studies and trials (BatchLogger top-level runs and their children): logged once per content."""
    _store(tmp_path, monkeypatch)

    def log(best: float) -> str:
        mlflow = tracking.setup_mlflow("tuning")
        exp = mlflow.get_experiment_by_name("tuning").experiment_id
        bl = tracking.BatchLogger(mlflow, None, tracking.run_tags("tune", ["in.csv"]), experiment_id=exp)
        parent = bl.child("study", {"method": "kmeans"}, [("best_value", best, 0)])
        for t in range(3):
            bl.child(f"trial-{t}", {"k": t}, [("objective", t / 10, 0)], parent_id=parent)
        return parent

    import mlflow

    first = log(0.9)
    assert log(0.9) == first
    exp = mlflow.MlflowClient().get_experiment_by_name("tuning").experiment_id
    assert len(mlflow.MlflowClient().search_runs([exp])) == 4
    assert log(0.8) != first
    assert len(mlflow.MlflowClient().search_runs([exp])) == 8


def test_a_run_key_ignores_where_and_when(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch)
    a = tracking.run_key("data", "data", {"seed": 1}, {"dvc_stage": "data", "data.x.md5": "1", "git_commit": "a",
                                                        "zoofusion.pid": "1", "mlflow.user": "u"})
    assert a == tracking.run_key("data", "data", {"seed": 1}, {"dvc_stage": "data", "data.x.md5": "1",
                                                               "git_commit": "b", "zoofusion.pid": "2"})
    assert a != tracking.run_key("data", "data", {"seed": 1}, {"dvc_stage": "data", "data.x.md5": "2"})
    assert a != tracking.run_key("data", "data", {"seed": 2}, {"dvc_stage": "data", "data.x.md5": "1"})
    assert tracking.stage_code("zoo@black") and tracking.stage_code("nothing") == ""


def test_bulk_children_read_back_as_runs_logged_one_by_one(tmp_path, monkeypatch):
    """BatchLogger.children (one transaction on a SQL store) makes the runs `child` makes, call by call."""
    _store(tmp_path, monkeypatch)
    mlflow = tracking.setup_mlflow("zoo")
    with mlflow.start_run(run_name="parent") as parent:
        bl = tracking.BatchLogger(mlflow, parent.info.run_id, {"dvc_stage": "zoo@black"})
        spec = ("cnn-0", {"seed": 3, "lr": 0.01}, [("val_acc", 0.5, 0), ("val_acc", 0.75, 1), ("loss", float("nan"), 0),
                                                   ("final_val_acc", 0.75, 0)], {"domain": "black"})
        one = bl.child(*spec[:3], tags=spec[3], start_ms=1000, end_ms=2000)
        many = bl.children([spec, spec[:2] + ([("val_acc", 0.1, 0)], {})], start_ms=1000, end_ms=2000)
    c = mlflow.MlflowClient()
    a, b = c.get_run(one), c.get_run(many[0])
    assert (a.info.status, a.info.start_time, a.info.end_time, a.info.run_name) == \
           (b.info.status, b.info.start_time, b.info.end_time, b.info.run_name) == ("FINISHED", 1000, 2000, "cnn-0")
    assert a.data.params == b.data.params and a.data.tags == b.data.tags
    assert str(a.data.metrics) == str(b.data.metrics)  # nan == nan as text
    hist = [[(m.step, m.value) for m in c.get_metric_history(r, "val_acc")] for r in (one, many[0])]
    assert hist[0] == hist[1] == [(0, 0.5), (1, 0.75)]
    assert b.info.artifact_uri.replace(many[0], one) == a.info.artifact_uri
    kids = c.search_runs([a.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                         order_by=["metrics.final_val_acc DESC"])
    assert len(kids) == 3 and c.get_run(many[1]).data.metrics == {"val_acc": 0.1}
    import sqlite3

    with sqlite3.connect(tmp_path / "m.db") as db:  # planner statistics: the UI's metric-sorted list stays fast
        assert db.execute("select count(*) from sqlite_stat1 where tbl = 'latest_metrics'").fetchone()[0] > 0
def test_project_root_is_the_queueing_checkout_in_a_queued_experiment(tmp_path, monkeypatch):
    """A queued experiment runs in <root>/.dvc/tmp/exps/<tmp>/ (deleted after): DVC names <root> in DVC_ROOT, and
    the MLflow store and the private caches stay there; DVC_ROOT naming anything else is not followed."""
    root = tmp_path / "repo"
    temp = root / ".dvc" / "tmp" / "exps" / "tmpabc"
    temp.mkdir(parents=True)
    for d in (root, temp):
        (d / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(temp)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.project_root() == temp.resolve()  # no DVC: the copy itself
    monkeypatch.setenv("DVC_ROOT", str(root))
    assert tracking.project_root() == root.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    other = tmp_path / "other"
    other.mkdir()
    (other / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(other)  # a DVC_ROOT left in the environment does not send another project's runs there
    assert tracking.project_root() == other.resolve()


def test_every_run_is_tagged_with_its_dvc_experiment_and_params_hash(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nzoo: {epochs: 2}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    first = tracking.replication_tags()
    assert first["dvc_exp"] == "workspace" and len(first["params_hash"]) == 16
    monkeypatch.setenv("DVC_EXP_NAME", "rep-7-abc")
    params.write_text("# a comment and another layout: same values, same hash\nzoo:\n  epochs: 2\nseed: 1\n")
    assert tracking.replication_tags() == {"dvc_exp": "rep-7-abc", "params_hash": first["params_hash"]}
    params.write_text("seed: 7\nzoo: {epochs: 2}\n")
    os.utime(params, ns=(1, 1))  # another mtime than the last read, whatever the clock's resolution
    assert tracking.params_hash() != first["params_hash"]
    # run_tags (top-level runs) and BatchLogger.child (runs made in bulk) both carry them
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    tags = tracking.run_tags("zoo@cat", [])
    assert tags["dvc_exp"] == "rep-7-abc" and tags["params_hash"] == tracking.params_hash()
    mlflow = tracking.setup_mlflow("t")
    with mlflow.start_run() as parent:
        child = tracking.BatchLogger(mlflow, parent.info.run_id).child("c", {}, [])
    assert mlflow.get_run(child).data.tags["dvc_exp"] == "rep-7-abc"


def test_process_start_is_this_process_start():
    import time

    t0 = tracking.process_start()
    assert t0 <= time.time() and time.time() - t0 < 3600  # a test process, started within the hour


def _shard(n: int = 3, epochs: int = 2, seed: int = 0) -> dict:
    """A zoo shard as steps.zoo makes one: stacked weights, seeds, per-epoch curves."""
    import numpy as np
    import torch

    from zoofusion.core.cnn import init_weights, stack

    rng = np.random.default_rng(seed)
    return {"weights": stack([init_weights(seed + i) for i in range(n)]),
            "seeds": torch.tensor([seed + i for i in range(n)], dtype=torch.int64),
            "history": {c: torch.from_numpy(rng.uniform(0, 1, (n, epochs))) for c in tracking.CNN_CURVES}}


def _inputs(run) -> list:
    return sorted((d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source,
                   sorted((t.key, t.value) for t in d.tags)) for d in run.inputs.dataset_inputs)


def test_a_bulk_logged_cnn_reads_back_as_one_logged_call_by_call(tmp_path, monkeypatch):
    """log_cnns (one transaction for a shard, artifacts copied, dataset inputs written as rows) makes the run that
    `child` (create_run, log_batch, log_inputs, log_artifact, set_terminated) makes: params, tags, metric histories,
    dataset inputs with their context, and model.pt to the byte."""
    import torch

    from zoofusion.core.cnn import unstack

    _store(tmp_path, monkeypatch)
    (tmp_path / "val.csv").write_text("y\n")
    mlflow = tracking.setup_mlflow("zoo")
    c = mlflow.MlflowClient()
    shard = _shard()
    with mlflow.start_run(run_name="zoo-black") as parent:
        train = tracking.dataset_inputs({"in.csv": "train"})
        c.log_inputs(parent.info.run_id, datasets=train)  # as the zoo stage: the parent logs the datasets first
        # val.csv is no parent's input: the bulk path inserts its dataset row as log_inputs would
        datasets = train + tracking.dataset_inputs({"val.csv": "val"})
        bl = tracking.BatchLogger(mlflow, parent.info.run_id, {"dvc_stage": "zoo@black"}, datasets)
        assert tracking.log_cnns(bl, "black", 10, shard, {"epochs": 2, "lr": 0.1}) == 3
        bulk = {r.data.params["model_index"]: r for r in c.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
        # the same CNN logged call by call, as log_cnns did before the bulk path
        weights, hist = unstack(shard["weights"])[1], {k: v.numpy() for k, v in shard["history"].items()}
        metrics = [(n, hist[n][1, e], e) for n in tracking.CNN_CURVES for e in range(2)]
        metrics += [(f"final_{n}", hist[n][1, -1], 0) for n in tracking.CNN_CURVES]
        content = tracking.cnn_content(weights, [hist[n][1] for n in tracking.CNN_CURVES])
        one = c.get_run(bl.child("black-00011", {"domain": "black", "model_index": 11, "seed": 1, "epochs": 2,
                                                 "lr": 0.1, "architecture": "conv6-conv16-fc2"}, metrics,
                                 tags={"domain": "black", tracking.CONTENT_TAG: content},
                                 artifacts=[("model.pt", tracking.weights_bytes(weights), None)]))
    b = bulk["11"]
    assert sorted(bulk) == ["10", "11", "12"] and b.info.run_name == one.info.run_name == "black-00011"
    assert b.info.status == one.info.status == "FINISHED" and b.info.lifecycle_stage == "active"
    assert b.data.params == one.data.params and b.data.tags == one.data.tags
    assert b.data.metrics == one.data.metrics and len(b.data.metrics) == 8
    for key in b.data.metrics:
        assert [(m.step, m.value) for m in c.get_metric_history(b.info.run_id, key)] == \
               [(m.step, m.value) for m in c.get_metric_history(one.info.run_id, key)]
    assert _inputs(b) == _inputs(one) and [x[0] for x in _inputs(b)] == ["in.csv", "val.csv"]
    assert [x[4] for x in _inputs(b)] == [[("mlflow.data.context", "train")], [("mlflow.data.context", "val")]]
    assert [a.path for a in c.list_artifacts(b.info.run_id)] == [a.path for a in c.list_artifacts(one.info.run_id)] \
        == ["model.pt"]
    got = [Path(c.download_artifacts(r.info.run_id, "model.pt", str(tmp_path / r.info.run_id))).read_bytes()
           for r in (b, one)]
    assert got[0] == got[1]
    back = torch.load(tmp_path / b.info.run_id / "model.pt", weights_only=True)
    assert back.keys() == weights.keys() and all(torch.equal(back[k], weights[k]) for k in weights)
    import sqlite3

    with sqlite3.connect(tmp_path / "m.db") as db:  # one dataset row per file, shared by every run that used it
        assert db.execute("select name, count(*) from datasets group by name order by name").fetchall() == \
               [("in.csv", 1), ("val.csv", 1)]


@pytest.mark.parametrize("sql", [True, False])
def test_a_rerun_over_the_same_shard_logs_no_cnn_again_with_one_lookup_a_stage(tmp_path, monkeypatch, sql):
    """Content dedupe reads the domain's hashes once per logger (one query, not a search per CNN), and a rerun over
    the same shards logs nothing; another store than SQL gets the same runs call by call."""
    from zoofusion import tracking_bulk

    _store(tmp_path, monkeypatch)
    if not sql:
        monkeypatch.setattr(tracking_bulk, "sql_store", lambda client: None)
    calls = []
    for name in ("tag_values", "search_tag_values"):
        real = getattr(tracking_bulk, name)
        monkeypatch.setattr(tracking_bulk, name, lambda *a, _real=real, **k: calls.append(a[2]) or _real(*a, **k))
    mlflow = tracking.setup_mlflow("zoo")
    c = mlflow.MlflowClient()

    def stage(shards) -> int:
        with mlflow.start_run(run_name="zoo-black") as parent:
            bl = tracking.BatchLogger(mlflow, parent.info.run_id, {"dvc_stage": "zoo@black"},
                                      tracking.dataset_inputs({"in.csv": "train"}))
            return sum(tracking.log_cnns(bl, "black", first, s, {"epochs": 2}) for first, s in shards)

    a, b = _shard(3, seed=0), _shard(2, seed=7)
    assert stage([(0, a), (3, b), (0, a)]) == 5  # a shard seen twice in one stage: its CNNs once
    assert calls == [tracking.CONTENT_TAG]  # one lookup for the stage's three shards
    exp = c.get_experiment_by_name("zoo").experiment_id
    cnns = c.search_runs([exp], "tags.domain = 'black'")
    assert len(cnns) == 5 and all(len(r.inputs.dataset_inputs) == 1 for r in cnns)
    assert all([x.path for x in c.list_artifacts(r.info.run_id)] == ["model.pt"] for r in cnns)
    assert stage([(0, a), (3, b)]) == 0  # the rerun: nothing new
    assert len(c.search_runs([exp], "tags.domain = 'black'")) == 5 and len(calls) == 2
    # the hashes are the domain's: a cat CNN with a black one's content is a run of its own
    with mlflow.start_run(run_name="zoo-cat") as parent:
        assert tracking.log_cnns(tracking.BatchLogger(mlflow, parent.info.run_id), "cat", 0, a, {}) == 3
