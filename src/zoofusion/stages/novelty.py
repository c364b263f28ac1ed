"""Stage `novelty`: is each model of evaluate's pool new, or a near-copy of a zoo model? (Zeng, Yin, Xu & Liu,
arXiv 2506.07998; `zoofusion.steps.novelty`): aligned distance to the nearest model of each zoo and the IoU of the
test error sets, -> reports/novelty/ and metrics/novelty.json, logged to MLflow (experiment `pipeline`)."""

from __future__ import annotations

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS
from zoofusion.executor import check_backend
from zoofusion.steps.novelty import run

EVALUATE = layout.EVALUATE
KERNELS = layout.KERNELS
VAL, TEST = layout.VAL, layout.TEST
OUT = layout.NOVELTY
METRICS_FILE = layout.METRICS / "novelty.json"


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        from zoofusion.tracking import log_stage_run

        e = params.evaluate
        check_backend(params.executor.backend, params.executor.address)
        summary = run(EVALUATE / "candidates.pt", EVALUATE / "scores.npz",
                      {d: KERNELS / "raw" / f"{d}.pt" for d in DOMAINS}, VAL, TEST, OUT, METRICS_FILE, e.clustering,
                      params.seed, e.feature_batch, params.data.dark_luminance, e.workers, params.novelty.near_copy,
                      params.executor.backend, params.executor.address)
        log_stage_run("novelty", [EVALUATE / "candidates.pt", EVALUATE / "scores.npz", VAL, TEST],
                      params.novelty.model_dump(), summary, [METRICS_FILE, OUT / "novelty.csv", OUT / "novelty.png"])

    stage_main("novelty", stage, argv, description="Novelty of every pool model: distance to the nearest zoo model "
               "and misprediction IoU.", errors=(ValueError,))


if __name__ == "__main__":
    main()
