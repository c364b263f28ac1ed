"""Metrics on hand-computed examples; every expected number is derived in a comment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoofusion.core.metrics import (
    METRIC_KEYS,
    accuracy,
    cluster_entropy,
    majority_mapping,
    mapped_predictions,
    precision,
    purity,
    recall,
    score_clusters,
    score_predictions,
)

H_2_3 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # 0.918296 bits, a 2:1 cluster

# y        = 1 1 1 0 0 0
# clusters = 0 0 1 1 1 2
# cluster 0 = {1,1} -> 1 ; cluster 1 = {1,0,0} -> 0 ; cluster 2 = {0} -> 0
# predictions = 1 1 0 0 0 0 -> TP=2 FP=0 FN=1 TN=3
# accuracy 5/6, precision 2/2 = 1, recall 2/3
# entropy = 2/6*0 + 3/6*H(2/3,1/3) + 1/6*0 = 0.5 * 0.918296 = 0.459148
# purity = (2 + 2 + 1) / 6 = 5/6
Y = [1, 1, 1, 0, 0, 0]
C = [0, 0, 1, 1, 1, 2]


def test_worked_example_each_metric():
    assert majority_mapping(Y, C) == {0: 1, 1: 0, 2: 0}
    pred = mapped_predictions(Y, C)
    np.testing.assert_array_equal(pred, [1, 1, 0, 0, 0, 0])
    assert accuracy(Y, pred) == pytest.approx(5 / 6)
    assert precision(Y, pred) == pytest.approx(1.0)
    assert recall(Y, pred) == pytest.approx(2 / 3)
    assert cluster_entropy(Y, C) == pytest.approx(0.5 * H_2_3)
    assert cluster_entropy(Y, C) == pytest.approx(0.459148, abs=1e-6)
    assert purity(Y, C) == pytest.approx(5 / 6)


def test_score_clusters_bundles_the_same_numbers():
    s = score_clusters(Y, C)
    assert tuple(s) == METRIC_KEYS
    assert s == pytest.approx({"accuracy": 5 / 6, "precision": 1.0, "recall": 2 / 3,
                               "entropy": 0.5 * H_2_3, "purity": 5 / 6, "n_clusters": 3.0})
    assert all(isinstance(v, float) for v in s.values())


def test_cluster_ids_need_not_be_contiguous():
    # same partition as Y/C, relabelled 0->7, 1->-5, 2->40: nothing may change
    c = [7, 7, -5, -5, -5, 40]
    assert majority_mapping(Y, c) == {-5: 0, 7: 1, 40: 0}
    assert score_clusters(Y, c) == pytest.approx(score_clusters(Y, C))


def test_tie_maps_to_class_0():
    # y = 1 0 | 1 1 ; cluster 0 = {1,0} tie -> 0, cluster 1 = {1,1} -> 1
    # preds 0 0 1 1: acc 3/4, precision 2/2, recall 2/3
    # entropy = 2/4*1 + 2/4*0 = 0.5 ; purity = (1 + 2)/4 = 0.75
    y, c = [1, 0, 1, 1], [0, 0, 1, 1]
    assert majority_mapping(y, c) == {0: 0, 1: 1}
    s = score_clusters(y, c)
    assert s == pytest.approx({"accuracy": 0.75, "precision": 1.0, "recall": 2 / 3,
                               "entropy": 0.5, "purity": 0.75, "n_clusters": 2.0})


def test_dbscan_noise_is_its_own_cluster():
    # y        = 1 1 0 0  1  1  0
    # clusters = 0 0 1 1 -1 -1 -1
    # noise = {1,1,0} -> 1 (it is NOT folded into cluster 0 or dropped)
    # preds = 1 1 0 0 1 1 1: TP=4 FP=1 FN=0 -> acc 6/7, precision 4/5, recall 1
    # entropy = 3/7 * H(2/3,1/3) ; purity = (2+2+2)/7 ; 3 clusters counting noise
    y, c = [1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 1, -1, -1, -1]
    assert majority_mapping(y, c) == {-1: 1, 0: 1, 1: 0}
    s = score_clusters(y, c)
    assert s == pytest.approx({"accuracy": 6 / 7, "precision": 0.8, "recall": 1.0,
                               "entropy": 3 / 7 * H_2_3, "purity": 6 / 7, "n_clusters": 3.0})


def test_perfect_clustering_entropy_0_purity_1():
    y = [0, 0, 1, 1, 1, 0]
    c = [5, 5, 2, 2, 2, 9]  # pure clusters, one class split over two clusters
    s = score_clusters(y, c)
    assert s["entropy"] == 0.0 and math.copysign(1, s["entropy"]) == 1  # not -0.0
    assert s["purity"] == 1.0 and s["accuracy"] == 1.0
    assert s["precision"] == 1.0 and s["recall"] == 1.0


def test_single_cluster_is_chance():
    # one cluster of 2 ones + 4 zeros -> everything predicted 0
    # acc 4/6, precision 0.0 by convention (no predicted positives), recall 0
    # entropy = H(1/3, 2/3) = 0.918296 ; purity 4/6
    y, c = [1, 1, 0, 0, 0, 0], [0] * 6
    s = score_clusters(y, c)
    assert s == pytest.approx({"accuracy": 4 / 6, "precision": 0.0, "recall": 0.0,
                               "entropy": H_2_3, "purity": 4 / 6, "n_clusters": 1.0})


def test_balanced_single_cluster_has_one_bit_entropy():
    assert cluster_entropy([0, 1, 0, 1], [3, 3, 3, 3]) == pytest.approx(1.0)


def test_precision_recall_zero_division_conventions():
    assert precision([1, 0, 1], [0, 0, 0]) == 0.0
    assert recall([0, 0, 0], [1, 0, 1]) == 0.0


def test_score_predictions_uses_predictions_directly():
    # y = 1 1 0 0 0, ocsvm y_pred = 1 0 1 0 0
    # TP=1 FP=1 FN=1 TN=2: acc 3/5, precision 1/2, recall 1/2
    # groups: pred 1 = {1,0} H=1 (w 2/5) ; pred 0 = {1,0,0} H=0.918296 (w 3/5)
    # entropy = 0.4 + 0.6*0.918296 = 0.950978 ; purity = (1 + 2)/5 = 0.6
    y, p = [1, 1, 0, 0, 0], [1, 0, 1, 0, 0]
    s = score_predictions(y, p)
    assert tuple(s) == METRIC_KEYS
    assert s == pytest.approx({"accuracy": 0.6, "precision": 0.5, "recall": 0.5,
                               "entropy": 0.4 + 0.6 * H_2_3, "purity": 0.6, "n_clusters": 2.0})


def test_score_predictions_differs_from_majority_mapping():
    # a classifier that predicts the wrong class everywhere: accuracy 0 (no remapping),
    # yet its groups are pure, so entropy 0 and purity 1
    y, p = [1, 1, 0, 0], [0, 0, 1, 1]
    s = score_predictions(y, p)
    assert s["accuracy"] == 0.0 and s["entropy"] == 0.0 and s["purity"] == 1.0
    assert score_clusters(y, p)["accuracy"] == 1.0


def test_accepts_bool_and_float_labels():
    assert accuracy(np.array([True, False]), np.array([1.0, 0.0])) == 1.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: score_clusters([1, 0, 1], [0, 0]), "equal lengths, got 3 and 2"),
        (lambda: score_clusters([], []), "y_true is empty"),
        (lambda: score_clusters([0, 2, 1], [0, 0, 1]), r"only 0 and 1.*found \[2\]"),
        (lambda: score_clusters([0, 1], [0.5, 1.0]), "integer cluster ids"),
        (lambda: accuracy([[0, 1]], [[0, 1]]), "must be 1-d"),
        (lambda: score_predictions([0, 1], [0, -1]), r"y_pred must contain only 0 and 1.*found \[-1\]"),
        (lambda: purity(["a", "b"], [0, 1]), "numeric 0/1"),
    ],
)
def test_bad_input_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()
