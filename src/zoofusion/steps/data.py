"""Step `data`: build the study's datasets from the image source's train split.

Outputs (data/prepared/, one compact .npz each: uint8 images, int64 labels, source ids):
- black.npz  domain A: dark non-cat images (label 1) vs random non-dark non-cat images (0)
- cat.npz    domain B: cats (1) vs random non-cat images (0)
- val.npz, test_split.npz: black cats (1) vs "other" (0) from the manual labels, split by seed
- sheets/<name>.png: contact sheets (samples per class) for a person to glance at

Images for val/test are reserved first, so no image is in both a training domain and val/test; the
two domains are disjoint as well. The source's test/ split is never read here.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

import zoofusion.layout as layout
from zoofusion.config import DataParams
from zoofusion.images import (ImageSet, ImageSourceError, load_cifar10, load_split, missing_source_message,
                              near_copies, perceptual_hashes)
from zoofusion.core.darkness import darkness
from zoofusion.core.seeds import rng
from zoofusion.render.sheets import save_sheet
from zoofusion.io import atomic_dir, save_npz

log = logging.getLogger(__name__)
OUT = layout.PREPARED
DATASETS = ("black", "cat", "val", "test_split")


def read_labels(path: str | Path, cat_class: str = "cat") -> dict[str, int | None]:
    """Manual black-cat labels: id `train/<cat_class>/<file>.jpg` -> 1, 0, or None for '?' (undecidable)."""
    path = Path(path)
    if not path.is_file():
        raise ImageSourceError(f"black-cat labels not found: tried {path.resolve()} — fix: `make source` (or `dvc "
                               f"pull`) fetches data/source/blackcat_labels_train.csv, or set data.labels in params.yaml")
    out: dict[str, int | None] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"split", "class", "file", "black_cat"}
        if not need <= set(reader.fieldnames or []):
            raise ImageSourceError(f"{path}: needs columns {sorted(need)}, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if any(row.get(k) is None for k in need) or None in row:
                raise ImageSourceError(f"{path}:{line}: a row needs exactly the {len(reader.fieldnames)} columns "
                                       f"{','.join(reader.fieldnames)}; fix or delete that line")
            if row["class"] != cat_class or row["split"] != "train":
                continue
            v = row["black_cat"].strip()
            if v not in ("0", "1", "?"):
                raise ImageSourceError(f"{path}:{line}: black_cat must be 0, 1 or ?, got {v!r} for file {row['file']}")
            name = row["file"].strip()
            name = name if "." in name else f"{name}.jpg"
            out[f"train/{cat_class}/{name}"] = None if v == "?" else int(v)
    return out


def _take(pool: np.ndarray, n: int, gen: np.random.Generator, what: str, param: str) -> np.ndarray:
    if n > len(pool):
        raise ValueError(f"{param}: asks for {n} {what} but only {len(pool)} are available; lower {param}")
    return np.sort(gen.choice(pool, size=n, replace=False)) if n else pool[:0]


def build_indices(ids: np.ndarray, classes: np.ndarray, dark: np.ndarray, labels: dict[str, int | None],
                  p: DataParams, seed: int, hashes: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Choose which images (indices into the train split) form each dataset, and their labels.

    Pure function of its inputs and the seed: the same inputs give the same indices.
    """
    gen = rng(seed, "data")
    n = len(ids)
    is_cat = classes == p.cat_class
    if not is_cat.any():
        raise ValueError(f"data.cat_class: no images of class {p.cat_class!r}; classes are {sorted(set(classes))}")
    index = {s: i for i, s in enumerate(ids)}
    unknown = [k for k in labels if k not in index]
    if unknown:
        raise ImageSourceError(f"data.labels: {len(unknown)} labelled images are not in the source, e.g. "
                               f"{unknown[0]}; are the labels for this image source?")
    lab = np.full(n, -2)  # -2 unlabelled, -1 undecidable, 0/1 as labelled
    for k, v in labels.items():
        lab[index[k]] = -1 if v is None else v
    used = np.zeros(n, dtype=bool)
    used[lab == -1] = True  # undecidable cats are left out of every dataset

    # val/test first, so the training domains never see them.
    pos = np.flatnonzero(lab == 1)
    if len(pos) < 2:
        raise ValueError("data.labels: need at least 2 black cats (label 1) to form val and test")
    n_neg = int(round(p.negatives_per_positive * len(pos)))
    mix = p.negative_mix
    counts = {"nonblack_cat": int(round(mix.nonblack_cat * n_neg)), "dark_noncat": int(round(mix.dark_noncat * n_neg))}
    counts["random"] = n_neg - counts["nonblack_cat"] - counts["dark_noncat"]
    used[pos] = True
    nonblack = np.flatnonzero(is_cat & ((lab == 0) | ((lab == -2) & (dark <= p.nonblack_cat_max_darkness))))
    neg_parts = [_take(nonblack, counts["nonblack_cat"], gen, "non-black cats", "data.negative_mix.nonblack_cat")]
    used[neg_parts[-1]] = True
    dark_noncat = np.flatnonzero(~is_cat & (dark >= p.darkness_threshold) & ~used)
    neg_parts.append(_take(dark_noncat, counts["dark_noncat"], gen, "dark non-cat images", "data.negative_mix.dark_noncat"))
    used[neg_parts[-1]] = True
    neg_parts.append(_take(np.flatnonzero(~is_cat & ~used), counts["random"], gen, "random images",
                           "data.negative_mix.random"))
    used[neg_parts[-1]] = True
    neg = np.concatenate(neg_parts)

    def split(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        perm = gen.permutation(idx)
        k = max(1, min(len(idx) - 1, int(round(p.val_fraction * len(idx)))))
        return perm[:k], perm[k:]

    pv, pt = split(pos)
    nv, nt = split(neg)
    if hashes is not None:  # no training image may be a near-copy of a val/test one (CIFAR-10 has near-duplicates)
        held = np.concatenate([pos, neg])
        near = sorted({j for _, j, _ in near_copies(hashes[held], hashes, p.near_copy_bits)} - set(held.tolist()))
        used[near] = True
        out_near = np.array(near, dtype=np.int64)
        log.info("data: %d images are near-copies (pHash within %d bits) of val/test images; left out of the "
                 "training domains", len(near), p.near_copy_bits)
        # nor may a test image be a near-copy of a val image: the test twin is left out (of everything)
        vset, tset = np.concatenate([pv, nv]), np.concatenate([pt, nt])
        twins = np.unique(np.array([tset[j] for _, j, _ in near_copies(hashes[vset], hashes[tset], p.near_copy_bits)],
                                   dtype=np.int64))
        pt, nt = pt[~np.isin(pt, twins)], nt[~np.isin(nt, twins)]
        log.info("data: %d test images are near-copies of val images; left out of test", len(twins))
    out = {} if hashes is None else {"near_copies": (out_near, np.zeros(len(out_near), np.int64)),
                                     "test_near_val": (twins, np.zeros(len(twins), np.int64))}
    for name, (a, b) in {"val": (pv, nv), "test_split": (pt, nt)}.items():
        idx = np.concatenate([a, b])
        y = np.concatenate([np.ones(len(a), np.int64), np.zeros(len(b), np.int64)])
        order = np.argsort(idx)
        out[name] = (idx[order], y[order])

    # Domain A (black): dark non-cats vs random non-dark non-cats.
    dark_pool = np.flatnonzero(~is_cat & (dark >= p.darkness_threshold) & ~used)
    a_pos = _take(dark_pool, p.black_positive, gen, "dark non-cat images", "data.black_positive")
    used[a_pos] = True
    a_neg = _take(np.flatnonzero(~is_cat & (dark < p.darkness_threshold) & ~used), p.black_negative, gen,
                  "non-dark non-cat images", "data.black_negative")
    used[a_neg] = True
    # Domain B (cat): cats vs random non-cats.
    b_pos = _take(np.flatnonzero(is_cat & ~used), p.cat_positive, gen, "cats", "data.cat_positive")
    used[b_pos] = True
    b_neg = _take(np.flatnonzero(~is_cat & ~used), p.cat_negative, gen, "non-cat images", "data.cat_negative")
    for name, (a, b) in {"black": (a_pos, a_neg), "cat": (b_pos, b_neg)}.items():
        idx = np.concatenate([a, b])
        y = np.concatenate([np.ones(len(a), np.int64), np.zeros(len(b), np.int64)])
        order = np.argsort(idx)
        out[name] = (idx[order], y[order])
    return out


def load_source(p: DataParams) -> ImageSet:
    if p.source == "cifar10":
        return load_cifar10(p.path, "train")
    if not Path(p.path).exists():
        raise ImageSourceError(missing_source_message(Path(p.path)))
    return load_split(p.path, "train")


def run(p: DataParams, seed: int, out: Path = OUT) -> dict[str, int]:
    labels = read_labels(p.labels, p.cat_class)  # cheap checks before decoding 50k images
    src = load_source(p)
    log.info("loaded %d train images from %s", len(src.ids), p.path)
    dark = darkness(src.images, p.dark_luminance)
    chosen = build_indices(src.ids, src.classes, dark, labels, p, seed, perceptual_hashes(src.images))
    sizes = {}
    with atomic_dir(out) as tmp:
        for name in DATASETS:
            idx, y = chosen[name]
            save_npz(tmp / f"{name}.npz", images=src.images[idx], labels=y, ids=src.ids[idx])
            save_sheet(tmp, name, src.images[idx], y, p.sheet_per_class)
            sizes[name] = len(idx)
            log.info("%s: %d images (%d positive)", name, len(idx), int(y.sum()))
        sizes["near_copies_left_out"] = len(chosen["near_copies"][0])
        sizes["test_near_val_left_out"] = len(chosen["test_near_val"][0])
    return sizes
