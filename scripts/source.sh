#!/usr/bin/env bash
# The pipeline's inputs, data/source/*.dvc (the image source and the black-cat labels, `dvc import-url`s of
# ../shared/data): `dvc pull` them from the DVC remote; where the remote lacks them (a fresh remote, CI),
# `dvc update` re-imports them from where they were imported from and pushes them, so the next clone pulls.
# A re-import whose bytes differ from the md5 this commit recorded is refused (the .dvc file is restored).
set -euo pipefail
cd "$(dirname "$0")/.."
files=(data/source/*.dvc)
if dvc pull -q "${files[@]}" 2>/dev/null; then
  exit 0
fi
echo "source: the DVC remote lacks data/source; importing it again from where it came from (see data/source/README.md)"
if ! dvc update -q "${files[@]}"; then
  echo "source: cannot fetch data/source: neither the DVC remote nor the import source (../shared/data/ beside the repository) has it" >&2
  exit 1
fi
if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
  if ! git diff --quiet -- "${files[@]}"; then
    git diff --stat -- "${files[@]}" >&2
    git checkout -q -- "${files[@]}"
    echo "source: the import source differs from what this commit recorded in data/source/*.dvc; refused (to take the new version: dvc update data/source/<file>.dvc and commit it)" >&2
    exit 1
  fi
fi
dvc push -q "${files[@]}" || echo "source: could not push data/source to the DVC remote (the next clone imports it again)" >&2
