"""evaluate's MLflow runs: a child run per candidate, logged in bulk (registry.candidate_runs through
BatchLogger.children), and the selected models registered from their candidates' runs."""

from __future__ import annotations

import json

import numpy as np

from conftest import make_params
from zoofusion.core.candidates import CONV_KEYS, Candidate
from zoofusion.core.cnn import init_weights
from zoofusion.registry import REGISTERED_MODEL, candidate_runs, is_headline, log_candidates
from zoofusion.tracking import CONTENT_TAG, KEY_TAG

PARAMS = make_params({})
UMAP = PARAMS.evaluate.clustering.umap_kwargs()
# (id, kind, source domain, source index, val/kmeans/auroc)
CANDS = [("study/0/A", "generated-study", "A", 0, 0.7), ("study/1/B", "generated-study", "B", 1, 0.9),
         ("aligned/0/A", "generated-aligned", "A", 0, 0.8), ("random-0", "random", "", -1, 0.6)]


def _rows() -> list[dict]:
    r = np.random.default_rng(0)
    return [{"id": cid, "kind": kind, "source_domain": dom, "source_index": idx, "seconds": 1.5 + j,
             "metrics": {"val/kmeans/auroc": auc, "val/dbscan/ari": 0.1 * j, "val/ocsvm/auroc": 1 - auc,
                         "test/kmeans/auroc": float(r.uniform()), "test/dbscan/ari": float(r.uniform()),
                         "val/kmeans/accuracy": 0.5, "test/kmeans_direct/purity": float("nan")}}  # in the file only
            for j, (cid, kind, dom, idx, auc) in enumerate(CANDS)]


BEST = {("generated-study", "kmeans"): "study/1/B", ("generated-study", "dbscan"): "study/1/B",
        ("generated-study", "ocsvm"): "study/0/A", ("generated-aligned", "kmeans"): "aligned/0/A",
        ("generated-aligned", "dbscan"): "aligned/0/A", ("generated-aligned", "ocsvm"): "aligned/0/A",
        ("random", "kmeans"): "random-0", ("random", "dbscan"): "random-0", ("random", "ocsvm"): "random-0"}


def test_candidate_runs_are_what_a_child_run_holds():
    runs = candidate_runs(_rows(), {"study/1/B"}, BEST, {"study/1/B": ["f.png"]}, UMAP)
    assert [r[0] for r in runs] == [c[0] for c in CANDS]
    name, params, metrics, tags, artifacts = runs[1]
    assert params == {"model_id": "study/1/B", "kind": "generated-study", "variant": "study", "source_domain": "B",
                      "source_index": 1, **UMAP} and len(params) == 11
    assert metrics[0] == ("val/kmeans/auroc", 0.9, 0) and metrics[-1] == ("protocol_seconds", 2.5, 0)
    assert len(metrics) == 5 + 1 and all(step == 0 for _, _, step in metrics)  # the headline metrics only
    assert tags == {"kind": "generated-study", "selected_on_val": "true", "best_on_val_kmeans": "true",
                    "best_on_val_dbscan": "true", "best_on_val_ocsvm": "false"}
    assert [(a[0], a[-1]) for a in artifacts] == [("metrics.json", "protocol"), ("f.png", "figures")]
    assert json.loads(artifacts[0][1]) == {**_rows()[1]["metrics"], "test/kmeans_direct/purity": None}  # NaN: null
    assert [a[0] for a in runs[0][4]] == ["metrics.json"]  # not selected: no figures
    assert runs[3][1]["variant"] == "-" and runs[3][1]["source_domain"] == "-"  # a baseline
    assert runs[3][3]["selected_on_val"] == "false" and runs[3][3]["best_on_val_kmeans"] == "true"


def test_a_candidate_run_shows_the_study_methods_on_test_and_every_verdict_metric():
    from zoofusion.bench import candidate_metric_keys
    from zoofusion.core.selection import VERDICT_METRIC, select_key

    keys = candidate_metric_keys()  # a real candidate's, from the protocol's code
    shown = {k for k in keys if is_headline(k)}
    assert {select_key(m) for m in VERDICT_METRIC} <= shown  # what selection reads on val
    assert {f"test/{m}/{VERDICT_METRIC[m]}" for m in VERDICT_METRIC} <= shown  # and the verdict on test
    assert {f"test/kmeans/{k}" for k in ("accuracy", "precision", "recall", "entropy", "purity", "balanced_accuracy",
                                         "average_precision")} <= shown  # the study's five, prevalence-free two
    assert not {"val/kmeans/accuracy", "test/dbscan_val_eps/ari", "test/kmeans_direct/purity"} & shown
    assert len(shown) == 40 and len(keys) == 156  # a UI column per headline metric: < 1/3 of them


class _Logger:  # records the children calls
    def __init__(self):
        self.calls = []

    def children(self, runs):
        self.calls.append([r[0] for r in runs])
        return [f"id-{r[0]}" for r in runs]


def test_log_candidates_logs_in_chunks_and_returns_ids_in_order():
    logger = _Logger()
    ids = log_candidates(logger, _rows(), set(), BEST, {}, UMAP, chunk=3)
    assert logger.calls == [[c[0] for c in CANDS[:3]], [CANDS[3][0]]]
    assert ids == [f"id-{c[0]}" for c in CANDS]


def _store(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for f in ("data/prepared/val.npz", "data/testset/test.npz"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(f.encode())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")


def _log_runs(tmp_path):
    from zoofusion.stages.evaluate import log_runs

    by_id = {cid: Candidate(cid, kind, dom, idx, weights=None if kind == "random" else
                            {k: v for k, v in init_weights(10 + j).items() if k in CONV_KEYS})
             for j, (cid, kind, dom, idx, _) in enumerate(CANDS)}
    fig = tmp_path / "study_1_B_umap.png"
    fig.write_bytes(b"\x89PNG fake")
    pr = {"method": "kmeans", "metric": "auroc", "generated": {"id": "study/1/B"}, "comparator": {"id": "random-0"},
          "outcome": "none", "declared_in": None, "sources": ["test_images"], "difference": 0.1, "low": 0.0,
          "high": 0.2, "se": 0.05, "p": 0.04, "mdd": 0.14, "breakdown": {"test_images": {"width": 0.2}}}
    example = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    log_runs(PARAMS, _rows(), by_id, ["study/1/B", "aligned/0/A"], {"study/1/B": [fig]}, example, [],
             {"primary": pr, "sentence": "s", "comparisons": []}, {"seconds_protocol": 3.0}, "study/1/B")


def test_evaluate_logs_its_candidates_in_bulk_and_registers_from_their_runs(tmp_path, monkeypatch):
    import mlflow
    from mlflow.entities import ViewType

    _store(tmp_path, monkeypatch)
    _log_runs(tmp_path)
    c = mlflow.MlflowClient()
    exp = c.get_experiment_by_name("generated-models").experiment_id
    runs = c.search_runs([exp], max_results=100)
    (parent,) = [r for r in runs if r.info.run_name == "evaluate"]
    kids = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(kids) == sorted(c[0] for c in CANDS) and len(runs) == len(CANDS) + 1
    k = kids["study/1/B"]
    assert k.info.status == "FINISHED" and k.data.params == {
        "model_id": "study/1/B", "kind": "generated-study", "variant": "study", "source_domain": "B",
        "source_index": "1", **{n: str(v) for n, v in UMAP.items()}}
    assert k.data.metrics == {**{m: v for m, v in _rows()[1]["metrics"].items() if is_headline(m)},
                              "protocol_seconds": 2.5}
    every = mlflow.artifacts.load_dict(f"runs:/{k.info.run_id}/protocol/metrics.json")
    assert every == {**_rows()[1]["metrics"], "test/kmeans_direct/purity": None} and len(every) == 7
    assert [m.step for m in c.get_metric_history(k.info.run_id, "test/kmeans/auroc")] == [0]
    t = k.data.tags
    assert (t["kind"], t["selected_on_val"], t["dvc_stage"]) == ("generated-study", "true", "evaluate")
    best = {(r[1], m): r[0] for r in CANDS for m in ("kmeans", "dbscan", "ocsvm")
            if kids[r[0]].data.tags[f"best_on_val_{m}"] == "true"}
    from zoofusion.steps.scores import best_on_val_ids

    assert best == {(kd, m): i for kd, m, i in best_on_val_ids(_rows(), PARAMS.seed)}
    assert KEY_TAG in t and "data.data/prepared/val.npz.md5" in t and t["zoofusion.pid"] and t["dvc_exp"]
    assert [(d.dataset.name, d.tags[0].value) for d in k.inputs.dataset_inputs] == \
        [("data/prepared/val.npz", "val"), ("data/testset/test.npz", "test")]
    assert [a.path for a in c.list_artifacts(k.info.run_id, "figures")] == ["figures/study_1_B_umap.png"]
    assert kids["random-0"].data.tags["selected_on_val"] == "false" and not c.list_artifacts(
        kids["random-0"].info.run_id, "figures")
    # the registry: each selected model a version from its candidate's run, the champion the best on val
    champ = c.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    assert champ.run_id == k.info.run_id and c.get_run(k.info.run_id).info.status == "FINISHED"
    assert CONTENT_TAG in c.get_run(k.info.run_id).data.tags  # a new version: its run is never a duplicate
    versions = c.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert sorted(v.run_id for v in versions) == sorted(kids[i].info.run_id for i in ("study/1/B", "aligned/0/A"))
    # a rerun on the same inputs and models: no new run, no new version
    _log_runs(tmp_path)
    assert len(c.search_runs([exp], max_results=100)) == len(CANDS) + 1
    assert len(c.search_model_versions(f"name = '{REGISTERED_MODEL}'")) == 2
    assert len(c.search_runs([exp], run_view_type=ViewType.DELETED_ONLY, max_results=100)) == len(CANDS) + 1
