"""Screenshots of the MLflow UI (and the Optuna dashboard) on this project's runs, taken with headless Chromium.

    python scripts/ui_screenshot.py [--store sqlite:///<repo>/mlflow.db] [--out reports/ui] [--evaluate-run ID]
                                    [--optuna-storage sqlite:///<repo>/optuna.db]

Starts `mlflow ui` on 127.0.0.1 and a free port, drives headless Chromium over the DevTools protocol (a pipe:
--remote-debugging-pipe, so nothing but the UI listens on a port and no Python package beyond this venv is
needed), saves PNGs, checks that each page shows the runs and metrics it should, and stops the server:

- experiments.png             the experiment list
- generated_models_runs.png   `generated-models`: the child runs of one `evaluate` run (generated models and
                              baselines), with columns kind, selected_on_val, val/kmeans/accuracy and
                              test/kmeans/{accuracy,precision,recall}, sorted by val/kmeans/accuracy
- compare_runs.png            the compare view of the generated models selected on val and the best baseline of
                              each kind: parallel coordinates of kind and model_id against val and test accuracy
- compare_runs_metrics.png    the same compare view scrolled to its Parameters and Metrics tables (test/kmeans)
- zoo_runs.png                `zoo`: the trained CNNs, i.e. the child runs of the latest finished `zoo-<domain>`
                              run of each domain (of one domain where no filter selects exactly all of them), with
                              columns domain, seed and final_{train,val}_acc, sorted by final_val_acc
- cyclegan_run.png            `cyclegan`: the latest finished `cyclegan-study-conv1` run, its Model metrics tab filtered
                              to the per-epoch loss curves (loss_G, loss_D_A, loss_D_B, loss_adv, loss_cycle, ...)
- cyclegan_artifacts.png      the same run's Artifacts tab showing its kernel grid of the last epoch
                              (grids/epoch_NNNN.png, NNNN = the run's `epochs`; else the last grid)
- tuning_runs.png             `tuning`: the parent run of each Optuna study of the latest tune (`zoofusion/<method>/
                              <candidate>`), with columns method, candidate, kind, best_value and untuned_value
- optuna_dashboard.png        optuna-dashboard (also on 127.0.0.1, started and stopped here) on --optuna-storage:
                              the study list
- optuna_study.png            the study of the first generated model tuned for kmeans: its optimisation history

The two optuna_* shots are skipped, with a note, when the --optuna-storage sqlite file does not exist.

Needs Chromium: `apt-get install -y chromium` (Debian) or --chromium PATH.
"""

from __future__ import annotations

import argparse
import base64
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
SELECT = "val/kmeans/accuracy"
SHOW_METRICS = ["val/kmeans/accuracy", "test/kmeans/accuracy", "test/kmeans/precision", "test/kmeans/recall"]
ZOO_METRICS = ["final_train_acc", "final_val_acc"]  # logged on every zoo child run (one trained CNN each)
CYCLEGAN_RUN = "cyclegan-study-conv1"
LOSS_CHARTS = "^loss_"  # the Model metrics tab's chart search takes a regular expression: the per-epoch losses
LOSSES = ["loss_G", "loss_D_A", "loss_D_B", "loss_cycle"]  # charts that must show a curve
TUNE_METHOD = "kmeans"  # optuna_study.png: the study of the first generated model tuned for this method
# The MLflow 3 UI opens its assistant panel on first load; mark it as already opened and closed.
NO_ASSISTANT = ('localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");'
                'localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");')
# ...and show the "Model training" side of the UI (runs, models), not the GenAI one (traces, evaluations).
MODEL_TRAINING = 'localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("machine_learning"));'


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, chromium: str, width: int, height: int, scale: float):
        self.profile = tempfile.mkdtemp(prefix="ui-screenshot-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            import fcntl

            r, w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}",
                f"--window-size={round(width / scale)},{round(height / scale)}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=wire_fds, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        # A viewport of width/scale x height/scale CSS pixels, rendered into a width x height PNG.
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=round(width / scale),
                  height=round(height / scale), deviceScaleFactor=scale, mobile=False)
        self.call("Page.addScriptToEvaluateOnNewDocument", session=True, source=NO_ASSISTANT + MODEL_TRAINING)

    def _message(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it start? try running it by hand)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails'].get('text')} in {expression[:200]}")
        return r.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            try:
                if self.js(expression):
                    return
            except RuntimeError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the UI did not show {what} within {timeout:.0f}s")

    def wait_for_text(self, texts: list[str], what: str, timeout: float = 60.0) -> None:
        self.wait_for(f"{json.dumps(texts)}.every(t => document.body.innerText.includes(t))", what, timeout)

    def click_text(self, text: str, selector: str = "button") -> None:
        found = self.js(f"""(() => {{ const e = Array.from(document.querySelectorAll({json.dumps(selector)}))
            .find(x => x.innerText.trim() === {json.dumps(text)}); if (e) e.click(); return !!e; }})()""")
        if not found:
            raise RuntimeError(f"no {selector} with text {text!r} on the page")

    def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=key,
                      windowsVirtualKeyCode=code)

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        # The pointer off the page's content, so that no row or chart shows a hover state.
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=0, y=0)
        time.sleep(0.3)
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


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


def serve(name: str, cmd: list[str], probe: str, workdir: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a web server in its own process group (so stopping it stops its workers too); wait until `probe`
    answers 200. Its output goes to workdir/<name>.log."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    end = time.time() + 90
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(probe, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_ui(proc)
    raise TimeoutError(f"{name} did not answer on {probe} within 90s")


def start_ui(store: str, port: int, workdir: Path) -> subprocess.Popen:
    """`mlflow ui` on 127.0.0.1:port, in its own process group (so stopping it stops its workers too)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    return serve("mlflow-ui", cmd, f"http://127.0.0.1:{port}/health", workdir, env)


def start_dashboard(storage: str, port: int, workdir: Path) -> subprocess.Popen:
    """`optuna-dashboard` (installed next to this Python) on 127.0.0.1:port, in its own process group."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    if not exe.exists():
        exe = shutil.which("optuna-dashboard")
        if not exe:
            raise SystemExit("optuna-dashboard not found next to this Python nor on PATH: pip install optuna-dashboard")
    cmd = [str(exe), storage, "--host", "127.0.0.1", "--port", str(port)]
    return serve("optuna-dashboard", cmd, f"http://127.0.0.1:{port}/api/meta", workdir)


def stop_ui(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pick_runs(store: str, evaluate_run: str | None):
    """The experiment id, the `evaluate` parent run, its child runs, and the few to compare."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        raise SystemExit(f"no experiment {EXPERIMENT!r} in {store}: run the pipeline first (make run)")
    if evaluate_run:
        parent = client.get_run(evaluate_run)
    else:
        parents = client.search_runs([exp.experiment_id], "attributes.run_name = 'evaluate' and "
                                     "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                     max_results=1)
        if not parents:
            raise SystemExit(f"no finished `evaluate` run in experiment {EXPERIMENT!r}")
        parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=1000)
    if not children:
        raise SystemExit(f"evaluate run {parent.info.run_id} has no child runs")
    ranked = sorted(children, key=lambda r: -r.data.metrics.get(SELECT, float("-inf")))
    chosen = [r for r in ranked if r.data.params.get("kind", "").startswith("generated")
              and r.data.tags.get("selected_on_val") == "true"]
    seen = set()
    for r in ranked:  # the best baseline of each kind, by the same val metric
        kind = r.data.params.get("kind")
        if not kind.startswith("generated") and kind not in seen:
            seen.add(kind)
            chosen.append(r)
    return exp.experiment_id, parent, children, chosen


def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise SystemExit(f"no experiment {name!r} in the MLflow store: run the pipeline first (make run)")
    return exp.experiment_id


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
        raise SystemExit("no finished `zoo-<domain>` run in experiment 'zoo'")
    by_parent = {p.info.run_id: client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{p.info.run_id}'",
                                                   max_results=50000) for p in parents.values()}
    children = [c for cs in by_parent.values() for c in cs]
    if not children:
        raise SystemExit(f"the zoo parent runs {sorted(parents)} have no child runs")
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
        raise SystemExit(f"no finished {CYCLEGAN_RUN!r} run in experiment 'cyclegan'")
    run = runs[CYCLEGAN_RUN]
    grids = sorted(a.path for a in client.list_artifacts(run.info.run_id, "grids") if a.path.endswith(".png"))
    if not grids:
        raise SystemExit(f"run {run.info.run_id} ({CYCLEGAN_RUN}) has no grids/*.png artifact")
    missing = [m for m in LOSSES if m not in run.data.metrics]
    if missing:
        raise SystemExit(f"run {run.info.run_id} ({CYCLEGAN_RUN}) has no metrics {missing}")
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
        raise SystemExit("no finished study run (`zoofusion/<method>/<candidate>`) in experiment 'tuning'")
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
        raise SystemExit(f"no Optuna study in {storage_url}: run the tune stage first")
    ids = {s.study_name: storage.get_study_id_from_name(s.study_name) for s in studies}
    mine = [s for s in studies if s.user_attrs.get("method") == TUNE_METHOD and str(s.user_attrs.get("kind", "")).startswith("generated")]
    mine = mine or [s for s in studies if s.study_name.startswith(f"zoofusion/{TUNE_METHOD}/")]
    if not mine:
        raise SystemExit(f"no Optuna study for method {TUNE_METHOD!r} in {storage_url}")
    study = min(mine, key=lambda s: ids[s.study_name])
    trials = storage.get_all_trials(ids[study.study_name], deepcopy=False,
                                    states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise SystemExit(f"Optuna study {study.study_name!r} has no complete trial")
    best = storage.get_best_trial(ids[study.study_name]).number
    return ids, study.study_name, len(trials), best


def shoot_experiments(b: Browser, base: str, out: Path) -> Path:
    b.goto(base + "#/experiments")
    b.wait_for_text([EXPERIMENT, "zoo", "cyclegan"], "the experiment list")
    time.sleep(1)
    path = out / "experiments.png"
    b.screenshot(path)
    return path


def toggle_columns(b: Browser, toggle: dict[str, list[str]], check: str) -> None:
    """Toggle the named columns ({section: [title]}) in the runs table's column picker; wait for column `check`."""
    b.click_text("Columns")
    b.wait_for("document.querySelectorAll('.du-bois-light-tree-treenode').length > 10", "the column picker")
    done = b.js(f"""(() => {{ const want = {json.dumps(toggle)}; let section = null; const done = [];
        for (const n of document.querySelectorAll(".du-bois-light-tree-treenode")) {{
          const t = n.querySelector(".du-bois-light-tree-title"); if (!t) continue;
          const title = t.innerText.trim();
          if (!n.querySelector(".du-bois-light-tree-switcher-noop")) {{ section = title.split(" (")[0]; continue; }}
          if ((want[section] || []).includes(title)) {{
            n.querySelector(".du-bois-light-tree-checkbox").click(); done.push(section + ":" + title); }}
        }} return done; }})()""")
    missing = sum(len(v) for v in toggle.values()) - len(done)
    if missing:
        raise RuntimeError(f"column picker: toggled only {done} of {toggle}")
    b.key("Escape", 27)
    b.js("document.activeElement && document.activeElement.blur()")  # no focus ring on the Columns button
    b.wait_for("Array.from(document.querySelectorAll('[role=columnheader]')).some(h => "
               f"h.innerText.includes({json.dumps(check)}))", f"the column {check}")


def runs_url(base: str, exp_id: str, search: str, order_by: str) -> str:
    query = urllib.parse.urlencode({"searchFilter": search, "orderByKey": order_by, "orderByAsc": "false"},
                                   quote_via=urllib.parse.quote)
    return f"{base}#/experiments/{exp_id}/runs?{query}"


def wait_for_rows(b: Browser, runs, what: str, timeout: float = 90.0) -> None:
    """Wait until the runs table counts exactly len(runs) matching runs, pressing "Load more" while it shows
    full pages (it loads 100 runs at a time; the button, below the last row, exists only when scrolled to)."""
    count = ("(() => { const m = document.body && document.body.innerText.match(/(\\d+) matching runs?/); "
             "return m ? +m[1] : -1; })()")
    scroll = "document.querySelectorAll('.ag-body-viewport').forEach(v => v.scrollTop = {})"
    n, shown, end = len(runs), -1, time.time() + timeout
    while time.time() < end:
        now = b.js(count)
        if now > n:
            raise RuntimeError(f"the runs table counts {now} matching runs, more than the {n} {what}")
        if now == n:
            if n > 100:
                b.js(scroll.format("0"))
                time.sleep(1)
            return
        if now != shown:  # progress: the next page gets the full timeout
            shown, end = now, time.time() + timeout
        if now > 0 and now % 100 == 0:
            b.js(scroll.format("v.scrollHeight"))
            if b.js("Array.from(document.querySelectorAll('button')).some(x => x.innerText.trim() === 'Load more')"):
                b.click_text("Load more")
        time.sleep(0.5)
    raise TimeoutError(f"the runs table counted {shown} matching runs, not the {n} {what}, after {timeout:.0f}s")


def wait_for_first_row(b: Browser, runs, metric: str, what: str) -> None:
    """Wait until the table's first row is a run with the highest `metric` (any of them, if tied)."""
    best = max(r.data.metrics.get(metric, float("-inf")) for r in runs)
    top = [r.info.run_name for r in runs if r.data.metrics.get(metric, float("-inf")) == best]
    b.wait_for(f"""(() => {{ const t = Array.from(document.querySelectorAll('.ag-row[row-index="0"]'))
        .map(r => r.innerText).join('\\n').split('\\n').map(x => x.trim());
        return {json.dumps(top)}.some(n => t.includes(n)); }})()""", f"{what} sorted by {metric} ({top[0]} first)")


def shoot_runs_table(b: Browser, base: str, exp_id: str, parent, children, out: Path) -> Path:
    query = urllib.parse.urlencode({"searchFilter": f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                    "orderByKey": f"metrics.`{SELECT}`", "orderByAsc": "false"},
                                   quote_via=urllib.parse.quote)
    b.goto(f"{base}#/experiments/{exp_id}/runs?{query}")
    wait_for_rows(b, children, "child runs of evaluate")
    wait_for_first_row(b, children, SELECT, "the child runs of evaluate")
    # Toggle columns: off the uninformative attributes, on the comparison columns.
    toggle_columns(b, {"Attributes": ["Dataset", "Source", "Models"], "Parameters": ["kind"],
                       "Metrics": SHOW_METRICS, "Tags": ["selected_on_val"]}, SHOW_METRICS[1])
    time.sleep(1)
    path = out / "generated_models_runs.png"
    b.screenshot(path)
    return path


def shoot_compare(b: Browser, base: str, exp_id: str, chosen, out: Path) -> tuple[Path, Path]:
    ids = json.dumps([r.info.run_id for r in chosen], separators=(",", ":"))
    b.goto(f"{base}#/compare-runs?runs={urllib.parse.quote(ids)}"
           f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
    b.wait_for_text([f"Comparing {len(chosen)} Runs", "Parallel Coordinates Plot"] + [r.info.run_name for r in chosen],
                    "the compare view")
    # Parallel coordinates: add test/kmeans/accuracy next to the val metric the UI picks.
    box = b.js("""(() => { const i = document.querySelectorAll("input")[1];
        const r = i.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()""")
    b.click_at(*box)
    time.sleep(0.5)
    b.call("Input.insertText", session=True, text=SHOW_METRICS[1])
    time.sleep(0.8)
    b.key("Enter", 13)
    b.key("Escape", 27)
    b.wait_for(f"Array.from(document.querySelectorAll('svg text')).some(t => t.textContent === "
               f"{json.dumps(SHOW_METRICS[1])})", "test accuracy in the parallel coordinates plot")
    time.sleep(1.5)
    top = out / "compare_runs.png"
    b.screenshot(top)
    # The Parameters and Metrics tables; the metrics grid scrolled to the test/kmeans rows.
    b.js("""Array.from(document.querySelectorAll('.du-bois-light-collapse-header'))
        .find(h => h.innerText.trim().startsWith('Parameters')).scrollIntoView({block: 'start'})""")
    # Scroll the metrics grid with the mouse wheel, as a user would: the UI keeps the names column in step
    # only for real scroll input. Stop when test/kmeans/accuracy is the top row, and check both columns agree.
    target = json.dumps(SHOW_METRICS[1])
    locate = f"""(() => {{ const g = document.querySelectorAll('.ReactVirtualized__Grid');
        const names = g[0], values = g[g.length - 1], box = values.getBoundingClientRect();
        const a = Array.from(names.querySelectorAll('a')).find(x => x.innerText.trim() === {target});
        return {{x: box.x + box.width / 2, y: box.y + box.height / 2, names: names.scrollTop,
                 values: values.scrollTop, row: a ? parseFloat(a.parentElement.style.top) : null,
                 height: values.scrollHeight}}; }})()"""
    state = b.js(locate)
    for _ in range(100):
        at_row = state["row"] is not None and abs(state["values"] - state["row"]) < 1
        if at_row and abs(state["names"] - state["values"]) < 1:
            break
        # The names column takes the values' scroll position one wheel event late (MLflow 3.17): at the row,
        # nudge sideways (and back) so that it catches up.
        steps = [(1, 0), (-1, 0)] if at_row else [(0, (state["row"] - state["values"]) if state["row"] is not None
                                                   else 200)]
        for dx, dy in steps:
            b.call("Input.dispatchMouseEvent", session=True, type="mouseWheel", x=state["x"], y=state["y"],
                   deltaX=dx, deltaY=dy)
            time.sleep(0.3)
        state = b.js(locate)
    if state["row"] is None or abs(state["names"] - state["values"]) > 1 or abs(state["values"] - state["row"]) > 1:
        raise RuntimeError(f"could not scroll the metrics table to {SHOW_METRICS[1]}: {state}")
    time.sleep(1)
    tables = out / "compare_runs_metrics.png"
    b.screenshot(tables)
    return top, tables


def shoot_zoo_runs(b: Browser, base: str, exp_id: str, search: str, children, out: Path) -> Path:
    b.goto(runs_url(base, exp_id, search, f"metrics.`{ZOO_METRICS[-1]}`"))
    what = f"the {len(children)} zoo runs (trained CNNs)"
    wait_for_rows(b, children, what)
    toggle_columns(b, {"Attributes": ["Dataset", "Source", "Models"], "Parameters": ["domain", "seed"],
                       "Metrics": ZOO_METRICS}, ZOO_METRICS[-1])
    wait_for_first_row(b, children, ZOO_METRICS[-1], what)
    time.sleep(1)
    path = out / "zoo_runs.png"
    b.screenshot(path)
    return path


def shoot_cyclegan(b: Browser, base: str, exp_id: str, run, grid: str, out: Path) -> tuple[Path, Path]:
    page = f"{base}#/experiments/{exp_id}/runs/{run.info.run_id}"
    b.goto(page + "/model-metrics")
    b.wait_for_text([run.info.run_name, "Model metrics"] + LOSSES, f"the Model metrics tab of {run.info.run_name}", 90)
    b.wait_for("!!document.querySelector('input[role=searchbox]')", "the chart search box")
    box = b.js("""(() => { const r = document.querySelector('input[role=searchbox]').getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2]; })()""")
    b.click_at(*box)
    b.call("Input.insertText", session=True, text=LOSS_CHARTS)
    want = sorted(k for k in run.data.metrics if re.search(LOSS_CHARTS, k, re.IGNORECASE))
    # Every loss chart, and only those, with LOSSES drawn as curves (the UI draws charts as they scroll into view).
    b.wait_for(f"""(() => {{ const cards = Array.from(document.querySelectorAll(
            '[data-testid=experiment-view-compare-runs-card]'));
        const titles = cards.map(c => c.innerText.split('\\n')[0].trim()).sort();
        const drawn = cards.filter(c => Array.from(c.querySelectorAll('.scatterlayer path.js-line'))
            .some(p => (p.getAttribute('d') || '').length > 20)).map(c => c.innerText.split('\\n')[0].trim());
        return JSON.stringify(titles) === {json.dumps(json.dumps(want, separators=(",", ":")))}
            && {json.dumps(LOSSES)}.every(m => drawn.includes(m)); }})()""",
               f"the loss curves {want} of {run.info.run_name}", 90)
    b.js("document.activeElement.blur()")
    time.sleep(1.5)
    charts = out / "cyclegan_run.png"
    b.screenshot(charts)
    # The Artifacts tab with the kernel grid selected: its path, and the image loaded in the preview.
    b.goto(f"{page}/artifacts/{grid}")
    b.wait_for_text([grid, "Path:", Path(grid).name], f"artifact {grid} of {run.info.run_name}", 90)
    b.wait_for("Array.from(document.querySelectorAll('img')).some(i => i.complete && i.naturalWidth > 100 "
               "&& i.getBoundingClientRect().width > 100)", f"the image {grid}", 90)
    time.sleep(1)
    artifacts = out / "cyclegan_artifacts.png"
    b.screenshot(artifacts)
    return charts, artifacts


def shoot_tuning_runs(b: Browser, base: str, exp_id: str, search: str, parents, out: Path) -> Path:
    b.goto(runs_url(base, exp_id, search, "metrics.`best_value`"))
    what = f"the {len(parents)} study runs of experiment tuning"
    wait_for_rows(b, parents, what)
    toggle_columns(b, {"Attributes": ["Dataset", "Source", "Models"], "Parameters": ["method", "candidate", "kind"],
                       "Metrics": ["best_value", "untuned_value"]}, "untuned_value")
    wait_for_first_row(b, parents, "best_value", what)
    time.sleep(1)
    path = out / "tuning_runs.png"
    b.screenshot(path)
    return path


def shoot_dashboard(b: Browser, dash: str, ids: dict[str, int], study: str, n_trials: int, best: int,
                    out: Path) -> tuple[Path, Path]:
    b.goto(dash + "dashboard")
    b.wait_for_text([f"{i}. {name}" for name, i in ids.items()], f"optuna-dashboard's list of the {len(ids)} studies",
                    90)
    # Oldest study first: tune creates the studies of TUNE_METHOD first.
    box = b.js("""(() => { const e = Array.from(document.querySelectorAll('[role=combobox], [role=button]'))
        .find(x => x.innerText.trim() === 'Sort descending'); if (!e) return null;
        const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()""")
    if box is None:
        raise RuntimeError("optuna-dashboard: no 'Sort descending' selector on the study list")
    b.click_at(*box)
    b.wait_for("document.querySelectorAll('[role=option]').length > 0", "the sort options of the study list")
    b.click_text("Sort ascending", "[role=option]")
    first = min(ids, key=ids.get)
    b.wait_for(f"""(document.body.innerText.match(/^\\d+\\. .*$/m) || [''])[0].trim()
        === {json.dumps(f"{ids[first]}. {first}")} && document.querySelectorAll('[role=option]').length === 0""",
               f"the study list oldest first ({first})")
    time.sleep(1)
    studies = out / "optuna_dashboard.png"
    b.screenshot(studies)
    study_id = ids[study]
    b.goto(f"{dash}dashboard/studies/{study_id}")
    b.wait_for_text([f"{study} (id={study_id})", "History", f"Best Trial (number={best})"],
                    f"optuna-dashboard's page of study {study}", 90)
    # The history plot: a marker per complete trial, and the best-value line.
    b.wait_for(f"""(() => {{ const p = document.getElementById('plot-history');
        return !!p && p.querySelectorAll('.scatterlayer .point').length >= {n_trials}
            && !!p.querySelector('.scatterlayer path.js-line'); }})()""",
               f"the optimisation history of {study} ({n_trials} trials)", 90)
    time.sleep(1.5)
    page = out / "optuna_study.png"
    b.screenshot(page)
    return studies, page


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
    args = ap.parse_args(argv)
    if not args.chromium:
        raise SystemExit("Chromium not found: apt-get install -y chromium, or pass --chromium PATH")
    width, height = (int(v) for v in args.size.lower().split("x"))
    # The servers run in a temporary folder: make sqlite paths absolute (sqlite:///rel.db is relative to the cwd).
    (args.store, store), (args.optuna_storage, storage) = sqlite_file(args.store), sqlite_file(args.optuna_storage)
    if store and not store.is_file():
        raise SystemExit(f"no MLflow store at {args.store}: run the pipeline first (make run)")
    study = None
    if storage and not storage.is_file():
        print(f"no Optuna storage at {args.optuna_storage}: skipping optuna_dashboard.png and optuna_study.png")
    else:
        study = pick_study(args.optuna_storage)

    exp_id, parent, children, chosen = pick_runs(args.store, args.evaluate_run)
    from mlflow import MlflowClient

    client = MlflowClient(args.store)
    zoo, cyclegan, tuning = pick_zoo(client), pick_cyclegan(client), pick_tuning(client)
    args.out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="ui-screenshot-") as tmp:
        server = start_ui(args.store, port, Path(tmp))
        base = f"http://127.0.0.1:{port}/"
        try:
            browser = Browser(args.chromium, width, height, args.scale)
            try:
                paths = [shoot_experiments(browser, base, args.out),
                         shoot_runs_table(browser, base, exp_id, parent, children, args.out),
                         *shoot_compare(browser, base, exp_id, chosen, args.out),
                         shoot_zoo_runs(browser, base, *zoo, args.out),
                         *shoot_cyclegan(browser, base, *cyclegan, args.out),
                         shoot_tuning_runs(browser, base, *tuning, args.out)]
                if study:
                    stop_ui(server)  # one server at a time
                    dash_port = free_port()
                    server = start_dashboard(args.optuna_storage, dash_port, Path(tmp))
                    paths += shoot_dashboard(browser, f"http://127.0.0.1:{dash_port}/", *study, args.out)
            finally:
                browser.close()
        finally:
            stop_ui(server)
    print(f"evaluate run {parent.info.run_id}: {len(children)} child runs; compared "
          + ", ".join(f"{r.info.run_name} ({r.data.params.get('kind')})" for r in chosen))
    print(f"zoo: {len(zoo[2])} child runs ({zoo[1]}); {CYCLEGAN_RUN}: run {cyclegan[1].info.run_id}, {cyclegan[2]}; "
          f"tuning: {len(tuning[2])} study runs" + (f"; optuna-dashboard: study {study[1]}" if study else ""))
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
