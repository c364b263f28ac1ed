"""The verdict: do generated kernels beat each baseline kind, per clustering method, with intervals?

Rules (each comparison gives both sides the same budget and looks at test only after choosing on val):

* per method, one metric (`VERDICT_METRIC`, :mod:`zoofusion.core.selection`): the AUROC of a continuous black-cat
  score for KMeans (how much nearer the val-chosen black-cat centroid than the other centroids) and the One-class SVM
  (its decision function); AUROC is prevalence-free (0.5 is chance and its meaning does not change with the share of
  black cats). For DBSCAN, which has no centroid to score against, the adjusted Rand index of the clustering: 0 is
  chance at any share of black cats, but ARI is NOT prevalence-free (its attainable values and scale change with the
  class balance), so ARIs are compared only between candidates on the same test set;
* "best on val": the candidate of each kind with the highest val value of that metric (ties: a seeded random order,
  :mod:`zoofusion.core.selection`, the same choice every other selection makes);
* two differences per (method, baseline kind), each with a paired bootstrap interval over test images (the
  same resamples for both sides): best-on-val generated minus best-on-val baseline, and the mean over all
  generated candidates minus the mean over the kind's candidates;
* "generated beats X" only where the interval lies above 0, "X beats generated" only where it lies below 0;
  otherwise the numbers show no difference.

The methods are those of every arm (core.protocol.VERDICT_METHODS): the study's protocol through UMAP, the same
methods on the features without UMAP, and the linear probe; each is one more method here, judged by its own
verdict metric.

These comparisons are SECONDARY: each carries a bootstrap p-value (`core.stats.bootstrap_p`) and, within the family
params.yaml `verdict.secondary_family` declares, a Holm-adjusted one (`holm_adjust`) and the outcome at that
adjusted level. The PRIMARY endpoint (`primary`) is the one comparison declared in params.yaml `verdict.primary`:
the best-on-val candidate over the declared generated kinds minus the best-on-val candidate over the declared
baseline kinds (by default all of them, so a baseline added later joins the comparator instead of adding a test),
with a hierarchical, selection-aware bootstrap interval (`core.stats.selection_bootstrap`), the breakdown of
its variance by source, and the minimum detectable difference.

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
from zoofusion.core.stats import (ScoreSet, bootstrap_indices, holm, min_detectable_difference, paired_difference,
                                  paired_mean_difference, selection_bootstrap)

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
    p: float | None = None  # bootstrap p-value of the best-on-val difference (core.stats.bootstrap_p)
    mean_p: float | None = None  # ... of the kind-mean difference
    p_holm: float | None = None  # Holm-adjusted within the secondary family (None: not adjusted yet)
    mean_p_holm: float | None = None  # None where the family holds the best-on-val comparisons only
    alpha: float = 0.05

    @staticmethod
    def _adjusted(diff: float, p_holm: float | None, alpha: float) -> str | None:
        if p_holm is None:
            return None
        return ("generated" if diff > 0 else "baseline") if p_holm < alpha else "none"

    @property
    def adjusted_outcome(self) -> str | None:
        """The best-on-val outcome after Holm's adjustment: a side only where p_holm < alpha."""
        return self._adjusted(self.best_diff, self.p_holm, self.alpha)

    @property
    def mean_adjusted_outcome(self) -> str | None:
        return self._adjusted(self.mean_diff, self.mean_p_holm, self.alpha)

    @property
    def outcome(self) -> str:
        """'generated' / 'baseline' when the best-on-val interval excludes 0 on that side, else 'none'."""
        return "generated" if self.best_low > 0 else "baseline" if self.best_high < 0 else "none"

    @property
    def mean_outcome(self) -> str:
        return "generated" if self.mean_low > 0 else "baseline" if self.mean_high < 0 else "none"

    def as_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome, "mean_outcome": self.mean_outcome,
                "adjusted_outcome": self.adjusted_outcome, "mean_adjusted_outcome": self.mean_adjusted_outcome}


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
                                  mean.estimate, mean.low, mean.high, gk, best.p, mean.p, alpha=alpha))
    return out


FAMILIES = ("best_on_val", "best_on_val_and_means")


def holm_adjust(comparisons: list[Comparison], family: str, alpha: float) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values over one family: `best_on_val` adjusts the best-on-val
    differences together (one hypothesis per comparison), `best_on_val_and_means` those and the kind-mean
    differences as one family (twice as many hypotheses)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if any(c.p is None or c.mean_p is None for c in comparisons):
        raise ValueError("every comparison needs its bootstrap p-values (from compare)")
    p = [c.p for c in comparisons] + ([c.mean_p for c in comparisons] if family == "best_on_val_and_means" else [])
    adj = holm(p, alpha) if p else []
    n = len(comparisons)
    return [Comparison(**{**asdict(c), "alpha": alpha, "p_holm": float(adj[i]),
                          "mean_p_holm": float(adj[n + i]) if family == "best_on_val_and_means" else None})
            for i, c in enumerate(comparisons)]


def primary(method: str, metric: str, kinds: list[str], ids: list[str], y_val: np.ndarray, y_test: np.ndarray,
            val_arrays: np.ndarray, test_arrays: np.ndarray, generated_kinds: tuple[str, ...],
            comparator_kinds: tuple[str, ...], n_boot: int, seed: int, alpha: float, power: float,
            replicates_val: np.ndarray | None = None, replicates_test: np.ndarray | None = None) -> dict:
    """The primary endpoint of one evaluation: best-on-val over `generated_kinds` minus best-on-val over
    `comparator_kinds` on test, with the selection-aware bootstrap (core.stats.selection_bootstrap), its
    breakdown by source, the outcome, and the minimum detectable difference at this test set's size and share of
    black cats (from the bootstrap's standard error).

    val_arrays / test_arrays [n_candidates, n_val / n_test]: per-image scores (auroc) or cluster ids (ari).
    replicates_*: optional [R, n_candidates, n] stored reruns of the UMAP/clustering seed (run 0 = the arrays).
    """
    if metric != VERDICT_METRIC[method]:
        raise ValueError(f"{method} is judged by {VERDICT_METRIC[method]}, not {metric}")
    kinds_arr = np.asarray(kinds)
    side = np.where(np.isin(kinds_arr, generated_kinds), 0, np.where(np.isin(kinds_arr, comparator_kinds), 1, -1))
    val = val_arrays if replicates_val is None else replicates_val
    test = test_arrays if replicates_test is None else replicates_test
    r = selection_bootstrap(METRIC_FUNCTIONS[metric], ScoreSet(y_val, y_test, val, test, side, kinds_arr),
                            n_boot, seed, alpha)
    (g, c), = r.selected
    fn = METRIC_FUNCTIONS[metric]
    outcome = "generated" if r.low > 0 else "baseline" if r.high < 0 else "none"
    return {"metric": metric, "method": method,
            "generated": {"kinds": list(generated_kinds), "id": ids[g], "kind": kinds[g],
                          "test_value": float(fn(y_test, test_arrays[g]))},
            "comparator": {"kinds": list(comparator_kinds), "id": ids[c], "kind": kinds[c],
                           "test_value": float(fn(y_test, test_arrays[c]))},
            **r.as_dict(), "level": 1 - alpha, "outcome": outcome,
            "mdd": min_detectable_difference(r.se, alpha, power), "power": power,
            "test_images": int(len(y_test)), "test_black_cat_share": float(np.mean(y_test))}


TITLES = {"kmeans": "KMeans", "ocsvm": "the One-class SVM", "dbscan": "DBSCAN",
          "kmeans_direct": "KMeans without UMAP", "ocsvm_direct": "the One-class SVM without UMAP",
          "dbscan_direct": "DBSCAN without UMAP", "probe": "the linear probe"}


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
