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


def kernel_grid_figure(panels: Mapping[str, Tensor], max_kernels: int = 16, *,
                       title: str | None = None) -> Figure:
    """One row per panel showing its first ``max_kernels`` kernels on a shared symmetric scale.

    Each panel is one model's layer weight ``[C, D, h, w]``; column ``c`` shows output channel
    ``c``. If every panel has ``D == 3`` the kernel is rendered as RGB (``0.5 + 0.5 * w / vmax``,
    so grey is 0); otherwise its first input channel is drawn with a diverging colormap on
    ``[-vmax, vmax]`` plus a colour bar. ``vmax`` is the max |w| over all shown kernels, so rows
    are directly comparable. The figure is not registered with pyplot (no global state to leak).
    """
    _validate_panels(panels, max_kernels)
    shown = {name: w.detach().to("cpu", torch.float32)[:max_kernels].numpy() for name, w in panels.items()}
    rgb = all(w.shape[1] == 3 for w in shown.values())
    vmax = max(float(np.abs(w).max()) for w in shown.values())
    vmax = vmax if vmax > 0 else 1.0  # all-zero panels: any scale draws them grey
    n_rows, n_cols = len(shown), max(w.shape[0] for w in shown.values())

    fig = Figure(figsize=(1.0 * n_cols + 1.6, 1.05 * n_rows + (0.5 if title else 0.2)), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    image = None
    for r, (name, w) in enumerate(shown.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= w.shape[0]:
                ax.set_axis_off()
                continue
            if rgb:
                ax.imshow(np.clip(0.5 + 0.5 * np.transpose(w[c], (1, 2, 0)) / vmax, 0.0, 1.0),
                          interpolation="nearest")
            else:
                image = ax.imshow(w[c, 0], cmap=CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
            if r == 0:
                ax.set_title(f"ch {c}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="weight")
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
