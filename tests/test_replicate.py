"""Replication across pipeline seeds: the aggregate of `dvc exp show --json` output, pinned on synthetic experiments
(unit tier), and one tiny queued experiment for real (`-m replicate`, `make test-replicate`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import LABELS, ROOT, TARBALL, params_dict, copy_project
from zoofusion import replicate as rep
from zoofusion.config import apply_overrides

BIN = Path(sys.executable).parent
PROFILE = {"zoo.epochs": 3, "evaluate.budget": 4}
SEEDS = [42, 7, 123, 2024, 31337]
PRIMARY = [-0.02, -0.03, 0.01, -0.01, 0.00]  # mean -0.01, sd sqrt(0.001 / 4)


def raw_params(**over) -> dict:
    raw = params_dict()
    raw["replicate"] = {"seeds": SEEDS, "profile": PROFILE, **over}
    return raw


def comparison(kind: str, diff: float, adjusted: str, method: str = "kmeans") -> dict:
    return {"method": method, "metric": "auroc" if method != "dbscan" else "ari", "kind": kind,
            "generated_kind": "generated-aligned", "best_diff": diff, "best_low": diff - 0.03,
            "best_high": diff + 0.03, "p": 0.01, "p_holm": 0.04, "outcome": "none", "adjusted_outcome": adjusted}


def evaluate_json(seed_index: int, primary: bool = True) -> dict:
    d = PRIMARY[seed_index]
    comps = [comparison("random", d, "baseline" if seed_index < 3 else "none"),
             comparison("pixels", 0.15, "generated"),
             comparison("random", 0.1 * seed_index, "generated" if seed_index % 2 else "none", "dbscan")]
    ev = {"n_generated": 4, "verdict": {"comparisons": comps, "n_boot": 500, "secondary_family": {"hypotheses": 51}}}
    if primary:
        ev["primary"] = {"metric": "auroc", "method": "kmeans", "difference": d, "low": d - 0.04, "high": d + 0.02,
                         "se": 0.015, "mdd": 0.042, "outcome": "none",
                         "generated": {"kind": "generated-study", "id": "study/1/A"},
                         "comparator": {"kind": "random", "id": "random/0"}}
    return ev


def exp_entry(name: str, params: dict, ev: dict | None, ts: str) -> dict:
    return {"revs": [{"rev": f"{abs(hash(name + ts)):040x}"[:40], "name": name, "error": None if ev else {"msg": "x"},
                      "data": {"rev": "x", "timestamp": ts,
                               "params": {"params.yaml": {"data": params}},
                               "metrics": {rep.EVALUATE: {"data": ev}} if ev else {}}}]}


def shown(raw: dict, primary: bool = True) -> list:
    """`dvc exp show --json` of five replicates, plus one of another profile, an older run of seed 7, a failed
    one, and a seed no longer asked for."""
    profile = raw["replicate"]["profile"]
    exps = []
    for i, s in enumerate(SEEDS):
        exps.append(exp_entry(rep.exp_name(s, profile), apply_overrides(raw, {**profile, "seed": s}),
                              evaluate_json(i, primary), f"2026-12-05T07:0{i}:00"))
    exps.append(exp_entry("rep-7-old", apply_overrides(raw, {**profile, "seed": 7}), evaluate_json(4),
                          "2026-12-05T06:00:00"))
    exps.append(exp_entry("rep-42-other", apply_overrides(raw, {"zoo.epochs": 9, "seed": 42}), evaluate_json(0),
                          "2026-12-05T08:00:00"))
    exps.append(exp_entry("rep-5-x", apply_overrides(raw, {**profile, "seed": 5}), evaluate_json(0),
                          "2026-12-05T08:00:00"))
    exps.append(exp_entry("rep-123-failed", apply_overrides(raw, {**profile, "seed": 123}), None,
                          "2026-12-05T09:00:00"))
    exps.append(exp_entry("someone-else", apply_overrides(raw, {"seed": 1}), evaluate_json(0), "2026-12-05T08:00:00"))
    return [{"rev": "workspace", "data": {}, "experiments": None},
            {"rev": "a" * 40, "name": "main", "data": {}, "experiments": exps}]


def test_queue_arguments_are_the_profile_as_dvc_overrides():
    assert rep.set_args(7, {"zoo.epochs": 3, "tune.methods": ["kmeans"], "x.y": 0.5, "b": True}) == [
        "-S", "seed=7", "-S", "zoo.epochs=3", "-S", 'tune.methods=["kmeans"]', "-S", "x.y=0.5", "-S", "b=true"]
    assert rep.exp_name(7, PROFILE) == rep.exp_name(7, dict(reversed(PROFILE.items()))) != rep.exp_name(7, {})
    assert rep.exp_name(7, PROFILE).startswith("rep-7-")


def test_aggregate_pools_the_primary_endpoint_across_seeds(tmp_path):
    raw = raw_params()
    result = rep.write_report(shown(raw), raw, "b" * 40, tmp_path / "r.md", tmp_path / "r.json")
    assert result["seeds"] == SEEDS
    assert [s["endpoints"]["primary"]["difference"] for s in result["per_seed"]] == PRIMARY
    assert [s["experiment"] for s in result["per_seed"]][1] == rep.exp_name(7, PROFILE)  # the newer run of seed 7
    left = {x["name"]: x["why"] for x in result["left_out"]}
    assert left == {"rep-7-old": "an older run of the same seed",
                    "rep-42-other": "other params (another profile, or params.yaml changed)",
                    "rep-5-x": "seed not in replicate.seeds", "rep-123-failed": "not finished"}
    p = result["pooled"]["primary"]
    sd = math.sqrt(0.001 / 4)
    t = 2.7764451051977987  # t_{0.975, 4}
    assert p["k"] == 5 and p["mean"] == pytest.approx(-0.01) and p["sd"] == pytest.approx(sd)
    assert (p["min"], p["max"]) == (-0.03, 0.01)
    assert p["low"] == pytest.approx(-0.01 - t * sd / math.sqrt(5)) and p["low"] == pytest.approx(-0.029632, abs=1e-6)
    assert p["high"] == pytest.approx(0.009632, abs=1e-6) and p["pooled_outcome"] == "none"
    assert p["mdd_one_run"] == pytest.approx((1.959964 + 0.841621) * sd, abs=1e-6)  # alpha 0.05, power 0.8
    assert p["mdd_pooled_mean"] == pytest.approx(p["mdd_one_run"] / math.sqrt(5))
    assert p["outcomes"] == {"none": 5} and p["mean_within_seed_width"] == pytest.approx(0.06)
    sec = result["secondary"]
    r = sec["kmeans auroc: generated-aligned vs random"]
    assert r["counts"] == {"baseline": 3, "none": 2} and (r["conclusion"], r["holds_in"], r["k"]) == ("baseline", 3, 5)
    assert r["unadjusted_counts"] == {"none": 5}  # each seed's own interval, before Holm
    assert sec["kmeans auroc: generated-aligned vs pixels"]["holds_in"] == 5
    d = sec["dbscan ari: generated-aligned vs random"]  # 2 generated, 3 none: the tie-free majority
    assert d["counts"] == {"none": 3, "generated": 2} and d["conclusion"] == "none"
    assert d["mean_diff"] == pytest.approx(0.2)
    assert json.loads((tmp_path / "r.json").read_text())["pooled"]["primary"]["mean"] == pytest.approx(-0.01)
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# Replication across 5 pipeline seeds\n\n**Primary endpoint, pooled over 5 seeds**: -0.010")
    assert "[-0.030, +0.010]" in md and "zoo.epochs=3" in md and "| kmeans auroc: generated-aligned vs random |" in md
    # p-values come from the bootstrap standard error (core.stats.bootstrap_p): no floor of 2/(n_boot+1) to report
    assert "holm_floor" not in result and "Holm can reject nothing" not in md
    assert "| baseline better | 3/5 | 0 / 5 / 0 |" in md and "rep-7-old (an older run of the same seed)" in md


def test_aggregate_falls_back_to_kmeans_differences_and_names_missing_seeds(tmp_path):
    raw = raw_params(seeds=[*SEEDS, 99])
    result = rep.write_report(shown(raw, primary=False), raw, "b" * 40, tmp_path / "r.md", tmp_path / "r.json")
    assert "primary" not in result["pooled"]
    p = result["pooled"]["kmeans auroc: generated-aligned vs random"]
    assert p["mean"] == pytest.approx(-0.01) and p["k"] == 5
    md = (tmp_path / "r.md").read_text()
    assert "have no `primary` endpoint" in md and "**Missing seeds** (no finished experiment): 99." in md


# --- one queued experiment for real -------------------------------------------------------------------------------

def _git(work: Path, *args: str, env: dict) -> None:
    subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)


def _sh(args: list[str], work: Path, env: dict, timeout: float = 600) -> str:
    p = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(args)}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


@pytest.mark.replicate
@pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data beside the repo")
def test_one_queued_experiment_runs_in_its_temp_copy_and_its_results_resolve(tmp_path):
    """A scratch git clone of the project (the tiny profile, data/source as DVC imports like the repository's):
    `dvc exp run --queue` + `dvc queue start` runs the pipeline in .dvc/tmp/exps/...; the experiment finishes,
    its metrics resolve through `dvc exp show --json` into the aggregate, its MLflow runs land in the clone's
    mlflow.db tagged with the experiment's name, and the zoo's cache in the clone's data/cache."""
    from conftest import TINY, deep_merge

    work = tmp_path / "clone"
    work.mkdir()
    copy_project(work, ".gitignore", ".dvcignore")
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["data"].update(path="data/source/cifar10-jpg.tar.gz", labels="data/source/blackcat_labels_train.csv")
    params["replicate"] = {"seeds": [5, 6], "profile": {}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONPATH": "src",
           "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(k, None)  # the store must resolve by itself: the clone's mlflow.db, not the temp copy's
    _git(work, "init", "-q", env=env)
    _sh(["dvc", "init", "-q"], work, env)
    _sh(["dvc", "remote", "add", "-d", "scratch", str(tmp_path / "remote")], work, env)
    (work / "data/source").mkdir(parents=True)
    for f in (TARBALL, LABELS):  # as the repository's data/source: an import from outside the clone
        _sh(["dvc", "import-url", "-q", str(f), "data/source/"], work, env)
    _git(work, "add", "-A", env=env)
    _git(work, "commit", "-qm", "tiny", env=env)
    name = rep.exp_name(5, {})
    _sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", "seed=5"], work, env)
    t0 = time.time()
    _sh(["dvc", "queue", "start", "-j", "1"], work, env)
    while time.time() - t0 < 900:
        time.sleep(5)
        status = _sh(["dvc", "queue", "status"], work, env)
        if name in status and not any(w in status for w in ("Queued", "Running")):
            break
    assert "Success" in status, status + _sh(["dvc", "queue", "logs", name], work, env)[-3000:]
    shown_ = json.loads(_sh(["dvc", "exp", "show", "--json", "--no-pager"], work, env))
    result = rep.write_report(shown_, yaml.safe_load((work / "params.yaml").read_text()), "c" * 40,
                              tmp_path / "r.md", tmp_path / "r.json", root=work)
    assert result["seeds"] == [5] and result["left_out"] == []
    primary = result["per_seed"][0]["endpoints"]["primary"]
    assert primary["low"] <= primary["difference"] <= primary["high"]
    assert result["secondary"] and all(r["k"] == 1 for r in result["secondary"].values())
    # what the temp copy made lives on in the clone: the MLflow store (runs tagged with the experiment) and caches
    assert not list((work / ".dvc/tmp/exps").glob("tmp*/mlflow.db"))
    code = f"""
import json, mlflow
c = mlflow.MlflowClient("sqlite:///{work / 'mlflow.db'}")
runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=5000)
print(json.dumps(sorted({{(r.data.tags.get("dvc_exp"), len(r.data.tags.get("params_hash", ""))) for r in runs}})))
"""
    tags = json.loads(_sh([sys.executable, "-c", code], work, env).strip().splitlines()[-1])
    assert tags == [[name, 16]], tags
    assert list((work / "data/cache/zoo").glob("black-*")) and list((work / "data/cache/cyclegan").glob("*.ckpt"))


def test_no_replicate_of_the_commit_leaves_the_last_report_intact(tmp_path):
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    md.write_text("the last run\n")
    raw = raw_params()
    with pytest.raises(LookupError, match="no replicate of bbbbbbbbbbbb found, so .* are left as they are"):
        rep.write_report([], raw, "b" * 40, md, js)
    assert md.read_text() == "the last run\n" and not js.exists()
