"""Translating conv1 and conv2 together: packing, and the consistency of a generated model's two layers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zoofusion.core.align import align, inverse, permute
from zoofusion.core.cnn import CONV_KEYS, ConvFeatures, init_weights, stack
from zoofusion.core.cyclegan import CycleGANConfig, train_cyclegan
from zoofusion.core.pair import fit_scales, pack, translate_pair, unpack

torch.set_num_threads(1)


def config(**changes: Any) -> CycleGANConfig:
    """Every field spelled out (a core config has no defaults): a tiny CPU run with the study's training details."""
    fields = dict(epochs=3, batch_size=4, lr=2e-4, betas=(0.5, 0.999), hidden=4, lambda_cycle=10.0,
                  lambda_identity=5.0, seed=0, device="cpu", checkpoint_every=10, max_loss=1e4, arch="volume",
                  lr_decay=False, disc_output="sigmoid", pool_size=0)
    return CycleGANConfig(**{**fields, **changes})


def _zoo(n: int, offset: int) -> dict[str, torch.Tensor]:
    return stack([init_weights(offset + s) for s in range(n)])


def test_pack_puts_conv1_channel_d_beside_conv2_input_d_and_unpacks_exactly() -> None:
    w = _zoo(3, 0)
    scales = fit_scales((w["conv1.weight"], w["conv2.weight"]))
    assert scales == (float(w["conv1.weight"].abs().max()), float(w["conv2.weight"].abs().max()))
    x = pack(w["conv1.weight"], w["conv2.weight"], scales)
    assert x.shape == (3, 19, 6, 5, 5) and float(x.abs().max()) == pytest.approx(1.0)
    d = 4
    torch.testing.assert_close(x[1, :16, d], w["conv2.weight"][1, :, d] / scales[1])
    torch.testing.assert_close(x[1, 16:, d], w["conv1.weight"][1, d] / scales[0])
    c1, c2 = unpack(x, scales)
    torch.testing.assert_close(c1, w["conv1.weight"])
    torch.testing.assert_close(c2, w["conv2.weight"])
    with pytest.raises(ValueError, match=r"conv2 must be \[N, 16, 6, 5, 5\]"):
        pack(w["conv1.weight"], w["conv1.weight"], scales)


@pytest.fixture(scope="module")
def trained():
    a, b = _zoo(6, 0), _zoo(5, 100)
    scales = fit_scales(*((z["conv1.weight"], z["conv2.weight"]) for z in (a, b)))
    cfg = config(epochs=3, batch_size=4, hidden=4, arch="set", lr_decay=True, disc_output="raw", pool_size=4,
                 lr=1e-2)
    res = train_cyclegan(pack(a["conv1.weight"], a["conv2.weight"], scales),
                         pack(b["conv1.weight"], b["conv2.weight"], scales), cfg)
    return a, res, scales


def test_permuting_a_source_model_permutes_its_translation(trained) -> None:
    """The consistency property: the generated conv2's input order follows the generated conv1's output order,
    whatever order the source had. Permuting a source model's conv1 channels (with its conv2 input slices) before
    translation gives the same permutation of the translation, so the generated model computes the same
    function either way."""
    a, res, scales = trained
    src = {k: a[k][0] for k in CONV_KEYS}
    p1, p2 = torch.tensor([2, 5, 0, 1, 4, 3]), torch.arange(16)
    moved = permute(src, p1, p2)

    def gen(w):
        c1, c2 = translate_pair(res.G_A2B, res.scaler, scales, w["conv1.weight"][None], w["conv2.weight"][None])
        return {"conv1.weight": c1[0], "conv1.bias": w["conv1.bias"], "conv2.weight": c2[0], "conv2.bias": w["conv2.bias"]}

    g, g_moved = gen(src), gen(moved)
    assert not torch.allclose(g["conv1.weight"], src["conv1.weight"])  # it did translate
    want = permute(g, p1, p2)
    for k in CONV_KEYS:
        torch.testing.assert_close(g_moved[k], want[k], rtol=1e-5, atol=1e-6)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        f = ConvFeatures(*(g[k] for k in CONV_KEYS))(x)
        f_moved = ConvFeatures(*(g_moved[k] for k in CONV_KEYS))(x)
    torch.testing.assert_close(f_moved, f, rtol=1e-4, atol=1e-5)  # p2 is the identity: features unchanged


def test_an_aligned_source_translates_the_same_whatever_its_stored_order(trained) -> None:
    """In the pipeline sources are aligned to one reference first: a model and any channel permutation of it
    align to identical tensors, so they give identical generated models, computing identical outputs."""
    a, res, scales = trained
    ref = {k: v[1] for k, v in a.items()}
    src = {k: v[0] for k, v in a.items()}
    moved = permute(src, [4, 1, 0, 5, 3, 2], torch.randperm(16, generator=torch.Generator().manual_seed(0)).numpy())
    al, al_moved = align(ref, src), align(ref, moved)
    for k in al:
        assert torch.equal(al[k], al_moved[k])
    outs = [translate_pair(res.G_A2B, res.scaler, scales, w["conv1.weight"][None], w["conv2.weight"][None])
            for w in (al, al_moved)]
    assert all(torch.equal(x, y) for x, y in zip(*outs))
    assert torch.equal(permute(permute(src, [4, 1, 0, 5, 3, 2], list(range(16))), inverse([4, 1, 0, 5, 3, 2]),
                               list(range(16)))["conv2.weight"], src["conv2.weight"])
