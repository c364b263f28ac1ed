"""Step `control`: the positive control, LeNets trained directly on black cat vs other, on images outside val and test.

It answers "what does the protocol find when the signal is there?": a candidate known to carry the signal.

The labels are weak, and say so. Every manually labelled black cat is already in val or test (steps/data.py), so
none is free to train on. The control trains on the image source's test/ split instead, which no other stage trains
on, with labels from the darkness feature (core.darkness, `data.dark_luminance`):

- positive (1): a `data.cat_class` image at least `control.positive_min_darkness` dark: a "dark cat", the proxy for a
  black cat (some are dark-brown or shadowed cats, and black cats in bright scenes are missed);
- negative (0): any other class, or a cat no darker than `data.nonblack_cat_max_darkness` (cats in between are left
  out: neither label is safe), a seeded sample of `control.negatives_per_positive` per positive.

An image equal to (pixel hash) or a near-copy of (pHash within `data.near_copy_bits`) any val or test image is left
out, so no evaluation image, nor a twin of one, is trained on. The LeNets are the zoo's CNN trained by the zoo's code
and params (core.train.train_models: zoo.epochs, batch_size, lr, val_fraction, path, data_order), model k seeded
`derive_seed(seed, "control", k)`, one thread (threads change float rounding). Test labels are never read.

Output data/control/: weights.pt (stacked SmallCNN weights, head included, and seeds), history.npz (per-epoch curves
on the weak labels' own split), train_set.csv (every training image's id and weak label); metrics/control.json.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

import zoofusion.layout as layout
from zoofusion.core.cnn import preprocess
from zoofusion.core.darkness import darkness
from zoofusion.core.scores import roc_auc
from zoofusion.core.seeds import derive_seed, rng
from zoofusion.images import ImageSet, load_cifar10, load_split, near_copies, perceptual_hashes, pixel_hashes
from zoofusion.io import atomic_dir, load_npz, save_npz, save_torch, write_json

log = logging.getLogger(__name__)
OUT = layout.CONTROL
SPLIT = "test"  # the image source's split the control trains on: no other stage trains on it


def weak_labels(classes: np.ndarray, dark: np.ndarray, cat_class: str, min_dark: float,
                max_light: float) -> np.ndarray:
    """1 for a dark cat (darkness >= min_dark), 0 for a non-cat or a light cat (<= max_light), -1 left out."""
    is_cat = classes == cat_class
    y = np.where(is_cat, -1, 0)
    y[is_cat & (dark >= min_dark)] = 1
    y[is_cat & (dark <= max_light)] = 0
    return y


def held_out(images: np.ndarray, held: np.ndarray, bits: int) -> np.ndarray:
    """True for every image equal to, or a near-copy (pHash within `bits`) of, one of the `held` images."""
    mask = np.isin(pixel_hashes(images), pixel_hashes(held))
    near = near_copies(perceptual_hashes(held), perceptual_hashes(images), bits)
    mask[[j for _, j, _ in near]] = True
    return mask


def training_set(y: np.ndarray, excluded: np.ndarray, negatives_per_positive: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels), sorted: every usable positive and a seeded sample of negatives (all when too few)."""
    pos = np.flatnonzero((y == 1) & ~excluded)
    neg = np.flatnonzero((y == 0) & ~excluded)
    if len(pos) < 2:
        raise ValueError(f"control.positive_min_darkness: only {len(pos)} dark cats left to train the positive "
                         "control on; lower control.positive_min_darkness")
    k = min(len(neg), int(round(negatives_per_positive * len(pos))))
    neg = np.sort(rng(seed, "control", "negatives").choice(neg, size=k, replace=False))
    idx = np.concatenate([pos, neg])
    order = np.argsort(idx)
    return idx[order], np.concatenate([np.ones(len(pos), np.int64), np.zeros(k, np.int64)])[order]


def train_control(images: np.ndarray, labels: np.ndarray, n_models: int, z, seed: int,
                  device: str) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """`n_models` SmallCNNs on (images, labels) by the zoo's code and params `z` (a ZooParams)."""
    from zoofusion.core.train import train_models
    from zoofusion.steps.zoo import split_indices

    train_idx, val_idx = split_indices(len(labels), z.val_fraction, derive_seed(seed, "control-split"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_models(images, labels, train_idx, val_idx,
                            [derive_seed(seed, "control", k) for k in range(n_models)], path=z.path,
                            data_order=z.data_order, epochs=z.epochs, batch_size=z.batch_size, lr=z.lr, device=device)
    finally:
        torch.set_num_threads(threads)


def head_scores(weights: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """p(class 1) of every model's own head on uint8 images: [n_models, N]."""
    from zoofusion.core.cnn import SmallCNN

    out = []
    x = preprocess(images)
    for i in range(int(weights["conv1.weight"].shape[0])):
        m = SmallCNN()
        m.load_state_dict({k: v[i] for k, v in weights.items()})
        with torch.no_grad():
            out.append(torch.softmax(m.eval()(x), dim=1)[:, 1].numpy())
    return np.stack(out)


def load_source(p) -> ImageSet:
    return load_cifar10(p.path, SPLIT) if p.source == "cifar10" else load_split(p.path, SPLIT)


def run(params, device: str, val: Path = layout.VAL, test: Path = layout.TEST, out: Path = OUT,
        metrics: Path = layout.METRICS / "control.json") -> dict:
    c, d = params.control, params.data
    for f, how in ((val, "dvc repro data"), (test, "dvc repro testset")):
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: missing; run `{how}` first")
    src = load_source(d)
    v = load_npz(val)
    y = weak_labels(src.classes, darkness(src.images, d.dark_luminance), d.cat_class, c.positive_min_darkness,
                    d.nonblack_cat_max_darkness)
    excluded = held_out(src.images, np.concatenate([v["images"], load_npz(test)["images"]]), d.near_copy_bits)
    idx, labels = training_set(y, excluded, c.negatives_per_positive, params.seed)
    weights, history = train_control(src.images[idx], labels, c.n_models, params.zoo, params.seed, device)
    weights = {k: t.detach().cpu().contiguous() for k, t in weights.items()}
    val_auroc = [roc_auc(v["labels"], s) for s in head_scores(weights, v["images"])]
    with atomic_dir(out) as tmp:
        seeds = torch.tensor([derive_seed(params.seed, "control", k) for k in range(c.n_models)], dtype=torch.int64)
        save_torch(tmp / "weights.pt", {"weights": weights, "seeds": seeds})
        save_npz(tmp / "history.npz", **{k: np.asarray(h, dtype=np.float64) for k, h in history.items()})
        with (tmp / "train_set.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "weak_label"])
            w.writerows(zip(src.ids[idx].tolist(), labels.tolist()))
    summary = {"split": SPLIT, "n_models": c.n_models, "positives": int(labels.sum()),
               "negatives": int(len(labels) - labels.sum()), "left_out_near_val_test": int(excluded.sum()),
               "weak_val_acc_mean": round(float(history["val_acc"][:, -1].mean()), 6),
               "val_auroc_head_mean": round(float(np.mean(val_auroc)), 6),
               "val_auroc_head_min": round(float(np.min(val_auroc)), 6)}
    write_json(metrics, summary)
    log.info("control: %d LeNets on %d dark cats vs %d others of the source's %s/ split (%d images left out as "
             "val/test near-copies); head val AUROC mean %.3f", c.n_models, summary["positives"],
             summary["negatives"], SPLIT, summary["left_out_near_val_test"], summary["val_auroc_head_mean"])
    return summary
