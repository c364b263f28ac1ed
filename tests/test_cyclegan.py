"""Tests for the kernel CycleGAN core and the kernel grid figure."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import ROOT
from zoofusion.config import VARIANTS, load_params
from zoofusion.core.cyclegan import LOSS_NAMES, CycleGANConfig, CycleGANResult, Discriminator, Generator, ImagePool, KernelScaler, SetDiscriminator, SetGenerator, TrainingDiverged, adversarial_loss, cycle_loss, identity_loss, initial_cyclegan, lr_factor, make_discriminator, resume_mismatch, train_cyclegan, translate
from zoofusion.core.kernel_stats import kernel_stat_distance
from zoofusion.io import save_torch
from zoofusion.render.kernel_grid import kernel_grid_figure, save_figure
from zoofusion.steps.cyclegan import (Unit, load_generators, make_config, plan_units, save_generators, summarize,
                                      train_unit, train_units, write_unit)

torch.set_num_threads(1)


def _zoo(n: int, c: int = 6, d: int = 3, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 * torch.randn(n, c, d, 5, 5, generator=g) + shift


def config(**changes: Any) -> CycleGANConfig:
    """Every field spelled out (a core config has no defaults): a tiny CPU run with the study's training details."""
    fields = dict(epochs=3, batch_size=4, lr=2e-4, betas=(0.5, 0.999), hidden=4, lambda_cycle=10.0,
                  lambda_identity=5.0, seed=0, device="cpu", checkpoint_every=10, max_loss=1e4, arch="volume",
                  lr_decay=False, disc_output="sigmoid", pool_size=0)
    return CycleGANConfig(**{**fields, **changes})


TINY = config(seed=1)


def _states_equal(r1: CycleGANResult, r2: CycleGANResult) -> bool:
    for name in ("G_A2B", "G_B2A", "D_A", "D_B"):
        s1, s2 = getattr(r1, name).state_dict(), getattr(r2, name).state_dict()
        if s1.keys() != s2.keys() or not all(torch.equal(s1[k], s2[k]) for k in s1):
            return False
    return r1.history == r2.history and r1.scaler == r2.scaler and r1.epoch == r2.epoch


@pytest.mark.parametrize("c,d", [(6, 3), (16, 6)])
def test_generator_and_discriminator_shapes(c: int, d: int) -> None:
    x = torch.randn(2, c, d, 5, 5)
    y = Generator(c, 8)(x)
    assert y.shape == x.shape
    assert bool((y.abs() < 1).all())  # Tanh range
    p = Discriminator(c, 8, "sigmoid")(x)
    assert p.shape == (2, 1, d, 5, 5)
    assert bool(((p > 0) & (p < 1)).all())


def test_scaler_round_trip_range_and_state() -> None:
    a, b = _zoo(3), _zoo(4, seed=1) * 3
    s = KernelScaler.fit(a, b)
    assert s.scale == pytest.approx(float(b.abs().max()) / 0.9)
    u = s.to_unit(b)
    assert float(u.abs().max()) == pytest.approx(0.9)
    torch.testing.assert_close(s.from_unit(s.to_unit(a)), a, rtol=1e-6, atol=1e-7)
    assert KernelScaler.from_state(s.state_dict()) == s
    with pytest.raises(ValueError, match="not all zero"):
        KernelScaler.fit(torch.zeros(2, 6, 3, 5, 5))


def test_losses_worked_examples() -> None:
    pred = torch.tensor([0.5, 1.0])
    assert adversarial_loss(pred, True).item() == pytest.approx(0.125)  # (0.25 + 0) / 2
    assert adversarial_loss(pred, False).item() == pytest.approx(0.625)  # (0.25 + 1) / 2
    x, y = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.5, 0.0, 0.0])
    assert cycle_loss(x, y).item() == pytest.approx(2.5 / 3)
    assert identity_loss(x, y).item() == pytest.approx(2.5 / 3)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        config(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        config(lr=-1.0)
    assert config(betas=[0.5, 0.9]).betas == (0.5, 0.9)


def test_config_has_no_defaults_and_params_yaml_decides_every_field() -> None:
    fields = dataclasses.fields(CycleGANConfig)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    with pytest.raises(TypeError, match="missing"):
        CycleGANConfig(epochs=3)  # type: ignore[call-arg]
    p = load_params(ROOT / "params.yaml")
    for variant in VARIANTS:  # the stage's own config builder, from params.yaml alone
        v = p.translation.variant(variant)
        assert set(p.cyclegan.core_kwargs()) | set(v.core_kwargs()) | {"seed", "device"} == {f.name for f in fields}
        cfg = make_config(p.cyclegan, v, p.seed, "cpu", "conv1")
        assert (cfg.epochs, cfg.lr_decay, cfg.pool_size) == (p.cyclegan.epochs, v.lr_decay, v.pool_size)


def test_tiny_training_deterministic_and_finite() -> None:
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    seen: list[int] = []
    r1 = train_cyclegan(a, b, TINY, on_epoch=lambda e, losses, state: seen.append(e))
    r2 = train_cyclegan(a, b, TINY)
    assert seen == [1, 2, 3]
    assert set(r1.history) == set(LOSS_NAMES)
    assert all(len(v) == 3 and all(math.isfinite(x) for x in v) for v in r1.history.values())
    assert _states_equal(r1, r2)
    r3 = train_cyclegan(a, b, config(seed=2))
    assert not _states_equal(r1, r3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_runs_and_tracks_cpu(tmp_path: Path) -> None:
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    states: list[dict] = []
    gpu = train_cyclegan(a, b, dataclasses.replace(TINY, device="cuda"), on_checkpoint=states.append)
    cpu = train_cyclegan(a, b, TINY)
    assert states[-1]["epoch"] == 3 and states[-1]["nets"]["G_A2B"]["net.0.weight"].device.type == "cpu"
    assert next(gpu.G_A2B.parameters()).device.type == "cuda"
    out = translate(gpu.G_A2B, gpu.scaler, a)
    assert out.device == a.device and torch.isfinite(out).all()
    torch.testing.assert_close(out, translate(cpu.G_A2B, cpu.scaler, a), rtol=0, atol=1e-3 * cpu.scaler.scale)
    save_generators(tmp_path / "g.pt", gpu)
    g_ab, _, scaler, _ = load_generators(tmp_path / "g.pt")  # a GPU-trained file loads on the CPU
    assert scaler == gpu.scaler  # the same weights, run by CPU kernels instead of cuDNN's (TF32) ones
    torch.testing.assert_close(translate(g_ab, scaler, a), out, rtol=0, atol=1e-3 * scaler.scale)


# --- resuming: a resumed run is a fresh run, byte for byte, or the checkpoint is not used ---------------------


def _generator_bytes(result: CycleGANResult, path: Path) -> bytes:
    save_generators(path, result)
    return path.read_bytes()


def _crash_at(epoch_to_crash: int):
    def on_epoch(epoch: int, losses: dict[str, float], state: CycleGANResult) -> None:
        if epoch == epoch_to_crash:
            raise KeyboardInterrupt

    return on_epoch


@pytest.mark.parametrize("details", [
    {},  # the study's: constant lr, no pool
    {"lr_decay": True, "disc_output": "raw", "pool_size": 3, "arch": "set"},  # the aligned variant's
    {"pool_size": 3},
])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path, details: dict) -> None:
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    cfg = config(epochs=5, seed=3, checkpoint_every=2, **details)
    full = train_cyclegan(a, b, cfg)

    states: list[dict] = []
    with pytest.raises(KeyboardInterrupt):
        train_cyclegan(a, b, cfg, on_epoch=_crash_at(3), on_checkpoint=states.append)
    assert [s["epoch"] for s in states] == [2]  # epoch 3 trained after the state was handed out: a copy
    seen: list[int] = []
    resumed = train_cyclegan(a, b, cfg, resume=states[0], on_epoch=lambda e, l, s: seen.append(e))
    assert seen == [3, 4, 5]  # epochs 1-2 came from the state
    assert _states_equal(full, resumed)
    assert _generator_bytes(resumed, tmp_path / "r.pt") == _generator_bytes(full, tmp_path / "f.pt")
    again = train_cyclegan(a, b, cfg, resume=states[0])  # resuming left the state untouched
    assert _states_equal(full, again)


def test_a_constant_lr_run_extends_a_shorter_ones_state(tmp_path: Path) -> None:
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    states: list[dict] = []
    train_cyclegan(a, b, config(epochs=2, seed=3, pool_size=2), on_checkpoint=states.append)
    longer = config(epochs=4, seed=3, pool_size=2)
    assert resume_mismatch(states[-1], longer, a, b) is None
    extended = train_cyclegan(a, b, longer, resume=states[-1])
    fresh = train_cyclegan(a, b, longer)
    assert _states_equal(extended, fresh)
    assert _generator_bytes(extended, tmp_path / "e.pt") == _generator_bytes(fresh, tmp_path / "f.pt")


def test_resume_mismatch_names_what_differs() -> None:
    a, b = _zoo(5), _zoo(7, seed=1)
    states: list[dict] = []
    cfg = config(epochs=2, checkpoint_every=1)
    train_cyclegan(a, b, cfg, on_checkpoint=states.append)
    state = states[-1]
    assert resume_mismatch(state, config(epochs=2, checkpoint_every=5), a, b) is None  # never shapes the run
    assert resume_mismatch(states[0], config(epochs=7), a, b) is None  # constant lr: epoch 1 of any run
    assert "lr: state=0.0002 now=0.001" in resume_mismatch(state, config(epochs=2, lr=1e-3), a, b)
    assert "sha256_A" in resume_mismatch(state, cfg, a + 0.01, b)
    assert "past epochs=1" in resume_mismatch(state, config(epochs=1), a, b)
    assert "not a CycleGAN state" in resume_mismatch({"format": 1}, cfg, a, b)
    decay: list[dict] = []
    train_cyclegan(a, b, config(epochs=2, lr_decay=True), on_checkpoint=decay.append)
    assert "epochs: state=2 now=4" in resume_mismatch(decay[-1], config(epochs=4, lr_decay=True), a, b)
    with pytest.raises(ValueError, match=r"resume: cannot continue this state, .*lr: state=0.0002 now=0.001"):
        train_cyclegan(a, b, config(epochs=2, lr=1e-3), resume=state)


def _unit(a: torch.Tensor, b: torch.Tensor) -> Unit:
    return Unit("conv1", a, b, lambda x: {"conv1": x}, {"layer": "conv1"})


@pytest.fixture
def unit_files(tmp_path: Path) -> tuple[Unit, list[Path]]:
    """A unit and the kernel files it came from (their md5s key the checkpoint)."""
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    files = [tmp_path / "black.pt", tmp_path / "cat.pt"]
    for f, k in zip(files, (a, b)):
        save_torch(f, {"conv1.weight": k})
    return _unit(a, b), files


def _step(unit_files, cfg: CycleGANConfig, root: Path, cache: Path, **kw):
    unit, files = unit_files
    run = train_unit(unit, "study", cfg, files, cache, **kw)
    write_unit(root / "conv1", run)
    return run, (root / "conv1" / "generators.pt").read_bytes()


def test_step_resumes_an_interrupted_unit_to_the_same_bytes(tmp_path: Path, unit_files) -> None:
    cfg = config(epochs=5, seed=3, checkpoint_every=2, lr_decay=True, pool_size=3)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        _step(unit_files, cfg, tmp_path / "out", cache, on_epoch=_crash_at(3))
    assert [p.suffix for p in cache.iterdir()] == [".ckpt"]  # written atomically: no temporary left
    assert not (tmp_path / "out" / "conv1").exists()
    resumed, got = _step(unit_files, cfg, tmp_path / "out", cache)
    fresh, want = _step(unit_files, cfg, tmp_path / "fresh", tmp_path / "cache2")
    assert (resumed.resumed_at, fresh.resumed_at) == (2, 0)
    assert got == want
    for name in ("history.json", "losses.csv"):
        assert (tmp_path / "out" / "conv1" / name).read_bytes() == (tmp_path / "fresh" / "conv1" / name).read_bytes()
    g_ab, _, scaler, meta = load_generators(tmp_path / "out" / "conv1" / "generators.pt")
    assert meta["epochs_trained"] == 5 and meta["variant"] == "study"


def test_step_lowering_epochs_trains_fresh_and_overwrites(tmp_path: Path, unit_files) -> None:
    cache = tmp_path / "cache"
    _step(unit_files, config(epochs=4, seed=3), tmp_path / "long", cache)
    lowered, got = _step(unit_files, config(epochs=2, seed=3), tmp_path / "out", cache)  # no error, no deletion
    fresh, want = _step(unit_files, config(epochs=2, seed=3), tmp_path / "fresh", tmp_path / "cache2")
    assert lowered.resumed_at == 0 and got == want
    (ckpt,) = cache.iterdir()
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == 2  # overwritten by the fresh run
    ckpt.write_bytes(b"not a checkpoint")  # an unreadable checkpoint is trained over as well
    again, got = _step(unit_files, config(epochs=2, seed=3), tmp_path / "again", cache)
    assert again.resumed_at == 0 and got == want


@pytest.mark.parametrize("lr_decay", [True, False])
def test_step_raising_epochs_resumes_only_when_that_is_a_fresh_run(tmp_path: Path, unit_files,
                                                                   lr_decay: bool) -> None:
    cache = tmp_path / "cache"
    _step(unit_files, config(epochs=2, seed=3, lr_decay=lr_decay), tmp_path / "short", cache)
    raised, got = _step(unit_files, config(epochs=4, seed=3, lr_decay=lr_decay), tmp_path / "out", cache)
    _, want = _step(unit_files, config(epochs=4, seed=3, lr_decay=lr_decay), tmp_path / "fresh", tmp_path / "c2")
    # with decay the 2-epoch run's lr fell to 1/2 in its epoch 2, a 4-epoch run's stays at 1: not resumable
    assert raised.resumed_at == (0 if lr_decay else 2)
    assert got == want


# --- every variant's units side by side: the same bytes at any number of workers ------------------------------


def _harvest(root: Path) -> Path:
    """Tiny kernel files of both harvests (raw and aligned), as the kernels stage writes them."""
    for k, folder in enumerate(("raw", "aligned")):
        for j, domain in enumerate(("black", "cat")):
            g = torch.Generator().manual_seed(10 * k + j)
            n = 5 + j
            save_torch(root / folder / f"{domain}.pt", {"conv1.weight": 0.2 * torch.randn(n, 6, 3, 5, 5, generator=g),
                                                         "conv2.weight": 0.1 * torch.randn(n, 16, 6, 5, 5, generator=g)})
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_units_side_by_side_give_the_same_bytes_at_any_number_of_workers(tmp_path: Path) -> None:
    from conftest import make_params

    p = make_params({"cyclegan": {"epochs": 2, "batch_size": 4, "hidden": 4, "checkpoint_every": 1,
                                  "grid_every": 1}})
    variants = {name: p.translation.variant(name) for name in VARIANTS}
    kernels = _harvest(tmp_path / "kernels")
    outs, seen = {}, {}
    for workers in (1, 2):
        tasks = plan_units(variants, p.cyclegan, p.seed, "cpu", kernels, tmp_path / f"cache{workers}")
        order: list[str] = []
        runs = train_units(tasks, tmp_path / f"out{workers}", workers,
                           on_unit=lambda task, run, folder: order.append(f"{task.variant}/{task.unit}"))
        outs[workers] = _tree(tmp_path / f"out{workers}")
        seen[workers] = (order, {v: summarize(v, variants[v], rs) for v, rs in runs.items()},
                         {f"{r.variant}/{r.unit}": (r.history, sorted(r.grids)) for rs in runs.values() for r in rs})
    assert seen[1][0] == ["study/conv1", "study/conv2", "aligned/pair"]  # task order, whoever finishes first
    assert sorted(outs[1]) == [f"{u}/{f}" for u in ("aligned/pair", "study/conv1", "study/conv2")
                               for f in ("final_grid.png", "generators.pt", "generators_init.pt", "history.json",
                                         "losses.csv")]
    assert outs[1] == outs[2] and seen[1] == seen[2]
    assert seen[1][2]["study/conv1"][1] == [1, 2]  # a grid every epoch, each with its distances
    assert set(seen[1][1]["aligned"]) >= {"conv1", "conv2"} and seen[1][1]["aligned"]["units"]["pair"]["epochs"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    # the checkpoints are resumed by a rerun: the same bytes again, nothing retrained
    tasks = plan_units(variants, p.cyclegan, p.seed, "cpu", kernels, tmp_path / "cache2")
    again = train_units(tasks, tmp_path / "again", 2)
    assert _tree(tmp_path / "again") == outs[1] and {r.resumed_at for rs in again.values() for r in rs} == {2}


def test_a_unit_worker_turns_tf32_off_when_its_unit_trains_on_a_gpu(tmp_path: Path, monkeypatch) -> None:
    """Units share a GPU as worker processes: each sets its own (process-global) fp32 flags before training."""
    import dataclasses

    import zoofusion.steps.cyclegan as step
    from conftest import make_params

    p = make_params({"cyclegan": {"epochs": 1, "batch_size": 4, "hidden": 4}})
    task = plan_units({"study": p.translation.variant("study")}, p.cyclegan, p.seed, "cpu", _harvest(tmp_path),
                      tmp_path / "cache")[0]
    seen = []
    monkeypatch.setattr(step, "train_unit", lambda unit, variant, cfg, *a, **k: seen.append(
        (cfg.device, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        step.train_task(task)
        step.train_task(dataclasses.replace(task, cfg=dataclasses.replace(task.cfg, device="cuda")))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    assert seen == [("cpu", True, True), ("cuda", False, False)]  # cpu leaves the flags alone

def test_save_torch_gives_the_same_bytes_at_any_path(tmp_path: Path) -> None:
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epochs": 3}}
    save_torch(tmp_path / "a.pt", obj)
    save_torch(tmp_path / "sub" / "other-name.pt", {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epochs": 3}})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "other-name.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], obj["w"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.pt", "other-name.pt", "sub"]  # no temporaries

def test_save_load_generators_reproduce_translate(tmp_path: Path) -> None:
    a, b = _zoo(4, c=16, d=6), _zoo(6, c=16, d=6, seed=1)
    res = train_cyclegan(a, b, config(epochs=1))
    path = tmp_path / "gens.pt"
    save_generators(path, res, meta={"layer": "conv2"})
    g_ab, g_ba, scaler, meta = load_generators(path)
    assert meta["layer"] == "conv2" and meta["channels"] == 16 and meta["sample_shape"] == [16, 6, 5, 5]
    assert scaler == res.scaler
    out = translate(res.G_A2B, res.scaler, a)
    assert out.shape == a.shape
    assert float(out.abs().max()) < res.scaler.scale  # Tanh output, back in kernel units
    assert torch.equal(out, translate(g_ab, scaler, a))
    assert torch.equal(translate(res.G_B2A, res.scaler, b), translate(g_ba, scaler, b))
    # Batching may change conv kernels' summation order, so only closeness across batch sizes.
    torch.testing.assert_close(translate(g_ab, scaler, a, batch_size=3), out)
    torch.testing.assert_close(translate(g_ab, scaler, a[0]), out[0])  # one [C, D, 5, 5] sample


def test_kernel_stat_distance() -> None:
    x, y = _zoo(20, seed=0), _zoo(20, seed=1)
    assert kernel_stat_distance(x, x) == 0.0
    near = kernel_stat_distance(x, y)
    far = kernel_stat_distance(x, x + 0.5)
    assert 0 < near < far
    assert kernel_stat_distance(x + 0.5, x) == pytest.approx(far)
    assert kernel_stat_distance(3 * x, 3 * (x + 0.5)) == pytest.approx(far)  # scale invariant


def test_bad_inputs_raise_clear_errors() -> None:
    a, b = _zoo(3), _zoo(3, seed=1)
    a[1, 0, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="A contains 1 NaN/inf"):
        train_cyclegan(a, b, TINY)
    with pytest.raises(ValueError, match=r"same layer"):
        train_cyclegan(_zoo(3), _zoo(3, c=16, d=6), TINY)
    with pytest.raises(ValueError, match=r"\[N, C, D, 5, 5\]"):
        train_cyclegan(torch.zeros(3, 6, 3, 3, 3), b, TINY)
    with pytest.raises(ValueError, match="at least 1"):
        train_cyclegan(torch.zeros(0, 6, 3, 5, 5), b, TINY)
    with pytest.raises(ValueError, match="NaN/inf"):
        kernel_stat_distance(a, b)


def test_divergence_raises() -> None:
    cfg = config(epochs=2, max_loss=1e-6)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 .*loss_G=.*lower learning rate"):
        train_cyclegan(_zoo(3), _zoo(3, seed=1), cfg)


@pytest.mark.parametrize("c,d,rgb", [(6, 3, True), (16, 6, False)])
def test_kernel_grid_figure_rows_and_save(tmp_path: Path, c: int, d: int, rgb: bool) -> None:
    panels = {"real A": _zoo(1, c, d)[0], "G_A2B(A)": _zoo(1, c, d, seed=1)[0], "real B": _zoo(1, c, d, seed=2)[0]}
    fig = kernel_grid_figure(panels, max_kernels=4, title="conv")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(panels)  # a row per panel
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ch 0", "ch 1", "ch 2", "ch 3"]  # max_kernels columns
    img = np.asarray(ax.images[0].get_array())
    assert img.shape[:2] == (3 * 6 - 1, 4 * 6 - 1)  # 5x5 kernels, one blank pixel between them
    vmax = max(float(w[:4].abs().max()) for w in panels.values())
    if rgb:  # kernel (row 1, ch 2) in the mosaic: 0.5 + 0.5 w / vmax, opaque; the gaps transparent
        want = np.clip(0.5 + 0.5 * panels["G_A2B(A)"][2].permute(1, 2, 0).numpy() / vmax, 0, 1)
        np.testing.assert_allclose(img[6:11, 12:17, :3], want, rtol=1e-6)
        assert (img[6:11, 12:17, 3] == 1).all() and (img[5, :, 3] == 0).all()
    else:  # input channel 0 on one symmetric scale, NaN gaps
        np.testing.assert_allclose(img[6:11, 12:17], panels["G_A2B(A)"][2, 0].numpy(), rtol=1e-6)
        assert np.isnan(img[5]).all() and ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
    assert (len(fig.axes) == 1) == rgb  # a colour bar only for the single-channel rendering
    out = save_figure(fig, tmp_path / "figs" / "grid.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.png"]
    with pytest.raises(ValueError, match=r"panel 'x' must be one model's layer weight"):
        kernel_grid_figure({"x": torch.zeros(6, 3, 5)})


# --- the reference CycleGAN's training details ----------------------------------------------------------------


def test_lr_factor_constant_then_linear_to_zero() -> None:
    assert [lr_factor(e, 4, False) for e in range(1, 5)] == [1.0] * 4
    assert [lr_factor(e, 4, True) for e in range(1, 5)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    f = [lr_factor(e, 200, True) for e in range(1, 201)]
    assert f[:100] == [1.0] * 100 and f[100] == pytest.approx(100 / 101) and f[-1] == pytest.approx(1 / 101)
    steps = [a - b for a, b in zip(f[100:], f[101:])]
    assert steps == pytest.approx([1 / 101] * 99)  # linear: the same step every epoch, next one would be 0
    assert lr_factor(1, 1, True) == 0.5  # one epoch: no constant half, decays at once


def test_lr_decay_sets_every_optimiser_per_epoch(monkeypatch) -> None:
    seen: list[float] = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    a, b = _zoo(4), _zoo(4, seed=1)
    train_cyclegan(a, b, config(epochs=4, lr=1e-3, lr_decay=True))
    per_epoch = [seen[i:i + 3] for i in range(0, len(seen), 3)]  # G, D_A, D_B; one step per epoch here
    assert [p[0] for p in per_epoch] == pytest.approx([1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    assert all(len(set(p)) == 1 for p in per_epoch)


@pytest.mark.parametrize("arch", ["volume", "set"])
def test_raw_discriminator_is_the_sigmoid_one_before_its_sigmoid(arch: str) -> None:
    x = torch.randn(3, 6, 3, 5, 5)
    torch.manual_seed(0)
    sig = make_discriminator(arch, 6, 8, "sigmoid")
    torch.manual_seed(0)
    raw = make_discriminator(arch, 6, 8, "raw")
    assert isinstance(sig, Discriminator if arch == "volume" else SetDiscriminator)
    with torch.no_grad():
        s, r = sig(x), raw(x)
    assert s.shape == r.shape == (3, 1, 3, 5, 5)
    assert bool(((s > 0) & (s < 1)).all()) and float(r.abs().max()) > 0
    torch.testing.assert_close(torch.sigmoid(r), s)
    with pytest.raises(ValueError, match="disc_output: must be one of sigmoid, raw"):
        make_discriminator(arch, 6, 8, "tanh")
    with pytest.raises(ValueError, match="disc_output"):
        config(disc_output="softmax")


def test_image_pool_worked_example() -> None:
    """Size 2: the first two samples are stored and returned; then each sample is swapped for a stored one with
    probability 0.5 (seeded), else returned as is; size 0 returns the batch and draws nothing."""
    x = torch.arange(6, dtype=torch.float32).reshape(6, 1)
    pool = ImagePool(2, seed=0)
    assert pool.query(x[:2]).flatten().tolist() == [0.0, 1.0]
    assert [t.item() for t in pool.items] == [0.0, 1.0]
    # replay the pool's own draws by hand
    g = torch.Generator().manual_seed(0)
    stored, expect = [0.0, 1.0], []
    for v in (2.0, 3.0, 4.0, 5.0):
        if float(torch.rand((), generator=g)) < 0.5:
            i = int(torch.randint(2, (), generator=g))
            expect.append(stored[i])
            stored[i] = v
        else:
            expect.append(v)
    out = pool.query(x[2:]).flatten().tolist()
    assert out == expect and [t.item() for t in pool.items] == stored
    assert out != [2.0, 3.0, 4.0, 5.0]  # with this seed, at least one sample came from the pool
    # over many draws about half of the returned samples are old ones
    big = ImagePool(5, seed=1)
    big.query(-torch.ones(5, 1))
    fresh = torch.arange(2000, dtype=torch.float32).reshape(-1, 1)
    old = sum(float(a) != float(b) for a, b in zip(big.query(fresh).flatten(), fresh.flatten()))
    assert 900 < old < 1100
    none = ImagePool(0, seed=0)
    assert none.query(x) is x and none.items == []
    state = pool.state()
    again = ImagePool(2, seed=99)
    again.load(state, "cpu")
    assert torch.equal(again.query(x), pool.query(x))  # resumable: same stored samples and generator


def test_study_settings_leave_the_trajectory_unchanged_and_new_ones_change_it() -> None:
    a, b = _zoo(5, seed=0), _zoo(7, seed=1, shift=0.1)
    base = train_cyclegan(a, b, TINY)
    same = train_cyclegan(a, b, dataclasses.replace(TINY, lr_decay=False, disc_output="sigmoid", pool_size=0))
    assert _states_equal(base, same)
    for change in ({"lr_decay": True}, {"disc_output": "raw"}, {"pool_size": 3}):
        assert not _states_equal(base, train_cyclegan(a, b, dataclasses.replace(TINY, **change))), change


def test_set_generator_starts_as_identity_and_is_equivariant_along_d(tmp_path: Path) -> None:
    x = torch.randn(2, 19, 6, 5, 5)
    g = SetGenerator(19, 8)
    torch.testing.assert_close(g(x), x)  # zero-initialised last layer
    torch.nn.init.normal_(g.out.weight, std=0.1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    y = g(x)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(g(x[:, :, perm]), y[:, :, perm], rtol=1e-5, atol=1e-6)
    d = SetDiscriminator(19, 8, "raw")
    torch.testing.assert_close(d(x[:, :, perm]), d(x)[:, :, perm], rtol=1e-5, atol=1e-6)
    res = train_cyclegan(x, x.flip(0) * 0.5, config(epochs=1, batch_size=2, arch="set"))
    save_generators(tmp_path / "g.pt", res)
    g_ab, _, scaler, meta = load_generators(tmp_path / "g.pt")
    assert isinstance(g_ab, SetGenerator) and meta["arch"] == "set"
    assert torch.equal(translate(g_ab, scaler, x), translate(res.G_A2B, res.scaler, x))


def test_a_time_limit_stops_every_unit_at_a_checkpoint_and_a_rerun_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    from conftest import make_params
    from zoofusion.executor import TimeLimitReached

    p = make_params({"cyclegan": {"epochs": 2, "batch_size": 4, "hidden": 4, "checkpoint_every": 1,
                                  "grid_every": 1}})
    variants = {name: p.translation.variant(name) for name in VARIANTS}
    kernels = _harvest(tmp_path / "kernels")
    fresh = train_units(plan_units(variants, p.cyclegan, p.seed, "cpu", kernels, tmp_path / "fresh-cache"),
                        tmp_path / "fresh", 1)
    tasks = plan_units(variants, p.cyclegan, p.seed, "cpu", kernels, tmp_path / "cache", time_limit_s=1e-9)
    assert all(t.deadline > 0 for t in tasks)
    with pytest.raises(TimeLimitReached, match=r"study/conv1 at epoch 1 of 2.*aligned/pair at epoch 1 of 2"):
        train_units(tasks, tmp_path / "out", 1)
    assert list((tmp_path / "out").iterdir()) == []  # no variant folder: nothing half-written is swapped in
    again = train_units(plan_units(variants, p.cyclegan, p.seed, "cpu", kernels, tmp_path / "cache"), tmp_path / "out", 1)
    assert {r.resumed_at for rs in again.values() for r in rs} == {1}  # every unit went on from its checkpoint
    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh") and set(again) == set(fresh)


def test_untrained_generators_are_saved_reproducible_by_seed_and_differ_from_the_trained(tmp_path: Path,
                                                                                          unit_files) -> None:
    """The translation control: a unit's generators at initialisation (`generators_init.pt`), beside the trained
    ones, whose bytes it leaves as they were."""
    unit, files = unit_files
    cfg = config(epochs=2, seed=3)
    _, trained_bytes = _step(unit_files, cfg, tmp_path / "out", tmp_path / "cache")
    g0, _, s0, meta0 = load_generators(tmp_path / "out" / "conv1" / "generators_init.pt")
    gt, _, st, meta = load_generators(tmp_path / "out" / "conv1" / "generators.pt")
    assert (meta0["epochs_trained"], meta["epochs_trained"]) == (0, 2) and s0 == st
    # reproducible by seed: the same seed builds the same nets, another seed others
    same, other = initial_cyclegan(unit.A, unit.B, cfg), initial_cyclegan(unit.A, unit.B, config(epochs=2, seed=4))
    assert all(torch.equal(v, same.G_A2B.state_dict()[k]) for k, v in g0.state_dict().items())
    assert not all(torch.equal(v, other.G_A2B.state_dict()[k]) for k, v in g0.state_dict().items())
    # the untrained translation is not the trained one
    assert not torch.allclose(translate(g0, s0, unit.A), translate(gt, st, unit.A), atol=1e-4)
    # the trained generators' bytes are those of a plain training run
    save_generators(tmp_path / "direct.pt", train_cyclegan(unit.A, unit.B, cfg), meta={"layer": "conv1",
                                                                                       "variant": "study"})
    assert (tmp_path / "direct.pt").read_bytes() == trained_bytes
