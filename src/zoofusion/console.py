"""What a person sees while a stage runs: one log format, and progress bars that stay silent in CI."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable


def setup_logging(level: int = logging.INFO) -> None:
    """One format for every stage; messages go to stderr so DVC and CI logs keep them."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "numba", "urllib3", "matplotlib", "PIL", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """tqdm that shows on a terminal and stays silent in CI logs (disable=None checks for a TTY)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None if not os.environ.get("CI") else True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
