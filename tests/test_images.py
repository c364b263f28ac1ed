"""zoofusion.images: perceptual hashes as imagehash computes them, and near-copies found by Hamming distance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import TARBALL
from zoofusion.images import near_copies, perceptual_hashes, read_images


def images(n: int, seed: int = 0) -> np.ndarray:
    """Random noise and smooth structure (gradients, blobs), as real photos have both."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = []
    for k in range(n):
        a, b, c = gen.uniform(-1, 1, 3)
        smooth = (128 + 100 * np.sin(3 * a * xx + 2 * b * yy + c))[..., None] * gen.uniform(0.5, 1, 3)
        noise = gen.integers(0, 255, (32, 32, 3))
        out.append(np.clip(smooth if k % 2 else noise, 0, 255).astype(np.uint8))
    return np.stack(out)


def copy_of(img: np.ndarray) -> np.ndarray:
    """Upscaled, re-encoded as a JPEG of quality 60, and scaled back: a near-copy under another name."""
    im = Image.fromarray(img).resize((64, 64), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((32, 32), Image.BILINEAR))


def test_perceptual_hash_is_imagehash_phash():
    imagehash = pytest.importorskip("imagehash")
    x = images(40)
    ours = perceptual_hashes(x)
    ref = np.array([int(str(imagehash.phash(Image.fromarray(im))), 16) for im in x], dtype=np.uint64)
    assert np.array_equal(ours, ref)
    assert np.array_equal(perceptual_hashes(np.concatenate([x] * 110))[-40:], ours)  # blocked: same hashes


@pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data beside the repo")
def test_a_reencoded_copy_is_near_and_other_images_are_far():
    """Real photos (CIFAR-10 train): each copy lands within 4 bits of its original and of no other image."""
    x = read_images([f"train/{c}/{i:04d}.jpg" for c in ("cat", "ship", "frog") for i in range(20)], TARBALL)
    h, hc = perceptual_hashes(x), perceptual_hashes(np.stack([copy_of(im) for im in x]))
    pairs = near_copies(hc, h, 4)
    assert {(i, j) for i, j, _ in pairs} == {(i, i) for i in range(len(x))}
    with pytest.raises(ValueError, match=r"uint8 images \[N,32,32,3\]"):
        perceptual_hashes(x[:, :16])


def test_near_copies_counts_differing_bits():
    a = np.array([0b1011, 2**63], dtype=np.uint64)
    b = np.array([0b1000, 0, 2**63 + 1], dtype=np.uint64)
    # 1011^1000 = 0011: 2 bits; 1011^0: 3; 2^63 ^ 1000: 2; 2^63 ^ 0: 1; 2^63 ^ (2^63 + 1): 1
    assert near_copies(a, b, 2) == [(0, 0, 2), (1, 0, 2), (1, 1, 1), (1, 2, 1)]
    assert near_copies(a, b, 0) == []
