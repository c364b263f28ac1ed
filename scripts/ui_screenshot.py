"""Screenshots of the MLflow UI (and the Optuna dashboard, and DVC's plots page) on this project's runs, taken and
checked in headless Chromium with Playwright.

    python scripts/ui_screenshot.py [--store sqlite:///<repo>/mlflow.db] [--out reports/ui] [--evaluate-run ID]
                                    [--optuna-storage sqlite:///<repo>/optuna.db] [--plots-html dvc_plots/index.html]

Starts `mlflow ui` on 127.0.0.1 and a free port, drives Chromium through its pages with role and text locators
(what a user sees, not the UI's CSS classes), saves PNGs, checks that each page shows the runs and metrics it
should, and stops the server (also on failure). Each failed check prints one line `FAILED <check>: <why>` (and
saves FAILED_<check>.png); the exit status is 1 if any failed.

- experiments.png             the experiment list
- generated_models_runs.png   `generated-models`: the child runs of one `evaluate` run (generated models and
                              baselines), with columns kind, selected_on_val, best_on_val_kmeans, the verdict's
                              metric val/kmeans/auroc and test/kmeans/{auroc,average_precision,balanced_accuracy}
                              (prevalence-free: accuracy on a 1-in-3 test set reads 0.67 for "all other"), sorted
                              by val/kmeans/auroc; where those
                              runs log inputs (mlflow.log_input), also the Dataset column, which must show them
- compare_runs.png            the compare view of the generated models selected on val and the best baseline of
                              each kind: parallel coordinates of kind and model_id against val and test AUROC
- compare_runs_metrics.png    the same compare view scrolled to its Parameters and Metrics tables (test/kmeans)
- candidate_metrics_json.png  the first of those runs' Artifacts tab at protocol/metrics.json: every protocol metric
                              of the model (the run's MLflow metrics are the headline ones), one only the file holds
                              shown
- zoo_runs.png                `zoo`: the trained CNNs, i.e. the child runs of the latest finished `zoo-<domain>`
                              run of each domain (of one domain where no filter selects exactly all of them), with
                              columns domain, seed and final_{train,val}_acc, sorted by final_val_acc
- cyclegan_run.png            `cyclegan`: the latest finished `cyclegan-study-conv1` run, its Model metrics tab filtered
                              to the per-epoch loss curves (loss_G, loss_D_A, loss_D_B, loss_adv, loss_cycle, ...)
- cyclegan_artifacts.png      the same run's Artifacts tab showing its kernel grid of the last epoch
                              (grids/epoch_NNNN.png, NNNN = the run's `epochs`; else the last grid)
- tuning_runs.png             `tuning`: the parent run of each Optuna study of the latest tune (`zoofusion/<method>/
                              <candidate>`), with columns method, candidate, kind, best_value and untuned_value
- model_registry.png          the Model Registry page: registered model `zoofusion-generated` with alias `champion`
                              (skipped, with a note, while the registry has no such model)
- optuna_dashboard.png        optuna-dashboard (also on 127.0.0.1, started and stopped here) on --optuna-storage:
                              the study list
- optuna_study.png            the study of the first generated model tuned for kmeans: its optimisation history
- plots.png                   --plots-html (a `dvc plots show` page) opened as file://: at least one Vega chart
                              drawn, and no http(s) request (all are blocked and reported): the page works offline

With --timing it only times, in the browser, the generated models' runs list (until its top run by test/kmeans/auroc
shows) and the compare view of the top 5, and prints the seconds (target < 5 s): for a store of the study's size,
`python -m zoofusion.bench mlflow --keep DIR` (4498 CNNs and 8996 generated models).

The two optuna_* shots are skipped, with a note, when the --optuna-storage sqlite file does not exist; plots.png
without --plots-html.

Needs Chromium (`apt-get install -y chromium`; or --chromium PATH) and the `playwright` Python package (its own
browser downloads are not used).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "generated-models"
SELECT = "val/kmeans/auroc"  # the verdict's metric for KMeans (core.selection.VERDICT_METRIC), chosen on val
SHOW_METRICS = ["val/kmeans/auroc", "test/kmeans/auroc", "test/kmeans/average_precision", "test/kmeans/balanced_accuracy"]
SHOW_TAGS = ["selected_on_val", "best_on_val_kmeans"]  # the stage's selection tags (stages/evaluate.py)
ZOO_METRICS = ["final_train_acc", "final_val_acc"]  # logged on every zoo child run (one trained CNN each)
CYCLEGAN_RUN = "cyclegan-study-conv1"
LOSS_CHARTS = "^loss_"  # the Model metrics tab's chart search takes a regular expression: the per-epoch losses
LOSSES = ["loss_G", "loss_D_A", "loss_D_B", "loss_cycle"]  # charts that must show a curve
TUNE_METHOD = "kmeans"  # optuna_study.png: the study of the first generated model tuned for this method
REGISTERED_MODEL, ALIAS = "zoofusion-generated", "champion"
UNINFORMATIVE = ["Dataset", "Source", "Models"]  # attribute columns switched off in the runs tables
TIMEOUT = 90.0  # seconds for a page to show something: the first loads are slow on 2 CPU cores
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--hide-scrollbars", "--mute-audio"]
# The MLflow 3 UI opens its assistant panel on first load; mark it as already opened and closed.
NO_ASSISTANT = ('localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");'
                'localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");')
# ...and show the "Model training" side of the UI (runs, models), not the GenAI one (traces, evaluations).
MODEL_TRAINING = 'localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("machine_learning"));'


class Skip(Exception):
    """A check that does not apply to this store: printed as a note, not a failure."""


# --- browser and servers ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def browser(chromium: str, width: int, height: int, scale: float):
    """A Playwright browser context on `chromium`: a viewport of width/scale x height/scale CSS pixels, rendered
    into width x height PNGs. Chromium is closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = b.new_context(viewport={"width": round(width / scale), "height": round(height / scale)},
                                    device_scale_factor=scale)
            context.add_init_script(NO_ASSISTANT + MODEL_TRAINING)
            context.set_default_timeout(TIMEOUT * 1000)
            yield context
        finally:
            b.close()


def sqlite_file(url: str) -> tuple[str, Path | None]:
    """The URL with its sqlite database path made absolute, and that path (None for other URLs)."""
    path, sep, query = url[len("sqlite:///"):].partition("?")
    if not url.startswith("sqlite:///") or path in ("", ":memory:"):
        return url, None
    file = Path(path).resolve()
    return f"sqlite:///{file}{sep}{query}", file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(name: str, cmd: list[str], probe: str, workdir: Path, env: dict | None = None):
    """Run a web server in its own process group (stopping the group stops its workers too) while the block runs;
    wait until `probe` answers 200 first. Its output goes to workdir/<name>.log."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        end = time.time() + TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log_path.read_text()[-300:]!r}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > end:
                    raise RuntimeError(f"{name} did not answer on {probe} within {TIMEOUT:.0f}s") from None
                time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def mlflow_ui(store: str, port: int, workdir: Path):
    # No job runner: MLflow 3 otherwise starts ~8 background Python processes (GenAI scoring, trace archival) that
    # the pages shown here do not use and that take most of a minute to start on 2 CPU cores.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    return serve("mlflow-ui", cmd, f"http://127.0.0.1:{port}/health", workdir, env)


def optuna_dashboard(storage: str, port: int, workdir: Path):
    exe = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    if not exe:
        raise RuntimeError("optuna-dashboard not found next to this Python nor on PATH: pip install optuna-dashboard")
    cmd = [exe, storage, "--host", "127.0.0.1", "--port", str(port)]
    return serve("optuna-dashboard", cmd, f"http://127.0.0.1:{port}/api/meta", workdir)


# --- waiting on pages ---------------------------------------------------------------------------------------------

def visible(locator, what: str, timeout: float = TIMEOUT):
    """Wait until `locator` is visible; fail naming `what` the page should show."""
    from playwright.sync_api import Error

    try:
        locator.first.wait_for(state="visible", timeout=timeout * 1000)
    except Error:
        raise RuntimeError(f"the page did not show {what} within {timeout:.0f}s") from None
    return locator


def until(predicate, what: str, timeout: float = TIMEOUT) -> None:
    """Poll `predicate` (errors count as not yet) until it is true; fail naming `what` the page should show."""
    end, last = time.time() + timeout, None
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception as e:  # an element not there yet, or replaced while read
            last = e
        time.sleep(0.25)
    why = f" (last error: {str(last).splitlines()[0]})" if last else ""
    raise RuntimeError(f"the page did not show {what} within {timeout:.0f}s{why}")


def screenshot(page, path: Path) -> Path:
    page.mouse.move(0, 0)  # the pointer off the content, so that no row or chart shows a hover state
    page.wait_for_timeout(300)
    page.screenshot(path=path)
    return path


# --- what to show: runs picked with MlflowClient, the same searches the UI makes ------------------------------------

def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise RuntimeError(f"no experiment {name!r} in the MLflow store: run the pipeline first (make run)")
    return exp.experiment_id


def pick_runs(client, evaluate_run: str | None):
    """The experiment id, the `evaluate` parent run, its child runs, and the few to compare."""
    exp_id = experiment_id(client, EXPERIMENT)
    if evaluate_run:
        parent = client.get_run(evaluate_run)
    else:
        parents = client.search_runs([exp_id], "attributes.run_name = 'evaluate' and attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise RuntimeError(f"no finished `evaluate` run in experiment {EXPERIMENT!r}")
        parent = parents[0]
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)
    if not children:
        raise RuntimeError(f"evaluate run {parent.info.run_id} has no child runs")
    ranked = sorted(children, key=lambda r: -r.data.metrics.get(SELECT, float("-inf")))
    chosen = [r for r in ranked if r.data.params.get("kind", "").startswith("generated")
              and r.data.tags.get("selected_on_val") == "true"]
    seen = set()
    for r in ranked:  # the best baseline of each kind, by the same val metric
        kind = r.data.params.get("kind")
        if not kind.startswith("generated") and kind not in seen:
            seen.add(kind)
            chosen.append(r)
    return exp_id, parent, children, chosen


def latest_finished(client, exp_id: str, where: str) -> dict:
    """The latest finished run of each run name among the runs matching `where`, by run name."""
    runs = client.search_runs([exp_id], f"{where} and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
    latest: dict = {}
    for r in runs:
        latest.setdefault(r.info.run_name, r)
    return latest


def exact_filter(client, exp_id: str, runs, readable: list[str]) -> str | None:
    """The first of the `readable` search filters that selects exactly `runs` in the experiment (checked with
    the same search the UI makes), else None."""
    want = {r.info.run_id for r in runs}
    for f in readable:
        if {r.info.run_id for r in client.search_runs([exp_id], f, max_results=50000)} == want:
            return f
    return None


def pick_zoo(client):
    """The `zoo` experiment, a search filter, and the child runs (trained CNNs) it selects: those of the latest
    finished `zoo-<domain>` parent run of every domain, or, where no filter selects exactly those (MLflow search
    has no OR and the zoo stage may have run several times), those of the first domain's parent."""
    exp_id = experiment_id(client, "zoo")
    parents = latest_finished(client, exp_id, "attributes.run_name LIKE 'zoo-%'")
    if not parents:
        raise RuntimeError("no finished `zoo-<domain>` run in experiment 'zoo'")
    by_parent = {p.info.run_id: client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{p.info.run_id}'",
                                                   max_results=50000) for p in parents.values()}
    children = [c for cs in by_parent.values() for c in cs]
    if not children:
        raise RuntimeError(f"the zoo parent runs {sorted(parents)} have no child runs")
    flt = exact_filter(client, exp_id, children, ["tags.mlflow.parentRunId LIKE '%'"])
    if flt is None:
        first = parents[min(parents)]
        print(f"zoo_runs.png: no search filter selects just the children of {', '.join(sorted(parents))}; "
              f"showing those of {first.info.run_name}")
        flt, children = f"tags.mlflow.parentRunId = '{first.info.run_id}'", by_parent[first.info.run_id]
    return exp_id, flt, children


def pick_cyclegan(client):
    """The `cyclegan` experiment, the latest finished CYCLEGAN_RUN run, and its kernel-grid image of the last
    epoch (`epochs`), else its last one."""
    exp_id = experiment_id(client, "cyclegan")
    runs = latest_finished(client, exp_id, f"attributes.run_name = '{CYCLEGAN_RUN}'")
    if not runs:
        raise RuntimeError(f"no finished {CYCLEGAN_RUN!r} run in experiment 'cyclegan'")
    run = runs[CYCLEGAN_RUN]
    grids = sorted(a.path for a in client.list_artifacts(run.info.run_id, "grids") if a.path.endswith(".png"))
    if not grids:
        raise RuntimeError(f"run {run.info.run_id} ({CYCLEGAN_RUN}) has no grids/*.png artifact")
    missing = [m for m in LOSSES if m not in run.data.metrics]
    if missing:
        raise RuntimeError(f"run {run.info.run_id} ({CYCLEGAN_RUN}) has no metrics {missing}")
    epochs = run.data.params.get("epochs", "")
    final = f"grids/epoch_{int(epochs):04d}.png" if epochs.isdigit() else None
    return exp_id, run, final if final in grids else grids[-1]


def pick_tuning(client):
    """The `tuning` experiment, a search filter, and the parent runs it selects: the latest finished run of each
    Optuna study (named `zoofusion/<method>/<candidate>`)."""
    exp_id = experiment_id(client, "tuning")
    parents = list(latest_finished(client, exp_id, "attributes.run_name LIKE 'zoofusion/%'").values())
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise RuntimeError("no finished study run (`zoofusion/<method>/<candidate>`) in experiment 'tuning'")
    flt = exact_filter(client, exp_id, parents, ["tags.mlflow.parentRunId IS NULL"]) or (
        "attributes.run_id IN (" + ", ".join(f"'{r.info.run_id}'" for r in parents) + ")")
    return exp_id, flt, parents


def pick_study(storage_url: str):
    """The Optuna studies ({name: id}), and the one to show, with its number of complete trials and its best
    trial: the study of the first generated model tuned for TUNE_METHOD (the lowest study id: tune creates the
    top generated model's study first)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.get_storage(storage_url)
    studies = storage.get_all_studies()
    if not studies:
        raise RuntimeError(f"no Optuna study in {storage_url}: run the tune stage first")
    ids = {s.study_name: storage.get_study_id_from_name(s.study_name) for s in studies}
    mine = [s for s in studies if s.user_attrs.get("method") == TUNE_METHOD and str(s.user_attrs.get("kind", "")).startswith("generated")]
    mine = mine or [s for s in studies if s.study_name.startswith(f"zoofusion/{TUNE_METHOD}/")]
    if not mine:
        raise RuntimeError(f"no Optuna study for method {TUNE_METHOD!r} in {storage_url}")
    study = min(mine, key=lambda s: ids[s.study_name])
    trials = storage.get_all_trials(ids[study.study_name], deepcopy=False,
                                    states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise RuntimeError(f"Optuna study {study.study_name!r} has no complete trial")
    best = storage.get_best_trial(ids[study.study_name]).number
    return ids, study.study_name, len(trials), best


# --- the MLflow pages -----------------------------------------------------------------------------------------------

def runs_url(base: str, exp_id: str, search: str, order_by: str) -> str:
    # Sorted by a metric, the table lists child runs flat (sorted by start time, it nests them under their parent).
    query = urllib.parse.urlencode({"searchFilter": search, "orderByKey": order_by, "orderByAsc": "false"},
                                   quote_via=urllib.parse.quote)
    return f"{base}#/experiments/{exp_id}/runs?{query}"


def wait_for_rows(page, runs, what: str) -> None:
    """Wait until the runs table counts exactly len(runs) matching runs, pressing "Load more" while it shows
    full pages (it loads 100 runs at a time; the button, below the last row, exists only when scrolled to)."""
    counter = page.get_by_text(re.compile(r"^\d+ matching runs?$"))
    grid, more = page.get_by_role("grid"), page.get_by_role("button", name="Load more")
    n, shown, end = len(runs), -1, time.time() + TIMEOUT
    while time.time() < end:
        now = int(counter.inner_text().split()[0]) if counter.count() else -1
        if now > n:
            raise RuntimeError(f"the runs table counts {now} matching runs, more than the {n} {what}")
        if now == n:
            if n > 100:  # back to the top rows
                grid.first.hover()
                page.mouse.wheel(0, -10**6)
            return
        if now != shown:  # progress: the next page gets the full timeout
            shown, end = now, time.time() + TIMEOUT
        if now > 0 and now % 100 == 0:
            grid.first.hover()
            page.mouse.wheel(0, 10**6)
            if more.is_visible():
                more.click()
        page.wait_for_timeout(500)
    raise RuntimeError(f"the runs table counted {shown} matching runs, not the {n} {what}, after {TIMEOUT:.0f}s")


def top_run(page) -> str | None:
    """The run name shown in the table's top row: the highest run link on screen."""
    links = page.get_by_role("grid").first.get_by_role("link").evaluate_all(
        "ls => ls.filter(l => (l.getAttribute('href') || '').includes('/runs/'))"
        "        .map(l => [l.getBoundingClientRect().top, l.textContent.trim()])")
    return min(links)[1] if links else None


def wait_for_first_row(page, runs, metric: str, what: str) -> None:
    """Wait until the table's first row is a run with the highest `metric` (any of them, if tied)."""
    best = max(r.data.metrics.get(metric, float("-inf")) for r in runs)
    top = {r.info.run_name for r in runs if r.data.metrics.get(metric, float("-inf")) == best}
    until(lambda: top_run(page) in top, f"{what} sorted by {metric} ({min(top)} first)")


def toggle_columns(page, toggle: dict[str, list[str]]) -> None:
    """Toggle the named columns ({section: [title]}) in the runs table's column picker, and wait until the
    table's headers show the change. The picker's tree has no roles: its entries are the elements with a title
    (a tooltip; empty on the entry matching the search), found by their text after typing each name into its
    "Search columns" box."""
    page.get_by_role("button", name="Columns", exact=True).click()
    picker = page.get_by_role("dialog")
    search = visible(picker.get_by_role("textbox", name="Search columns"), "the column picker")
    sections = ("Attributes", "Metrics", "Parameters", "Tags")
    headers = page.get_by_role("columnheader")
    entries = picker.locator("[title]")

    def entry(section: str, title: str) -> int | None:  # `title` under `section`: a name can be a param and a tag
        current, found = None, None
        for i, t in enumerate(x.strip() for x in entries.all_inner_texts()):
            if t.split(" (")[0] in sections:
                current = t.split(" (")[0]
            elif current == section and t == title:
                found = i
        return found

    for section, titles in toggle.items():
        for title in titles:
            header = headers.filter(has_text=re.compile(rf"^{re.escape(title)}$"))
            before = header.count()
            search.fill(title)
            until(lambda s=section, t=title: entry(s, t) is not None, f"column {section} > {title} in the picker", 20)
            entries.nth(entry(section, title)).click()
            until(lambda h=header, n=before: h.count() != n,
                  f"the runs table's column {title} {'removed' if before else 'added'}", 20)
    search.fill("")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Columns", exact=True).blur()  # no focus ring in the screenshot


def shoot_experiments(page, base: str, out: Path) -> list[Path]:
    page.goto(base + "#/experiments")
    for name in (EXPERIMENT, "zoo", "cyclegan"):
        visible(page.get_by_role("link", name=name, exact=True), f"experiment {name} in the experiment list")
    return [screenshot(page, out / "experiments.png")]


def shoot_runs_table(page, base: str, picked, out: Path) -> list[Path]:
    exp_id, parent, children, _ = picked
    page.goto(runs_url(base, exp_id, f"tags.mlflow.parentRunId = '{parent.info.run_id}'", f"metrics.`{SELECT}`"))
    wait_for_rows(page, children, "child runs of evaluate")
    wait_for_first_row(page, children, SELECT, "the child runs of evaluate")
    # Datasets: shown where the runs log inputs (mlflow.log_input); else the column is an empty "-".
    datasets = {d.dataset.name for r in children for d in (r.inputs.dataset_inputs if r.inputs else [])}
    if not datasets:
        print("note: the child runs of evaluate log no inputs (mlflow.log_input): Dataset column not checked")
    off = [c for c in UNINFORMATIVE if not (datasets and c == "Dataset")]
    toggle_columns(page, {"Attributes": off, "Parameters": ["kind"], "Metrics": SHOW_METRICS,
                          "Tags": SHOW_TAGS})
    if datasets:
        cells = page.get_by_role("grid").get_by_role("gridcell")
        pattern = re.compile("|".join(re.escape(d) for d in sorted(datasets)))
        visible(cells.filter(has_text=pattern), f"a dataset ({', '.join(sorted(datasets))}) in the Dataset column")
    return [screenshot(page, out / "generated_models_runs.png")]


def shoot_compare(page, base: str, picked, out: Path) -> list[Path]:
    exp_id, _, _, chosen = picked
    ids = json.dumps([r.info.run_id for r in chosen], separators=(",", ":"))
    page.goto(f"{base}#/compare-runs?runs={urllib.parse.quote(ids)}"
              f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
    visible(page.get_by_role("heading", name=re.compile(rf"^Comparing {len(chosen)} Runs")), "the compare view")
    for r in chosen:
        visible(page.get_by_role("cell", name=r.info.run_name, exact=True), f"run {r.info.run_name} compared")
    # Parallel coordinates: add test/kmeans/auroc next to the val metric the UI picks.
    plot = page.get_by_role("tabpanel", name="Parallel Coordinates Plot")
    metrics = plot.get_by_role("combobox").nth(1)  # the Metrics selector (the first one is Parameters)
    metrics.click()
    page.keyboard.type(SHOW_METRICS[1])
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    metrics.blur()  # no focus ring in the screenshot
    visible(plot.locator("svg").get_by_text(SHOW_METRICS[1], exact=True),
            f"{SHOW_METRICS[1]} as an axis of the parallel coordinates plot")
    page.wait_for_timeout(1000)  # the plot's transition
    top = screenshot(page, out / "compare_runs.png")
    # The Parameters and Metrics tables; the metrics grid scrolled to the test/kmeans rows.
    page.get_by_role("button", name="Parameters", exact=True).evaluate("e => e.scrollIntoView({block: 'start'})")
    # The metrics table is two grids (names, values); scroll the values with the mouse wheel, as a user would:
    # the UI keeps the names column in step only for real scroll input. Stop when test/kmeans/auroc is the
    # top row, and check both columns agree.
    grids = page.get_by_role("grid", name="grid")
    names, values = grids.first, grids.last
    link = names.get_by_role("link", name=SHOW_METRICS[1], exact=True)
    box = values.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def state():
        row = link.evaluate("a => a.parentElement.offsetTop") if link.count() else None
        return names.evaluate("e => e.scrollTop"), values.evaluate("e => e.scrollTop"), row

    for _ in range(100):
        n_top, v_top, row = state()
        at_row = row is not None and abs(v_top - row) < 1
        if at_row and abs(n_top - v_top) < 1:
            break
        # The names column takes the values' scroll position one wheel event late (MLflow 3.17): at the row,
        # nudge sideways (and back) so that it catches up.
        for dx, dy in [(1, 0), (-1, 0)] if at_row else [(0, row - v_top if row is not None else 200)]:
            page.mouse.wheel(dx, dy)
            page.wait_for_timeout(300)
    else:
        raise RuntimeError(f"could not scroll the metrics table to {SHOW_METRICS[1]}: (names, values, row) {state()}")
    page.wait_for_timeout(500)
    return [top, screenshot(page, out / "compare_runs_metrics.png")]


def shoot_candidate_metrics(page, base: str, picked, client, out: Path) -> list[Path]:
    """The top generated model's Artifacts tab at protocol/metrics.json (every protocol metric; the run's MLflow
    metrics are the headline ones): its path, and a metric only the file holds shown with its value."""
    exp_id, _, _, chosen = picked
    run = chosen[0]
    name, art = run.info.run_name, "protocol/metrics.json"
    with tempfile.TemporaryDirectory() as tmp:
        every = json.loads(Path(client.download_artifacts(run.info.run_id, art, tmp)).read_text())
    only = sorted(k for k in every if k not in run.data.metrics)
    if not only:
        raise RuntimeError(f"{art} of {name} holds no metric beyond the run's own {len(run.data.metrics)}")
    page.goto(f"{base}#/experiments/{exp_id}/runs/{run.info.run_id}/artifacts/{art}")
    visible(page.get_by_role("tab", name="Artifacts", selected=True), f"the Artifacts tab of {name}")
    visible(page.get_by_text(re.compile(rf"^Path: .*{re.escape(art)}$")), f"the path of artifact {art}")
    visible(page.get_by_text(f'"{only[0]}"', exact=True), f"{only[0]} (not an MLflow metric of {name}) in {art}")
    return [screenshot(page, out / "candidate_metrics_json.png")]


def time_pages(page, base: str, client, target: float = 5.0) -> list[str]:
    """Seconds until the generated models' runs list (the latest `evaluate` run's children, sorted by a test metric)
    shows its top run, and until the compare view of its top 5 shows them all: what a user waits for, in the
    browser, on a store of the study's size (`bench mlflow --keep DIR`). Printed, not asserted."""
    exp_id = experiment_id(client, EXPERIMENT)
    parent = client.search_runs([exp_id], "attributes.run_name = 'evaluate'", order_by=["attributes.start_time DESC"],
                                max_results=1)
    if not parent:
        raise RuntimeError(f"no `evaluate` run in experiment {EXPERIMENT!r}")
    where = f"tags.mlflow.parentRunId = '{parent[0].info.run_id}'"
    metric = SHOW_METRICS[1]
    top = client.search_runs([exp_id], where, order_by=[f"metrics.`{metric}` DESC"], max_results=5)
    best = {r.info.run_name for r in top if r.data.metrics.get(metric) == top[0].data.metrics.get(metric)}
    page.goto(base + "#/experiments")  # the UI's code loaded once, as a user opens it first
    visible(page.get_by_role("link", name=EXPERIMENT, exact=True), f"experiment {EXPERIMENT} in the list")
    t0 = time.time()
    page.goto(runs_url(base, exp_id, where, f"metrics.`{metric}`"))
    until(lambda: top_run(page) in best, f"the runs list sorted by {metric} ({min(best)} first)")
    listed = time.time() - t0
    ids = json.dumps([r.info.run_id for r in top], separators=(",", ":"))
    t0 = time.time()
    page.goto(f"{base}#/compare-runs?runs={urllib.parse.quote(ids)}"
              f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
    visible(page.get_by_role("heading", name=re.compile(rf"^Comparing {len(top)} Runs")), "the compare view")
    for r in top:
        visible(page.get_by_role("cell", name=r.info.run_name, exact=True), f"run {r.info.run_name} compared")
    compared = time.time() - t0
    worst = max(listed, compared)
    return [f"browser_runs_list_seconds: {listed:.2f} (children of evaluate in {EXPERIMENT}, sorted by {metric}, "
            f"until the top run shows)",
            f"browser_compare_seconds: {compared:.2f} (compare view of the top {len(top)}, until every run shows)",
            f"browser_slowest_seconds: {worst:.2f} (target < {target:g}: {'pass' if worst < target else 'FAIL'})"]


def shoot_zoo_runs(page, base: str, picked, out: Path) -> list[Path]:
    exp_id, search, children = picked
    page.goto(runs_url(base, exp_id, search, f"metrics.`{ZOO_METRICS[-1]}`"))
    what = f"the {len(children)} zoo runs (trained CNNs)"
    wait_for_rows(page, children, what)
    toggle_columns(page, {"Attributes": UNINFORMATIVE, "Parameters": ["domain", "seed"], "Metrics": ZOO_METRICS})
    wait_for_first_row(page, children, ZOO_METRICS[-1], what)
    return [screenshot(page, out / "zoo_runs.png")]


def shoot_cyclegan(page, base: str, picked, out: Path) -> list[Path]:
    exp_id, run, grid = picked
    name = run.info.run_name
    url = f"{base}#/experiments/{exp_id}/runs/{run.info.run_id}"
    page.goto(url + "/model-metrics")
    visible(page.get_by_role("heading", name=name, exact=True), f"run {name}")
    search = visible(page.get_by_role("searchbox", name="Search metric charts"), "the chart search box")
    search.fill(LOSS_CHARTS)
    want = sorted(k for k in run.data.metrics if re.search(LOSS_CHARTS, k, re.IGNORECASE))
    titles = page.get_by_role("heading", level=4)  # one per chart
    until(lambda: sorted(titles.all_inner_texts()) == want, f"the charts {want} (only those) of {name}")
    # Each of LOSSES drawn as a curve. A chart is its card (test id) holding the title; the curve is Plotly's line.
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    for m in LOSSES:
        line = cards.filter(has=page.get_by_role("heading", name=m, exact=True)).locator("path.js-line")
        until(lambda ps=line: any(len(d or "") > 20 for d in ps.evaluate_all("ps => ps.map(p => p.getAttribute('d'))")),
              f"the curve of {m} in {name}")
    search.blur()
    page.wait_for_timeout(1000)
    charts = screenshot(page, out / "cyclegan_run.png")
    # The Artifacts tab with the kernel grid selected: its path, and the image loaded in the preview.
    page.goto(f"{url}/artifacts/{grid}")
    visible(page.get_by_role("tab", name="Artifacts", selected=True), f"the Artifacts tab of {name}")
    visible(page.get_by_text(re.compile(rf"^Path: .*{re.escape(grid)}$")), f"the path of artifact {grid}")
    image = visible(page.get_by_role("img", name=grid, exact=True), f"the image {grid}")
    until(lambda: image.evaluate("i => i.complete && i.naturalWidth > 100 && i.getBoundingClientRect().width > 100"),
          f"the image {grid} loaded")
    return [charts, screenshot(page, out / "cyclegan_artifacts.png")]


def shoot_tuning_runs(page, base: str, picked, out: Path) -> list[Path]:
    exp_id, search, parents = picked
    page.goto(runs_url(base, exp_id, search, "metrics.`best_value`"))
    what = f"the {len(parents)} study runs of experiment tuning"
    wait_for_rows(page, parents, what)
    toggle_columns(page, {"Attributes": UNINFORMATIVE, "Parameters": ["method", "candidate", "kind"],
                          "Metrics": ["best_value", "untuned_value"]})
    wait_for_first_row(page, parents, "best_value", what)
    return [screenshot(page, out / "tuning_runs.png")]


def shoot_registry(page, base: str, client, out: Path) -> list[Path]:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(REGISTERED_MODEL)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise Skip(f"no registered model {REGISTERED_MODEL!r} in the registry yet") from None
    version = model.aliases.get(ALIAS)
    if version is None:
        raise RuntimeError(f"registered model {REGISTERED_MODEL!r} has no alias {ALIAS!r} (aliases: {model.aliases})")
    page.goto(base + "#/models")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=REGISTERED_MODEL, exact=True))
    visible(row, f"registered model {REGISTERED_MODEL}")
    visible(row.get_by_role("link", name=re.compile(rf"{ALIAS}\s*: Version {version}$")),
            f"alias @{ALIAS} on version {version} of {REGISTERED_MODEL}")
    # The registry greets first visits with a dialog about its new UI: close it for the screenshot.
    promo = page.get_by_role("dialog").get_by_role("button", name="Close")
    with contextlib.suppress(Exception):
        promo.click(timeout=3000)
        promo.wait_for(state="hidden", timeout=5000)
    return [screenshot(page, out / "model_registry.png")]


# --- optuna-dashboard and the DVC plots page -----------------------------------------------------------------------

def shoot_dashboard(page, dash: str, picked, out: Path) -> list[Path]:
    ids, study, n_trials, best = picked
    page.goto(dash + "dashboard")
    studies = page.get_by_role("heading", level=5)  # one per study: "<id>. <name>"
    until(lambda: set(studies.all_inner_texts()) >= {f"{i}. {name}" for name, i in ids.items()},
          f"optuna-dashboard's list of the {len(ids)} studies")
    # Oldest study first: tune creates the studies of TUNE_METHOD first.
    page.get_by_role("combobox", name="Sort descending").click()
    page.get_by_role("option", name="Sort ascending").click()
    first = min(ids, key=ids.get)
    until(lambda: studies.first.inner_text() == f"{ids[first]}. {first}" and not page.get_by_role("listbox").count(),
          f"the study list oldest first ({first})")
    shots = [screenshot(page, out / "optuna_dashboard.png")]
    study_id = ids[study]
    page.goto(f"{dash}dashboard/studies/{study_id}")
    visible(page.get_by_text(f"{study} (id={study_id})", exact=True), f"optuna-dashboard's page of study {study}")
    visible(page.get_by_role("heading", name="History", exact=True), "the History chart")
    visible(page.get_by_text(f"Best Trial (number={best})"), f"best trial {best}")
    # The history plot (its element id is optuna-dashboard's): a marker per complete trial, and the best-value line.
    history = page.locator("#plot-history")
    until(lambda: history.locator(".scatterlayer .point").count() >= n_trials
          and history.locator(".scatterlayer path.js-line").count() > 0,
          f"the optimisation history of {study} ({n_trials} trials)")
    page.wait_for_timeout(1000)
    return shots + [screenshot(page, out / "optuna_study.png")]


def check_plots(context, html: Path, out: Path) -> Path:
    """Open a `dvc plots show` page as file:// with every other request blocked; it must draw a Vega chart and
    request nothing over the network. Returns plots.png."""
    if not html.is_file():
        raise RuntimeError(f"no plots page at {html}: run `dvc plots show` first")
    page, requested = context.new_page(), []

    def route(r):
        if urllib.parse.urlsplit(r.request.url).scheme in ("file", "data", "blob"):
            r.continue_()
        else:
            requested.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    errors = []  # a script error (e.g. vegaEmbed undefined, its library blocked) ends the wait early
    page.on("pageerror", lambda e: errors.append(str(e).splitlines()[0]))
    try:
        page.goto(html.resolve().as_uri())
        # vega-embed marks its element .vega-embed; Vega draws into an svg or canvas of class "marks" (the actions
        # menu's icon is an svg too, and is there without a chart).
        chart = page.locator(".vega-embed svg.marks, .vega-embed canvas.marks")
        with contextlib.suppress(RuntimeError):
            until(lambda: chart.first.is_visible() or errors, "a chart", 30)
        if not chart.first.is_visible():
            why = "".join(f"; {what} {', '.join(x[:3])}" for what, x in
                          [("it requested", requested), ("script errors:", errors)] if x)
            raise RuntimeError(f"{html} drew no Vega chart (an svg or canvas in .vega-embed){why}")
        page.wait_for_timeout(500)
        shot = screenshot(page, out / "plots.png")
    finally:
        page.close()
    if requested:
        raise RuntimeError(f"{html} made {len(requested)} network request(s), e.g. {requested[0]}: not offline")
    return shot


# --- main -----------------------------------------------------------------------------------------------------------

def failure(e: BaseException) -> str:
    """One line for an exception: its first line, plus what Playwright was waiting for, if it says."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__]
    waiting = next((x for x in lines[1:] if x.startswith("- waiting for")), None)
    return lines[0] + (f" ({waiting[2:]})" if waiting else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}",
                    help="MLflow backend store (default: MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "ui", help="folder for the PNGs")
    ap.add_argument("--port", type=int, default=0, help="port for mlflow ui on 127.0.0.1 (default: a free one)")
    ap.add_argument("--evaluate-run", help="the `evaluate` parent run to show (default: the latest finished)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                    or shutil.which("google-chrome"), help="Chromium binary (default: from PATH)")
    ap.add_argument("--size", default="1600x1000", help="PNG size in pixels, WIDTHxHEIGHT")
    ap.add_argument("--scale", type=float, default=0.8,
                    help="device scale factor: <1 fits more of the UI into the PNG (default 0.8)")
    ap.add_argument("--optuna-storage", default=f"sqlite:///{ROOT / 'optuna.db'}",
                    help="Optuna storage for optuna-dashboard (default: sqlite:///<repo>/optuna.db); the dashboard "
                         "shots are skipped if its sqlite file does not exist")
    ap.add_argument("--plots-html", type=Path, help="a `dvc plots show` HTML page to check offline (plots.png)")
    ap.add_argument("--timing", action="store_true", help="only time the generated models' runs list and compare "
                    "view in the browser (a store of the study's size: bench mlflow --keep DIR); no screenshots")
    args = ap.parse_args(argv)
    # The servers run in a temporary folder: make sqlite paths absolute (sqlite:///rel.db is relative to the cwd).
    (args.store, store), (args.optuna_storage, storage) = sqlite_file(args.store), sqlite_file(args.optuna_storage)
    if store and not store.is_file():
        print(f"no MLflow store at {args.store}: run the pipeline first (make run)", file=sys.stderr)
        return 2
    if not args.chromium:
        print("Chromium not found: apt-get install -y chromium, or pass --chromium PATH", file=sys.stderr)
        return 2
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("the playwright package is missing: pip install playwright", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.lower().split("x"))
    # A kill (CI timeout) must still run the `finally` blocks that stop the servers and Chromium.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per check, no progress bars
    from mlflow import MlflowClient

    client = MlflowClient(args.store, registry_uri=args.store)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("FAILED_*.png"):  # from an earlier run
        stale.unlink()
    paths, failed = [], []

    def check(name: str, shoot, *shoot_args, page=None) -> None:
        start = time.time()
        try:
            shots = shoot(*shoot_args)
            paths.extend(shots)
            print(f"ok {name} ({time.time() - start:.0f}s): {', '.join(p.name for p in shots)}", flush=True)
        except Skip as e:
            print(f"skipped {name}: {e}")
        except Exception as e:
            failed.append(name)
            print(f"FAILED {name}: {failure(e)}", flush=True)
            if page is not None:
                with contextlib.suppress(Exception):
                    page.screenshot(path=args.out / f"FAILED_{name}.png")

    evaluate: list = []

    def evaluate_runs():  # picked once for the runs table and the compare view
        if not evaluate:
            evaluate.append(pick_runs(client, args.evaluate_run))
        return evaluate[0]

    with browser(args.chromium, width, height, args.scale) as context, \
            tempfile.TemporaryDirectory(prefix="ui-screenshot-") as tmp:
        page = context.new_page()
        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}/"
        try:
            with mlflow_ui(args.store, port, Path(tmp)):
                if args.timing:
                    try:
                        print("\n".join(time_pages(page, base, client)), flush=True)
                        return 0
                    except Exception as e:
                        print(f"FAILED timing: {failure(e)}", flush=True)
                        return 1
                check("experiments", shoot_experiments, page, base, args.out, page=page)
                check("generated_models_runs", lambda: shoot_runs_table(page, base, evaluate_runs(), args.out),
                      page=page)
                check("compare_runs", lambda: shoot_compare(page, base, evaluate_runs(), args.out), page=page)
                check("candidate_metrics", lambda: shoot_candidate_metrics(page, base, evaluate_runs(), client, args.out),
                      page=page)
                check("zoo_runs", lambda: shoot_zoo_runs(page, base, pick_zoo(client), args.out), page=page)
                check("cyclegan", lambda: shoot_cyclegan(page, base, pick_cyclegan(client), args.out), page=page)
                check("tuning_runs", lambda: shoot_tuning_runs(page, base, pick_tuning(client), args.out), page=page)
                check("model_registry", shoot_registry, page, base, client, args.out, page=page)
        except Exception as e:  # the server did not start
            failed.append("mlflow-ui")
            print(f"FAILED mlflow-ui: {failure(e)}", flush=True)
        if storage and not storage.is_file():
            print(f"skipped optuna-dashboard: no Optuna storage at {args.optuna_storage}")
        else:
            def dashboard():
                study = pick_study(args.optuna_storage)
                dash_port = free_port()
                with optuna_dashboard(args.optuna_storage, dash_port, Path(tmp)):
                    return shoot_dashboard(page, f"http://127.0.0.1:{dash_port}/", study, args.out)

            check("optuna-dashboard", dashboard, page=page)
        if args.plots_html is None:
            print("skipped plots: no --plots-html page given")
        else:
            check("plots", lambda: [check_plots(context, args.plots_html, args.out)])
    for p in paths:
        print(p)
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
