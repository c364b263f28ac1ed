"""Stage `generate@<variant>`: generated feature extractors from one variant's translated zoo kernels
(`zoofusion.steps.generate`), logged to MLflow (experiment `cyclegan`: a source-vs-generated kernel grid per zoo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS, VARIANTS, Params
from zoofusion.render.kernel_grid import kernel_grid_figure
from zoofusion.steps.generate import GANS, KERNELS, OUT, run as generate_variant
from zoofusion.tracking import dataset_inputs, setup_mlflow, stage_run


def run(variant: str, params: Params, kernels: Path = KERNELS, gans: Path = GANS, out: Path = OUT) -> int:
    v = params.translation.variant(variant)
    made = generate_variant(variant, v, params.generate, kernels, gans, out)
    g, ks, inputs = made["generated"], made["kernels"], made["inputs"]
    mlflow = setup_mlflow("cyclegan")
    with stage_run(mlflow, f"generate-{variant}", f"generate@{variant}", inputs) as run:
        mlflow.MlflowClient().log_inputs(run.info.run_id, datasets=dataset_inputs({f: "train" for f in inputs}))
        mlflow.log_params({"variant": variant, "n_generated": len(g["ids"]), "bias": params.generate.bias,
                           "max_per_domain": params.generate.max_per_domain, **v.model_dump()})
        for d_i, domain in enumerate(DOMAINS):
            i = int(np.flatnonzero(g["source_domain"].numpy() == d_i)[0])
            fig = kernel_grid_figure({f"source {g['ids'][i]} conv1": ks[domain]["conv1.weight"][0],
                                      f"generated {g['ids'][i]} conv1": g["conv1.weight"][i]},
                                     title=f"{variant}: source vs generated ({domain} zoo)")
            mlflow.log_figure(fig, f"source_vs_generated_{domain}.png")
        mlflow.log_artifact(str(out / variant / "ids.txt"))
    return len(g["ids"])


def main(argv: list[str] | None = None) -> None:
    stage_main("generate@{variant}", lambda args, params: run(args.variant, params), argv,
               description="Assemble generated CNNs from one variant's translated kernels.",
               add_arguments=lambda ap: ap.add_argument("--variant", required=True, choices=VARIANTS))


if __name__ == "__main__":
    main()
