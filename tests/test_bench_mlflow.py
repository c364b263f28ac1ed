"""`python -m zoofusion.bench mlflow`: synthetic zoo runs logged one by one and through the zoo's bulk path,
synthetic generated models logged as evaluate's candidate runs, the UI's calls timed."""

import os
import socket

import pytest

from zoofusion import bench


def _lines(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.strip().splitlines() if ": " in line)


def test_synthetic_study_runs_split_like_the_study_and_look_like_zoo_runs():
    runs = bench.study_runs(20, 5)
    assert [r[1]["domain"] for r in runs].count("black") == round(20 * 2749 / 4498) == 12
    name, params, metrics, tags = runs[0]
    assert name == "black-00000" and tags == {"domain": "black"} and len(params) == 7
    assert len(metrics) == 4 * 5 + 4 and {m[0] for m in metrics} >= {"val_acc", "final_val_acc"}
    assert bench.study_runs(20, 5) == runs  # seeded: the same runs every time


def test_bench_mlflow_logs_every_run_and_projects_the_one_by_one_time(capsys):
    assert bench.main(["mlflow", "--runs", "20", "--sample", "4", "--shard-size", "7", "--candidates", "0",
                       "--no-server"]) == 0
    out = _lines(capsys.readouterr().out)
    assert "candidates_seconds" not in out  # --candidates 0 skips them
    assert out["runs"].startswith("20 (black 12, cat 8)")
    assert out["after_seconds"].split(" (")[1].startswith("20 child runs + 2 parents, tracking.log_cnns")
    assert float(out["after_seconds_per_cnn"]) > 0
    assert out["rerun_seconds"].split(" (")[1].startswith("0 new runs")
    assert float(out["before_seconds_per_run"].split()[0]) > 0 and "before_seconds_projected" in out


@pytest.mark.slow
def test_bench_mlflow_times_the_ui_calls_and_stops_its_server(capsys):
    assert bench.main(["mlflow", "--runs", "20", "--sample", "0", "--candidates", "12"]) == 0
    out = _lines(capsys.readouterr().out)
    url, group = out["server_start_seconds"].split("mlflow server on ")[1].rstrip(")").split(", process group ")
    assert out["ui_runs_search_by_metric_first_seconds"].endswith("(22 runs)")  # 20 CNNs and their 2 parents
    assert out["ui_candidates_runs_search_by_metric_first_seconds"].endswith("(13 runs)")  # 12 and their parent
    for i in range(5):
        assert float(out[f"ui_runs_get_{i}_seconds"]) > 0
        assert out[f"ui_metric_history_{i}_seconds"].endswith("(5 points)")
        assert float(out[f"ui_candidates_runs_get_{i}_seconds"]) > 0
        assert out[f"ui_candidates_metric_history_{i}_seconds"].endswith("(1 points)")  # test/kmeans/auroc, step 0
    calls = [float(v.split()[0]) for k, v in out.items() if k.startswith(("ui_runs", "ui_metric", "ui_candidates"))]
    assert len(calls) == 2 * (4 + 2 * 5)
    assert out["ui_slowest_call_seconds"].startswith(f"{max(calls):.3f} (of 28 calls, both experiments")
    assert out["server_stopped"].startswith("yes")
    with pytest.raises(ProcessLookupError):  # no process of its group is left
        os.killpg(int(group), 0)
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()


def test_study_shards_are_what_log_cnns_receives():
    specs = bench.study_runs(20, 3)
    shards = bench.study_shards(specs, 5)
    assert [(f, len(s["seeds"])) for f, s in shards["black"]] == [(0, 5), (5, 5), (10, 2)]
    assert [(f, len(s["seeds"])) for f, s in shards["cat"]] == [(0, 5), (5, 3)]
    first, shard = shards["black"][1]
    assert shard["weights"]["conv1.weight"].shape == (5, 6, 3, 5, 5) and shard["history"]["val_acc"].shape == (5, 3)
    name, params, metrics, _ = specs[6]  # black CNN 6: row 1 of the second shard
    assert shard["seeds"][1] == params["seed"]
    assert shard["history"]["val_acc"][1].tolist() == [v for k, v, _ in metrics if k == "val_acc"]


def test_candidate_metric_keys_are_the_protocols():
    from zoofusion.core.protocol import ALL_METHODS, SPLITS

    keys = bench.candidate_metric_keys()
    assert len(keys) == len(set(keys)) == 156  # as a real candidate's (candidates.csv of the study)
    assert {k.split("/")[0] for k in keys} == set(SPLITS) and {k.split("/")[1] for k in keys} == set(ALL_METHODS)
    assert {"val/kmeans/auroc", "test/dbscan/ari", "test/ocsvm/auroc", "val/dbscan_val_eps/eps",
            "test/probe/balanced_accuracy"} <= set(keys)


def test_study_candidates_are_both_variants_in_the_zoos_proportion():
    rows = bench.study_candidates(20, ("val/kmeans/auroc", "val/kmeans/n_clusters"))
    assert [r["kind"] for r in rows] == ["generated-study"] * 10 + ["generated-aligned"] * 10
    assert [r["id"] for r in rows[:10]] == [f"study/{i}/A" for i in range(6)] + [f"study/{i}/B" for i in range(4)]
    assert all(0 <= r["metrics"]["val/kmeans/auroc"] <= 1 and r["metrics"]["val/kmeans/n_clusters"] % 1 == 0
               and r["seconds"] > 0 for r in rows)
    assert [r["id"] for r in bench.study_candidates(8996, ())].count("aligned/2748/A") == 1  # the study's sizes


def test_bench_candidates_are_logged_as_evaluate_logs_them():
    from zoofusion.core.protocol import METHODS
    from zoofusion.registry import is_headline

    keys = bench.candidate_metric_keys()
    rows = bench.study_candidates(20, keys)
    umap = bench.study_clustering().umap_kwargs()
    with bench._scratch_mlflow() as mlflow:
        exp, parent, ids, seconds = bench.log_study_candidates(mlflow, rows, umap)
        c = mlflow.MlflowClient()
        assert c.get_experiment(exp).name == "generated-models" and c.get_run(parent).info.run_name == "evaluate"
        kids = c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)
        assert len(kids) == len(ids) == 20 and bench._count_children(c, parent) == 20
        assert sorted(k.info.run_name for k in kids) == sorted(r["id"] for r in rows)
        k = next(k for k in kids if k.info.run_name == "aligned/3/B")
        assert set(k.data.metrics) == {*filter(is_headline, keys), "protocol_seconds"} and len(k.data.params) == 11
        assert set(mlflow.artifacts.load_dict(f"runs:/{k.info.run_id}/protocol/metrics.json")) == set(keys)
        assert k.data.params["variant"] == "aligned" and k.data.params["source_domain"] == "B"
        assert {f"best_on_val_{m}" for m in METHODS} | {"kind", "selected_on_val", "dvc_stage"} <= set(k.data.tags)
        assert len(k.data.tags) >= 20  # the stage's tags (git, data md5s, dvc_exp, ...) as a real candidate's
        assert [d.dataset.name for d in k.inputs.dataset_inputs] == ["data/prepared/val.npz", "data/testset/test.npz"]
        selected = [k for k in kids if k.data.tags["selected_on_val"] == "true"]
        assert sorted(k.data.params["kind"] for k in selected) == ["generated-aligned", "generated-study"]
        assert all(len(c.list_artifacts(k.info.run_id, "figures")) == 4 for k in selected)


def test_bench_mlflow_logs_the_candidates_under_one_parent(capsys):
    assert bench.main(["mlflow", "--runs", "8", "--sample", "0", "--candidates", "20", "--no-server"]) == 0
    out = _lines(capsys.readouterr().out)
    assert out["candidates"].startswith("20 (generated-study 10, generated-aligned 10; each 41 metrics (the headline "
                                        "protocol metrics + protocol_seconds; all 156 in protocol/metrics.json)")
    assert out["candidates_seconds"].split(" (")[1].startswith(
        "20 child runs + 1 parent in experiment generated-models, registry.log_candidates")
    assert out["candidates_seconds"].endswith("target < 60: pass)")
    assert float(out["candidates_seconds_per_run"]) > 0
