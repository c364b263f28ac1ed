"""Per-layer kernel CycleGAN: translate one model's conv-layer weights between two zoos.

A sample is ONE model's weight for one conv layer, ``[C, D, 5, 5]`` (C output channels, each a
``D x 5 x 5`` volume). The networks treat C as 3-D convolution channels and ``D x 5 x 5`` as the
volume, so data tensors are ``[N, C, D, 5, 5]``. Domains A and B are unpaired (``Na != Nb``).

Two network families, picked by ``CycleGANConfig.arch`` (small factories, :func:`make_generator` and
:func:`make_discriminator`):

* ``volume`` (the study's): Conv3d over the ``D x 5 x 5`` volume with 3x3x3 kernels, so the D axis is
  treated as an ordered spatial axis; the generator ends in Tanh.
* ``set``: the D axis is an unordered set of slices. Every layer is a Conv3d with kernel ``1 x 3 x 3``
  (the same weights for every slice d) plus the mean over D as context (a DeepSets layer), so permuting
  the D slices of the input permutes the output the same way. The generator is residual, ``x + f(x)``,
  with ``f``'s last layer initialised to zero: it starts as the identity. :mod:`zoofusion.core.pair`
  uses it to translate a model's conv1 and conv2 together.

Training details of the reference CycleGAN (Zhu et al. 2017) are options, off in the study's setting:
``lr_decay`` (constant learning rate for the first half of the epochs, then linearly to zero, see
:func:`lr_factor`), ``disc_output`` (``sigmoid`` as in the study, or ``raw`` scores for the least-squares
loss as in the reference) and ``pool_size`` (an :class:`ImagePool` of earlier generated samples shown
to the discriminators; the reference uses 50). With the study's values the training trajectory is the
study's, bit for bit: no option draws a random number or touches the optimiser when it is off.

This module is the pure training core: no MLflow, no params files. The pipeline stage calls
:func:`train_cyclegan` with an ``on_epoch`` hook for logging and figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

KERNEL_SIZE = 5
CHECKPOINT_FORMAT = 1
GENERATORS_FORMAT = 1
LOSS_NAMES = ("loss_G", "loss_D_A", "loss_D_B", "loss_cycle", "loss_identity", "loss_adv")
ARCHS = ("volume", "set")
DISC_OUTPUTS = ("sigmoid", "raw")
# Fields of CycleGANConfig that do not change the training trajectory, so a checkpoint written
# under different values can still be resumed (e.g. raise ``epochs`` to train further).
_NON_TRAJECTORY_FIELDS = frozenset({"epochs", "checkpoint_every", "max_loss"})


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf or exceeded ``CycleGANConfig.max_loss``."""

    def __init__(self, epoch: int, step: int, loss_name: str, value: float, lr: float) -> None:
        self.epoch = epoch
        self.step = step
        self.loss_name = loss_name
        self.value = value
        super().__init__(
            f"CycleGAN training diverged at epoch {epoch} (step {step}): {loss_name}={value!r} "
            f"is not finite or exceeds max_loss. Try a lower learning rate than lr={lr:g} "
            "(e.g. halve it), and check the input kernels."
        )


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """Conv3d(C,h,k3) -> ReLU -> Conv3d(h,C,k3) -> Tanh; maps unit-scaled kernels to (-1, 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        _check_positive_int(channels=channels, hidden=hidden)
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

    def __init__(self, channels: int, hidden: int, output: str = "sigmoid") -> None:
        super().__init__()
        _check_positive_int(channels=channels, hidden=hidden)
        _check_choice("disc_output", output, DISC_OUTPUTS)
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
        _check_positive_int(channels=channels, hidden=hidden)
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
    _check_choice("arch", arch, ARCHS)
    return Generator(channels, hidden) if arch == "volume" else SetGenerator(channels, hidden)


def make_discriminator(arch: str, channels: int, hidden: int, output: str = "sigmoid") -> nn.Module:
    """The discriminator of a network family (``ARCHS``) with sigmoid or raw scores (``DISC_OUTPUTS``)."""
    _check_choice("arch", arch, ARCHS)
    cls = Discriminator if arch == "volume" else SetDiscriminator
    return cls(channels, hidden, output)


def _check_positive_int(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: must be a positive int, got {v!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Training details of the reference CycleGAN: learning-rate schedule, image pool
# --------------------------------------------------------------------------------------------


def lr_factor(epoch: int, epochs: int, decay: bool) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based) of ``epochs``.

    Without decay, 1. With decay (the reference CycleGAN's ``linear`` policy): 1 for the first
    ``h = epochs // 2`` epochs, then ``(epochs - epoch + 1) / (epochs - h + 1)``, falling by the same step
    every epoch and reaching 0 one epoch after the last (e.g. 4 epochs: 1, 1, 2/3, 1/3).
    """
    _check_positive_int(epoch=epoch, epochs=epochs)
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
        items = torch.stack(self.items).cpu() if self.items else torch.zeros(0)
        return {"gen": self.gen.get_state(), "items": items}

    def load(self, state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        self.gen.set_state(state["gen"])
        self.items = [t.to(device) for t in state["items"]] if state["items"].numel() else []


# --------------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelScaler:
    """Linear map ``u = w / scale`` from kernel units into Tanh's range, one scalar per layer.

    ``scale = max|w| / headroom`` over the training kernels of BOTH domains (one shared scale, so
    the two domains' relative magnitudes survive the translation). Using the maximum rather than a
    quantile guarantees every training weight lands in ``[-headroom, headroom]`` inside (-1, 1):
    a quantile would leave outliers outside Tanh's range, which the generator can never produce.
    ``headroom < 1`` keeps the extreme weights reachable without saturating Tanh
    (atanh(0.9) ~ 1.47). The map is linear with ``scale > 0``, hence exactly invertible.
    """

    scale: float
    headroom: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"KernelScaler.scale must be finite and > 0, got {self.scale!r}")
        if not (0 < self.headroom <= 1):
            raise ValueError(f"KernelScaler.headroom must be in (0, 1], got {self.headroom!r}")

    @classmethod
    def fit(cls, *kernel_sets: Tensor, headroom: float = 0.9) -> KernelScaler:
        """Fit on one or more kernel tensors (any shape); raises if all weights are zero."""
        if not kernel_sets:
            raise ValueError("KernelScaler.fit needs at least one kernel tensor")
        max_abs = max(float(k.detach().abs().max()) if k.numel() else 0.0 for k in kernel_sets)
        if not (math.isfinite(max_abs) and max_abs > 0):
            raise ValueError(
                f"cannot fit KernelScaler: max |w| is {max_abs!r}; kernels must be finite and not all zero"
            )
        return cls(scale=max_abs / headroom, headroom=headroom)

    def to_unit(self, w: Tensor) -> Tensor:
        """Kernel units -> network units."""
        return w / self.scale

    def from_unit(self, u: Tensor) -> Tensor:
        """Network units -> kernel units."""
        return u * self.scale

    def state_dict(self) -> dict[str, float]:
        """Plain-python state, safe for ``torch.load(weights_only=True)``."""
        return {"scale": float(self.scale), "headroom": float(self.headroom)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> KernelScaler:
        """Inverse of :meth:`state_dict`."""
        try:
            return cls(scale=float(state["scale"]), headroom=float(state["headroom"]))
        except KeyError as e:
            raise ValueError(f"KernelScaler state lacks key {e}; expected 'scale' and 'headroom'") from e


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Config / result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleGANConfig:
    """Hyper-parameters of one per-layer CycleGAN run."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    hidden: int = 32
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 10
    max_loss: float = 1e4
    arch: str = "volume"
    lr_decay: bool = False
    disc_output: str = "sigmoid"
    pool_size: int = 0

    def __post_init__(self) -> None:
        _check_positive_int(epochs=self.epochs, batch_size=self.batch_size, hidden=self.hidden,
                            checkpoint_every=self.checkpoint_every)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("disc_output", self.disc_output, DISC_OUTPUTS)
        if not isinstance(self.lr_decay, bool):
            raise ValueError(f"lr_decay: must be a bool, got {self.lr_decay!r}")
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < 0:
            raise ValueError(f"pool_size: must be an int >= 0, got {self.pool_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be finite and > 0, got {self.lr!r}")
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas: beta1 and beta2 must be in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)  # lists from YAML become a hashable tuple
        for name in ("lambda_cycle", "lambda_identity"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: must be finite and >= 0, got {v!r}")
        if not (self.max_loss > 0):
            raise ValueError(f"max_loss: must be > 0, got {self.max_loss!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: must be a non-negative int, got {self.seed!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r} is not a valid torch device (e.g. 'cpu', 'cuda:0')") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (betas as a list), e.g. for checkpoints and logging."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass
class CycleGANResult:
    """Live training state; also what :func:`train_cyclegan` returns.

    ``sample_shape`` is one sample's ``(C, D, 5, 5)``; ``history`` maps each name in ``LOSS_NAMES``
    to per-epoch means; ``epoch`` is the number of completed epochs.
    """

    G_A2B: nn.Module
    G_B2A: nn.Module
    D_A: nn.Module
    D_B: nn.Module
    scaler: KernelScaler
    config: CycleGANConfig
    sample_shape: tuple[int, ...]
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LOSS_NAMES})
    epoch: int = 0


OnEpoch = Callable[[int, dict[str, float], CycleGANResult], None]


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _validate_kernels(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, C, D, 5, 5], got {type(x).__name__}")
    if x.ndim != 5 or tuple(x.shape[-2:]) != (KERNEL_SIZE, KERNEL_SIZE):
        raise ValueError(
            f"{name} must have shape [N, C, D, 5, 5] (one layer weight per model, stacked), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} has no samples (shape {tuple(x.shape)}); need at least 1 model")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(
            f"{name} contains {bad} NaN/inf values; drop the affected models from the zoo before training"
        )


def _validate_pair(A: Tensor, B: Tensor) -> None:
    _validate_kernels(A, "A")
    _validate_kernels(B, "B")
    if A.shape[1:3] != B.shape[1:3]:
        raise ValueError(
            f"A and B must come from the same layer: per-sample shapes {tuple(A.shape[1:])} and "
            f"{tuple(B.shape[1:])} differ in [C, D]"
        )


def _fingerprint(x: Tensor) -> str:
    """sha256 of the tensor's bytes, so a checkpoint is never resumed on different data."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


class _CyclingSampler:
    """Endless stream of indices from successive seeded permutations of ``range(n)``.

    A batch that runs past the end of a permutation continues into the next one, so every sample
    is drawn equally often over time.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self, size: int) -> Tensor:
        out: list[Tensor] = []
        need = size
        while need > 0:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
            take = min(need, self.n - self.pos)
            out.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return torch.cat(out)

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


def _derive_seeds(seed: int) -> tuple[int, int, int, int]:
    """Independent seeds for (net init, sampler A, sampler B, image pools) from one user seed.

    SeedSequence words come as a stream, so the first three are those of the study's three-seed version.
    """
    s = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint32)
    return int(s[0]), int(s[1]), int(s[2]), int(s[3])


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _build_nets(
    channels: int, cfg: CycleGANConfig, init_seed: int
) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    # Build on CPU under a forked, seeded global RNG: identical init on any device and no side
    # effect on the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        g_ab = make_generator(cfg.arch, channels, cfg.hidden)
        g_ba = make_generator(cfg.arch, channels, cfg.hidden)
        d_a = make_discriminator(cfg.arch, channels, cfg.hidden, cfg.disc_output)
        d_b = make_discriminator(cfg.arch, channels, cfg.hidden, cfg.disc_output)
    dev = torch.device(cfg.device)
    return g_ab.to(dev), g_ba.to(dev), d_a.to(dev), d_b.to(dev)


def _set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _state_to_cpu(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu") for k, v in sd.items()}


def _load_checkpoint_file(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling/IO failure means the file is unusable
        raise ValueError(f"cannot read CycleGAN checkpoint {path} ({e}); delete it to start training afresh") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a CycleGAN checkpoint of format {CHECKPOINT_FORMAT}; delete it to start training afresh"
        )
    return ckpt


def _check_checkpoint_matches(ckpt: Mapping[str, Any], path: Path, cfg: CycleGANConfig,
                              data_meta: Mapping[str, Any]) -> None:
    stored_cfg = {k: v for k, v in ckpt["config"].items() if k not in _NON_TRAJECTORY_FIELDS}
    want_cfg = {k: v for k, v in cfg.to_dict().items() if k not in _NON_TRAJECTORY_FIELDS}
    diffs = [f"{k}: checkpoint={stored_cfg.get(k)!r} now={v!r}" for k, v in want_cfg.items() if stored_cfg.get(k) != v]
    diffs += [f"{k}: checkpoint={ckpt['data'].get(k)!r} now={v!r}" for k, v in data_meta.items()
              if ckpt["data"].get(k) != v]
    if diffs:
        raise ValueError(
            f"CycleGAN checkpoint {path} was written for a different run ({'; '.join(diffs)}); "
            "delete it to start training afresh, or restore the original config/data to resume"
        )
    if int(ckpt["epoch"]) > cfg.epochs:
        raise ValueError(
            f"CycleGAN checkpoint {path} is at epoch {ckpt['epoch']} but cfg.epochs={cfg.epochs}; "
            "raise epochs or delete the checkpoint to start afresh"
        )


def train_cyclegan(
    A: Tensor,
    B: Tensor,
    cfg: CycleGANConfig,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    on_epoch: OnEpoch | None = None,
) -> CycleGANResult:
    """Train one CycleGAN translating layer kernels ``A [Na,C,D,5,5]`` <-> ``B [Nb,C,D,5,5]``.

    Each epoch has ``ceil(max(Na, Nb) / batch_size)`` steps; each domain draws
    ``min(batch_size, N)`` samples per step from its own seeded, cycling permutation. A step is the
    standard CycleGAN update: generators (LSGAN adversarial + ``lambda_cycle`` * L1 cycle +
    ``lambda_identity`` * L1 identity), then D_A and D_B (0.5 * (MSE(real, 1) + MSE(fake, 0))), their
    fakes drawn through an :class:`ImagePool` of ``cfg.pool_size`` (0: the current batch, no randomness).
    Every optimiser's learning rate is ``cfg.lr * lr_factor(epoch, cfg.epochs, cfg.lr_decay)``.

    ``on_epoch(epoch, losses, state)`` runs after each epoch (1-based) with that epoch's mean
    losses and the live :class:`CycleGANResult`. A checkpoint is written after the hook every
    ``checkpoint_every`` epochs and at the end; an existing matching checkpoint is resumed and
    finishes bit-identical (on CPU) to an uninterrupted run. Raises :class:`TrainingDiverged` on
    a non-finite loss or one above ``cfg.max_loss``.
    """
    _validate_pair(A, B)
    if on_epoch is not None and not callable(on_epoch):
        raise ValueError(f"on_epoch must be callable(epoch, losses, state), got {type(on_epoch).__name__}")
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cfg.device={cfg.device!r} but CUDA is not available; use device='cpu'")

    A = A.detach().to(torch.float32)
    B = B.detach().to(torch.float32)
    na, nb, channels = A.shape[0], B.shape[0], A.shape[1]
    data_meta = {"shape_A": list(A.shape), "shape_B": list(B.shape),
                 "sha256_A": _fingerprint(A), "sha256_B": _fingerprint(B)}

    ckpt: dict[str, Any] | None = None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = _load_checkpoint_file(ckpt_path)
        _check_checkpoint_matches(ckpt, ckpt_path, cfg, data_meta)

    init_seed, seed_a, seed_b, seed_pool = _derive_seeds(cfg.seed)
    g_ab, g_ba, d_a, d_b = _build_nets(channels, cfg, init_seed)
    scaler = KernelScaler.fit(A, B)
    opt_g = torch.optim.Adam(list(g_ab.parameters()) + list(g_ba.parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_da = torch.optim.Adam(d_a.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_db = torch.optim.Adam(d_b.parameters(), lr=cfg.lr, betas=cfg.betas)
    samp_a, samp_b = _CyclingSampler(na, seed_a), _CyclingSampler(nb, seed_b)
    pool_a, pool_b = ImagePool(cfg.pool_size, seed_pool), ImagePool(cfg.pool_size, seed_pool + 1)
    result = CycleGANResult(G_A2B=g_ab, G_B2A=g_ba, D_A=d_a, D_B=d_b, scaler=scaler, config=cfg,
                            sample_shape=tuple(A.shape[1:]))
    nets = {"G_A2B": g_ab, "G_B2A": g_ba, "D_A": d_a, "D_B": d_b}
    optims = {"G": opt_g, "D_A": opt_da, "D_B": opt_db}

    if ckpt is not None:
        for name, net in nets.items():
            net.load_state_dict(ckpt["nets"][name])
        for name, opt in optims.items():
            opt.load_state_dict(ckpt["optims"][name])
        result.scaler = scaler = KernelScaler.from_state(ckpt["scaler"])
        result.history = {k: [float(v) for v in ckpt["history"][k]] for k in LOSS_NAMES}
        result.epoch = int(ckpt["epoch"])
        samp_a.load(ckpt["samplers"]["A"])
        samp_b.load(ckpt["samplers"]["B"])
        pool_a.load(ckpt["pools"]["A"], device)
        pool_b.load(ckpt["pools"]["B"], device)
        logger.info("resumed CycleGAN from %s at epoch %d/%d", ckpt_path, result.epoch, cfg.epochs)

    def save_checkpoint() -> None:
        assert ckpt_path is not None
        _atomic_torch_save({
            "format": CHECKPOINT_FORMAT,
            "config": cfg.to_dict(),
            "data": data_meta,
            "epoch": result.epoch,
            "nets": {k: _state_to_cpu(n.state_dict()) for k, n in nets.items()},
            "optims": {k: o.state_dict() for k, o in optims.items()},
            "scaler": result.scaler.state_dict(),
            "history": {k: list(v) for k, v in result.history.items()},
            "samplers": {"A": samp_a.state(), "B": samp_b.state()},
            "pools": {"A": pool_a.state(), "B": pool_b.state()},
        }, ckpt_path)

    # Unit-scale once; indexing happens on the device.
    ua = scaler.to_unit(A).to(device)
    ub = scaler.to_unit(B).to(device)
    steps = math.ceil(max(na, nb) / cfg.batch_size)
    bs_a, bs_b = min(cfg.batch_size, na), min(cfg.batch_size, nb)
    for net in nets.values():
        net.train()

    for epoch in range(result.epoch + 1, cfg.epochs + 1):
        if cfg.lr_decay:
            for opt in optims.values():
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * lr_factor(epoch, cfg.epochs, True)
        sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
        for step in range(1, steps + 1):
            real_a = ua[samp_a.next(bs_a).to(device)]
            real_b = ub[samp_b.next(bs_b).to(device)]

            # Generators: D weights are frozen so the G step leaves no gradients on them.
            _set_requires_grad(d_a, False)
            _set_requires_grad(d_b, False)
            opt_g.zero_grad(set_to_none=True)
            fake_b = g_ab(real_a)
            fake_a = g_ba(real_b)
            loss_adv = adversarial_loss(d_b(fake_b), True) + adversarial_loss(d_a(fake_a), True)
            loss_cyc = cycle_loss(real_a, g_ba(fake_b)) + cycle_loss(real_b, g_ab(fake_a))
            loss_id = identity_loss(real_a, g_ba(real_a)) + identity_loss(real_b, g_ab(real_b))
            loss_g = loss_adv + cfg.lambda_cycle * loss_cyc + cfg.lambda_identity * loss_id
            loss_g.backward()
            opt_g.step()

            _set_requires_grad(d_a, True)
            _set_requires_grad(d_b, True)
            opt_da.zero_grad(set_to_none=True)
            pooled_a, pooled_b = pool_a.query(fake_a.detach()), pool_b.query(fake_b.detach())
            loss_da = 0.5 * (adversarial_loss(d_a(real_a), True) + adversarial_loss(d_a(pooled_a), False))
            loss_da.backward()
            opt_da.step()
            opt_db.zero_grad(set_to_none=True)
            loss_db = 0.5 * (adversarial_loss(d_b(real_b), True) + adversarial_loss(d_b(pooled_b), False))
            loss_db.backward()
            opt_db.step()

            vals = torch.stack([loss_g, loss_da, loss_db, loss_cyc, loss_id, loss_adv])
            vals = vals.detach().to("cpu", torch.float64)  # one sync per step for the divergence check
            for name, v in zip(LOSS_NAMES, vals.tolist()):
                if not math.isfinite(v) or v > cfg.max_loss:
                    raise TrainingDiverged(epoch, step, name, v, cfg.lr)
            sums += vals

        means = {name: float(s) / steps for name, s in zip(LOSS_NAMES, sums.tolist())}
        for name, v in means.items():
            result.history[name].append(v)
        result.epoch = epoch
        logger.debug("epoch %d/%d %s", epoch, cfg.epochs, means)
        if on_epoch is not None:
            on_epoch(epoch, dict(means), result)
        if ckpt_path is not None and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
            save_checkpoint()
            logger.info("checkpoint at epoch %d -> %s", epoch, ckpt_path)

    return result


# --------------------------------------------------------------------------------------------
# Inference / persistence
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def translate(generator: nn.Module, scaler: KernelScaler, kernels: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Translate kernels ``[N, C, D, 5, 5]`` (or one ``[C, D, 5, 5]``) in original units.

    Runs in eval mode without gradients, in batches, on the generator's device; the generator's
    previous train/eval mode is restored. Returns float32 on the input's device, same shape.
    """
    single = isinstance(kernels, Tensor) and kernels.ndim == 4
    x = kernels.unsqueeze(0) if single else kernels
    _validate_kernels(x, "kernels")
    if x.shape[1] != generator.channels:
        raise ValueError(
            f"kernels have {x.shape[1]} output channels but the generator expects {generator.channels}; "
            "use the generator trained for this layer"
        )
    _check_positive_int(batch_size=batch_size)
    dev = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        outs = [
            scaler.from_unit(generator(scaler.to_unit(chunk.to(dev, torch.float32)))).to(kernels.device)
            for chunk in x.split(batch_size)
        ]
    finally:
        generator.train(was_training)
    out = torch.cat(outs)
    return out[0] if single else out


def save_generators(path: str | os.PathLike[str], result: CycleGANResult,
                    meta: Mapping[str, Any] | None = None) -> None:
    """Atomically write both generators, their sizes and the scaler for the generate stage.

    ``meta`` (plain python values only) is stored alongside the config and epochs trained.
    """
    g = result.G_A2B
    payload = {
        "format": GENERATORS_FORMAT,
        "arch": result.config.arch,
        "channels": int(g.channels),
        "hidden": int(g.hidden),
        "G_A2B": _state_to_cpu(result.G_A2B.state_dict()),
        "G_B2A": _state_to_cpu(result.G_B2A.state_dict()),
        "scaler": result.scaler.state_dict(),
        "meta": {"config": result.config.to_dict(), "epochs_trained": int(result.epoch),
                 "sample_shape": list(result.sample_shape), **dict(meta or {})},
    }
    _atomic_torch_save(payload, Path(path))


def load_generators(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[nn.Module, nn.Module, KernelScaler, dict[str, Any]]:
    """Load what :func:`save_generators` wrote: ``(G_A2B, G_B2A, scaler, meta)``, in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"generator file {p} does not exist; run the CycleGAN training stage first")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != GENERATORS_FORMAT:
        raise ValueError(f"{p} is not a generators file of format {GENERATORS_FORMAT}; re-run the training stage")
    gens = []
    for key in ("G_A2B", "G_B2A"):
        g = make_generator(str(blob.get("arch", "volume")), int(blob["channels"]), int(blob["hidden"]))
        g.load_state_dict(blob[key])
        gens.append(g.to(device).eval())
    meta = dict(blob["meta"])
    meta.update(channels=int(blob["channels"]), hidden=int(blob["hidden"]), arch=str(blob.get("arch", "volume")))
    return gens[0], gens[1], KernelScaler.from_state(blob["scaler"]), meta
