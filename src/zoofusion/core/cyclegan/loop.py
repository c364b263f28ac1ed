"""The kernel CycleGAN's training loop: config, kernel scaling, sampling, :func:`train_cyclegan`, :func:`translate`.

Pure: tensors in, tensors and plain dicts out. Resuming is explicit: every ``checkpoint_every`` epochs and at
the end, :func:`train_cyclegan` hands ``on_checkpoint`` a self-contained state (nets, optimisers, the state of
every random generator it draws from, losses so far, config and data fingerprints); passing such a state back
as ``resume`` continues to the very bytes an uninterrupted run gives. :func:`resume_mismatch` says whether a
state can be resumed under a config (the caller trains afresh when it cannot).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoofusion.core.cyclegan.losses import ImagePool, adversarial_loss, cycle_loss, identity_loss, lr_factor
from zoofusion.core.cyclegan.nets import (ARCHS, DISC_OUTPUTS, check_choice, check_positive_int, make_discriminator,
                                          make_generator)

logger = logging.getLogger(__name__)

KERNEL_SIZE = 5
HEADROOM = 0.9
STATE_FORMAT = 2
LOSS_NAMES = ("loss_G", "loss_D_A", "loss_D_B", "loss_cycle", "loss_identity", "loss_adv")


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf or exceeded ``CycleGANConfig.max_loss``."""

    def __init__(self, epoch: int, step: int, loss_name: str, value: float, lr: float) -> None:
        self.epoch = epoch
        self.step = step
        self.loss_name = loss_name
        self.value = value
        self.lr = lr
        super().__init__(
            f"CycleGAN training diverged at epoch {epoch} (step {step}): {loss_name}={value!r} "
            f"is not finite or exceeds max_loss. Try a lower learning rate than lr={lr:g} "
            "(e.g. halve it), and check the input kernels."
        )

    def __reduce__(self):  # pickled whole: raised in a worker process, re-raised by the stage
        return type(self), (self.epoch, self.step, self.loss_name, self.value, self.lr)


# --------------------------------------------------------------------------------------------
# Config / result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleGANConfig:
    """Hyper-parameters of one CycleGAN run. No defaults: params.yaml decides every field (config.py's
    ``CycleGANParams.core_kwargs()`` and ``VariantParams.core_kwargs()``; seed and device from the stage)."""

    epochs: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    hidden: int
    lambda_cycle: float
    lambda_identity: float
    seed: int
    device: str
    checkpoint_every: int
    max_loss: float
    arch: str
    lr_decay: bool
    disc_output: str
    pool_size: int

    def __post_init__(self) -> None:
        check_positive_int(epochs=self.epochs, batch_size=self.batch_size, hidden=self.hidden,
                           checkpoint_every=self.checkpoint_every)
        check_choice("arch", self.arch, ARCHS)
        check_choice("disc_output", self.disc_output, DISC_OUTPUTS)
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


def trajectory_fields(cfg: CycleGANConfig) -> set[str]:
    """The config fields whose values decide the state after epoch e, for every e.

    ``checkpoint_every`` never does. ``epochs`` does only with ``lr_decay``: the decay's slope spans the whole
    run, while with a constant rate epoch e of a short run is epoch e of any longer one. ``max_loss`` decides
    whether a run stops, so it counts too (a lower one might have stopped a fresh run earlier).
    """
    skip = {"checkpoint_every"} | (set() if cfg.lr_decay else {"epochs"})
    return {f.name for f in dataclasses.fields(cfg)} - skip


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
OnCheckpoint = Callable[[dict[str, Any]], None]


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
    headroom: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"KernelScaler.scale must be finite and > 0, got {self.scale!r}")
        if not (0 < self.headroom <= 1):
            raise ValueError(f"KernelScaler.headroom must be in (0, 1], got {self.headroom!r}")

    @classmethod
    def fit(cls, *kernel_sets: Tensor, headroom: float = HEADROOM) -> KernelScaler:
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
    """sha256 of the tensor's bytes, so a state is never resumed on different data."""
    arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()


def data_fingerprint(A: Tensor, B: Tensor) -> dict[str, Any]:
    """Shapes and sha256 of both domains' training kernels, as a state records them."""
    return {"shape_A": list(A.shape), "shape_B": list(B.shape), "sha256_A": _fingerprint(A),
            "sha256_B": _fingerprint(B)}


# --------------------------------------------------------------------------------------------
# Sampling and seeds
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


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor on the CPU: a state handed out or taken in shares no memory with live
    training (optimisers and nets update their tensors in place)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def resume_mismatch(state: Mapping[str, Any], cfg: CycleGANConfig, A: Tensor, B: Tensor) -> str | None:
    """Why ``state`` (from ``on_checkpoint``) cannot be resumed under ``cfg`` on ``A``, ``B``; None if it can.

    It can when every field of :func:`trajectory_fields` and the data match and it is not past ``cfg.epochs``:
    then resuming gives the same bytes as training ``cfg`` from scratch.
    """
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        return f"not a CycleGAN state of format {STATE_FORMAT}"
    was = state["config"]
    diffs = [f"{k}: state={was.get(k)!r} now={v!r}" for k, v in sorted(cfg.to_dict().items())
             if k in trajectory_fields(cfg) and was.get(k) != v]
    data = data_fingerprint(A.detach().to(torch.float32), B.detach().to(torch.float32))
    diffs += [f"{k}: state={state['data'].get(k)!r} now={v!r}" for k, v in data.items() if state["data"].get(k) != v]
    if diffs:
        return "written for a different run (" + "; ".join(diffs) + ")"
    if int(state["epoch"]) > cfg.epochs:
        return f"it is at epoch {state['epoch']}, past epochs={cfg.epochs}"
    return None


def initial_cyclegan(A: Tensor, B: Tensor, cfg: CycleGANConfig) -> CycleGANResult:
    """The CycleGAN :func:`train_cyclegan` starts from, before any update (epoch 0): its nets built from
    ``cfg.seed``'s init seed and its scaler fitted to ``A``, ``B``. Translating by its generators is the
    translation control (kernels through an untrained CycleGAN); ``train_cyclegan`` builds its start here, so the
    two share every init byte."""
    _validate_pair(A, B)
    A, B = A.detach().to(torch.float32), B.detach().to(torch.float32)
    g_ab, g_ba, d_a, d_b = _build_nets(A.shape[1], cfg, _derive_seeds(cfg.seed)[0])
    return CycleGANResult(G_A2B=g_ab, G_B2A=g_ba, D_A=d_a, D_B=d_b, scaler=KernelScaler.fit(A, B), config=cfg,
                          sample_shape=tuple(A.shape[1:]))


def train_cyclegan(
    A: Tensor,
    B: Tensor,
    cfg: CycleGANConfig,
    *,
    resume: Mapping[str, Any] | None = None,
    on_epoch: OnEpoch | None = None,
    on_checkpoint: OnCheckpoint | None = None,
) -> CycleGANResult:
    """Train one CycleGAN translating layer kernels ``A [Na,C,D,5,5]`` <-> ``B [Nb,C,D,5,5]``.

    Each epoch has ``ceil(max(Na, Nb) / batch_size)`` steps; each domain draws
    ``min(batch_size, N)`` samples per step from its own seeded, cycling permutation. A step is the
    standard CycleGAN update: generators (LSGAN adversarial + ``lambda_cycle`` * L1 cycle +
    ``lambda_identity`` * L1 identity), then D_A and D_B (0.5 * (MSE(real, 1) + MSE(fake, 0))), their
    fakes drawn through an :class:`ImagePool` of ``cfg.pool_size`` (0: the current batch, no randomness).
    Every optimiser's learning rate is ``cfg.lr * lr_factor(epoch, cfg.epochs, cfg.lr_decay)``.

    ``on_epoch(epoch, losses, result)`` runs after each epoch (1-based) with that epoch's mean losses and the
    live :class:`CycleGANResult`. Then, every ``checkpoint_every`` epochs and after the last one,
    ``on_checkpoint(state)`` gets a self-contained state (CPU tensors and plain values, a copy). ``resume``, such
    a state, continues from its epoch and finishes bit-identical (on CPU) to an uninterrupted run; one that
    :func:`resume_mismatch` refuses raises ValueError. Raises :class:`TrainingDiverged` on a non-finite loss or
    one above ``cfg.max_loss``.
    """
    _validate_pair(A, B)
    for name, hook in (("on_epoch", on_epoch), ("on_checkpoint", on_checkpoint)):
        if hook is not None and not callable(hook):
            raise ValueError(f"{name} must be callable, got {type(hook).__name__}")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"cfg.device={cfg.device!r} but CUDA is not available; use device='cpu'")
    if resume is not None:
        why = resume_mismatch(resume, cfg, A, B)
        if why is not None:
            raise ValueError(f"resume: cannot continue this state, {why}; train without resume")
        resume = _cpu_copy(resume)

    A = A.detach().to(torch.float32)
    B = B.detach().to(torch.float32)
    na, nb = A.shape[0], B.shape[0]
    data_meta = data_fingerprint(A, B)

    _, seed_a, seed_b, seed_pool = _derive_seeds(cfg.seed)
    start = initial_cyclegan(A, B, cfg)  # the nets and scaler at initialisation: the translation control's
    g_ab, g_ba, d_a, d_b, scaler = start.G_A2B, start.G_B2A, start.D_A, start.D_B, start.scaler
    opt_g = torch.optim.Adam(list(g_ab.parameters()) + list(g_ba.parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_da = torch.optim.Adam(d_a.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_db = torch.optim.Adam(d_b.parameters(), lr=cfg.lr, betas=cfg.betas)
    samp_a, samp_b = _CyclingSampler(na, seed_a), _CyclingSampler(nb, seed_b)
    pool_a, pool_b = ImagePool(cfg.pool_size, seed_pool), ImagePool(cfg.pool_size, seed_pool + 1)
    result = CycleGANResult(G_A2B=g_ab, G_B2A=g_ba, D_A=d_a, D_B=d_b, scaler=scaler, config=cfg,
                            sample_shape=tuple(A.shape[1:]))
    nets = {"G_A2B": g_ab, "G_B2A": g_ba, "D_A": d_a, "D_B": d_b}
    optims = {"G": opt_g, "D_A": opt_da, "D_B": opt_db}
    samplers, pools = {"A": samp_a, "B": samp_b}, {"A": pool_a, "B": pool_b}

    if resume is not None:
        for name, net in nets.items():
            net.load_state_dict(resume["nets"][name])
        for name, opt in optims.items():
            opt.load_state_dict(resume["optims"][name])
        result.scaler = scaler = KernelScaler.from_state(resume["scaler"])
        result.history = {k: [float(v) for v in resume["history"][k]] for k in LOSS_NAMES}
        result.epoch = int(resume["epoch"])
        for name in samplers:
            samplers[name].load(resume["samplers"][name])
            pools[name].load(resume["pools"][name], device)
        logger.info("resumed CycleGAN at epoch %d/%d", result.epoch, cfg.epochs)

    def state() -> dict[str, Any]:
        return _cpu_copy({
            "format": STATE_FORMAT,
            "config": cfg.to_dict(),
            "data": data_meta,
            "epoch": result.epoch,
            "nets": {k: n.state_dict() for k, n in nets.items()},
            "optims": {k: o.state_dict() for k, o in optims.items()},
            "scaler": result.scaler.state_dict(),
            "history": {k: list(v) for k, v in result.history.items()},
            "samplers": {k: s.state() for k, s in samplers.items()},
            "pools": {k: p.state() for k, p in pools.items()},
        })

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
        if on_checkpoint is not None and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
            on_checkpoint(state())

    return result


# --------------------------------------------------------------------------------------------
# Inference
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
    check_positive_int(batch_size=batch_size)
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
