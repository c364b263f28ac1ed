"""The verdict follows the intervals: a real difference is called, a null one is not, and test labels never
choose anything."""

import numpy as np
import pytest

from conftest import method_params
from zoofusion.core.protocol import evaluate_features
from zoofusion.core.selection import best_on_val
from zoofusion.core.verdict import answer, compare, sentence


def _kinds(n_test: int, shift_generated: float, seed: int = 0):
    r = np.random.default_rng(seed)
    y = np.r_[np.ones(n_test // 3, int), np.zeros(n_test - n_test // 3, int)]
    kinds, ids, arrays = [], [], []
    for kind, shift in (("generated", shift_generated), ("random", 0.0)):
        for j in range(6):
            kinds.append(kind)
            ids.append(f"{kind}-{j}")
            arrays.append(y * (1.0 + shift) + r.normal(size=n_test))
    return y, kinds, ids, np.stack(arrays)


def test_a_real_difference_is_called_and_a_null_one_is_not():
    y, kinds, ids, arrays = _kinds(300, shift_generated=1.5)
    val = np.arange(len(ids), dtype=float)  # any val ranking: selection is not the point here
    (c,) = compare("ocsvm", y, kinds, ids, val, arrays, n_boot=400, seed=1, select_seed=0)
    assert c.kind == "random" and c.metric == "auroc"
    assert c.best_low > 0 and c.mean_low > 0 and c.outcome == "generated"
    assert "generated kernels beat random" in sentence([c], {"random": "random"})
    y, kinds, ids, arrays = _kinds(300, shift_generated=0.0)
    (c,) = compare("ocsvm", y, kinds, ids, val, arrays, n_boot=400, seed=1, select_seed=0)
    assert c.mean_low < 0 < c.mean_high and c.mean_outcome == "none"
    assert c.outcome in ("none", "generated", "baseline")
    assert "no difference" in sentence([c], {}) or c.outcome != "none"


def test_each_variant_is_compared_with_every_baseline_and_with_the_variants_before_it():
    r = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(80, int)]
    kinds, ids, arrays = [], [], []
    for kind, shift in (("generated-study", 0.0), ("generated-aligned", 2.0), ("random", 0.0), ("aligned", 0.0)):
        for j in range(4):
            kinds.append(kind)
            ids.append(f"{kind}-{j}")
            arrays.append(y * (1.0 + shift) + r.normal(size=len(y)))
    cs = compare("kmeans", y, kinds, ids, np.zeros(len(ids)), np.stack(arrays), n_boot=300, seed=2, select_seed=0)
    assert [(c.generated_kind, c.kind) for c in cs] == [
        ("generated-study", "random"), ("generated-study", "aligned"),
        ("generated-aligned", "random"), ("generated-aligned", "aligned"), ("generated-aligned", "generated-study")]
    assert all(c.outcome == "generated" for c in cs if c.generated_kind == "generated-aligned")
    names = {"generated-aligned": "aligned kernels", "generated-study": "study kernels", "random": "random kernels",
             "aligned": "the aligned merge"}
    text = sentence(cs, names)
    assert "aligned kernels beat random kernels, the aligned merge, study kernels" in text
    assert answer(cs, "generated-aligned", "random", names) == \
        "Yes: aligned kernels beat random kernels with every method (KMeans)."
    no = answer(cs, "generated-study", "random", names)
    assert no.startswith("No: study kernels beat random kernels with no method; ") or \
        no.startswith("Yes"), no


def test_best_on_val_is_chosen_on_val_not_test():
    y, kinds, ids, arrays = _kinds(120, shift_generated=0.0)
    val = np.zeros(len(ids))
    val[ids.index("generated-3")] = 1.0  # the best on val, whatever its test score
    (c,) = compare("kmeans", y, kinds, ids, val, arrays, n_boot=200, seed=0, select_seed=0)
    rand = [i for i in ids if i.startswith("random")]
    # ties: the seeded random order of core.selection, not the lowest id
    assert c.generated_id == "generated-3" and c.baseline_id == rand[best_on_val(rand, np.zeros(len(rand)), 0)]


def test_shuffling_test_labels_leaves_every_val_metric_unchanged():
    """Nothing on val (so no selection) depends on test labels: UMAP is unsupervised, the KMeans black-cat
    centroid and the SVM are chosen and fitted on val."""
    r = np.random.default_rng(0)
    yv = np.r_[np.ones(20, int), np.zeros(40, int)]
    yt = np.r_[np.ones(20, int), np.zeros(40, int)]
    xv = r.normal(size=(60, 12)) + yv[:, None]
    xt = r.normal(size=(60, 12)) + yt[:, None]
    kw = dict(standardize=True, n_neighbors=10, min_dist=0.1, n_components=2, metric="euclidean", n_epochs=None,
              p=method_params(), seed=3)
    a = evaluate_features(xv, yv, xt, yt, **kw)
    b = evaluate_features(xv, yv, xt, r.permutation(yt), **kw)
    val_a = {k: v for k, v in a.metrics.items() if k.startswith("val/")}
    val_b = {k: v for k, v in b.metrics.items() if k.startswith("val/")}
    assert val_a == val_b and len(val_a) > 20
    for m in ("kmeans", "ocsvm"):
        np.testing.assert_array_equal(a.scores[("test", m)], b.scores[("test", m)])  # scores never see labels
    assert {"val/kmeans/auroc", "test/ocsvm/auroc", "test/dbscan/ari", "test/kmeans/balanced_accuracy"} <= set(a.metrics)


def test_holm_adjusts_the_declared_family_and_labels_the_outcome():
    from zoofusion.core.verdict import Comparison, holm_adjust

    def comp(kind, diff, p, mean_p):
        return Comparison("kmeans", "auroc", kind, "g", "b", diff, diff - 0.1, diff + 0.1, diff, diff - 0.1,
                          diff + 0.1, "generated-study", p, mean_p)

    cs = [comp("random", 0.2, 0.01, 0.5), comp("pixels", -0.2, 0.04, 0.5), comp("zoo-A", 0.1, 0.03, 0.5),
          comp("zoo-B", 0.3, 0.005, 0.5)]
    adj = holm_adjust(cs, "best_on_val", 0.05)
    # the worked example of test_stats: [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02]
    np.testing.assert_allclose([c.p_holm for c in adj], [0.03, 0.06, 0.06, 0.02])
    assert [c.adjusted_outcome for c in adj] == ["generated", "none", "none", "generated"]
    assert all(c.mean_p_holm is None and c.mean_adjusted_outcome is None for c in adj)
    assert cs[1].outcome == "baseline" and adj[1].adjusted_outcome == "none"  # significant alone, not in the family
    # 8 hypotheses: sorted 0.005, 0.01, 0.03, 0.04, 0.5 x 4 times 8, 7, 6, 5, 4.. = 0.04, 0.07, 0.18, 0.20, 2 (cap 1)
    both = holm_adjust(cs, "best_on_val_and_means", 0.05)
    np.testing.assert_allclose([c.p_holm for c in both], [0.07, 0.20, 0.18, 0.04])
    assert [c.mean_p_holm for c in both] == [1.0] * 4


def test_primary_compares_the_best_on_val_over_all_baselines_and_stays_fair_when_one_is_added():
    from zoofusion.core.verdict import primary

    r = np.random.default_rng(4)
    y = np.r_[np.ones(40, int), np.zeros(80, int)]
    yv = y.copy()
    strength = {"generated-study": [2.5, 0.6, 0.2], "random": [1.5, 0.3], "pixels": [0.1]}
    kinds, ids, val, test = [], [], [], []
    for kind, ss in strength.items():
        for j, s in enumerate(ss):
            kinds.append(kind)
            ids.append(f"{kind}-{j}")
            val.append(s * yv + r.normal(size=y.size))
            test.append(s * y + r.normal(size=y.size))
    args = dict(n_boot=300, seed=0, alpha=0.05, power=0.8)
    out = primary("ocsvm", "auroc", kinds, ids, yv, y, np.stack(val), np.stack(test), ("generated-study",),
                  ("random", "pixels"), **args)
    assert out["generated"]["id"] == "generated-study-0" and out["comparator"]["id"] == "random-0"
    assert out["difference"] == pytest.approx(out["generated"]["test_value"] - out["comparator"]["test_value"])
    assert out["sources"] == ["candidates", "val_images", "test_images"] and out["low"] <= out["high"]
    assert out["mdd"] == pytest.approx(2.8016 * out["se"], rel=1e-3)
    # a weaker baseline kind added later joins the comparator pool without changing the answer
    more = primary("ocsvm", "auroc", kinds + ["darkness"], ids + ["darkness"], yv, y,
                   np.stack(val + [r.normal(size=y.size)]), np.stack(test + [r.normal(size=y.size)]),
                   ("generated-study",), ("random", "pixels", "darkness"), **args)
    assert (more["comparator"]["id"], more["difference"]) == (out["comparator"]["id"], out["difference"])
    with pytest.raises(ValueError, match="judged by auroc"):
        primary("kmeans", "ari", kinds, ids, yv, y, np.stack(val), np.stack(test), ("generated-study",),
                ("random",), **args)
