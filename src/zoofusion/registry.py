"""The model registry side of `evaluate`: selected generated models as pyfunc models from code
(zoofusion/serving.py), a new version only for new content, the alias `champion`, each version tagged with its
verdict; and the primary endpoint's numbers as MLflow metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoofusion.core.candidates import CONV_KEYS, Candidate, generated_kind
from zoofusion.core.cnn import preprocess
from zoofusion.render.tables import safe
from zoofusion.tracking import content_hash, register_version

REGISTERED_MODEL = "zoofusion-generated"


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
