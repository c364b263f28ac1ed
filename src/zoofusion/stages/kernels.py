"""Stage `kernels`: harvest the conv kernels of both zoos (the CycleGAN datasets).

Keeps only models whose final validation accuracy reaches `kernels.min_val_accuracy`, and says how many
were dropped. Output data/kernels/<domain>.pt holds conv1 [N,6,3,5,5], conv2 [N,16,6,5,5], their biases,
and `model_index` (the kept models' indices in their zoo, the ids of generated models later).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from zoofusion.cli import stage_main
from zoofusion.config import DOMAINS
from zoofusion.io import atomic_dir, load_npz, write_json

log = logging.getLogger(__name__)
ZOO = Path("data/zoo")
OUT = Path("data/kernels")
METRICS = Path("metrics/kernels.json")


def load_zoo(zoo: Path, domain: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Stacked weights and per-model final validation accuracy of one domain's zoo."""
    f = zoo / domain / "weights.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: missing; run `dvc repro zoo@{domain}` first")
    weights = torch.load(f, weights_only=True)["weights"]
    val_acc = load_npz(zoo / domain / "history.npz")["val_acc"][:, -1]
    return weights, val_acc


def harvest(weights: dict[str, torch.Tensor], val_acc: np.ndarray, floor: float) -> dict[str, torch.Tensor]:
    """The conv tensors of the models at or above the accuracy floor, with their zoo indices."""
    keep = np.flatnonzero(val_acc >= floor)
    idx = torch.from_numpy(keep)
    out = {k: weights[k][idx].clone() for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")}
    out["model_index"] = idx.to(torch.int64)
    return out


def run(params, zoo: Path = ZOO, out: Path = OUT, metrics: Path = METRICS) -> dict:
    floor = params.kernels.min_val_accuracy
    loaded = {d: load_zoo(zoo, d) for d in DOMAINS}
    summary = {}
    harvested = {}
    for d, (w, acc) in loaded.items():
        harvested[d] = harvest(w, acc, floor)
        kept = len(harvested[d]["model_index"])
        summary[d] = {"models": len(acc), "kept": kept, "dropped": len(acc) - kept}
        log.info("kernels %s: kept %d of %d models (dropped %d below val accuracy %.2f)", d, kept, len(acc),
                 len(acc) - kept, floor)
        if kept == 0:
            raise ValueError(f"kernels.min_val_accuracy: no {d} model reaches {floor} (best "
                             f"{acc.max():.3f}); lower the floor or train the zoo longer")
    with atomic_dir(out) as tmp:
        for d, h in harvested.items():
            torch.save(h, tmp / f"{d}.pt")
    write_json(metrics, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    stage_main("kernels", lambda args, params: run(params), argv,
               description="Harvest zoo kernels above the accuracy floor.", errors=(ValueError,))


if __name__ == "__main__":
    main()
