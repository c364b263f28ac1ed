"""Shared fixtures: paths of the real data beside the repo, a small synthetic image source, and params built from
the repository's params.yaml (config has no defaults of its own: a test states only what it changes)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import fcntl
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
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


# The tiny profile of the end-to-end files (tests/test_pipeline*.py): params.yaml with these values on top.
TINY = {
    "data": {"path": str(TARBALL), "labels": str(LABELS), "black_positive": 60, "black_negative": 60,
             "cat_positive": 60, "cat_negative": 60, "negatives_per_positive": 1.0, "sheet_per_class": 10},
    # one worker: the stage trains in its own process (spreading over processes: tests/test_zoo.py, test_cyclegan.py)
    "zoo": {"n_models": {"black": 3, "cat": 3}, "epochs": 2, "group_size": 2, "shard_size": 2, "workers": 1,
            "grid_models": 2},
    "kernels": {"min_val_accuracy": 0.0},
    "cyclegan": {"epochs": 3, "checkpoint_every": 2, "grid_every": 2, "hidden": 8, "workers": 1},
    "evaluate": {"n_selected": 1, "budget": 2, "n_boot": 200, "workers": 1, "umap_seeds": 1,
                 "clustering": {"umap": {"n_epochs": 30}}},  # plumbing, not science: a short UMAP layout
    "tune": {"n_trials": 2, "top_models": 1, "workers": 1, "methods": ["kmeans"]},  # other methods: tests/test_tune.py
}


def sh(args: list[str], cwd: Path, env: dict) -> str:
    """Run a command; its stdout + stderr, or a failed assertion quoting their tails."""
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def tiny_env(work: Path) -> dict:
    """The environment a scratch project's commands run in: its venv first, its own code (PYTHONPATH, so a test
    may edit it) and its own MLflow store."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(work / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):  # set by an earlier test's run
        env.pop(leaked, None)
    return env


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> tuple[Path, str]:
    """The tiny pipeline, run once per session for every end-to-end file and pytest worker: (a pristine scratch
    project after `dvc repro`, the repro's output). Nobody changes the pristine project: each file works in its
    own copy (:func:`copy_tiny`). Under xdist the first worker to ask runs it, under a file lock in the session's
    shared temp folder (each worker's basetemp is a folder in it); a worker that asks meanwhile waits for it."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    work, log = root / "tiny" / "pristine", root / "tiny" / "repro.log"
    with open(root / "tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not log.is_file():
            if work.exists():
                pytest.fail("the tiny pipeline failed in another pytest worker: see that worker's error")
            work.mkdir(parents=True)
            copy_project(work, "MLproject", "conda.yaml", "scripts")  # the MLflow project too (`mlflow run`)
            (work / "params.yaml").write_text(yaml.safe_dump(deep_merge(_profile(), TINY), sort_keys=False))
            env = tiny_env(work)
            sh(["dvc", "init", "--no-scm", "-q"], work, env)
            sh(["dvc", "remote", "add", "-d", "scratch", str(work.parent / "remote")], work, env)
            log.write_text(sh(["dvc", "repro"], work, env))
    return work, log.read_text()


def copy_tiny(tiny: tuple[Path, str], dst: Path) -> tuple[Path, dict, str]:
    """A file's own copy of the tiny pipeline's project: (its folder, its environment, the repro's output). Its MLflow
    runs logged by the pipeline keep their artifacts in the pristine project (the store holds absolute paths)."""
    shutil.copytree(tiny[0], dst, symlinks=True)
    return dst, tiny_env(dst), tiny[1]


def small_data_params(source: Path, labels: Path, **over) -> dict:
    d = dict(path=str(source), labels=str(labels), black_positive=8, black_negative=8, cat_positive=8,
             cat_negative=8, negatives_per_positive=1.0, darkness_threshold=0.6,
             nonblack_cat_max_darkness=0.15, sheet_per_class=5)
    d.update(over)
    return d


def pytest_collection_modifyitems(session, config, items):
    """The tiny pipeline's file first and its second file last: under `-n 2 --dist loadfile --no-loadscope-reorder`
    each file goes to one worker in collection order (xdist's default reorder would put the files with the most tests
    first), so the tiny pipeline (the longest file) starts at once while the other worker takes the unit tests, then
    the second file's edits of a copy of the pipeline (tests/test_pipeline_edits.py) by whichever worker is free."""
    first = [i for i in items if i.get_closest_marker("e2e") and i.fspath.basename == "test_pipeline.py"]
    last = [i for i in items if i.fspath.basename == "test_pipeline_edits.py"]
    items[:] = first + [i for i in items if i not in set(first + last)] + last
