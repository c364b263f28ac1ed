#!/usr/bin/env bash
# Prepare a study-scale run of `python -m zoofusion.bench study` on a GPU machine that has torch but no
# internet, no DVC/MLflow, no pydantic and no umap-learn. Here, on CPU:
#   1. builds the study-size prepared data (the data + testset stages only, with the study's data.* params
#      taken from the Makefile's STUDY_PARAMS) in a scratch copy of the repository, never touching data/ here;
#   2. copies the .npz files the study run reads into .gpu/data/;
#   3. downloads the wheels the GPU machine lacks (python 3.12, manylinux x86_64) into .whl/;
#   4. keeps /.gpu/ and /.whl/ out of git (.git/info/exclude) and prints what would travel.
# Usage: scripts/gpu_study_prepare.sh            (from anywhere; PY=... picks the python with the project deps)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
SHARED="${SHARED:-$(cd "$ROOT/.." && pwd)/shared/data}"
GPU_DATA="$ROOT/.gpu/data"
WHEELS="$ROOT/.whl"

# 1. study-size data in a scratch copy (its own params.yaml: the quick profile plus the study's data params)
SCRATCH="$(mktemp -d /tmp/zoofusion-gpu-prep.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
cp -r "$ROOT/src" "$ROOT/params.yaml" "$SCRATCH/"
PYTHONPATH="$SCRATCH/src" "$PY" - "$SCRATCH/params.yaml" "$ROOT/Makefile" "$SHARED" <<'EOF'
import re, sys, yaml
from zoofusion.config import read_yaml  # refuses a duplicated key, as every stage does
params_file, makefile, shared = sys.argv[1:]
params = read_yaml(params_file)
make = open(makefile).read()
study = re.search(r"^STUDY_PARAMS\s*=(.*?)(?:\n\s*\n|\Z)", make, re.S | re.M).group(1)
sets = re.findall(r"-S\s+data\.(\w+)=(\S+)", study)
if not sets:
    sys.exit("no data.* entries in the Makefile's STUDY_PARAMS")
for key, value in sets:
    params["data"][key] = yaml.safe_load(value)
params["data"]["path"] = f"{shared}/cifar10-jpg.tar.gz"   # absolute: the scratch copy has no ../shared
params["data"]["labels"] = f"{shared}/blackcat_labels_train.csv"
yaml.safe_dump(params, open(params_file, "w"), sort_keys=False)
print("study data params:", ", ".join(f"data.{k}={v}" for k, v in sets))
EOF
(cd "$SCRATCH" && PYTHONPATH="$SCRATCH/src" nice -n 10 "$PY" -m zoofusion.stages.data \
  && PYTHONPATH="$SCRATCH/src" nice -n 10 "$PY" -m zoofusion.stages.testset)
rm -rf "$GPU_DATA"
mkdir -p "$GPU_DATA"
cp "$SCRATCH"/data/prepared/*.npz "$SCRATCH/data/testset/test.npz" "$GPU_DATA/"

# 2. wheels, pinned to the versions this project's venv runs (and tests) with
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
PINS="$("$PY" -c '
from importlib.metadata import version
names = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
         "umap-learn", "pynndescent"]
print(" ".join(f"{n}=={version(n)}" for n in names))')"
for pin in $PINS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "$pin"
done

# 3. never committed
EXCLUDE="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")"
for pattern in /.gpu/ /.whl/; do
  grep -qxF "$pattern" "$EXCLUDE" 2>/dev/null || echo "$pattern" >>"$EXCLUDE"
done

# 4. what travels: the tracked files, .gpu/data and .whl (the device tool's carry limit is 64 MiB)
ls -l "$GPU_DATA" "$WHEELS"
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
extra=$(du -cb "$GPU_DATA" "$WHEELS" | tail -1 | cut -f1)
echo "tracked_bytes: $tracked"
echo "gpu_data_and_wheels_bytes: $extra"
echo "total_mib: $(( (tracked + extra) / 1048576 ))"
if (( tracked + extra >= 60 * 1048576 )); then echo "too large: over 60 MiB" >&2; exit 1; fi
