"""Ray beyond one machine: a cluster of two nodes (one CPU each, ray.cluster_utils.Cluster), the tiny pipeline run
against it through `dvc repro`, and the stages whose work is spread by Ray (zoo shards, CycleGAN units, evaluate's candidates) each report work
on both nodes.

A tier of its own (`make test-ray`, run by CI after `make test`): starting a cluster and running the pipeline on
it takes minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TARBALL, TINY, copy_project, deep_merge, sh

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.ray, pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data beside the repo")]


def nodes_per_stage(out: str) -> dict[str, set[str]]:
    """Stage name -> Ray node ids its log names (`ray: node <id> took part ...`), from `dvc repro`'s output."""
    seen: dict[str, set[str]] = {}
    stage = None
    for line in out.splitlines():
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            stage = m.group(1)
        m = re.search(r"ray: node (\w+) took part", line)
        if m and stage:
            seen.setdefault(stage, set()).add(m.group(1))
    return seen


def test_nodes_per_stage_reads_the_log():
    out = ("Running stage 'zoo@black':\nx ray: node aa took part in this stage's work (task 1 of 2)\n"
           "x ray: node bb took part in this stage's work (task 2 of 2)\nRunning stage 'kernels':\n")
    assert nodes_per_stage(out) == {"zoo@black": {"aa", "bb"}}


def test_tiny_pipeline_spreads_its_work_over_two_nodes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    work = tmp_path / "project"
    work.mkdir()
    copy_project(work)
    # the nodes' workers import the scratch copy's code, as the stages do
    monkeypatch.setenv("PYTHONPATH", str(work / "src"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        over = deep_merge(dict(TINY), {"executor": {"backend": "ray", "address": cluster.address}})
        params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), over)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
               "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_RUN_ID", None)
        env.pop("RAY_ADDRESS", None)
        sh(["dvc", "init", "--no-scm", "-q"], work, env)
        # one stream, so each stage's log lines follow its "Running stage" line
        p = subprocess.run(["dvc", "repro"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        out = p.stdout
        assert p.returncode == 0, out[-4000:]
        ray.init(address=cluster.address)
        try:
            alive = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
    assert len(alive) == 2
    seen = nodes_per_stage(out)
    spread = [s for s in seen if s.startswith(("zoo@", "evaluate", "cyclegan"))]
    assert {"zoo@black", "zoo@cat", "cyclegan", "evaluate"} <= set(spread), seen
    for stage in spread:
        assert seen[stage] == alive, f"{stage}: work on {sorted(seen[stage])}, cluster {sorted(alive)}"
    assert (work / "reports/report.md").is_file()
