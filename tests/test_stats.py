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


# --- the primary endpoint: selection-aware bootstrap, Holm, MDD (worked examples) ------------------------------

def _one_positive(q: int) -> np.ndarray:
    """Scores of 1 positive (image 0) and 10 negatives (0..9): the positive lies above q negatives, AUROC q/10."""
    s = np.zeros(11)
    s[1:] = np.arange(10)
    s[0] = q - 0.5
    return s


Y11 = np.array([1] + [0] * 10)


def _hand_set(val_q=(8, 7, 5), test_q=(9, 6, 5)) -> stats.ScoreSet:
    """Generated kind g: A (val 0.8, test 0.9) and B (val 0.7, test 0.6); comparator kind b: C (0.5, 0.5)."""
    return stats.ScoreSet(Y11, Y11, np.stack([_one_positive(q) for q in val_q]),
                          np.stack([_one_positive(q) for q in test_q]), np.array([0, 0, 1]), np.array(["g", "g", "b"]))


def test_selection_bootstrap_worked_example_by_hand() -> None:
    # on the full sets: A wins val (0.8 > 0.7), so the estimate is 0.9 - 0.5 = 0.4
    # resampling candidates only: {A, B} drawn twice with replacement; both draws B (p = 1/4) -> 0.6 - 0.5 = 0.1,
    # otherwise A is among them and wins val -> 0.4
    r = stats.selection_bootstrap("roc_auc", _hand_set(), 4000, seed=0, resample=("candidates",))
    assert r.estimate == pytest.approx(0.4) and r.selected == ((0, 2),)
    values, counts = np.unique(np.round(r.boot, 9), return_counts=True)
    assert values.tolist() == [0.1, 0.4]
    assert counts[0] / 4000 == pytest.approx(0.25, abs=0.02)
    assert (r.low, r.high) == (pytest.approx(0.1), pytest.approx(0.4))
    assert r.sources == ("candidates",)
    assert r.not_included == {"pipeline_seeds": "one pipeline seed",
                              "umap_replicates": "one UMAP/clustering run per candidate stored",
                              "val_images": "not requested", "test_images": "not requested"}
    # nothing resampled that can vary: a fixed selection on the full sets gives the estimate every time
    fixed = stats.selection_bootstrap("roc_auc", _hand_set(), 50, seed=0, resample=())
    assert (fixed.boot == 0.4).all() and fixed.p == 0.0  # no spread at all: the difference is certain


def test_pipeline_seeds_level_by_hand() -> None:
    # seed 1: estimate 0.4 (as above); seed 2: A and B swap on val, B wins -> 0.6 - 0.5 = 0.1. Mean 0.25.
    # resampling seeds only: two draws of {1, 2} -> 0.4 (1/4), 0.25 (1/2), 0.1 (1/4)
    sets = [_hand_set(), _hand_set(val_q=(7, 8, 5))]
    r = stats.selection_bootstrap("roc_auc", sets, 4000, seed=1, resample=("pipeline_seeds",))
    assert r.estimate == pytest.approx(0.25) and r.selected == ((0, 2), (1, 2))
    values, counts = np.unique(np.round(r.boot, 9), return_counts=True)
    assert values.tolist() == [0.1, 0.25, 0.4]
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)


def test_umap_replicates_enter_only_when_stored() -> None:
    one = _hand_set()
    # a second stored run per candidate where A's val drops below B's: re-selection now sometimes picks B
    two = stats.ScoreSet(Y11, Y11, np.stack([one.val, np.stack([_one_positive(q) for q in (6, 7, 5)])]),
                         np.stack([one.test, one.test]), one.side, one.group)
    r = stats.selection_bootstrap("roc_auc", two, 4000, seed=2, resample=("umap_replicates",))
    assert r.sources == ("umap_replicates",) and r.estimate == pytest.approx(0.4)  # replicate 0 = the pipeline's run
    # A's run 2 (p 1/2) with B's run 1 or 2 (B has val 0.7 either way): B wins -> 0.1
    values, counts = np.unique(np.round(r.boot, 9), return_counts=True)
    assert values.tolist() == [0.1, 0.4] and counts[0] / 4000 == pytest.approx(0.5, abs=0.03)
    assert "umap_replicates" in stats.selection_bootstrap("roc_auc", one, 10, 0).not_included


def test_reselection_on_val_widens_the_interval_over_a_fixed_selection() -> None:
    # two generated candidates nearly tied on val, one much better on test. On these draws the full val set picks
    # the weak one (B); a fixed selection scores B on every resample, the re-selection on resampled val picks the
    # good one (A) on some, so its interval reaches far higher
    rng = np.random.default_rng(0)
    yv, yt = np.repeat([1, 0], [30, 60]), np.repeat([1, 0], [30, 60])
    val = np.stack([rng.normal(size=90) + 1.0 * yv, rng.normal(size=90) + 0.95 * yv, rng.normal(size=90) + 0.5 * yv])
    test = np.stack([rng.normal(size=90) + 2.0 * yt, rng.normal(size=90) + 0.3 * yt, rng.normal(size=90) + 0.5 * yt])
    s = stats.ScoreSet(yv, yt, val, test, np.array([0, 0, 1]), np.array(["g", "g", "b"]))
    fixed = stats.selection_bootstrap("roc_auc", s, 1000, seed=3, resample=("test_images",))
    redone = stats.selection_bootstrap("roc_auc", s, 1000, seed=3, resample=("val_images", "test_images"))
    assert fixed.estimate == redone.estimate
    assert redone.high - redone.low > 1.5 * (fixed.high - fixed.low)
    assert redone.selected == ((1, 2),) and redone.high > fixed.high + 0.2
    assert set(redone.breakdown) == {"val_images", "test_images"}
    # the breakdown's test-only run is the fixed-selection interval (the same stream of test resamples)
    assert redone.breakdown["test_images"]["low"] == fixed.low and redone.breakdown["test_images"]["high"] == fixed.high


def test_bootstrap_p_formula() -> None:
    # estimate 0.1, resamples with standard deviation 0.05: z = 2, p = erfc(2 / sqrt 2) = 0.0455
    boot = 0.1 + 0.05 * np.array([-1.0, 1.0]) / np.std([-1.0, 1.0], ddof=1)
    assert stats.bootstrap_p(0.1, boot) == pytest.approx(0.0455, abs=1e-4)
    assert stats.bootstrap_p(0.0, boot) == 1.0 and stats.bootstrap_p(0.2, [0.2, 0.2]) == 0.0
    # not limited by the resample count: far below 2 / (B + 1), so Holm over 51 hypotheses can still reject
    far = 0.3 + 0.05 * np.random.default_rng(0).standard_normal(100)
    assert stats.bootstrap_p(0.3, far) < 1e-6 < 2 / 101
    assert stats.holm([stats.bootstrap_p(0.3, far)] + [0.5] * 50)[0] < 0.05

def test_holm_worked_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    assert stats.holm([]).size == 0


def test_min_detectable_difference_formula() -> None:
    # (z_0.975 + z_0.8) * se = (1.959964 + 0.841621) * 0.01
    assert stats.min_detectable_difference(0.01, 0.05, 0.8) == pytest.approx(0.0280159, abs=1e-6)
    assert stats.min_detectable_difference(0.02, 0.05, 0.5) == pytest.approx(1.959964 * 0.02, abs=1e-6)
