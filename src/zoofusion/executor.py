"""Where shard-sized work runs: in this process, in local worker processes, or as Ray tasks on a cluster.

`run_tasks(fn, tasks, workers, shared=..., backend=...)` yields `fn(task, shared)` for every task, in task order.
Workers are pure compute: `shared` (e.g. a domain's images) goes to them once — through Ray's object store, or
through each local worker's initializer — and results come back to the caller, which alone writes files and
logs to MLflow, so a cluster needs no shared filesystem. The results do not depend on the backend.

* `local` (default): spawned processes on this machine. Each asks the kernel to SIGKILL it when its parent dies
  (Linux PR_SET_PDEATHSIG), so a stage killed with SIGKILL leaves no orphan workers; a stage that stops on an
  error or Ctrl-C cancels queued tasks and ends its workers before it re-raises.
* `ray`: one Ray task per shard (1 CPU each). `ray.init(address)` joins the cluster at `address` (or at
  RAY_ADDRESS; `ray start --head` on one machine, `ray start --address=...` on the others) and otherwise
  starts a local Ray instance for this run.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
BACKENDS = ("local", "ray")
_SHARED: Any = None  # a local worker's copy of `shared`, set once by its initializer


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def one_core() -> None:
    """Worker set-up: parallelism is across tasks, so each worker computes on one core."""
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _init(user_init: Callable[[], None] | None, shared: Any) -> None:
    global _SHARED
    die_with_parent()
    _SHARED = shared
    if user_init is not None:
        user_init()


def _call_local(fn: Callable, task: Any) -> Any:
    return fn(task, _SHARED)


def _call_ray(fn: Callable, task: Any, shared: Any, user_init: Callable[[], None] | None) -> tuple[Any, str]:
    import ray

    if user_init is not None:
        user_init()
    return fn(task, shared), ray.get_runtime_context().get_node_id()  # where it ran, for the driver's log


class TimeLimitReached(RuntimeError):
    """A stage stopped at `executor.time_limit_s` with its finished work cached: running it again goes on."""


class AddressError(ValueError):
    """An external address (a Ray cluster, an MLflow server) that does not answer or is malformed."""


def reachable(address: str, timeout_s: float = 3.0) -> bool:
    """Whether something accepts a TCP connection at `host:port`."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def check_backend(backend: str, address: str) -> None:
    """A Ray cluster named by `executor.address` (or RAY_ADDRESS) must answer before any work starts: one line,
    not a traceback after the stages before it have run. Checked by each stage that uses it, at its start, since
    `validate` does not rerun when only the environment changes."""
    if backend != "ray":
        return
    where = address or os.environ.get("RAY_ADDRESS", "")
    if not where or where in ("auto", "local"):
        return  # a local Ray instance, started on demand
    name = "executor.address" if address else "RAY_ADDRESS"
    target = where.removeprefix("ray://")
    if ":" not in target or not target.rpartition(":")[2].isdigit():
        raise AddressError(f"{name}: {where!r} is not host:port (e.g. 10.0.0.5:6379, the port of the head's "
                           "`ray start --head`)")
    if not reachable(target):
        raise AddressError(f"{name}: no Ray cluster answers at {where}; start it (`ray start --head` there) or set "
                           "executor.backend: local")


def run_tasks(fn: Callable[[Any, Any], T], tasks: Iterable[Any], workers: int, shared: Any = None,
              initializer: Callable[[], None] | None = one_core, backend: str = "local",
              address: str = "") -> Iterator[T]:
    """`fn(task, shared)` for each task, in order.

    local: in this process when workers <= 1 or there is one task, else in `workers` processes. ray: as Ray tasks
    (`workers` is then the cluster's business).
    """
    tasks = list(tasks)
    if backend == "ray":
        yield from _run_ray(fn, tasks, shared, initializer, address)
        return
    if backend != "local":
        raise ValueError(f"executor backend {backend!r}: choose one of {BACKENDS}")
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t, shared)
        return
    ex = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=_init,
                             initargs=(initializer, shared))
    try:
        futures = [ex.submit(_call_local, fn, t) for t in tasks]
        for f in futures:
            yield f.result()
    finally:
        # on success all are done; on an error or Ctrl-C, drop the queue and end the workers now
        procs = list((ex._processes or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.kill()
        ex.shutdown(wait=True)


def _run_ray(fn: Callable, tasks: list, shared: Any, initializer: Callable[[], None] | None,
             address: str) -> Iterator:
    import ray

    started = not ray.is_initialized()
    if started:
        # the driver's code travels to the workers as its package on PYTHONPATH (same checkout on every node,
        # or `pip install` of this project there); logs stay on the nodes
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_call_ray)
        ref = ray.put(shared)  # once, through the object store
        pending = [remote.remote(fn, t, ref, initializer) for t in tasks]
        nodes: set[str] = set()
        done = 0
        try:
            for i, p in enumerate(pending, 1):
                result, node = ray.get(p)
                done = i
                if node not in nodes:  # one line per node that took part, so a user sees the work spread
                    nodes.add(node)
                    log.info("ray: node %s took part in this stage's work (task %d of %d)", node[:12], i, len(tasks))
                yield result
        finally:
            # Stopped early (an error, a time limit): cancel only what has not finished. Cancelling a finished
            # task races with its completion callback and can abort the driver (ray-project/ray#54527).
            if done < len(pending):
                _, unfinished = ray.wait(pending[done:], num_returns=len(pending) - done, timeout=0)
                for p in unfinished:
                    ray.cancel(p, force=True)
    finally:
        if started:
            ray.shutdown()
