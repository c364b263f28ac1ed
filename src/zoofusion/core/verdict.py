"""The verdict: do generated kernels beat each baseline kind, per clustering method, with intervals?

Rules (each comparison gives both sides the same budget and looks at test only after choosing on val):

* per method, one prevalence-free metric (`VERDICT_METRIC`): the AUROC of a continuous black-cat score for KMeans
  (how much nearer the val-chosen black-cat centroid than
  the other centroids) and the One-class SVM (its decision function), and the
  adjusted Rand index of the clustering for DBSCAN (which has no centroid to score against). Both mean the same
  at any class balance: 0.5 AUROC and 0 ARI are chance whatever the share of black cats;
* "best on val": the candidate of each kind with the highest val value of that metric (ties: a seeded random order,
  :mod:`zoofusion.core.selection`, the same choice every other selection makes);
* two differences per (method, baseline kind), each with a paired bootstrap interval over test images (the
  same resamples for both sides): best-on-val generated minus best-on-val baseline, and the mean over all
  generated candidates minus the mean over the kind's candidates;
* "generated beats X" only where the interval lies above 0, "X beats generated" only where it lies below 0;
  otherwise the numbers show no difference.

With several translation variants (kinds `generated-<variant>`), every generated kind is compared with every
baseline kind, and each generated kind with the generated kinds listed before it (e.g. aligned vs study), the
same way: each comparison is "this generated kind minus that kind".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from zoofusion.core.candidates import is_generated
from zoofusion.core.scores import adjusted_rand, roc_auc
from zoofusion.core.selection import VERDICT_METRIC, best_on_val
from zoofusion.core.stats import bootstrap_indices, paired_difference, paired_mean_difference

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
    generated_kind: str = "generated"

    @property
    def outcome(self) -> str:
        """'generated' / 'baseline' when the best-on-val interval excludes 0 on that side, else 'none'."""
        return "generated" if self.best_low > 0 else "baseline" if self.best_high < 0 else "none"

    @property
    def mean_outcome(self) -> str:
        return "generated" if self.mean_low > 0 else "baseline" if self.mean_high < 0 else "none"

    def as_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome, "mean_outcome": self.mean_outcome}


def compare(method: str, y_test: np.ndarray, kinds: list[str], ids: list[str], val_values: np.ndarray,
            test_arrays: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05, *,
            select_seed: int) -> list[Comparison]:
    """Each generated kind vs every baseline kind and every generated kind before it, for one method.

    kinds/ids: per candidate; val_values: each candidate's val value of the method's verdict metric (for the
    choice); test_arrays [n_candidates, n_test]: its test scores (auroc) or cluster labels (ari). All
    comparisons share the same bootstrap resamples. `select_seed` (the params seed) orders ties on val.
    """
    metric = VERDICT_METRIC[method]
    fn = METRIC_FUNCTIONS[metric]
    y = np.asarray(y_test)
    idx = bootstrap_indices(len(y), n_boot, seed, strata=y)
    kinds_arr = np.asarray(kinds)
    order = list(dict.fromkeys(kinds))
    generated = [k for k in order if is_generated(k)]
    if not generated:
        raise ValueError("no generated candidates to compare")
    baselines = [k for k in order if not is_generated(k)]

    def members_and_best(kind: str) -> tuple[np.ndarray, int]:
        members = np.flatnonzero(kinds_arr == kind)
        return members, members[best_on_val([ids[i] for i in members], val_values[members], select_seed)]

    out = []
    for j, gk in enumerate(generated):
        gen, g_best = members_and_best(gk)
        for kind in baselines + generated[:j]:
            members, b_best = members_and_best(kind)
            best = paired_difference(fn, y, test_arrays[g_best], test_arrays[b_best], idx, alpha=alpha)
            mean = paired_mean_difference(fn, y, test_arrays[gen], test_arrays[members], idx, alpha=alpha)
            out.append(Comparison(method, metric, kind, ids[g_best], ids[b_best], best.estimate, best.low, best.high,
                                  mean.estimate, mean.low, mean.high, gk))
    return out


TITLES = {"kmeans": "KMeans", "ocsvm": "the One-class SVM", "dbscan": "DBSCAN"}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def sentence(comparisons: list[Comparison], names: dict[str, str]) -> str:
    """The verdict in plain words, from the intervals only: per generated kind, then per method."""
    parts = []
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault((c.generated_kind, c.method), []).append(c)
    for (gk, method), cs in groups.items():
        subject = names.get(gk, "generated kernels")
        metric = "AUROC" if cs[0].metric == "auroc" else "adjusted Rand index"
        wins = [names.get(c.kind, c.kind) for c in cs if c.outcome == "generated"]
        losses = [names.get(c.kind, c.kind) for c in cs if c.outcome == "baseline"]
        ties = [names.get(c.kind, c.kind) for c in cs if c.outcome == "none"]
        s = f"With {TITLES[method]} ({metric}, best-on-val model of each kind, 95% paired bootstrap intervals), "
        bits = []
        if wins:
            bits.append(f"{subject} beat " + ", ".join(wins))
        if losses:
            bits.append(", ".join(losses) + (" beats " if len(losses) == 1 else " beat ") + subject)
        if ties:
            bits.append(f"the numbers show no difference between {subject} and " + ", ".join(ties))
        parts.append(s + "; ".join(bits) + ".")
    return " ".join(parts)


def answer(comparisons: list[Comparison], generated_kind: str, kind: str, names: dict[str, str]) -> str:
    """One plain sentence: does `generated_kind` beat `kind`, method by method (best-on-val intervals)?"""
    cs = [c for c in comparisons if c.generated_kind == generated_kind and c.kind == kind]
    if not cs:
        return ""
    subject, other = names.get(generated_kind, generated_kind), names.get(kind, kind)
    by = {o: [TITLES[c.method] for c in cs if c.outcome == o] for o in ("generated", "baseline", "none")}
    if len(by["generated"]) == len(cs):
        head = f"Yes: {subject} beat {other} with every method ({_join(by['generated'])})"
    elif not by["generated"]:
        head = f"No: {subject} beat {other} with no method"
    else:
        head = f"Partly: {subject} beat {other} with {_join(by['generated'])} only"
    bits = []
    if by["baseline"]:
        bits.append(f"{other} is better with {_join(by['baseline'])}")
    if by["none"]:
        bits.append(f"the intervals show no difference with {_join(by['none'])}")
    return head + ("; " + "; ".join(bits) if bits else "") + "."
