"""Write a test manifest where black cats are rare: every black cat of the built test split, and `--ratio` times as
many "other" images drawn from the image source's `test/` split (which the pipeline never reads, so they are
held out from every zoo and from val).

    python scripts/rare_manifest.py --ratio 9 --out data/manifests/one_in_ten.csv   # after `dvc repro testset`
    dvc exp run -S testset.manifest=data/manifests/one_in_ten.csv                      # reruns testset onwards only
"""

from __future__ import annotations

import argparse
import csv
import tarfile
from pathlib import Path

import numpy as np

from zoofusion.config import load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=int, default=9, help="'other' images per black cat")
    ap.add_argument("--out", type=Path, default=Path("data/manifests/one_in_ten.csv"))
    ap.add_argument("--split", type=Path, default=Path("data/prepared/test_split.npz"))
    args = ap.parse_args(argv)
    params = load_params("params.yaml")
    with np.load(args.split, allow_pickle=False) as z:
        positives = [str(i) for i, y in zip(z["ids"], z["labels"]) if y == 1]
    source = Path(params.data.path)
    with tarfile.open(source, "r:*") as tf:
        others = sorted(m.name.split("/", 1)[-1] if not m.name.startswith("test/") else m.name for m in tf
                        if m.isfile() and "test/" in m.name and f"/{params.data.cat_class}/" not in m.name)
    others = [o[o.index("test/"):] for o in others]
    rng = np.random.default_rng(params.seed)
    chosen = sorted(rng.choice(others, size=args.ratio * len(positives), replace=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([(p, 1) for p in positives] + [(o, 0) for o in chosen])
    print(f"{args.out}: {len(positives)} black cats, {len(chosen)} others ({len(positives) / (len(positives) + len(chosen)):.1%} black cats)")


if __name__ == "__main__":
    main()
