"""Shared fixtures: paths of the real data beside the repo, a small synthetic image source, and params built from
the repository's params.yaml (config has no defaults of its own: a test states only what it changes)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARBALL = SHARED / "cifar10-jpg.tar.gz"
LABELS = SHARED / "blackcat_labels_train.csv"
# The tiny pipeline's `generated-models` runs: the evaluate parent, 2 generated per variant (study, aligned);
# baselines: 2 each of random, zoo-A, zoo-B, average, aligned, concat; pixels, darkness; 2 each of the literature's
# avg-k, gauss-fit, noise-0.1, noise-0.5 and of head-A, head-B, experts, control-positive, control-head,
# untrained-<variant>. tests/test_pipeline.py and tests/test_services.py both count them.
TINY_EVALUATE_RUNS = 1 + 2 * 2 + 6 * 2 + 2 + 4 * 2 + 7 * 2


@functools.cache
def _profile() -> dict:
    from zoofusion.config import read_yaml

    return read_yaml(ROOT / "params.yaml")


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` on top: mappings merge key by key, anything else replaces (base is not changed)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def params_dict(over: dict | None = None) -> dict:
    """The repository's params.yaml as a fresh mapping, with `over` deep-merged on top."""
    return deep_merge(_profile(), over or {})


def make_params(over: dict | None = None):
    """`Params` of the repository's params.yaml with `over` deep-merged on top, validated by parse_params."""
    from zoofusion.config import parse_params

    return parse_params(params_dict(over))


def method_params(**over):
    """The protocol's MethodParams with params.yaml's clustering values, `over` replacing some (validated)."""
    return dataclasses.replace(make_params().evaluate.clustering.method_params(), **over)


def make_source(root: Path, per_class: int = 40, classes=("airplane", "cat", "dog", "ship"), seed: int = 0) -> Path:
    """A folder of class folders: train/<class>/NNNN.jpg; a third of each class is very dark."""
    gen = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 5):
                hi = 40 if i % 3 == 0 else 255
                img = gen.integers(0, hi, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=95)
    return root


def make_labels(path: Path, per_class: int = 40) -> Path:
    """Label the dark cats (i % 3 == 0) black, the others not, and one undecidable."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "class", "file", "darkness", "black_cat", "source"])
        for i in range(per_class):
            lab = "1" if i % 3 == 0 else "0"
            if i == 1:
                lab = "?"
            w.writerow(["train", "cat", f"{i:04d}", "0", lab, "candidate"])
    return path


@pytest.fixture
def synthetic_source(tmp_path: Path) -> tuple[Path, Path]:
    src = make_source(tmp_path / "images")
    return src, make_labels(tmp_path / "labels.csv")


PROJECT_FILES = ("dvc.yaml", "src", "data/manifests", "reports/replication.json", "references")


def copy_project(work: Path, *extra: str) -> Path:
    """The files a scratch project needs to run the pipeline (PROJECT_FILES, then `extra`, where they exist),
    copied from this checkout into `work`."""
    import shutil

    for name in (*PROJECT_FILES, *extra):
        src, dst = ROOT / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return work


def small_data_params(source: Path, labels: Path, **over) -> dict:
    d = dict(path=str(source), labels=str(labels), black_positive=8, black_negative=8, cat_positive=8,
             cat_negative=8, negatives_per_positive=1.0, darkness_threshold=0.6,
             nonblack_cat_max_darkness=0.15, sheet_per_class=5)
    d.update(over)
    return d


def pytest_collection_modifyitems(session, config, items):
    """The end-to-end files first: under `-n 2 --dist loadfile --no-loadscope-reorder` each file goes to one worker
    in collection order (xdist's default reorder would put the files with the most tests first), so the tiny
    pipeline (the longest file) starts at once while the other worker takes the unit tests."""
    first = [i for i in items if i.get_closest_marker("e2e") and i.fspath.basename == "test_pipeline.py"]
    items[:] = first + [i for i in items if i not in set(first)]
