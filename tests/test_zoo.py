from pathlib import Path

import numpy as np
import pytest
import torch

from zoofusion.stages import zoo as zoo_stage
from zoofusion.steps import zoo
from zoofusion.core.train import train_single
from conftest import make_params
from zoofusion.io import load_npz, save_npz


@pytest.fixture
def domain(tmp_path):
    gen = np.random.default_rng(0)
    images = gen.integers(0, 255, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int64)
    f = tmp_path / "black.npz"
    save_npz(f, images=images, labels=labels, ids=np.array([f"i{i}" for i in range(40)]))
    return f


def _params(**zoo_over):
    z = {"n_models": {"black": 3, "cat": 1}, "epochs": 1, "batch_size": 16, "group_size": 2, "shard_size": 2,
         "workers": 1, "path": "batched_g2"}
    z.update(zoo_over)
    return make_params({"zoo": z, "seed": 9})


def test_model_seeds_are_stable_and_distinct():
    s = zoo.model_seeds(42, "black", 5)
    assert s == zoo.model_seeds(42, "black", 5) and len(set(s)) == 5
    assert s != zoo.model_seeds(42, "cat", 5) and s[:3] == zoo.model_seeds(42, "black", 3)


def _train(job, domain) -> None:
    """As the stage does: the worker computes, the driver saves."""
    d = load_npz(domain)
    zoo.save_shard(zoo.train_shard(job, {"images": d["images"], "labels": d["labels"]}), Path(job.out))


def test_shards_resume_and_never_retrain(domain, tmp_path):
    p = _params()
    jobs = zoo.plan_shards("black", 3, p.zoo, p.seed, domain, "cpu", tmp_path / "cache")
    assert [len(j.seeds) for j in jobs] == [2, 1]
    (tmp_path / "cache").mkdir()
    _train(jobs[0], domain)  # as if the run was interrupted after the first shard
    first = Path(jobs[0].out).stat().st_mtime_ns
    todo = [j for j in jobs if not Path(j.out).is_file()]
    assert todo == [jobs[1]]
    _train(todo[0], domain)
    assert Path(jobs[0].out).stat().st_mtime_ns == first


def test_a_larger_zoo_reuses_full_shards_only(domain, tmp_path):
    p = _params()
    small = zoo.plan_shards("black", 3, p.zoo, p.seed, domain, "cpu", tmp_path)
    large = zoo.plan_shards("black", 4, p.zoo, p.seed, domain, "cpu", tmp_path)
    assert large[0].out == small[0].out and large[0].seeds == small[0].seeds
    assert large[1].out != small[1].out  # models 2-3, not the 1-model shard of the smaller zoo
    assert large[1].seeds[:1] == small[1].seeds


@pytest.mark.parametrize("n, size, group, workers, sizes", [
    (344, 64, 8, 2, [64, 64, 64, 64, 48, 40]),  # not 5 x 64 + 24: the last round keeps both workers busy
    (219, 64, 8, 2, [64, 64, 48, 43]),
    (96, 8, 8, 2, [8] * 12),                    # whole rounds: the usual layout
    (13, 4, 4, 1, [4, 4, 4, 1]),                # one worker: full shards, then the rest
    (3, 2, 2, 2, [2, 1]),
])
def test_shard_bounds_balance_the_last_round(n, size, group, workers, sizes):
    bounds = zoo.shard_bounds(n, size, group, workers)
    assert [b - a for a, b in bounds] == sizes
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_shard_bounds_cover_every_model_once_within_the_size():
    for n in range(1, 120):
        for size, group, workers in ((8, 4, 2), (10, 4, 3), (16, 8, 4), (5, 5, 2)):
            bounds = zoo.shard_bounds(n, size, group, workers)
            assert [k for a, b in bounds for k in range(a, b)] == list(range(n))
            assert all(0 < b - a <= size for a, b in bounds)


def test_shard_jobs_know_their_first_model(domain, tmp_path):
    p = _params()
    jobs = zoo.plan_shards("black", 3, p.zoo, p.seed, domain, "cpu", tmp_path)
    assert [j.first for j in jobs] == [0, 2]
    assert jobs[1].seeds == tuple(zoo.model_seeds(p.seed, "black", 3)[2:])


def test_batched_shard_equals_model_trained_alone(domain, tmp_path):
    p = _params()
    job = zoo.plan_shards("black", 2, p.zoo, p.seed, domain, "cpu", tmp_path)[0]
    _train(job, domain)
    shard = zoo.load_shard(Path(job.out))
    d = load_npz(domain)
    tr, va = zoo.split_indices(40, p.zoo.val_fraction, job.split_seed)
    w, _ = train_single(d["images"], d["labels"], tr, va, job.seeds[1], epochs=1, batch_size=16, lr=p.zoo.lr)
    for k in w:
        torch.testing.assert_close(shard["weights"][k][1], w[k], atol=1e-5, rtol=1e-4)


def test_cache_key_changes_with_result_affecting_params_only():
    a = zoo.cache_key("md5", _params().zoo, 1, "cpu")
    assert a == zoo.cache_key("md5", _params(workers=2).zoo, 1, "cpu")
    assert a != zoo.cache_key("md5", _params(epochs=2).zoo, 1, "cpu")
    assert a != zoo.cache_key("other", _params().zoo, 1, "cpu")
    assert a != zoo.cache_key("md5", _params(path="single").zoo, 1, "cpu")  # paths differ in rounding


def test_a_fixed_path_must_fit_the_data_order():
    from zoofusion.config import ConfigError

    with pytest.raises(ConfigError, match="zoo.path: shared_g2 cannot train data_order own"):
        _params(path="shared_g2")
    with pytest.raises(ConfigError, match="zoo.path: must be 'single'"):
        _params(path="fastest")
    with pytest.raises(ConfigError, match="zoo.path: 'auto' is no longer allowed: name the training path"):
        _params(path="auto")  # timing may not choose the arithmetic
    assert _params(path="shared_g2", data_order="shared").zoo.path == "shared_g2"


@pytest.mark.e2e
def test_spreading_never_changes_the_bytes(domain, tmp_path, monkeypatch):
    """One worker or two, the same zoo to the byte: timing may spread the work, never change the arithmetic."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prepared").mkdir()
    domain.rename(tmp_path / "prepared" / "black.npz")
    assert zoo.spread(_params(workers=2).zoo) == {"path": "batched_g2", "workers": 2, "threads": 1}
    out = {}
    for workers in (1, 2):
        zoo_stage.run("black", _params(workers=workers), prepared=tmp_path / "prepared", out_root=tmp_path / str(workers),
                      cache_root=tmp_path / f"cache-{workers}", metrics_root=tmp_path / f"metrics-{workers}")
        out[workers] = [(tmp_path / str(workers) / "black" / f).read_bytes() for f in ("weights.pt", "history.npz")]
        out[workers].append((tmp_path / f"metrics-{workers}" / "zoo_black.json").read_bytes())
    assert out[1] == out[2]


def test_cache_key_changes_with_the_training_code():
    """A shard trained by other code is never reused: the key holds the fingerprint of this stage's import closure."""
    from zoofusion.io import code_fingerprint, import_closure

    same = zoo.cache_key("md5", _params().zoo, 1, "cpu", code="f1")
    assert same == zoo.cache_key("md5", _params().zoo, 1, "cpu", code="f1")
    assert same != zoo.cache_key("md5", _params().zoo, 1, "cpu", code="f2")
    assert zoo.cache_key("md5", _params().zoo, 1, "cpu") == zoo.cache_key("md5", _params().zoo, 1, "cpu",
                                                                           code=code_fingerprint(zoo.CODE))
    assert set(import_closure(zoo.CODE)) >= {"zoofusion.core.cnn", "zoofusion.core.train", "zoofusion.core.seeds",
                                             "zoofusion.steps.zoo"}


def test_run_writes_outputs_and_logs_every_cnn(domain, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prepared").mkdir()
    domain.rename(tmp_path / "prepared" / "black.npz")
    s = zoo_stage.run("black", _params(), prepared=tmp_path / "prepared", out_root=tmp_path / "zoo",
                cache_root=tmp_path / "cache", metrics_root=tmp_path / "metrics")
    assert s["count"] == 3 and (tmp_path / "metrics" / "zoo_black.json").is_file()
    w = torch.load(tmp_path / "zoo" / "black" / "weights.pt", weights_only=True)
    assert w["weights"]["conv1.weight"].shape == (3, 6, 3, 5, 5)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["zoo"])
    assert len(runs) == 4  # parent + 3 CNNs
    child = runs[runs["tags.mlflow.parentRunId"].notna()].iloc[0]
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(child.run_id)]
    assert arts == ["model.pt"]

    # a rerun over the cached shards recomputes nothing: no new parent run (same inputs: its duplicate is
    # deleted) and no CNN again (one run per content)
    s2 = zoo_stage.run("black", _params(), prepared=tmp_path / "prepared", out_root=tmp_path / "zoo",
                 cache_root=tmp_path / "cache", metrics_root=tmp_path / "metrics")
    runs = mlflow.search_runs(experiment_names=["zoo"])
    assert s2["cached_shards"] == 2 and s2["runs_logged"] == 0 and s["runs_logged"] == 3
    assert len(runs) == 4 and runs["tags.mlflow.parentRunId"].notna().sum() == 3
    assert (runs["tags.mlflow.runName"] == "black-00000").sum() == 1


def test_missing_domain_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cat\.npz: missing; run `dvc repro data` first"):
        zoo_stage.run("cat", _params(), prepared=tmp_path)


@pytest.mark.ray
def test_ray_and_local_give_identical_shards(domain, tmp_path, monkeypatch):
    """The same tiny zoo through a local Ray instance and through local processes: identical weights."""
    pytest.importorskip("ray")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prepared").mkdir()
    domain.rename(tmp_path / "prepared" / "black.npz")
    out = {}
    for backend in ("local", "ray"):
        p = make_params({"zoo": {"n_models": {"black": 3, "cat": 1}, "epochs": 1, "batch_size": 16, "group_size": 2,
                                 "shard_size": 2, "workers": 2, "path": "batched_g2"}, "seed": 9,
                         "executor": {"backend": backend}})
        zoo_stage.run("black", p, prepared=tmp_path / "prepared", out_root=tmp_path / backend,
                cache_root=tmp_path / f"cache-{backend}", metrics_root=tmp_path / "metrics")
        out[backend] = torch.load(tmp_path / backend / "black" / "weights.pt", weights_only=True)
    for k, v in out["local"]["weights"].items():
        assert torch.equal(v, out["ray"]["weights"][k]), k


def test_a_time_limit_stops_between_shards_and_a_rerun_goes_on(domain, tmp_path, monkeypatch):
    """executor.time_limit_s: past it no shard starts; those done stay cached and a rerun trains only the rest."""
    import time as clock

    from zoofusion.executor import TimeLimitReached

    real = zoo.train_shard
    trained = []

    def slow(job, data):  # one worker runs in this process, so the step calls this
        trained.append(job.index)
        clock.sleep(1.1)
        return real(job, data)

    monkeypatch.setattr(zoo, "train_shard", slow)
    p = make_params({"zoo": {"n_models": {"black": 3, "cat": 1}, "epochs": 1, "batch_size": 16, "group_size": 1,
                             "shard_size": 1, "workers": 1, "path": "single"}, "seed": 9,
                     "executor": {"time_limit_s": 1}})
    with pytest.raises(TimeLimitReached, match=r"time limit of 1 s \(executor.time_limit_s\) reached with 1 of 3 "
                                                r"shards done, kept in .*; run the stage again to go on"):
        zoo.train_zoo("black", p.zoo, p.seed, "cpu", p.executor, domain, tmp_path / "out", tmp_path / "cache",
                      on_shard=lambda j, s: None)
    assert trained == [0] and not (tmp_path / "out").exists()
    s = zoo.train_zoo("black", p.zoo, p.seed, "cpu", p.executor.model_copy(update={"time_limit_s": 0}), domain,
                      tmp_path / "out", tmp_path / "cache", on_shard=lambda j, s: None)
    assert trained == [0, 1, 2] and s["cached_shards"] == 1 and s["count"] == 3
