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
                               f"{split}/<class>/<file>.jpg (see ../shared/data/README.md)")
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
