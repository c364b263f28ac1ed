"""How dark an image is: the one number behind domain A ("black objects") and the darkness baseline."""

from __future__ import annotations

import numpy as np


def darkness(images: np.ndarray, luminance: int = 70) -> np.ndarray:
    """Fraction of pixels with luminance 0.299R+0.587G+0.114B below `luminance` in the central 24x24 crop."""
    crop = images[:, 4:28, 4:28, :].astype(np.float32)
    lum = crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (lum < luminance).mean(axis=(1, 2))
