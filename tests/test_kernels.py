import numpy as np
import pytest
import torch

from zoofusion.stages.kernels import harvest, run
from zoofusion.config import parse_params
from zoofusion.core.cnn import init_weights, stack
from zoofusion.io import save_npz


def test_harvest_keeps_models_at_or_above_floor():
    w = stack([init_weights(s) for s in range(4)])
    h = harvest(w, np.array([0.5, 0.7, 0.6, 0.9]), 0.6)
    assert h["model_index"].tolist() == [1, 2, 3]
    assert h["conv1.weight"].shape == (3, 6, 3, 5, 5) and h["conv2.weight"].shape == (3, 16, 6, 5, 5)
    assert torch.equal(h["conv2.weight"][0], w["conv2.weight"][1])
    assert "fc.weight" not in h


def test_no_model_above_floor_is_a_clear_error(tmp_path):
    for d in ("black", "cat"):
        (tmp_path / "zoo" / d).mkdir(parents=True)
        torch.save({"weights": stack([init_weights(1)])}, tmp_path / "zoo" / d / "weights.pt")
        save_npz(tmp_path / "zoo" / d / "history.npz", val_acc=np.array([[0.4, 0.5]]))
    with pytest.raises(ValueError, match=r"kernels\.min_val_accuracy: no black model reaches 0\.6 \(best 0\.500\)"):
        run(parse_params({}), zoo=tmp_path / "zoo", out=tmp_path / "k", metrics=tmp_path / "m.json")
    assert not (tmp_path / "k").exists()
