"""Stage `testset`: the held-out test set every reported number comes from (`zoofusion.steps.testset`: the built
split, or a user's manifest checked for held-out images), logged to MLflow (experiment `pipeline`)."""

from __future__ import annotations


import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.images import ImageSourceError
from zoofusion.steps.testset import run
from zoofusion.tracking import log_stage_run

PREPARED = layout.PREPARED
OUT = layout.TESTSET


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        n = run(params, PREPARED, OUT)
        log_stage_run("testset", [OUT / "test.npz"], {"manifest": params.testset.manifest or "(built split)"},
                      {"images": n}, [OUT / "sheets" / "test.png"])

    stage_main("testset", stage, argv, description="Build the held-out test set (built split or a user manifest).",
               errors=(ImageSourceError,))


if __name__ == "__main__":
    main()
