"""Where shard-sized work runs: in this process, or in worker processes that never outlive it.

`run_tasks(fn, tasks, workers)` yields `fn(task)` for every task, in task order. With workers > 1 each task runs
in a spawned process; every worker asks the kernel to SIGKILL it when its parent dies (Linux PR_SET_PDEATHSIG),
so a stage killed with SIGKILL leaves no orphan workers training on, and a stage that stops on an error or
Ctrl-C cancels queued tasks and ends its workers before it re-raises.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")
PR_SET_PDEATHSIG = 1


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


def _init(user_init: Callable[[], None] | None) -> None:
    die_with_parent()
    if user_init is not None:
        user_init()


def run_tasks(fn: Callable[[Any], T], tasks: Iterable[Any], workers: int,
              initializer: Callable[[], None] | None = one_core) -> Iterator[T]:
    """`fn(task)` for each task, in order; in `workers` processes when workers > 1 and there is more than one."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t)
        return
    ex = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=_init,
                             initargs=(initializer,))
    try:
        futures = [ex.submit(fn, t) for t in tasks]
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
