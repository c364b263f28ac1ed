"""Stage `control`: the positive control, LeNets trained directly on (weakly labelled) dark cat vs other from the
image source's test/ split, leaving out every val/test image and near-copy (`zoofusion.steps.control`, whose
docstring states the labels), logged to MLflow (experiment `pipeline`: counts, weak-label accuracy, head val AUROC).
evaluate draws its models as the baseline kinds `control-positive` and `control-head`."""

from __future__ import annotations

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.steps.control import run
from zoofusion.tracking import log_stage_run

OUT = layout.CONTROL
VAL, TEST = layout.VAL, layout.TEST
METRICS = layout.METRICS / "control.json"


def main(argv: list[str] | None = None) -> None:
    def stage(args, params) -> None:
        summary = run(params, params.torch_device(), VAL, TEST, OUT, METRICS)
        log_stage_run("control", [VAL, TEST, OUT / "weights.pt"], params.control.model_dump(), summary,
                      [METRICS, OUT / "train_set.csv"])

    stage_main("control", stage, argv, description="Train the positive control's LeNets outside val and test.",
               errors=(ValueError,))


if __name__ == "__main__":
    main()
