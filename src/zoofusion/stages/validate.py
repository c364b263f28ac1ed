"""Stage `validate`: the whole params.yaml, checked on every `dvc repro` before any other stage runs.

It depends on params.yaml as a file, so any edit reruns it, and `data` (upstream of everything) depends on its
output, so a typo, a wrong type or an impossible value stops the pipeline here with one line, even when no stage
reads that key. It also refuses `device: cuda` on a machine without a GPU. Its output holds no params (only the
word "valid"), so a valid edit never makes downstream stages stale by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import Params
from zoofusion.io import atomic_path

log = logging.getLogger(__name__)
OUT = layout.VALIDATED


def run(params: Params, out: Path = OUT) -> None:
    params.torch_device()  # cuda without a GPU is refused here
    with atomic_path(out) as tmp:
        tmp.write_text("params.yaml: valid\n")
    log.info("params.yaml is valid (seed %d, device %s)", params.seed, params.device)


def main(argv: list[str] | None = None) -> None:
    stage_main("validate", lambda args, params: run(params), argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    main()
