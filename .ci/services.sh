#!/usr/bin/env bash
# CI: the `services` tests (real PostgreSQL + `mlflow server`, see tests/test_services.py). Runs as root on a fresh
# Debian machine: installs PostgreSQL (Debian's package) when its server binaries are absent, then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || scripts/services.sh install
make setup
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest -q -m services tests/test_services.py
