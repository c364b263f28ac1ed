#!/usr/bin/env bash
# What every MLproject entry point runs: scripts/mlflow_stage.sh PARAMS_FILE FORCE [TARGET]
#
# Runs TARGET (a dvc.yaml stage such as `evaluate` or `zoo@cat`; none = the whole pipeline) through DVC, so
# upstream stages that changed run first and dvc.lock records what ran. FORCE=true re-runs just TARGET
# (`dvc repro --force --single-item`). Under `mlflow run`, dvc.lock and params.yaml go onto the launcher run.
set -euo pipefail
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
params_file=$1 force=$2 target=${3:-}
fail() { echo "zoofusion: $1" >&2; exit "${2:-2}"; }

command -v dvc >/dev/null || fail "dvc is not on PATH; activate the project venv first (. .venv/bin/activate)" 127
[ "$(realpath "$params_file")" = "$(realpath params.yaml)" ] || fail "params_file must be this project's \
params.yaml, got $params_file: DVC reads params.yaml only. Edit params.yaml, use 'dvc exp run --set-param \
KEY=VALUE', or run the stage without DVC: python -m zoofusion.stages.<stage> --params FILE"
case $target in
  zoo@*) case ${target#zoo@} in black | cat) ;; *) fail "domain must be black or cat, got ${target#zoo@}" ;; esac ;;
  generate@*) case ${target#*@} in study | aligned) ;; *) fail "variant must be study or aligned, got ${target#*@}" ;; esac ;;
esac
case $force in
  true) flags=(--force --single-item) ;;
  false) flags=() ;;
  *) fail "force must be true or false, got $force" ;;
esac

dvc repro ${flags[@]+"${flags[@]}"} $target
if [ -n "${MLFLOW_RUN_ID:-}" ]; then
  python -c "import os, mlflow; c = mlflow.MlflowClient(); r = os.environ['MLFLOW_RUN_ID']
c.log_artifact(r, 'dvc.lock', 'dvc'); c.log_artifact(r, 'params.yaml', 'dvc')"
fi
