"""`python -m zoofusion.bench stages`: each stage's wall seconds, read from the MLflow runs the stages logged."""

from __future__ import annotations

import pytest

from zoofusion import bench


def _run(client, exp: str, stage: str, start: int, seconds: float, parent: str | None = None,
         status: str = "FINISHED", dvc_exp: str = "workspace") -> str:
    tags = {"dvc_stage": stage, "dvc_exp": dvc_exp, **({"mlflow.parentRunId": parent} if parent else {})}
    run = client.create_run(client.get_experiment_by_name(exp).experiment_id, start_time=start, tags=tags)
    client.set_terminated(run.info.run_id, status=status, end_time=start + int(seconds * 1000))
    return run.info.run_id


def test_latest_finished_top_level_run_of_each_stage_in_run_order(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    for e in ("zoo", "pipeline"):
        client.create_experiment(e)
    t = 1_700_000_000_000
    _run(client, "pipeline", "data", t, 20.0)
    _run(client, "zoo", "zoo@black", t + 30_000, 50.0)  # an earlier run of the zoo
    parent = _run(client, "zoo", "zoo@black", t + 100_000, 12.5)
    _run(client, "zoo", "zoo@black", t + 101_000, 99.0, parent=parent)  # a CNN: not a stage
    _run(client, "zoo", "zoo@cat", t + 200_000, 7.0, status="FAILED")  # never counted
    _run(client, "zoo", "zoo@cat", t + 300_000, 4.0, dvc_exp="study")
    timed = _run(client, "pipeline", "report", t + 400_000, 1.0)
    client.log_metric(timed, "stage_seconds", 9.5)  # the stage process's age (tracking.stage_run) wins over the run's
    _run(client, "pipeline", "report", t + 500_000, 0.5)  # a later top-level run of the stage that is not its own
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert bench.stage_seconds(runs) == {"data": 20.0, "zoo@black": 12.5, "zoo@cat": 4.0, "report": 9.5}
    assert bench.stage_seconds(runs, "study") == {"zoo@cat": 4.0}
    assert bench.main(["stages"]) == 0
    note = "  (a run's open time only: the stage logs no stage_seconds of its own)"
    assert capsys.readouterr().out.splitlines() == [
        "stage_seconds_data: 20.0" + note, "stage_seconds_zoo@black: 12.5" + note, "stage_seconds_zoo@cat: 4.0" + note,
        "stage_seconds_report: 9.5", "stage_seconds_total: 46.0"]
    with pytest.raises(SystemExit, match="no finished stage runs tagged dvc_exp=nope"):
        bench.main(["stages", "--dvc-exp", "nope"])
