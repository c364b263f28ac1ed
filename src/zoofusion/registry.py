"""The MLflow side of `evaluate`: a child run per candidate, logged in bulk (`candidate_runs`, `log_candidates`),
its headline metrics as MLflow metrics and all of them in its protocol/metrics.json (`is_headline`); selected
generated models as pyfunc models from code (zoofusion/serving.py), a new version only for new content, the alias
`champion`, each version tagged with its verdict; and the primary endpoint's numbers as MLflow metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import torch

from zoofusion.core.candidates import CONV_KEYS, Candidate, generated_kind, is_generated
from zoofusion.core.cnn import preprocess
from zoofusion.core.protocol import METHODS
from zoofusion.core.selection import VERDICT_METRIC
from zoofusion.render.tables import safe
from zoofusion.tracking import content_hash, register_version

REGISTERED_MODEL = "zoofusion-generated"
CANDIDATE_CHUNK = 1000  # candidate runs per `BatchLogger.children` call (one transaction each; bounded memory)
PROTOCOL_FILE = ("metrics.json", "protocol")  # a candidate run's artifact with every protocol metric: (name, folder)


def is_headline(key: str) -> bool:
    """Whether the protocol metric `key` (``<split>/<method>/<metric>``) is one of a candidate run's MLflow metrics,
    the columns the UI's runs list and compare view lay out: every metric of the study's three methods
    (core.protocol.METHODS) on test, and each verdict method's verdict metric (core.selection.VERDICT_METRIC) on val
    and test; 40 of the 156. The rest (val's other metrics, DBSCAN's val-eps arm, the arms without UMAP beyond their
    verdict metric) are in the run's protocol/metrics.json: with all 156 as columns the UI took 5-7 s to show 100
    candidates on a 2-core AMD EPYC (issue 23: < 5 s)."""
    split, method, metric = key.split("/", 2)
    return (split == "test" and method in METHODS) or VERDICT_METRIC.get(method) == metric


def metrics_json(metrics: Mapping[str, float]) -> bytes:
    """A candidate's protocol/metrics.json: every protocol metric by key, sorted; NaN (a split of one class) as
    null, which JSON has where it has no NaN."""
    return json.dumps({k: None if math.isnan(v) else v for k, v in sorted((k, float(v)) for k, v in metrics.items())},
                      indent=1, allow_nan=False).encode()


def candidate_runs(rows: list[dict], selected: Collection[str], best: Mapping[tuple[str, str], str],
                   figs: Mapping[str, list], run_params: Mapping[str, object]) -> list[tuple]:
    """evaluate's child run of each candidate of `rows` (id, kind, source_domain, source_index, metrics, seconds), as
    `tracking.BatchLogger.children` takes them: (name: the candidate's id; params: model_id, kind, variant,
    source_domain, source_index and `run_params` (the UMAP settings); metrics at step 0: the headline protocol
    metrics (:func:`is_headline`) and `protocol_seconds`; tags: kind, selected_on_val, best_on_val_<method> for every
    method of `best` ((kind, method) -> the id best on val); artifacts: every protocol metric as
    protocol/metrics.json (:func:`metrics_json`), the candidate's `figs` under `figures`). Pure: no tracking call."""
    methods = list(dict.fromkeys(m for _, m in best))
    sel = set(selected)
    out = []
    for r in rows:
        cid, kind = r["id"], r["kind"]
        params = {"model_id": cid, "kind": kind, "variant": kind.removeprefix("generated-") if is_generated(kind) else "-",
                  "source_domain": r["source_domain"] or "-", "source_index": r["source_index"], **run_params}
        metrics = [(k, float(v), 0) for k, v in r["metrics"].items() if is_headline(k)]
        metrics.append(("protocol_seconds", float(r["seconds"]), 0))
        tags = {"kind": kind, "selected_on_val": str(cid in sel).lower(),
                **{f"best_on_val_{m}": str(best.get((kind, m)) == cid).lower() for m in methods}}
        out.append((cid, params, metrics, tags, [(PROTOCOL_FILE[0], metrics_json(r["metrics"]), PROTOCOL_FILE[1]),
                                                 *((p, "figures") for p in figs.get(cid, []))]))
    return out


def log_candidates(logger, rows: list[dict], selected: Collection[str], best: Mapping[tuple[str, str], str],
                   figs: Mapping[str, list], run_params: Mapping[str, object], chunk: int = CANDIDATE_CHUNK) -> list[str]:
    """The candidates' child runs (`candidate_runs`) through `logger` (a `tracking.BatchLogger` of the evaluate run,
    its tags the stage's, its datasets val and test), `chunk` runs per `children` call: on a SQL store ~1 ms a run
    where a run of its own costs ~50-100 ms. Returns the run ids in the order of `rows`."""
    ids: list[str] = []
    for i in range(0, len(rows), chunk):
        ids += logger.children(candidate_runs(rows[i:i + chunk], selected, best, figs, run_params))
    return ids


def log_pyfunc(mlflow, cand: Candidate, example: np.ndarray, tmpdir: Path):
    """The candidate as a pyfunc model from code (zoofusion/serving.py), with a signature, registered as a new
    version only when its weights or serving code differ from the latest version of its kind's
    (`tracking.register_version`); returns that version."""
    from mlflow.models import infer_signature

    import zoofusion.serving as serving
    from zoofusion.core.cnn import ConvFeatures

    f = tmpdir / f"{safe(cand.id)}.pt"
    torch.save({k: v.clone() for k, v in cand.weights.items()}, f)
    with torch.no_grad():
        out = ConvFeatures(*(cand.weights[k] for k in CONV_KEYS))(preprocess(example)).numpy()
    info = mlflow.pyfunc.log_model(name="feature_extractor", python_model=serving.__file__, artifacts={"weights": str(f)},
                                   signature=infer_signature(example, out), input_example=example,
                                   pip_requirements=["torch==2.14.1", "numpy", "zoofusion"])
    content = content_hash({k: cand.weights[k] for k in CONV_KEYS}, Path(serving.__file__).read_bytes())
    return register_version(mlflow, REGISTERED_MODEL, info.model_uri, content, cand.kind)


def register_champion(client, versions: dict[str, str], champion: str, ev_verdict: dict) -> None:
    """Alias `champion` = the best-on-val generated model; every version tagged with the verdict it came with:
    the sentence, and per method the outcome of each comparison of its own variant's kind, one tag
    `vs_<method>` = `<other kind>=<outcome>/<Holm-adjusted outcome>, ...` (one call per method, not per comparison:
    a sqlite store costs ~15 ms a call and there are hundreds of comparisons)."""
    for cid, version in versions.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, "model_id", cid)
        client.set_model_version_tag(REGISTERED_MODEL, version, "verdict", ev_verdict["sentence"][:5000])
        kind = generated_kind(cid.split("/", 1)[0])  # ids are <variant>/<source>
        by_method: dict[str, list[str]] = {}
        for c in ev_verdict["comparisons"]:
            if c["generated_kind"] == kind:
                by_method.setdefault(c["method"], []).append(
                    f"{c['kind']}={c['outcome']}" + (f"/{c['adjusted_outcome']}" if c.get("adjusted_outcome") else ""))
        for method, outcomes in by_method.items():
            client.set_model_version_tag(REGISTERED_MODEL, version, f"vs_{method}", ", ".join(outcomes)[:5000])
    client.set_registered_model_alias(REGISTERED_MODEL, "champion", versions[champion])


def primary_metrics(pr: dict) -> dict[str, float]:
    """The primary endpoint's numbers as MLflow metrics: primary/{difference,low,high,se,p,mdd} and the width of
    each source's interval alone, primary/breakdown/<source>/width."""
    out = {f"primary/{k}": pr[k] for k in ("difference", "low", "high", "se", "p", "mdd")}
    out.update({f"primary/breakdown/{src}/width": b["width"] for src, b in pr["breakdown"].items()})
    return out


def verdict_metrics(comparisons, pr: dict) -> dict[str, float]:
    """The verdict's intervals as MLflow metrics, verdict/<method>/<generated kind>-vs-<kind>/{best,mean}_{diff,low,
    high} and its p / p_holm where computed, then the primary endpoint's (:func:`primary_metrics`)."""
    out = {}
    for c in comparisons:
        key = f"verdict/{c.method}/{c.generated_kind}-vs-{c.kind}"
        out.update({f"{key}/{what}_{part}": float(getattr(c, f"{what}_{part}"))
                    for what in ("best", "mean") for part in ("diff", "low", "high")})
        out.update({f"{key}/{name}": float(v) for name, v in (("p", c.p), ("p_holm", c.p_holm)) if v is not None})
    return {**out, **primary_metrics(pr)}
