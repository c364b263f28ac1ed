#!/usr/bin/env bash
# The study on one lent GPU machine, through DVC + MLflow (no bypass): `bash scripts/gpu_study.sh [-S key=value ...]`
# in the repository root there. Prepare here first: `bash scripts/gpu_wheels.sh` (wheels into .whl/, the images
# into data/source/), then carry .whl and data/source in the call. It
#  1. installs the carried wheels (mlflow-skinny, dvc, optuna, umap-learn, ...) beside the machine's own torch,
#  2. makes the copy a git repository if it is none (dvc exp run records experiments in git),
#  3. runs `dvc exp run -n $ZF_EXP` with the study's params (`make -s study-params`), evaluate.budget 48 and the
#     GPU's settings below, then any -S given here (last wins),
#  4. prints each stage's seconds and the full study's projection from MLflow (bench stages / project) and the
#     MLflow runs per experiment; with $OUT set (the device tool), copies the numbers there.
# Resumable: a call ends at ZF_CALL_S seconds (default 560) with a Ctrl-C to the pipeline: finished zoo shards and
# CycleGAN checkpoints stay cached, and the same command again goes on from them (exit 75 says so). The zoo and
# the CycleGANs also stop at executor.time_limit_s where set. ZF_DEVICE=cpu runs it on CPU (the tests, tiny).
set -uo pipefail
cd "$(dirname "$0")/.."
exp=${ZF_EXP:-gpu-study}
device=${ZF_DEVICE:-cuda}
call_s=${ZF_CALL_S:-560}
log=${ZF_LOG:-gpu_study.log}
site=${ZF_SITE:-/tmp/zoofusion-site}
PY=${PY:-python3}
say() { echo "gpu_study: $*"; }

if [ -d .whl ] && ! "$PY" -c "import mlflow, dvc, optuna, umap, pydantic" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
    { say "installing the wheels in .whl/ failed (made for another Python? scripts/gpu_wheels.sh <version>)"; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this copy's code, not an installed one
if ! "$PY" -c "import mlflow, dvc, optuna, umap, pydantic, torch" 2>/dev/null; then
  say "missing Python packages ($("$PY" -c "import mlflow, dvc, optuna, umap, pydantic, torch" 2>&1 | tail -1));" \
      "run scripts/gpu_wheels.sh where pip reaches PyPI and carry .whl"; exit 2
fi
if [ "$device" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "no CUDA device here; ZF_DEVICE=cpu runs the script on CPU"; exit 2
fi
for f in data/source/cifar10-jpg.tar.gz data/source/blackcat_labels_train.csv; do
  [ -f "$f" ] || { say "$f missing: run scripts/gpu_wheels.sh (or make source) here and carry data/source"; exit 2; }
done
bin=$(mktemp -d)  # dvc.yaml's stages run `python` and `dvc`: this interpreter's, whatever the machine calls them
trap 'rm -rf "$bin"' EXIT
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$PY")" > "$bin/python"
printf '#!/bin/sh\nexec %s -m dvc "$@"\n' "$(command -v "$PY")" > "$bin/dvc"
chmod +x "$bin/python" "$bin/dvc"
export PATH="$bin:$PATH" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git init -q || { say "could not make this copy a git repository (dvc exp run needs one; is git installed?)"; exit 2; }
fi
git config user.name >/dev/null || git config user.name zoofusion  # dvc commits each experiment: someone must sign
git config user.email >/dev/null || git config user.email zoofusion@localhost
git rev-parse -q --verify HEAD >/dev/null || { git add -A && git commit -qm "working tree"; } ||
  { say "could not commit this copy's working tree (dvc exp run needs a commit)"; exit 2; }
study=$(make -s study-params) || { say "make -s study-params failed (is make installed?)"; exit 2; }
gpu=()
if [ "$device" = cuda ]; then  # one H200/H100: 64 models a group, 256 a shard; 3 CycleGANs sharing the GPU at once;
  # 16 cores for evaluate and tune
  gpu=(-S zoo.path=batched_g64 -S zoo.group_size=64 -S zoo.shard_size=256 -S cyclegan.workers=3 -S evaluate.workers=16
       -S tune.workers=16)
fi
# shellcheck disable=SC2086
args=(exp run -n "$exp" $study -S "device=$device" -S evaluate.budget=48 "${gpu[@]}" "$@")
numbers() {
  python -m zoofusion.bench stages --dvc-exp "$exp"
  python -m zoofusion.bench project --dvc-exp "$exp"
  python - "$exp" "$device" <<'PY'
import sys, mlflow, torch
from zoofusion.bench import matmul_peak_gflops, train_flop_per_image
exp, device = sys.argv[1:]
c = mlflow.MlflowClient()
peak = matmul_peak_gflops(4096 if device == "cuda" else 1024, device=device)  # fp32: the stages turn TF32 off
print(f"fp32_matmul_peak_tflops: {peak / 1e3:.1f} ({device})")
zoo, seen = c.get_experiment_by_name("zoo"), set()
for r in c.search_runs([zoo.experiment_id], f"tags.dvc_exp = '{exp}' and metrics.model_images_per_s > 0",
                       order_by=["attributes.start_time DESC"]):
    if r.data.params["domain"] in seen:
        continue
    seen.add(r.data.params["domain"])
    rate = r.data.metrics["model_images_per_s"]
    gflops = rate * train_flop_per_image() / 1e9
    print(f"zoo_{r.data.params['domain']}_model_images_per_s: {rate:.0f} ({r.data.tags.get('training_path')}; "
          f"{gflops:.1f} GFLOP/s, {gflops / peak:.1%} of the fp32 matmul peak; the run of its last call)")
if not seen:
    print("zoo_model_images_per_s: none (no finished zoo run of this experiment trained a shard: all were cached)")
n = {e.name: len(c.search_runs([e.experiment_id], max_results=50000)) for e in c.search_experiments()}
print("mlflow_runs:", sum(n.values()), "(" + ", ".join(f"{k} {v}" for k, v in sorted(n.items())) + ")")
PY
}
if dvc exp list --name-only 2>/dev/null | grep -qx "$exp"; then  # a finished call before this one ran it all
  say "experiment $exp has run already (dvc exp show); its numbers follow (another ZF_EXP=<name> runs again)"
else
  say "dvc ${args[*]}"
  t0=$(date +%s)
  : > "$log"
  # its own process group, so one Ctrl-C reaches dvc and the stage it runs; SIGINT back to its default first (a shell
  # without job control starts background commands with it ignored, and Python then never raises KeyboardInterrupt)
  setsid "$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    dvc "${args[@]}" >> "$log" 2>&1 &
  pid=$!
  # the watch: a Ctrl-C at the call's limit, a kill 30 s later; ended with the pipeline, its sleep with it (a sleep
  # left behind would outlive the call)
  ( s=; trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$call_s" & s=$!; wait "$s"; kill -INT -- "-$pid" 2>/dev/null
    sleep 30 & s=$!; wait "$s"; kill -KILL -- "-$pid" 2>/dev/null ) &
  watch=$!
  tail -n +1 -f --pid="$pid" "$log" &
  echo_log=$!
  wait "$pid"; rc=$?
  # a stage may outlive dvc by a moment after a Ctrl-C: the call ends with dvc's whole group (killed after 30 s);
  # zombies do not count (an init that reaps no orphans keeps them)
  for _ in $(seq 150); do
    ps -e -o pgid=,stat= 2>/dev/null | awk -v g="$pid" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}' || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null
  kill "$watch" 2>/dev/null; wait "$watch" 2>/dev/null
  wait "$echo_log"  # tail sees dvc gone within a second, after printing the log's last lines
  say "dvc exp run: rc $rc after $(( $(date +%s) - t0 )) s"
  if [ "$rc" -ne 0 ]; then
    if [ $(( $(date +%s) - t0 )) -ge "$call_s" ] || grep -q "executor.time_limit_s" "$log"; then
      say "stopped at this call's time limit; finished zoo shards and CycleGAN checkpoints are cached: run the same command again to go on"
      exit 75
    fi
    say "the pipeline failed (see $log)"; exit "$rc"
  fi
fi
numbers | tee gpu_study_numbers.txt
if [ -n "${OUT:-}" ]; then
  cp gpu_study_numbers.txt metrics/evaluate.json "$log" "$OUT"/ 2>/dev/null
fi
