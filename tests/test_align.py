"""Channel alignment: permutations preserve the function, matching undoes a permutation, alignment never lowers the
similarity, and a hand-made example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoofusion.core import align, cnn

torch.set_num_threads(1)


def _perms(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.permutation(6), rng.permutation(16)


def _model(w: dict) -> cnn.SmallCNN:
    m = cnn.SmallCNN()
    m.load_state_dict(w)
    return m.eval()


@pytest.mark.parametrize("seed", range(8))
def test_match_recovers_a_random_permutation(seed: int) -> None:
    w = cnn.init_weights(seed)
    q1, q2 = _perms(100 + seed)
    other = align.permute(w, q1, q2)
    p1, p2 = align.match(w, other)
    np.testing.assert_array_equal(p1, align.inverse(q1))
    np.testing.assert_array_equal(p2, align.inverse(q2))
    back = align.align(w, other)
    for k in w:
        assert torch.equal(back[k], w[k]), k
    # conv-only dicts (generated models have no fc) recover it too
    conv = {k: w[k] for k in cnn.CONV_KEYS}
    p1c, p2c = align.match(conv, align.permute(conv, q1, q2))
    np.testing.assert_array_equal(p1c, align.inverse(q1))
    np.testing.assert_array_equal(p2c, align.inverse(q2))


@pytest.mark.parametrize("seed", range(6))
def test_a_model_and_its_permuted_copy_align_to_identical_tensors_against_any_reference(seed: int) -> None:
    """The canonical order: aligned to a third model (as the kernels stage aligns both zoos to one reference),
    a model and any permuted copy of it become the same tensors, computing the same outputs."""
    ref, w = cnn.init_weights(seed), cnn.init_weights(700 + seed)
    q1, q2 = _perms(seed)
    a, b = align.align(ref, w), align.align(ref, align.permute(w, q1, q2))
    for k in w:
        assert torch.equal(a[k], b[k]), k
    x = cnn.preprocess(np.random.default_rng(seed).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        assert torch.equal(_model(a).features(x), _model(b).features(x))
        torch.testing.assert_close(_model(a)(x), _model(w)(x), rtol=0, atol=1e-5)


def test_permuted_model_computes_the_same_function() -> None:
    w = cnn.init_weights(3)
    q1, q2 = _perms(7)
    x = cnn.preprocess(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    m, mp = _model(w), _model(align.permute(w, q1, q2))
    with torch.no_grad():
        torch.testing.assert_close(mp(x), m(x), rtol=0, atol=1e-5)  # logits: same up to float summation order
        f, fp = m.features(x), mp.features(x)
    # features: conv2 channel i of the permuted model is channel q2[i] of the original, 25 values each (C,H,W)
    torch.testing.assert_close(fp.reshape(-1, 16, 25), f.reshape(-1, 16, 25)[:, q2], rtol=0, atol=1e-5)
    assert not torch.allclose(fp, f)  # ... and they are really reordered


def test_permute_then_inverse_is_identity() -> None:
    w = cnn.init_weights(11)
    for seed in range(5):
        q1, q2 = _perms(seed)
        back = align.permute(align.permute(w, q1, q2), align.inverse(q1), align.inverse(q2))
        for k in w:
            assert torch.equal(back[k], w[k]), k
    # identity permutations change nothing, and the input dict is not modified
    before = {k: v.clone() for k, v in w.items()}
    same = align.permute(w, np.arange(6), np.arange(16))
    q1, q2 = _perms(0)
    align.permute(w, q1, q2)
    for k in w:
        assert torch.equal(same[k], w[k]) and torch.equal(w[k], before[k])


def test_alignment_never_lowers_similarity() -> None:
    for seed in range(10):
        ref, other = cnn.init_weights(seed), cnn.init_weights(1000 + seed)
        aligned = align.align(ref, other)
        assert align.similarity(ref, aligned) >= align.similarity(ref, other) - 1e-9
        # the aligned copy is the same function, just reordered
        x = cnn.preprocess(np.random.default_rng(seed).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
        with torch.no_grad():
            torch.testing.assert_close(_model(aligned)(x), _model(other)(x), rtol=0, atol=1e-5)


def test_conv1_step_is_the_best_of_all_720_permutations() -> None:
    # with p2 fixed at the result, the returned p1 maximises the objective over every permutation of 6 channels
    from itertools import permutations

    ref, other = cnn.init_weights(1), cnn.init_weights(2)
    p1, p2 = align.match(ref, other)
    best = max(align.similarity(ref, align.permute(other, np.array(q), p2)) for q in permutations(range(6)))
    assert align.similarity(ref, align.permute(other, p1, p2)) == pytest.approx(best, rel=1e-12)


def test_match_is_deterministic_and_works_on_numpy() -> None:
    ref, other = cnn.init_weights(5), cnn.init_weights(6)
    a = align.match(ref, other)
    b = align.match({k: v.numpy() for k, v in ref.items()}, {k: v.numpy() for k, v in other.items()})
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    aligned_np = align.align(ref, {k: v.numpy() for k, v in other.items()})
    assert isinstance(aligned_np["conv1.weight"], np.ndarray)


def test_align_many_matches_align_one_by_one() -> None:
    ref = cnn.init_weights(0)
    models = [cnn.init_weights(s) for s in (1, 2, 3)]
    got = align.align_many(ref, cnn.stack(models))
    for i, w in enumerate(models):
        one = align.align(ref, w)
        for k in ref:
            assert torch.equal(got[k][i], one[k]), (i, k)


def test_worked_example_by_hand() -> None:
    # conv1 channel c is the constant c+1 (bias c+1); conv2 weight [o, i] = 10*o + i; fc.weight[0] = column index
    w = {
        "conv1.weight": torch.arange(1.0, 7.0).reshape(6, 1, 1, 1).expand(6, 3, 5, 5).clone(),
        "conv1.bias": torch.arange(1.0, 7.0),
        "conv2.weight": (10 * torch.arange(16.0)[:, None] + torch.arange(6.0)[None]).reshape(16, 6, 1, 1)
        .expand(16, 6, 5, 5).clone(),
        "conv2.bias": torch.arange(16.0),
        "fc.weight": torch.stack([torch.arange(400.0), -torch.arange(400.0)]),
        "fc.bias": torch.tensor([0.5, -0.5]),
    }
    p1 = np.array([1, 0, 2, 3, 4, 5])  # swap conv1 channels 0 and 1
    p2 = np.array([2, 0, 1] + list(range(3, 16)))  # conv2: new 0 = old 2, new 1 = old 0, new 2 = old 1
    v = align.permute(w, p1, p2)
    assert v["conv1.bias"].tolist() == [2, 1, 3, 4, 5, 6]
    assert v["conv1.weight"][0, 0, 0, 0] == 2 and v["conv1.weight"][1, 2, 4, 4] == 1
    assert v["conv2.bias"][:4].tolist() == [2, 0, 1, 3]
    # new conv2[o, i] = old conv2[p2[o], p1[i]] = 10 p2[o] + p1[i]
    assert v["conv2.weight"][0, 0, 0, 0] == 10 * 2 + 1 and v["conv2.weight"][1, 1, 3, 3] == 10 * 0 + 0
    assert v["conv2.weight"][2, 5, 0, 0] == 10 * 1 + 5
    # fc blocks of 25: new block 0 = old block 2 = columns 50..74, new block 1 = old 0, new block 2 = old 1
    assert v["fc.weight"][0, :25].tolist() == list(range(50, 75))
    assert v["fc.weight"][0, 25:50].tolist() == list(range(25))
    assert v["fc.weight"][1, 50:75].tolist() == [-c for c in range(25, 50)]
    assert v["fc.weight"][0, 75:].tolist() == list(range(75, 400))
    assert torch.equal(v["fc.bias"], w["fc.bias"])
    # matching finds the inverse: swap back 0<->1 (self-inverse), and [1, 2, 0] undoes [2, 0, 1]
    q1, q2 = align.match(w, v)
    assert q1.tolist() == [1, 0, 2, 3, 4, 5]
    assert q2.tolist() == [1, 2, 0] + list(range(3, 16))


def test_bad_inputs_raise() -> None:
    w = cnn.init_weights(0)
    with pytest.raises(ValueError, match="permutation of range\\(6\\)"):
        align.permute(w, [0, 0, 1, 2, 3, 4], np.arange(16))
    with pytest.raises(ValueError, match="permutation of range\\(16\\)"):
        align.permute(w, np.arange(6), np.arange(15))
    with pytest.raises(ValueError, match="missing \\['conv2.bias'\\]"):
        align.match(w, {k: v for k, v in w.items() if k != "conv2.bias"})
    with pytest.raises(ValueError, match="iters"):
        align.match(w, w, iters=0)
