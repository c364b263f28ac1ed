"""Stage `tuned`: the tuned clustering params, scored once on test (steps/tune.py `tuned`).

`tune` searched on val only and wrote data/tune/best_params.json. Here each tuned configuration (each method's
tuned generated model and each baseline kind's tuned best-on-val model) runs through the full protocol once,
as `evaluate` runs it, with features from evaluate's saved candidates, and is scored on test beside evaluate's
untuned number. Nothing is chosen here.

Output: data/tuned/tuned.csv (one row per method and candidate), read by `report`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import Params
from zoofusion.steps.tune import tuned
from zoofusion.tracking import log_stage_run
from zoofusion.tuning import TuneError

log = logging.getLogger(__name__)
BEST = layout.BEST_PARAMS
EVALUATED = layout.EVALUATE
VAL = layout.VAL
TEST = layout.TEST
OUT = layout.TUNED_CSV


def run(params: Params, root: Path = Path(".")) -> Path:
    e = params.evaluate
    rows = tuned(root / BEST, root / EVALUATED / "candidates.pt", root / EVALUATED / "candidates.csv", root / VAL,
                 root / TEST, root / OUT, e.clustering, params.seed, e.feature_batch, params.data.dark_luminance)
    log.info("tuned: %d tuned configurations scored on test -> %s", len(rows), OUT)
    log_stage_run("tuned", [BEST, EVALUATED / "candidates.pt", EVALUATED / "candidates.csv", VAL, TEST],
                  {"seed": params.seed}, {"configurations": len(rows)}, [root / OUT])
    return root / OUT


def main(argv: list[str] | None = None) -> None:
    stage_main("tuned", lambda args, params: run(params), argv,
               description="Score the tuned clustering params on test.", errors=(TuneError,))


if __name__ == "__main__":
    main()
