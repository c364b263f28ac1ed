"""Benchmarks. ``python -m zoofusion.bench zoo ...`` times every zoo training path (one model at a time, batched
grouped convolutions, shared-order groups; in one process or one process per core) and the fastest on this machine
(:mod:`zoofusion.calibrate`), as the `zoo.path` / `zoo.workers` to write in params.yaml: the pipeline never picks a
path by timing, since paths differ in float rounding. The study's whole chain is timed where it
runs, through DVC and MLflow (`make study`): every stage logs its own seconds to MLflow.

``python -m zoofusion.bench mlflow --runs 4498`` logs the study's zoos (2749 + 1749 CNNs) as synthetic child runs
into a fresh sqlite store through the zoo stage's own code path (`tracking.log_cnns` per shard: content dedupe,
weights as model.pt, dataset inputs), after a sample logged one call per run as before (projected), then the study's
generated models (``--candidates``, 2 x 4498) as evaluate's candidate child runs (`registry.log_candidates`: the
headline protocol metrics, all of them as protocol/metrics.json, figures of the selected), then serves the store with
``mlflow server`` on 127.0.0.1 and times the REST calls the UI's runs list and compare view make, in both experiments.

Everything printed is one ``name: value`` per line so numbers can be quoted directly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch

from zoofusion.core import train

logger = logging.getLogger(__name__)

STUDY_ZOO_SIZES = (2749, 1749)  # the study's zoos (Makefile STUDY_PARAMS)


def cnn_macs_per_image() -> dict[str, int]:
    """Multiply-accumulates of one SmallCNN forward pass on one 3x32x32 image, per layer."""
    conv1 = 6 * 28 * 28 * (3 * 5 * 5)
    conv2 = 16 * 10 * 10 * (6 * 5 * 5)
    fc = 2 * 400
    return {"conv1": conv1, "conv2": conv2, "fc": fc}


def train_flop_per_image() -> int:
    """Training FLOPs per image: MACs x 2 (FLOP per MAC) x 3 (forward + ~2x for backward)."""
    return sum(cnn_macs_per_image().values()) * 2 * 3


def matmul_peak_gflops(n: int = 1024, reps: int = 10, device: str = "cpu") -> float:
    """Best-of-``reps`` float32 n x n matmul rate in GFLOP/s on ``device`` (CPU: the current torch threads)."""
    if n < 1 or reps < 1:
        raise ValueError(f"matmul_peak_gflops needs n >= 1 and reps >= 1; got n={n}, reps={reps}.")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    a @ b  # warm-up: MKL initialisation and thread pool start (or CUDA kernel selection)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _scratch_mlflow(keep: str | None = None):
    """A throw-away MLflow store (sqlite + artifacts in a temp folder), as the zoo stage uses one; or, with `keep`,
    a fresh store in that (new or empty) folder, left there."""
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    if keep:
        os.makedirs(keep, exist_ok=True)
    with (contextlib.nullcontext(os.path.abspath(keep)) if keep else
          tempfile.TemporaryDirectory(prefix="zoofusion-bench-")) as tmp:
        os.chdir(tmp)  # the default artifact root is relative to the cwd
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            from zoofusion.tracking import setup_mlflow

            yield setup_mlflow("bench-zoo")
        finally:
            os.chdir(old_cwd)
            if old_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_uri


def time_logging(result: tuple, epochs: int, batch_size: int) -> float:
    """Seconds the zoo stage's MLflow logging (a child run per CNN: params, per-epoch metrics, weights) takes for
    the models of ``result`` = (stacked weights, history, seeds); excludes the store's one-off creation."""
    from zoofusion.tracking import BatchLogger, log_cnns

    weights, history, seeds = result
    shard = {"weights": weights, "seeds": torch.tensor(seeds, dtype=torch.int64),
             "history": {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in history.items()}}
    with _scratch_mlflow() as mlflow, mlflow.start_run(run_name="bench") as parent:
        zl = BatchLogger(mlflow, parent.info.run_id)
        log_cnns(zl, "bench", 0, shard, {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3})
    return zl.seconds


CURVES = ("train_loss", "train_acc", "val_loss", "val_acc")  # what the zoo logs per epoch (tracking.CNN_CURVES)


def synthetic_cnn(i: int, epochs: int, domain: str) -> tuple[str, dict, list, dict]:
    """A synthetic zoo CNN's run as the zoo logs one: a few params, per-epoch curves and final values."""
    rng = np.random.default_rng(i)
    curves = {c: np.cumsum(rng.uniform(0, 0.05, epochs)) for c in CURVES}
    metrics = [(c, float(v[e]), e) for c, v in curves.items() for e in range(epochs)]
    metrics += [(f"final_{c}", float(v[-1]), 0) for c, v in curves.items()]
    params = {"domain": domain, "model_index": i, "seed": int(rng.integers(2**31)), "epochs": epochs,
              "batch_size": 128, "lr": 0.01, "architecture": "conv6-conv16-fc2"}
    return f"{domain}-{i:05d}", params, metrics, {"domain": domain}


def study_runs(n: int, epochs: int) -> list[tuple[str, dict, list, dict]]:
    """`n` synthetic CNN runs split between the two domains in the study's proportion (2749 black, 1749 cat)."""
    black = round(n * STUDY_ZOO_SIZES[0] / sum(STUDY_ZOO_SIZES))
    return [synthetic_cnn(i, epochs, "black") for i in range(black)] + \
        [synthetic_cnn(i, epochs, "cat") for i in range(n - black)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store: str, artifacts: str, timeout: float = 180.0):
    """`mlflow server` on 127.0.0.1 and a free port against `store`, in its own process group; yields its base URL
    once /health answers (with the seconds that took and the group's id); on exit SIGTERM to the whole group (SIGKILL after 20 s), so no process outlives it."""
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    cmd = [exe if os.path.exists(exe) else "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--default-artifact-root", artifacts]
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                              "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # as `make ui`: no job workers
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if p.poll() is not None or time.perf_counter() - t0 > timeout:
                log.seek(0)
                raise RuntimeError(f"mlflow server did not start: {log.read()[-2000:].decode(errors='replace')}")
            time.sleep(0.25)
        yield url, time.perf_counter() - t0, p.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.time() + 20  # workers of the group exit after their leader: wait for the last
        while time.time() < deadline:
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        log.close()


def _call(url: str, path: str, body: dict | None = None, query: dict | None = None) -> tuple[float, dict]:
    """Seconds one REST call of the UI takes (POST with a JSON body, else GET with a query), and its answer."""
    import json
    import urllib.parse
    import urllib.request

    full = f"{url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    req = urllib.request.Request(full, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read() or b"{}")
    return time.perf_counter() - t0, out


def time_ui_calls(url: str, experiment_id: str, metric: str = "final_val_acc", compare: int = 5,
                  history: str = "val_acc", name: str = "ui") -> list[str]:
    """The runs list (runs/search: 100 runs, by start time as it opens, then sorted by `metric`) and the compare
    view of `compare` runs (runs/get and metrics/get-history of `history` each), as the UI calls them; a line per
    call, each named `<name>_...`."""
    lines = []
    search = {"experiment_ids": [experiment_id], "max_results": 100, "run_view_type": "ACTIVE_ONLY", "filter": ""}
    for what, order in (("start_time", "attributes.start_time DESC"), ("metric", f"metrics.`{metric}` DESC")):
        for attempt in ("first", "again"):
            s, out = _call(url, "/ajax-api/2.0/mlflow/runs/search", {**search, "order_by": [order]})
            lines.append(f"{name}_runs_search_by_{what}_{attempt}_seconds: {s:.3f} ({len(out.get('runs', []))} runs)")
    ids = [r["info"]["run_id"] for r in out["runs"][:compare]]
    for i, run_id in enumerate(ids):
        s, _ = _call(url, "/ajax-api/2.0/mlflow/runs/get", query={"run_id": run_id})
        lines.append(f"{name}_runs_get_{i}_seconds: {s:.3f}")
        s, h = _call(url, "/ajax-api/2.0/mlflow/metrics/get-history", query={"run_id": run_id, "metric_key": history})
        lines.append(f"{name}_metric_history_{i}_seconds: {s:.3f} ({len(h.get('metrics', []))} points)")
    return lines


def study_shards(specs: list[tuple[str, dict, list, dict]], shard_size: int) -> dict[str, list[tuple[int, dict]]]:
    """The synthetic runs of `study_runs` as the zoo stage's shards, per domain: (index of the shard's first CNN,
    {"weights": stacked SmallCNN weights (each CNN its own seeded init), "seeds", "history": per-epoch curves}) each,
    what `tracking.log_cnns` receives from `steps.zoo`."""
    from zoofusion.core.cnn import init_weights, stack

    out: dict[str, list[tuple[int, dict]]] = {}
    for domain in dict.fromkeys(s[1]["domain"] for s in specs):
        mine = [s for s in specs if s[1]["domain"] == domain]
        for first in range(0, len(mine), shard_size):
            part = mine[first:first + shard_size]
            curves = {c: [[v for k, v, _ in s[2] if k == c] for s in part] for c in CURVES}
            out.setdefault(domain, []).append((first, {
                "weights": stack([init_weights(s[1]["seed"]) for s in part]),
                "seeds": torch.tensor([s[1]["seed"] for s in part], dtype=torch.int64),
                "history": {c: torch.tensor(v, dtype=torch.float64) for c, v in curves.items()}}))
    return out


def _log_zoo_stage(mlflow, domain: str, shards: list[tuple[int, dict]], datasets: list,
                   epochs: int) -> tuple[str, int]:
    """One zoo stage's MLflow logging: a parent run with the domain's dataset inputs, then `tracking.log_cnns` per
    shard, as `stages.zoo` calls it; returns the parent's id and the CNN runs logged."""
    from zoofusion.tracking import BatchLogger, log_cnns

    with mlflow.start_run(run_name=f"zoo-{domain}") as parent:
        mlflow.MlflowClient().log_inputs(parent.info.run_id, datasets=datasets)
        bl = BatchLogger(mlflow, parent.info.run_id, {"dvc_stage": f"zoo@{domain}"}, datasets)
        return parent.info.run_id, sum(log_cnns(bl, domain, first, shard, {"epochs": epochs, "batch_size": 128,
                                                                            "lr": 0.01}) for first, shard in shards)


def _log_one_by_one(mlflow, shards: list[tuple[int, dict]], datasets: list, epochs: int) -> float:
    """Seconds a run of the call-by-call path the zoo used before the bulk path: a content search (`find`), the
    weights saved, `child` (create_run, log_batch, log_inputs, log_artifact, set_terminated), for every CNN of
    `shards`; the runs it made are deleted after."""
    import tempfile
    from pathlib import Path

    from zoofusion.core.cnn import unstack
    from zoofusion.tracking import CNN_CURVES, CONTENT_TAG, BatchLogger, cnn_content

    client = mlflow.MlflowClient()
    n = 0
    with mlflow.start_run(run_name="one-by-one") as parent, tempfile.TemporaryDirectory() as tmp:
        bl = BatchLogger(mlflow, parent.info.run_id, {"dvc_stage": "zoo@black"}, datasets)
        t0 = time.perf_counter()
        for first, shard in shards:
            hist = {k: v.numpy() for k, v in shard["history"].items()}
            for j, (seed, w) in enumerate(zip(shard["seeds"].tolist(), unstack(shard["weights"]))):
                content = cnn_content(w, [hist[c][j] for c in CNN_CURVES])
                if bl.find(CONTENT_TAG, content):
                    continue
                metrics = [(c, hist[c][j, e], e) for c in CNN_CURVES for e in range(epochs)]
                metrics += [(f"final_{c}", hist[c][j, -1], 0) for c in CNN_CURVES]
                path = Path(tmp) / f"{first + j}" / "model.pt"
                path.parent.mkdir()
                torch.save({k: t.clone() for k, t in w.items()}, path)
                bl.child(f"black-{first + j:05d}", {"domain": "black", "model_index": first + j, "seed": seed,
                                                     "epochs": epochs}, metrics,
                         tags={"domain": "black", CONTENT_TAG: content}, artifacts=[(path, None)])
                n += 1
        seconds = time.perf_counter() - t0
    for r in client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                max_results=50000):
        client.delete_run(r.info.run_id)
    client.delete_run(parent.info.run_id)
    return seconds / max(n, 1)


def study_clustering():
    """params.yaml's `evaluate.clustering` (the repository's; the cwd's dvc.yaml root)."""
    from zoofusion.config import load_params
    from zoofusion.io import repo_root

    return load_params(repo_root() / "params.yaml").evaluate.clustering


@functools.lru_cache(maxsize=1)
def candidate_metric_keys() -> tuple[str, ...]:
    """The metric keys of a real evaluate candidate (`val/kmeans/auroc`, `test/dbscan/ari`, ...), from the protocol's
    own code: every UMAP-arm method on an embedding (`core.protocol.evaluate_embedding`) and the arms without UMAP
    (`evaluate_direct`) of 90 synthetic points, with params.yaml's clustering; no UMAP is fitted."""
    from zoofusion.core.protocol import DIRECT_METHODS, PROBE, UMAP_METHODS, evaluate_direct, evaluate_embedding

    p = study_clustering().method_params()
    rng = np.random.default_rng(0)
    y = (np.arange(90) % 3 == 0).astype(np.int64)
    xv, xt = rng.normal(size=(90, 8)) + y[:, None], rng.normal(size=(90, 8)) + y[:, None]
    emb = evaluate_embedding(xv[:, :2], y, xt[:, :2], y, p, 0, methods=UMAP_METHODS).metrics
    direct = evaluate_direct(xv, y, xt, y, standardize=True, p=p, seed=0, methods=(*DIRECT_METHODS, PROBE)).metrics
    return tuple({**emb, **direct})


def study_candidates(n: int, keys: Sequence[str], seed: int = 0) -> list[dict]:
    """`n` synthetic generated models as evaluate's rows (id, kind, source_domain, source_index, metrics, seconds):
    half per variant (kinds generated-study / generated-aligned), each variant's translations of the black zoo
    (`<variant>/<index>/A`) and of the cat zoo (`.../B`) in the study's proportion (2749 : 1749); every metric key of
    `keys` (values in [0, 1], whole numbers for n_clusters), protocol seconds as measured (~2-6 s)."""
    from zoofusion.config import VARIANTS

    rng = np.random.default_rng(seed)
    values = rng.random((n, len(keys)))
    for j, k in enumerate(keys):
        if k.endswith("/n_clusters"):
            values[:, j] = rng.integers(1, 6, n)
    seconds = rng.uniform(2, 6, n)
    rows = []
    for v, m in zip(VARIANTS, (n - n // 2, n // 2)):
        a = round(m * STUDY_ZOO_SIZES[0] / sum(STUDY_ZOO_SIZES))
        for letter, count in (("A", a), ("B", m - a)):
            for i in range(count):
                j = len(rows)
                rows.append({"id": f"{v}/{i}/{letter}", "kind": f"generated-{v}", "source_domain": letter,
                             "source_index": i, "metrics": dict(zip(keys, values[j].tolist())),
                             "seconds": float(seconds[j])})
    return rows


# what the evaluate stage reads (stages.evaluate.log_runs): its run's data tags and dataset inputs
EVALUATE_INPUTS = {**{f"data/generated/{v}/{f}": "train" for v in ("study", "aligned")
                      for f in ("models.pt", "untrained.pt")},
                   "data/kernels/raw/black.pt": "train", "data/kernels/raw/cat.pt": "train",
                   "data/control/weights.pt": "train", "data/prepared/val.npz": "val", "data/testset/test.npz": "test"}


def _counts(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


def _count_children(client, parent_id: str) -> int:
    """How many runs of the store name `parent_id` their parent (one SQL count; search_runs would load them all)."""
    from mlflow.store.tracking.dbmodels.models import SqlTag

    import zoofusion.tracking_bulk as bulk

    with bulk.sql_store(client).ManagedSessionMaker() as session:
        return session.query(SqlTag).filter(SqlTag.key == "mlflow.parentRunId", SqlTag.value == parent_id).count()


def log_study_candidates(mlflow, rows: list[dict], run_params: dict, seed: int = 0) -> tuple[str, str, list[str], float]:
    """evaluate's MLflow logging of `rows` into the experiment `generated-models`: a parent run `evaluate` with the
    stage's tags (`tracking.run_tags`) and dataset inputs, then every candidate's child run through
    `registry.log_candidates` as the stage calls it (a BatchLogger with the stage's tags and the val and test
    datasets; selected: each generated kind's best on val by KMeans, with 4 figures each). Returns the experiment's
    id, the parent's, the children's, and the seconds `log_candidates` took."""
    from pathlib import Path

    from zoofusion.registry import log_candidates
    from zoofusion.render.tables import safe
    from zoofusion.steps.scores import best_on_val_ids
    from zoofusion.tracking import BatchLogger, dataset_inputs, run_tags

    for f in EVALUATE_INPUTS:  # small stand-ins: their md5s become data tags
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_bytes(f.encode() * 100)
    tags, datasets = run_tags("evaluate", list(EVALUATE_INPUTS)), dataset_inputs(EVALUATE_INPUTS, root=Path.cwd())
    exp = mlflow.set_experiment("generated-models").experiment_id
    best = {(k, m): i for k, m, i in best_on_val_ids(rows, seed)}
    selected = [best[(k, "kmeans")] for k in dict.fromkeys(r["kind"] for r in rows)]
    figs = {}
    rng = np.random.default_rng(seed)
    for cid in selected:
        figs[cid] = [Path("reports/figures") / f"{safe(cid)}_{what}.png" for what in ("umap", "tsne", "kernels", "cosine")]
        for f in figs[cid]:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(rng.bytes(30_000))
    with mlflow.start_run(run_name="evaluate", tags=tags) as parent:
        mlflow.MlflowClient().log_inputs(parent.info.run_id, datasets=datasets)
        logger = BatchLogger(mlflow, parent.info.run_id, tags, datasets[-2:])
        t0 = time.perf_counter()
        ids = log_candidates(logger, rows, selected, best, figs, run_params)
        seconds = time.perf_counter() - t0
    return exp, parent.info.run_id, ids, seconds


def run_mlflow(args: argparse.Namespace) -> list[str]:
    """Log `--runs` synthetic CNNs into a fresh sqlite store through the zoo stage's own code path (a parent run per
    domain with its dataset inputs, `tracking.log_cnns` per shard: content dedupe, weights as model.pt, dataset
    inputs), after a sample logged call by call as the zoo did before (projected to all); then the same stages
    again (a rerun: nothing new); then `--candidates` generated models as evaluate logs its candidates
    (`log_study_candidates`); then serve the store and time the UI's calls in both experiments. Targets: each
    logging < 60 s, each call < 5 s."""
    from pathlib import Path

    from zoofusion.registry import CANDIDATE_CHUNK, is_headline
    from zoofusion.tracking import dataset_inputs

    if args.keep and os.path.isdir(args.keep) and os.listdir(args.keep):
        raise SystemExit(f"bench mlflow: --keep {args.keep} is not empty; give a new or empty folder (the store is "
                         f"made fresh there)")
    if args.candidates:  # read in the repository, before the scratch store's folder becomes the cwd
        clustering, keys = study_clustering(), candidate_metric_keys()
    specs = study_runs(args.runs, args.epochs)
    n_metrics = len(specs[0][2])
    lines = [f"runs: {args.runs} (black {sum(s[1]['domain'] == 'black' for s in specs)}, "
             f"cat {sum(s[1]['domain'] == 'cat' for s in specs)})",
             f"per_run: {len(specs[0][1])} params, {n_metrics} metric values ({len(CURVES)} curves x {args.epochs} "
             f"epochs + {len(CURVES)} final), tags, dataset input, weights model.pt"]
    shards = study_shards(specs, args.shard_size)
    with _scratch_mlflow(args.keep) as mlflow:
        store = os.environ["MLFLOW_TRACKING_URI"]
        exp = mlflow.get_experiment_by_name("bench-zoo").experiment_id
        datasets = {}
        for domain in shards:  # the stage's input file, as dataset input of the parent and of every CNN
            Path(f"{domain}.npz").write_bytes(domain.encode() * 1000)
            datasets[domain] = dataset_inputs({f"{domain}.npz": "train"}, root=Path.cwd())
        if args.sample:  # the first `--sample` CNNs (black ones), as shards
            n = min(args.sample, len(specs))
            per_run = _log_one_by_one(mlflow, study_shards(specs[:n], args.shard_size)["black"], datasets["black"],
                                      args.epochs)
            lines += [f"before_seconds_per_run: {per_run:.4f} (find + BatchLogger.child with model.pt and dataset "
                      f"inputs, {n} runs timed)",
                      f"before_seconds_projected: {per_run * args.runs:.1f} ({args.runs} runs one call each; "
                      f"target < 60)"]
        t0 = time.perf_counter()
        logged = [_log_zoo_stage(mlflow, d, s, datasets[d], args.epochs) for d, s in shards.items()]
        seconds = time.perf_counter() - t0
        n = sum(k for _, k in logged)
        client = mlflow.MlflowClient()
        kids = sum(len(client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{p}'", max_results=50000))
                   for p, _ in logged)
        lines += [f"after_seconds: {seconds:.1f} ({kids} child runs + {len(shards)} parents, tracking.log_cnns as the "
                  f"zoo stage calls it, shards of {args.shard_size}: content dedupe, model.pt, dataset inputs; "
                  f"target < 60: {'pass' if seconds < 60 else 'FAIL'})",
                  f"after_seconds_per_cnn: {seconds / max(n, 1):.4f}",
                  f"after_runs_per_second: {n / seconds:.0f}"]
        t0 = time.perf_counter()
        again = [_log_zoo_stage(mlflow, d, s, datasets[d], args.epochs) for d, s in shards.items()]
        lines.append(f"rerun_seconds: {time.perf_counter() - t0:.1f} ({sum(k for _, k in again)} new runs: the same "
                     f"shards again, one content lookup per stage)")
        for p, _ in again:
            client.delete_run(p)  # the rerun's empty parents (the stage deletes them as duplicates)
        if args.candidates:
            rows = study_candidates(args.candidates, keys)
            cand_exp, parent, ids, seconds = log_study_candidates(mlflow, rows, clustering.umap_kwargs())
            kids = _count_children(client, parent)
            shown = sum(map(is_headline, rows[0]["metrics"]))
            lines += [f"candidates: {len(rows)} ({', '.join(f'{k} {n}' for k, n in _counts(rows).items())}; each "
                      f"{shown + 1} metrics (the headline protocol metrics + protocol_seconds; all "
                      f"{len(rows[0]['metrics'])} in protocol/metrics.json), "
                      f"{5 + len(clustering.umap_kwargs())} params, the stage's tags, val and test dataset inputs)",
                      f"candidates_seconds: {seconds:.1f} ({kids} child runs + 1 parent in experiment generated-models, "
                      f"registry.log_candidates as evaluate calls it, {CANDIDATE_CHUNK} runs per BatchLogger.children; "
                      f"target < 60: {'pass' if seconds < 60 else 'FAIL'})",
                      f"candidates_seconds_per_run: {seconds / max(len(ids), 1):.4f}",
                      f"candidates_runs_per_second: {len(ids) / seconds:.0f}"]
        if args.no_server:
            return lines
        with tempfile.TemporaryDirectory(prefix="zoofusion-bench-art-") as art, mlflow_server(store, art) as (url, up, pgid):
            lines.append(f"server_start_seconds: {up:.1f} (mlflow server on {url}, process group {pgid})")
            calls = time_ui_calls(url, exp)
            if args.candidates:
                calls += time_ui_calls(url, cand_exp, metric="test/kmeans/auroc", history="test/kmeans/auroc",
                                       name="ui_candidates")
        worst = max(float(x.split(": ")[1].split()[0]) for x in calls)
        lines += calls + [f"ui_slowest_call_seconds: {worst:.3f} (of {len(calls)} calls"
                          f"{', both experiments' if args.candidates else ''}; target < 5: {'pass' if worst < 5 else 'FAIL'})",
                          f"server_stopped: yes (process group {pgid} is gone)"]
    return lines


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 8 or 4,8,16; got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"group sizes must be ints >= 1; got {text!r}")
    return values


def _int_at_least(low: int):
    """An argparse type: an int >= `low`, else one line saying so."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}; got {text!r}") from exc
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}; got {v}")
        return v
    return parse


_nonnegative_int, _positive_int = _int_at_least(0), _int_at_least(1)


def stage_seconds(runs: list, dvc_exp: str | None = None) -> dict[str, float]:
    """Wall seconds of each DVC stage, from its latest finished top-level MLflow run, in the order the stages ran:
    the run's metric `stage_seconds` (the stage process's age when its run ended, `tracking.stage_run`), else the
    run's end minus its start. Read from MLflow, never from a DVC output. `runs`: MLflow Run objects; `dvc_exp`:
    only runs tagged with that DVC experiment name (tracking's `dvc_exp` tag)."""
    return {stage: float(r.data.metrics.get("stage_seconds", (r.info.end_time - r.info.start_time) / 1000))
            for stage, r in stage_runs(runs, dvc_exp).items()}


def stage_runs(runs: list, dvc_exp: str | None = None) -> dict[str, object]:
    """The latest finished top-level MLflow run of each DVC stage (see :func:`stage_seconds`), in run order."""
    latest: dict[str, object] = {}
    for r in runs:
        t = r.data.tags
        if ("dvc_stage" not in t or "mlflow.parentRunId" in t or r.info.status != "FINISHED" or not r.info.end_time
                or (dvc_exp is not None and t.get("dvc_exp") != dvc_exp)):
            continue
        # a stage's own run (it logs stage_seconds) beats any other top-level run of the stage (e.g. tune's studies)
        rank = ("stage_seconds" in r.data.metrics, r.info.start_time)
        old = latest.get(t["dvc_stage"])
        if old is None or rank > ("stage_seconds" in old.data.metrics, old.info.start_time):
            latest[t["dvc_stage"]] = r
    return dict(sorted(latest.items(), key=lambda kv: kv[1].info.start_time))


def _finished_runs(client, query: str = "attributes.status = 'FINISHED'") -> list:
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while exp_ids:  # top-level runs carry no parent tag; MLflow cannot filter on a missing tag, so page through
        page = client.search_runs(exp_ids, query, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return runs


def _client():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from zoofusion.tracking import tracking_uri

    return mlflow.MlflowClient(tracking_uri()), tracking_uri()


def run_stages(args: argparse.Namespace) -> list[str]:
    """Each stage's wall seconds from the MLflow store (MLFLOW_TRACKING_URI, else the project's mlflow.db)."""
    client, uri = _client()
    runs = _finished_runs(client)
    seconds = stage_seconds(runs, args.dvc_exp)
    if not seconds:
        raise SystemExit(f"bench stages: no finished stage runs{f' tagged dvc_exp={args.dvc_exp}' if args.dvc_exp else ''}"
                         f" in {uri}; run the pipeline (`make run`, `make study`) first")
    own = {r.data.tags.get("dvc_stage") for r in runs if "stage_seconds" in r.data.metrics}
    lines = [f"stage_seconds_{stage}: {s:.1f}" + ("" if stage in own else "  (a run's open time only: the stage logs "
                                                 "no stage_seconds of its own)") for stage, s in seconds.items()]
    return lines + [f"stage_seconds_total: {sum(seconds.values()):.1f}"]


def _children(client, parent) -> list:
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              max_results=50000)


def read_measured(client, runs: list, dvc_exp: str | None = None):
    """The per-task costs of the latest run of every stage (projection.Measured), from MLflow: the zoo stages'
    training core-seconds and models, each CycleGAN unit's seconds per step (its child run), each evaluate
    candidate's protocol seconds (its child run), and every other stage's wall seconds."""
    import math

    from zoofusion.projection import Measured

    by_stage = stage_runs(runs, dvc_exp)
    need = {"zoo@black", "zoo@cat", "cyclegan", "evaluate"}
    if not need <= set(by_stage):
        raise SystemExit(f"bench project: no finished run of {', '.join(sorted(need - set(by_stage)))} in the "
                         "MLflow store; run the pipeline (`make run`, `make study`) first")
    zoo = {d: by_stage[f"zoo@{d}"] for d in ("black", "cat")}
    units = _children(client, by_stage["cyclegan"])
    step = {}
    for u in units:
        mt, pr = u.data.metrics, u.data.params
        trained = mt["epochs"] - mt.get("resumed_at", 0)
        if trained > 0:
            steps = trained * math.ceil(max(int(pr["n_A"]), int(pr["n_B"])) / int(pr["batch_size"]))
            step[f"{pr['variant']}/{pr['unit']}"] = mt["seconds"] / steps
    ev = by_stage["evaluate"]
    cands = _children(client, ev)
    per = [c.data.metrics["protocol_seconds"] for c in cands if "protocol_seconds" in c.data.metrics]
    if not step or not per:
        raise SystemExit("bench project: the latest cyclegan run trained no epoch, or the latest evaluate run logged "
                         "no protocol_seconds per candidate; rerun them (`dvc repro -f cyclegan evaluate`)")
    kinds: dict[str, int] = {}
    for c in cands:
        kinds[c.data.params["kind"]] = kinds.get(c.data.params["kind"], 0) + 1
    other = {k: v for k, v in stage_seconds(runs, dvc_exp).items() if k not in need}
    return Measured(
        zoo_core_seconds_per_model={d: r.data.metrics["train_seconds_summed_over_workers"] / r.data.metrics["count"]
                                    for d, r in zoo.items()},
        zoo_models={d: int(r.data.metrics["count"]) for d, r in zoo.items()},
        group_size=int(zoo["black"].data.params["group_size"]), cyclegan_step_seconds=step,
        cyclegan_batch_size=int(units[0].data.params["batch_size"]),
        evaluate_core_seconds_per_candidate=sum(per) / len(per),
        evaluate_feature_seconds_per_candidate=ev.data.metrics["seconds_features"] / len(cands),
        evaluate_candidates=kinds, stage_seconds=other)


def run_project(args: argparse.Namespace) -> list[str]:
    """The study's full-scale hours per machine count, from the per-task times of the latest measured run."""
    from zoofusion.projection import Study, project, study_candidates

    client, _ = _client()
    m = read_measured(client, _finished_runs(client), args.dvc_exp)
    s = Study(zoo_models=dict(zip(("black", "cat"), STUDY_ZOO_SIZES)), shard_size=args.shard_size,
              zoo_workers=args.zoo_workers, cyclegan_epochs=args.cyclegan_epochs, budget=args.budget)
    lines = [f"measured_zoo_core_seconds_per_model_{d}: {v:.2f}" for d, v in m.zoo_core_seconds_per_model.items()]
    lines += [f"measured_cyclegan_seconds_per_step_{u.replace('/', '_')}: {v:.4f}"
              for u, v in m.cyclegan_step_seconds.items()]
    lines += [f"measured_evaluate_core_seconds_per_candidate: {m.evaluate_core_seconds_per_candidate:.3f}",
              f"measured_evaluate_feature_seconds_per_candidate: {m.evaluate_feature_seconds_per_candidate:.4f}",
              f"measured_other_stage_seconds: {sum(m.stage_seconds.values()):.1f}",
              f"study_zoo_models: {sum(s.zoo_models.values())}", f"study_candidates: {study_candidates(m, s)}"]
    for k, hours in project(m, s, args.machines, args.cores).items():
        lines += [f"projected_hours_{step}_{k}_machines: {h:.2f}" for step, h in hours.items()]
    return lines


def build_parser() -> argparse.ArgumentParser:
    """CLI: the ``zoo``, ``mlflow``, ``stages`` and ``project`` subcommands."""
    parser = argparse.ArgumentParser(prog="python -m zoofusion.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zoo", help="zoo training throughput of every training path, and the one calibration picks")
    z.add_argument("--models", type=_positive_int, default=16, help="models per process")
    z.add_argument("--images", type=_positive_int, default=1024, help="training images per model")
    z.add_argument("--epochs", type=_positive_int, default=2)
    z.add_argument("--batch-size", type=_positive_int, default=128)
    z.add_argument("--group-size", type=_positive_int_list, default=None,
                   help="group sizes of the grouped paths, a comma list (default: 4,8,16 on CPU, 16,64 on CUDA)")
    z.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads of the one-process paths (default: one per usable core)")
    z.add_argument("--cores", type=_positive_int, default=None,
                   help="processes of the one-process-per-core paths (default: usable cores; 1 = none)")
    z.add_argument("--data-order", choices=train.DATA_ORDERS, default="own",
                   help="the zoo's data order: calibration picks among the paths that train it (zoo.data_order)")
    z.add_argument("--repeats", type=_positive_int, default=1, help="timings per path (best is kept)")
    z.add_argument("--cache-dir", default=None,
                   help="calibration cache to read/write (default: a fresh calibration in a scratch folder)")
    z.add_argument("--study-images", type=_positive_int, default=1600, help="training images per study model")
    z.add_argument("--study-epochs", type=_positive_int, default=20)
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--device", default="cpu", help="cpu | cuda: where to train (the same code runs on both)")
    z.add_argument("--no-logging", action="store_true", help="skip timing the MLflow logging of the zoo")
    m = sub.add_parser("mlflow", help="MLflow at the study's size: logging thousands of CNN and candidate runs, the UI's calls")
    m.add_argument("--runs", type=_positive_int, default=sum(STUDY_ZOO_SIZES), help="synthetic CNN runs (study: 4498)")
    m.add_argument("--epochs", type=_positive_int, default=5, help="per-epoch values of each of the 4 curves")
    m.add_argument("--sample", type=int, default=200,
                   help="runs logged one call each first, to project the one-by-one time (0: skip)")
    m.add_argument("--shard-size", type=_positive_int, default=64,
                   help="CNNs per zoo shard, each logged in one transaction (study: zoo.shard_size=64)")
    m.add_argument("--candidates", type=_nonnegative_int, default=2 * sum(STUDY_ZOO_SIZES),
                   help="synthetic generated models logged as evaluate's candidate runs (study: 8996, every generated "
                        "model of both variants; evaluate.budget 0 with every kind: 76476; 0: skip)")
    m.add_argument("--no-server", action="store_true", help="skip the mlflow server and the UI's calls")
    m.add_argument("--keep", metavar="DIR", default=None, help="make the store in DIR (new or empty) and leave it "
                   "there, e.g. for the browser's timing: scripts/ui_screenshot.py --timing --store sqlite:///DIR/mlflow.db")
    st = sub.add_parser("stages", help="each stage's wall seconds, read from its MLflow run (timings are not DVC outputs)")
    st.add_argument("--dvc-exp", default=None, help="only the runs of this DVC experiment (e.g. study; workspace = "
                    "`dvc repro`); default: the latest run of each stage")
    pj = sub.add_parser("project", help="the study's full-scale hours per machine count, from a measured run's "
                        "per-task times in MLflow")
    pj.add_argument("--dvc-exp", default=None, help="the runs of this DVC experiment (default: each stage's latest)")
    pj.add_argument("--machines", type=_positive_int_list, default=[1, 4, 16], help="machine counts, a comma list")
    pj.add_argument("--cores", type=_positive_int, default=os.cpu_count() or 1, help="cores per machine")
    pj.add_argument("--shard-size", type=_positive_int, default=64, help="the study's zoo.shard_size")
    pj.add_argument("--zoo-workers", type=_positive_int, default=2, help="zoo.workers (the shards' layout)")
    pj.add_argument("--cyclegan-epochs", type=_positive_int, default=200, help="the study's cyclegan.epochs")
    pj.add_argument("--budget", type=int, default=0, help="evaluate.budget (0: every generated model)")
    return parser


def run_zoo(args: argparse.Namespace) -> list[str]:
    """Run the zoo benchmark and return its report lines.

    1. Calibrate as the zoo stage does (a fresh, short calibration unless ``--cache-dir``): its choice is
       ``chosen_path``.
    2. Time every path of both data orders on the benchmark's zoo (``--models`` per process x ``--images`` x
       ``--epochs``; a multi-process path runs that zoo in each of its processes at once) and report model-images/s
       of each, and the chosen path's rate against the one-model loop and against the matmul peak.
    """
    from zoofusion import calibrate as cal

    cores = args.cores or cal.usable_cores()
    threads = args.threads or (cores if args.cores else torch.get_num_threads())
    torch.set_num_threads(threads)
    macs = cnn_macs_per_image()
    flop = train_flop_per_image()
    lines = [
        f"device: {args.device}",
        f"cpu: {cal._cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {cal.usable_cores()} usable cores)",
        f"torch: {torch.__version__}",
        f"threads: {threads}",
        f"cores: {cores}",
        f"models: {args.models}",
        f"images_per_model: {args.images}",
        f"epochs: {args.epochs}",
        f"batch_size: {args.batch_size}",
        f"data_order: {args.data_order}",
        f"macs_per_image_fwd: {sum(macs.values())} (conv1 {macs['conv1']} + conv2 {macs['conv2']} + fc {macs['fc']})",
        f"flop_per_image_train: {flop} (MACs x2 x3 for fwd+bwd)",
    ]
    n = 8192 if torch.device(args.device).type == "cuda" else 1024
    peak = matmul_peak_gflops(n, device=args.device)
    lines.append(f"matmul_peak_gflops: {peak:.1f} (float32 {n}x{n} on {args.device}, {threads} threads, best of 10)")

    gangs: dict = {}
    try:
        with contextlib.ExitStack() as stack:
            cache = args.cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="zoofusion-cal-"))
            # the zoo stage's calibration; its synthetic shard no larger than the benchmark's (tiny test runs)
            cal_work = cal.Work(n_images=min(cal.Work.n_images, args.images), batch_size=args.batch_size)
            plan = cal.calibrate(args.device, args.data_order, cache, cores=cores, threads=threads,
                                 group_sizes=args.group_size, max_group_size=args.models, work=cal_work, gangs=gangs,
                                 refresh=args.cache_dir is None)
        work = cal.Work(n_models=args.models, n_images=args.images, epochs=args.epochs, batch_size=args.batch_size,
                        repeats=args.repeats, seed=args.seed)
        kw = dict(cores=cores, threads=threads, group_sizes=args.group_size, max_group_size=args.models)
        own = cal.candidates(args.device, "own", **kw)
        shared = [c for c in cal.candidates(args.device, "shared", **kw) if c.path != "single"]
        cands = own + shared
        timer = cal.RealTimer(work, args.device, gangs)
        rates = cal.measure(cands, timer, args.repeats, prune_below=0.0)
        result = timer.shard.last if timer.shard is not None else None
    finally:
        cal.close_gangs(gangs)

    single = rates["single"]
    for c in cands:
        order = "shared data order" if c.path.startswith("shared") else "own data order"
        lines.append(f"{c.name}_model_images_per_s: {rates[c.name]:.0f} ({c.workers} x {c.threads} threads, {order})")
    batched = [c.name for c in cands if c.path.startswith("batched") and c.workers == 1]
    if batched:
        best_b = max(batched, key=rates.get)
        lines += [f"best_batched: {best_b}",
                  f"speedup_{best_b}_over_single: {rates[best_b] / single:.2f}"]
    for order, group in (("own", own), ("shared", [c for c in own if c.path == "single"] + shared)):
        names = [c.name for c in group if c.name in rates]
        best = max(names, key=rates.get)
        lines.append(f"best_measured_{order}_order: {best} ({rates[best] / single:.2f}x single)")
    chosen = plan.name
    rate = rates.get(chosen, plan.model_images_per_s)
    gflops = rate * flop / 1e9
    lines += [
        f"calibration: {plan.seconds:.1f} s ({'cached' if plan.from_cache else 'measured'}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in plan.rates.items()) + ")",
        f"chosen_path: {chosen} (path {plan.path}, {plan.workers} processes x {plan.threads} threads, "
        f"data_order {plan.data_order})",
        f"chosen_model_images_per_s: {rate:.0f}",
        f"params_yaml: zoo.path: {plan.path}, zoo.workers: {plan.workers} (the pipeline trains one thread per worker)",
        f"speedup_chosen_over_single: {rate / single:.2f}",
        f"chosen_gflops: {gflops:.1f}",
        f"chosen_gflops_fraction_of_peak: {gflops / peak:.3f}",
    ]
    if not args.no_logging and result is not None:
        log_s = time_logging(result, args.epochs, args.batch_size)
        train_s = args.models * args.images * args.epochs / rate
        lines += [f"mlflow_logging_seconds: {log_s:.2f} ({args.models} child runs: params, "
                  f"{4 * args.epochs + 4} metrics, weights artifact)",
                  f"mlflow_logging_overhead: {100 * log_s / train_s:.1f}% of {chosen} training time "
                  f"(this run's {args.epochs} epochs x {args.images} images)"]
    study = sum(STUDY_ZOO_SIZES) * args.study_images * args.study_epochs
    lines += [
        f"study_model_images: {study} ({'+'.join(map(str, STUDY_ZOO_SIZES))} models x {args.study_images} images"
        f" x {args.study_epochs} epochs)",
        f"study_hours_estimate: {study / rate / 3600:.2f} ({chosen}, training only)",
    ]
    if cores > 1:
        multi = [c.name for c in cands if c.workers == cores and c.path in (plan.path, "single")]
        best_m = max(multi, key=rates.get)
        lines.append(f"study_hours_estimate_{cores}_processes: {study / rates[best_m] / 3600:.2f} ({best_m}, measured)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and print the chosen benchmark's report."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "zoo":
        for line in run_zoo(args):
            print(line)
    elif args.command == "mlflow":
        for line in run_mlflow(args):
            print(line, flush=True)
    elif args.command == "stages":
        for line in run_stages(args):
            print(line)
    elif args.command == "project":
        for line in run_project(args):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
