"""`python -m zoofusion.bench mlflow`: synthetic zoo runs logged one by one and through the zoo's bulk path, the
UI's calls timed."""

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
    assert bench.main(["mlflow", "--runs", "20", "--sample", "4", "--shard-size", "7", "--no-server"]) == 0
    out = _lines(capsys.readouterr().out)
    assert out["runs"].startswith("20 (black 12, cat 8)")
    assert out["after_seconds"].split(" (")[1].startswith("20 child runs + 2 parents, tracking.log_cnns")
    assert float(out["after_seconds_per_cnn"]) > 0
    assert out["rerun_seconds"].split(" (")[1].startswith("0 new runs")
    assert float(out["before_seconds_per_run"].split()[0]) > 0 and "before_seconds_projected" in out


@pytest.mark.slow
def test_bench_mlflow_times_the_ui_calls_and_stops_its_server(capsys):
    assert bench.main(["mlflow", "--runs", "20", "--sample", "0"]) == 0
    out = _lines(capsys.readouterr().out)
    url, group = out["server_start_seconds"].split("mlflow server on ")[1].rstrip(")").split(", process group ")
    assert out["ui_runs_search_by_metric_first_seconds"].endswith("(22 runs)")  # 20 CNNs and their 2 parents
    for i in range(5):
        assert float(out[f"ui_runs_get_{i}_seconds"]) > 0
        assert out[f"ui_metric_history_{i}_seconds"].endswith("(5 points)")
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
