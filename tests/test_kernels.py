import numpy as np
import pytest
import torch

from zoofusion.steps.kernels import harvest, run
from conftest import make_params
from zoofusion.core.cnn import init_weights, stack
from zoofusion.io import save_npz


def test_harvest_keeps_models_at_or_above_floor():
    w = stack([init_weights(s) for s in range(4)])
    h = harvest(w, np.array([0.5, 0.7, 0.6, 0.9]), 0.6)
    assert h["model_index"].tolist() == [1, 2, 3]
    assert h["conv1.weight"].shape == (3, 6, 3, 5, 5) and h["conv2.weight"].shape == (3, 16, 6, 5, 5)
    assert torch.equal(h["conv2.weight"][0], w["conv2.weight"][1])
    assert torch.equal(h["fc.weight"][0], w["fc.weight"][1]) and torch.equal(h["fc.bias"][2], w["fc.bias"][3])


def test_no_model_above_floor_is_a_clear_error(tmp_path):
    for d in ("black", "cat"):
        (tmp_path / "zoo" / d).mkdir(parents=True)
        torch.save({"weights": stack([init_weights(1)])}, tmp_path / "zoo" / d / "weights.pt")
        save_npz(tmp_path / "zoo" / d / "history.npz", val_acc=np.array([[0.4, 0.5]]))
    with pytest.raises(ValueError, match=r"kernels\.min_val_accuracy: no black model reaches 0\.6 \(best 0\.500\)"):
        run(make_params(), zoo=tmp_path / "zoo", out=tmp_path / "k", metrics=tmp_path / "m.json")
    assert not (tmp_path / "k").exists()


def test_run_writes_the_raw_and_the_aligned_harvest(tmp_path):
    from zoofusion.core.align import align
    from zoofusion.core.cnn import CONV_KEYS

    acc = {"black": np.array([0.7, 0.9, 0.5, 0.8]), "cat": np.array([0.65, 0.7, 0.75])}
    zoo = {d: stack([init_weights(s + 10 * i) for s in range(len(acc[d]))]) for i, d in enumerate(acc)}
    for d in acc:
        (tmp_path / "zoo" / d).mkdir(parents=True)
        torch.save({"weights": zoo[d]}, tmp_path / "zoo" / d / "weights.pt")
        save_npz(tmp_path / "zoo" / d / "history.npz", val_acc=acc[d][:, None])
    summary = run(make_params(), zoo=tmp_path / "zoo", out=tmp_path / "k", metrics=tmp_path / "m.json")
    assert summary["alignment"]["reference"] == "black/1"  # the black zoo's best on val
    ref = {k: v[1] for k, v in zoo["black"].items()}
    for d in acc:
        raw, al = (torch.load(tmp_path / "k" / f / f"{d}.pt") for f in ("raw", "aligned"))
        assert raw["model_index"].tolist() == al["model_index"].tolist() == np.flatnonzero(acc[d] >= 0.6).tolist()
        for j, i in enumerate(raw["model_index"].tolist()):
            assert torch.equal(raw["conv2.weight"][j], zoo[d]["conv2.weight"][i])
            want = align(ref, {k: v[i] for k, v in zoo[d].items()})
            for k in CONV_KEYS:
                assert torch.equal(al[k][j], want[k])
    assert summary["alignment"]["cat_cosine_to_reference_aligned"] >= summary["alignment"]["cat_cosine_to_reference_raw"]
    assert summary["alignment"]["black_cosine_to_reference_aligned"] >= summary["alignment"]["black_cosine_to_reference_raw"]
