"""Where the pipeline's files live: every data, metrics and report path that `dvc.yaml` declares, defined once.

Stages hand these to their steps (steps take paths as arguments); `tests/test_dvc_yaml.py` checks that each path
`dvc.yaml` declares under data/, metrics/ or reports/ is one of these (or inside one), and that each is declared.
Relative to the project root, where DVC runs every stage.
"""

from __future__ import annotations

from pathlib import Path

VALIDATED = Path("data/validated.txt")
SOURCE = Path("data/source")  # the image source and the labels (DVC imports; params data.path / data.labels)
PREPARED = Path("data/prepared")  # black.npz, cat.npz, val.npz, test_split.npz, sheets/
VAL = PREPARED / "val.npz"
MANIFESTS = Path("data/manifests")  # a user's test manifests (testset.manifest) and the images they name
TESTSET = Path("data/testset")
TEST = TESTSET / "test.npz"
ZOO = Path("data/zoo")  # <domain>/weights.pt, history.npz, curves.csv, models.csv
KERNELS = Path("data/kernels")  # raw/<domain>.pt, aligned/<domain>.pt
CYCLEGAN = Path("data/cyclegan")  # <variant>/<unit>/generators.pt
GENERATED = Path("data/generated")  # <variant>/models.pt, <variant>/untrained.pt (the translation control)
CONTROL = Path("data/control")  # weights.pt, history.npz, train_set.csv: the positive control's LeNets
EVALUATE = Path("data/evaluate")  # candidates.pt, scores.npz, verdict.json, selected.json, candidates.csv
NOVELTY = Path("reports/novelty")  # novelty.csv, novelty.png (stage `novelty`)
TUNE = Path("data/tune")
BEST_PARAMS = TUNE / "best_params.json"
TUNED = Path("data/tuned")
TUNED_CSV = TUNED / "tuned.csv"
METRICS = Path("metrics")  # <stage>.json, zoo_<domain>.json, cyclegan_<variant>.json
TABLES = Path("reports/tables")
FIGURES = Path("reports/figures")
REPORTS = Path("reports")
# `make replicate` writes these (committed in git, not DVC outputs); the report stage reads the .json
REPLICATION_MD = REPORTS / "replication.md"
REPLICATION_JSON = REPORTS / "replication.json"
# a committed reference file (not derived data, not a DVC output): the study's reported numbers, read by `report`
STUDY_REFERENCE = Path("references/patel_jain_2024.yaml")
# private caches, keyed by the code that computes them: never DVC outputs (`python -m zoofusion.prune` prunes them)
CACHE = Path("data/cache")
ZOO_CACHE = CACHE / "zoo"
GAN_CACHE = CACHE / "cyclegan"
CALIBRATE_CACHE = CACHE / "calibrate"

DECLARED = (VALIDATED, PREPARED, MANIFESTS, TESTSET, ZOO, KERNELS, CYCLEGAN, GENERATED, CONTROL, EVALUATE, NOVELTY, TUNE,
            TUNED, METRICS, TABLES, FIGURES, REPORTS)
