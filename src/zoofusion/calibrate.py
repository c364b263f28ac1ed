"""Pick the fastest way to train the zoo on this machine, once, and remember it (like cuDNN's benchmark mode).

Which path is fastest depends on the machine, not on the data: on a 2-core AVX2 CPU grouped convolutions are
slower than the one-model loop, on an AVX-512 CPU they were 1.5x faster, on a GPU 11x. :func:`calibrate` times
every candidate on a small synthetic shard and returns the fastest as a :class:`Plan`:

* a candidate is a training path of :func:`zoofusion.core.train.train_models` (``single``, ``batched_g<G>`` or, with
  ``data_order="shared"``, ``shared_g<G>``) run in ``workers`` processes of ``threads`` torch threads each: one
  process with all cores' threads, or (CPU) one process per core with one thread each, as the zoo stage runs
  shards. Multi-process candidates are timed by really running that many processes at once;
* its rate is model-images/s of all processes together, best of ``repeats`` (repeats interleave the candidates,
  so a burst of outside load hurts them all alike; a candidate far behind the leader is not timed again, and no
  new round starts after 30 s);
* the fastest wins; a candidate within 3% of it with more processes wins the tie (:func:`pick`);
* the plan is cached as JSON in ``cache_dir``, keyed by the machine (hostname, CPU model, usable cores), the torch
  build (version, CPU ISA it dispatches to, its parallel libraries), the device, the data order, the candidate
  list and the workload; a later call with the same key reads it back without timing anything.

All candidates of one data order train the same models up to float rounding (:mod:`zoofusion.core.train`), so
the choice changes speed only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import zoofusion.layout as layout
from zoofusion.core import train

logger = logging.getLogger(__name__)

__all__ = ["CANDIDATES_VERSION", "Candidate", "Plan", "RealTimer", "Work", "calibrate", "candidates",
           "close_gangs", "machine_key", "measure", "pick", "usable_cores"]

# Bump when the candidate list, the timing method or a path's implementation changes: old plans are then ignored.
CANDIDATES_VERSION = 1
CPU_GROUP_SIZES = (4, 8, 16)
CUDA_GROUP_SIZES = (16, 64)
DEFAULT_CACHE_DIR = layout.CALIBRATE_CACHE
PRUNE_BELOW = 0.6  # after two rounds, a candidate below this fraction of the leader is not timed again (half after one)
BUDGET_S = 30.0  # no new round of timings starts after this many seconds (a loaded machine)
TIE_MARGIN = 0.03  # candidates this close to the fastest count as ties; more processes win (see pick)


@dataclass(frozen=True)
class Candidate:
    """A training path run in ``workers`` processes with ``threads`` torch threads each."""

    path: str
    workers: int = 1
    threads: int = 1

    @property
    def name(self) -> str:
        """``single``, ``batched_g8``, ``shared_g8_2proc``, ...: the name bench and the cache print."""
        return self.path if self.workers == 1 else f"{self.path}_{self.workers}proc"


@dataclass(frozen=True)
class Work:
    """The synthetic shard each candidate trains per timing, in each of its processes: ``n_models`` models (at
    least one full group of the path) x ``n_images`` images x ``epochs``."""

    n_models: int = 4
    n_images: int = 256
    epochs: int = 1
    batch_size: int = 128
    repeats: int = 3
    seed: int = 0

    def models(self, path: str) -> int:
        return max(self.n_models, train.parse_path(path)[1])

    def model_images(self, path: str) -> int:
        return self.models(path) * self.n_images * self.epochs


@dataclass(frozen=True)
class Plan:
    """The chosen way to train: call ``train_models(..., path=plan.path)`` in ``plan.workers`` processes (shards
    spread over them) with ``torch.set_num_threads(plan.threads)`` in each."""

    path: str
    workers: int
    threads: int
    data_order: str
    model_images_per_s: float
    rates: dict[str, float] = field(default_factory=dict)  # every timed candidate's best rate, by name
    seconds: float = 0.0  # how long the calibration took
    key: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def name(self) -> str:
        return Candidate(self.path, self.workers, self.threads).name

    def as_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def candidates(device: str = "cpu", data_order: str = "own", *, cores: int | None = None,
               threads: int | None = None, group_sizes: Sequence[int] | None = None,
               max_group_size: int | None = None) -> list[Candidate]:
    """The candidates for ``device`` and ``data_order``: ``single`` and the grouped path of that order
    (``batched_g<G>`` for ``own``, ``shared_g<G>`` for ``shared``; group sizes above ``max_group_size``, e.g. the
    zoo's shard size, are dropped), each in 1 process x ``threads`` threads (default: ``cores``, the usable cores)
    and, on a CPU with several cores, in ``cores`` processes x 1 thread. With a shared order the batched path is left out: shared_g<G> computes the same
    models with one image gather and a dense conv1 instead of G gathers and a grouped conv1."""
    if data_order not in train.DATA_ORDERS:
        raise ValueError(f"data_order must be one of {train.DATA_ORDERS}; got {data_order!r}.")
    cuda = torch.device(device).type == "cuda"
    cores = usable_cores() if cores is None else int(cores)
    sizes = sorted(set(group_sizes or (CUDA_GROUP_SIZES if cuda else CPU_GROUP_SIZES)))
    if max_group_size is not None:
        sizes = [g for g in sizes if g <= max_group_size] or [max_group_size]
    grouped = "batched" if data_order == "own" else "shared"
    paths = ["single"] + [f"{grouped}_g{g}" for g in sizes if g > 1]
    layouts = [(1, threads or cores)] + ([(cores, 1)] if cores > 1 and not cuda else [])
    return [Candidate(p, w, t) for p in paths for w, t in layouts]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_build() -> dict[str, str]:
    """The parts of the torch build that change kernel speed; thread counts (which change at run time) left out."""
    libs = [line.strip() for line in torch.__config__.parallel_info().splitlines()
            if line.strip() and "threads()" not in line and "NUM_THREADS" not in line]
    return {"torch": torch.__version__, "isa": torch.backends.cpu.get_cpu_capability(),
            "parallel": " | ".join(libs),
            "config_sha": hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:16]}


def machine_key(device: str, data_order: str, cands: Sequence[Candidate], work: Work) -> dict[str, str]:
    """What a cached plan is valid for: machine, torch build, device, data order, candidates, workload."""
    key = {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": str(usable_cores()), **_torch_build(),
           "device": str(device), "data_order": data_order, "version": str(CANDIDATES_VERSION),
           "candidates": ",".join(c.name + f"@{c.threads}t" for c in cands),
           "work": f"{work.n_models}x{work.n_images}x{work.epochs} b{work.batch_size} r{work.repeats}"}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        key["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return key


# ------------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class _Shard:
    """Synthetic data and the timed call for one process and one :class:`Work`."""

    def __init__(self, work: Work, device: str) -> None:
        rng = np.random.default_rng(work.seed)
        self.work, self.device = work, device
        self.images = torch.from_numpy(rng.integers(0, 256, (work.n_images, 32, 32, 3), dtype=np.uint8)).to(device)
        self.labels = torch.from_numpy(rng.integers(0, 2, work.n_images)).to(device)
        self.train_idx = torch.arange(work.n_images, device=device)
        self.val_idx = torch.arange(0, device=device)
        self.last: tuple | None = None  # (stacked weights, history, seeds) of the last timed run

    def run(self, path: str, n_models: int, n_images: int, epochs: int) -> tuple:
        w = self.work
        seeds = list(range(w.seed, w.seed + n_models))
        weights, history = train.train_models(self.images, self.labels, self.train_idx[:n_images], self.val_idx,
                                              seeds, path=path, epochs=epochs, batch_size=w.batch_size, lr=1e-3,
                                              device=self.device)
        _sync(self.device)
        return weights, history, seeds

    def warm_up(self, path: str) -> None:
        """One step per shape, so oneDNN primitive creation (or CUDA start-up) is not timed."""
        self.run(path, train.parse_path(path)[1], min(self.work.n_images, self.work.batch_size), 1)

    def timed(self, path: str) -> tuple[float, float]:
        w = self.work
        t0 = time.perf_counter()
        self.last = self.run(path, w.models(path), w.n_images, w.epochs)
        return t0, time.perf_counter()


def _worker_main(conn, barrier, threads: int, device: str) -> None:  # pragma: no cover - runs in a subprocess
    from zoofusion.executor import die_with_parent

    die_with_parent()
    torch.set_num_threads(threads)
    shards: dict[Work, _Shard] = {}
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        path, work = msg
        try:
            shard = shards.get(work) or shards.setdefault(work, _Shard(work, device))
            shard.warm_up(path)
            barrier.wait(timeout=600)  # all processes start the timed run together
            conn.send(("ok", *shard.timed(path)))
        except Exception as exc:  # report and keep serving; an aborted barrier fails the others' wait too
            barrier.abort()
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _Gang:
    """``n`` spawned processes with ``threads`` threads each that run the same candidate at the same moment."""

    def __init__(self, n: int, threads: int, device: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(n)
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, self.barrier, threads, device), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            self._recv(c)

    @staticmethod
    def _recv(conn) -> tuple:
        try:
            if not conn.poll(900):
                raise RuntimeError("a calibration worker process did not answer within 900 s")
            msg = conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"a calibration worker process exited ({type(exc).__name__})") from exc
        if msg[0] == "error":
            raise RuntimeError(f"a calibration worker process failed: {msg[1]}")
        return msg

    def time(self, path: str, work: Work) -> float:
        """Wall seconds from the first process's start to the last one's end (one clock: CLOCK_MONOTONIC)."""
        self.barrier.reset()
        for c in self.conns:
            c.send((path, work))
        replies = []
        for c in self.conns:
            try:
                replies.append(self._recv(c))
            except RuntimeError as exc:
                replies.append(("error", str(exc)))
        errors = [r[1] for r in replies if r[0] != "ok"]
        if errors:
            raise RuntimeError(f"timing {path} in {len(self.conns)} processes failed: {errors[0]}")
        return max(r[2] for r in replies) - min(r[1] for r in replies)

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()


class RealTimer:
    """Times candidates for real: in this process (torch threads set per candidate, then restored) or in a gang of
    processes started on first use and kept for later candidates. ``timer(candidate)`` returns model-images/s of
    all the candidate's processes together, for one timing of ``work`` (per process). A context manager: leaving it
    ends the worker processes unless ``gangs`` (a dict shared between timers) was given."""

    def __init__(self, work: Work, device: str = "cpu", gangs: dict | None = None) -> None:
        self.work, self.device = work, device
        self.own_gangs = gangs is None
        self.gangs: dict[tuple[int, int], _Gang] = {} if gangs is None else gangs
        self.warm: set[str] = set()
        self.shard: _Shard | None = None

    def __call__(self, c: Candidate) -> float:
        if c.workers == 1:
            if self.shard is None:
                self.shard = _Shard(self.work, self.device)
            old = torch.get_num_threads()
            torch.set_num_threads(c.threads)
            try:
                if c.name not in self.warm:
                    self.shard.warm_up(c.path)
                    self.warm.add(c.name)
                t0, t1 = self.shard.timed(c.path)
            finally:
                torch.set_num_threads(old)
            return self.work.model_images(c.path) / (t1 - t0)
        gang = self.gangs.get((c.workers, c.threads))
        if gang is None:
            gang = self.gangs[(c.workers, c.threads)] = _Gang(c.workers, c.threads, self.device)
        return c.workers * self.work.model_images(c.path) / gang.time(c.path, self.work)

    def close(self) -> None:
        if self.own_gangs:
            close_gangs(self.gangs)

    def __enter__(self) -> RealTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def close_gangs(gangs: dict) -> None:
    """End the worker processes of a ``gangs`` dict shared between :class:`RealTimer` s."""
    for g in gangs.values():
        g.close()
    gangs.clear()


def measure(cands: Sequence[Candidate], timer: Callable[[Candidate], float], repeats: int = 3,
            prune_below: float = PRUNE_BELOW, budget_s: float | None = None) -> dict[str, float]:
    """Best rate of each candidate over ``repeats`` rounds; each round times every candidate still in the race
    once (interleaved, so a burst of outside load hurts all alike). A candidate below ``prune_below / 2`` x the
    leader after the first round, or below ``prune_below`` x after the second, is not timed again (its best so far
    is kept). No round starts after ``budget_s`` seconds once every candidate was timed once."""
    best: dict[str, float] = {c.name: 0.0 for c in cands}
    racing = list(cands)
    t0 = time.perf_counter()
    for r in range(max(1, repeats)):
        for c in racing:
            best[c.name] = max(best[c.name], float(timer(c)))
        lead = max(best.values())
        cut = prune_below / 2 if r == 0 else prune_below
        racing = [c for c in racing if best[c.name] >= cut * lead]
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
    return best


def pick(cands: Sequence[Candidate], rates: dict[str, float], margin: float = TIE_MARGIN) -> Candidate:
    """The fastest candidate; among those within ``margin`` of it, the one with the most processes: one-thread
    processes keep their speed when other work shares the machine, while a multi-threaded process's OpenMP
    barriers stall whenever one of its threads loses its core (seen here: 2 threads 10x slower under load)."""
    top = max(rates[c.name] for c in cands)
    close = [c for c in cands if rates[c.name] >= (1 - margin) * top]
    return max(close, key=lambda c: (c.workers, rates[c.name]))


# ------------------------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------------------------


def _cache_file(cache_dir: Path, key: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"plan-{digest}.json"


def _read_cached(path: Path, key: dict[str, str]) -> Plan | None:
    try:
        doc = json.loads(path.read_text())
        if doc.get("key") != key:
            return None
        p = doc["plan"]
        return Plan(path=p["path"], workers=int(p["workers"]), threads=int(p["threads"]),
                    data_order=p["data_order"], model_images_per_s=float(p["model_images_per_s"]),
                    rates={k: float(v) for k, v in p.get("rates", {}).items()}, seconds=float(p.get("seconds", 0)),
                    key=key, from_cache=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(path: Path, plan: Plan) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"key": plan.key, "plan": {k: v for k, v in plan.as_dict().items() if k not in ("key", "from_cache")},
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def calibrate(device: str = "cpu", data_order: str = "own", cache_dir: str | Path = DEFAULT_CACHE_DIR, *,
              max_group_size: int | None = None, batch_size: int = 128, cores: int | None = None,
              threads: int | None = None, group_sizes: Sequence[int] | None = None, work: Work | None = None,
              timer: Callable[[Candidate], float] | None = None, refresh: bool = False,
              gangs: dict | None = None) -> Plan:
    """The fastest candidate (:func:`candidates`) for this machine, ``device`` and ``data_order``, from the cache
    in ``cache_dir`` or timed now (a few seconds) and cached. ``max_group_size``: the largest group worth timing
    (the zoo's shard size); ``batch_size``: the zoo's. ``timer(candidate) -> model-images/s`` replaces the real
    timing (tests); ``cores``/``threads``: see :func:`candidates`; ``refresh`` times again even when a plan is
    cached; ``gangs``: worker processes to reuse (:class:`RealTimer`)."""
    work = work or Work(batch_size=batch_size)
    cands = candidates(device, data_order, cores=cores, threads=threads, group_sizes=group_sizes,
                       max_group_size=max_group_size)
    key = machine_key(device, data_order, cands, work)
    path = _cache_file(Path(cache_dir), key)
    if not refresh:
        cached = _read_cached(path, key)
        if cached is not None:
            logger.info("calibration: %s from %s", cached.name, path)
            return cached
    t0 = time.perf_counter()
    if timer is None:
        with RealTimer(work, device, gangs) as real:
            rates = measure(cands, real, work.repeats, budget_s=BUDGET_S)
    else:
        rates = measure(cands, timer, work.repeats, budget_s=BUDGET_S)
    best = pick(cands, rates)
    plan = Plan(path=best.path, workers=best.workers, threads=best.threads, data_order=data_order,
                model_images_per_s=rates[best.name], rates=rates, seconds=round(time.perf_counter() - t0, 2),
                key=key)
    _write_cached(path, plan)
    logger.info("calibration: %s (%.0f model-images/s) in %.1f s; %s", plan.name, plan.model_images_per_s,
                plan.seconds, ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    return plan
