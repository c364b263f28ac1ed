"""Training the zoo CNN: one model at a time (the reference) and many at once as one grouped computation.

Seed rules (shared by :func:`train_single` and :func:`train_batched`, so the two give the same models):

* initial weights of the model with seed ``s``: :func:`zoofusion.core.cnn.init_weights` ``(s)`` (PyTorch default
  init, global RNG untouched);
* its data order: one ``torch.Generator().manual_seed(s + DATA_SEED_OFFSET)`` created before training; each epoch
  draws ``torch.randperm(len(train_idx), generator=g)`` and walks ``train_idx`` in that order in batches of
  ``batch_size`` (the last batch may be smaller). The offset keeps the data stream of seed ``s`` apart from the init
  stream of seed ``s + 1`` when a zoo uses consecutive seeds.

Data orders (``data_order``):

* ``own`` (the study's and Model Zoos' rule, the default): each model walks the data in its own seed's order, as above.
* ``shared``: all models of one call (the zoo stage calls once per shard) walk the data in the order of the call's
  first seed, ``seeds[0]``; each model's init is still its own seed's. Model k then equals
  ``train_single(..., seeds[k], data_seed=seeds[0])`` up to float rounding. Sharing an order lets a group of models
  read one image batch: conv1 of all of them becomes one dense 3 -> 6G convolution (:func:`train_shared`), the
  fastest CPU path, at the price of less diverse zoos (models differ by init only).

Paths (:func:`train_models` ``path``) compute the same models up to float rounding, so a path may be chosen per
machine (:mod:`zoofusion.calibrate`): ``single`` (one model at a time, :func:`train_single` in channels_last
memory), ``batched_g<G>``
(``own`` order, G models as one grouped-convolution network, :func:`train_batched`), ``shared_g<G>`` (``shared``
order, :func:`train_shared`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoofusion.core.cnn import (
    DATA_SEED_OFFSET,
    IMAGE_SHAPE_CHW,
    BatchedCNN,
    History,
    SmallCNN,
    _check_pos_int,
    _check_seed,
    _pack_hwc,
    _scale_uint8,
    init_weights,
    stack,
    unstack,
)

logger = logging.getLogger(__name__)

__all__ = ["DATA_ORDERS", "parse_path", "path_data_orders", "train_batched", "train_models", "train_shared",
           "train_single"]

DATA_ORDERS = ("own", "shared")


def _as_index(idx: np.ndarray | Tensor | Sequence[int], n: int, name: str, allow_empty: bool) -> Tensor:
    t = torch.as_tensor(np.asarray(idx) if not isinstance(idx, Tensor) else idx)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D integer index array; got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        if not allow_empty:
            raise ValueError(f"{name} is empty; pass at least one image index.")
        return t.to(torch.long)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"{name} must hold integer indices; got dtype {t.dtype}.")
    t = t.to(torch.long)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"{name} has indices in [{lo}, {hi}] but there are {n} images; keep them in [0, {n - 1}].")
    return t


def _prepare_data(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    train_idx: np.ndarray | Tensor | Sequence[int],
    val_idx: np.ndarray | Tensor | Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str | torch.device,
) -> tuple[Tensor, Tensor, Tensor, Tensor, torch.device]:
    """Validate everything up front; return HWC image source, labels, train/val index, device (all on device)."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8 and x.ndim == 4 and tuple(x.shape[1:]) == (32, 32, 3):
        src = x  # kept uint8: gathers move 4x fewer bytes; scaled per batch
    elif x.is_floating_point() and x.ndim == 4 and tuple(x.shape[1:]) == IMAGE_SHAPE_CHW:
        src = x.to(torch.float32).permute(0, 2, 3, 1).contiguous()
    else:
        raise ValueError(
            f"images must be uint8 [N,32,32,3] (raw HWC) or preprocessed float [N,3,32,32]; got dtype {x.dtype} "
            f"shape {tuple(x.shape)}."
        )
    n = x.shape[0]
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be 1-D with one entry per image ({n}); got shape {tuple(y.shape)}.")
    if y.dtype.is_floating_point or y.dtype.is_complex:
        raise ValueError(f"labels must be integers in {{0,1}}; got dtype {y.dtype}. Cast with .astype(int).")
    y = y.to(torch.long)
    bad = y[(y != 0) & (y != 1)]
    if bad.numel():
        raise ValueError(
            f"labels must be in {{0,1}}; found {bad.unique()[:5].tolist()}. Map the target class to 1, others to 0."
        )
    tr = _as_index(train_idx, n, "train_idx", allow_empty=False)
    va = _as_index(val_idx, n, "val_idx", allow_empty=True)
    _check_pos_int(epochs, "epochs")
    _check_pos_int(batch_size, "batch_size")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite float > 0; got {lr!r}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device string (use 'cpu' or 'cuda').") from exc
    return src.to(dev), y.to(dev), tr.to(dev), va.to(dev), dev


def _gather_single(src: Tensor, idx: Tensor) -> Tensor:
    """[b] indices -> float [b,3,32,32] (contiguous NCHW)."""
    x = src[idx]
    if x.dtype == torch.uint8:
        x = _scale_uint8(x)
    return x.permute(0, 3, 1, 2).contiguous()


def _gather_channels_last(src: Tensor, idx: Tensor) -> Tensor:
    """[b] indices -> float [b,3,32,32] in channels_last memory (the HWC source's own layout: no transpose copy)."""
    x = src[idx]
    if x.dtype == torch.uint8:
        x = _scale_uint8(x)
    return x.permute(0, 3, 1, 2)


def _new_history(n_models: int, epochs: int) -> History:
    return {k: np.full((n_models, epochs), np.nan) for k in ("train_loss", "train_acc", "val_loss", "val_acc")}


def train_single(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    train_idx: np.ndarray | Tensor | Sequence[int],
    val_idx: np.ndarray | Tensor | Sequence[int],
    seed: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str | torch.device = "cpu",
    data_seed: int | None = None,
    channels_last: bool = False,
) -> tuple[dict[str, Tensor], History]:
    """Train one SmallCNN with Adam(lr) and cross-entropy; the reference that :func:`train_batched` must equal.

    ``images``: uint8 [N,32,32,3] or preprocessed float [N,3,32,32]. Returns (CPU weight dict, history of
    [epochs] arrays ``train_loss``/``train_acc`` (running, over the epoch's batches, per image) and
    ``val_loss``/``val_acc`` (at epoch end; NaN if ``val_idx`` is empty)). ``data_seed`` (default: ``seed``) picks
    the data order; another model's seed gives the ``shared`` order (module docstring). ``channels_last``: run the
    convolutions and pooling in channels_last memory (the ``single`` path of :func:`train_models`; ~1.5x faster on
    CPUs, where NCHW max-pooling is slow), the same model up to float rounding.
    """
    _check_seed(seed, "seed")
    data_seed = seed if data_seed is None else data_seed
    _check_seed(data_seed, "data_seed")
    src, y, tr, va, dev = _prepare_data(
        images, labels, train_idx, val_idx, epochs=epochs, batch_size=batch_size, lr=lr, device=device
    )
    model = SmallCNN()
    model.load_state_dict(init_weights(int(seed)))
    model.to(dev)
    gather = _gather_single
    if channels_last:
        model.to(memory_format=torch.channels_last)
        gather = _gather_channels_last
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(data_seed) + DATA_SEED_OFFSET)
    n_tr = tr.shape[0]
    hist = _new_history(1, epochs)
    for ep in range(epochs):
        order = tr[torch.randperm(n_tr, generator=gen).to(dev)]
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        model.train()
        for s0 in range(0, n_tr, batch_size):
            bidx = order[s0 : s0 + batch_size]
            logits = model(gather(src, bidx))
            yb = y[bidx]
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * bidx.shape[0]
            correct += (logits.detach().argmax(1) == yb).sum()
        hist["train_loss"][0, ep] = loss_sum.item() / n_tr
        hist["train_acc"][0, ep] = correct.item() / n_tr
        if va.numel():
            model.eval()
            with torch.no_grad():
                vl = torch.zeros((), device=dev)
                vc = torch.zeros((), device=dev, dtype=torch.long)
                for s0 in range(0, va.shape[0], max(batch_size, 256)):
                    bidx = va[s0 : s0 + max(batch_size, 256)]
                    logits = model(gather(src, bidx))
                    vl += F.cross_entropy(logits, y[bidx], reduction="sum")
                    vc += (logits.argmax(1) == y[bidx]).sum()
            hist["val_loss"][0, ep] = vl.item() / va.shape[0]
            hist["val_acc"][0, ep] = vc.item() / va.shape[0]
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return weights, {k: v[0] for k, v in hist.items()}


def _check_group_args(seeds: Sequence[int], group_size: int, on_group_done) -> list[int]:
    seeds = _check_seeds(seeds)
    _check_pos_int(group_size, "group_size")
    if on_group_done is not None and not callable(on_group_done):
        raise ValueError("on_group_done must be callable(first_index, n_in_group) or None.")
    return seeds


# An epoch's batches for one group: (model, epoch) -> iterable of (logits [G,b,2], labels [G,b]).
EpochBatches = Callable[[BatchedCNN, int], Iterable[tuple[Tensor, Tensor]]]


def _train_groups(
    seeds: list[int],
    group_size: int,
    *,
    epochs: int,
    lr: float,
    n_tr: int,
    device: torch.device,
    val: tuple[Tensor, Tensor] | None,
    val_bs: int,
    epoch_batches: Callable[[list[int]], EpochBatches],
    on_group_done: Callable[[int, int], None] | None,
) -> tuple[dict[str, Tensor], History]:
    """The loop both grouped paths share: ``group_size`` models at a time as one :class:`BatchedCNN`, one Adam over
    the sum of each model's mean cross-entropy (so each model's gradient is its own; Adam is element-wise).
    ``epoch_batches(group_seeds)`` says how the group walks its data (own order per model, or one shared order).
    """
    hist = _new_history(len(seeds), epochs)
    out: list[dict[str, Tensor]] = []
    for g0 in range(0, len(seeds), group_size):
        gseeds = seeds[g0 : g0 + group_size]
        g = len(gseeds)
        model = BatchedCNN(stack([init_weights(s) for s in gseeds])).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        batches = epoch_batches(gseeds)
        for ep in range(epochs):
            loss_sum = torch.zeros(g, device=device)
            correct = torch.zeros(g, device=device, dtype=torch.long)
            for logits, yb in batches(model, ep):  # logits [G,b,2], yb [G,b]
                b = yb.shape[1]
                per_model = F.cross_entropy(logits.reshape(g * b, 2), yb.reshape(g * b), reduction="none")
                per_model = per_model.view(g, b).mean(1)
                opt.zero_grad(set_to_none=True)
                per_model.sum().backward()
                opt.step()
                loss_sum += per_model.detach() * b
                correct += (logits.detach().argmax(2) == yb).sum(1)
            hist["train_loss"][g0 : g0 + g, ep] = (loss_sum / n_tr).cpu().numpy()
            hist["train_acc"][g0 : g0 + g, ep] = (correct.double() / n_tr).cpu().numpy()
            if val is not None:
                vl, vc = _eval_shared(model, val[0], val[1], val_bs)
                hist["val_loss"][g0 : g0 + g, ep] = vl
                hist["val_acc"][g0 : g0 + g, ep] = vc
        out.extend(unstack({k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}))
        logger.debug("trained models %d..%d of %d", g0, g0 + g - 1, len(seeds))
        if on_group_done is not None:
            on_group_done(g0, g)
    return stack(out), hist


def train_batched(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    train_idx: np.ndarray | Tensor | Sequence[int],
    val_idx: np.ndarray | Tensor | Sequence[int],
    seeds: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    group_size: int,
    device: str | torch.device = "cpu",
    on_group_done: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Tensor], History]:
    """Train ``len(seeds)`` SmallCNNs, ``group_size`` at a time as one :class:`BatchedCNN`.

    Model k equals ``train_single(..., seeds[k])`` up to float rounding: same init and data order (module
    docstring), and the batched loss is the sum over models of each model's mean cross-entropy, so each model's
    gradient is its own; Adam is element-wise, so one Adam over the stacked parameters is per-model Adam.
    Returns (stacked CPU weights [n_models,...], history of [n_models, epochs] arrays, as in train_single).
    ``on_group_done(first_index, n_in_group)`` is called after each group finishes.
    """
    seeds = _check_group_args(seeds, group_size, on_group_done)
    src, y, tr, va, dev = _prepare_data(
        images, labels, train_idx, val_idx, epochs=epochs, batch_size=batch_size, lr=lr, device=device
    )
    n_tr = tr.shape[0]

    def epoch_batches(gseeds: list[int]) -> EpochBatches:
        gens = [torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in gseeds]  # each model's own order

        def batches(model: BatchedCNN, ep: int):
            order = tr[torch.stack([torch.randperm(n_tr, generator=gen) for gen in gens]).to(dev)]  # [G, n_tr]
            for s0 in range(0, n_tr, batch_size):
                bidx = order[:, s0 : s0 + batch_size]  # [G,b]
                xp = _pack_hwc(src[bidx.t()])  # [b,G,H,W,3] -> [b,G*3,H,W]
                yield model._logits(model._features_packed(xp)), y[bidx]

        return batches

    # Validation images are the same for all models: preprocess once per run.
    val = (_gather_single(src, va), y[va]) if va.numel() else None
    return _train_groups(seeds, group_size, epochs=epochs, lr=lr, n_tr=n_tr, device=dev, val=val,
                         val_bs=max(batch_size, 256), epoch_batches=epoch_batches, on_group_done=on_group_done)


@torch.no_grad()
def _eval_shared(model: BatchedCNN, x: Tensor, y: Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of every model in ``model`` on the same images -> two [G] arrays."""
    g, n = model.n_models, x.shape[0]
    loss = torch.zeros(g, device=x.device)
    correct = torch.zeros(g, device=x.device, dtype=torch.long)
    for s0 in range(0, n, batch_size):
        logits = model.forward_shared(x[s0 : s0 + batch_size])  # [G,b,2]
        yb = y[s0 : s0 + batch_size]
        b = yb.shape[0]
        ce = F.cross_entropy(logits.reshape(g * b, 2), yb.repeat(g), reduction="none").view(g, b)
        loss += ce.sum(1)
        correct += (logits.argmax(2) == yb).sum(1)
    return (loss / n).cpu().numpy(), (correct.double() / n).cpu().numpy()


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass one int seed per model to train.")
    for i, s in enumerate(seeds):
        _check_seed(s, f"seeds[{i}]")
    return [int(s) for s in seeds]


def train_shared(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    train_idx: np.ndarray | Tensor | Sequence[int],
    val_idx: np.ndarray | Tensor | Sequence[int],
    seeds: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    group_size: int,
    device: str | torch.device = "cpu",
    on_group_done: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Tensor], History]:
    """Train ``len(seeds)`` SmallCNNs in the ``shared`` data order, ``group_size`` at a time.

    Every model walks ``train_idx`` in the order of ``seeds[0]`` (a fresh generator per group, so every group sees
    the same order whatever ``group_size`` is); model k starts from ``init_weights(seeds[k])``. Model k equals
    ``train_single(..., seeds[k], data_seed=seeds[0])`` up to float rounding. A group reads one image batch
    (channels_last): conv1 of all its models is one dense 3 -> 6G convolution, conv2 a grouped one, fc a bmm.
    Returns what :func:`train_batched` returns.
    """
    seeds = _check_group_args(seeds, group_size, on_group_done)
    src, y, tr, va, dev = _prepare_data(
        images, labels, train_idx, val_idx, epochs=epochs, batch_size=batch_size, lr=lr, device=device
    )
    n_tr = tr.shape[0]

    def epoch_batches(gseeds: list[int]) -> EpochBatches:
        gen = torch.Generator().manual_seed(seeds[0] + DATA_SEED_OFFSET)  # one order for every model

        def batches(model: BatchedCNN, ep: int):
            order = tr[torch.randperm(n_tr, generator=gen).to(dev)]
            for s0 in range(0, n_tr, batch_size):
                bidx = order[s0 : s0 + batch_size]
                x = src[bidx]  # [b,H,W,3]: NHWC memory, so the NCHW view below is already channels_last
                if x.dtype == torch.uint8:
                    x = _scale_uint8(x)
                yield model.forward_shared(x.permute(0, 3, 1, 2)), y[bidx].expand(len(gseeds), -1)

        return batches

    val = ((_gather_single(src, va).contiguous(memory_format=torch.channels_last), y[va])
           if va.numel() else None)
    return _train_groups(seeds, group_size, epochs=epochs, lr=lr, n_tr=n_tr, device=dev, val=val,
                         val_bs=max(batch_size, 256), epoch_batches=epoch_batches, on_group_done=on_group_done)


def parse_path(path: str) -> tuple[str, int]:
    """``"single"`` -> ("single", 1); ``"batched_g8"`` -> ("batched", 8); ``"shared_g8"`` -> ("shared", 8)."""
    if path == "single":
        return "single", 1
    kind, sep, g = str(path).partition("_g")
    if kind in ("batched", "shared") and sep and g.isdigit() and int(g) >= 1:
        return kind, int(g)
    raise ValueError(f"path: must be 'single', 'batched_g<G>' or 'shared_g<G>' (G >= 1, e.g. batched_g8); got {path!r}.")


def path_data_orders(path: str) -> tuple[str, ...]:
    """The data orders a path can train: single both, batched_g* ``own``, shared_g* ``shared``."""
    kind, _ = parse_path(path)
    return DATA_ORDERS if kind == "single" else ("own",) if kind == "batched" else ("shared",)


def train_models(
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    train_idx: np.ndarray | Tensor | Sequence[int],
    val_idx: np.ndarray | Tensor | Sequence[int],
    seeds: Sequence[int],
    *,
    path: str,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str | torch.device = "cpu",
    data_order: str | None = None,
    on_group_done: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Tensor], History]:
    """Train ``len(seeds)`` SmallCNNs by ``path`` (module docstring); the result depends on ``data_order``, not on
    the path, beyond float rounding.

    ``data_order``: ``own`` or ``shared``; default: the path's own (``own`` for single and batched_g*, ``shared``
    for shared_g*). A path that cannot train the given order is refused. Returns (stacked CPU weights
    [n_models,...], history of [n_models, epochs] arrays), as :func:`train_batched`.
    """
    kind, g = parse_path(path)
    orders = path_data_orders(path)
    data_order = orders[0] if data_order is None else data_order
    if data_order not in DATA_ORDERS:
        raise ValueError(f"data_order must be one of {DATA_ORDERS}; got {data_order!r}.")
    if data_order not in orders:
        other = "single or shared_g<G>" if data_order == "shared" else "single or batched_g<G>"
        raise ValueError(f"path {path!r} cannot train data_order {data_order!r}; use {other}.")
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, device=device)
    if kind == "batched":
        return train_batched(images, labels, train_idx, val_idx, seeds, group_size=g, on_group_done=on_group_done,
                             **kw)
    if kind == "shared":
        return train_shared(images, labels, train_idx, val_idx, seeds, group_size=g, on_group_done=on_group_done,
                            **kw)
    seeds = _check_seeds(seeds)
    if on_group_done is not None and not callable(on_group_done):
        raise ValueError("on_group_done must be callable(first_index, n_in_group) or None.")
    weights, hists = [], []
    for i, s in enumerate(seeds):
        w, h = train_single(images, labels, train_idx, val_idx, s, channels_last=True,
                            data_seed=seeds[0] if data_order == "shared" else s, **kw)
        weights.append(w)
        hists.append(h)
        if on_group_done is not None:
            on_group_done(i, 1)
    return stack(weights), {k: np.stack([h[k] for h in hists]) for k in hists[0]}
