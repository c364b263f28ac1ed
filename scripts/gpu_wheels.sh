#!/usr/bin/env bash
# Wheels for a GPU machine without internet (scripts/gpu_study.sh installs them there): the tracking stack this
# venv runs (mlflow-skinny, dvc, optuna, umap-learn, pydantic, sqlalchemy, alembic at this venv's versions) and
# everything they need, for Python $1 (default 3.12, the GPU's) on manylinux x86_64, into .whl/ (git-ignored),
# less what the GPU's image already holds (scripts/gpu_packages.txt: torch stays the GPU's own). Run here, where
# pip reaches PyPI. Prints the MB that travel: the working tree, .whl and data/source must stay under 64 MiB a call.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
PY=${PY:-.venv/bin/python}
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
all=$(mktemp -d)
trap 'rm -rf "$all"' EXIT
# dvc's hydra-core needs antlr4-python3-runtime 4.9.3, published as a source archive only: built once, pure Python
"$PY" -m pip wheel -q --no-deps -w "$all" antlr4-python3-runtime==4.9.3
"$PY" -m pip download -q --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --find-links "$all" -d "$all" \
  "mlflow-skinny==$(ver mlflow)" "dvc==$(ver dvc)" "optuna==$(ver optuna)" "umap-learn==$(ver umap-learn)" \
  "pydantic==$(ver pydantic)" "sqlalchemy==$(ver sqlalchemy)" "alembic==$(ver alembic)"
rm -rf .whl && mkdir .whl
"$PY" - "$all" <<'PY'
import re, shutil, sys
from pathlib import Path
norm = lambda s: re.sub(r"[-_.]+", "-", s.strip().lower())
has = {norm(l) for l in Path("scripts/gpu_packages.txt").read_text().splitlines() if l.strip() and not l.startswith("#")}
kept = [w for w in sorted(Path(sys.argv[1]).glob("*.whl")) if norm(w.name.split("-")[0]) not in has]
for w in kept:
    shutil.copy(w, ".whl")
print(f"gpu_wheels: {len(kept)} wheels in .whl/ ({sum(w.stat().st_size for w in kept) / 2**20:.1f} MiB; "
      f"{len(list(Path(sys.argv[1]).glob('*.whl'))) - len(kept)} left out: the GPU has them)")
PY
[ -f data/source/cifar10-jpg.tar.gz ] || PATH="$(dirname "$PY"):$PATH" bash scripts/source.sh  # the images travel too
tree=$(git ls-files -z 2>/dev/null | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
tree=${tree:-0}
extra=$(du -cb .whl data/source/cifar10-jpg.tar.gz data/source/blackcat_labels_train.csv | tail -1 | cut -f1)
echo "gpu_wheels: a call carries $(( (tree + extra) / 1048576 )) MiB (working tree, .whl, data/source; at most 64)"
