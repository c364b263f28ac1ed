"""The kernel CycleGAN's loss terms, and the reference CycleGAN's (Zhu et al. 2017) training details that are
options here: the linear learning-rate decay (:func:`lr_factor`) and the image pool (:class:`ImagePool`).

With the study's values (no decay, pool size 0) neither draws a random number or touches the optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from zoofusion.core.cyclegan.nets import check_positive_int


def adversarial_loss(pred: Tensor, is_real: bool) -> Tensor:
    """LSGAN loss: ``mean((pred - t)^2)`` with ``t = 1`` if ``is_real`` else ``0``."""
    target = torch.ones_like(pred) if is_real else torch.zeros_like(pred)
    return torch.mean((pred - target) ** 2)


def cycle_loss(x: Tensor, x_rec: Tensor) -> Tensor:
    """Cycle-consistency loss: mean absolute error between ``x`` and ``F(G(x))``."""
    return torch.mean(torch.abs(x - x_rec))


def identity_loss(x: Tensor, x_id: Tensor) -> Tensor:
    """Identity loss: mean absolute error between ``x`` and the other-way generator's ``G(x)``."""
    return torch.mean(torch.abs(x - x_id))


def lr_factor(epoch: int, epochs: int, decay: bool) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based) of ``epochs``.

    Without decay, 1. With decay (the reference CycleGAN's ``linear`` policy): 1 for the first
    ``h = epochs // 2`` epochs, then ``(epochs - epoch + 1) / (epochs - h + 1)``, falling by the same step
    every epoch and reaching 0 one epoch after the last (e.g. 4 epochs: 1, 1, 2/3, 1/3). With decay the
    factor of every epoch depends on ``epochs``, so runs of different lengths differ from the start.
    """
    check_positive_int(epoch=epoch, epochs=epochs)
    if not decay:
        return 1.0
    h = epochs // 2
    return 1.0 if epoch <= h else (epochs - epoch + 1) / (epochs - h + 1)


class ImagePool:
    """The reference CycleGAN's history of generated samples (Shrivastava et al. 2017).

    :meth:`query` takes a batch of generated samples and returns a batch of the same size for the
    discriminator. Until ``size`` samples are stored, each sample is stored and returned as is. Once the pool
    is full, each sample is, with probability 0.5, swapped for a stored one chosen uniformly (the stored one is
    returned and the new one takes its place), else returned as is. ``size=0`` returns the batch untouched and
    draws no random number. Seeded by its own generator, so runs are reproducible and resumable.
    """

    def __init__(self, size: int, seed: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"pool_size: must be an int >= 0, got {size!r}")
        self.size = size
        self.gen = torch.Generator().manual_seed(seed)
        self.items: list[Tensor] = []

    def query(self, batch: Tensor) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        for x in batch.detach():
            if len(self.items) < self.size:
                self.items.append(x.clone())
                out.append(x)
            elif float(torch.rand((), generator=self.gen)) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.gen))
                out.append(self.items[i])
                self.items[i] = x.clone()
            else:
                out.append(x)
        return torch.stack(out)

    def state(self) -> dict[str, Any]:
        """A copy of the stored samples (on the CPU) and the generator's state."""
        items = torch.stack(self.items).cpu() if self.items else torch.zeros(0)
        return {"gen": self.gen.get_state(), "items": items}

    def load(self, state: Mapping[str, Any], device: torch.device | str) -> None:
        self.gen.set_state(state["gen"])
        self.items = [t.to(device).clone() for t in state["items"]] if state["items"].numel() else []
