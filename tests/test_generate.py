from typing import Any

import pytest
import torch

from zoofusion.core.cnn import ConvFeatures, init_weights, stack
from zoofusion.core.cyclegan import CycleGANConfig, train_cyclegan, translate
from zoofusion.steps.generate import generate, load_models, model_id
from zoofusion.steps.cyclegan import load_generators, save_generators


def config(**changes: Any) -> CycleGANConfig:
    """Every field spelled out (a core config has no defaults): a tiny CPU run with the study's training details."""
    fields = dict(epochs=3, batch_size=4, lr=2e-4, betas=(0.5, 0.999), hidden=4, lambda_cycle=10.0,
                  lambda_identity=5.0, seed=0, device="cpu", checkpoint_every=10, max_loss=1e4, arch="volume",
                  lr_decay=False, disc_output="sigmoid", pool_size=0)
    return CycleGANConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    zoo = {d: stack([init_weights(s + 10 * i) for s in range(3)]) for i, d in enumerate(("black", "cat"))}
    kernels = {d: {**{k: w[k] for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")},
                   "model_index": torch.tensor([0, 2, 5])} for d, w in zoo.items()}
    gens = {}
    for layer in ("conv1", "conv2"):
        r = train_cyclegan(kernels["black"][f"{layer}.weight"], kernels["cat"][f"{layer}.weight"],
                           config(epochs=2, batch_size=2, hidden=4, seed=1))
        save_generators(tmp / f"{layer}.pt", r)
        gens[layer] = load_generators(tmp / f"{layer}.pt")
    return kernels, gens, tmp


def test_ids_shapes_and_directions(setup):
    kernels, gens, _ = setup
    g = generate(kernels, gens, max_per_domain=0, bias="source")
    assert g["ids"] == ["0/A", "2/A", "5/A", "0/B", "2/B", "5/B"]
    assert g["conv1.weight"].shape == (6, 6, 3, 5, 5) and g["conv2.weight"].shape == (6, 16, 6, 5, 5)
    # A-sourced models go through G_A2B, B-sourced through G_B2A.
    g_a2b, g_b2a, scaler, _ = gens["conv2"]
    torch.testing.assert_close(g["conv2.weight"][0], translate(g_a2b, scaler, kernels["black"]["conv2.weight"][0]))
    torch.testing.assert_close(g["conv2.weight"][3], translate(g_b2a, scaler, kernels["cat"]["conv2.weight"][0]))
    assert torch.equal(g["conv1.bias"][4], kernels["cat"]["conv1.bias"][1])


def test_bias_zero_and_limit(setup):
    kernels, gens, _ = setup
    g = generate(kernels, gens, max_per_domain=1, bias="zero")
    assert g["ids"] == ["0/A", "0/B"] and not g["conv1.bias"].any() and not g["conv2.bias"].any()


def test_saved_models_load_as_modules_and_reproduce(setup):
    kernels, gens, tmp = setup
    g = generate(kernels, gens, max_per_domain=0, bias="source")
    torch.save(g, tmp / "models.pt")
    models = load_models(tmp / "models.pt")
    x = torch.randn(4, 3, 32, 32)
    m = models["2/B"]
    assert isinstance(m, ConvFeatures) and m(x).shape == (4, 400)
    ref = ConvFeatures(*(g[k][4] for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")))
    torch.testing.assert_close(m(x), ref(x))


def test_model_id_follows_the_study():
    assert model_id(229, "black") == "229/A" and model_id(7, "cat") == "7/B"


def test_a_pair_generator_translates_conv1_and_conv2_together(setup, tmp_path):
    from zoofusion.core.pair import fit_scales, pack, translate_pair

    kernels, _, _ = setup
    scales = fit_scales(*((kernels[d]["conv1.weight"], kernels[d]["conv2.weight"]) for d in ("black", "cat")))
    r = train_cyclegan(*(pack(kernels[d]["conv1.weight"], kernels[d]["conv2.weight"], scales) for d in ("black", "cat")),
                       config(epochs=2, batch_size=2, hidden=4, seed=1, arch="set"))
    save_generators(tmp_path / "pair.pt", r, meta={"layer": "pair", "pair_scales": list(scales)})
    g_ab, g_ba, scaler, meta = load_generators(tmp_path / "pair.pt")
    g = generate(kernels, {"pair": (g_ab, g_ba, scaler, meta)}, max_per_domain=0, bias="source")
    assert g["ids"] == ["0/A", "2/A", "5/A", "0/B", "2/B", "5/B"]
    c1, c2 = translate_pair(g_ba, scaler, scales, kernels["cat"]["conv1.weight"], kernels["cat"]["conv2.weight"])
    torch.testing.assert_close(g["conv1.weight"][3:], c1)
    torch.testing.assert_close(g["conv2.weight"][3:], c2)


def test_run_writes_the_untrained_translation_beside_the_generated(setup, tmp_path):
    """generate@<variant>: models.pt by the trained generators, untrained.pt (same sources and ids) by the same
    units' generators at initialisation."""
    from conftest import make_params
    from zoofusion.core.cyclegan import initial_cyclegan
    from zoofusion.steps.generate import run

    kernels, gens, tmp = setup
    for d, k in kernels.items():
        (tmp_path / "k" / "raw").mkdir(parents=True, exist_ok=True)
        torch.save(k, tmp_path / "k" / "raw" / f"{d}.pt")
    for layer in ("conv1", "conv2"):
        folder = tmp_path / "cg" / "study" / layer
        folder.mkdir(parents=True)
        (folder / "generators.pt").write_bytes((tmp / f"{layer}.pt").read_bytes())
        a, b = kernels["black"][f"{layer}.weight"], kernels["cat"][f"{layer}.weight"]
        save_generators(folder / "generators_init.pt", initial_cyclegan(a, b, config(epochs=2, batch_size=2, hidden=4,
                                                                                    seed=1)))
    p = make_params()
    run("study", p.translation.study, p.generate, kernels=tmp_path / "k", gans=tmp_path / "cg", out=tmp_path / "gen")
    g = torch.load(tmp_path / "gen" / "study" / "models.pt", weights_only=True)
    u = torch.load(tmp_path / "gen" / "study" / "untrained.pt", weights_only=True)
    assert u["ids"] == g["ids"] and torch.equal(u["source_index"], g["source_index"])
    assert torch.equal(g["conv1.weight"], generate(kernels, gens, 0, "source")["conv1.weight"])  # unchanged
    assert not torch.allclose(u["conv1.weight"], g["conv1.weight"], atol=1e-4)
    assert torch.equal(u["conv1.bias"], g["conv1.bias"])  # biases: the source's, as in models.pt
