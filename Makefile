# zoofusion: `make run` sets up and runs the pipeline (quick profile), `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
# DVC runs each stage's `python -m ...` from PATH: the venv must come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup source run replicate test test-fast test-repro test-replicate test-gpu-script test-ray test-services test-ui ui ui-check plots-template study study-params

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

# The image source and the labels (data/source/*.dvc): from the DVC remote, else imported again from ../shared/data
source: setup
	scripts/source.sh

run: setup source
	$(BIN)/dvc repro

# Replication across pipeline seeds (params.yaml `replicate`): a queued DVC experiment per seed on the reduced
# profile, run one at a time, then reports/replication.md and .json from `dvc exp show --json`. About 4 minutes
# a seed on 2 cores; a rerun queues only the seeds this commit lacks.
replicate: setup source
	$(BIN)/python -m zoofusion.replicate all

# Two pytest workers (one per core); a test file stays on one worker, so the tiny pipeline runs once; its file
# comes first (--no-loadscope-reorder: xdist would otherwise start the files with the most tests first), so the
# longest file starts at once and its worker takes no other file until it is nearly done.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests/test_pipeline.py tests

# The fast tier: every unit test, no end-to-end pipeline (under 2 minutes on 2 cores).
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow and not services and not ray and not repro and not replicate and not gpu_script and not e2e"

# The `repro` tier: two scratch clones run the tiny pipeline at once; every DVC output must be the same bytes.
test-repro: setup
	$(BIN)/python -m pytest -q -m repro

# The `replicate` tier: one tiny pipeline as a queued DVC experiment in a scratch git clone (its temp copy finds
# data/source, the MLflow store and the caches). CI runs it after `make test`.
test-replicate: setup
	$(BIN)/python -m pytest -q -m replicate

# The `gpu_script` tier: scripts/gpu_study.sh (the study on a lent GPU through DVC + MLflow) run tiny on CPU in a
# git-less copy of the tracked files, stopped by its call limit, then resumed to the end
test-gpu-script: setup
	$(BIN)/python -m pytest -q -m gpu_script

# The `ray` tier: zoo shards through Ray equal local ones; the tiny pipeline on a two-node cluster spreads its work
# over both nodes. CI runs it after `make test`.
test-ray: setup
	$(BIN)/python -m pytest -q -m ray

# The `services` tests: a real PostgreSQL + mlflow server (scripts/services.sh); CI runs them after `make test`.
test-services: setup
	$(BIN)/python -m pytest -q -m services

# Offline Vega for `dvc plots show`: fetched from npm at set-up into data/cache/vega/ (git-ignored, never committed)
plots-template: setup
	$(BIN)/python scripts/vega_template.py --configure-dvc

# Browser check of the MLflow UI, optuna-dashboard and the DVC plots page (needs: apt-get install -y chromium)
ui-check: setup
	$(BIN)/python scripts/ui_screenshot.py $(if $(wildcard dvc_plots/index.html),--plots-html dvc_plots/index.html)

test-ui: setup
	$(BIN)/python -m pytest -q -m slow tests/test_ui_browser.py tests/test_vega_template.py

ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# The study's scale (2749 + 1749 zoo models, 200 CycleGAN epochs, the study's domain sizes as far as CIFAR-10
# allows) as a DVC experiment: params.yaml stays the quick profile. Hours on 2 CPU cores; see README.md.
STUDY_PARAMS = -S zoo.n_models.black=2749 -S zoo.n_models.cat=1749 -S zoo.shard_size=64 \
	-S data.darkness_threshold=0.5 -S data.black_positive=1745 -S data.black_negative=81 \
	-S data.cat_positive=4400 -S data.cat_negative=562 -S cyclegan.epochs=200 -S evaluate.n_selected=10 -S evaluate.budget=0

study: setup source
	$(BIN)/dvc exp run -n study $(STUDY_PARAMS) $(STUDY_EXTRA)

# The study's overrides alone, for scripts that run the study elsewhere (scripts/gpu_study.sh on a lent GPU)
study-params:
	@echo $(STUDY_PARAMS)
