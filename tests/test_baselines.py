"""The literature's baselines (core/baselines.py) on worked examples, and their kinds in the candidate pool."""

import numpy as np
import pytest
import torch

from zoofusion.core.align import permute
from zoofusion.core.baselines import add_noise, average_aligned, fit_gaussian, generator, sample_gaussian
from zoofusion.core.candidates import CONV_KEYS, baseline_candidates, kinds_of, literature_candidates, noise_kind
from zoofusion.core.cnn import init_weights, stack


def _w(seed: int) -> dict[str, torch.Tensor]:
    return {k: v for k, v in init_weights(seed).items() if k in CONV_KEYS}


def _zoo(n: int, offset: int) -> dict:
    w = stack([init_weights(s + offset) for s in range(n)])  # conv tensors and heads, as the kernels stage harvests
    return {**w, "model_index": torch.arange(n) + 10}


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_noise_at_sigma_zero_is_the_model_and_scales_with_each_tensors_own_std():
    w = _w(0)
    assert _equal(add_noise(w, 0.0, generator(1)), w)
    # sigma 1 on a worked tensor: the noise is std(t) * z, z the generator's N(0, 1) draws in key order
    t = {"a": torch.tensor([1.0, 3.0, 5.0, 7.0]), "b": torch.tensor([2.0])}
    z = torch.randn(4, generator=generator(9), dtype=torch.float64)
    out = add_noise(t, 1.0, generator(9))
    torch.testing.assert_close(out["a"], (t["a"].double() + np.sqrt(5.0) * z).float())  # population std of 1,3,5,7
    assert torch.equal(out["b"], t["b"])  # one element: std 0, no noise
    # the same generator seed: one noise direction, sigma sizes it
    d1 = {k: add_noise(w, 0.1, generator(3))[k] - w[k] for k in w}
    d5 = {k: add_noise(w, 0.5, generator(3))[k] - w[k] for k in w}
    for k in w:
        torch.testing.assert_close(d5[k], 5 * d1[k], rtol=1e-3, atol=1e-6)
        # relative to the tensor's spread: the noise's std is about sigma * std(w[k]) (conv2.weight: 2400 draws)
    assert abs(float(d5["conv2.weight"].std() / w["conv2.weight"].std()) - 0.5) < 0.05
    with pytest.raises(ValueError, match="sigma"):
        add_noise(w, -0.1, generator(0))


def test_average_of_identical_models_and_of_a_permuted_copy_is_the_model():
    w = _w(4)
    assert _equal(average_aligned([w] * 5), w)
    p1, p2 = np.roll(np.arange(6), 2), np.random.default_rng(0).permutation(16)
    shuffled = {k: v for k, v in permute(w, p1, p2).items()}
    assert not torch.equal(shuffled["conv2.weight"], w["conv2.weight"])
    # unaligned, the mean of a model and its permuted copy is another network; aligned, it is the model
    assert not torch.allclose((w["conv1.weight"] + shuffled["conv1.weight"]) / 2, w["conv1.weight"])
    assert _equal(average_aligned([w, shuffled]), w)
    # two different models: the mean of the first and the second aligned to it
    from zoofusion.core.align import align

    v = _w(5)
    got = average_aligned([w, v])
    for k in CONV_KEYS:
        torch.testing.assert_close(got[k], (w[k] + align(w, v)[k]) / 2)


def test_fitted_gaussian_of_identical_models_has_std_zero_and_samples_the_model():
    w = _w(7)
    stacked = {k: torch.stack([w[k]] * 4) for k in CONV_KEYS}
    mean, std = fit_gaussian(stacked)
    assert all(torch.count_nonzero(std[k]) == 0 for k in CONV_KEYS)
    assert _equal(mean, w) and _equal(sample_gaussian(mean, std, generator(0)), w)
    # a worked example: per-parameter mean and population std, and samples mean + std * z
    x = {"t": torch.tensor([[0.0, 1.0], [2.0, 1.0]])}
    m, s = fit_gaussian(x)
    assert torch.equal(m["t"], torch.tensor([1.0, 1.0])) and torch.equal(s["t"], torch.tensor([1.0, 0.0]))
    z = torch.randn(2, generator=generator(2), dtype=torch.float64)
    torch.testing.assert_close(sample_gaussian(m, s, generator(2))["t"], torch.tensor([1.0 + float(z[0]), 1.0]))


def test_literature_kinds_get_exactly_the_budget_paired_sources_and_their_definitions():
    kernels = {"black": _zoo(3, 0), "cat": _zoo(2, 100)}
    for k in (1, 4, 7):  # 7 > 5 zoo models: sources repeat, each kind still exactly k
        cands = literature_candidates(kernels, k, seed=2, noise_sigmas=[0.0, 0.25], average_k=16)
        counts = {kind: sum(c.kind == kind for c in cands) for kind in dict.fromkeys(c.kind for c in cands)}
        assert counts == {"noise-0": k, "noise-0.25": k, "avg-k": k, "gauss-fit": k}
        assert len({c.id for c in cands}) == len(cands)
        by = {kind: [c for c in cands if c.kind == kind] for kind in counts}
        # candidate j of every kind starts from the same source model (paired kinds)
        src = [(c.source_domain, c.source_index) for c in by["noise-0"]]
        assert [(c.source_domain, c.source_index) for c in by["noise-0.25"]] == src
        assert [(c.source_domain, c.source_index) for c in by["avg-k"]] == src
        assert [c.source_domain for c in by["gauss-fit"]] == [d for d, _ in src]
        assert all(c.source_index == -1 for c in by["gauss-fit"])
        if k >= 4:
            assert {d for d, _ in src} == {"A", "B"}
        for c in by["noise-0"]:  # sigma 0: exactly the source zoo model
            d = kernels["black" if c.source_domain == "A" else "cat"]
            j = int(c.source_index) - 10
            assert _equal(c.weights, {key: d[key][j] for key in CONV_KEYS})
        for c in by["avg-k"]:  # average_k 16 clipped to the zoo: every model of the zoo, aligned to the source
            d = kernels["black" if c.source_domain == "A" else "cat"]
            j = int(c.source_index) - 10
            models = [{key: d[key][i] for key in CONV_KEYS} for i in range(len(d["model_index"]))]
            want = average_aligned([models[j], *(m for i, m in enumerate(models) if i != j)])
            for key in CONV_KEYS:
                torch.testing.assert_close(c.weights[key], want[key])


def test_gauss_fit_of_a_zoo_of_copies_samples_the_copy_and_noise_kinds_follow_the_grid():
    w = _w(3)
    p1, p2 = np.roll(np.arange(6), 1), np.roll(np.arange(16), 3)
    copies = [w, permute(w, p1, p2), w]  # permuted copies align back to w before the fit
    zoo = {**{k: torch.stack([c[k] for c in copies]) for k in CONV_KEYS}, "model_index": torch.arange(3)}
    cands = literature_candidates({"black": zoo, "cat": zoo}, 3, seed=0, noise_sigmas=[], average_k=2)
    assert {c.kind for c in cands} == {"avg-k", "gauss-fit"}
    for c in cands:
        src = w if c.kind == "gauss-fit" or c.source_index != 1 else copies[1]
        for key in CONV_KEYS:
            torch.testing.assert_close(c.weights[key], src[key], rtol=0, atol=1e-6)
    assert noise_kind(0.1) == "noise-0.1" and noise_kind(1.0) == "noise-1" and noise_kind(0) == "noise-0"
    assert kinds_of(("study",), [0.5]) == ("generated-study", "random", "zoo-A", "zoo-B", "average", "aligned",
                                           "concat", "pixels", "darkness", "avg-k", "gauss-fit", "head-A", "head-B",
                                           "experts", "control-positive", "control-head", "noise-0.5",
                                           "untrained-study")


def test_same_seed_same_candidates_other_seed_other_draws():
    kernels = {"black": _zoo(4, 0), "cat": _zoo(3, 100)}

    def pool(seed):
        return baseline_candidates(kernels, 3, seed, noise_sigmas=[0.1, 0.5], average_k=2)

    a, b, c = pool(1), pool(1), pool(2)
    assert [x.id for x in a] == [x.id for x in b] and [x.seed for x in a] == [x.seed for x in b]
    for x, y in zip(a, b):
        assert (x.weights is None) == (y.weights is None)
        if x.weights is not None:
            assert all(torch.equal(x.weights[k], y.weights[k]) for k in CONV_KEYS)
    gauss = lambda p: [x for x in p if x.kind == "gauss-fit"]  # noqa: E731
    assert not torch.equal(gauss(a)[0].weights["conv1.weight"], gauss(c)[0].weights["conv1.weight"])
