"""Candidates: equal budgets for every kind, and each baseline's definition on a worked example."""

import numpy as np
import torch

from zoofusion.core.align import align
from zoofusion.core.candidates import (CONV_KEYS, all_candidates, baseline_candidates, budget_of, compute_features,
                                       generated_candidates, is_control, is_generated, kinds_of, model_pairs)
from zoofusion.core.cnn import HEAD_KEYS, ConvFeatures, SmallCNN, init_weights, preprocess, stack
from zoofusion.core.darkness import darkness


def _zoo(n: int, offset: int) -> dict:
    w = stack([init_weights(s + offset) for s in range(n)])  # conv tensors and heads, as the kernels stage harvests
    return {**w, "model_index": torch.arange(n) + 10}


def _generated(n: int) -> dict:
    w = stack([init_weights(500 + s) for s in range(n)])
    return {"ids": [f"{i}/{'AB'[i % 2]}" for i in range(n)], "source_domain": torch.tensor([i % 2 for i in range(n)]),
            "source_index": torch.arange(n), **{k: w[k] for k in CONV_KEYS}}


def test_every_kind_gets_the_generated_budget():
    kernels = {"black": _zoo(5, 0), "cat": _zoo(4, 100)}
    for budget in (0, 3):
        gen = generated_candidates(_generated(6), budget, seed=1)
        k = budget_of(6, budget)
        cands = baseline_candidates(kernels, k, seed=1, noise_sigmas=[0.0, 0.5], average_k=3)
        counts = {kind: sum(c.kind == kind for c in cands) for kind in dict.fromkeys(c.kind for c in cands)}
        assert len(gen) == k == (6 if budget == 0 else 3)
        # every kind as many as generated, or all it has (zoo-A 5, zoo-B 4); one per deterministic feature;
        # the literature's kinds exactly k
        assert counts == {"random": k, "zoo-A": min(k, 5), "zoo-B": min(k, 4), "average": k, "aligned": k,
                          "concat": k, "pixels": 1, "darkness": 1, "noise-0": k, "noise-0.5": k, "avg-k": k,
                          "gauss-fit": k, "head-A": min(k, 5), "head-B": min(k, 4), "experts": k}
        # every kind but the controls (control-*, untrained-*), which need the control stage and untrained.pt
        assert set(counts) == {k for k in kinds_of((), [0.0, 0.5]) if not is_control(k)}
    assert budget_of(190, 0) == 190 and budget_of(190, 48) == 48 and budget_of(10, 48) == 10


def test_every_variant_is_its_own_generated_kind_with_the_same_budget_and_sources():
    kernels = {"black": _zoo(5, 0), "cat": _zoo(4, 100)}
    cands = all_candidates({"study": _generated(10), "aligned": _generated(10)}, kernels, budget=3, seed=1,
                           noise_sigmas=[0.1], average_k=2)
    counts = {kind: sum(c.kind == kind for c in cands) for kind in dict.fromkeys(c.kind for c in cands)}
    assert list(counts)[:2] == ["generated-study", "generated-aligned"]
    assert counts["generated-study"] == counts["generated-aligned"] == counts["random"] == 3
    study = [c for c in cands if c.kind == "generated-study"]
    aligned = [c for c in cands if c.kind == "generated-aligned"]
    assert all(c.id.startswith("study/") for c in study) and all(c.id.startswith("aligned/") for c in aligned)
    # the same source models in both variants: a paired comparison
    assert [(c.source_domain, c.source_index) for c in study] == [(c.source_domain, c.source_index) for c in aligned]
    assert len({c.id for c in cands}) == len(cands)
    assert kinds_of(("study", "aligned"), [0.1])[:3] == ("generated-study", "generated-aligned", "random")
    assert kinds_of(("study",), [0.1, 0.5])[-3:] == ("noise-0.1", "noise-0.5", "untrained-study")
    assert {"avg-k", "gauss-fit", "head-A", "head-B", "experts"} <= set(kinds_of(("study",), [0.1]))
    assert is_generated("generated") and is_generated("generated-aligned") and not is_generated("aligned")


def test_generated_sample_and_pairs_are_seeded_and_distinct():
    a, b = generated_candidates(_generated(20), 5, seed=1), generated_candidates(_generated(20), 5, seed=1)
    assert [c.id for c in a] == [c.id for c in b] and len({c.id for c in a}) == 5
    assert {c.source_domain for c in generated_candidates(_generated(20), 8, seed=2)} == {"A", "B"}
    pairs = model_pairs(3, 4, 12, seed=0)
    assert sorted(pairs) == [(i, j) for i in range(3) for j in range(4)]  # all 12, each once


def test_merges_and_features_match_their_definitions():
    kernels = {"black": _zoo(2, 0), "cat": _zoo(2, 100)}
    cands = baseline_candidates(kernels, 1, seed=3, noise_sigmas=[], average_k=2)
    by = {c.kind: c for c in cands}
    ia, ib = (int(v) for v in by["average"].id.replace("avg-", "").replace("A", "").replace("B", "").split("-"))
    ja, jb = ia - 10, ib - 10
    wa = {k: kernels["black"][k][ja] for k in CONV_KEYS}
    wb = {k: kernels["cat"][k][jb] for k in CONV_KEYS}
    for k in CONV_KEYS:
        torch.testing.assert_close(by["average"].weights[k], (wa[k] + wb[k]) / 2)
        torch.testing.assert_close(by["aligned"].weights[k], (wa[k] + align(wa, wb)[k]) / 2)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    x = preprocess(images)
    feats = dict(zip([c.kind for c in cands], compute_features(cands, x, batch=2)))
    ref = {n: ConvFeatures(*(w[k] for k in CONV_KEYS))(x).detach().numpy() for n, w in (("a", wa), ("b", wb))}
    np.testing.assert_allclose(feats["concat"], np.concatenate([ref["a"], ref["b"]], axis=1), atol=1e-5)
    z = by["zoo-A"]
    np.testing.assert_allclose(feats["zoo-A"], ConvFeatures(*(z.weights[k] for k in CONV_KEYS))(x).detach().numpy(),
                               atol=1e-5)
    assert feats["pixels"].shape == (5, 3072)
    np.testing.assert_allclose(feats["darkness"][:, 0], darkness(images, 70))


def test_pack_unpack_keeps_every_candidate_and_refuses_a_partial_pack():
    import pytest

    from zoofusion.core.candidates import pack, unpack

    kernels = {"black": _zoo(3, 0), "cat": _zoo(2, 100)}
    cands = all_candidates({"study": _generated(4)}, kernels, budget=2, seed=1, noise_sigmas=[0.5], average_k=2)
    d = pack(cands)
    # one stacked row per CNN: concat holds two, pixels and darkness none
    n_rows = sum((c.weights is not None) + (c.weights2 is not None) for c in cands)
    assert d["conv1.weight"].shape == (n_rows, 6, 3, 5, 5) and d["conv2.bias"].dtype == torch.float32
    back = unpack(d)
    assert [(c.id, c.kind, c.source_domain, c.source_index, c.seed) for c in back] == \
           [(c.id, c.kind, c.source_domain, c.source_index, c.seed) for c in cands]
    for a, b in zip(cands, back):
        for attr, keys in (("weights", CONV_KEYS), ("weights2", CONV_KEYS), ("head", HEAD_KEYS), ("head2", HEAD_KEYS)):
            wa, wb = getattr(a, attr), getattr(b, attr)
            assert (wa is None) == (wb is None)
            assert wa is None or all(torch.equal(wa[k], wb[k]) for k in keys)
    assert {c.kind for c in back if c.head is not None} == {"head-A", "head-B", "experts"}
    assert {c.kind for c in back if c.head2 is not None} == {"experts"}
    # a seed for the candidates with a random draw of their own: random's init, noise's and gauss-fit's draws
    assert [c.seed >= 0 for c in back] == [c.kind in ("random", "noise-0.5", "gauss-fit") for c in back]
    with pytest.raises(ValueError, match=r"lack \['weights2'\]"):
        unpack({k: v for k, v in d.items() if k != "weights2"})


def test_product_of_experts_on_known_logits():
    """experts = log p(dark) + log p(cat), each from its own head's 2 logits; exp of it is the product p x p."""
    from zoofusion.core.candidates import log_p1

    f = np.eye(2, 400, dtype=np.float32)  # feature i picks column i of fc.weight
    head_a = {"fc.weight": torch.zeros(2, 400), "fc.bias": torch.tensor([0.0, 0.0])}
    head_a["fc.weight"][1, 0], head_a["fc.weight"][1, 1] = 2.0, -1.0  # logits (0, 2) and (0, -1)
    head_b = {"fc.weight": torch.zeros(2, 400), "fc.bias": torch.tensor([1.0, 0.0])}  # logits (1, 0) for both
    p_dark = np.array([1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0))])  # 0.8808, 0.2689
    p_cat = np.array([1 / (1 + np.exp(1.0))] * 2)  # 0.2689
    np.testing.assert_allclose(np.exp(log_p1(f, head_a)), p_dark, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_p1(f, head_a) + log_p1(f, head_b)), p_dark * p_cat, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_p1(f, head_a) + log_p1(f, head_b)), [0.23688, 0.07232], atol=1e-5)
    # a confident head does not saturate: float32 p would round both to 1.0, the log keeps them apart
    big = {"fc.weight": torch.zeros(2, 400), "fc.bias": torch.tensor([0.0, 0.0])}
    big["fc.weight"][1, 0], big["fc.weight"][1, 1] = 30.0, 40.0
    s = log_p1(f, big)
    assert np.float32(np.exp(s[0])) == np.float32(np.exp(s[1])) == 1.0 and s[0] < s[1] < 0


def test_head_features_are_the_zoo_models_softmax_and_experts_their_product():
    kernels = {"black": _zoo(2, 0), "cat": _zoo(2, 100)}
    cands = baseline_candidates(kernels, 1, seed=3, noise_sigmas=[], average_k=2)
    by = {c.kind: c for c in cands}
    images = np.random.default_rng(1).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    x = preprocess(images)
    feats = dict(zip([c.kind for c in cands], compute_features(cands, x, batch=4)))

    def softmax1(d: dict, index: int) -> np.ndarray:  # the zoo model's own forward pass: p(class 1)
        m = SmallCNN()
        m.load_state_dict({k: v[index] for k, v in d.items() if k != "model_index"})
        return torch.softmax(m(x), dim=1)[:, 1].detach().numpy()

    for letter, d in (("A", kernels["black"]), ("B", kernels["cat"])):
        c = by[f"head-{letter}"]
        assert feats[f"head-{letter}"].shape == (6, 1)
        np.testing.assert_allclose(np.exp(feats[f"head-{letter}"][:, 0]), softmax1(d, c.source_index - 10), rtol=1e-5)
    ia, ib = (int(v) - 10 for v in by["experts"].id.removeprefix("experts-").replace("A", "").replace("B", "").split("-"))
    np.testing.assert_allclose(np.exp(feats["experts"][:, 0]),
                               softmax1(kernels["black"], ia) * softmax1(kernels["cat"], ib), rtol=1e-5)
    # the pairs are `average`'s: same budget, same models
    assert by["experts"].id.removeprefix("experts-") == by["average"].id.removeprefix("avg-")


def test_head_kinds_need_the_harvested_head():
    import pytest

    bare = {d: {k: v for k, v in _zoo(2, o).items() if not k.startswith("fc")} for d, o in (("black", 0), ("cat", 100))}
    with pytest.raises(ValueError, match=r"lacks the head .*dvc repro kernels"):
        baseline_candidates(bare, 1, seed=3, noise_sigmas=[], average_k=2)


def test_control_and_untrained_kinds_get_the_same_budget_and_paired_sources():
    from zoofusion.core.candidates import baseline_kinds, untrained_kind

    kernels = {"black": _zoo(3, 0), "cat": _zoo(3, 100)}
    control = stack([init_weights(900 + s) for s in range(2)])
    cands = all_candidates({"study": _generated(6)}, kernels, budget=3, seed=1, noise_sigmas=[0.1], average_k=2,
                           untrained={"study": _generated(6)}, control=control)
    counts = {kind: sum(c.kind == kind for c in cands) for kind in dict.fromkeys(c.kind for c in cands)}
    # the control has 2 models: fewer only where a kind has fewer members
    assert counts["untrained-study"] == counts["generated-study"] == 3
    assert counts["control-positive"] == counts["control-head"] == 2
    gen = [(c.source_domain, c.source_index) for c in cands if c.kind == "generated-study"]
    assert gen == [(c.source_domain, c.source_index) for c in cands if c.kind == untrained_kind("study")]
    assert set(counts) == {"generated-study", *baseline_kinds(("study",), [0.1])}
    ch = next(c for c in cands if c.kind == "control-head")
    assert ch.head is not None and torch.equal(ch.head["fc.weight"], control["fc.weight"][0])
    assert next(c for c in cands if c.kind == "control-positive").head is None
