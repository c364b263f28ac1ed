"""Tests for zoofusion.cnn: shapes, flatten order, init determinism, batched == single-model training."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoofusion.core import cnn, train

torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _labels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n)


def _model(seed: int) -> cnn.SmallCNN:
    m = cnn.SmallCNN()
    m.load_state_dict(cnn.init_weights(seed))
    return m


def _reference_features(m: cnn.SmallCNN, x: torch.Tensor) -> torch.Tensor:
    """The architecture as specified (conv, ReLU, pool, ...; torch.flatten), written independently."""
    y = F.max_pool2d(F.relu(F.conv2d(x, m.conv1.weight, m.conv1.bias)), 2)
    y = F.max_pool2d(F.relu(F.conv2d(y, m.conv2.weight, m.conv2.bias)), 2)
    return torch.flatten(y, 1)


# -- preprocessing ------------------------------------------------------------------------------------------------


def test_preprocess_scales_and_moves_channels_first() -> None:
    img = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    img[0, 2, 5, 1] = 255
    img[0, 0, 0, 2] = 51
    x = cnn.preprocess(img)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert x[0, 1, 2, 5].item() == 1.0
    assert x[0, 0, 0, 0].item() == -1.0
    assert x[0, 2, 0, 0].item() == pytest.approx((51 / 255 - 0.5) / 0.5, abs=1e-7)


def test_preprocess_rejects_chw_float() -> None:
    with pytest.raises(ValueError, match=r"uint8 images of shape \[N,32,32,3\]"):
        cnn.preprocess(np.zeros((2, 3, 32, 32), dtype=np.float32))


# -- shapes and equalities of the forward paths -------------------------------------------------------------------


def test_output_shapes() -> None:
    x = cnn.preprocess(_images(4))
    m = _model(0)
    assert m(x).shape == (4, 2)
    assert m.features(x).shape == (4, 400)
    b = cnn.BatchedCNN(cnn.stack([cnn.init_weights(s) for s in range(3)]))
    xg = x.unsqueeze(0).expand(3, -1, -1, -1, -1)
    assert b(xg).shape == (3, 4, 2)
    assert b.features(xg).shape == (3, 4, 400)
    assert b.forward_shared(x).shape == (3, 4, 2)
    conv = cnn.ConvFeatures(m.conv1.weight, m.conv1.bias, m.conv2.weight, m.conv2.bias)
    assert conv(x).shape == (4, 400)
    assert set(b.state_dict()) == set(m.state_dict())


def test_features_match_spec_order_and_convfeatures() -> None:
    x = cnn.preprocess(_images(5))
    m = _model(3)
    ref = _reference_features(m, x)
    torch.testing.assert_close(m.features(x), ref, rtol=0, atol=1e-6)
    conv = cnn.ConvFeatures(m.conv1.weight, m.conv1.bias, m.conv2.weight, m.conv2.bias)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-6)


def test_batched_forward_equals_each_model() -> None:
    seeds = [0, 1, 2]
    models = [_model(s) for s in seeds]
    b = cnn.BatchedCNN(cnn.stack([m.state_dict() for m in models]))
    xg = torch.stack([cnn.preprocess(_images(6, seed=10 + k)) for k in range(3)])  # different images per model
    feats, logits = b.features(xg), b(xg)
    shared = cnn.preprocess(_images(6, seed=99))
    shared_logits = b.forward_shared(shared)
    for k, m in enumerate(models):
        torch.testing.assert_close(feats[k], m.features(xg[k]), rtol=0, atol=1e-5)
        torch.testing.assert_close(logits[k], m(xg[k]), rtol=0, atol=1e-5)
        torch.testing.assert_close(shared_logits[k], m(shared), rtol=0, atol=1e-5)


def test_batched_features_equals_per_model_convfeatures() -> None:
    stacked = cnn.stack([cnn.init_weights(s) for s in range(5)])
    x = cnn.preprocess(_images(7))
    out = cnn.batched_features(stacked, x, group_size=2, batch_size=3)  # uneven groups and batches
    assert out.shape == (5, 7, 400)
    for k in range(5):
        conv = cnn.ConvFeatures(*(stacked[key][k] for key in cnn.CONV_KEYS))
        torch.testing.assert_close(out[k], conv(x), rtol=0, atol=1e-5)


def test_batched_features_rejects_uint8_images() -> None:
    stacked = cnn.stack([cnn.init_weights(0)])
    with pytest.raises(ValueError, match="run preprocess"):
        cnn.batched_features(stacked, torch.as_tensor(_images(2)))


# -- init, stack ---------------------------------------------------------------------------------------------------


def test_init_weights_deterministic_independent_of_global_rng() -> None:
    torch.manual_seed(123)
    a = cnn.init_weights(5)
    after = torch.rand(1)
    torch.manual_seed(999)
    b = cnn.init_weights(5)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after), "init_weights must not consume the global RNG"
    c = cnn.init_weights(6)
    assert set(a) == set(cnn.PARAM_SHAPES)
    for k in a:
        assert a[k].shape == cnn.PARAM_SHAPES[k]
        assert torch.equal(a[k], b[k])
        assert not torch.equal(a[k], c[k])


def test_init_weights_is_pytorch_default_init() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        ref = cnn.SmallCNN().state_dict()
    got = cnn.init_weights(4)
    for k in ref:
        assert torch.equal(got[k], ref[k])
    bound = 1 / np.sqrt(3 * 5 * 5)  # kaiming_uniform(a=sqrt 5) bound for conv1
    assert got["conv1.weight"].abs().max().item() <= bound


def test_stack_unstack_roundtrip_and_key_mismatch() -> None:
    ws = [cnn.init_weights(s) for s in range(3)]
    st = cnn.stack(ws)
    assert st["conv2.weight"].shape == (3, 16, 6, 5, 5)
    back = cnn.unstack(st)
    assert all(torch.equal(back[i][k], ws[i][k]) for i in range(3) for k in ws[0])
    with pytest.raises(ValueError, match="model 1 has keys"):
        cnn.stack([ws[0], {"conv1.weight": ws[1]["conv1.weight"]}])


# -- training equivalence ------------------------------------------------------------------------------------------


def test_one_step_gradients_equal_single_models() -> None:
    seeds = [0, 1, 2]
    models = [_model(s) for s in seeds]
    b = cnn.BatchedCNN(cnn.stack([m.state_dict() for m in models]))
    xg = torch.stack([cnn.preprocess(_images(8, seed=20 + k)) for k in range(3)])
    yg = torch.stack([torch.as_tensor(_labels(8, seed=30 + k)) for k in range(3)])
    logits = b(xg)
    loss = F.cross_entropy(logits.reshape(-1, 2), yg.reshape(-1), reduction="none").view(3, 8).mean(1).sum()
    loss.backward()
    grads = {k: p.grad for k, p in b.named_parameters()}
    for i, m in enumerate(models):
        F.cross_entropy(m(xg[i]), yg[i]).backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(grads[k][i], p.grad, rtol=1e-5, atol=1e-7)


def _tiny_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _images(96), _labels(96), np.arange(0, 64), np.arange(64, 96)


def test_train_batched_equals_train_single() -> None:
    imgs, labs, tr, va = _tiny_data()
    seeds = [3, 7, 11]
    calls: list[tuple[int, int]] = []
    kw = dict(epochs=2, batch_size=24, lr=1e-3)  # 64/24: last batch of 16 is partial
    stacked, hist = train.train_batched(
        imgs, labs, tr, va, seeds, group_size=2, on_group_done=lambda a, n: calls.append((a, n)), **kw
    )
    assert calls == [(0, 2), (2, 1)]
    assert all(v.shape == (3, 2) for v in hist.values())
    for k, s in enumerate(seeds):
        w, h = train.train_single(imgs, labs, tr, va, s, **kw)
        init = cnn.init_weights(s)
        assert (w["conv1.weight"] - init["conv1.weight"]).abs().max() > 1e-3, "training must move the weights"
        for key in w:
            torch.testing.assert_close(stacked[key][k], w[key], rtol=0, atol=1e-5)
        for key in h:
            np.testing.assert_allclose(hist[key][k], h[key], rtol=0, atol=1e-5)


def test_every_own_order_path_equals_train_single() -> None:
    """train_models: the path changes speed only; own order = each model's own seed's order."""
    imgs, labs, tr, va = _tiny_data()
    seeds = [3, 7, 11]
    kw = dict(epochs=2, batch_size=24, lr=1e-3)
    ref = [train.train_single(imgs, labs, tr, va, s, **kw) for s in seeds]
    for path in ("single", "batched_g1", "batched_g2", "batched_g3", "batched_g8"):
        stacked, hist = train.train_models(imgs, labs, tr, va, seeds, path=path, **kw)
        assert all(v.shape == (3, 2) for v in hist.values())
        for k, (w, h) in enumerate(ref):
            for key in w:
                torch.testing.assert_close(stacked[key][k], w[key], rtol=0, atol=1e-5, msg=f"{path} {key}")
            for key in h:
                np.testing.assert_allclose(hist[key][k], h[key], rtol=0, atol=1e-5, err_msg=f"{path} {key}")


def test_every_shared_order_path_equals_train_single_on_the_shared_order() -> None:
    """shared order: every model walks the order of the call's first seed, whatever the group size; init own."""
    imgs, labs, tr, va = _tiny_data()
    seeds = [3, 7, 11]
    kw = dict(epochs=2, batch_size=24, lr=1e-2)
    ref = [train.train_single(imgs, labs, tr, va, s, data_seed=seeds[0], **kw) for s in seeds]
    own0, _ = train.train_single(imgs, labs, tr, va, seeds[0], **kw)
    own1, _ = train.train_single(imgs, labs, tr, va, seeds[1], **kw)
    assert all(torch.equal(ref[0][0][key], own0[key]) for key in own0), "the first model keeps its own order"
    assert (ref[1][0]["conv1.weight"] - own1["conv1.weight"]).abs().max() > 1e-3, "the others take another order"
    for path in ("single", "shared_g1", "shared_g2", "shared_g3"):
        stacked, hist = train.train_models(imgs, labs, tr, va, seeds, path=path, data_order="shared", **kw)
        for k, (w, h) in enumerate(ref):
            for key in w:
                # dense conv1 / grouped conv2 round differently from the one-model convs; Adam at lr 1e-2 over
                # 6 steps keeps that at ~3e-6 here
                torch.testing.assert_close(stacked[key][k], w[key], rtol=0, atol=5e-5, msg=f"{path} {key}")
            for key in h:
                np.testing.assert_allclose(hist[key][k], h[key], rtol=0, atol=5e-5, err_msg=f"{path} {key}")


@pytest.mark.parametrize(
    ("path", "order", "message"),
    [
        ("batched_g8", "shared", "cannot train data_order 'shared'; use single or shared_g<G>"),
        ("shared_g8", "own", "cannot train data_order 'own'; use single or batched_g<G>"),
        ("single", "mine", "data_order must be one of"),
        ("batched8", None, "path: must be 'single', 'batched_g<G>' or 'shared_g<G>'"),
        ("shared_g0", None, "path: must be"),
    ],
)
def test_train_models_refuses_bad_path_or_order(path: str, order: str | None, message: str) -> None:
    imgs, labs, tr, va = _tiny_data()
    with pytest.raises(ValueError, match=re.escape(message)):
        train.train_models(imgs, labs, tr, va, [0, 1], path=path, data_order=order, epochs=1, batch_size=32,
                           lr=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_on_cuda_matches_cpu_and_batched_equals_single() -> None:
    """device: cuda runs the same code; batched == single there too, and both track the CPU result."""
    imgs, labs, tr, va = _tiny_data()
    seeds = [3, 7]
    kw = dict(epochs=2, batch_size=24, lr=1e-3)
    gpu, ghist = train.train_batched(imgs, labs, tr, va, seeds, group_size=2, device="cuda", **kw)
    cpu, _ = train.train_batched(imgs, labs, tr, va, seeds, group_size=2, device="cpu", **kw)
    assert all(v.device.type == "cpu" for v in gpu.values())  # weights come back to the CPU
    for k, s in enumerate(seeds):
        w, h = train.train_single(imgs, labs, tr, va, s, device="cuda", **kw)
        for key in w:
            # TF32 and other kernels on the GPU: looser than the CPU test, still far below a training step
            torch.testing.assert_close(gpu[key][k], w[key], rtol=0, atol=1e-3)
            torch.testing.assert_close(gpu[key][k], cpu[key][k], rtol=0, atol=1e-2)
        np.testing.assert_allclose(ghist["val_acc"][k], h["val_acc"], atol=1 / len(va) + 1e-9)
    feats = cnn.batched_features(gpu, cnn.preprocess(imgs).cuda())
    assert feats.device.type == "cuda" and feats.shape == (2, 96, 400)


def test_float_input_equals_uint8_input_and_empty_val_gives_nan() -> None:
    imgs, labs, tr, _ = _tiny_data()
    kw = dict(epochs=1, batch_size=32, lr=1e-3)
    w8, h8 = train.train_single(imgs, labs, tr, [], 5, **kw)
    wf, _ = train.train_single(cnn.preprocess(imgs), labs, tr, [], 5, **kw)
    for key in w8:
        assert torch.equal(w8[key], wf[key])
    assert np.isnan(h8["val_loss"]).all() and np.isfinite(h8["train_loss"]).all()


def test_training_learns_a_separable_task() -> None:
    rng = np.random.default_rng(0)
    labs = rng.integers(0, 2, 256)
    imgs = np.where(labs[:, None, None, None] == 1, 200, 50).astype(np.uint8)
    imgs = np.broadcast_to(imgs, (256, 32, 32, 3)) + rng.integers(0, 40, (256, 32, 32, 3)).astype(np.uint8)
    _, hist = train.train_batched(
        imgs, labs, np.arange(192), np.arange(192, 256), [0, 1], epochs=3, batch_size=32, lr=3e-3, group_size=2
    )
    assert (hist["val_acc"][:, -1] == 1.0).all()
    assert (hist["train_loss"][:, -1] < hist["train_loss"][:, 0]).all()


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(labels=np.full(96, 2)), r"labels must be in \{0,1\}; found \[2\]"),
        (dict(labels=np.zeros(96, dtype=np.float32)), "labels must be integers"),
        (dict(labels=np.zeros(95, dtype=int)), "one entry per image"),
        (dict(group_size=0), "group_size must be an int >= 1"),
        (dict(seeds=[]), "seeds is empty"),
        (dict(seeds=[1, -2]), r"seeds\[1\] must be an int"),
        (dict(train_idx=np.array([0, 96])), r"train_idx has indices in \[0, 96\] but there are 96 images"),
        (dict(train_idx=np.array([], dtype=int)), "train_idx is empty"),
        (dict(images=np.zeros((96, 3, 32, 32), dtype=np.uint8)), r"images must be uint8 \[N,32,32,3\]"),
        (dict(lr=0.0), "lr must be a finite float > 0"),
        (dict(epochs=0), "epochs must be an int >= 1"),
    ],
)
def test_train_batched_bad_input(change: dict, message: str) -> None:
    imgs, labs, tr, va = _tiny_data()
    args = dict(images=imgs, labels=labs, train_idx=tr, val_idx=va, seeds=[0, 1])
    kw = dict(epochs=1, batch_size=32, lr=1e-3, group_size=2)
    for k, v in change.items():
        (args if k in args else kw)[k] = v
    with pytest.raises(ValueError, match=message):
        train.train_batched(args["images"], args["labels"], args["train_idx"], args["val_idx"], args["seeds"], **kw)


# -- benchmark helpers ---------------------------------------------------------------------------------------------


def test_bench_flop_count_worked_example() -> None:
    from zoofusion import bench

    # conv1: 6*28*28 outputs x 75 MACs; conv2: 16*10*10 x 150; fc: 2 x 400
    assert bench.cnn_macs_per_image() == {"conv1": 352_800, "conv2": 240_000, "fc": 800}
    assert bench.train_flop_per_image() == 593_600 * 6


@pytest.mark.e2e
def test_bench_zoo_cli_prints_quotable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from zoofusion import bench

    # --cores 2: the one-process-per-core paths really run in 2 processes (spawned once, shared with calibration)
    argv = ["zoo", "--models", "2", "--images", "32", "--epochs", "1", "--batch-size", "16", "--group-size", "2",
            "--threads", "1", "--cores", "2", "--study-images", "10"]
    assert bench.main(argv) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    for key in ("matmul_peak_gflops", "batched_g2_model_images_per_s", "single_model_images_per_s",
                "speedup_batched_g2_over_single", "study_hours_estimate", "study_hours_estimate_2_processes",
                "mlflow_logging_seconds"):
        assert key in out
    # one line per path (both data orders, one process and one per core), then the calibrated choice
    for name in ("single", "single_2proc", "batched_g2", "batched_g2_2proc", "shared_g2", "shared_g2_2proc"):
        assert float(out[f"{name}_model_images_per_s"].split()[0]) > 0
    chosen = out["chosen_path"].split()[0]
    assert chosen in ("single", "single_2proc", "batched_g2", "batched_g2_2proc")  # own order: no shared path
    assert float(out["chosen_model_images_per_s"]) == float(out[f"{chosen}_model_images_per_s"].split()[0])
    assert float(out["speedup_chosen_over_single"]) > 0
    assert 0 < float(out["chosen_gflops_fraction_of_peak"])
    assert float(out["mlflow_logging_overhead"].split("%")[0]) > 0
    assert out["study_model_images"].startswith(str((2749 + 1749) * 10 * 20))
    with pytest.raises(SystemExit):
        bench.main(["zoo", "--group-size", "0"])
