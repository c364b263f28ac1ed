"""zoofusion.projection: the study's hours from measured per-task costs (pools scheduled as they run)."""

from __future__ import annotations

import pytest

from zoofusion.projection import Measured, Study, cyclegan_seconds, evaluate_seconds, makespan, other_seconds, project, \
    study_candidates, zoo_seconds


def measured(**over) -> Measured:
    d = dict(zoo_core_seconds_per_model={"black": 10.0, "cat": 30.0}, zoo_models={"black": 8, "cat": 8}, group_size=4,
             cyclegan_step_seconds={"study/conv1": 0.5, "study/conv2": 1.0, "aligned/pair": 2.0},
             cyclegan_batch_size=64, evaluate_core_seconds_per_candidate=2.0,
             evaluate_feature_seconds_per_candidate=0.1,
             evaluate_candidates={"generated-study": 4, "random": 4, "pixels": 1},
             stage_seconds={"data": 100.0, "kernels": 10.0, "report": 5.0})
    return Measured(**{**d, **over})


STUDY = Study(zoo_models={"black": 128, "cat": 64}, shard_size=32, zoo_workers=2, cyclegan_epochs=10, budget=0)


def test_makespan_is_a_pools_wall_time():
    assert makespan([3, 3, 3, 3], 2) == 6
    assert makespan([5, 1, 1, 1], 2) == 5  # the long task on one worker, the short ones on the other
    assert makespan([4, 4, 4], 1) == 12 and makespan([2], 8) == 2


def test_zoo_shards_spread_over_every_core_one_zoo_after_the_other():
    # black: 4 shards of 32 x 10 s = 320 s each; cat: 2 shards of 32 x 30 s = 960 s each
    assert zoo_seconds(measured(), STUDY, cores=2) == pytest.approx(2 * 320 + 960)
    assert zoo_seconds(measured(), STUDY, cores=4) == pytest.approx(320 + 960)
    assert zoo_seconds(measured(), STUDY, cores=64) == pytest.approx(320 + 960)  # a shard is the unit of work


def test_cyclegan_units_side_by_side_bounded_by_the_longest():
    steps = 10 * 2  # 10 epochs of ceil(128 / 64) steps
    assert cyclegan_seconds(measured(), STUDY, cores=3) == pytest.approx(2.0 * steps)
    assert cyclegan_seconds(measured(), STUDY, cores=1) == pytest.approx(3.5 * steps)  # one after another
    assert cyclegan_seconds(measured(), STUDY, cores=2) == pytest.approx(2.0 * steps)  # 2.0 | 1.0 + 0.5


def test_evaluate_every_budgeted_kind_at_the_studys_budget():
    # budget 0: every zoo model translated (192); pixels stays one candidate
    assert study_candidates(measured(), STUDY) == 2 * 192 + 1
    assert study_candidates(measured(), Study(**{**STUDY.__dict__, "budget": 48})) == 2 * 48 + 1
    assert evaluate_seconds(measured(), STUDY, cores=4) == pytest.approx(385 * 2.0 / 4 + 385 * 0.1)


def test_other_stages_scale_only_where_they_grow_with_the_zoos():
    ratio = 192 / 16
    assert other_seconds(measured(), STUDY) == pytest.approx(100 + 10 * ratio + 5)


def test_project_hours_per_machine_count_add_up():
    out = project(measured(), STUDY, [1, 4], cores_per_machine=2)
    for hours in out.values():
        assert hours["total"] == pytest.approx(sum(v for k, v in hours.items() if k != "total"))
    assert out[4]["zoo"] < out[1]["zoo"] and out[4]["evaluate"] < out[1]["evaluate"]
    assert out[4]["other"] == out[1]["other"]
