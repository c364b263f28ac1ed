"""Evaluation figures: UMAP scatter (truth vs clusters), cosine-similarity heatmap, t-SNE scatter.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot (so no global figure
registry, no GUI backend, nothing to close); save it with ``zoofusion.kernel_grid.save_figure``.
"""

from __future__ import annotations

import logging

import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from zoofusion.core.metrics import check_labels
from zoofusion.core.protocol import rows_identical

log = logging.getLogger(__name__)

__all__ = ["umap_scatter", "cosine_heatmap", "tsne_scatter", "kinds_boxplot", "forest_plot"]

_CLASS_COLOURS = ("#9e9e9e", "#d62728")  # 0 = other (grey), 1 = black cat (red)
_CLASS_NAMES = ("other (0)", "black cat (1)")
_NOISE_COLOUR = "#bdbdbd"


def _points(x: np.ndarray, name: str, min_dims: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] < min_dims:
        raise ValueError(f"{name} must be 2-d (n_points, >= {min_dims} dims) and non-empty, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; clean it before plotting")
    return a


def _binary(y: np.ndarray, n: int, name: str = "y_true") -> np.ndarray:
    return check_labels(y, name, n)


def _scatter_by_class(ax, xy: np.ndarray, y: np.ndarray) -> None:
    # negatives first so the (rarer) positives are drawn on top
    for cls in (0, 1):
        m = y == cls
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=8, c=_CLASS_COLOURS[cls], label=f"{_CLASS_NAMES[cls]} n={int(m.sum())}",
                       alpha=0.8, linewidths=0)
    ax.legend(loc="best", fontsize=7, markerscale=2)


def _xy(a: np.ndarray) -> np.ndarray:
    """First two coordinates; a 1-d embedding is drawn against a zero y-axis."""
    return a[:, :2] if a.shape[1] >= 2 else np.column_stack([a[:, 0], np.zeros(a.shape[0])])


def umap_scatter(emb: np.ndarray, y_true: np.ndarray, clusters: np.ndarray, title: str) -> Figure:
    """Two panels: the embedding coloured by true label (left) and by cluster id (right; -1 noise grey).

    Only the first two embedding dimensions are drawn.
    """
    e = _points(emb, "emb", 1)
    y = _binary(y_true, e.shape[0])
    c = np.asarray(clusters)
    if c.ndim != 1 or c.shape[0] != e.shape[0]:
        raise ValueError(f"clusters must be 1-d with one id per point ({e.shape[0]}), got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer) and c.dtype != bool:
        raise ValueError(f"clusters must hold integer ids, got dtype {c.dtype}")
    c = c.astype(np.int64)
    xy = _xy(e)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax_t, ax_c = fig.subplots(1, 2, sharex=True, sharey=True)
    _scatter_by_class(ax_t, xy, y)
    ax_t.set_title("true label")
    ids = np.unique(c)
    real = ids[ids >= 0]
    for i, k in enumerate(real):
        m = c == k
        ax_c.scatter(xy[m, 0], xy[m, 1], s=8, color=f"C{i % 10}", label=f"cluster {k} n={int(m.sum())}",
                     alpha=0.8, linewidths=0)
    if (c == -1).any():
        m = c == -1
        ax_c.scatter(xy[m, 0], xy[m, 1], s=8, color=_NOISE_COLOUR, marker="x", label=f"noise n={int(m.sum())}",
                     linewidths=0.8)
    if len(ids) <= 12:  # a legend with dozens of DBSCAN clusters hides the plot
        ax_c.legend(loc="best", fontsize=7, markerscale=2)
    ax_c.set_title(f"clusters ({len(real)} + {'noise' if (c == -1).any() else 'no noise'})")
    for ax in (ax_t, ax_c):
        ax.set_xlabel("dim 1")
    ax_t.set_ylabel("dim 2")
    fig.suptitle(title)
    return fig


def cosine_heatmap(features: np.ndarray, y_true: np.ndarray, title: str) -> Figure:
    """Cosine-similarity matrix of the feature rows, rows/cols sorted by label (0 first), class boundary lines.

    An all-zero row has no direction; its similarity to everything is drawn as 0. Axes: heatmap + colorbar.
    """
    x = _points(features, "features", 1)
    y = _binary(y_true, x.shape[0])
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = np.clip(u @ u.T, -1.0, 1.0)
    fig = Figure(figsize=(6, 5.2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    n0 = int((y == 0).sum())
    if 0 < n0 < y.size:
        for line in (ax.axhline, ax.axvline):
            line(n0 - 0.5, color="k", linewidth=1.0)
    ax.set_xlabel(f"points sorted by label (0: {n0}, 1: {y.size - n0})")
    ax.set_ylabel("points sorted by label")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_title(title)
    return fig


def tsne_scatter(features: np.ndarray, y_true: np.ndarray, seed: int, title: str,
                 perplexity: float = 30.0) -> Figure:
    """sklearn t-SNE (PCA init, perplexity clipped to < n) of the features, coloured by true label.

    All-identical rows (t-SNE crashes on them) are drawn as one point at the origin, noted in the title.
    """
    x = _points(features, "features", 1)
    y = _binary(y_true, x.shape[0])
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n}")
    if not perplexity > 0:
        raise ValueError(f"perplexity must be > 0, got {perplexity!r}")
    note = ""
    if rows_identical(x):
        log.warning("tsne_scatter: all %d feature rows identical; skipping t-SNE", n)
        xy = np.zeros((n, 2))
        note = " (all features identical)"
    else:
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))  # sklearn needs perplexity < n
        # OpenMP threads only spin on a shared box: 600 points took 8 s threaded vs 2 s on one thread
        with threadpool_limits(1):
            xy = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto",
                      random_state=int(seed)).fit_transform(x)
        note = f" (perplexity {perp:g})"
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    _scatter_by_class(ax, xy, y)
    ax.set_title(title + note)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    return fig


def kinds_boxplot(values: dict[str, dict[str, list[float]]], metrics: dict[str, str]) -> Figure:
    """One panel per method: the distribution of its verdict metric on test over each kind's candidates
    (box: quartiles; points: candidates; dashed line: chance)."""
    chance = {"auroc": 0.5, "ari": 0.0}
    fig = Figure(figsize=(4.2 * len(values), 3.8))
    for i, (method, by_kind) in enumerate(values.items()):
        ax = fig.add_subplot(1, len(values), i + 1)
        kinds = [k for k, v in by_kind.items() if len(v)]
        data = [np.asarray(by_kind[k], dtype=float) for k in kinds]
        ax.boxplot(data, showfliers=False)
        for j, d in enumerate(data):
            ax.scatter(np.full(len(d), j + 1) + np.linspace(-0.15, 0.15, len(d)), d, s=4, alpha=0.4)
        ax.axhline(chance.get(metrics[method], 0.0), ls="--", c="grey", lw=0.8)
        ax.set_xticks(range(1, len(kinds) + 1), kinds, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{method}: test {metrics[method]}")
    fig.tight_layout()
    return fig


def forest_plot(rows: list[dict], title: str = "") -> Figure:
    """Every comparison as a point (its difference) with its interval, one panel per group (e.g. method and
    metric), a dashed line at 0. rows: {"panel", "label", "diff", "low", "high", "primary": bool, "held": bool}
    — the primary row is drawn first, in red and bold; a row whose (Holm-adjusted) difference holds is black,
    others grey."""
    if not rows:
        raise ValueError("forest_plot needs at least one row")
    panels = list(dict.fromkeys(r["panel"] for r in rows))
    n_max = max(sum(r["panel"] == p for r in rows) for p in panels)
    fig = Figure(figsize=(4.6 * len(panels), 1.2 + 0.24 * n_max), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        group = sorted((r for r in rows if r["panel"] == panel), key=lambda r: not r["primary"])
        ys = np.arange(len(group))[::-1]
        for y, r in zip(ys, group):
            colour = "#d62728" if r["primary"] else ("black" if r["held"] else "#9e9e9e")
            ax.plot([r["low"], r["high"]], [y, y], color=colour, lw=2.2 if r["primary"] else 1.2)
            ax.plot([r["diff"]], [y], "D" if r["primary"] else "o", color=colour, ms=6 if r["primary"] else 4)
        ax.axvline(0.0, ls="--", c="grey", lw=0.8)
        ax.set_yticks(ys, [r["label"] for r in group], fontsize=7)
        for tick, r in zip(ax.get_yticklabels(), group):
            if r["primary"]:
                tick.set_color("#d62728")
                tick.set_fontweight("bold")
        ax.set_ylim(-0.7, len(group) - 0.3)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("difference (generated − other), 95% interval", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def novelty_scatter(panels: dict[str, dict[str, tuple[list[float], list[float]]]], metrics: dict[str, str],
                    near_copy: float, zoo_nearest: dict[str, float]) -> Figure:
    """Score against novelty, as Zeng et al. (arXiv 2506.07998) draw it: one panel per method, one colour per
    kind; x = a candidate's distance to its nearest zoo model relative to that zoo's typical distance between two
    of its models, y = its test verdict metric. Dashed: the near-copy threshold; dotted: the median distance of a
    zoo model to its nearest other zoo model (per zoo), the zoo's own spacing."""
    fig = Figure(figsize=(4.6 * max(1, len(panels)), 4.0))
    for i, (method, by_kind) in enumerate(panels.items()):
        ax = fig.add_subplot(1, max(1, len(panels)), i + 1)
        for kind, (x, y) in by_kind.items():
            ax.scatter(x, y, s=10, alpha=0.6, label=kind)
        ax.axvline(near_copy, ls="--", c="grey", lw=0.8)
        for letter, v in zoo_nearest.items():
            if v is not None:
                ax.axvline(v, ls=":", c="black", lw=0.8)
                ax.text(v, 1.0, f" zoo {letter}", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        ax.set_xlabel("distance to nearest zoo model (relative)")
        ax.set_ylabel(f"test {metrics.get(method, '')}")
        ax.set_title(method)
        if i == 0:
            ax.legend(fontsize=6, markerscale=1.5)
    fig.tight_layout()
    return fig
