"""Screenshots of the MLflow UI on this project's runs, taken with headless Chromium.

    python scripts/ui_screenshot.py [--store sqlite:///<repo>/mlflow.db] [--out reports/ui] [--evaluate-run ID]

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

Needs Chromium: `apt-get install -y chromium` (Debian) or --chromium PATH.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
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
# The MLflow 3 UI opens its assistant panel on first load; mark it as already opened and closed.
NO_ASSISTANT = ('localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");'
                'localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");')


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
        self.call("Page.addScriptToEvaluateOnNewDocument", session=True, source=NO_ASSISTANT)

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
        raise TimeoutError(f"the MLflow UI did not show {what} within {timeout:.0f}s")

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(store: str, port: int, workdir: Path) -> subprocess.Popen:
    """`mlflow ui` on 127.0.0.1:port, in its own process group (so stopping it stops its workers too)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    log = open(workdir / "mlflow-ui.log", "w")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    end = time.time() + 90
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}:\n{(workdir / 'mlflow-ui.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_ui(proc)
    raise TimeoutError(f"mlflow ui did not answer on {url} within 90s")


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
    chosen = [r for r in ranked if r.data.params.get("kind") == "generated"
              and r.data.tags.get("selected_on_val") == "true"]
    seen = set()
    for r in ranked:  # the best baseline of each kind, by the same val metric
        kind = r.data.params.get("kind")
        if kind != "generated" and kind not in seen:
            seen.add(kind)
            chosen.append(r)
    return exp.experiment_id, parent, children, chosen


def shoot_experiments(b: Browser, base: str, out: Path) -> Path:
    b.goto(base + "#/experiments")
    b.wait_for_text([EXPERIMENT, "zoo", "cyclegan"], "the experiment list")
    time.sleep(1)
    path = out / "experiments.png"
    b.screenshot(path)
    return path


def shoot_runs_table(b: Browser, base: str, exp_id: str, parent, children, out: Path) -> Path:
    query = urllib.parse.urlencode({"searchFilter": f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                    "orderByKey": f"metrics.`{SELECT}`", "orderByAsc": "false"},
                                   quote_via=urllib.parse.quote)
    b.goto(f"{base}#/experiments/{exp_id}/runs?{query}")
    top = max(children, key=lambda r: r.data.metrics.get(SELECT, float("-inf"))).info.run_name
    b.wait_for_text([top, f"{len(children)} matching runs"], f"the {len(children)} child runs of evaluate")
    b.click_text("Columns")
    b.wait_for("document.querySelectorAll('.du-bois-light-tree-treenode').length > 10", "the column picker")
    # Toggle columns in the picker's tree: off the uninformative attributes, on the comparison columns.
    toggle = {"Attributes": ["Dataset", "Source", "Models"], "Parameters": ["kind"], "Metrics": SHOW_METRICS,
              "Tags": ["selected_on_val"]}
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
        raise RuntimeError(f"column picker: toggled only {done}")
    b.key("Escape", 27)
    b.wait_for("Array.from(document.querySelectorAll('[role=columnheader]')).some(h => "
               f"h.innerText.includes({json.dumps(SHOW_METRICS[1])}))", "the metric columns")
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
        if state["row"] is not None and abs(state["values"] - state["row"]) < 1:
            break
        step = (state["row"] - state["values"]) if state["row"] is not None else 200
        b.call("Input.dispatchMouseEvent", session=True, type="mouseWheel", x=state["x"], y=state["y"],
               deltaX=0, deltaY=step)
        time.sleep(0.3)
        state = b.js(locate)
    if state["row"] is None or abs(state["names"] - state["values"]) > 1 or abs(state["values"] - state["row"]) > 1:
        raise RuntimeError(f"could not scroll the metrics table to {SHOW_METRICS[1]}: {state}")
    time.sleep(1)
    tables = out / "compare_runs_metrics.png"
    b.screenshot(tables)
    return top, tables


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
    args = ap.parse_args(argv)
    if not args.chromium:
        raise SystemExit("Chromium not found: apt-get install -y chromium, or pass --chromium PATH")
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.store.startswith("sqlite:///") and not Path(args.store[len("sqlite:///"):]).is_file():
        raise SystemExit(f"no MLflow store at {args.store}: run the pipeline first (make run)")

    exp_id, parent, children, chosen = pick_runs(args.store, args.evaluate_run)
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
                         *shoot_compare(browser, base, exp_id, chosen, args.out)]
            finally:
                browser.close()
        finally:
            stop_ui(server)
    print(f"evaluate run {parent.info.run_id}: {len(children)} child runs; compared "
          + ", ".join(f"{r.info.run_name} ({r.data.params.get('kind')})" for r in chosen))
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
