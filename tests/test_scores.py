"""Prevalence-free metrics: each formula against scikit-learn on random and tied inputs, worked examples by hand,
degenerate inputs, and the black-cat score from a clustering."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from zoofusion.core import metrics, scores

SEEDS = range(60)


def _case(seed: int, tied: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y with both classes, a 0/1 prediction, a score (few distinct values when tied), cluster ids with noise."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y = rng.integers(0, 2, n)
    y[rng.choice(n, 2, replace=False)] = [0, 1]  # both classes
    pred = rng.integers(0, 2, n)
    score = rng.integers(0, 4, n).astype(float) if tied else rng.normal(size=n) + 0.7 * y
    clusters = rng.integers(-1, int(rng.integers(1, 6)), n)
    return y, pred, score, clusters


@pytest.mark.parametrize("tied", [False, True])
def test_every_metric_matches_sklearn(tied: bool) -> None:
    for seed in SEEDS:
        y, pred, score, clusters = _case(seed, tied)
        assert scores.balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
        assert scores.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
        assert scores.average_precision(y, score) == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)
        assert scores.adjusted_rand(y, clusters) == pytest.approx(skm.adjusted_rand_score(y, clusters), abs=1e-12)
        assert scores.nmi(y, clusters) == pytest.approx(skm.normalized_mutual_info_score(y, clusters), abs=1e-12)


def test_cluster_metrics_edge_partitions_match_sklearn() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    for c in ([0] * 6, list(range(6)), [0, 1, 0, 1, 1, 0], [5, 7, 5, 7, 7, 5], [-1] * 6):
        assert scores.adjusted_rand(y, c) == pytest.approx(skm.adjusted_rand_score(y, c), abs=1e-12)
        assert scores.nmi(y, c) == pytest.approx(skm.normalized_mutual_info_score(y, c), abs=1e-12)
    # n = 2, one point per class, two singletons: every pair agrees -> ARI 1 (denominator 0), NMI 1
    assert scores.adjusted_rand([0, 1], [3, 4]) == 1.0 == skm.adjusted_rand_score([0, 1], [3, 4])
    assert scores.nmi([0, 1], [3, 4]) == pytest.approx(1.0)


def test_worked_examples() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    pred = [1, 1, 0, 0, 0, 0, 0, 1]
    # TPR = 2/3, TNR = 4/5 -> (2/3 + 4/5)/2 = 11/15
    assert scores.balanced_accuracy(y, pred) == pytest.approx(11 / 15)
    # score: positives 3, 2, 1 ; negatives 2, 0, 0, 0, 0
    # pairs (pos > neg): 3 beats all 5; 2 ties one 2 (1/2) and beats 4; 1 beats 4 -> 5 + 4.5 + 4 = 13.5 of 15
    score = [3, 2, 1, 2, 0, 0, 0, 0]
    assert scores.roc_auc(y, score) == pytest.approx(13.5 / 15)
    # thresholds 3, 2, 1, 0: (R, P) = (1/3, 1/1), (2/3, 2/3), (3/3, 3/4), (1, 3/8)
    # AP = 1/3*1 + 1/3*2/3 + 1/3*3/4 + 0*3/8 = (1 + 2/3 + 3/4)/3 = 29/36
    assert scores.average_precision(y, score) == pytest.approx(29 / 36)
    # ARI, y = [1,1,0,0], clusters = [0,0,0,1]: n_ij: (y1,c0)=2, (y0,c0)=1, (y0,c1)=1
    # index = C(2,2) = 1; A = C(2,2)+C(2,2) = 2; B = C(3,2) = 3; E = 2*3/6 = 1; max = 2.5 -> (1-1)/(2.5-1) = 0
    assert scores.adjusted_rand([1, 1, 0, 0], [0, 0, 0, 1]) == pytest.approx(0.0)
    # NMI, same: I = 2/4 ln(4*2/(2*3)) + 1/4 ln(4*1/(2*3)) + 1/4 ln(4*1/(2*1)) ; H(Y) = ln 2 ; H(C) = H(3/4, 1/4)
    mi = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    hc = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert scores.nmi([1, 1, 0, 0], [0, 0, 0, 1]) == pytest.approx(mi / ((np.log(2) + hc) / 2))


def test_perfect_and_inverted() -> None:
    y = [0, 0, 1, 1, 1]
    assert scores.balanced_accuracy(y, y) == 1.0
    assert scores.roc_auc(y, [0.1, 0.2, 0.5, 0.7, 0.9]) == 1.0
    assert scores.roc_auc(y, [0.9, 0.8, 0.5, 0.3, 0.1]) == 0.0
    assert scores.average_precision(y, [0.1, 0.2, 0.5, 0.7, 0.9]) == 1.0
    assert scores.adjusted_rand(y, [4, 4, 9, 9, 9]) == pytest.approx(1.0)
    assert scores.nmi(y, [4, 4, 9, 9, 9]) == pytest.approx(1.0)


@pytest.mark.parametrize("prevalence", [0.02, 0.1, 0.3, 0.5, 0.8])
def test_calling_everything_other_is_chance_at_any_prevalence(prevalence: float) -> None:
    n = 1000
    y = (np.arange(n) < round(prevalence * n)).astype(int)
    all_other = np.zeros(n, dtype=int)
    assert scores.balanced_accuracy(y, all_other) == 0.5
    assert metrics.accuracy(y, all_other) == pytest.approx(1 - prevalence)  # plain accuracy moves with prevalence
    const = np.full(n, 0.3)
    assert scores.roc_auc(y, const) == 0.5  # constant score: every pair tied
    assert scores.average_precision(y, const) == pytest.approx(prevalence)  # AP's chance level IS the prevalence


def test_balanced_accuracy_mean_does_not_move_with_prevalence() -> None:
    # a classifier with TPR 0.7 and TNR 0.6 has BA 0.65 at any prevalence; accuracy = 0.7 p + 0.6 (1 - p)
    rng = np.random.default_rng(0)
    for p in (0.05, 0.5, 0.9):
        ba, acc = [], []
        for _ in range(200):
            y = (rng.random(400) < p).astype(int)
            y[:2] = [0, 1]
            pred = np.where(y == 1, rng.random(400) < 0.7, rng.random(400) >= 0.6).astype(int)
            ba.append(scores.balanced_accuracy(y, pred))
            acc.append(metrics.accuracy(y, pred))
        assert np.mean(ba) == pytest.approx(0.65, abs=0.01)
        assert np.mean(acc) == pytest.approx(0.7 * p + 0.6 * (1 - p), abs=0.01)


def test_degenerate_inputs_raise_clearly() -> None:
    for f, arg in ((scores.balanced_accuracy, [1, 0, 1]), (scores.roc_auc, [0.1, 0.2, 0.3]),
                   (scores.average_precision, [0.1, 0.2, 0.3]), (scores.adjusted_rand, [0, 1, 1]),
                   (scores.nmi, [0, 1, 1])):
        with pytest.raises(ValueError, match="only class 1"):
            f([1, 1, 1], arg)
        with pytest.raises(ValueError, match="only class 0"):
            f([0, 0, 0], arg)
    with pytest.raises(ValueError, match="only 0 and 1"):
        scores.balanced_accuracy([0, 1], [0, 2])
    with pytest.raises(ValueError, match="finite"):
        scores.roc_auc([0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match="one value per point"):
        scores.roc_auc([0, 1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="integer cluster ids"):
        scores.nmi([0, 1], [0.5, 1.5])


def test_positive_cluster_rule() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0, 1])
    c = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
    # shares: 0 -> 2/3, 1 -> 1/3, 2 -> 2/2; noise (2 of 2... here 1/2) never chosen
    assert scores.positive_cluster(y, c) == 2
    # tie on share 1.0 between cluster 3 (1 cat) and cluster 5 (2 cats): more black cats wins
    assert scores.positive_cluster([1, 1, 1, 0], [3, 5, 5, 4]) == 5
    # full tie: lower id
    assert scores.positive_cluster([1, 0, 1, 0], [7, 7, 2, 2]) == 2
    # noise-only val never hides the problem
    with pytest.raises(ValueError, match="only noise"):
        scores.positive_cluster([1, 0], [-1, -1])
    # majority-consistent: if any cluster has a black-cat majority, the chosen one does
    rng = np.random.default_rng(1)
    for _ in range(50):
        yy = rng.integers(0, 2, 30)
        yy[:2] = [0, 1]
        cc = rng.integers(0, 4, 30)
        mapping = metrics.majority_mapping(yy, cc)
        k = scores.positive_cluster(yy, cc)
        if any(v == 1 for v in mapping.values()):
            assert mapping[k] == 1


def test_cluster_score_is_negative_distance_to_val_chosen_centroid() -> None:
    emb = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 2.0]])
    ids, cents = scores.cluster_centroids(emb, [0, 0, 1, 1])
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_allclose(cents, [[0.0, 0.5], [10.0, 1.0]])
    test = np.array([[10.0, 1.0], [13.0, 5.0], [0.0, 0.0]])
    s = scores.cluster_score(test, cents, 1)
    np.testing.assert_allclose(s, [0.0, -5.0, -np.sqrt(101.0)])
    # end to end: clusters and the positive one from val, score on test, AUROC from it
    rng = np.random.default_rng(0)
    y_val, y_test = np.repeat([0, 1], 50), np.repeat([0, 1], 40)
    emb_val = rng.normal(size=(100, 3)) + 3 * y_val[:, None]
    emb_test = rng.normal(size=(80, 3)) + 3 * y_test[:, None]
    c_val = (emb_val.sum(axis=1) > 4.5).astype(int)
    ids, cents = scores.cluster_centroids(emb_val, c_val)
    k = int(np.flatnonzero(ids == scores.positive_cluster(y_val, c_val))[0])
    assert scores.roc_auc(y_test, scores.cluster_score(emb_test, cents, k)) > 0.95
    with pytest.raises(ValueError, match="row of centroids"):
        scores.cluster_score(emb_test, cents, 2)


def test_weighted_form_lookup() -> None:
    assert scores.weighted_form(scores.roc_auc) is scores.roc_auc_weighted
    assert scores.weighted_form("balanced_accuracy") is scores.balanced_accuracy_weighted
    assert scores.weighted_form(metrics.accuracy) is scores.accuracy_weighted
    assert scores.weighted_form(scores.nmi) is scores.nmi_weighted
    assert scores.weighted_form(metrics.purity) is None
    with pytest.raises(ValueError, match="allowed"):
        scores.weighted_form("f1")


@pytest.mark.parametrize("tied", [False, True])
def test_weighted_forms_equal_the_metric_on_explicit_resamples(tied: bool) -> None:
    rng = np.random.default_rng(3 + tied)
    n, k, b = 40, 3, 25
    y = np.repeat([0, 1], n // 2)
    S = rng.integers(0, 3, (k, n)).astype(float) if tied else rng.normal(size=(k, n))
    P = rng.integers(0, 2, (k, n))
    idx = np.concatenate([rng.integers(0, n // 2, (b, n // 2)), rng.integers(n // 2, n, (b, n // 2))], axis=1)
    W = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    pairs = ((scores.roc_auc_weighted, scores.roc_auc, S), (scores.average_precision_weighted,
             scores.average_precision, S), (scores.balanced_accuracy_weighted, scores.balanced_accuracy, P),
             (scores.accuracy_weighted, metrics.accuracy, P))
    C = rng.integers(-1, 4, (k, n))
    pairs += ((scores.adjusted_rand_weighted, scores.adjusted_rand, C), (scores.nmi_weighted, scores.nmi, C))
    for form, metric, X in pairs:
        got = form(y, X, W)
        want = np.array([[metric(y[r], x[r]) for r in idx] for x in X])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(form(y, X, np.ones((1, n)))[:, 0], [metric(y, x) for x in X], atol=1e-12)
    # a resample with one class only: NaN (stats turns it into an error), not a number
    W1 = np.zeros((1, n))
    W1[0, : n // 2] = 2
    for form in (scores.roc_auc_weighted, scores.average_precision_weighted, scores.balanced_accuracy_weighted,
                 scores.adjusted_rand_weighted, scores.nmi_weighted):
        assert np.isnan(form(y, P if form is scores.balanced_accuracy_weighted else S, W1)).all()


def test_weighted_cluster_metrics_on_degenerate_partitions() -> None:
    # one cluster, all singletons, perfect: the weighted forms agree with the scalar ones on explicit resamples
    y = np.array([0, 0, 0, 1, 1, 1])
    C = np.array([[0] * 6, list(range(6)), [0, 0, 0, 1, 1, 1], [-1, 2, -1, 2, -1, 2]])
    idx = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 1, 3, 3, 5], [2, 2, 2, 4, 4, 4]])
    W = np.stack([np.bincount(r, minlength=6) for r in idx]).astype(float)
    for form, metric in ((scores.adjusted_rand_weighted, scores.adjusted_rand), (scores.nmi_weighted, scores.nmi)):
        want = np.array([[metric(y[r], c[r]) for r in idx] for c in C])
        np.testing.assert_allclose(form(y, C, W), want, atol=1e-12)
