"""Tables as CSV and Markdown, and names safe for files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

METHOD_TITLES = {"kmeans": "KMeans", "ocsvm": "One-class SVM", "dbscan": "DBSCAN",
                 "kmeans_direct": "KMeans (no UMAP)", "ocsvm_direct": "One-class SVM (no UMAP)",
                 "dbscan_direct": "DBSCAN (no UMAP, eps on val)", "probe": "linear probe"}
ARM_TITLES = {"umap": "UMAP (the study's protocol)", "direct": "no UMAP", "probe": "linear probe"}
KIND_NAMES = {"generated": "generated (CycleGAN-translated)",
              "generated-study": "kernels of the study's translation (per-layer CycleGANs)",
              "generated-aligned": "kernels of the aligned translation (aligned channels, conv1 + conv2 together)",
              "random": "random init (untrained)",
              "zoo-A": "black-zoo models, untranslated", "zoo-B": "cat-zoo models, untranslated",
              "average": "the average of a black and a cat model", "aligned": "the channel-aligned merge",
              "concat": "both models' features (800-d)", "pixels": "raw pixels", "darkness": "the darkness feature",
              "avg-k": "the average of k aligned models of one zoo",
              "gauss-fit": "samples of a per-parameter Gaussian fitted to the aligned zoo"}  # noise-<sigma>: its name


def write_table(rows: list[dict], base: Path, title: str) -> None:
    """CSV and Markdown versions of one table."""
    base.parent.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0]) if rows else []
    with base.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")


def safe(cid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", cid)
