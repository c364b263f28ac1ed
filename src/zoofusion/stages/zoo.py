"""Stage `zoo@<domain>`: train a zoo of small CNNs on one domain (`zoofusion.steps.zoo`) and log every one.

Outputs (data/zoo/<domain>/): `weights.pt` (stacked weights + seeds), `models.csv` (per-model seed, final
train/val accuracy and loss), `history.npz` (per-epoch curves); and metrics/zoo_<domain>.json.
MLflow: experiment `zoo`, a parent run per domain with a kernel grid, and a child run per CNN with its params,
per-epoch metrics, final accuracies and its weights (`model.pt`, a SmallCNN state dict). A CNN is logged once per
content (tag `zoofusion.content`): rerunning a stage over cached shards does not log its CNNs again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zoofusion.layout as layout
from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS
from zoofusion.console import progress
from zoofusion.executor import check_backend
from zoofusion.io import write_json
from zoofusion.render.kernel_grid import kernel_grid_figure
from zoofusion.steps.zoo import train_zoo
from zoofusion.tracking import BatchLogger, dataset_inputs, log_cnns, project_root, run_tags, setup_mlflow, stage_run

log = logging.getLogger(__name__)
PREPARED = layout.PREPARED
OUT = layout.ZOO
CACHE = layout.ZOO_CACHE
METRICS = layout.METRICS
REPRODUCIBLE = ("count", "val_acc_mean", "val_acc_min", "val_acc_max", "train_acc_mean", "path")


def kernel_grid(weights: dict, n: int):
    panels = {f"model {k} conv1": weights["conv1.weight"][k] for k in range(min(n, len(weights["conv1.weight"])))}
    return kernel_grid_figure(panels)


def run(domain: str, params, prepared: Path = PREPARED, out_root: Path = OUT, cache_root: Path = CACHE,
        metrics_root: Path = METRICS) -> dict:
    device = params.torch_device()  # cuda without a GPU: refused before anything is created
    check_backend(params.executor.backend, params.executor.address)  # a Ray cluster that answers, before any work
    z = params.zoo
    n_models = getattr(z.n_models, domain)
    data = prepared / f"{domain}.npz"
    if not data.is_file():
        raise FileNotFoundError(f"{data}: missing; run `dvc repro data` first")
    mlflow = setup_mlflow("zoo")
    tags = run_tags(f"zoo@{domain}", [data])
    logged = 0
    with stage_run(mlflow, f"zoo-{domain}", f"zoo@{domain}", [data]) as parent:
        mlflow.log_params({"domain": domain, "n_models": n_models,
                           **{k: v for k, v in z.model_dump().items() if k != "n_models"},
                           "seed": params.seed, "device": device})
        datasets = dataset_inputs({data: "train"})
        mlflow.MlflowClient().log_inputs(parent.info.run_id, datasets=datasets)
        zl = BatchLogger(mlflow, parent.info.run_id, {k: v for k, v in tags.items()
                                                      if k.startswith(("git", "data", "zoofusion."))}, datasets)
        bar = progress(total=n_models, desc=f"zoo {domain}", unit="model")

        def on_shard(job, shard) -> None:
            nonlocal logged
            logged += log_cnns(zl, domain, job.first, shard, {"epochs": z.epochs, "batch_size": z.batch_size,
                                                              "lr": z.lr})
            bar.update(len(job.seeds))

        summary = train_zoo(domain, z, params.seed, device, params.executor, data, out_root / domain, cache_root,
                            on_shard)
        bar.close()
        summary.update({"logging_seconds": round(zl.seconds, 2), "runs_logged": logged,
                        "logging_overhead": round(zl.seconds / max(summary["train_seconds_summed_over_workers"],
                                                                   1e-9), 4)})
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if not isinstance(v, str)})
        mlflow.set_tag("training_path", summary["path"])
        if z.grid_models:
            import torch

            weights = torch.load(out_root / domain / "weights.pt", weights_only=True)["weights"]
            mlflow.log_figure(kernel_grid(weights, z.grid_models), "kernel_grid_conv1.png")
        mlflow.log_artifact(str(out_root / domain / "models.csv"))
    # timings go to MLflow only: the DVC output holds what identical runs reproduce byte for byte
    write_json(metrics_root / f"zoo_{domain}.json", {k: summary[k] for k in REPRODUCIBLE})
    log.info("zoo %s: val acc mean %.3f (min %.3f, max %.3f); logging overhead %.1f%%", domain,
             summary["val_acc_mean"], summary["val_acc_min"], summary["val_acc_max"], 100 * summary["logging_overhead"])
    if summary["model_images_per_s"]:
        log.info("zoo %s: trained at %.0f model-images/s on path %s (%d workers of one thread)",
                 domain, summary["model_images_per_s"], summary["path"], summary["workers"])
    return summary


def main(argv: list[str] | None = None) -> None:
    # the cache in the project root, also from a queued experiment's temporary copy (tracking.project_root)
    stage_main("zoo@{domain}", lambda args, params: run(args.domain, params, cache_root=project_root() / CACHE),
               argv,
               description="Train one domain's zoo of small CNNs.",
               add_arguments=lambda ap: ap.add_argument("--domain", required=True, choices=DOMAINS),
               on_interrupt=f"finished shards are kept in {CACHE} and reused on the next run")


if __name__ == "__main__":
    main()
