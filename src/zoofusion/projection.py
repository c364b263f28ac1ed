"""The study's full-scale time, projected from the per-task times a measured run logged to MLflow.

Pure functions: measured per-task costs in, hours per machine count out (``python -m zoofusion.bench project``
reads the costs from MLflow and prints the result). The model of each step:

- **zoo**: a domain's models in the study's shards (``shard_bounds``, the layout the zoo stage uses) over every core
  of every machine, each shard costing its models times the measured core-seconds per model, scheduled as a pool
  does (the next shard to the first free core); the two zoos one after another, as DVC runs them.
- **CycleGAN**: each unit's measured seconds per training step, times the study's steps (epochs times
  ``ceil(max(N_A, N_B) / batch_size)``, N the models harvested into it); the units side by side on the cores (one
  step submits them all), so the wall time is the pool's makespan.
- **evaluate**: the measured core-seconds per candidate (its protocol, one process) times the study's candidates
  (every generated model at budget 0, each budgeted kind the same, the fixed kinds as measured), spread over every
  core; feature extraction per candidate in the driver.
- **other stages**: their measured wall seconds, those that scale with the zoos' size (kernels, generate, novelty)
  times the ratio of the study's models to the measured ones.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SCALES_WITH_MODELS = ("kernels", "generate@study", "generate@aligned", "novelty")


@dataclass(frozen=True)
class Measured:
    """Per-task costs of one measured run (bench.read_measured reads them from MLflow)."""

    zoo_core_seconds_per_model: Mapping[str, float]  # domain -> training core-seconds per model
    zoo_models: Mapping[str, int]  # domain -> models the run trained
    group_size: int  # zoo.group_size of the run (shards hold whole groups)
    cyclegan_step_seconds: Mapping[str, float]  # unit (variant/unit) -> seconds per training step
    cyclegan_batch_size: int
    evaluate_core_seconds_per_candidate: float  # the protocol, one process
    evaluate_feature_seconds_per_candidate: float  # feature extraction, in the driver
    evaluate_candidates: Mapping[str, int]  # kind -> candidates the run evaluated
    stage_seconds: Mapping[str, float]  # every other stage's wall seconds


@dataclass(frozen=True)
class Study:
    """The scale projected to (the Makefile's STUDY_PARAMS)."""

    zoo_models: Mapping[str, int]
    shard_size: int
    zoo_workers: int  # zoo.workers: the shards' layout (the last round split over this many)
    cyclegan_epochs: int
    budget: int  # 0: every generated model (both variants translate every zoo model into the other domain)


def makespan(durations: Sequence[float], workers: int) -> float:
    """Wall time of tasks taken in order by the first free of `workers` (a process pool, or Ray's queue)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def zoo_seconds(m: Measured, s: Study, cores: int) -> float:
    from zoofusion.steps.zoo import shard_bounds

    total = 0.0
    for domain, n in s.zoo_models.items():
        shards = shard_bounds(n, s.shard_size, m.group_size, s.zoo_workers)
        total += makespan([(b - a) * m.zoo_core_seconds_per_model[domain] for a, b in shards], cores)
    return total


def cyclegan_seconds(m: Measured, s: Study, cores: int) -> float:
    steps = s.cyclegan_epochs * math.ceil(max(s.zoo_models.values()) / m.cyclegan_batch_size)
    return makespan(sorted((t * steps for t in m.cyclegan_step_seconds.values()), reverse=True), cores)


def study_candidates(m: Measured, s: Study) -> int:
    """Every kind evaluated as many times as the measured run's largest kind (the budget), at the study's budget
    (0: one candidate per generated model, i.e. per zoo model); kinds the run evaluated fewer times stay as they were."""
    budget = s.budget or sum(s.zoo_models.values())
    top = max(m.evaluate_candidates.values())
    return sum(budget if n == top else n for n in m.evaluate_candidates.values())


def evaluate_seconds(m: Measured, s: Study, cores: int) -> float:
    n = study_candidates(m, s)
    return n * m.evaluate_core_seconds_per_candidate / cores + n * m.evaluate_feature_seconds_per_candidate


def other_seconds(m: Measured, s: Study) -> float:
    ratio = sum(s.zoo_models.values()) / sum(m.zoo_models.values())
    return sum(t * (ratio if stage in SCALES_WITH_MODELS else 1.0) for stage, t in m.stage_seconds.items())


def project(m: Measured, s: Study, machines: Sequence[int], cores_per_machine: int) -> dict[int, dict[str, float]]:
    """Hours of each step and in all, per machine count (every machine with `cores_per_machine` cores)."""
    out = {}
    for k in machines:
        cores = k * cores_per_machine
        steps = {"zoo": zoo_seconds(m, s, cores), "cyclegan": cyclegan_seconds(m, s, cores),
                 "evaluate": evaluate_seconds(m, s, cores), "other": other_seconds(m, s)}
        out[k] = {**{name: sec / 3600 for name, sec in steps.items()}, "total": sum(steps.values()) / 3600}
    return out
