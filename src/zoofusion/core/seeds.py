"""Every random choice derives from the one params.yaml seed, through a stable hash of its purpose."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *tags: str | int) -> int:
    """A stable 31-bit seed for one purpose, derived from the single params.yaml seed."""
    h = hashlib.sha256(repr((seed,) + tags).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def rng(seed: int, *tags: str | int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *tags))
