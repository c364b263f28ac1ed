"""Novelty (core/novelty.py, steps/novelty.py): the nearest-model distance is 0 for a zoo model in its own zoo,
does not see a permutation of the candidate's hidden channels, and the misprediction IoU on worked examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoofusion.core import align, cnn
from zoofusion.core.novelty import (distance_matrix, error_iou, error_set, l2, nearest_model, nearest_other,
                                    typical_distance, val_mapped_calls)
from zoofusion.steps.novelty import errors_of

torch.set_num_threads(1)


def _zoo(n: int, seed: int = 0) -> dict:
    ws = [cnn.init_weights(seed + i) for i in range(n)]
    return {k: torch.stack([w[k] for w in ws]) for k in cnn.CONV_KEYS}


def _one(zoo: dict, j: int) -> dict:
    return {k: zoo[k][j] for k in cnn.CONV_KEYS}


def test_a_zoo_model_is_its_own_nearest_model_at_distance_0():
    zoo = _zoo(5)
    for j in range(5):
        assert nearest_model(_one(zoo, j), zoo) == (j, 0.0)
    # excluded: its nearest OTHER model, at a positive distance
    j, d = nearest_model(_one(zoo, 2), zoo, exclude=2)
    assert j != 2 and d > 0
    m = distance_matrix(zoo)
    assert np.all(np.diag(m) == 0) and m.shape == (5, 5)
    assert typical_distance(m) == pytest.approx(np.median(m[~np.eye(5, dtype=bool)]))
    assert nearest_other(m)[2] == pytest.approx(d)


def test_distance_does_not_see_a_permutation_of_the_hidden_channels():
    zoo = _zoo(4, seed=10)
    rng = np.random.default_rng(3)
    w = {k: v + 0.01 * torch.randn_like(v, generator=torch.Generator().manual_seed(1))
         for k, v in _one(zoo, 1).items()}  # near zoo model 1
    permuted = align.permute(w, rng.permutation(6), rng.permutation(16))
    assert l2(w, permuted) > 0.5  # unaligned, the permuted copy looks far from the original
    j, d = nearest_model(w, zoo)
    jp, dp = nearest_model(permuted, zoo)
    assert j == jp == 1 and dp == pytest.approx(d, rel=1e-6)
    # a permuted copy of a zoo model is that model again, at distance 0 after alignment
    copy = align.permute(_one(zoo, 3), rng.permutation(6), rng.permutation(16))
    assert nearest_model(copy, zoo) == (3, pytest.approx(0.0, abs=1e-6))


def test_l2_is_over_conv1_and_conv2_weights_and_biases():
    a = {k: torch.zeros(s) for k, s in cnn.PARAM_SHAPES.items() if k in cnn.CONV_KEYS}
    b = dict(a, **{"conv2.bias": torch.full((16,), 1.0)})
    assert l2(a, b) == pytest.approx(4.0)  # sqrt(16 * 1^2): biases count


@pytest.mark.parametrize("a, b, iou", [
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),  # identical
    ([1, 0, 0, 0], [0, 1, 0, 0], 0.0),  # disjoint
    ([1, 1, 1, 0], [0, 1, 1, 1], 0.5),  # 2 shared of 4 in the union
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),  # no mistakes on either side: the same (empty) error set, by convention
    ([1, 0, 0, 0], [0, 0, 0, 0], 0.0),
])
def test_error_iou_on_worked_examples(a, b, iou):
    assert error_iou(np.array(a, bool), np.array(b, bool)) == iou


def test_error_iou_refuses_masks_of_different_lengths():
    with pytest.raises(ValueError, match="same images"):
        error_iou(np.zeros(3, bool), np.zeros(4, bool))


def test_error_set_is_the_val_mapped_calls_that_miss():
    y_val = np.array([1, 1, 0, 0, 0])
    clusters_val = np.array([0, 0, 1, 1, 0])  # cluster 0: 2 cats of 3 -> 1; cluster 1 -> 0
    calls = val_mapped_calls(y_val, clusters_val, np.array([0, 1, 2]))  # cluster 2 unseen on val -> 0
    np.testing.assert_array_equal(calls, [1, 0, 0])
    np.testing.assert_array_equal(error_set(np.array([1, 1, 0]), calls), [False, True, False])


def test_errors_of_picks_the_rule_that_reproduces_the_stored_accuracy():
    y_val, y_test = np.array([1, 0, 0, 0]), np.array([1, 0, 0, 1])
    # SVM-like: stored 0/1 calls, their val majority mapping would call everything 'other'
    row = {"clusters": {"ocsvm": (np.array([1, 1, 0, 0]), np.array([1, 1, 0, 0]))},
           "metrics": {"test/ocsvm/accuracy": 0.5}}
    np.testing.assert_array_equal(errors_of(row, "ocsvm", y_val, y_test), [False, True, False, True])
    # KMeans-like: cluster ids, mapped by val majority (cluster 3 -> 1, cluster 5 -> 0)
    row = {"clusters": {"kmeans": (np.array([3, 5, 5, 5]), np.array([3, 5, 5, 3]))},
           "metrics": {"test/kmeans/accuracy": 1.0}}
    np.testing.assert_array_equal(errors_of(row, "kmeans", y_val, y_test), [False] * 4)
    row["metrics"]["test/kmeans/accuracy"] = 0.25  # neither rule gives it: no error set rather than a wrong one
    assert errors_of(row, "kmeans", y_val, y_test) is None
    assert errors_of(row, "dbscan", y_val, y_test) is None  # a method the row was not scored with
