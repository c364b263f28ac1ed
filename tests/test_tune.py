"""The tune stage: search space, val-only objective, determinism, errors, and a tiny end-to-end run.

UMAP's numba JIT costs ~10 s once per process; the UMAP-running studies live in module-scoped fixtures and use
60-point synthetic val sets, so each trial's UMAP takes a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

import zoofusion
from zoofusion.core import protocol as cluster
from zoofusion import tuning
from zoofusion.core.protocol import evaluate_features
from conftest import make_params, params_dict
from zoofusion.config import METHODS, ConfigError, TuneParams
from zoofusion.core.metrics import METRIC_KEYS
from zoofusion.tuning import Study, TuneError
from zoofusion.core.seeds import derive_seed
from zoofusion.io import save_npz
from zoofusion.steps.candidates import build_pool

N_POS, N_NEG = 20, 40
N_VAL = N_POS + N_NEG
BASE = make_params().evaluate.clustering


def clustering(**over):
    """params.yaml's clustering section with some knobs changed."""
    return make_params({"evaluate": {"clustering": over}}).evaluate.clustering


def blobs(seed: int, d: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs, label = blob, shuffled."""
    r = np.random.default_rng(seed)
    y = np.r_[np.ones(N_POS, np.int64), np.zeros(N_NEG, np.int64)]
    x = r.normal(size=(y.size, d))
    x[y == 1] += 1.5
    perm = r.permutation(y.size)
    return x[perm], y[perm]


def tparams(storage: str, **kw) -> TuneParams:
    return make_params({"tune": {"n_trials": 4, "sampler": "tpe", "storage": storage,
                                 "top_models": 1, "methods": METHODS, **kw}}).tune


class EmbedSpy:
    """Wraps cluster.embed and records the rows of every UMAP fit."""

    def __init__(self):
        self.fits: list[np.ndarray] = []
        self.real = cluster.embed

    def __call__(self, feats_a, feats_b, **kw):
        assert feats_b is None  # tuning embeds val only: nothing is transformed into it
        self.fits.append(np.asarray(feats_a))
        return self.real(feats_a, feats_b, **kw)


@pytest.fixture(scope="module")
def val_data():
    return blobs(1)


@pytest.fixture(scope="module")
def studied(tmp_path_factory, val_data):
    """One study per method on one synthetic candidate, with every UMAP fit recorded."""
    x, y = val_data
    url = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'o.db'}"
    spy = EmbedSpy()
    studies = [Study(m, "blob", "generated") for m in METHODS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "embed", spy)
        res = tuning.tune_all(studies, {"blob": x}, y, tparams(url), BASE, seed=3)
    return res, spy, url


# --- search space ----------------------------------------------------------------------------------------------

def _sample(method: str, n_val: int, n: int = 60) -> list[tuple[dict, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    out = []

    def obj(trial):
        out.append((tuning.suggest(trial, method, n_val), trial.distributions))
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(obj, n_trials=n)
    return out


@pytest.mark.parametrize("n_val, nn_hi, nc_hi", [(20, 19, 10), (299, 50, 10), (7, 6, 5)])
def test_search_space_respects_bounds(n_val, nn_hi, nc_hi):
    for method in METHODS:
        samples = _sample(method, n_val)
        keys = set(tuning.UMAP_KEYS) | set(tuning.METHOD_KEYS[method])
        for p, dist in samples:
            assert set(p) == keys
            assert isinstance(p["standardize"], bool)
            assert 5 <= p["n_neighbors"] <= nn_hi and p["n_neighbors"] < n_val
            assert 0.0 <= p["min_dist"] <= 0.99
            assert 2 <= p["n_components"] <= nc_hi
            if method == "kmeans":
                assert p["kmeans_k"] in (2, 3)
            if method == "dbscan":
                assert 0.1 <= p["dbscan_eps"] <= 5.0 and dist["dbscan_eps"].log
                assert 2 <= p["dbscan_min_samples"] <= 15
            if method == "ocsvm":
                assert 0.01 <= p["ocsvm_nu"] <= 0.5 and dist["ocsvm_nu"].log
                g = p["ocsvm_gamma"]
                assert g == "scale" or (isinstance(g, float) and 1e-3 <= g <= 10 and dist["ocsvm_gamma_value"].log)
            tuning.apply_tuned(BASE, p, method)  # every sampled point is a valid protocol configuration
        assert max(p["n_neighbors"] for p, _ in samples) > nn_hi - 10  # the cap is the bound, not far below it
        if method == "ocsvm":
            assert {isinstance(p["ocsvm_gamma"], str) for p, _ in samples} == {True, False}


def test_too_small_val_is_refused():
    with pytest.raises(TuneError, match="at least 6"):
        tuning.space_limits(5)


def test_untuned_config_round_trips_and_is_the_first_trial(studied):
    for method in METHODS:
        u = tuning.untuned(BASE, method)
        assert tuning.resolve(tuning.to_optuna(u, N_VAL)) == u
    assert tuning.to_optuna(tuning.untuned(clustering(ocsvm_gamma="auto"), "ocsvm"), N_VAL) is None
    assert tuning.to_optuna(tuning.untuned(clustering(dbscan_eps=9.0), "dbscan"), N_VAL) is None
    res, _, _ = studied
    for r in res:
        t0 = r["trials"][0]
        assert t0["untuned"] and t0["params"] == tuning.untuned(BASE, r["method"])
        assert r["untuned_value"] == t0["value"] and r["best_value"] >= r["untuned_value"]


# --- the objective ---------------------------------------------------------------------------------------------

def test_every_umap_fit_sees_exactly_the_val_features(studied, val_data):
    res, spy, _ = studied
    x, _ = val_data
    assert len(spy.fits) == sum(r["n_trials"] for r in res) == 3 * 4
    for rows in spy.fits:
        np.testing.assert_array_equal(rows, x)


def test_results_structure_and_best_is_earliest_max(studied):
    res, _, _ = studied
    assert [r["method"] for r in res] == list(METHODS)
    for r in res:
        values = [t["value"] for t in r["trials"]]
        assert r["n_trials"] == 4 and [t["number"] for t in r["trials"]] == [0, 1, 2, 3]
        assert r["best_value"] == max(values) and r["best_trial"] == values.index(max(values))
        assert r["best_params"] == r["trials"][r["best_trial"]]["params"]
        for t in r["trials"]:
            assert {*METRIC_KEYS, "balanced_accuracy"} <= set(t["metrics"])
            # each study maximises its method's val verdict metric (AUROC for KMeans and the SVM, ARI for DBSCAN)
            assert t["value"] == t["metrics"][tuning.objective_of(r["method"])]
            assert tuning.objective_of(r["method"]) == {"kmeans": "auroc", "dbscan": "ari", "ocsvm": "auroc"}[r["method"]]
    assert max(r["best_value"] for r in res) > 0.8  # the blobs are separable


def test_rerun_reproduces_the_same_trials_and_replaces_the_study(studied, val_data):
    res, _, url = studied
    x, y = val_data
    again = tuning.tune_all([Study("kmeans", "blob", "generated")], {"blob": x}, y, tparams(url), BASE, seed=3)[0]
    first = res[0]
    assert [(t["params"], t["value"]) for t in again["trials"]] == [(t["params"], t["value"]) for t in first["trials"]]
    assert again["best_params"] == first["best_params"]
    study = optuna.load_study(study_name="zoofusion/kmeans/blob", storage=url)
    assert len(study.trials) == 4  # deleted and recreated, not resumed
    other = tuning.tune_all([Study("kmeans", "blob", "generated")], {"blob": x}, y, tparams(url), BASE, seed=4)[0]
    assert [t["params"] for t in other["trials"][1:]] != [t["params"] for t in first["trials"][1:]]


def test_ocsvm_is_cross_validated_without_scoring_training_points(monkeypatch):
    """Tune scores the One-class SVM on val exactly as evaluate does (protocol.ocsvm_crossfit, ocsvm_val_folds
    stratified folds): each SVM is fitted on the black cats outside the fold it scores."""
    r = np.random.default_rng(0)
    emb = r.normal(size=(N_VAL, 2))
    y = np.r_[np.ones(N_POS, np.int64), np.zeros(N_NEG, np.int64)]
    fits = []
    real = cluster._ocsvm

    def spy(train, p):
        fits.append(train.copy())
        return real(train, p)

    monkeypatch.setattr(cluster, "_ocsvm", spy)
    s = tuning.ocsvm_cv_scores(emb, y, BASE, seed=5)
    assert set(s) == {*METRIC_KEYS, "balanced_accuracy", "auroc", "average_precision"}
    k = BASE.ocsvm_val_folds
    assert len(fits) == k
    folds = cluster.stratified_folds(y, k, 5)
    for f, train in enumerate(fits):  # fitted on the black cats of the other folds, never on the fold it scores
        assert {tuple(row) for row in train} == {tuple(row) for row in emb[(y == 1) & (folds != f)]}
    _, score = cluster.ocsvm_crossfit(emb, y, BASE.method_params(), 5)
    from zoofusion.core.scores import roc_auc

    assert s["auroc"] == roc_auc(y, score)  # evaluate's val AUROC, the same number
    for f in range(k):
        assert abs((folds[y == 1] == f).sum() - N_POS / k) < 1 and abs((folds[y == 0] == f).sum() - N_NEG / k) < 1


# --- errors before work ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, match", [
    ("not a url", "not a database URL"),
    ("sqlite:////no/such/folder/o.db", "does not exist"),
    ("nosuchdb://host/x", "cannot open"),
])
def test_bad_storage_fails_before_any_umap(url, match, val_data, monkeypatch):
    x, y = val_data
    spy = EmbedSpy()
    monkeypatch.setattr(cluster, "embed", spy)
    with pytest.raises(ConfigError, match=f"tune.storage: .*{match}"):
        tuning.tune_all([Study("kmeans", "blob", "generated")], {"blob": x}, y, tparams(url), BASE, seed=3)
    assert spy.fits == []


def test_bad_inputs_fail_before_any_umap(val_data, monkeypatch, tmp_path):
    x, y = val_data
    spy = EmbedSpy()
    monkeypatch.setattr(cluster, "embed", spy)
    url = f"sqlite:///{tmp_path / 'o.db'}"

    def run(studies, feats=None, yy=y):
        return tuning.tune_all(studies, feats or {"blob": x}, yy, tparams(url), BASE, seed=3)

    with pytest.raises(TuneError, match="unknown method.*kmedoids"):
        run([Study("kmeans", "blob", "generated"), Study("kmedoids", "blob", "generated")])
    with pytest.raises(TuneError, match="no features"):
        run([Study("kmeans", "other", "random")])
    with pytest.raises(TuneError, match="NaN"):
        run([Study("kmeans", "blob", "generated")], {"blob": np.where(np.eye(N_VAL, x.shape[1]) > 0, np.nan, x)})
    k = BASE.ocsvm_val_folds  # the SVM's val score is cross-fitted over that many folds, as in evaluate
    with pytest.raises(TuneError, match=f"at least {k} black cats .*ocsvm_val_folds={k}"):
        run([Study("kmeans", "blob", "generated")], yy=np.r_[np.ones(k - 1, np.int64), np.zeros(N_VAL - k + 1, np.int64)])
    assert spy.fits == []
    with pytest.raises(ConfigError, match="tune.methods"):
        make_params({"tune": {"methods": ["kmeans", "kmedoids"]}})
    with pytest.raises(TuneError, match="keys"):
        tuning.apply_tuned(BASE, {"kmeans_k": 2}, "kmeans")


# --- tuned_evaluation ------------------------------------------------------------------------------------------

def test_tuned_evaluation_runs_evaluates_protocol_with_the_given_params(val_data):
    xv, yv = val_data
    xt, yt = blobs(2)
    params = make_params({"seed": 11})
    u = tuning.untuned(params.evaluate.clustering, "kmeans")
    got = tuning.tuned_evaluation(params.evaluate.clustering, 11, {"params": u, "value": 0.5}, "kmeans", xv, yv, xt, yt)
    c = params.evaluate.clustering
    want = evaluate_features(xv, yv, xt, yt, **c.umap_kwargs(), p=c.method_params(),
                             seed=derive_seed(11, "evaluate")).metrics
    assert got == {k: v for k, v in want.items() if "/kmeans/" in k}  # untuned params reproduce evaluate
    k3 = tuning.tuned_evaluation(params.evaluate.clustering, 11, {**u, "kmeans_k": 3}, "kmeans", xv, yv, xt, yt)
    assert k3["val/kmeans/n_clusters"] == 3 and k3["test/kmeans/n_clusters"] == 3


# --- the stage, end to end -------------------------------------------------------------------------------------

def _conv(seed: int) -> dict[str, torch.Tensor]:
    from zoofusion.core.cnn import init_weights
    from zoofusion.core.candidates import CONV_KEYS

    w = init_weights(seed)
    return {k: w[k] for k in CONV_KEYS}


def _stack(ws: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([w[k] for w in ws]) for k in ws[0]}


def make_project(root: Path, storage: str) -> Path:
    """Inputs the tune stage reads (val, evaluate's outputs: the saved candidate pool, candidates.csv,
    selected.json) and NO test split, generated models or kernels (the pool is built from them, then they go)."""
    (root / "dvc.yaml").write_text("stages: {}\n")
    for d in ("data/generated/study", "data/generated/aligned", "data/kernels/raw", "data/prepared", "data/evaluate"):
        (root / d).mkdir(parents=True)
    for j, v in enumerate(("study", "aligned")):
        torch.save({**_stack([_conv(1 + 2 * j), _conv(2 + 2 * j)]), "source_index": torch.tensor([0, 0]),
                    "source_domain": torch.tensor([0, 1]), "ids": ["0/A", "0/B"]}, root / f"data/generated/{v}/models.pt")
    for i, d in enumerate(("black", "cat")):
        from zoofusion.core.cnn import init_weights  # the harvest carries the heads (the zoo-head baselines)

        torch.save({**_stack([init_weights(10 + i)]), "model_index": torch.tensor([0])},
                   root / f"data/kernels/raw/{d}.pt")
    build_pool({v: root / f"data/generated/{v}/models.pt" for v in ("study", "aligned")},
               {d: root / f"data/kernels/raw/{d}.pt" for d in ("black", "cat")}, root / "data/evaluate/candidates.pt",
               0, 7, [0.1], 2)
    shutil.rmtree(root / "data/generated")
    shutil.rmtree(root / "data/kernels")
    r = np.random.default_rng(0)
    labels = np.r_[np.ones(N_POS, np.int64), np.zeros(N_NEG, np.int64)]
    images = r.integers(0, 256, size=(N_VAL, 32, 32, 3)).astype(np.uint8)
    images[labels == 1] //= 5  # black cats are dark
    save_npz(root / "data/prepared/val.npz", images=images, labels=labels, ids=np.arange(N_VAL))
    ids = [("study/0/A", "generated-study"), ("study/0/B", "generated-study"), ("aligned/0/A", "generated-aligned"),
           ("aligned/0/B", "generated-aligned"), ("random-0", "random"), ("zoo-A-0", "zoo-A"),
           ("zoo-B-0", "zoo-B"), ("avg-0A-0B", "average"), ("pixels", "pixels")]
    keys = [f"{s}/{m}/{k}" for s in ("test", "val") for m in METHODS for k in (*METRIC_KEYS, "auroc", "ari")]
    with (root / "data/evaluate/candidates.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "kind", "source_domain", "source_index", *keys])
        for i, (cid, kind) in enumerate(ids):
            w.writerow([cid, kind, "", -1, *[f"{0.5 + 0.01 * i:.6f}"] * len(keys)])
    (root / "data/evaluate/selected.json").write_text(json.dumps({
        "selected": ["study/0/B", "study/0/A", "aligned/0/A", "aligned/0/B"],
        "by_kind": {"generated-study": ["study/0/B", "study/0/A"], "generated-aligned": ["aligned/0/A", "aligned/0/B"]},
        "by_method": {m: {"generated-study": ["study/0/B", "study/0/A"],
                          "generated-aligned": ["aligned/0/A", "aligned/0/B"]} for m in METHODS}}))
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(params_dict({"seed": 7, "evaluate": {"budget": 0, "workers": 1,  # a short UMAP layout
                                                          "clustering": {"umap": {"n_epochs": 30}}},
                                             "tune": {"n_trials": 2, "top_models": 1, "methods": ["kmeans", "ocsvm"],
                                                      "storage": storage}})))
    return p


@pytest.mark.e2e
def test_stage_end_to_end_without_a_test_split(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = make_project(tmp_path, "sqlite:///optuna.db")  # relative to the cwd
    r = subprocess.run([sys.executable, "-m", "zoofusion.stages.tune", "--params", str(params)], cwd=tmp_path,
                       capture_output=True, text=True,  # this checkout's code, whatever the cwd
                       env={**os.environ, "PYTHONPATH": str(Path(zoofusion.__file__).parents[1])})
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "data/testset").exists() and not (tmp_path / "data/generated").exists()

    best = json.loads((tmp_path / "data/tune/best_params.json").read_text())
    assert best["objective"] == {"kmeans": "auroc", "ocsvm": "auroc"} and best["n_trials"] == 2  # the verdict's
    assert set(best["methods"]) == {"kmeans", "ocsvm"}
    cands = {"study/0/B", "aligned/0/A", "random-0", "zoo-A-0", "zoo-B-0", "avg-0A-0B", "pixels"}
    for method, m in best["methods"].items():
        assert m["objective_key"] == ("val_cv/ocsvm" if method == "ocsvm" else "val/kmeans") + "/auroc"
        assert set(m["candidates"]) == cands
        assert m["generated"]["generated-study"]["candidate"] == "study/0/B"
        assert m["generated"]["generated-aligned"]["candidate"] == "aligned/0/A"
        assert m["generated"]["generated-aligned"]["kind"] == "generated-aligned"
        for cid, e in m["candidates"].items():
            assert set(e["params"]) == set(tuning.UMAP_KEYS) | set(tuning.METHOD_KEYS[method])
            assert e["n_trials"] == 2 and 0 <= e["value"] <= 1 and e["study"] == f"zoofusion/{method}/{cid}"
            assert e["n_clusters"] >= 1
    metrics = json.loads((tmp_path / "metrics/tune.json").read_text())
    for method in ("kmeans", "ocsvm"):
        assert set(metrics[method]) >= {"generated-study", "generated-aligned", "random", "zoo-A", "zoo-B", "average",
                                        "pixels", "best_baseline", "generated-aligned_minus_best_baseline"}
        assert metrics[method]["generated-aligned"] == round(
            best["methods"][method]["generated"]["generated-aligned"]["value"], 4)

    names = optuna.get_all_study_names(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(names) == sorted(f"zoofusion/{m}/{c}" for m in ("kmeans", "ocsvm") for c in cands)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tuning"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 14 and len(children) == 28
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    p = next(r for r in parents if r.data.params["candidate"] == "pixels" and r.data.params["method"] == "ocsvm")
    assert {"method", "candidate", "kind", "objective", "n_trials", "sampler"} <= set(p.data.params)
    assert p.data.tags["dvc_stage"] == "tune" and "best_value" in p.data.metrics
    assert all(c.info.status == "FINISHED" and "objective" in c.data.metrics for c in children)
    # and the stage's own run, as every stage that makes something: its params, metrics/tune.json, its seconds
    (own,) = mlflow.search_runs(experiment_names=["pipeline"], output_format="list")
    assert own.data.tags["dvc_stage"] == "tune" and own.data.params["n_trials"] == "2" and own.data.params["seed"] == "7"
    assert own.data.metrics["kmeans.generated-aligned"] == metrics["kmeans"]["generated-aligned"]
    assert own.data.metrics["stage_seconds"] > 0


def test_a_storage_password_never_enters_params_and_env_names_the_url(monkeypatch, tmp_path):
    """Secrets come from the environment at run time: a URL with a password in params is refused (it would reach
    dvc.lock, MLflow and the reports); `env:<VAR>` is what params, dvc.lock and MLflow see."""
    with pytest.raises(ConfigError) as e:
        make_params({"tune": {"storage": "postgresql+psycopg2://zoo:hunter2@127.0.0.1:5432/optuna"}})
    assert str(e.value) == ("tune.storage: holds a password, which params.yaml would carry into dvc.lock, MLflow and "
                            "the reports; export the URL as OPTUNA_STORAGE and set tune.storage: env:OPTUNA_STORAGE")
    tp = make_params({"tune": {"storage": "env:OPTUNA_STORAGE"}}).tune
    url = f"sqlite:///{tmp_path / 'o.db'}"
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    assert tuning.storage_url(tp.storage) == url and tuning.display_url(tp.storage) == "env:OPTUNA_STORAGE"
    assert tuning.display_url("postgresql+psycopg2://zoo:hunter2@h/db") == "postgresql+psycopg2://zoo:***@h/db"
    monkeypatch.delenv("OPTUNA_STORAGE")
    with pytest.raises(ConfigError, match="^tune.storage: env:OPTUNA_STORAGE, but the environment variable "
                                          "OPTUNA_STORAGE is not set"):
        tuning.storage_url(tp.storage)
