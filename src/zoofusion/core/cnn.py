"""The zoo CNN: one model, many models as one grouped network, and features of many models at once.

Architecture (per model): conv1 3->6 k5, ReLU, maxpool 2; conv2 6->16 k5, ReLU, maxpool 2; flatten (C,H,W) 400;
fc 400->2.  ReLU and 2x2 max-pooling commute exactly (ReLU is monotone, both are exact in floating point), so every
path here pools first and applies ReLU to the 4x smaller tensor; outputs and gradients are those of conv-ReLU-pool.

Training lives in :mod:`zoofusion.core.train`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DATA_SEED_OFFSET",
    "IMAGE_SHAPE_CHW",
    "PARAM_SHAPES",
    "CONV_KEYS",
    "HEAD_KEYS",
    "N_FEATURES",
    "preprocess",
    "SmallCNN",
    "ConvFeatures",
    "BatchedCNN",
    "init_weights",
    "stack",
    "unstack",
    "batched_features",
]

DATA_SEED_OFFSET = 1_000_003
IMAGE_SHAPE_CHW = (3, 32, 32)
N_FEATURES = 400
N_CLASSES = 2
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (6, 3, 5, 5),
    "conv1.bias": (6,),
    "conv2.weight": (16, 6, 5, 5),
    "conv2.bias": (16,),
    "fc.weight": (2, 400),
    "fc.bias": (2,),
}
CONV_LAYERS = ("conv1", "conv2")  # the layers whose kernels are harvested, translated and generated
CONV_KEYS = tuple(f"{layer}.{p}" for layer in CONV_LAYERS for p in ("weight", "bias"))
HEAD_KEYS = ("fc.weight", "fc.bias")  # the softmax head: harvested beside the kernels, never translated

History = dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def _scale_uint8(x: Tensor) -> Tensor:
    """uint8 -> float32 in [-1, 1]; the single place the scaling formula lives, so all paths are bit-identical."""
    return x.to(torch.float32).div_(255.0).sub_(0.5).div_(0.5)


def preprocess(images: np.ndarray | Tensor) -> Tensor:
    """uint8 [N,32,32,3] (HWC) -> float32 [N,3,32,32] scaled to [-1, 1] as (x/255 - 0.5)/0.5."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (32, 32, 3):
        raise ValueError(
            f"preprocess expects uint8 images of shape [N,32,32,3] (HWC); got dtype {x.dtype} shape "
            f"{tuple(x.shape)}. Pass the raw uint8 HWC array (e.g. as loaded from CIFAR/COCO crops)."
        )
    return _scale_uint8(x).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Single models
# ----------------------------------------------------------------------------------------------------------------


def _conv_stack(
    x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, groups1: int = 1, groups2: int = 1
) -> Tensor:
    """conv-ReLU-pool twice (pool first: identical result, cheaper ReLU)."""
    y = F.relu(F.max_pool2d(F.conv2d(x, w1, b1, groups=groups1), 2))
    return F.relu(F.max_pool2d(F.conv2d(y, w2, b2, groups=groups2), 2))


class SmallCNN(nn.Module):
    """One zoo CNN: input [B,3,32,32] float in [-1,1] -> logits [B,2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(N_FEATURES, N_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """Conv part: [B,3,32,32] -> [B,400], flattened in (C,H,W) order."""
        y = _conv_stack(x, self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias)
        return torch.flatten(y, 1)

    def forward(self, x: Tensor) -> Tensor:
        """[B,3,32,32] -> logits [B,2]."""
        return self.fc(self.features(x))


class ConvFeatures(nn.Module):
    """Conv-only feature extractor (a generated model has no fc): [B,3,32,32] -> [B,400]."""

    def __init__(self, conv1_w: Tensor, conv1_b: Tensor, conv2_w: Tensor, conv2_b: Tensor) -> None:
        super().__init__()
        given = {"conv1.weight": conv1_w, "conv1.bias": conv1_b, "conv2.weight": conv2_w, "conv2.bias": conv2_b}
        for key, t in given.items():
            if tuple(t.shape) != PARAM_SHAPES[key]:
                raise ValueError(
                    f"ConvFeatures: {key} must have shape {PARAM_SHAPES[key]}, got {tuple(t.shape)}; pass one "
                    f"model's tensors (index a stacked zoo dict with [i])."
                )
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        with torch.no_grad():
            self.conv1.weight.copy_(conv1_w)
            self.conv1.bias.copy_(conv1_b)
            self.conv2.weight.copy_(conv2_w)
            self.conv2.bias.copy_(conv2_b)

    def forward(self, x: Tensor) -> Tensor:
        """[B,3,32,32] -> [B,400] in (C,H,W) order."""
        y = _conv_stack(x, self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias)
        return torch.flatten(y, 1)


def init_weights(seed: int) -> dict[str, Tensor]:
    """PyTorch-default init of one SmallCNN, deterministic in ``seed``; the global RNG state is left untouched."""
    _check_seed(seed, "seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stack(weights: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """List of per-model weight dicts -> dict of tensors with a leading model dim N."""
    if len(weights) == 0:
        raise ValueError("stack: got an empty list of weight dicts; pass at least one model's state dict.")
    keys = set(weights[0])
    for i, w in enumerate(weights):
        if set(w) != keys:
            raise ValueError(f"stack: model {i} has keys {sorted(w)} but model 0 has {sorted(keys)}; all must match.")
    return {k: torch.stack([w[k] for w in weights]) for k in weights[0]}


def unstack(stacked: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Dict of stacked tensors [N,...] -> list of N per-model dicts (views, not copies)."""
    if len(stacked) == 0:
        raise ValueError("unstack: got an empty dict; pass a stacked zoo weight dict.")
    sizes = {k: int(v.shape[0]) for k, v in stacked.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"unstack: leading dims differ across keys {sizes}; every tensor needs the same N.")
    n = next(iter(sizes.values()))
    return [{k: v[i] for k, v in stacked.items()} for i in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Many models as one computation
# ----------------------------------------------------------------------------------------------------------------


class _Stacked(nn.Module):
    """Holds one layer's stacked ``weight``/``bias`` so state_dict keys read ``conv1.weight`` etc."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())


def _check_stacked(stacked: dict[str, Tensor], keys: Sequence[str], where: str) -> int:
    missing = [k for k in keys if k not in stacked]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; expected a stacked zoo dict with keys {list(keys)}.")
    n = int(stacked[keys[0]].shape[0]) if stacked[keys[0]].ndim > 0 else 0
    for k in keys:
        want = (n, *PARAM_SHAPES[k])
        if tuple(stacked[k].shape) != want:
            raise ValueError(
                f"{where}: {k} has shape {tuple(stacked[k].shape)}, expected {want} (leading model dim first, "
                f"same N for every key)."
            )
    if n < 1:
        raise ValueError(f"{where}: stacked weights hold zero models; pass at least one.")
    return n


class BatchedCNN(nn.Module):
    """G SmallCNNs run as one grouped computation; parameters are stacked with a leading G dim.

    ``state_dict()`` has the same keys as a SmallCNN (``conv1.weight`` [G,6,3,5,5], ...), i.e. a stacked zoo dict.
    """

    def __init__(self, stacked_weights: dict[str, Tensor]) -> None:
        super().__init__()
        self.n_models = _check_stacked(stacked_weights, tuple(PARAM_SHAPES), "BatchedCNN")
        s = stacked_weights
        self.conv1 = _Stacked(s["conv1.weight"], s["conv1.bias"])
        self.conv2 = _Stacked(s["conv2.weight"], s["conv2.bias"])
        self.fc = _Stacked(s["fc.weight"], s["fc.bias"])

    # Packed input: [B, G*3, 32, 32] with model-major channels, channels_last memory.
    def _features_packed(self, xp: Tensor) -> Tensor:
        g = self.n_models
        y = _conv_stack(
            xp,
            self.conv1.weight.reshape(g * 6, 3, 5, 5),
            self.conv1.bias.reshape(g * 6),
            self.conv2.weight.reshape(g * 16, 6, 5, 5),
            self.conv2.bias.reshape(g * 16),
            groups1=g,
            groups2=g,
        )
        return _unpack_features(y, g)

    def _logits(self, feats: Tensor) -> Tensor:
        # [G,B,400] @ [G,400,2] + [G,1,2]
        return torch.baddbmm(self.fc.bias.unsqueeze(1), feats, self.fc.weight.transpose(1, 2))

    def features(self, x: Tensor) -> Tensor:
        """Per-model images [G,B,3,32,32] -> features [G,B,400] (C,H,W order, as SmallCNN.features)."""
        return self._features_packed(_pack(x, self.n_models))

    def forward(self, x: Tensor) -> Tensor:
        """Per-model images [G,B,3,32,32] -> logits [G,B,2]."""
        return self._logits(self.features(x))

    def features_shared(self, x: Tensor) -> Tensor:
        """The same images for every model, [B,3,32,32] -> [G,B,400]."""
        w = {
            "conv1.weight": self.conv1.weight,
            "conv1.bias": self.conv1.bias,
            "conv2.weight": self.conv2.weight,
            "conv2.bias": self.conv2.bias,
        }
        return _shared_conv_features(w, x, self.n_models)

    def forward_shared(self, x: Tensor) -> Tensor:
        """The same images for every model, [B,3,32,32] -> logits [G,B,2]."""
        return self._logits(self.features_shared(x))


def _pack(x: Tensor, g: int) -> Tensor:
    """[G,B,3,H,W] -> [B,G*3,H,W] channels_last (one copy)."""
    if x.ndim != 5 or x.shape[0] != g or tuple(x.shape[2:]) != IMAGE_SHAPE_CHW:
        raise ValueError(
            f"BatchedCNN expects per-model images [G={g},B,3,32,32]; got {tuple(x.shape)}. For one image batch "
            f"shared by all models use forward_shared/features_shared with [B,3,32,32]."
        )
    b = x.shape[1]
    hwc = x.permute(1, 3, 4, 0, 2).contiguous()  # [B,H,W,G,3]: NHWC with C = G*3
    return hwc.view(b, 32, 32, g * 3).permute(0, 3, 1, 2)


def _pack_hwc(x_bghwc: Tensor) -> Tensor:
    """Gathered [B,G,H,W,3] (uint8 or float) -> packed float [B,G*3,H,W] channels_last."""
    b, g = x_bghwc.shape[:2]
    hwc = x_bghwc.permute(0, 2, 3, 1, 4).contiguous()
    if hwc.dtype == torch.uint8:
        hwc = _scale_uint8(hwc)
    return hwc.view(b, 32, 32, g * 3).permute(0, 3, 1, 2)


def _unpack_features(y: Tensor, g: int) -> Tensor:
    """Pooled conv2 output [B,G*16,5,5] -> [G,B,400] flattened per model in (C,H,W) order."""
    b = y.shape[0]
    return y.reshape(b, g, 16, 5, 5).permute(1, 0, 2, 3, 4).reshape(g, b, N_FEATURES)


def _shared_conv_features(w: dict[str, Tensor], x: Tensor, g: int) -> Tensor:
    """G conv stacks on the same images: conv1 of all models is one ordinary conv with G*6 outputs."""
    if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE_CHW:
        raise ValueError(f"expected shared images [B,3,32,32]; got {tuple(x.shape)}. Use preprocess() on uint8 HWC.")
    xc = x.contiguous(memory_format=torch.channels_last)
    y = _conv_stack(
        xc,
        w["conv1.weight"].reshape(g * 6, 3, 5, 5),
        w["conv1.bias"].reshape(g * 6),
        w["conv2.weight"].reshape(g * 16, 6, 5, 5),
        w["conv2.bias"].reshape(g * 16),
        groups1=1,
        groups2=g,
    )
    return _unpack_features(y, g)


@torch.no_grad()
def batched_features(
    conv_weights: dict[str, Tensor], images: Tensor, group_size: int = 16, batch_size: int = 256
) -> Tensor:
    """Features of M conv-only models on the same images: -> [M,N,400] float32 on images' device (no grad).

    ``conv_weights`` holds stacked ``conv1.weight`` [M,6,3,5,5], ``conv1.bias``, ``conv2.weight``, ``conv2.bias``
    (extra keys such as ``fc.*`` are ignored); ``images`` is preprocessed float [N,3,32,32]. The output holds
    M*N*400 floats; chunk M on the caller's side if that is too large.
    """
    m = _check_stacked(conv_weights, CONV_KEYS, "batched_features")
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ValueError("batched_features: images must be a float Tensor [N,3,32,32]; run preprocess() first.")
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE_CHW:
        raise ValueError(f"batched_features: images must be [N,3,32,32]; got {tuple(images.shape)}.")
    _check_pos_int(group_size, "group_size")
    _check_pos_int(batch_size, "batch_size")
    n = images.shape[0]
    device = images.device
    out = torch.empty((m, n, N_FEATURES), dtype=torch.float32, device=device)
    x_all = images.to(torch.float32)
    for g0 in range(0, m, group_size):
        g1 = min(m, g0 + group_size)
        w = {k: conv_weights[k][g0:g1].to(device=device, dtype=torch.float32) for k in CONV_KEYS}
        for i0 in range(0, n, batch_size):
            i1 = min(n, i0 + batch_size)
            out[g0:g1, i0:i1] = _shared_conv_features(w, x_all[i0:i1], g1 - g0)
    return out




def _check_pos_int(v: object, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise ValueError(f"{name} must be an int >= 1; got {v!r}.")


def _check_seed(seed: object, name: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**62:
        raise ValueError(f"{name} must be an int in [0, 2**62); got {seed!r}.")
