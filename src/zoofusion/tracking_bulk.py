"""Finished MLflow runs written straight into a SQL tracking store (sqlite, PostgreSQL, MySQL), many at once.

`tracking.BatchLogger.children` builds the runs (names, params, keyed tags, metrics); this module writes them as
MLflow's own `SqlAlchemyStore` would, call by call, but in one transaction: the runs, their tags, params, metric
history and latest values, their dataset inputs (the `datasets`, `inputs` and `input_tags` rows `log_inputs` writes,
so the UI's Datasets column and `run.inputs.dataset_inputs` show them alike), and their artifacts through each run's
artifact repository (for a local store a file copy; no tracking call); the rows through the driver's own
`executemany` (`_insert`), on sqlite with a larger page cache. About 1 ms a run of the zoo (~3 ms a run of evaluate's
41 metrics and metrics.json), where MLflow's calls cost ~50-100 ms a run on sqlite. Also the one query that lists a tag's values
over an experiment's finished runs (`tag_values`), so content dedupe costs one query per stage, not one search per
run.
"""

from __future__ import annotations

import contextlib
import math
import operator
import uuid
from dataclasses import dataclass, field
from pathlib import Path

_FLOAT_MAX = 1.7976931348623157e308  # MLflow stores +-inf as the largest double, nan as 0 with is_nan


@dataclass
class Run:
    """One finished run to insert: its id and artifact URI are chosen by the caller (`new_run_id`); artifacts as
    (local file, folder) or (file name, bytes, folder), the latter written without a temporary file."""

    run_id: str
    name: str
    artifact_uri: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int]]
    artifacts: list[tuple[Path, str | None] | tuple[str, bytes, str | None]] = field(default_factory=list)


def sql_store(client):
    """The client's tracking store when it is MLflow's SQL store, else None (file or REST stores)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if hasattr(store, "ManagedSessionMaker") else None


def new_run_id() -> str:
    return uuid.uuid4().hex  # as SqlAlchemyStore.create_run names a run


def _metric_rows(run: Run, timestamp: int) -> tuple[list[dict], list[dict]]:
    """The run's `metrics` rows and its `latest_metrics` rows (per key: the value of the highest step, then the
    highest value), as SqlAlchemyStore.log_batch keeps them."""
    rows, latest = [], {}
    for k, v, step in dict.fromkeys(run.metrics):  # a repeated (key, value, step) is one value, as MLflow keeps it
        nan = math.isnan(v)
        row = dict(key=k, value=0.0 if nan else max(min(v, _FLOAT_MAX), -_FLOAT_MAX), timestamp=timestamp, step=step,
                   is_nan=nan, run_uuid=run.run_id)
        rows.append(row)
        if k not in latest or (step, row["value"]) > (latest[k]["step"], latest[k]["value"]):
            latest[k] = row
    return rows, list(latest.values())


def _dataset_ids(session, experiment_id: int, datasets: list) -> dict[tuple[str, str], str]:
    """The `datasets` row id of each DatasetInput's dataset (by name and digest, within the experiment), inserting the
    missing ones as `_log_inputs_impl` does; the zoo's parent run logged them already, so usually none."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset

    wanted = {(d.dataset.name, d.dataset.digest): d.dataset for d in datasets}
    found = session.query(SqlDataset).filter(SqlDataset.experiment_id == experiment_id,
                                             SqlDataset.name.in_([n for n, _ in wanted]),
                                             SqlDataset.digest.in_([g for _, g in wanted])).all()
    ids = {(d.name, d.digest): d.dataset_uuid for d in found if (d.name, d.digest) in wanted}
    missing = [dict(dataset_uuid=uuid.uuid4().hex, experiment_id=experiment_id, name=ds.name, digest=ds.digest,
                    dataset_source_type=ds.source_type, dataset_source=ds.source, dataset_schema=ds.schema,
                    dataset_profile=ds.profile) for key, ds in wanted.items() if key not in ids]
    if missing:
        session.execute(SqlDataset.__table__.insert(), missing)
        ids.update({(m["name"], m["digest"]): m["dataset_uuid"] for m in missing})
    return ids


def _write_artifacts(runs: list[Run], tracking_uri: str | None) -> None:
    """Each run's artifacts through the repository of its artifact URI, as `MlflowClient.log_artifact` writes them
    (a local store: a copy into <experiment>/<run>/artifacts/); bytes through `log_artifact_from_stream` where the
    repository has it (newer MLflow 3 releases), else through a temporary file of that name."""
    import io
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for run in runs:
        if not run.artifacts:
            continue
        repo = get_artifact_repository(run.artifact_uri, tracking_uri=tracking_uri)
        for item in run.artifacts:
            if len(item) == 2:
                repo.log_artifact(str(item[0]), item[1])
            elif hasattr(repo, "log_artifact_from_stream"):
                repo.log_artifact_from_stream(io.BytesIO(item[1]), item[0], item[2])
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / item[0]).write_bytes(item[1])
                    repo.log_artifact(str(Path(tmp) / item[0]), item[2])


def insert_runs(store, experiment_id: str, runs: list[Run], start_ms: int, end_ms: int, datasets: list = (),
                tracking_uri: str | None = None) -> None:
    """Write `runs` (FINISHED, `start_ms`..`end_ms`) with every `datasets` DatasetInput as their dataset inputs:
    artifacts first, then all rows in one transaction (all of the runs, or none; a failed transaction removes the
    artifacts it wrote)."""
    from mlflow.store.tracking.dbmodels.models import (SqlInput, SqlInputTag, SqlLatestMetric, SqlMetric, SqlParam,
                                                       SqlRun, SqlTag)

    exp = int(experiment_id)
    rows: dict = {SqlRun: [], SqlTag: [], SqlParam: [], SqlMetric: [], SqlLatestMetric: [], SqlInput: [],
                  SqlInputTag: []}
    for run in runs:
        rows[SqlRun].append(dict(run_uuid=run.run_id, name=run.name, source_type="UNKNOWN", source_name="",
                                 entry_point_name="", user_id=run.tags.get("mlflow.user", "unknown"), status="FINISHED",
                                 start_time=start_ms, end_time=end_ms, deleted_time=None, source_version="",
                                 lifecycle_stage="active", experiment_id=exp, artifact_uri=run.artifact_uri))
        rows[SqlTag] += [dict(key=k, value=str(v), run_uuid=run.run_id) for k, v in run.tags.items()]
        rows[SqlParam] += [dict(key=k, value=str(v), run_uuid=run.run_id) for k, v in run.params.items()]
        values, latest = _metric_rows(run, end_ms)
        rows[SqlMetric] += values
        rows[SqlLatestMetric] += latest
    unique = list({(d.dataset.name, d.dataset.digest): d for d in datasets}.values())  # the first of a repeat, as MLflow
    _write_artifacts(runs, tracking_uri)
    try:
        with store.ManagedSessionMaker() as session:
            conn = session.connection()
            old_cache = _big_cache(conn)
            ids = _dataset_ids(session, exp, unique) if unique else {}
            for run in runs:
                for d in unique:
                    edge = uuid.uuid4().hex
                    rows[SqlInput].append(dict(input_uuid=edge, source_type="DATASET",
                                               source_id=ids[(d.dataset.name, d.dataset.digest)],
                                               destination_type="RUN", destination_id=run.run_id, step=0))
                    rows[SqlInputTag] += [dict(input_uuid=edge, name=t.key, value=t.value) for t in d.tags]
            try:
                for model, batch in rows.items():  # parents before children: runs, then what points at them
                    if batch:
                        _insert(session, model.__table__, batch)
            finally:
                if old_cache is not None:  # the pooled connection goes back as it came
                    with contextlib.suppress(Exception):
                        conn.exec_driver_sql(f"PRAGMA cache_size = {int(old_cache)}")
    except BaseException:
        _remove_artifacts(runs, tracking_uri)
        raise


def _big_cache(conn) -> int | None:
    """On sqlite, a 256 MiB page cache for this connection's inserts (the default 2 MiB makes each of the ~5 index
    insertions per metric value a page miss once the store holds thousands of runs: ~2x slower); returns the size
    it replaced (to set back), else None."""
    if conn.dialect.name != "sqlite":
        return None
    old = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql("PRAGMA cache_size = -262144")
    return old


_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # positional, per DB-API paramstyle


def _insert(session, table, batch: list[dict]) -> None:
    """`batch` (dicts with the same keys) into `table` in the session's transaction: one driver `executemany` of
    plain tuples where the driver takes positional parameters (sqlite, psycopg2, PyMySQL), which skips SQLAlchemy's
    per-row parameter processing (about a third of the time at 300 rows a run); else SQLAlchemy's insert."""
    conn = session.connection()
    mark = _PLACEHOLDER.get(conn.dialect.paramstyle)
    if mark is None:
        session.execute(table.insert(), batch)
        return
    cols = list(batch[0])
    q = conn.dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) "
           f"VALUES ({', '.join([mark] * len(cols))})")
    conn.exec_driver_sql(sql, list(map(operator.itemgetter(*cols), batch)) if len(cols) > 1 else
                         [(r[cols[0]],) for r in batch])


def _remove_artifacts(runs: list[Run], tracking_uri: str | None) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for run in runs:
        if run.artifacts:
            with contextlib.suppress(Exception):  # cleaning up after a failure: never hide the failure itself
                get_artifact_repository(run.artifact_uri, tracking_uri=tracking_uri).delete_artifacts()


def tag_values(store, experiment_id: str, key: str, where: dict[str, str] | None = None) -> set[str]:
    """The values of tag `key` on the experiment's active FINISHED runs that also carry every tag of `where`: one
    query, however many runs."""
    from sqlalchemy.orm import aliased

    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    with store.ManagedSessionMaker() as session:
        q = (session.query(SqlTag.value).join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid)
             .filter(SqlRun.experiment_id == int(experiment_id), SqlRun.status == "FINISHED",
                     SqlRun.lifecycle_stage == "active", SqlTag.key == key))
        for k, v in (where or {}).items():
            w = aliased(SqlTag)
            q = q.join(w, w.run_uuid == SqlTag.run_uuid).filter(w.key == k, w.value == v)
        return {value for (value,) in q.all()}


def search_tag_values(client, experiment_id: str, key: str, where: dict[str, str] | None = None,
                      page: int = 1000) -> set[str]:
    """`tag_values` for a store that is not SQL (file store, a server): search_runs, paged."""
    f = " and ".join([f"tags.`{k}` = '{v}'" for k, v in (where or {}).items()] + ["attributes.status = 'FINISHED'"])
    out, token = set(), None
    while True:
        runs = client.search_runs([experiment_id], f, max_results=page, page_token=token)
        out |= {r.data.tags[key] for r in runs if key in r.data.tags}
        token = runs.token
        if not token:
            return out

