"""Tests for zoofusion.calibrate: candidates, picking the fastest, the per-machine cache, real in-process timing."""

from __future__ import annotations

import json

import pytest
import torch

from zoofusion import calibrate as cal

torch.set_num_threads(1)


class FakeTimer:
    """model-images/s per candidate name (a list: one value per call, the last repeated); counts calls."""

    def __init__(self, rates: dict[str, float | list[float]]) -> None:
        self.rates = rates
        self.calls: list[str] = []

    def __call__(self, c: cal.Candidate) -> float:
        self.calls.append(c.name)
        r = self.rates[c.name]
        if isinstance(r, list):
            return r[min(self.calls.count(c.name), len(r)) - 1]
        return r


def _never(c: cal.Candidate) -> float:
    raise AssertionError(f"timed {c.name} although a plan is cached")


def test_candidates_per_data_order_and_device() -> None:
    own = cal.candidates("cpu", "own", cores=2)
    assert [(c.name, c.workers, c.threads) for c in own] == [
        ("single", 1, 2), ("single_2proc", 2, 1), ("batched_g4", 1, 2), ("batched_g4_2proc", 2, 1),
        ("batched_g8", 1, 2), ("batched_g8_2proc", 2, 1), ("batched_g16", 1, 2), ("batched_g16_2proc", 2, 1)]
    shared = [c.name for c in cal.candidates("cpu", "shared", cores=2, max_group_size=8)]
    assert shared == ["single", "single_2proc", "shared_g4", "shared_g4_2proc", "shared_g8", "shared_g8_2proc"]
    assert [c.name for c in cal.candidates("cpu", "own", cores=1, group_sizes=(2,))] == ["single", "batched_g2"]
    assert [c.threads for c in cal.candidates("cpu", "own", cores=4, threads=3, group_sizes=(2,))] == [3, 1, 3, 1]
    # a shard smaller than every group size still gets one grouped path, the shard's size
    assert [c.path for c in cal.candidates("cpu", "own", cores=1, max_group_size=2)] == ["single", "batched_g2"]
    assert all(c.workers == 1 for c in cal.candidates("cuda", "own", cores=8))
    with pytest.raises(ValueError, match="data_order must be one of"):
        cal.candidates("cpu", "mixed")


def test_measure_keeps_best_of_repeats_and_drops_far_behind() -> None:
    cands = cal.candidates("cpu", "own", cores=1, group_sizes=(2, 4, 8))  # single, batched_g2, _g4, _g8
    timer = FakeTimer({"single": [900, 1000, 950], "batched_g2": [100, 120, 999], "batched_g4": [500, 550, 999],
                       "batched_g8": [800, 700, 990]})
    best = cal.measure(cands, timer, repeats=3)
    assert best == {"single": 1000, "batched_g2": 100, "batched_g4": 550, "batched_g8": 990}
    assert timer.calls.count("batched_g2") == 1, "below 0.3x the leader after 1 round: not timed again"
    assert timer.calls.count("batched_g4") == 2, "below 0.6x the leader after 2 rounds: not timed again"
    assert timer.calls.count("single") == timer.calls.count("batched_g8") == 3
    # no new round once the time budget is spent
    once = FakeTimer({"single": 5.0, "batched_g2": 5.0, "batched_g4": 5.0, "batched_g8": 5.0})
    cal.measure(cands, once, repeats=3, budget_s=0.0)
    assert len(once.calls) == 4


def test_calibrate_picks_fastest_caches_and_rereads(tmp_path) -> None:
    rates = {"single": 7000.0, "single_2proc": 7600.0, "batched_g4": 4100.0, "batched_g4_2proc": 5000.0,
             "batched_g8": 4500.0, "batched_g8_2proc": 5400.0}
    timer = FakeTimer(rates)
    kw = dict(cores=2, max_group_size=8)
    plan = cal.calibrate("cpu", "own", tmp_path, timer=timer, **kw)
    assert (plan.path, plan.workers, plan.threads, plan.name) == ("single", 2, 1, "single_2proc")
    assert plan.model_images_per_s == 7600.0 and plan.rates == rates and not plan.from_cache
    # below 0.6x the leader after two rounds: not timed a third time
    assert [n for n in rates if timer.calls.count(n) == 2] == ["batched_g4", "batched_g8"]
    assert len(timer.calls) == 3 * len(rates) - 2
    files = list(tmp_path.glob("plan-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["plan"]["path"] == "single" and doc["key"]["data_order"] == "own"
    for field in ("host", "cpu", "torch", "isa", "device", "version", "candidates"):
        assert doc["key"][field]

    again = cal.calibrate("cpu", "own", tmp_path, timer=_never, **kw)
    assert again.from_cache and (again.path, again.workers, again.threads) == ("single", 2, 1)
    assert again.rates == rates

    # another data order is another plan (the shared path joins the candidates); refresh times again
    shared = FakeTimer({**{k: v for k, v in rates.items() if k.startswith("single")},
                        "shared_g4": 9000.0, "shared_g4_2proc": 9500.0, "shared_g8": 10100.0,
                        "shared_g8_2proc": 9700.0})
    plan_s = cal.calibrate("cpu", "shared", tmp_path, timer=shared, **kw)
    assert (plan_s.path, plan_s.workers, plan_s.threads) == ("shared_g8", 1, 2)
    assert len(list(tmp_path.glob("plan-*.json"))) == 2
    slower = FakeTimer({**rates, "single_2proc": 100.0})
    assert cal.calibrate("cpu", "own", tmp_path, timer=slower, refresh=True, **kw).name == "single"
    assert cal.calibrate("cpu", "own", tmp_path, timer=_never, **kw).name == "single"

    # a damaged cache file is timed again, not trusted
    files = [f for f in tmp_path.glob("plan-*.json") if json.loads(f.read_text())["key"]["data_order"] == "own"]
    files[0].write_text("{not json")
    assert cal.calibrate("cpu", "own", tmp_path, timer=FakeTimer(rates), **kw).name == "single_2proc"


def test_pick_prefers_more_processes_only_within_the_margin() -> None:
    cands = cal.candidates("cpu", "own", cores=2, group_sizes=(4,))  # single, single_2proc, batched_g4, ..._2proc
    rates = {"single": 8000.0, "single_2proc": 7900.0, "batched_g4": 5000.0, "batched_g4_2proc": 6000.0}
    assert cal.pick(cands, rates).name == "single_2proc"  # 1.3% slower: a tie, and sturdier under outside load
    assert cal.pick(cands, {**rates, "single_2proc": 7000.0}).name == "single"
    assert cal.pick(cands, rates, margin=0.0).name == "single"


def test_machine_key_ignores_thread_count_and_names_the_build() -> None:
    cands = cal.candidates("cpu", "own", cores=2)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        k1 = cal.machine_key("cpu", "own", cands, cal.Work())
        torch.set_num_threads(2)
        k2 = cal.machine_key("cpu", "own", cands, cal.Work())
    finally:
        torch.set_num_threads(old)
    assert k1 == k2
    assert k1["torch"] == torch.__version__ and k1["isa"] == torch.backends.cpu.get_cpu_capability()
    assert cal.machine_key("cpu", "shared", cands, cal.Work()) != k1
    assert cal.machine_key("cpu", "own", cands, cal.Work(batch_size=64)) != k1


def test_real_timer_times_in_process_paths() -> None:
    work = cal.Work(n_models=2, n_images=16, batch_size=16, repeats=1)
    with cal.RealTimer(work) as timer:
        for path in ("single", "batched_g2", "shared_g2"):
            assert timer(cal.Candidate(path, 1, 1)) > 0
        weights, history, seeds = timer.shard.last
    assert seeds == [0, 1] and weights["conv1.weight"].shape == (2, 6, 3, 5, 5)
    assert torch.get_num_threads() == 1, "the candidate's thread count is restored afterwards"
