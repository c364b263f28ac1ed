"""MLflow set-up shared by every stage: one tracking URI, and tags that trace a run to code and data.

Every run gets `git_commit` (with `git_dirty`), `dvc_stage`, and `data.<path>.md5` for each declared input,
read from dvc.lock (the md5 DVC recorded for the upstream stage's output) or hashed directly for raw inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Iterator

import yaml

from zoofusion.util import file_md5, repo_root

log = logging.getLogger(__name__)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else a sqlite store in the repository root (not the cwd)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def setup_mlflow(experiment: str):
    """Point MLflow at the project store and select `experiment`; returns the mlflow module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # `mlflow run` exports its own run id and experiment; our stages log to their own experiments, so
    # those would hijack start_run. Keep the launcher's run id as a tag instead (see run_tags).
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        os.environ["ZOOFUSION_LAUNCHER_RUN_ID"] = launcher
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    return mlflow


def git_commit(root: Path) -> tuple[str, bool]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # dvc.lock is DVC's record of the run in progress: it changes during every `dvc repro`
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def lock_md5s(root: Path) -> dict[str, str]:
    """Map each output path recorded in dvc.lock to its md5."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    found: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                found[os.path.normpath(out["path"])] = out["md5"]
    return found


def data_tags(inputs: list[str | Path], root: Path | None = None) -> dict[str, str]:
    """`data.<path>.md5` for each input: DVC's recorded md5 when an upstream stage made it, else hashed here."""
    root = root or repo_root()
    recorded = lock_md5s(root)
    tags = {}
    for p in inputs:
        rel = os.path.normpath(os.path.relpath(Path(p).resolve(), root)) if Path(p).is_absolute() else os.path.normpath(str(p))
        md5 = recorded.get(rel)
        full = root / rel
        if md5 is None and full.is_file():
            md5 = file_md5(full)
        tags[f"data.{rel}.md5"] = md5 or "missing"
    return tags


def run_tags(stage: str, inputs: list[str | Path]) -> dict[str, str]:
    root = repo_root()
    sha, dirty = git_commit(root)
    tags = {"git_commit": sha, "git_dirty": str(dirty).lower(), "dvc_stage": stage, **data_tags(inputs, root)}
    if os.environ.get("ZOOFUSION_LAUNCHER_RUN_ID"):
        tags["mlflow_project_run_id"] = os.environ["ZOOFUSION_LAUNCHER_RUN_ID"]
    return tags


@contextlib.contextmanager
def stage_run(experiment: str, stage: str, run_name: str, inputs: list[str | Path],
              params: dict | None = None) -> Iterator:
    """Start a top-level MLflow run for a DVC stage, tagged with code and data versions."""
    mlflow = setup_mlflow(experiment)
    with mlflow.start_run(run_name=run_name, tags=run_tags(stage, inputs)) as run:
        if params:
            mlflow.log_params(params)
        yield run


def flat(d: dict, prefix: str = "") -> dict[str, object]:
    """Flatten nested params for mlflow.log_params (keys joined with '.')."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out
