"""Reading images: a folder of class folders (or a .tar.gz of one), single files, or torchvision's CIFAR-10.

Every image gets an id `<split>/<class>/<file>` (e.g. `train/cat/0123.jpg`), the same whether it comes
from a folder, a tarball or the CIFAR-10 download, so labels and manifests refer to images the same way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoofusion.console import progress

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SIZE = 32


class ImageSourceError(ValueError):
    """The image source is missing, malformed, or holds an unreadable image."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    ids: np.ndarray  # str [N], `<split>/<class>/<file>`
    classes: np.ndarray  # str [N]


def decode(data: bytes, name: str) -> np.ndarray:
    """Decode one image to uint8 RGB 32x32 (resizing larger ones), naming the file if it is corrupt."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (SIZE, SIZE):
                im = im.resize((SIZE, SIZE), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageSourceError(f"{name}: corrupt or unreadable image ({e}); remove or replace that file") from None


def _wanted(name: str, split: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == split and name.lower().endswith(IMAGE_SUFFIXES)


def _member_name(raw: str) -> str:
    # Tarballs sometimes carry a leading "./" or a top folder; keep the last three parts.
    return "/".join(raw.replace("\\", "/").strip("./").split("/")[-3:])


def missing_source_message(path: Path) -> str:
    return (f"image source not found: tried {path.resolve()} — fix: set data.path in params.yaml to a folder of "
            f"class folders (train/<class>/*.jpg) or a .tar.gz of one, or set data.source: cifar10 to download "
            f"CIFAR-10 with torchvision (needs a network)")


def load_split(path: str | Path, split: str = "train") -> ImageSet:
    """Load every image of one split (`<split>/<class>/<file>`) from a folder or .tar.gz, sorted by id."""
    path = Path(path)
    if not path.exists():
        raise ImageSourceError(missing_source_message(path))
    found: dict[str, np.ndarray] = {}
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise ImageSourceError(f"{path}: not a folder or a tar archive; point data.path at a folder of class "
                                   f"folders or a .tar.gz of one")
        with tarfile.open(path, "r:*") as tf, progress(desc=f"reading {path.name}", unit="file") as bar:
            for m in tf:
                bar.update(1)
                name = _member_name(m.name)
                if m.isfile() and _wanted(name, split):
                    found[name] = decode(tf.extractfile(m).read(), f"{path}:{m.name}")
    else:
        for f in progress(sorted(path.glob(f"{split}/*/*")), desc=f"reading {path.name}", unit="file"):
            name = f"{split}/{f.parent.name}/{f.name}"
            if f.is_file() and _wanted(name, split):
                found[name] = decode(f.read_bytes(), str(f))
    if not found:
        raise ImageSourceError(f"{path}: no images under {split}/<class>/ — expected the layout "
                               f"{split}/<class>/<file>.jpg (see data/source/README.md)")
    ids = np.array(sorted(found))
    classes = np.array([i.split("/")[1] for i in ids])
    return ImageSet(np.stack([found[i] for i in ids]), ids, classes)


def read_images(paths: list[str], source: str | Path) -> np.ndarray:
    """Read images named either as files on disk or as members (`<split>/<class>/<file>`) of the image source."""
    source = Path(source)
    out: dict[str, np.ndarray] = {}
    members = []
    for p in paths:
        if Path(p).is_file():
            out[p] = decode(Path(p).read_bytes(), p)
        else:
            members.append(p)
    if members:
        if source.is_dir():
            for m in members:
                f = source / m
                if not f.is_file():
                    raise ImageSourceError(f"{m}: neither a file on disk nor a member of {source}")
                out[m] = decode(f.read_bytes(), str(f))
        elif source.is_file():
            want = set(members)
            with tarfile.open(source, "r:*") as tf:
                for m in tf:
                    name = _member_name(m.name)
                    if m.isfile() and name in want:
                        out[name] = decode(tf.extractfile(m).read(), f"{source}:{m.name}")
            lost = [m for m in members if m not in out]
            if lost:
                raise ImageSourceError(f"{lost[0]}: neither a file on disk nor a member of {source} "
                                       f"({len(lost)} such paths)")
        else:
            raise ImageSourceError(missing_source_message(source))
    return np.stack([out[p] for p in paths])


def cifar10_as_imageset(images: np.ndarray, targets: list[int], class_names: list[str], split: str) -> ImageSet:
    """Name torchvision CIFAR-10 images like the folder source: `<split>/<class>/NNNN.jpg`, numbered per class."""
    counters: dict[str, int] = {}
    ids, classes = [], []
    for t in targets:
        c = class_names[t]
        ids.append(f"{split}/{c}/{counters.get(c, 0):04d}.jpg")
        counters[c] = counters.get(c, 0) + 1
        classes.append(c)
    ids_arr = np.array(ids)
    order = np.argsort(ids_arr, kind="stable")
    return ImageSet(np.asarray(images, dtype=np.uint8)[order], ids_arr[order], np.array(classes)[order])


def load_cifar10(root: str | Path, split: str = "train") -> ImageSet:
    """Download (if needed) CIFAR-10 with torchvision into `root` and return it in the folder source's order."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as e:  # pragma: no cover - torchvision is a pinned dependency
        raise ImageSourceError(f"data.source: cifar10 needs torchvision ({e})") from None
    try:
        ds = CIFAR10(root=str(root), train=(split == "train"), download=True)
    except Exception as e:  # network errors come in many types
        raise ImageSourceError(f"CIFAR-10 download into {root} failed ({e}); without a network use "
                               f"data.source: folder with data.path pointing at the image tarball") from None
    return cifar10_as_imageset(ds.data, list(ds.targets), list(ds.classes), split)


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """One sha1 per image of its decoded uint8 pixels [N,32,32,3]: equal pixels, equal hash, whatever the path."""
    x = np.ascontiguousarray(images, dtype=np.uint8)
    return np.array([hashlib.sha1(im.tobytes()).hexdigest() for im in x])


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """imagehash's pHash (Zauner 2010, as `imagehash.phash` computes it: grey levels, 2-D DCT, the 8 x 8 lowest
    frequencies against their median) of every image [N,32,32,3] at once, as 64-bit integers. A resized or
    re-encoded copy of an image lands within a few bits of it; unrelated images differ in about half."""
    from scipy.fftpack import dct

    x = np.asarray(images, dtype=np.uint8)
    if x.ndim != 4 or x.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"perceptual_hashes needs uint8 images [N,{SIZE},{SIZE},3], got shape {x.shape}")
    out = np.empty(len(x), dtype=np.uint64)
    for i in range(0, len(x), 4096):  # blocks: 50k images at once would take gigabytes
        r, g, b = (x[i:i + 4096, ..., c].astype(np.int64) for c in range(3))
        grey = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.float64)  # PIL's convert("L")
        low = dct(dct(grey, axis=1), axis=2)[:, :8, :8].reshape(len(grey), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
        out[i:i + 4096] = np.packbits(bits, axis=1).view(">u8").ravel()
    return out


_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)  # set bits of each byte value


def near_copies(a: np.ndarray, b: np.ndarray, max_bits: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) of every pair of perceptual hashes a[i], b[j] at most `max_bits` apart."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    out = []
    for i in range(0, len(a), 64):  # blocks keep the XOR table small (64 x 50k pairs, 25 MB of bytes)
        x = a[i:i + 64, None] ^ b[None, :]
        d = _BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)  # popcount, byte by byte
        out += [(int(i + k), int(j), int(d[k, j])) for k, j in zip(*np.nonzero(d <= max_bits))]
    return out
