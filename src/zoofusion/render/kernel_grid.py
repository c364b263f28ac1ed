"""Kernel grid figures (real vs translated layer weights) and an atomic PNG writer."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import matplotlib

# Only pick Agg if nobody has imported pyplot yet: switching later would close their figures.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

logger = logging.getLogger(__name__)

CMAP = "RdBu_r"


def _validate_panels(panels: Mapping[str, Tensor], max_kernels: int) -> None:
    if not isinstance(max_kernels, int) or isinstance(max_kernels, bool) or max_kernels < 1:
        raise ValueError(f"max_kernels must be a positive int, got {max_kernels!r}")
    if not panels:
        raise ValueError("panels is empty; pass e.g. {'real A': A[0], 'G_A2B(A)': fake_B[0]}")
    for name, w in panels.items():
        if not isinstance(w, Tensor) or w.ndim != 4 or w.shape[0] < 1 or w.shape[1] < 1:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"panel {name!r} must be one model's layer weight [C, D, h, w], got {shape}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"panel {name!r} contains NaN/inf values")


def mosaic(shown: Mapping[str, np.ndarray], vmax: float, rgb: bool) -> np.ndarray:
    """The kernels as one image: a row per panel, a column per output channel, one blank pixel between kernels.
    RGB: RGBA with ``0.5 + 0.5 * w / vmax`` (grey = 0) and transparent gaps; otherwise input channel 0 with NaN
    gaps (drawn blank)."""
    h, w = next(iter(shown.values())).shape[2:]
    n_rows, n_cols = len(shown), max(k.shape[0] for k in shown.values())
    out = np.full(((h + 1) * n_rows - 1, (w + 1) * n_cols - 1, 4) if rgb else ((h + 1) * n_rows - 1,
                  (w + 1) * n_cols - 1), 0.0 if rgb else np.nan)
    for r, k in enumerate(shown.values()):
        for c in range(k.shape[0]):
            y, x = r * (h + 1), c * (w + 1)
            if rgb:
                out[y:y + h, x:x + w, :3] = np.clip(0.5 + 0.5 * np.transpose(k[c], (1, 2, 0)) / vmax, 0.0, 1.0)
                out[y:y + h, x:x + w, 3] = 1.0
            else:
                out[y:y + h, x:x + w] = k[c, 0]
    return out


def kernel_grid_figure(panels: Mapping[str, Tensor], max_kernels: int = 16, *,
                       title: str | None = None) -> Figure:
    """One row per panel showing its first ``max_kernels`` kernels on a shared symmetric scale.

    Each panel is one model's layer weight ``[C, D, h, w]``; column ``c`` shows output channel
    ``c``. If every panel has ``D == 3`` the kernel is rendered as RGB (``0.5 + 0.5 * w / vmax``,
    so grey is 0); otherwise its first input channel is drawn with a diverging colormap on
    ``[-vmax, vmax]`` plus a colour bar. ``vmax`` is the max |w| over all shown kernels, so rows
    are directly comparable. The kernels are one :func:`mosaic` image on one axes (an axes per kernel took
    ~1 s a figure to lay out). The figure is not registered with pyplot (no global state to leak).
    """
    _validate_panels(panels, max_kernels)
    shown = {name: w.detach().to("cpu", torch.float32)[:max_kernels].numpy() for name, w in panels.items()}
    if len({w.shape[2:] for w in shown.values()}) > 1:
        raise ValueError(f"panels must share one kernel size, got {sorted({w.shape[2:] for w in shown.values()})}")
    rgb = all(w.shape[1] == 3 for w in shown.values())
    vmax = max(float(np.abs(w).max()) for w in shown.values())
    vmax = vmax if vmax > 0 else 1.0  # all-zero panels: any scale draws them grey
    n_rows, n_cols = len(shown), max(w.shape[0] for w in shown.values())
    h, w = next(iter(shown.values())).shape[2:]

    fig = Figure(figsize=(1.0 * n_cols + 1.6, 1.05 * n_rows + (0.5 if title else 0.2)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(mosaic(shown, vmax, rgb), interpolation="nearest",
                      **({} if rgb else {"cmap": CMAP, "vmin": -vmax, "vmax": vmax}))
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(n_cols)], [f"ch {c}" for c in range(n_cols)], fontsize=7)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(n_rows)], list(shown), fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if not rgb:
        fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    suffix = f"RGB, grey = 0, |w| max {vmax:.3g}" if rgb else f"input channel 0, scale ±{vmax:.3g}"
    fig.suptitle(f"{title} ({suffix})" if title else suffix, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` atomically to ``path`` (format from its suffix), creating the folder; closes it.

    The image goes to a temporary file in the same folder first, then ``os.replace`` moves it in, so
    readers never see a half-written file. Returns the final path.
    """
    p = Path(path)
    fmt = p.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"figure path {p} has no suffix; use e.g. '.png' or '.pdf'")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
        if "matplotlib.pyplot" in sys.modules:  # pyplot-made figures stay alive until closed
            sys.modules["matplotlib.pyplot"].close(fig)
    logger.debug("saved figure %s", p)
    return p


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """``fig`` as PNG bytes (the bytes :func:`save_figure` writes to a ``.png``); closes it. For a worker process
    that renders a figure and hands it to the process that writes files."""
    import io

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
    return buf.getvalue()
