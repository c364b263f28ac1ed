"""Translating a model's two conv layers together, so the generated conv2 reads the generated conv1's channels.

Why: conv2's weight ``[16, 6, 5, 5]`` has one input slice per conv1 output channel. Two independent per-layer
CycleGANs (the study's) translate conv1 and conv2 without knowing of each other, so nothing ties the translated
conv2's input slice d to the translated conv1's channel d; and their Conv3d generators treat the 6 channels as
an ordered axis, so they learn to translate between arbitrary channel orders.

Design: one CycleGAN for the pair. A model's (conv1, conv2) becomes one volume ``[19, 6, 5, 5]``
(:func:`pack`): the 16 conv2 output channels and conv1's 3 input (RGB) channels are the Conv3d channels, and the
D axis of length 6 is the shared index of conv1's output channels and conv2's input channels. Position d holds
conv2's input slice d ``[16, 5, 5]`` and conv1's channel d ``[3, 5, 5]`` side by side, so the generator reads
and writes each conv1 channel together with the conv2 slice that consumes it, and the discriminator judges
whether the pair is a plausible model of its zoo, the coupling included.

The networks are the ``set`` family of :mod:`zoofusion.core.cyclegan`: along D they apply the same 1x3x3 maps to
every slice plus a mean over D as context, so they are equivariant to permutations of conv1's channels:
translating a model whose conv1 channels (and conv2 input slices) were permuted gives the same permutation of
the translation, exactly (up to float summation order). The generated model's conv2 input order therefore
follows its conv1 output order by construction, whatever order the source had. conv2's 16 output channels stay
ordered Conv3d channels; the pipeline puts them in one canonical order first by weight matching every zoo model
to one reference model (:mod:`zoofusion.core.align`). The generator is residual and starts as the identity, so
a translation begins at its source and moves only as far as the adversarial loss pulls it.

Scales: each layer is divided by its own ``max |w|`` over both zoos (:func:`fit_scales`) before packing, so both
layers span the same range; the CycleGAN's one-scalar :class:`~zoofusion.core.cyclegan.KernelScaler` then adds
its headroom. Biases are not translated, as in the per-layer translation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from zoofusion.core.cyclegan import KernelScaler, translate

C1, RGB, C2 = 6, 3, 16  # conv1 output channels, conv1 input channels, conv2 output channels
PAIR_CHANNELS = C2 + RGB


def _check(conv1: Tensor, conv2: Tensor) -> None:
    if conv1.ndim != 5 or tuple(conv1.shape[1:]) != (C1, RGB, 5, 5):
        raise ValueError(f"conv1 must be [N, {C1}, {RGB}, 5, 5], got {tuple(conv1.shape)}")
    if conv2.ndim != 5 or tuple(conv2.shape[1:]) != (C2, C1, 5, 5):
        raise ValueError(f"conv2 must be [N, {C2}, {C1}, 5, 5], got {tuple(conv2.shape)}")
    if conv1.shape[0] != conv2.shape[0]:
        raise ValueError(f"conv1 and conv2 hold {conv1.shape[0]} and {conv2.shape[0]} models; one pair per model")


def fit_scales(*pairs: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """(max |conv1|, max |conv2|) over all given (conv1, conv2) sets, e.g. both zoos."""
    s1 = max(float(c1.abs().max()) for c1, _ in pairs)
    s2 = max(float(c2.abs().max()) for _, c2 in pairs)
    for name, s in (("conv1", s1), ("conv2", s2)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name}: max |w| is {s!r}; kernels must be finite and not all zero")
    return s1, s2


def pack(conv1: Tensor, conv2: Tensor, scales: tuple[float, float]) -> Tensor:
    """``conv1 [N,6,3,5,5]``, ``conv2 [N,16,6,5,5]`` -> ``[N,19,6,5,5]``: channels 0..15 are conv2 / s2, channels
    16..18 are conv1 transposed to ``[N,3,6,5,5]`` / s1; position d on axis 2 is conv1 channel d = conv2 input d."""
    _check(conv1, conv2)
    s1, s2 = scales
    return torch.cat([conv2 / s2, conv1.transpose(1, 2) / s1], dim=1)


def unpack(x: Tensor, scales: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack`: ``[N,19,6,5,5]`` -> (conv1 ``[N,6,3,5,5]``, conv2 ``[N,16,6,5,5]``)."""
    if x.ndim != 5 or tuple(x.shape[1:]) != (PAIR_CHANNELS, C1, 5, 5):
        raise ValueError(f"a packed pair must be [N, {PAIR_CHANNELS}, {C1}, 5, 5], got {tuple(x.shape)}")
    s1, s2 = scales
    return (x[:, C2:] * s1).transpose(1, 2).contiguous(), (x[:, :C2] * s2).contiguous()


def translate_pair(generator: nn.Module, scaler: KernelScaler, scales: tuple[float, float], conv1: Tensor,
                   conv2: Tensor, *, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Translate models' (conv1, conv2) together with a pair generator; returns (conv1', conv2') in weight units."""
    out = translate(generator, scaler, pack(conv1, conv2, scales), batch_size=batch_size)
    return unpack(out, scales)
