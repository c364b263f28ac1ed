"""MLflow set-up shared by every stage: one tracking URI, and tags that trace a run to code and data.

Every run gets `git_commit` (with `git_dirty`), `dvc_stage`, and `data.<path>.md5` for each declared input,
read from dvc.lock (the md5 DVC recorded for the upstream stage's output) or hashed directly for raw inputs, and
`dvc_exp` (the DVC experiment it ran in, "workspace" outside one) with `params_hash` (what params it ran with):
replicated experiments share one git commit, so these tell them apart.
Runs are keyed by their inputs (`stage_run`, `BatchLogger`): a rerun that recomputes nothing leaves no run behind,
and `register_version` adds a registry version only for a model whose content is new.

The MLflow store and the private caches live in the project's root (`project_root`), also when DVC runs a queued
experiment in a temporary copy of the repository (.dvc/tmp/exps/...), whose files vanish when it ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Iterator

import yaml

from zoofusion.io import file_md5, repo_root

log = logging.getLogger(__name__)


def project_root() -> Path:
    """Where the project's lasting state lives (mlflow.db, data/cache/): the repository root, or, in a DVC
    experiment run in a temporary copy (`dvc exp run --queue`: <root>/.dvc/tmp/exps/<tmp>/), the checkout that
    queued it, which DVC names in DVC_ROOT. DVC_ROOT counts only there or where it names the root itself, so a
    value left in the environment never sends another project's runs elsewhere."""
    here = repo_root()
    named = os.environ.get("DVC_ROOT")
    if named:
        parent = Path(named).resolve()
        if (parent / "dvc.yaml").is_file() and (here == parent or here.is_relative_to(parent / ".dvc" / "tmp")):
            return parent
    return here


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else a sqlite store in the project root (not the cwd, nor a queued experiment's
    temporary copy: `project_root`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def dvc_experiment() -> str:
    """The DVC experiment this process runs in (DVC sets DVC_EXP_NAME for `dvc exp run`), else "workspace"."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


@functools.lru_cache(maxsize=8)
def _params_hash(path: str, mtime_ns: int) -> str:
    from zoofusion.config import read_yaml

    raw = read_yaml(path) or {}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def params_hash(root: Path | None = None) -> str:
    """A short hash of the params this run resolved (params.yaml in the root, canonical JSON of its values; key
    order, comments and layout do not count): runs of one commit with different `-S` overrides differ here."""
    path = (root or repo_root()) / "params.yaml"
    try:
        return _params_hash(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return "unknown"


def replication_tags(root: Path | None = None) -> dict[str, str]:
    """`dvc_exp` and `params_hash`: on every run (run_tags, BatchLogger.child)."""
    return {"dvc_exp": dvc_experiment(), "params_hash": params_hash(root)}


def check_tracking_uri() -> None:
    """An MLflow server named by MLFLOW_TRACKING_URI must answer before any work: one line naming it."""
    from urllib.parse import urlsplit

    from zoofusion.executor import AddressError, reachable

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    u = urlsplit(uri)
    if u.scheme in ("http", "https"):
        port = u.port or (443 if u.scheme == "https" else 80)
        if not reachable(f"{u.hostname}:{port}"):
            raise AddressError(f"MLFLOW_TRACKING_URI: no MLflow server answers at {u.scheme}://{u.hostname}:{port}; "
                             "start it (scripts/services.sh start) or unset MLFLOW_TRACKING_URI for the local store")


def setup_mlflow(experiment: str):
    """Point MLflow at the project store and select `experiment`; returns the mlflow module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # `mlflow run` exports its own run id and experiment; our stages log to their own experiments, so
    # those would hijack start_run. Keep the launcher's run id as a tag instead (see run_tags).
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        os.environ["ZOOFUSION_LAUNCHER_RUN_ID"] = launcher
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    end_orphan_runs(mlflow.MlflowClient(), mlflow.get_experiment_by_name(experiment).experiment_id)
    return mlflow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphan_runs(client, experiment_id: str) -> int:
    """Mark KILLED the RUNNING runs whose stage process, on this host, no longer exists (e.g. after SIGKILL).

    A stage that fails or is interrupted ends its runs FAILED itself; only a process killed outright cannot,
    and the next stage that opens the experiment closes what it left.
    """
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
    n = 0
    for r in runs:
        t = r.data.tags
        if t.get("zoofusion.host") == socket.gethostname() and t.get("zoofusion.pid", "").isdigit() \
                and not _alive(int(t["zoofusion.pid"])):
            client.set_terminated(r.info.run_id, "KILLED")
            n += 1
    if n:
        log.warning("marked %d runs of a killed stage as KILLED", n)
    return n


def end_runs_of_this_process(status: str = "KILLED") -> int:
    """End as `status` every run this process opened that is still RUNNING, or that an interrupt unwinding through
    `with mlflow.start_run()` just ended FAILED, and their child runs (Ctrl-C or SIGTERM: the run was killed, it
    did not fail). Returns how many runs it ended."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(status)
    client = mlflow.MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    mine = f"tags.`zoofusion.host` = '{socket.gethostname()}' and tags.`zoofusion.pid` = '{os.getpid()}'"
    todo = [r for st in ("RUNNING", "FAILED", "KILLED")
            for r in client.search_runs(exps, f"{mine} and attributes.status = '{st}'", max_results=5000)] if exps else []
    seen, n = set(), 0
    while todo:
        r = todo.pop()
        if r.info.run_id in seen:
            continue
        seen.add(r.info.run_id)
        if r.info.status != status:
            client.set_terminated(r.info.run_id, status)
            n += 1
        todo += [c for st in ("RUNNING", "FAILED") for c in client.search_runs(
            exps, f"tags.`mlflow.parentRunId` = '{r.info.run_id}' and attributes.status = '{st}'", max_results=5000)]
    return n


def git_commit(root: Path) -> tuple[str, bool]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # dvc.lock is DVC's record of the run in progress: it changes during every `dvc repro`
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def lock_md5s(root: Path) -> dict[str, str]:
    """Map each output path recorded in dvc.lock to its md5."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    found: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                found[os.path.normpath(out["path"])] = out["md5"]
    return found


def _rel(p: str | Path, root: Path) -> str:
    """An input's path as dvc.lock names it: relative to the repository root."""
    return os.path.normpath(os.path.relpath(Path(p).resolve(), root)) if Path(p).is_absolute() else os.path.normpath(str(p))


def data_tags(inputs: list[str | Path], root: Path | None = None) -> dict[str, str]:
    """`data.<path>.md5` for each input: DVC's recorded md5 when an upstream stage made it, else hashed here."""
    root = root or repo_root()
    recorded = lock_md5s(root)
    tags = {}
    for p in inputs:
        rel = _rel(p, root)
        md5 = recorded.get(rel)
        full = root / rel
        if md5 is None and full.is_file():
            md5 = file_md5(full)
        tags[f"data.{rel}.md5"] = md5 or "missing"
    return tags


def dataset_inputs(inputs: dict[str | Path, str], root: Path | None = None) -> list:
    """MLflow dataset inputs for a run (the runs table's Datasets column): each input file by its path, with the
    md5 DVC recorded as digest, its location as source, and its context (train / val / test)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    root = root or repo_root()
    md5 = data_tags(list(inputs), root)
    out = []
    for path, context in inputs.items():
        rel = _rel(path, root)
        with warnings.catch_warnings():  # two registered local sources claim a plain path; either is right
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(root / rel))
        ds = MetaDataset(source=source, name=rel, digest=md5[f"data.{rel}.md5"][:36])
        out.append(DatasetInput(dataset=ds._to_mlflow_entity(),
                                tags=[InputTag(key="mlflow.data.context", value=context)]))
    return out


def run_tags(stage: str, inputs: list[str | Path]) -> dict[str, str]:
    root = repo_root()
    sha, dirty = git_commit(root)
    tags = {"git_commit": sha, "git_dirty": str(dirty).lower(), "dvc_stage": stage, **data_tags(inputs, root),
            **replication_tags(root), "zoofusion.host": socket.gethostname(), "zoofusion.pid": str(os.getpid())}
    if os.environ.get("ZOOFUSION_LAUNCHER_RUN_ID"):
        tags["mlflow_project_run_id"] = os.environ["ZOOFUSION_LAUNCHER_RUN_ID"]
    return tags


# One rule for every stage: a rerun that recomputes nothing adds no MLflow run and no registry version.
# A run's key is a hash of what went into it (stage, run name, logged params, the input md5 tags, the stage's code);
# a finished run whose key an earlier finished run of the experiment already has is a duplicate: deleted, with its
# child runs, and tagged with the run it repeats (`mlflow gc` purges deleted runs for good).
KEY_TAG = "zoofusion.key"
DUPLICATE_TAG = "zoofusion.duplicate_of"
CONTENT_TAG = "zoofusion.content"
LINEAGE_TAG = "zoofusion.lineage"
# tags saying where and when a run happened, not what went into it: never part of a key
# (the DVC experiment's name and the whole params file's hash too: a stage's own params are logged, and key it)
_NOT_INPUTS = ("git_commit", "git_dirty", "zoofusion.host", "zoofusion.pid", "mlflow_project_run_id", "mlflow.",
               "dvc_exp", "params_hash", KEY_TAG, DUPLICATE_TAG)


def stage_code(stage: str) -> str:
    """Fingerprint of the code a stage runs (`zoofusion.stages.<name>` and its import closure, the tracking and
    rendering included: they decide what a run holds); "" for a name that is no stage module. Computed once per
    module: `zoo@black` and `zoo@cat` share it."""
    return _module_code(stage.split("@")[0])


@functools.lru_cache(maxsize=None)
def _module_code(name: str) -> str:
    from zoofusion.io import code_fingerprint

    try:
        return code_fingerprint(f"zoofusion.stages.{name}", exclude=("zoofusion.console",))
    except FileNotFoundError:
        return ""


def run_key(stage: str, name: str, params: dict, tags: dict, *, code: str | None = None, **extra: Any) -> str:
    """What went into a run, hashed: its stage and name, params, input tags (`data.<path>.md5`, the stage's own),
    the stage's code fingerprint, and any `extra` (e.g. a BatchLogger run's metrics)."""
    import hashlib
    import json

    blob = {"stage": stage, "name": name, "params": {k: str(v) for k, v in params.items()},
            "tags": {k: str(v) for k, v in tags.items() if not k.startswith(_NOT_INPUTS)},
            "code": stage_code(stage) if code is None else code, **extra}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _finished_with_key(client, experiment_id: str, key: str, parent_id: str | None = None) -> list:
    f = f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'"
    if parent_id:
        f += f" and tags.`mlflow.parentRunId` = '{parent_id}'"
    return list(client.search_runs([experiment_id], f, max_results=50, order_by=["attributes.start_time ASC"]))


def _descendants(client, experiment_id: str, run_id: str) -> list:
    out, todo = [], [run_id]
    while todo:
        kids = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{todo.pop()}'", max_results=50000)
        out += kids
        todo += [k.info.run_id for k in kids]
    return out


def drop_if_duplicate(client, run_id: str, key: str) -> str | None:
    """Delete the finished run `run_id` (keyed `key`) and its child runs when an earlier finished run of its
    experiment has the same key, tagging them `zoofusion.duplicate_of`; returns the earlier run's id, else None.

    A run that holds new content (tag `zoofusion.content` on it or a child: a CNN no run had, a model that became
    a registry version) is kept: something was recomputed differently, so it is no duplicate.
    """
    run = client.get_run(run_id)
    exp = run.info.experiment_id
    same = [r for r in _finished_with_key(client, exp, key) if r.info.run_id != run_id]
    if not same:
        return None
    original = same[0].info.run_id
    kids = _descendants(client, exp, run_id)
    if any(CONTENT_TAG in k.data.tags for k in [run, *kids]):
        log.warning("run %s has the inputs of run %s but new content: kept", run_id, original)
        return None
    for r in [run, *kids]:
        client.set_tag(r.info.run_id, DUPLICATE_TAG, original)
        with contextlib.suppress(Exception):  # MLflow 3: the models it logged go with it
            for m in client.search_logged_models([exp], filter_string=f"source_run_id = '{r.info.run_id}'"):
                client.delete_logged_model(m.model_id)
        client.delete_run(r.info.run_id)
    log.info("%s: same inputs as run %s; the rerun's run and its %d child runs deleted", run.info.run_name, original,
             len(kids))
    return original


def analyze_store(client) -> None:
    """Refresh a sqlite store's query-planner statistics (`ANALYZE`, ~0.1 s at 4498 runs). Without them SQLite joins
    the UI's "runs sorted by a metric" query by scanning every run's metrics for every run: 1.3 s of SQL at 4498
    runs (9 s through `mlflow server`), 0.03 s with them. Other stores are left alone; a failure only logs."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    except Exception as e:  # an optimisation: never the reason a stage fails
        log.debug("ANALYZE of the MLflow store failed: %s", e)


def process_start() -> float:
    """When this process started (epoch seconds; Linux /proc, else when this module was imported): a stage's
    `stage_seconds` counts its imports and its work, not only the time its MLflow run was open."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


@contextlib.contextmanager
def stage_run(mlflow, run_name: str, stage: str, inputs: list[str | Path], tags: dict[str, str] | None = None,
              params: dict | None = None) -> Iterator:
    """A stage's top-level MLflow run, tagged with code and data versions (`run_tags`) and keyed by its inputs:
    on a normal exit the run ends FINISHED, gets `zoofusion.key`, and is deleted with its children if an earlier
    finished run has the same key (`drop_if_duplicate`). An exception or an interrupt ends it as MLflow and the
    stage's command line decide (FAILED; KILLED on SIGINT/SIGTERM) and never deletes it."""
    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name=run_name, tags={**run_tags(stage, inputs), **(tags or {})}) as run:
        run_id = run.info.run_id
        ps = [Param(k, str(v)) for k, v in flat(params or {}).items()]
        for i in range(0, len(ps), 100):  # log_batch takes at most 100 params
            client.log_batch(run_id, params=ps[i:i + 100])
        yield run
        # the stage's wall seconds so far (`python -m zoofusion.bench stages` reads them): a timing, never a DVC output
        client.log_metric(run_id, "stage_seconds", round(time.time() - process_start(), 2))
        logged = client.get_run(run_id).data
        key = run_key(stage, run_name, logged.params, logged.tags)
        client.set_tag(run_id, KEY_TAG, key)
    drop_if_duplicate(client, run_id, key)
    analyze_store(client)  # a stage may have logged thousands of runs: keep the UI's sorted lists fast


def content_hash(tensors: dict, *extra: bytes) -> str:
    """What a model is: its tensors' names and bytes (and `extra`, e.g. the serving code); for registry versions."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode() + b"\0" + tensors[k].detach().cpu().contiguous().numpy().tobytes())
    for b in extra:
        h.update(b)
    return h.hexdigest()[:24]


def register_version(mlflow, name: str, model_uri: str, content: str, lineage: str):
    """A registry version of `model_uri` under `name`, only when `content` differs from the latest version of the
    same `lineage` (e.g. a generated kind); else that latest version. Versions carry both as tags."""
    client = mlflow.MlflowClient()
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except Exception:  # no such registered model yet
        versions = []
    mine = [v for v in versions if v.tags.get(LINEAGE_TAG) == lineage]
    latest = max(mine, key=lambda v: int(v.version), default=None)
    if latest is not None and latest.tags.get(CONTENT_TAG) == content:
        log.info("%s: version %s already holds this model (%s); none added", name, latest.version, lineage)
        return latest
    if mlflow.active_run() is not None:  # the run holding a new version is never deleted as a duplicate
        mlflow.set_tag(CONTENT_TAG, content)
    return mlflow.register_model(model_uri, name, tags={CONTENT_TAG: content, LINEAGE_TAG: lineage})


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    """Flatten nested params for mlflow.log_params (keys joined with '.')."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


class BatchLogger:
    """Finished runs logged in few tracking calls (create, one log_batch per 1000 values, artifacts, terminate):
    a sqlite store costs ~100 ms a call, so a zoo of thousands of CNNs or a tuning of hundreds of trials cannot
    afford one call per value. The one logger of the project: the zoo's CNNs, the tuning's studies and trials."""

    def __init__(self, mlflow, parent_id: str | None, tags: dict[str, str] | None = None, datasets: list | None = None,
                 experiment_id: str | None = None):
        self.client = mlflow.MlflowClient()
        self.datasets = datasets or []  # dataset inputs every run shows (see dataset_inputs)
        self.parent_id = parent_id
        self.exp_id = experiment_id or mlflow.get_run(parent_id).info.experiment_id
        self.tags = dict(tags or {})
        self.seconds = 0.0
        self.reused: set[str] = set()  # earlier runs this logger found instead of logging again
        self._known: dict[tuple, set[str]] = {}  # tag values already in the experiment (`known`)
        self._unanalyzed: int | None = None  # runs `children` inserted since its last ANALYZE (None: none yet)
        self._analyzed = 0  # runs `children` inserted up to its last ANALYZE

    def find(self, tag: str, value: str) -> str | None:
        """The id of a finished run in this experiment tagged `tag=value` (e.g. a content hash), else None."""
        runs = self.client.search_runs([self.exp_id], f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def child(self, name: str, params: dict[str, Any], metrics: Iterable[tuple[str, float, int]],
              tags: dict[str, str] | None = None, artifacts: Iterable[tuple] = (),
              start_ms: int | None = None, end_ms: int | None = None, parent_id: str | None = None,
              datasets: list | None = None) -> str:
        """One finished run under `parent_id` (default: the logger's parent; none: a top-level run): params,
        metrics as (key, value, step), tags, artifacts as (path, folder) or (file name, bytes, folder), dataset inputs
        beside the logger's.

        Keyed by its content (`run_key` of name, params, tags and metrics): a top-level run, or a child of a run
        reused so, that an earlier finished run already holds is not logged again; its id is returned instead."""
        from mlflow.entities import Metric, Param

        t0 = time.perf_counter()
        metrics = [(k, float(v), int(step)) for k, v, step in metrics]
        parent = parent_id or self.parent_id
        all_tags = {**self.tags, **(tags or {})}
        key = run_key(all_tags.get("dvc_stage", ""), name, params, all_tags, metrics=sorted(metrics))
        if parent is None or parent in self.reused:  # a fresh parent has no children to repeat
            same = _finished_with_key(self.client, self.exp_id, key, parent)
            if same:
                self.reused.add(same[0].info.run_id)
                self.seconds += time.perf_counter() - t0
                return same[0].info.run_id
        now = int(time.time() * 1000)
        run_id = self.client.create_run(self.exp_id, run_name=name, start_time=start_ms or now, tags={
            **replication_tags(), **all_tags, KEY_TAG: key,
            **({"mlflow.parentRunId": parent} if parent else {})}).info.run_id
        ms = [Metric(k, v, end_ms or now, step) for k, v, step in metrics]
        ps = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, max(len(ms), len(ps), 1), 1000):  # log_batch takes at most 1000 metrics, 100 params
            self.client.log_batch(run_id, metrics=ms[i:i + 1000], params=[])
        for i in range(0, len(ps), 100):
            self.client.log_batch(run_id, params=ps[i:i + 100])
        if self.datasets or datasets:
            self.client.log_inputs(run_id, datasets=[*self.datasets, *(datasets or [])])
        for art in artifacts:
            if len(art) == 2:
                self.client.log_artifact(run_id, str(art[0]), art[1])
                continue
            with tempfile.TemporaryDirectory() as tmp:  # bytes: a file of that name
                (Path(tmp) / art[0]).write_bytes(art[1])
                self.client.log_artifact(run_id, str(Path(tmp) / art[0]), art[2])
        self.client.set_terminated(run_id, "FINISHED", end_time=end_ms)
        self.seconds += time.perf_counter() - t0
        return run_id


    def known(self, tag: str, **where: str) -> set[str]:
        """The values of `tag` on the experiment's finished runs that carry the tags `where` (e.g. the content hashes
        of a domain's CNNs), read once per logger and kept up to date by the caller: one query a stage, where `find`
        costs a search a run. On a SQL store one SQL query; else search_runs, paged."""
        import zoofusion.tracking_bulk as bulk

        cache_key = (tag, tuple(sorted(where.items())))
        if cache_key not in self._known:
            t0 = time.perf_counter()
            store = bulk.sql_store(self.client)
            self._known[cache_key] = bulk.tag_values(store, self.exp_id, tag, where) if store is not None else \
                bulk.search_tag_values(self.client, self.exp_id, tag, where)
            self.seconds += time.perf_counter() - t0
        return self._known[cache_key]

    def children(self, runs: Iterable[tuple], start_ms: int | None = None, end_ms: int | None = None) -> list[str]:
        """Many finished child runs of the logger's (fresh) parent at once: (name, params, metrics as (key, value,
        step), tags[, artifacts as (path, folder) or (file name, bytes, folder)]) each, keyed as `child` keys them,
        each with the logger's dataset inputs. On a SQL store (sqlite, PostgreSQL, MySQL) all of them in one transaction through the store's own
        tables, artifacts copied through each run's artifact repository (`tracking_bulk.insert_runs`): about 1 ms a
        run where `child` costs ~50-100 ms (five tracking calls, each its own transaction), so 4498 CNNs log in
        seconds, not minutes. Another store, or a parent reused from an earlier run, gets one `child` call per run."""
        import zoofusion.tracking_bulk as bulk

        runs = [(n, p, [(k, float(v), int(s)) for k, v, s in m], t, list(rest[0]) if rest else [])
                for n, p, m, t, *rest in runs]
        store = bulk.sql_store(self.client)
        if self.parent_id in self.reused or store is None:
            return [self.child(n, p, m, t, artifacts=a, start_ms=start_ms, end_ms=end_ms) for n, p, m, t, a in runs]
        from mlflow.utils.uri import append_to_uri_path

        t0 = time.perf_counter()
        now = int(time.time() * 1000)
        root = self.client.get_experiment(self.exp_id).artifact_location
        where = replication_tags()  # as `child` tags them (never part of a key)
        made = []
        for name, params, metrics, tags, artifacts in runs:
            run_id = bulk.new_run_id()
            all_tags = {**where, **self.tags, **tags}
            all_tags = {**all_tags, KEY_TAG: run_key(all_tags.get("dvc_stage", ""), name, params, all_tags,
                                                     metrics=sorted(metrics)), "mlflow.runName": name}
            if self.parent_id:
                all_tags["mlflow.parentRunId"] = self.parent_id
            made.append(bulk.Run(run_id, name, append_to_uri_path(root, run_id, "artifacts"),
                                 {k: str(v) for k, v in params.items()}, all_tags, metrics, artifacts))
        bulk.insert_runs(store, self.exp_id, made, start_ms or now, end_ms or now, self.datasets,
                         tracking_uri=self.client.tracking_uri)
        # planner statistics (`analyze_store`) after the first batch, then once the runs since the last ANALYZE reach
        # 1000 or as many as before it, not every shard: ANALYZE costs ~0.1 s at the zoo's size and grows with the
        # store (evaluate's candidates carry 41 metrics each), a zoo stage makes ~40 shards, evaluate up to ~77
        # chunks; `stage_run` ends with one. Statistics at most 2x behind, O(log n) ANALYZEs.
        if self._unanalyzed is None or self._unanalyzed + len(made) >= max(1000, self._analyzed):
            analyze_store(self.client)
            self._analyzed += (self._unanalyzed or 0) + len(made)
            self._unanalyzed = 0
        else:
            self._unanalyzed += len(made)
        self.seconds += time.perf_counter() - t0
        return [r.run_id for r in made]


def cnn_content(weights: dict, curves: list) -> str:
    """What a logged CNN is: its weights and its training curves (same content = same run)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode() + weights[k].detach().cpu().contiguous().numpy().tobytes())
    for c in curves:
        h.update(np.ascontiguousarray(c, dtype=np.float64).tobytes())
    return h.hexdigest()[:20]


CNN_CURVES = ("train_loss", "train_acc", "val_loss", "val_acc")


def weights_bytes(weights: dict) -> bytes:
    """A CNN's `model.pt` (a SmallCNN state dict, `torch.save`d; `torch.load` reads it), made in memory."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({n: t.clone() for n, t in weights.items()}, buf)  # clones: a view would save the whole stack
    return buf.getvalue()


def log_cnns(logger: BatchLogger, domain: str, first_index: int, shard: dict, run_params: dict) -> int:
    """A child run per CNN of a zoo shard (params, per-epoch curves, final values, weights as `model.pt`, the
    logger's dataset inputs), skipping CNNs already logged with the same content (tag `zoofusion.content`: the
    domain's hashes read once per logger, `BatchLogger.known`), the new ones in one `children` call; returns how
    many were new. Its seconds (hashing and saving the weights included) count in the logger's."""
    from zoofusion.core.cnn import unstack

    t0, before = time.perf_counter(), logger.seconds
    hist = {k: v.numpy() for k, v in shard["history"].items()}
    known = logger.known(CONTENT_TAG, domain=domain)
    runs, fresh = [], set()
    for j, (seed, weights) in enumerate(zip(shard["seeds"].tolist(), unstack(shard["weights"]))):
        k = first_index + j
        content = cnn_content(weights, [hist[n][j] for n in CNN_CURVES])
        if content in known or content in fresh:
            continue
        fresh.add(content)
        metrics = [(n, hist[n][j, e], e) for n in CNN_CURVES for e in range(hist[n].shape[1])]
        metrics += [(f"final_{n}", hist[n][j, -1], 0) for n in CNN_CURVES]
        params = {"domain": domain, "model_index": k, "seed": seed, **run_params, "architecture": "conv6-conv16-fc2"}
        runs.append((f"{domain}-{k:05d}", params, metrics, {"domain": domain, CONTENT_TAG: content},
                     [("model.pt", weights_bytes(weights), None)]))
    if runs:
        logger.children(runs)
    known |= fresh  # logged now: a later shard of the stage repeating them is no new content
    logger.seconds = before + time.perf_counter() - t0
    return len(runs)


def log_stage_run(stage: str, inputs: list[str | Path], params: dict, metrics: dict,
                  artifacts: Iterable[str | Path] = (), experiment: str = "pipeline") -> None:
    """One finished MLflow run for a stage that makes something but has no runs of its own to nest (data,
    testset, kernels, report): its params, its summary numbers as metrics, the files a person looks at."""
    mlflow = setup_mlflow(experiment)
    with stage_run(mlflow, stage, stage, inputs, params=params):
        mlflow.log_metrics({k: float(v) for k, v in flat(metrics).items() if isinstance(v, (int, float))})
        for a in artifacts:
            mlflow.log_artifact(str(a))
