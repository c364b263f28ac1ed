"""scripts/ui_screenshot.py in a real browser, on a tiny MLflow store and Optuna storage built here in seconds (the
experiments, run names, params, metrics, tags and artifacts the script looks for), not on a pipeline run."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
N_GENERATED = 101  # with the 5 baselines, more than the 100 runs the UI loads at once: "Load more" is pressed
BASELINES = ["random", "zoo-A", "zoo-B", "average", "pixels"]
METHODS = ["dbscan", "kmeans", "ocsvm"]  # test/dbscan/* sort above test/kmeans/*: the metrics table must scroll


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui = load_script("ui_screenshot")


def needs_browser():
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (servers started on a store must be gone after)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if p.name.isdigit() and int(p.name) != os.getpid() and text in cmd:
            found.append(f"{p.name}: {cmd[:200]}")
    return found


def build_store(root: Path) -> tuple[str, str]:
    """An MLflow sqlite store and an Optuna sqlite storage with what each page of the script shows."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, Metric, Param, RunTag

    store = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)
    t0 = int(time.time() * 1000) - 3_600_000

    def experiment(name: str) -> str:
        return client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())

    def run(exp: str, name: str, params=None, metrics=None, tags=None, parent=None, steps=1) -> str:
        tags = {**(tags or {}), **({"mlflow.parentRunId": parent} if parent else {})}
        r = client.create_run(exp, run_name=name, start_time=t0, tags=tags)
        ms = [Metric(k, v * (1 + 0.1 * (steps - s)), t0, s) for k, v in (metrics or {}).items()
              for s in range(1, steps + 1)]
        client.log_batch(r.info.run_id, metrics=ms, params=[Param(k, str(v)) for k, v in (params or {}).items()])
        client.set_terminated(r.info.run_id, end_time=t0 + 1000)
        return r.info.run_id

    # generated-models: an evaluate run, its child runs (generated models and baselines); the top ten, those on
    # screen, log an input (the others do not: fewer commits, a quicker test).
    exp = experiment("generated-models")
    parent = run(exp, "evaluate")
    dataset = mlflow.data.from_numpy(np.zeros((2, 2)), source="data/prepared/val.npz", name="val.npz",
                                     digest="0123abcd")._to_mlflow_entity()
    models = [(f"{i}/A", "generated") for i in range(N_GENERATED)] + [(f"{k}-0", k) for k in BASELINES]
    for i, (model_id, kind) in enumerate(models):
        score = 0.5 + 0.4 * i / len(models) if kind == "generated" else 0.45 + 0.01 * i / len(models)
        metrics = {f"{split}/{m}/{what}": score for split in ("val", "test") for m in METHODS
                   for what in ("accuracy", "precision", "recall", "auroc", "average_precision", "balanced_accuracy")}
        best = i == N_GENERATED - 1 or i == len(models) - 1  # the best on val of its kind (generated, pixels)
        rid = run(exp, model_id, {"model_id": model_id, "kind": kind}, metrics, parent=parent,
                  tags={"selected_on_val": str(i == N_GENERATED - 1).lower(),
                        **{f"best_on_val_{m}": str(best).lower() for m in METHODS}})
        if N_GENERATED - 10 <= i < N_GENERATED:
            client.log_inputs(rid, [DatasetInput(dataset, [RunTag("mlflow.data.context", "validation")])])
        if i == N_GENERATED - 1:  # the selected one: all its metrics in protocol/metrics.json, as evaluate logs them
            client.log_dict(rid, {**metrics, "val/kmeans/entropy": 0.5}, "protocol/metrics.json")
    client.create_registered_model(ui.REGISTERED_MODEL)
    version = client.create_model_version(ui.REGISTERED_MODEL, f"runs:/{rid}/feature_extractor", run_id=rid)
    client.set_registered_model_alias(ui.REGISTERED_MODEL, ui.ALIAS, version.version)

    # zoo: a parent run per domain, a child run per trained CNN (domain is both a param and a tag, as there).
    exp = experiment("zoo")
    for domain in ("black", "cat"):
        p = run(exp, f"zoo-{domain}", {"domain": domain})
        for i in range(3):
            run(exp, f"{domain}-{i:05d}", {"domain": domain, "seed": 100 + i},
                {"final_train_acc": 0.6 + i / 10, "final_val_acc": 0.55 + i / 10 + (domain == "cat") / 100},
                tags={"domain": domain}, parent=p)

    # cyclegan: ui.CYCLEGAN_RUN (the study variant's conv1) with per-epoch losses and its last epoch's kernel grid.
    exp = experiment("cyclegan")
    rid = run(exp, ui.CYCLEGAN_RUN, {"epochs": 3}, {m: 1.0 for m in ui.LOSSES + ["loss_adv", "loss_identity"]},
              steps=3)
    grid = root / "epoch_0003.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(grid)
    client.log_artifact(rid, str(grid), "grids")

    # tuning: a parent run per Optuna study, a nested run per trial; and the studies themselves.
    exp = experiment("tuning")
    storage_url = f"sqlite:///{root / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for method in METHODS:
        for cand, kind in [("9/A", "generated"), ("zoo-A-0", "zoo-A")]:
            name = f"zoofusion/{method}/{cand}"
            p = run(exp, name, {"method": method, "candidate": cand, "kind": kind},
                    {"best_value": 0.7 + len(name) / 1000, "untuned_value": 0.6})
            study = optuna.create_study(study_name=name, storage=storage_url, direction="maximize")
            study.set_user_attr("method", method)
            study.set_user_attr("kind", kind)
            for t in range(3):
                run(exp, f"trial-{t}", {"n_neighbors": 10 + t}, {"objective": 0.6 + t / 20}, parent=p)
                study.add_trial(optuna.trial.create_trial(params={"x": float(t)}, value=0.6 + t / 20,
                                distributions={"x": optuna.distributions.FloatDistribution(0, 5)}))
    return store, storage_url


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    return build_store(tmp_path_factory.mktemp("uistore"))


def plots_page(tmp: Path) -> Path | None:
    """A `dvc plots show` page made with the offline template, or None where npm cannot fetch Vega."""
    try:
        template = tmp / "offline.html"
        load_script("vega_template").build(template, timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"no offline Vega template ({e}): the plots check is left out")
        return None
    (tmp / "proj").mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp / "proj", env=env, check=True)
    (tmp / "proj" / "loss.csv").write_text("epoch,loss\n1,0.9\n2,0.5\n3,0.3\n")
    (tmp / "proj" / "dvc.yaml").write_text("plots:\n  - loss.csv:\n      x: epoch\n      y: loss\n")
    subprocess.run([dvc, "plots", "show", "--html-template", str(template), "-o", "plots"], cwd=tmp / "proj",
                   env=env, check=True, capture_output=True)
    return tmp / "proj" / "plots" / "index.html"


@pytest.mark.slow
def test_every_page_shows_what_it_should(stores, tmp_path: Path, capsys):
    needs_browser()
    store, storage = stores
    plots = plots_page(tmp_path)
    out = tmp_path / "ui"
    argv = ["--store", store, "--optuna-storage", storage, "--out", str(out), "--chromium", str(CHROMIUM)]
    rc = ui.main(argv + (["--plots-html", str(plots)] if plots else []))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "FAILED" not in printed and "skipped" not in printed, printed
    want = ["experiments", "generated_models_runs", "compare_runs", "compare_runs_metrics", "candidate_metrics_json",
            "zoo_runs", "cyclegan_run", "cyclegan_artifacts", "tuning_runs", "model_registry", "optuna_dashboard",
            "optuna_study"]
    for name in want + (["plots"] if plots else []):
        png = out / f"{name}.png"
        assert png.is_file() and Image.open(png).size == (1600, 1000), name
    # No server outlives the script.
    assert not processes_mentioning(store.removeprefix("sqlite:///")), "a server on the test store is still running"


@pytest.mark.slow
def test_timing_finds_the_top_generated_model_in_a_bench_store(tmp_path: Path, capsys):
    """--timing on a store `bench mlflow --keep` made (CI: the study's size): the runs list shows the top run by the
    test metric and the compare view its top 5, each timed."""
    needs_browser()
    keep = tmp_path / "store"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run([sys.executable, "-m", "zoofusion.bench", "mlflow", "--runs", "8", "--candidates", "30",
                    "--sample", "0", "--no-server", "--keep", str(keep)], env=env, check=True, capture_output=True)
    rc = ui.main(["--timing", "--store", f"sqlite:///{keep / 'mlflow.db'}", "--chromium", str(CHROMIUM)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    seconds = {k: float(v) for k, v in re.findall(r"^browser_(\w+)_seconds: ([\d.]+)", printed, re.M)}
    assert set(seconds) == {"runs_list", "compare", "slowest"} and seconds["slowest"] == max(seconds.values()), printed
    assert not processes_mentioning(str(keep)), "a server on the bench store is still running"


@pytest.mark.slow
def test_plots_page_loading_vega_from_a_cdn_fails(tmp_path: Path):
    needs_browser()
    # What `dvc plots show` writes by default: Vega from cdn.jsdelivr.net (blocked here, as offline).
    page = tmp_path / "index.html"
    page.write_text('<html><head><script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script></head><body>'
                    '<div id="p"><script>vegaEmbed("#p", {});</script></div></body></html>')
    with ui.browser(str(CHROMIUM), 800, 600, 1.0) as context, \
            pytest.raises(RuntimeError, match=r"drew no Vega chart.*requested https://cdn\.jsdelivr\.net/npm/vega"):
        ui.check_plots(context, page, tmp_path)


def test_missing_store_is_one_clear_line(tmp_path: Path, capsys):
    assert ui.main(["--store", f"sqlite:///{tmp_path / 'none.db'}", "--chromium", sys.executable]) == 2
    assert "no MLflow store at" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_is_stopped_when_the_block_fails(tmp_path: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    marker = f"http.server {port}"
    with pytest.raises(ValueError, match="a check failed"), \
            ui.serve("http", cmd, f"http://127.0.0.1:{port}/", tmp_path):
        assert processes_mentioning(marker)
        raise ValueError("a check failed")
    assert not processes_mentioning(marker)


def test_server_that_never_answers_is_stopped(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ui, "TIMEOUT", 2.0)
    marker = f"never-answers-{os.getpid()}"
    cmd = [sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"]
    with pytest.raises(RuntimeError, match="did not answer"), \
            ui.serve("sleeper", cmd, f"http://127.0.0.1:{free_port()}/", tmp_path):
        pass
    assert not processes_mentioning(marker)
