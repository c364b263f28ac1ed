"""Stage `tuned`: the tuned clustering params, scored once on test.

`tune` searched on val only and wrote data/tune/best_params.json. Here each tuned configuration (each method's
tuned generated model and each baseline kind's tuned best-on-val model) runs through the full protocol once,
as `evaluate` runs it, and is scored on test beside evaluate's untuned number. Nothing is chosen here.

Output: data/tuned/tuned.csv (one row per method and candidate), read by `report`.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from zoofusion.cli import stage_main
from zoofusion.config import Params
from zoofusion.core.candidates import is_generated
from zoofusion.io import atomic_dir, load_npz
from zoofusion.tuning import EVALUATED, VAL, TuneError, candidate_features, read_candidates, tuned_evaluation

log = logging.getLogger(__name__)
BEST = Path("data/tune/best_params.json")
TEST = Path("data/testset/test.npz")
OUT = Path("data/tuned")


def tuned_rows(params: Params, root: Path = Path(".")) -> list[dict]:
    """Untuned vs tuned test scores of each method's tuned generated model and each baseline kind's best.

    Tuning saw val only; here the tuned params go through the full protocol once more, scored on test.
    The untuned numbers are evaluate's (same protocol, params.yaml defaults).
    """
    doc = json.loads((root / BEST).read_text())
    best, objective = doc["methods"], doc["objective"].replace("_", " ")
    val, test = load_npz(root / VAL), load_npz(root / TEST)
    rows = {r["id"]: r for r in read_candidates(root / EVALUATED / "candidates.csv")}
    ids = sorted({c for m in best.values() for c in m["candidates"]})
    n_val = len(val["labels"])
    feats = candidate_features(params, ids, np.concatenate([val["images"], test["images"]]))
    out = []
    for method, entry in sorted(best.items()):
        for cid, b in sorted(entry["candidates"].items(), key=lambda kv: (not is_generated(kv[1]["kind"]), kv[0])):
            f = feats[cid]
            m = tuned_evaluation(params, b, method, f[:n_val], val["labels"], f[n_val:], test["labels"])
            before = rows[cid]["metrics"]
            # balanced accuracy beside accuracy: at 1 black cat in 10, calling everything "other" scores accuracy 0.9
            out.append({"Clustering": method, "Model": cid, "Kind": b["kind"],
                        f"Val {objective} (tuned)": round(b["value"], 4),
                        "Test balanced accuracy untuned": round(before[f"test/{method}/balanced_accuracy"], 4),
                        "Test balanced accuracy tuned": round(m[f"test/{method}/balanced_accuracy"], 4),
                        "Test accuracy untuned": round(before[f"test/{method}/accuracy"], 4),
                        "Test accuracy tuned": round(m[f"test/{method}/accuracy"], 4),
                        "Test recall tuned": round(m[f"test/{method}/recall"], 4),
                        "Test clusters tuned": int(m[f"test/{method}/n_clusters"])})
    return out




def run(params: Params, root: Path = Path(".")) -> Path:
    if not (root / BEST).is_file():
        raise FileNotFoundError(f"{BEST}: missing; run `dvc repro tune` first")
    rows = tuned_rows(params, root)
    with atomic_dir(root / OUT) as tmp, (tmp / "tuned.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log.info("tuned: %d tuned configurations scored on test -> %s", len(rows), OUT / "tuned.csv")
    return root / OUT / "tuned.csv"


def main(argv: list[str] | None = None) -> None:
    stage_main("tuned", lambda args, params: run(params), argv,
               description="Score the tuned clustering params on test.", errors=(TuneError,))


if __name__ == "__main__":
    main()
