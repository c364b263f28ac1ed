"""The verdict: do generated kernels beat each baseline kind, per clustering method, with intervals?

Rules (each comparison gives both sides the same budget and looks at test only after choosing on val):

* per method, one prevalence-free metric (`VERDICT_METRIC`): the AUROC of a continuous black-cat score for KMeans
  (how much nearer the val-chosen black-cat centroid than
  the other centroids) and the One-class SVM (its decision function), and the
  adjusted Rand index of the clustering for DBSCAN (which has no centroid to score against). Both mean the same
  at any class balance: 0.5 AUROC and 0 ARI are chance whatever the share of black cats;
* "best on val": the candidate of each kind with the highest val value of that metric (ties: lowest id);
* two differences per (method, baseline kind), each with a paired bootstrap interval over test images (the
  same resamples for both sides): best-on-val generated minus best-on-val baseline, and the mean over all
  generated candidates minus the mean over the kind's candidates;
* "generated beats X" only where the interval lies above 0, "X beats generated" only where it lies below 0;
  otherwise the numbers show no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from zoofusion.core.scores import adjusted_rand, roc_auc
from zoofusion.core.stats import bootstrap_indices, paired_difference, paired_mean_difference

VERDICT_METRIC = {"kmeans": "auroc", "ocsvm": "auroc", "dbscan": "ari"}
METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"auroc": roc_auc, "ari": adjusted_rand}
CHANCE = {"auroc": 0.5, "ari": 0.0}


@dataclass(frozen=True)
class Comparison:
    method: str
    metric: str
    kind: str
    generated_id: str
    baseline_id: str
    best_diff: float
    best_low: float
    best_high: float
    mean_diff: float
    mean_low: float
    mean_high: float

    @property
    def outcome(self) -> str:
        """'generated' / 'baseline' when the best-on-val interval excludes 0 on that side, else 'none'."""
        return "generated" if self.best_low > 0 else "baseline" if self.best_high < 0 else "none"

    @property
    def mean_outcome(self) -> str:
        return "generated" if self.mean_low > 0 else "baseline" if self.mean_high < 0 else "none"

    def as_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome, "mean_outcome": self.mean_outcome}


def best_on_val(ids: list[str], val_values: np.ndarray) -> int:
    """Index of the highest val value; ties go to the lowest id (never to a test number)."""
    order = sorted(range(len(ids)), key=lambda i: (-val_values[i], ids[i]))
    return order[0]


def compare(method: str, y_test: np.ndarray, kinds: list[str], ids: list[str], val_values: np.ndarray,
            test_arrays: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05) -> list[Comparison]:
    """Generated vs every other kind for one method.

    kinds/ids: per candidate; val_values: each candidate's val value of the method's verdict metric (for the
    choice); test_arrays [n_candidates, n_test]: its test scores (auroc) or cluster labels (ari).
    """
    metric = VERDICT_METRIC[method]
    fn = METRIC_FUNCTIONS[metric]
    y = np.asarray(y_test)
    idx = bootstrap_indices(len(y), n_boot, seed, strata=y)
    kinds_arr = np.asarray(kinds)
    gen = np.flatnonzero(kinds_arr == "generated")
    if not len(gen):
        raise ValueError("no generated candidates to compare")
    g_best = gen[best_on_val([ids[i] for i in gen], val_values[gen])]
    out = []
    for kind in dict.fromkeys(k for k in kinds if k != "generated"):
        members = np.flatnonzero(kinds_arr == kind)
        b_best = members[best_on_val([ids[i] for i in members], val_values[members])]
        best = paired_difference(fn, y, test_arrays[g_best], test_arrays[b_best], idx, alpha=alpha)
        mean = paired_mean_difference(fn, y, test_arrays[gen], test_arrays[members], idx, alpha=alpha)
        out.append(Comparison(method, metric, kind, ids[g_best], ids[b_best], best.estimate, best.low, best.high,
                              mean.estimate, mean.low, mean.high))
    return out


def sentence(comparisons: list[Comparison], names: dict[str, str]) -> str:
    """The verdict in plain words, from the intervals only."""
    parts = []
    by_method: dict[str, list[Comparison]] = {}
    for c in comparisons:
        by_method.setdefault(c.method, []).append(c)
    titles = {"kmeans": "KMeans", "ocsvm": "the One-class SVM", "dbscan": "DBSCAN"}
    for method, cs in by_method.items():
        metric = "AUROC" if cs[0].metric == "auroc" else "adjusted Rand index"
        wins = [names.get(c.kind, c.kind) for c in cs if c.outcome == "generated"]
        losses = [names.get(c.kind, c.kind) for c in cs if c.outcome == "baseline"]
        ties = [names.get(c.kind, c.kind) for c in cs if c.outcome == "none"]
        s = f"With {titles[method]} ({metric}, best-on-val model of each kind, 95% paired bootstrap intervals), "
        bits = []
        if wins:
            bits.append("generated kernels beat " + ", ".join(wins))
        if losses:
            bits.append(", ".join(losses) + (" beats" if len(losses) == 1 else " beat") + " generated kernels")
        if ties:
            bits.append("the numbers show no difference from " + ", ".join(ties))
        parts.append(s + "; ".join(bits) + ".")
    return " ".join(parts)
