"""The report's rendering: figures from the pipeline's own records, Markdown tables, and offline HTML.

HTML comes from markdown-it-py (CommonMark + tables); every image is embedded as a data URI, so the page needs
no network and no CDN.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from markdown_it import MarkdownIt
from matplotlib.figure import Figure

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
         "th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}code{background:#f4f4f4}ul{margin:0.2em 0}")


def zoo_figure(final_val_acc: dict[str, np.ndarray]) -> Figure:
    """Histogram of final validation accuracy per domain."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for d, acc in final_val_acc.items():
        ax.hist(acc, bins=20, range=(0.4, 1.0), alpha=0.6, label=f"{d} (n={len(acc)})")
    ax.set_xlabel("final validation accuracy")
    ax.set_ylabel("models")
    ax.legend()
    ax.set_title("Zoo models on their own domain")
    fig.tight_layout()
    return fig


def cyclegan_figure(histories: dict[str, dict[str, list[float]]]) -> Figure:
    """Per-epoch losses of each layer's CycleGAN."""
    fig = Figure(figsize=(10, 3.4))
    for i, (layer, hist) in enumerate(histories.items()):
        ax = fig.add_subplot(1, len(histories), i + 1)
        for name, values in hist.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"CycleGAN {layer}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def md_table(rows: list[dict], cols: list[str] | None = None, limit: int | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols = cols or list(rows[0])
    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def md_to_html(md: str, folder: Path, title: str = "zoofusion report") -> str:
    """CommonMark (+ tables) to a standalone page; local images are inlined as data URIs (offline)."""
    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(md)
    for tok in tokens:
        for child in tok.children or []:
            if child.type == "image":
                src = child.attrGet("src") or ""
                if not src.startswith(("data:", "http:", "https:")):
                    data = base64.b64encode((folder / src).read_bytes()).decode()
                    child.attrSet("src", f"data:image/png;base64,{data}")
    body = parser.renderer.render(tokens, parser.options, {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
