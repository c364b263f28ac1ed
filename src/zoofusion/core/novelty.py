"""Novelty of a generated model: how far it lies from the nearest zoo model, and how far its mistakes overlap.

After Zeng, Yin, Xu & Liu, "Generative Modeling of Weights: Generalization or Memorization?" (arXiv 2506.07998):
a generated model is new only if it is not a near-copy of a training (zoo) model. Two measures per model:

* **distance to the nearest zoo model**: the L2 distance over conv1 and conv2, weights AND biases
  (``CONV_KEYS``, flattened and concatenated), between the model and each zoo model whose hidden channels were
  first put in the model's order by weight matching (``core.align.align``, Git Re-Basin): two networks that list
  the same channels in another order are the same network, so the distance is taken after the permutation that
  brings them closest. Weight matching maximises the inner product <w, P z>, and
  ||w - P z||^2 = ||w||^2 + ||z||^2 - 2 <w, P z> with norms unchanged by P, so it minimises the distance too.
  The minimum over zoo models is the nearest model (ties: the lowest index).
* **misprediction IoU**: the Jaccard index |E_a ∩ E_b| / |E_a ∪ E_b| of two models' test error sets (the test
  images each one's val-mapped output gets wrong). A near-copy makes the same mistakes (IoU near 1).

A distance has a scale only beside the zoo's own: :func:`typical_distance` is the median aligned distance between
two distinct models of one zoo. Pure: tensors in, numbers out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from zoofusion.core.align import align
from zoofusion.core.cnn import CONV_KEYS
from zoofusion.core.metrics import check_labels, majority_mapping

__all__ = ["l2", "distances", "nearest_model", "distance_matrix", "typical_distance", "nearest_other",
           "val_mapped_calls", "error_set", "error_iou"]

Weights = Mapping[str, torch.Tensor | np.ndarray]


def _flat(w: Weights) -> np.ndarray:
    return np.concatenate([np.asarray(w[k].detach().cpu() if isinstance(w[k], torch.Tensor) else w[k],
                                      dtype=np.float64).ravel() for k in CONV_KEYS])


def l2(a: Weights, b: Weights) -> float:
    """sqrt(sum over conv1/conv2 weights and biases of (a - b)^2), in float64; no alignment."""
    return float(np.linalg.norm(_flat(a) - _flat(b)))


def _model(zoo: Weights, j: int) -> dict:
    return {k: zoo[k][j] for k in CONV_KEYS}


def _size(zoo: Weights) -> int:
    n = {int(zoo[k].shape[0]) for k in CONV_KEYS}
    if len(n) != 1:
        raise ValueError(f"zoo: its conv tensors hold different numbers of models {sorted(n)}")
    return n.pop()


def distances(w: Weights, zoo: Weights) -> np.ndarray:
    """[n] the distance from w to each zoo model (stacked [n, ...] conv tensors), each zoo model first aligned to
    w (its channels permuted to match w's: ``align(w, zoo_j)``)."""
    return np.array([l2(w, align(w, _model(zoo, j))) for j in range(_size(zoo))], dtype=np.float64)


def nearest_model(w: Weights, zoo: Weights, exclude: int | None = None) -> tuple[int, float]:
    """(index, distance) of the zoo model nearest to w after alignment (ties: the lowest index).

    `exclude`: a zoo index left out (a zoo model's nearest OTHER model); a zoo model's nearest model in its own
    zoo, nothing excluded, is itself at distance 0."""
    d = distances(w, zoo)
    if exclude is not None:
        if len(d) < 2:
            raise ValueError("nearest_model: a zoo of one model has no other model to be nearest")
        d[exclude] = np.inf
    j = int(np.argmin(d))
    return j, float(d[j])


def distance_matrix(zoo: Weights) -> np.ndarray:
    """[n, n] D[i, j] = distance from zoo model i to zoo model j aligned to it; 0 on the diagonal."""
    return np.stack([distances(_model(zoo, i), zoo) for i in range(_size(zoo))])


def typical_distance(matrix: np.ndarray) -> float:
    """The median distance between two distinct zoo models (off-diagonal entries of :func:`distance_matrix`):
    the scale a generated model's distance is read against ("relative distance" = distance / this)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"typical_distance: needs a square matrix of at least 2 models, got shape {m.shape}")
    return float(np.median(m[~np.eye(m.shape[0], dtype=bool)]))


def nearest_other(matrix: np.ndarray) -> np.ndarray:
    """[n] each zoo model's distance to its nearest other zoo model (the diagonal left out)."""
    m = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(m, np.inf)
    return m.min(1)


def val_mapped_calls(y_val: np.ndarray, clusters_val: np.ndarray, clusters_test: np.ndarray) -> np.ndarray:
    """0/1 test calls by the val majority mapping of clusters (core.protocol's study calls): each test point gets
    the class its cluster holds most of on val (ties -> 0); a cluster val never saw -> 0 ('other')."""
    mapping = majority_mapping(y_val, clusters_val)
    return np.array([mapping.get(int(c), 0) for c in np.asarray(clusters_test)], dtype=np.int64)


def error_set(y_true: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Boolean mask of the images whose 0/1 call differs from the label."""
    y, c = check_labels(y_true, "y_true"), check_labels(calls, "calls")
    if y.shape != c.shape:
        raise ValueError(f"y_true and calls must have equal lengths, got {y.shape[0]} and {c.shape[0]}")
    return y != c


def error_iou(a_errors: np.ndarray, b_errors: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two error masks over the same images (Zeng et al.'s misprediction IoU).

    Identical sets give 1, disjoint sets 0. Both empty (neither model makes a mistake): 1.0, by convention — the
    two error sets are then identical, and the measure asks whether two models fail alike."""
    a, b = np.asarray(a_errors, dtype=bool), np.asarray(b_errors, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"error_iou: two 1-d masks over the same images, got shapes {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)
