"""Replication across pipeline seeds, the DVC way: `python -m zoofusion.replicate [queue|run|aggregate|all]`.

`queue` puts one DVC experiment per seed of `replicate.seeds` in DVC's queue (`dvc exp run --queue -n
rep-<seed>-<profile hash> -S seed=<seed> -S <key>=<value> ...`, the overrides of `replicate.profile`); `run` runs the
queue one experiment at a time and waits (`dvc exp run --run-all -j 1`: each in a temporary copy of the repository
under .dvc/tmp/exps/, where the stages find data/source in DVC's cache and log to the project's mlflow.db, tagged
`dvc_exp`); `aggregate` reads the experiments back (`dvc exp show --json`) into reports/replication.md and
reports/replication.json: the primary endpoint per seed (metrics/evaluate.json `primary`), pooled across seeds with
its spread (sd, min/max, a t-interval) and the minimum detectable difference that spread implies, and for every
secondary comparison in how many seeds its conclusion holds. `all` (what `make replicate` runs) does all three.

Only experiments of this baseline commit whose params are this file's with the seed and the profile applied count:
those of another profile or commit are listed as left out. No stage imports this module, nor it a stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import zoofusion.layout as layout
from zoofusion.config import ConfigError, apply_overrides, parse_params, read_yaml

log = logging.getLogger(__name__)
PREFIX = "rep"
OUT_MD = layout.REPLICATION_MD
OUT_JSON = layout.REPLICATION_JSON
EVALUATE = "metrics/evaluate.json"


def canonical_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]


def without_seed(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k != "seed"}


def exp_name(seed: int, profile: dict) -> str:
    """rep-<seed>-<hash of the profile>: one name per seed and profile (a rerun of the same replaces it)."""
    return f"{PREFIX}-{seed}-{canonical_hash(profile, 6)}"


def set_args(seed: int, profile: dict) -> list[str]:
    """`-S` arguments: values in JSON, which DVC's override grammar reads as the same YAML values."""
    out = ["-S", f"seed={seed}"]
    for k, v in profile.items():
        out += ["-S", f"{k}={json.dumps(v)}"]
    return out


def _dvc() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def _stage_env() -> dict[str, str]:
    """The experiments' stages run the code of their own copy (`src` relative to the stage's folder, the
    temporary copy), not the checkout an editable install points at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(["src", *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.pop("MLFLOW_RUN_ID", None)
    return env


def existing(root: Path = Path(".")) -> set[str]:
    """Names of the experiments already made from this commit (`dvc exp list`)."""
    p = subprocess.run([_dvc(), "exp", "list", "--name-only"], cwd=root, env=_stage_env(), capture_output=True,
                       text=True, check=True)
    return set(p.stdout.split())


def queue(raw: dict, root: Path = Path(".")) -> list[str]:
    """One queued experiment per seed that this commit has not made yet (a rerun only aggregates; DVC's run cache
    restores the stages of an experiment repeated after its ref was removed); returns the names queued."""
    params = parse_params(raw)
    names, done = [], existing(root)
    for seed in params.replicate.seeds:
        name = exp_name(seed, params.replicate.profile)
        if name in done:
            log.info("queue: %s exists (seed %d, this commit and profile): not queued again", name, seed)
            continue
        cmd = [_dvc(), "exp", "run", "--queue", "-n", name, *set_args(seed, params.replicate.profile)]
        log.info("queue: %s", " ".join(cmd[1:]))
        subprocess.run(cmd, cwd=root, env=_stage_env(), check=True)
        names.append(name)
    return names


def run_queue(root: Path = Path("."), jobs: int = 1) -> int:
    """Run every queued experiment, `jobs` at a time, and wait for them (DVC follows their logs)."""
    return subprocess.run([_dvc(), "exp", "run", "--run-all", "-j", str(jobs)], cwd=root, env=_stage_env()).returncode


def exp_show(root: Path = Path("."), rev: str | None = None) -> list:
    """`dvc exp show --json` of the experiments derived from `rev` (default: HEAD)."""
    p = subprocess.run([_dvc(), "exp", "show", "--json", "--no-pager", *(["--rev", rev] if rev else [])], cwd=root,
                       env=_stage_env(),
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def _data(entry: dict) -> dict:
    return entry.get("data") or {}


def experiments(shown: list) -> list[dict]:
    """Every finished experiment in `dvc exp show --json` output: name, rev, baseline, timestamp, params
    (params.yaml), and metrics/evaluate.json."""
    out = []
    for base in shown:
        if base.get("rev") == "workspace":
            continue
        for group in base.get("experiments") or []:
            for rev in group.get("revs") or []:
                d = _data(rev)
                params = ((d.get("params") or {}).get("params.yaml") or {}).get("data")
                ev = ((d.get("metrics") or {}).get(EVALUATE) or {}).get("data")
                out.append({"name": rev.get("name") or rev.get("rev", "")[:7], "rev": rev.get("rev"),
                            "baseline": base.get("rev"), "timestamp": d.get("timestamp") or "",
                            "status": d.get("status") or ("Failed" if rev.get("error") else "Success"),
                            "params": params, "evaluate": ev})
    return out


def complete(e: dict, root: Path = Path(".")) -> dict:
    """The experiment with its whole metrics/evaluate.json: `dvc exp show --json` leaves out lists (the verdict's
    comparisons), so the file is read from the experiment's commit through DVC (`dvc.api.read`, from the cache)."""
    ev = e["evaluate"] or {}
    if "comparisons" in (ev.get("verdict") or {}) or not e.get("rev"):
        return e
    try:
        import dvc.api

        return {**e, "evaluate": json.loads(dvc.api.read(EVALUATE, repo=str(root), rev=e["rev"]))}
    except Exception as err:  # noqa: BLE001 - any failure leaves the secondary comparisons out, said in one line
        log.warning("%s: %s unreadable at %s (%s); its secondary comparisons are left out", e["name"], EVALUATE,
                    e["rev"][:7], " ".join(str(err).split())[:200])
        return e


def select(exps: list[dict], raw: dict) -> tuple[dict[int, dict], list[dict]]:
    """The replicates of this params file: per seed, the latest finished experiment whose params are `raw` with
    that seed and the replicate profile applied. Returns ({seed: experiment}, the experiments left out, why)."""
    params = parse_params(raw)
    seeds, profile = params.replicate.seeds, params.replicate.profile
    want = canonical_hash(without_seed(apply_overrides(raw, profile)))
    chosen: dict[int, dict] = {}
    left = []
    for e in sorted(exps, key=lambda e: e["timestamp"]):
        if not e["name"].startswith(f"{PREFIX}-"):
            continue
        p = e["params"] or {}
        why = ("not finished" if e["evaluate"] is None else
               "seed not in replicate.seeds" if p.get("seed") not in seeds else
               "other params (another profile, or params.yaml changed)" if canonical_hash(without_seed(p)) != want
               else None)
        if why:
            left.append({"name": e["name"], "why": why})
            continue
        if p["seed"] in chosen:
            left.append({"name": chosen[p["seed"]]["name"], "why": "an older run of the same seed"})
        chosen[p["seed"]] = e
    return {s: chosen[s] for s in seeds if s in chosen}, left


def pooled(values: list[float], alpha: float, power: float) -> dict:
    """Mean across seeds with its spread: sd (n-1), min/max, the t-interval of the mean at 1 - alpha, and the
    minimum detectable difference that spread implies for one run and for the pooled mean at `power`."""
    from scipy import stats

    k = len(values)
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) if k > 1 else float("nan")
    tq = float(stats.t.ppf(1 - alpha / 2, k - 1)) if k > 1 else float("nan")
    half = tq * sd / math.sqrt(k) if k > 1 else float("nan")
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return {"k": k, "mean": mean, "sd": sd, "min": min(values), "max": max(values), "low": mean - half,
            "high": mean + half, "t_quantile": tq, "level": 1 - alpha,
            "mdd_one_run": z * sd, "mdd_pooled_mean": z * sd / math.sqrt(k) if k > 1 else float("nan")}


def endpoints(ev: dict) -> dict[str, dict]:
    """The primary endpoint of one run ({name: {difference, low, high, ...}}): metrics/evaluate.json `primary`;
    where a run predates it, the best-on-val KMeans AUROC difference of each generated kind vs each baseline kind."""
    if ev.get("primary"):
        p = ev["primary"]
        return {"primary": {k: p.get(k) for k in ("metric", "method", "difference", "low", "high", "se", "mdd",
                                                  "outcome")}
                | {"generated": (p.get("generated") or {}).get("kind"),
                   "comparator": (p.get("comparator") or {}).get("kind")}}
    out = {}
    for c in (ev.get("verdict") or {}).get("comparisons") or []:
        if c.get("method") == "kmeans" and c.get("metric") == "auroc":
            out[f"kmeans auroc: {c.get('generated_kind')} vs {c['kind']}"] = {
                "difference": c["best_diff"], "low": c["best_low"], "high": c["best_high"], "outcome": c.get("outcome")}
    return out


def _outcome(low: float | None, high: float | None) -> str:
    return "generated" if low is not None and low > 0 else "baseline" if high is not None and high < 0 else "none"


def aggregate(chosen: dict[int, dict], alpha: float, power: float) -> dict:
    """reports/replication.json's content from the chosen experiments ({seed: experiment})."""
    per_seed = []
    for seed, e in chosen.items():
        per_seed.append({"seed": seed, "experiment": e["name"], "rev": e["rev"], "endpoints": endpoints(e["evaluate"])})
    names = sorted({n for s in per_seed for n in s["endpoints"]}, key=lambda n: (n != "primary", n))
    pooled_ep = {}
    for n in names:
        rows = [s["endpoints"][n] for s in per_seed if n in s["endpoints"]]
        if len(rows) < 2:
            continue
        pe = pooled([float(r["difference"]) for r in rows], alpha, power)
        outcomes = Counter(r.get("outcome") or _outcome(r.get("low"), r.get("high")) for r in rows)
        widths = [float(r["high"]) - float(r["low"]) for r in rows if r.get("low") is not None]
        ses = [float(r["se"]) for r in rows if r.get("se") is not None]
        pooled_ep[n] = {**pe, "outcomes": dict(outcomes), "pooled_outcome": _outcome(pe["low"], pe["high"]),
                        "mean_within_seed_width": sum(widths) / len(widths) if widths else None,
                        "mean_within_seed_se": sum(ses) / len(ses) if ses else None}
    secondary: dict[str, dict] = {}
    for s in per_seed:
        ev = chosen[s["seed"]]["evaluate"]
        for c in (ev.get("verdict") or {}).get("comparisons") or []:
            key = f"{c['method']} {c['metric']}: {c.get('generated_kind', 'generated')} vs {c['kind']}"
            out = c.get("adjusted_outcome") or c.get("outcome") or _outcome(c.get("best_low"), c.get("best_high"))
            row = secondary.setdefault(key, {"method": c["method"], "metric": c["metric"],
                                             "generated_kind": c.get("generated_kind"), "kind": c["kind"],
                                             "diffs": [], "outcomes": [], "unadjusted": []})
            row["diffs"].append(float(c["best_diff"]))
            row["outcomes"].append(out)
            row["unadjusted"].append(c.get("outcome") or _outcome(c.get("best_low"), c.get("best_high")))
    for row in secondary.values():
        counts = Counter(row["outcomes"])
        top, n_top = max(sorted(counts.items()), key=lambda kv: (kv[1], kv[0] != "none"))
        k = len(row["diffs"])
        mean = sum(row["diffs"]) / k
        sd = math.sqrt(sum((d - mean) ** 2 for d in row["diffs"]) / (k - 1)) if k > 1 else None
        row.update(k=k, mean_diff=mean, sd_diff=sd, counts=dict(counts), conclusion=top, holds_in=n_top,
                   unadjusted_counts=dict(Counter(row["unadjusted"])), outcome_kind="adjusted_outcome (Holm)")
    return {"seeds": [s["seed"] for s in per_seed], "per_seed": per_seed, "pooled": pooled_ep,
            "secondary": dict(sorted(secondary.items())), "alpha": alpha, "power": power}


def _f(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{nd}f}"


WORDS = {"generated": "generated better", "baseline": "baseline better", "none": "no difference"}


def render(result: dict) -> str:
    """reports/replication.md: short paragraphs, the answer first."""
    prof = result["profile"]
    k = len(result["seeds"])
    lines = [f"# Replication across {k} pipeline seed{'s' if k != 1 else ''}", ""]
    pe = result["pooled"].get("primary")
    level = f"{100 * (1 - result['alpha']):.0f}%"
    if pe:
        lines += [f"**Primary endpoint, pooled over {pe['k']} seeds**: {_f(pe['mean'])} (sd {pe['sd']:.3f}, "
                  f"range {_f(pe['min'])} to {_f(pe['max'])}; {level} t-interval of the mean "
                  f"[{_f(pe['low'])}, {_f(pe['high'])}]): {WORDS[pe['pooled_outcome']]}. Per seed, its own interval "
                  f"says {', '.join(f'{WORDS[o]} in {n}' for o, n in sorted(pe['outcomes'].items()))}.", ""]
    elif k < 2:
        lines += [f"Fewer than 2 seeds finished ({k}): nothing is pooled yet.", ""]
    elif not any("primary" in s["endpoints"] for s in result["per_seed"]):
        lines += ["The experiments' metrics/evaluate.json have no `primary` endpoint: the KMeans AUROC differences of "
                  "each generated kind against each baseline kind stand in for it below.", ""]
    lines += [f"**Profile** (reduced; these numbers are for it, not for the quick profile): params.yaml at "
              f"{result['commit'][:7]} with `-S` {', '.join(f'{a}={json.dumps(b)}' for a, b in prof.items()) or 'none'}"
              f"; seeds {', '.join(map(str, result['seeds']))}. Each seed is one queued DVC experiment "
              f"(`dvc exp run --queue`), the whole pipeline.", ""]
    if pe:
        metric = next((r["endpoints"]["primary"].get("metric") for r in result["per_seed"]), None) or "auroc"
        lines += [f"**What one run can detect**: with the spread between seeds (sd {pe['sd']:.3f}), one run detects a "
                  f"difference of {pe['mdd_one_run']:.3f} {metric.upper()} at power {result['power']:.0%} and level "
                  f"{result['alpha']:g}; the mean of {pe['k']} seeds, {pe['mdd_pooled_mean']:.3f}. A single run's "
                  f"own bootstrap interval is {pe['mean_within_seed_width'] or float('nan'):.3f} wide on average.", ""]
    lines += ["## Per seed", "", "| seed | experiment | endpoint | difference | interval | outcome |",
              "|---|---|---|---|---|---|"]
    for s in result["per_seed"]:
        for n, r in s["endpoints"].items():
            what = f"{n} ({r.get('generated')} vs {r.get('comparator')})" if n == "primary" else n
            lines.append(f"| {s['seed']} | {s['experiment']} | {what} | {_f(r['difference'])} | "
                         f"[{_f(r.get('low'))}, {_f(r.get('high'))}] | "
                         f"{WORDS.get(r.get('outcome') or _outcome(r.get('low'), r.get('high')))} |")
    lines += ["", "## Pooled", "", f"| endpoint | mean | sd | min | max | {level} t-interval | seeds |",
              "|---|---|---|---|---|---|---|"]
    for n, p in result["pooled"].items():
        lines.append(f"| {n} | {_f(p['mean'])} | {p['sd']:.3f} | {_f(p['min'])} | {_f(p['max'])} | "
                     f"[{_f(p['low'])}, {_f(p['high'])}] | {p['k']} |")
    if result["secondary"]:
        lines += ["", "## Secondary comparisons across seeds", "",
                  "Each seed's conclusion is its Holm-adjusted outcome (best-on-val, per method); *holds in* counts "
                  "the seeds that share the most frequent conclusion. *Unadjusted* counts the seeds whose own 95% "
                  "interval excludes 0 on each side (generated / none / baseline), before Holm.", ""]
        lines += [
                  "| comparison | mean difference (sd) | generated better | no difference | baseline better | "
                  "conclusion | holds in | unadjusted |", "|---|---|---|---|---|---|---|---|"]
        for key, r in result["secondary"].items():
            c, u = r["counts"], r["unadjusted_counts"]
            sd = "n/a" if r["sd_diff"] is None else f"{r['sd_diff']:.3f}"
            lines.append(f"| {key} | {_f(r['mean_diff'])} ({sd}) | {c.get('generated', 0)} | {c.get('none', 0)} | "
                         f"{c.get('baseline', 0)} | {WORDS[r['conclusion']]} | {r['holds_in']}/{r['k']} | "
                         f"{u.get('generated', 0)} / {u.get('none', 0)} / {u.get('baseline', 0)} |")
    if result["left_out"]:
        gone = ", ".join(f"{x['name']} ({x['why']})" for x in result["left_out"])
        lines += ["", f"Left out: {gone}."]
    missing = [s for s in result["wanted_seeds"] if s not in result["seeds"]]
    if missing:
        lines += ["", f"**Missing seeds** (no finished experiment): {', '.join(map(str, missing))}."]
    return "\n".join(lines) + "\n"


def write_report(shown: list, raw: dict, commit: str, out_md: Path = OUT_MD, out_json: Path = OUT_JSON,
                 root: Path = Path(".")) -> dict:
    """Aggregate `dvc exp show --json` output into the two report files; returns what replication.json holds."""
    from zoofusion.io import write_json

    params = parse_params(raw)
    chosen, left = select(experiments(shown), raw)
    if not chosen:  # keep the last report: a report of nothing would overwrite the record
        raise LookupError(f"no replicate of {commit[:12]} found, so {out_md} and {out_json} are left as they are; "
                          "experiments made from another commit: `dvc exp list --all-commits`, then "
                          "`python -m zoofusion.replicate aggregate --rev <commit>`")
    chosen = {seed: complete(e, root) for seed, e in chosen.items()}
    result = aggregate(chosen, params.verdict.alpha, params.verdict.power)
    result.update(profile=params.replicate.profile, wanted_seeds=params.replicate.seeds, commit=commit,
                  left_out=left)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_json, result)
    out_md.write_text(render(result))
    return result


def _commit(root: Path, rev: str | None = None) -> str:
    p = subprocess.run(["git", "rev-parse", rev or "HEAD"], cwd=root, capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="replicate: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m zoofusion.replicate", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("queue", "run", "aggregate", "all"), nargs="?", default="all")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--jobs", type=int, default=1, help="experiments at once (default 1: each uses every core)")
    ap.add_argument("--rev", default=None, help="aggregate the experiments derived from this commit (default HEAD)")
    args = ap.parse_args(argv)
    root = Path(".")
    try:
        raw = read_yaml(args.params)
        parse_params(raw)
    except ConfigError as e:
        print(f"replicate: {e}", file=sys.stderr)
        return 2
    if args.command in ("queue", "all"):
        names = queue(raw, root)
        log.info("queued %d experiments: %s", len(names), ", ".join(names))
    if args.command in ("run", "all"):
        rc = run_queue(root, args.jobs)
        if rc:
            log.warning("dvc exp run --run-all ended with %d; aggregating what finished", rc)
    if args.command in ("aggregate", "all"):
        try:
            result = write_report(exp_show(root, args.rev), raw, _commit(root, args.rev), root=root)
        except LookupError as e:
            print(f"replicate: {e}", file=sys.stderr)
            return 1
        pe = result["pooled"].get("primary")
        log.info("%d of %d seeds finished; %s; wrote %s and %s", len(result["seeds"]), len(result["wanted_seeds"]),
                 f"primary endpoint pooled {pe['mean']:+.3f} [{pe['low']:+.3f}, {pe['high']:+.3f}] (sd {pe['sd']:.3f})"
                 if pe else "no pooled primary endpoint", OUT_MD, OUT_JSON)
        if len(result["seeds"]) < len(result["wanted_seeds"]):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
