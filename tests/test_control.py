"""The positive control (steps/control.py): weak labels, the val/test exclusion, and that it beats chance."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_params
from zoofusion.core.darkness import darkness
from zoofusion.core.scores import roc_auc
from zoofusion.steps.control import head_scores, held_out, train_control, training_set, weak_labels


def _images(n: int, cat: bool, dark: bool, gen: np.random.Generator) -> np.ndarray:
    """Bright noise images; a "cat" is red-tinted, a dark one 6 times darker."""
    x = gen.integers(110, 250, size=(n, 32, 32, 3)).astype(np.float64)
    if cat:
        x[..., 0] = np.minimum(255, 1.3 * x[..., 0])
        x[..., 1:] *= 0.75
    if dark:
        x /= 6
    return x.astype(np.uint8)


def test_weak_labels_worked_example():
    classes = np.array(["cat", "cat", "cat", "dog", "dog"])
    dark = np.array([0.7, 0.3, 0.1, 0.9, 0.0])
    # a dark cat is 1; a cat in between is left out (-1); a light cat and every other class are 0
    assert weak_labels(classes, dark, "cat", 0.5, 0.15).tolist() == [1, -1, 0, 0, 0]


def test_val_test_images_and_their_near_copies_are_left_out():
    gen = np.random.default_rng(0)
    pool = gen.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    held = np.stack([pool[1], np.clip(pool[4].astype(int) + 1, 0, 255).astype(np.uint8)])  # a copy, a near-copy
    assert held_out(pool, held, 4).tolist() == [False, True, False, False, True, False]
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    idx, labels = training_set(y, np.array([False, True] + [False] * 6), 2.0, seed=0)
    assert idx.tolist() == sorted(idx.tolist()) and labels.sum() == 2 and len(labels) == 6 and 1 not in idx.tolist()


def test_the_positive_control_beats_chance_on_black_cats():
    """LeNets trained on weak labels (dark cat vs other) of one sample score the black cats of another, a val set
    built like the real one (black cats vs light cats, dark non-cats and light non-cats), above chance. Flipped
    labels or a broken head would put the AUROC at or below 0.5."""
    gen = np.random.default_rng(0)
    parts = [(_images(40, True, True, gen), "cat"), (_images(40, True, False, gen), "cat"),
             (_images(40, False, True, gen), "dog"), (_images(80, False, False, gen), "dog")]
    images = np.concatenate([p for p, _ in parts])
    classes = np.concatenate([[c] * len(p) for p, c in parts])
    y = weak_labels(classes, darkness(images, 70), "cat", 0.5, 0.15)
    assert y[:40].tolist() == [1] * 40 and (y[40:] == 0).all()
    idx, labels = training_set(y, np.zeros(len(y), bool), 2.0, seed=1)
    z = make_params({"zoo": {"epochs": 8, "batch_size": 16, "lr": 0.01, "path": "single"}}).zoo
    weights, history = train_control(images[idx], labels, 2, z, seed=3, device="cpu")
    assert weights["fc.weight"].shape == (2, 2, 400) and history["val_acc"].shape == (2, 8)
    val = np.concatenate([_images(15, True, True, gen), _images(10, True, False, gen), _images(10, False, True, gen),
                          _images(10, False, False, gen)])
    val_y = np.array([1] * 15 + [0] * 30)
    aurocs = [roc_auc(val_y, s) for s in head_scores(weights, val)]
    assert min(aurocs) > 0.75, aurocs
    # same seed, same LeNets
    again, _ = train_control(images[idx], labels, 2, z, seed=3, device="cpu")
    assert all(torch.equal(weights[k], again[k]) for k in weights)
