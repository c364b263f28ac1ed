"""registry: the verdict a model version carries, in few tracking calls."""

from __future__ import annotations

from zoofusion.registry import REGISTERED_MODEL, register_champion, verdict_metrics
from zoofusion.core.verdict import Comparison


class Client:  # records what the stage would send to the MLflow registry
    def __init__(self):
        self.tags, self.alias, self.calls = {}, None, 0

    def set_model_version_tag(self, name, version, key, value):
        assert name == REGISTERED_MODEL
        self.tags.setdefault(version, {})[key] = value
        self.calls += 1

    def set_registered_model_alias(self, name, alias, version):
        self.alias = (alias, version)


def _c(gen, kind, method, outcome, adjusted):
    return {"generated_kind": gen, "kind": kind, "method": method, "outcome": outcome, "adjusted_outcome": adjusted}


def test_each_version_gets_one_tag_per_method_with_its_own_kinds_outcomes():
    comparisons = [_c("generated-study", k, m, "none", "none") for m in ("kmeans", "probe") for k in ("random", "zoo-A")]
    comparisons += [_c("generated-aligned", "random", "kmeans", "generated", "none"),
                    _c("generated-aligned", "generated-study", "kmeans", "baseline", None)]
    client = Client()
    register_champion(client, {"study/1/A": "3", "aligned/2/B": "4"}, "aligned/2/B",
                      {"sentence": "s", "comparisons": comparisons})
    assert client.alias == ("champion", "4")
    assert client.tags["3"] == {"model_id": "study/1/A", "verdict": "s", "vs_kmeans": "random=none/none, zoo-A=none/none",
                                "vs_probe": "random=none/none, zoo-A=none/none"}
    assert client.tags["4"]["vs_kmeans"] == "random=generated/none, generated-study=baseline"  # no Holm: no suffix
    assert client.calls == 4 + 3  # not one call per comparison


def test_verdict_metrics_name_each_comparison_and_the_primary_endpoint():
    c = Comparison(method="kmeans", metric="auroc", kind="random", generated_id="study/1/A", baseline_id="random-0",
                   generated_kind="generated-study", best_diff=0.1, best_low=0.0,
                   best_high=0.2, mean_diff=0.05, mean_low=-0.1, mean_high=0.2, p=0.04, p_holm=0.08)
    pr = {"difference": 0.1, "low": 0.0, "high": 0.2, "se": 0.05, "p": 0.04, "mdd": 0.14,
          "breakdown": {"test_images": {"width": 0.2}}}
    m = verdict_metrics([c], pr)
    assert m["verdict/kmeans/generated-study-vs-random/best_low"] == 0.0
    assert m["verdict/kmeans/generated-study-vs-random/p_holm"] == 0.08
    assert m["primary/mdd"] == 0.14 and m["primary/breakdown/test_images/width"] == 0.2
