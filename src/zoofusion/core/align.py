"""Channel alignment of zoo CNNs by weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", alg. 1).

Two CNNs that compute the same function can list their hidden channels in any order, so averaging, comparing or
translating kernels channel by channel only makes sense after their channels are put in a common order.

A permutation p1 of conv1's 6 output channels and p2 of conv2's 16 output channels leave the network's function
unchanged when applied consistently (:func:`permute`): conv1 rows and bias by p1, conv2's input channels by p1;
conv2 rows and bias by p2, and fc's 16 blocks of 25 columns by p2 (features are flattened in (C,H,W) order, so
channel c owns columns 25c..25c+24). Convention: the new channel i is the old channel p[i].

Weight matching picks (p1, p2) maximising the summed inner product <ref, permute(other, p1, p2)> over all
parameters. With one permutation fixed, the objective is linear in the other, sum_i S[i, p[i]], which
``scipy.optimize.linear_sum_assignment`` maximises exactly; :func:`match` alternates conv1, conv2 until neither
improves (coordinate ascent, deterministic; Git Re-Basin visits layers in random order, here the order is fixed so
the result is reproducible). It climbs from two starts read from the weights themselves (conv1's assignment from
conv1 alone, then conv2's given it; and conv2's from conv2 with its input channels summed out, plus fc, then
conv1's given it) and keeps the better end. Neither start depends on the order in which ``other`` happens to
store its channels, so a model and any permuted copy of it align to identical tensors. Should both ends lie below
the similarity of the unpermuted model (never seen on 200 random pairs), the climb from the identity is returned
instead, so alignment never lowers the similarity to ``ref`` (the objective never decreases along a climb).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zoofusion.core.cnn import CONV_KEYS, PARAM_SHAPES

__all__ = ["align", "align_many", "inverse", "match", "permute", "similarity"]

C1, C2, BLOCK = 6, 16, 25  # conv1 channels, conv2 channels, fc columns per conv2 channel (5x5)

Weights = Mapping[str, torch.Tensor | np.ndarray]


def _check(w: Weights, name: str, lead: int = 0) -> None:
    unknown = sorted(set(w) - set(PARAM_SHAPES))
    missing = [k for k in CONV_KEYS if k not in w]
    if unknown or missing:
        raise ValueError(f"{name}: expected SmallCNN keys {list(PARAM_SHAPES)} (fc.* optional); "
                         f"missing {missing}, unknown {unknown}")
    for k, t in w.items():
        if tuple(t.shape[lead:]) != PARAM_SHAPES[k]:
            raise ValueError(f"{name}: {k} has shape {tuple(t.shape)}, expected {PARAM_SHAPES[k]}"
                             + (" after a leading model dim" if lead else ""))


def _perm(p: np.ndarray | list | torch.Tensor, size: int, name: str) -> np.ndarray:
    a = np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p)
    if a.shape != (size,) or not np.issubdtype(a.dtype, np.integer) or not np.array_equal(np.sort(a), np.arange(size)):
        raise ValueError(f"{name} must be a permutation of range({size}) (int array of shape ({size},)), got {a!r}")
    return a.astype(np.int64)


def _take(t: torch.Tensor | np.ndarray, p: np.ndarray, dim: int) -> torch.Tensor | np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.index_select(dim, torch.as_tensor(p, device=t.device))
    return np.take(t, p, axis=dim)


def permute(weights: Weights, p1: np.ndarray | list, p2: np.ndarray | list) -> dict:
    """The same network with conv1 channels reordered by p1 and conv2 channels by p2 (new channel i = old p[i]).

    conv1.weight/bias rows <- p1, conv2.weight input channels <- p1; conv2.weight/bias rows <- p2, fc.weight
    column blocks [25c, 25c+25) <- p2; fc.bias unchanged; fc.* optional. Logits are unchanged; the 400-d features
    come out as old_features.reshape(16, 25)[p2]. Returns new tensors (torch or numpy, as given).
    """
    _check(weights, "permute")
    q1, q2 = _perm(p1, C1, "p1"), _perm(p2, C2, "p2")
    out = dict(weights)
    out["conv1.weight"] = _take(weights["conv1.weight"], q1, 0)
    out["conv1.bias"] = _take(weights["conv1.bias"], q1, 0)
    out["conv2.weight"] = _take(_take(weights["conv2.weight"], q2, 0), q1, 1)
    out["conv2.bias"] = _take(weights["conv2.bias"], q2, 0)
    if "fc.weight" in weights:
        cols = (q2[:, None] * BLOCK + np.arange(BLOCK)[None]).ravel()  # channel c's block, in the new order
        out["fc.weight"] = _take(weights["fc.weight"], cols, 1)
    if "fc.bias" in weights:
        out["fc.bias"] = _take(weights["fc.bias"], np.arange(weights["fc.bias"].shape[0]), 0)  # a copy
    return out


def inverse(p: np.ndarray | list) -> np.ndarray:
    """The inverse permutation: permute(permute(w, p1, p2), inverse(p1), inverse(p2)) == w."""
    a = np.asarray(p)
    return _perm(np.argsort(a), a.shape[0], "p")


def _np(w: Weights) -> dict[str, np.ndarray]:
    return {k: (t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64))
            for k, t in w.items()}


def similarity(a: Weights, b: Weights) -> float:
    """sum over the keys both hold of <a[k], b[k]> (flattened inner products, float64): the matching objective."""
    x, y = _np(a), _np(b)
    return float(sum(np.vdot(x[k], y[k]) for k in x if k in y))


def _cost1(r: dict, o: dict, p2: np.ndarray) -> np.ndarray:
    """S1[i, j] = gain of putting other's conv1 channel j at position i, given p2:
    <r.w1[i], o.w1[j]> + r.b1[i] o.b1[j] + sum_c <r.w2[c, i], o.w2[p2[c], j]>."""
    s = r["conv1.weight"].reshape(C1, -1) @ o["conv1.weight"].reshape(C1, -1).T
    s += np.outer(r["conv1.bias"], o["conv1.bias"])
    r2 = r["conv2.weight"].transpose(1, 0, 2, 3).reshape(C1, -1)
    o2 = o["conv2.weight"][p2].transpose(1, 0, 2, 3).reshape(C1, -1)
    return s + r2 @ o2.T


def _fc_blocks(w: dict) -> np.ndarray:
    """fc weights as one row per conv2 channel: the fc inputs (its BLOCK spatial positions) that channel feeds."""
    fc = w["fc.weight"]
    return fc.reshape(fc.shape[0], C2, BLOCK).transpose(1, 0, 2).reshape(C2, -1)


def _cost2(r: dict, o: dict, p1: np.ndarray, fc: bool) -> np.ndarray:
    """S2[c, d] = <r.w2[c], o.w2[d][:, p1]> + r.b2[c] o.b2[d] + <r.fc block c, o.fc block d> (blocks if fc)."""
    s = r["conv2.weight"].reshape(C2, -1) @ o["conv2.weight"][:, p1].reshape(C2, -1).T
    s += np.outer(r["conv2.bias"], o["conv2.bias"])
    if fc:
        s += _fc_blocks(r) @ _fc_blocks(o).T
    return s


def _assign(s: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, bool]:
    """The optimal assignment for S if it beats the current one by more than rounding; else the current one."""
    _, best = linear_sum_assignment(s, maximize=True)
    rows = np.arange(s.shape[0])
    gain = s[rows, best].sum() - s[rows, current].sum()
    tol = 1e-12 * max(1.0, float(np.abs(s).sum()))  # equal-objective solutions must not flip back and forth
    return (best.astype(np.int64), True) if gain > tol else (current, False)


def _cost1_own(r: dict, o: dict) -> np.ndarray:
    """conv1's assignment gain from conv1 alone (weights + bias): independent of the order of conv2's channels."""
    s = r["conv1.weight"].reshape(C1, -1) @ o["conv1.weight"].reshape(C1, -1).T
    return s + np.outer(r["conv1.bias"], o["conv1.bias"])


def _cost2_own(r: dict, o: dict, fc: bool) -> np.ndarray:
    """conv2's assignment gain with conv2's input channels summed out: independent of the order of conv1's."""
    s = r["conv2.weight"].sum(1).reshape(C2, -1) @ o["conv2.weight"].sum(1).reshape(C2, -1).T
    s += np.outer(r["conv2.bias"], o["conv2.bias"])
    if fc:
        s += _fc_blocks(r) @ _fc_blocks(o).T
    return s


def _lsa(s: np.ndarray) -> np.ndarray:
    return linear_sum_assignment(s, maximize=True)[1].astype(np.int64)


def _climb(r: dict, o: dict, fc: bool, p1: np.ndarray, p2: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(iters):
        p1, moved1 = _assign(_cost1(r, o, p2), p1)
        p2, moved2 = _assign(_cost2(r, o, p1, fc), p2)
        if not (moved1 or moved2):
            break
    return p1, p2


def match(ref: Weights, other: Weights, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(p1, p2) such that permute(other, p1, p2) has (locally) maximal summed inner product with ref.

    Coordinate ascent: alternately solve conv1's assignment (conv1 weights + bias, and the conv2 input slices
    under the current p2) and conv2's (conv2 weights + bias under the current p1, and fc blocks when both dicts
    have fc.weight), until neither improves or ``iters`` rounds. From two starts read from the weights (the same
    content whatever order ``other`` stores its channels in), keeping the better end (ties: the first); the climb
    from the identity only if both end below the unpermuted similarity. Deterministic.
    """
    _check(ref, "match(ref)")
    _check(other, "match(other)")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be an int >= 1; got {iters!r}")
    r, o = _np(ref), _np(other)
    fc = "fc.weight" in r and "fc.weight" in o
    q1 = _lsa(_cost1_own(r, o))
    q2 = _lsa(_cost2_own(r, o, fc))
    ends = [_climb(r, o, fc, q1, _lsa(_cost2(r, o, q1, fc)), iters),
            _climb(r, o, fc, _lsa(_cost1(r, o, q2)), q2, iters)]
    scores = [similarity(r, permute(o, *p)) for p in ends]
    tol = 1e-12 * max(1.0, max(abs(x) for x in scores))
    best = 1 if scores[1] > scores[0] + tol else 0
    if scores[best] < similarity(r, o) - tol:
        return _climb(r, o, fc, np.arange(C1), np.arange(C2), iters)
    return ends[best]


def align(ref: Weights, other: Weights, iters: int = 100) -> dict:
    """``other`` with its channels reordered to match ``ref``: permute(other, *match(ref, other)). Same function."""
    return permute(other, *match(ref, other, iters))


def align_many(ref: Weights, stacked: Weights, iters: int = 100) -> dict:
    """Align each model of a stacked dict ([M, ...] per key, e.g. a zoo) to ``ref``; returns a stacked dict."""
    _check(stacked, "align_many(stacked)", lead=1)
    m = {int(t.shape[0]) for t in stacked.values()}
    if len(m) != 1:
        raise ValueError(f"align_many: leading dims differ across keys {sorted(m)}")
    out: dict[str, list] = {k: [] for k in stacked}
    for i in range(m.pop()):
        aligned = align(ref, {k: t[i] for k, t in stacked.items()}, iters)
        for k, column in out.items():
            column.append(aligned[k])
    return {k: torch.stack(v) if isinstance(v[0], torch.Tensor) else np.stack(v) for k, v in out.items()}
