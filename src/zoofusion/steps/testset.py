"""Step `testset`: the held-out test set every reported number comes from.

By default it is the `test_split` the data stage built from the manual labels. A user may supply a
manifest instead (`testset.manifest`: a CSV with columns `path,label`, label 1 = black cat, 0 = other),
where a path is an image file on disk or a member of the image source (e.g. `test/cat/0123.jpg`).
Swapping the manifest reruns only this stage and evaluation, never the zoos. An image that is also in a
training domain or in val is refused, since scores on it would not be held out: images are compared by the
hash of their decoded pixels, so a copy of a training image under another path is caught too, and by a perceptual
hash (near-copies). The built split goes through the same two checks as a manifest.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

import zoofusion.layout as layout
from zoofusion.config import Params
from zoofusion.images import ImageSourceError, near_copies, perceptual_hashes, pixel_hashes, read_images
from zoofusion.io import atomic_dir, load_npz, save_npz
from zoofusion.render.sheets import save_sheet

log = logging.getLogger(__name__)
PREPARED = layout.PREPARED
OUT = layout.TESTSET
MANIFESTS = layout.MANIFESTS


def read_manifest(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Parse a `path,label` CSV; labels must be 0 or 1."""
    path = Path(path)
    if not path.is_file():
        raise ImageSourceError(f"testset.manifest: {path.resolve()} not found — fix the path in params.yaml, "
                               f"or set testset.manifest: \"\" to use the built test split")
    paths, labels = [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise ImageSourceError(f"{path}: a test manifest needs the columns path,label; found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            lab = (row["label"] or "").strip()
            if lab not in ("0", "1"):
                raise ImageSourceError(f"{path}:{line}: label must be 0 or 1 (1 = black cat), got {lab!r}")
            paths.append(row["path"].strip())
            labels.append(int(lab))
    if not paths:
        raise ImageSourceError(f"{path}: the manifest lists no images")
    if len(set(labels)) < 2:
        raise ImageSourceError(f"{path}: the manifest needs both labels 0 and 1 to score a clustering")
    dup = len(paths) - len(set(paths))
    if dup:
        raise ImageSourceError(f"{path}: {dup} paths are listed twice; list each image once")
    return paths, np.array(labels, dtype=np.int64)


def check_held_out(paths: list[str], images: np.ndarray, used: dict[str, np.ndarray],
                   what: str = "testset.manifest", fix: str = "drop them from the manifest") -> None:
    """Refuse test images whose decoded pixels equal an image of a training domain or of val."""
    mine = pixel_hashes(images)
    for name, other in used.items():
        both = np.isin(mine, pixel_hashes(other))
        if both.any():
            raise ImageSourceError(f"{what}: {int(both.sum())} images have the same pixels as images in "
                                   f"the {name} set (e.g. {paths[int(np.flatnonzero(both)[0])]}); a test set must be "
                                   f"held out — {fix}")


def check_no_near_copies(paths: list[str], images: np.ndarray, used: dict[str, dict], bits: int,
                         what: str = "testset.manifest", fix: str = "drop them from the manifest") -> None:
    """Refuse test images that are near-copies (resized, re-encoded) of a training or val image, listing pairs."""
    mine = perceptual_hashes(images)
    pairs = [(paths[i], str(d["ids"][j]), dist) for name, d in used.items()
             for i, j, dist in near_copies(mine, perceptual_hashes(d["images"]), bits)]
    if pairs:
        shown = "; ".join(f"{a} ~ {b} ({dist} bits)" for a, b, dist in pairs[:5])
        raise ImageSourceError(f"{what}: {len(pairs)} images are near-copies (pHash within {bits} bits, "
                               f"data.near_copy_bits) of training or val images: {shown}"
                               f"{'; ...' if len(pairs) > 5 else ''} — {fix}")


def check_tracked(path: str | Path, manifests: Path, what: str) -> None:
    """A file the test set is built from must lie in `manifests` (a DVC dep): elsewhere, changing it would leave
    the test set stale."""
    if not Path(path).resolve().is_relative_to(manifests.resolve()):
        raise ImageSourceError(f"{what}: {path} is outside {manifests}/, which DVC watches, so a change to it would "
                               f"leave the test set stale; move it into {manifests}/ and name it from there")


def run(params: Params, prepared: Path = PREPARED, out: Path = OUT, manifests: Path = MANIFESTS) -> int:
    manifest = params.testset.manifest
    if manifest:
        check_tracked(manifest, manifests, "testset.manifest")
    if not manifest:
        d = load_npz(prepared / "test_split.npz")
        images, labels, ids = d["images"], d["labels"], d["ids"]
        # the built split passes the same disjointness checks as a user's manifest
        used = {n: load_npz(prepared / f"{n}.npz") for n in ("black", "cat", "val")}
        fix = "the data stage must keep them apart (a bug: report it)"
        check_held_out([str(i) for i in ids], images, {n: u["images"] for n, u in used.items()}, "built test split",
                       fix)
        check_no_near_copies([str(i) for i in ids], images, used, params.data.near_copy_bits, "built test split", fix)
        log.info("test: the built split, %d images (held out from the training domains and val: pixels and pHash)",
                 len(ids))
    else:
        paths, labels = read_manifest(manifest)
        for p in paths:  # images on disk (not members of the image source, itself a dep) are tracked too
            if Path(p).is_file():
                check_tracked(p, manifests, "testset.manifest image")
        ids = np.array(paths)
        images = read_images(paths, params.data.path)
        used = {n: load_npz(prepared / f"{n}.npz") for n in ("black", "cat", "val")}
        check_held_out(paths, images, {n: d["images"] for n, d in used.items()})
        check_no_near_copies(paths, images, used, params.data.near_copy_bits)
        log.info("test: manifest %s, %d images (%d black cats)", manifest, len(ids), int(labels.sum()))
    with atomic_dir(out) as tmp:
        save_npz(tmp / "test.npz", images=images, labels=labels, ids=ids)
        save_sheet(tmp, "test", images, labels, params.data.sheet_per_class)
    return len(ids)
