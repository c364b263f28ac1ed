"""Step `novelty`: is each model of evaluate's pool new, or a near-copy of a zoo model? (Zeng et al. 2025)

For every single-CNN candidate of the pool (generated kinds, zoo-A/zoo-B, random, the merges; not `concat`, two
models, nor pixels/darkness, no weights): its aligned L2 distance over conv1 + conv2 (weights and biases,
core.novelty) to every model of each zoo (raw harvests, black zoo A and cat zoo B), the nearest model of each zoo,
and the distance relative to that zoo's typical distance between two of its models. A zoo candidate's nearest
model in its own zoo is itself (distance 0); its nearest OTHER model is reported instead.

Then, per method that scores.npz holds (enumerated from its ``clusters_test_<method>`` arrays, so arms added later
join), the IoU of the candidate's test error set with its nearest model's. A model's error set: the test images
its val-mapped output gets wrong (methods named ``ocsvm*`` store 0/1 calls, the others cluster ids mapped to
classes by val majority; the rule is checked against the stored test accuracy, and a method where neither rule
reproduces it gets no IoU). A nearest zoo model that is not in the pool is scored here through the same protocol
(steps.scores.evaluate_all, the same seed and params; a pool model rescored this way gives identical clusters).

Writes reports/novelty/novelty.csv (one row per candidate), reports/novelty/novelty.png (test verdict metric
against relative distance per kind, as Zeng et al. draw it) and metrics/novelty.json. Knows nothing of DVC/MLflow.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from zoofusion.config import ClusteringParams
from zoofusion.core.candidates import Candidate, is_generated
from zoofusion.core.cnn import CONV_KEYS
from zoofusion.core.novelty import (distance_matrix, distances, error_iou, error_set, nearest_other,
                                    typical_distance, val_mapped_calls)
from zoofusion.core.selection import VERDICT_METRIC, rank_rows
from zoofusion.io import atomic_dir, load_npz, write_json
from zoofusion.render.figures import novelty_scatter
from zoofusion.render.kernel_grid import save_figure
from zoofusion.steps.candidates import features, load_pool
from zoofusion.steps.scores import evaluate_all

log = logging.getLogger(__name__)
LETTERS = {"A": "black", "B": "cat"}


def read_scored(path: Path) -> tuple[list[dict], list[str]]:
    """scores.npz as rows (id, kind, metrics, clusters {method: (val, test)}) and the methods it holds."""
    z = load_npz(path)
    methods = sorted(n.removeprefix("clusters_test_") for n in z if n.startswith("clusters_test_"))
    keys = [str(k) for k in z["metric_keys"]]
    rows = [{"id": str(z["ids"][i]), "kind": str(z["kinds"][i]),
             "metrics": dict(zip(keys, (float(x) for x in z["metrics"][i]))),
             "clusters": {m: (z[f"clusters_val_{m}"][i].astype(np.int64), z[f"clusters_test_{m}"][i].astype(np.int64))
                          for m in methods if f"clusters_val_{m}" in z}} for i in range(len(z["ids"]))]
    return rows, methods


def errors_of(row: dict, method: str, y_val: np.ndarray, y_test: np.ndarray) -> np.ndarray | None:
    """The test error mask of one scored row and method (module docstring), or None where it cannot be rebuilt."""
    if method not in row["clusters"]:
        return None
    cv, ct = row["clusters"][method]
    rules = [lambda: ct, lambda: val_mapped_calls(y_val, cv, ct)]  # 0/1 calls as stored | val majority mapping
    if not method.startswith("ocsvm"):
        rules.reverse()
    stored = row["metrics"].get(f"test/{method}/accuracy")
    for rule in rules:
        calls = rule()
        if not np.isin(calls, (0, 1)).all():
            continue
        err = error_set(y_test, calls)
        if stored is None or abs((1 - err.mean()) - stored) < 1e-9:
            return err
    return None


def verdict_key(metrics: Mapping[str, float], method: str) -> str | None:
    """`test/<method>/<verdict metric>`: core.selection's metric, else AUROC, else ARI, where the method has one."""
    for k in (VERDICT_METRIC.get(method), "auroc", "ari"):
        if k and f"test/{method}/{k}" in metrics:
            return f"test/{method}/{k}"
    return None


def zoo_id(letter: str, index: int) -> str:
    return f"zoo-{letter}-{index}"


def run(pool: Path, scores: Path, kernels: Mapping[str, Path], val: Path, test: Path, out: Path, metrics_file: Path,
        c: ClusteringParams, seed: int, feature_batch: int, dark_luminance: int, workers: int, near_copy: float,
        backend: str = "local", address: str = "") -> dict:
    """Novelty of every single-CNN candidate (module docstring); returns the summary written to `metrics_file`.

    kernels: "black"/"cat" -> the raw harvest; near_copy: a candidate nearer than this fraction of the zoo's typical
    distance to a zoo model is called a near-copy of it."""
    cands = load_pool(pool)
    rows, methods = read_scored(scores)
    by_id = {r["id"]: r for r in rows}
    y_val, y_test = load_npz(val)["labels"], load_npz(test)["labels"]
    zoos = {L: torch.load(kernels[d], weights_only=True) for L, d in LETTERS.items()}
    pos = {L: {int(i): j for j, i in enumerate(z["model_index"].tolist())} for L, z in zoos.items()}
    mats = {L: distance_matrix(z) for L, z in zoos.items()}
    scale = {L: typical_distance(m) for L, m in mats.items()}
    nn = {L: nearest_other(m) for L, m in mats.items()}
    log.info("novelty: typical aligned distance between two zoo models %s", scale)

    table = []
    for cand in (x for x in cands if x.weights is not None and x.weights2 is None):
        rec = {"id": cand.id, "kind": cand.kind, "source_domain": cand.source_domain,
               "source_index": cand.source_index}
        for L, z in zoos.items():
            own = cand.kind == f"zoo-{L}"
            d = mats[L][pos[L][cand.source_index]].copy() if own else distances(cand.weights, z)
            if own:
                d[pos[L][cand.source_index]] = np.inf  # itself (distance 0): its nearest OTHER model
            j = int(np.argmin(d))
            rec |= {f"nearest_{L}": zoo_id(L, int(z["model_index"][j])), f"distance_{L}": float(d[j]),
                    f"relative_{L}": float(d[j] / scale[L])}
        L = min(LETTERS, key=lambda x: rec[f"relative_{x}"])
        rec |= {"nearest": rec[f"nearest_{L}"], "nearest_domain": L, "distance": rec[f"distance_{L}"],
                "relative": rec[f"relative_{L}"], "near_copy": rec[f"relative_{L}"] < near_copy,
                # a generated model's own source: the zoo model its kernels were translated from
                "nearest_is_source": is_generated(cand.kind) and rec[f"nearest_{L}"] == zoo_id(cand.source_domain,
                                                                                              cand.source_index)}
        table.append(rec)

    # score the nearest zoo models the pool lacks, through the same protocol
    missing = sorted({rec[f"nearest_{L}"] for rec in table for L in LETTERS} - set(by_id))
    extra = []
    for mid in missing:
        _, L, idx = mid.split("-")
        j = pos[L][int(idx)]
        extra.append(Candidate(mid, f"zoo-{L}", L, int(idx), {k: zoos[L][k][j] for k in CONV_KEYS}))
    if extra:
        v, t = load_npz(val), load_npz(test)
        feats = features(extra, np.concatenate([v["images"], t["images"]]), feature_batch, dark_luminance)
        for r in evaluate_all(extra, feats, len(y_val), y_val, y_test, c, seed, workers, backend, address):
            by_id[r["id"]] = {"id": r["id"], "metrics": r["metrics"],
                              "clusters": {m: (r["clusters"][f"val/{m}"], r["clusters"][f"test/{m}"])
                                           for m in methods if f"val/{m}" in r["clusters"]}}
    log.info("novelty: %d candidates; %d nearest zoo models scored here (not in the pool)", len(table), len(extra))

    errs = {i: {m: errors_of(r, m, y_val, y_test) for m in methods} for i, r in by_id.items()}
    for rec in table:
        metrics = by_id[rec["id"]]["metrics"]
        for m in methods:
            key = verdict_key(metrics, m)
            rec[f"test_{m}"] = metrics[key] if key else float("nan")
            for L in ("", *LETTERS):
                a, b = errs[rec["id"]][m], errs[rec[f"nearest_{L}" if L else "nearest"]][m]
                rec[f"iou{'_' + L if L else ''}_{m}"] = float("nan") if a is None or b is None else error_iou(a, b)
    summary = summarise(table, by_id, methods, scale, nn, near_copy, len(extra), seed)
    summary["test_metric"] = {m: (verdict_key(rows[0]["metrics"], m) or "").rsplit("/", 1)[-1] for m in methods}
    write(table, methods, summary, out, metrics_file)
    return summary


def summarise(table: list[dict], scored: dict, methods: list[str], scale: dict, nn: dict, near_copy: float,
              n_extra: int, seed: int) -> dict:
    """metrics/novelty.json: the zoo scales, per kind the distances and IoUs, and each generated kind's
    best-on-val model per verdict method (core.selection on the stored val metrics)."""
    def r4(x: float) -> float | None:
        return None if not np.isfinite(x) else round(float(x), 4)

    kinds = list(dict.fromkeys(rec["kind"] for rec in table))
    out: dict = {"near_copy_below": near_copy, "distance": "L2 over conv1+conv2 weights and biases, after weight "
                 "matching", "methods": methods, "nearest_scored_here": n_extra,
                 "zoo": {L: {"typical_distance": r4(scale[L]), "nearest_other_median": r4(np.median(nn[L])),
                             "nearest_other_median_relative": r4(np.median(nn[L]) / scale[L])} for L in LETTERS}}
    for kind in kinds:
        g = [rec for rec in table if rec["kind"] == kind]
        rel = np.array([rec["relative"] for rec in g])
        out[kind] = {"n": len(g), "relative_median": r4(np.median(rel)), "relative_min": r4(rel.min()),
                     "near_copies": int(sum(rec["near_copy"] for rec in g)),
                     "nearest_domain": {L: sum(rec["nearest_domain"] == L for rec in g) for L in LETTERS},
                     "nearest_is_source": int(sum(rec["nearest_is_source"] for rec in g)),
                     **{f"iou_median_{m}": r4(np.nanmedian([rec[f"iou_{m}"] for rec in g]))
                        if any(np.isfinite(rec[f"iou_{m}"]) for rec in g) else None for m in methods}}
        if not is_generated(kind):
            continue
        best = {}
        for m in (m for m in methods if m in VERDICT_METRIC):
            top = rank_rows([scored[rec["id"]] for rec in g], m, seed)[0]["id"]
            rec = next(x for x in g if x["id"] == top)
            best[m] = {"id": top, "nearest": rec["nearest"], "distance": r4(rec["distance"]),
                       "relative": r4(rec["relative"]), "near_copy": bool(rec["near_copy"]),
                       "nearest_is_source": bool(rec["nearest_is_source"]),
                       "iou": r4(rec[f"iou_{m}"]), f"test_{VERDICT_METRIC[m]}": r4(rec[f"test_{m}"])}
        out[kind]["best_on_val"] = best
    return out


def write(table: list[dict], methods: list[str], summary: dict, out: Path, metrics_file: Path) -> None:
    with atomic_dir(out) as tmp:
        with (tmp / "novelty.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows([{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in rec.items()} for rec in table])
        panels = {m: {kind: ([rec["relative"] for rec in table if rec["kind"] == kind],
                             [rec[f"test_{m}"] for rec in table if rec["kind"] == kind])
                      for kind in dict.fromkeys(rec["kind"] for rec in table)}
                  for m in methods if any(np.isfinite(rec[f"test_{m}"]) for rec in table)}
        save_figure(novelty_scatter(panels, summary["test_metric"], summary["near_copy_below"],
                                    {L: z["nearest_other_median_relative"] for L, z in summary["zoo"].items()}),
                    tmp / "novelty.png")
    write_json(metrics_file, summary)
