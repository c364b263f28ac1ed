"""Stage `kernels`: harvest both zoos' conv kernels, as trained and channel-aligned (`zoofusion.steps.kernels`),
logged to MLflow (experiment `pipeline`: kept and dropped models, alignment similarities)."""

from __future__ import annotations


import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.steps.kernels import run
from zoofusion.tracking import log_stage_run

ZOO = layout.ZOO
OUT = layout.KERNELS
METRICS = layout.METRICS / "kernels.json"


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        summary = run(params, ZOO, OUT, METRICS)
        log_stage_run("kernels", [ZOO / "black" / "weights.pt", ZOO / "cat" / "weights.pt"],
                      params.kernels.model_dump(), summary, [METRICS])

    stage_main("kernels", stage, argv, description="Harvest zoo kernels above the accuracy floor.",
               errors=(ValueError,))


if __name__ == "__main__":
    main()
