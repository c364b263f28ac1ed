"""Bootstrap intervals: known and null differences, reproducibility, stratification, pairing, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zoofusion.core import metrics, scores, stats

N = 300
Y = np.repeat([0, 1], N // 2)


def _pred(seed: int, acc: float, y: np.ndarray = Y) -> np.ndarray:
    """0/1 predictions that are right with probability acc, independently per image."""
    right = np.random.default_rng(seed).random(y.size) < acc
    return np.where(right, y, 1 - y)


def test_indices_shape_range_and_reproducibility() -> None:
    idx = stats.bootstrap_indices(N, 50, seed=7)
    assert idx.shape == (50, N) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < N
    assert stats.bootstrap_indices(N, 50, seed=7).tobytes() == idx.tobytes()
    assert not np.array_equal(stats.bootstrap_indices(N, 50, seed=8), idx)
    s = stats.bootstrap_indices(N, 50, seed=7, strata=Y)
    assert stats.bootstrap_indices(N, 50, seed=7, strata=Y).tobytes() == s.tobytes()


def test_stratified_resamples_keep_class_counts() -> None:
    y = np.array([0] * 290 + [1] * 10)  # rare positives: unstratified resamples would sometimes miss them
    idx = stats.bootstrap_indices(y.size, 500, seed=0, strata=y)
    counts = np.stack([np.bincount(y[r], minlength=2) for r in idx])
    assert (counts == [290, 10]).all()
    assert (y[idx] == y[None]).all()  # column j is always drawn from image j's stratum
    # and the draws inside a stratum really vary
    assert len({tuple(np.sort(r[y[r] == 1])) for r in idx}) > 400


def test_resample_counts() -> None:
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(stats.resample_counts(idx, 4), [[2, 0, 1, 0], [0, 1, 2, 0]])


def test_known_difference_excludes_zero() -> None:
    idx = stats.bootstrap_indices(N, 1000, seed=0, strata=Y)
    a, b = _pred(1, 0.9), _pred(2, 0.6)
    r = stats.paired_difference(scores.balanced_accuracy, Y, a, b, idx)
    assert r.estimate == pytest.approx(scores.balanced_accuracy(Y, a) - scores.balanced_accuracy(Y, b))
    assert 0.2 < r.low < r.estimate < r.high < 0.4
    assert r.excludes_zero and r.n_boot == 1000 and r.alpha == 0.05
    # the same for a continuous score through AUROC
    rng = np.random.default_rng(3)
    good, weak = rng.normal(size=N) + 2 * Y, rng.normal(size=N) + 0.3 * Y
    assert stats.paired_difference(scores.roc_auc, Y, good, weak, idx).excludes_zero


def test_relabelled_copy_gives_exactly_zero() -> None:
    idx = stats.bootstrap_indices(N, 500, seed=0, strata=Y)
    s = np.random.default_rng(0).normal(size=N) + Y
    for metric in (scores.roc_auc, scores.average_precision):  # rank metrics: a monotone copy is the same ranking
        r = stats.paired_difference(metric, Y, s, 3 * s + 1, idx)
        assert (r.estimate, r.low, r.high) == (0.0, 0.0, 0.0) and not r.excludes_zero
    A = np.stack([_pred(i, 0.7) for i in range(8)])
    r = stats.paired_mean_difference(scores.balanced_accuracy, Y, A, A[::-1], idx)  # same kind, reordered
    assert r.estimate == pytest.approx(0.0, abs=1e-15)
    assert r.low == pytest.approx(0.0, abs=1e-15) and r.high == pytest.approx(0.0, abs=1e-15)


def test_null_difference_interval_covers_zero() -> None:
    # a and b are two independent draws of the same classifier: the 95% interval should hold 0 about 95% of the time
    covered = []
    for seed in range(40):
        idx = stats.bootstrap_indices(N, 400, seed=seed, strata=Y)
        r = stats.paired_difference(scores.balanced_accuracy, Y, _pred(2 * seed, 0.75), _pred(2 * seed + 1, 0.75), idx)
        covered.append(not r.excludes_zero)
    assert np.mean(covered) >= 0.85


def test_interval_reproducible_for_a_seed_and_changes_with_it() -> None:
    a, b = _pred(1, 0.8), _pred(2, 0.7)

    def run(seed: int) -> stats.Interval:
        return stats.paired_difference(scores.balanced_accuracy, Y, a, b,
                                       stats.bootstrap_indices(N, 300, seed=seed, strata=Y))

    assert run(5) == run(5)
    assert run(5) != run(6)
    assert run(5).estimate == run(6).estimate  # the point estimate is the full-set one


def test_pairing_narrows_the_interval() -> None:
    # b = a with 3% of the predictions flipped: a and b err on almost the same images
    a = _pred(1, 0.75)
    flip = np.random.default_rng(9).random(N) < 0.03
    b = np.where(flip, 1 - a, a)
    i1 = stats.bootstrap_indices(N, 1000, seed=1, strata=Y)
    i2 = stats.bootstrap_indices(N, 1000, seed=2, strata=Y)
    paired = stats.paired_difference(scores.balanced_accuracy, Y, a, b, i1)
    _, boot_a = stats.resampled(scores.balanced_accuracy, Y, a, i1)
    _, boot_b = stats.resampled(scores.balanced_accuracy, Y, b, i2)  # independent resamples for b
    lo, hi = np.quantile(boot_a[0] - boot_b[0], [0.025, 0.975])
    assert (paired.high - paired.low) < 0.35 * (hi - lo)


def test_paired_mean_difference_of_kinds() -> None:
    A = np.stack([_pred(i, 0.85) for i in range(10)])
    B = np.stack([_pred(100 + i, 0.7) for i in range(4)])
    idx = stats.bootstrap_indices(N, 500, seed=0, strata=Y)
    r = stats.paired_mean_difference(scores.balanced_accuracy, Y, A, B, idx)
    want = np.mean([scores.balanced_accuracy(Y, x) for x in A]) - np.mean([scores.balanced_accuracy(Y, x) for x in B])
    assert r.estimate == pytest.approx(want)
    assert r.excludes_zero and r.low > 0.05
    # the same statistic by hand from the per-candidate resampled values
    _, ba = stats.resampled(scores.balanced_accuracy, Y, np.concatenate([A, B]), idx)
    lo, hi = np.quantile(ba[:10].mean(0) - ba[10:].mean(0), [0.025, 0.975])
    assert (r.low, r.high) == pytest.approx((lo, hi))


def test_fast_path_equals_generic_callable() -> None:
    # a lambda has no weighted form, so it takes the per-resample loop on (y[idx_b], s[idx_b])
    idx = stats.bootstrap_indices(N, 60, seed=4, strata=Y)
    a, b = _pred(1, 0.8), _pred(2, 0.7)
    s1, s2 = np.random.default_rng(0).normal(size=(2, N)) + Y
    for fast, x, z in ((scores.balanced_accuracy, a, b), (metrics.accuracy, a, b), (scores.roc_auc, s1, s2),
                       (scores.average_precision, s1, s2)):
        r_fast = stats.paired_difference(fast, Y, x, z, idx)
        r_slow = stats.paired_difference(lambda y, s, f=fast: f(y, s), Y, x, z, idx)
        assert r_fast.estimate == pytest.approx(r_slow.estimate, abs=1e-12)
        assert (r_fast.low, r_fast.high) == pytest.approx((r_slow.low, r_slow.high), abs=1e-12)
    assert stats.paired_difference("roc_auc", Y, s1, s2, idx) == stats.paired_difference(scores.roc_auc, Y, s1, s2, idx)


def test_metric_interval_and_alpha() -> None:
    idx = stats.bootstrap_indices(N, 800, seed=0, strata=Y)
    a = _pred(1, 0.8)
    r95 = stats.metric_interval(scores.balanced_accuracy, Y, a, idx)
    r80 = stats.metric_interval(scores.balanced_accuracy, Y, a, idx, alpha=0.2)
    assert r95.low < r80.low < r80.estimate < r80.high < r95.high
    assert r95.estimate == scores.balanced_accuracy(Y, a)


def test_errors_are_clear() -> None:
    y = np.array([0] * 295 + [1] * 5)
    idx = stats.bootstrap_indices(y.size, 200, seed=0)  # unstratified: some resamples miss the 5 positives
    with pytest.raises(ValueError, match="strata=y"):
        stats.paired_difference(scores.balanced_accuracy, y, _pred(0, 0.8, y), _pred(1, 0.8, y), idx)
    with pytest.raises(ValueError, match="0/1 predictions"):
        stats.paired_difference(scores.balanced_accuracy, Y, np.full(N, 0.5), _pred(1, 0.8), idx[:, :N])
    with pytest.raises(ValueError, match="different test set"):
        stats.paired_difference(scores.roc_auc, Y[:10], np.arange(10.0), np.arange(10.0), idx)
    with pytest.raises(ValueError, match="same length"):
        stats.paired_difference(scores.roc_auc, Y, np.zeros(N), np.zeros(N - 1), idx)
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_indices(10, 0, seed=0)
    with pytest.raises(ValueError, match="strata"):
        stats.bootstrap_indices(10, 5, seed=0, strata=[0, 1])


def test_scale_2000_resamples_200_candidates_300_images_in_seconds() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.integers(0, 2, (100, N)), rng.integers(0, 2, (100, N))
    idx = stats.bootstrap_indices(N, 2000, seed=0, strata=Y)
    t = time.perf_counter()
    r = stats.paired_mean_difference(scores.balanced_accuracy, Y, A, B, idx)
    elapsed = time.perf_counter() - t
    assert r.n_boot == 2000
    assert elapsed < 10.0, f"balanced accuracy 2000 x 200 x 300 took {elapsed:.1f} s"
