"""Stage `report`: reports/report.md and an offline reports/report.html (`zoofusion.steps.report`), both logged to
MLflow (experiment `pipeline`) so the UI holds the document beside the runs it sums up."""

from __future__ import annotations

from pathlib import Path

from zoofusion.cli import stage_main
from zoofusion.reference import StudyError
from zoofusion.steps.report import READS, run
from zoofusion.tracking import log_stage_run


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        md = run(params, Path("."))
        log_stage_run("report", list(READS), {"seed": params.seed}, {}, [md, md.with_suffix(".html")])

    stage_main("report", stage, argv, description="Write reports/report.md and reports/report.html.",
               errors=(StudyError,))


if __name__ == "__main__":
    main()
