"""The kernel CycleGAN's networks, two families built by small factories (:func:`make_generator`,
:func:`make_discriminator`).

A sample is ONE model's weight for one conv layer, ``[C, D, 5, 5]``; the networks treat C as 3-D convolution
channels and ``D x 5 x 5`` as the volume, so data tensors are ``[N, C, D, 5, 5]``.

* ``volume`` (the study's): Conv3d over the ``D x 5 x 5`` volume with 3x3x3 kernels, so the D axis is treated as
  an ordered spatial axis; the generator ends in Tanh.
* ``set``: the D axis is an unordered set of slices. Every layer is a Conv3d with kernel ``1 x 3 x 3`` (the same
  weights for every slice d) plus the mean over D as context (a DeepSets layer), so permuting the D slices of the
  input permutes the output the same way. The generator is residual, ``x + f(x)``, with ``f``'s last layer
  initialised to zero: it starts as the identity. :mod:`zoofusion.core.pair` uses it to translate a model's conv1
  and conv2 together.

Discriminators are PatchGANs whose scores go through a sigmoid (the study's) or stay raw (the reference
CycleGAN's least squares).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ARCHS = ("volume", "set")
DISC_OUTPUTS = ("sigmoid", "raw")


class Generator(nn.Module):
    """Conv3d(C,h,k3) -> ReLU -> Conv3d(h,C,k3) -> Tanh; maps unit-scaled kernels to (-1, 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        check_positive_int(channels=channels, hidden=hidden)
        self.channels = channels
        self.hidden = hidden
        self.net = nn.Sequential(
            nn.Conv3d(channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv3d(hidden, channels, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, D, H, W]`` -> same shape, values in (-1, 1)."""
        return self.net(x)


class Discriminator(nn.Module):
    """PatchGAN: Conv3d(C,h,k3) -> LeakyReLU(0.2) -> Conv3d(h,1,k3) [-> Sigmoid]; one score per voxel.

    ``output="sigmoid"`` (the study's) squashes scores into (0, 1); ``"raw"`` leaves them unbounded, as the
    reference CycleGAN's least-squares loss expects (a sigmoid there flattens the gradient of confident
    mistakes).
    """

    def __init__(self, channels: int, hidden: int, output: str) -> None:
        super().__init__()
        check_positive_int(channels=channels, hidden=hidden)
        check_choice("disc_output", output, DISC_OUTPUTS)
        self.channels = channels
        self.hidden = hidden
        self.output = output
        layers = self._layers(channels, hidden)
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _layers(channels: int, hidden: int) -> list[nn.Module]:
        return [nn.Conv3d(channels, hidden, kernel_size=3, padding=1), nn.LeakyReLU(0.2),
                nn.Conv3d(hidden, 1, kernel_size=3, padding=1)]

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, D, H, W]`` -> patch map ``[N, 1, D, H, W]`` (in (0, 1) for ``output="sigmoid"``)."""
        return self.net(x)


class _SetLayer(nn.Module):
    """Conv3d with kernel 1x3x3 over ``[x, mean_D(x)]``: the same map for every D slice, plus set context."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2 * c_in, c_out, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        ctx = x.mean(dim=2, keepdim=True).expand_as(x)
        return self.conv(torch.cat([x, ctx], dim=1))


class SetGenerator(nn.Module):
    """Residual generator over a set of D slices: ``x + f(x)``, f = SetLayer(C,h) -> ReLU -> SetLayer(h,h) ->
    ReLU -> Conv3d(h,C,1x3x3), the last layer zero-initialised (the identity at step 0).

    Permuting the input's D slices permutes the output's the same way (every layer treats slices alike and
    the context is a mean over them); the C channels keep their order.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        check_positive_int(channels=channels, hidden=hidden)
        self.channels = channels
        self.hidden = hidden
        self.body = nn.Sequential(_SetLayer(channels, hidden), nn.ReLU(), _SetLayer(hidden, hidden), nn.ReLU())
        self.out = nn.Conv3d(hidden, channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C, D, H, W]`` -> same shape."""
        return x + self.out(self.body(x))


class SetDiscriminator(Discriminator):
    """PatchGAN over a set of D slices: SetLayer(C,h) -> LeakyReLU(0.2) -> SetLayer(h,1) [-> Sigmoid]."""

    @staticmethod
    def _layers(channels: int, hidden: int) -> list[nn.Module]:
        return [_SetLayer(channels, hidden), nn.LeakyReLU(0.2), _SetLayer(hidden, 1)]


def make_generator(arch: str, channels: int, hidden: int) -> nn.Module:
    """The generator of a network family (``ARCHS``)."""
    check_choice("arch", arch, ARCHS)
    return Generator(channels, hidden) if arch == "volume" else SetGenerator(channels, hidden)


def make_discriminator(arch: str, channels: int, hidden: int, output: str) -> nn.Module:
    """The discriminator of a network family (``ARCHS``) with sigmoid or raw scores (``DISC_OUTPUTS``)."""
    check_choice("arch", arch, ARCHS)
    cls = Discriminator if arch == "volume" else SetDiscriminator
    return cls(channels, hidden, output)


def check_positive_int(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: must be a positive int, got {v!r}")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")
