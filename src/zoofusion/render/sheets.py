"""Contact sheets: a grid of sample images per class, so a person can see what a dataset holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def contact_sheet(images: np.ndarray, labels: np.ndarray, names: dict[int, str], per_class: int,
                  scale: int = 2) -> Image.Image:
    """A grid of up to `per_class` samples for each label, one block of rows per class, captioned."""
    cols = 10
    tile = 32 * scale
    blocks = []
    for lab in sorted(names):
        members = np.flatnonzero(labels == lab)
        # Spread picks over the whole (id-sorted) set so every source class shows up.
        idx = members[np.linspace(0, len(members) - 1, min(per_class, len(members))).astype(int)]
        rows = max(1, -(-len(idx) // cols))
        block = Image.new("RGB", (cols * tile, 14 + rows * tile), "white")
        ImageDraw.Draw(block).text((2, 1), f"{names[lab]} (label {lab}, n={int((labels == lab).sum())})", fill="black")
        for j, i in enumerate(idx):
            im = Image.fromarray(images[i]).resize((tile, tile), Image.NEAREST)
            block.paste(im, ((j % cols) * tile, 14 + (j // cols) * tile))
        blocks.append(block)
    sheet = Image.new("RGB", (cols * tile, sum(b.height for b in blocks)), "white")
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height
    return sheet


CLASS_NAMES = {
    "black": {1: "dark object", 0: "random"},
    "cat": {1: "cat", 0: "random"},
    "val": {1: "black cat", 0: "other"},
    "test_split": {1: "black cat", 0: "other"},
    "test": {1: "black cat", 0: "other"},
}


def save_sheet(folder: Path, name: str, images: np.ndarray, labels: np.ndarray, per_class: int) -> Path:
    """Write `folder/sheets/<name>.png`, a contact sheet of a dataset for a person to glance at."""
    (folder / "sheets").mkdir(parents=True, exist_ok=True)
    contact_sheet(images, labels, CLASS_NAMES.get(name, {1: "positive", 0: "negative"}), per_class).save(
        folder / "sheets" / f"{name}.png", optimize=False)
    return folder / "sheets" / f"{name}.png"
