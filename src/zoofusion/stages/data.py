"""Stage `data`: the study's datasets from the image source's train split (`zoofusion.steps.data`), logged to
MLflow (experiment `pipeline`: the sizes, the contact sheets)."""

from __future__ import annotations


import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.images import ImageSourceError
from zoofusion.steps.data import run
from zoofusion.tracking import log_stage_run

OUT = layout.PREPARED


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        sizes = run(params.data, params.seed, OUT)
        log_stage_run("data", [params.data.path, params.data.labels], {"seed": params.seed, **params.data.model_dump()},
                      {"images": sizes}, sorted((OUT / "sheets").glob("*.png")) if (OUT / "sheets").is_dir() else [])

    stage_main("data", stage, argv, description="Build the study's datasets from the image source's train split.",
               errors=(ImageSourceError, ValueError))


if __name__ == "__main__":
    main()
