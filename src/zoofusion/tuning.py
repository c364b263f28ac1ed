"""Tuning the clustering protocol on val only: the search space, the val objective, and Optuna studies.

Shared by the `tune` stage (searches on val) and the `tuned` stage (scores the best params on test). See
`zoofusion.steps.tune` for the honesty rules; nothing here reads the test split unless handed it.

Search space (:func:`suggest`): standardize (true|false), UMAP n_neighbors (int 5..50, capped at n_val - 1),
min_dist (0..0.99), n_components (int 2..10); KMeans k (2|3); DBSCAN eps (0.1..5, log), min_samples (int 2..15);
One-class SVM nu (0.01..0.5, log) and gamma ("scale" or a float 1e-3..10, log). UMAP metric, KMeans n_init and
the SVM kernel stay as in `evaluate.clustering`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoofusion.config import METHODS, ClusteringParams, ConfigError, TuneParams
from zoofusion.console import progress
from zoofusion.core.seeds import derive_seed
from zoofusion.executor import run_tasks



def objective_of(method: str) -> str:
    """The val metric a study of `method` maximises: the method's verdict metric (core.selection.VERDICT_METRIC,
    the one place), so tuning optimises what selection and the verdict read."""
    from zoofusion.core.selection import VERDICT_METRIC

    return VERDICT_METRIC[method]


# Search space bounds (inclusive).
N_NEIGHBORS = (5, 50)
MIN_DIST = (0.0, 0.99)
N_COMPONENTS = (2, 10)
KMEANS_K = (2, 3)
DBSCAN_EPS = (0.1, 5.0)  # log scale
DBSCAN_MIN_SAMPLES = (2, 15)
OCSVM_NU = (0.01, 0.5)  # log scale
OCSVM_GAMMA = (1e-3, 10.0)  # log scale; or "scale"

UMAP_KEYS = ("standardize", "n_neighbors", "min_dist", "n_components")
METHOD_KEYS = {"kmeans": ("kmeans_k",), "dbscan": ("dbscan_eps", "dbscan_min_samples"),
               "ocsvm": ("ocsvm_nu", "ocsvm_gamma")}
MIN_VAL_POINTS = N_NEIGHBORS[0] + 1  # n_neighbors must stay below the number of val points


class TuneError(ValueError):
    """Inputs of the tune stage are missing, inconsistent or too small to tune on."""


@dataclass(frozen=True)
class Study:
    """One study: a clustering method tuned for one candidate's features."""

    method: str
    candidate: str
    kind: str

    @property
    def name(self) -> str:
        return f"zoofusion/{self.method}/{self.candidate}"


# --- search space ----------------------------------------------------------------------------------------------

def space_limits(n_val: int) -> dict[str, tuple[int, int]]:
    """The integer UMAP ranges for a val set of n_val points (n_neighbors < n_val; n_components < n_val - 1)."""
    if n_val < MIN_VAL_POINTS:
        raise TuneError(f"val has {n_val} points; tuning needs at least {MIN_VAL_POINTS} "
                        f"(UMAP n_neighbors >= {N_NEIGHBORS[0]} must stay below the number of points)")
    return {"n_neighbors": (N_NEIGHBORS[0], min(N_NEIGHBORS[1], n_val - 1)),
            "n_components": (N_COMPONENTS[0], min(N_COMPONENTS[1], n_val - 2))}


def suggest(trial, method: str, n_val: int) -> dict[str, Any]:
    """Sample one configuration; returns it in :func:`resolve`'s form (ClusteringParams names)."""
    lim = space_limits(n_val)
    trial.suggest_categorical("standardize", [True, False])
    trial.suggest_int("n_neighbors", *lim["n_neighbors"])
    trial.suggest_float("min_dist", *MIN_DIST)
    trial.suggest_int("n_components", *lim["n_components"])
    if method == "kmeans":
        trial.suggest_categorical("kmeans_k", list(KMEANS_K))
    elif method == "dbscan":
        trial.suggest_float("dbscan_eps", *DBSCAN_EPS, log=True)
        trial.suggest_int("dbscan_min_samples", *DBSCAN_MIN_SAMPLES)
    elif method == "ocsvm":
        trial.suggest_float("ocsvm_nu", *OCSVM_NU, log=True)
        if trial.suggest_categorical("ocsvm_gamma_kind", ["scale", "value"]) == "value":
            trial.suggest_float("ocsvm_gamma_value", *OCSVM_GAMMA, log=True)
    else:
        raise TuneError(f"unknown method {method!r}; choose from {METHODS}")
    return resolve(trial.params)


def resolve(optuna_params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter names -> ClusteringParams names (the gamma choice becomes "scale" or a float)."""
    out = {k: v for k, v in optuna_params.items() if not k.startswith("ocsvm_gamma_")}
    if "ocsvm_gamma_kind" in optuna_params:
        kind = optuna_params["ocsvm_gamma_kind"]
        out["ocsvm_gamma"] = "scale" if kind == "scale" else float(optuna_params["ocsvm_gamma_value"])
    return out


def untuned(c: ClusteringParams, method: str) -> dict[str, Any]:
    """The configuration evaluate used, in :func:`resolve`'s form."""
    u = c.umap
    d: dict[str, Any] = {"standardize": c.standardize, "n_neighbors": u.n_neighbors, "min_dist": u.min_dist,
                         "n_components": u.n_components}
    d.update({"kmeans": {"kmeans_k": c.kmeans_k},
              "dbscan": {"dbscan_eps": c.dbscan_eps, "dbscan_min_samples": c.dbscan_min_samples},
              "ocsvm": {"ocsvm_nu": c.ocsvm_nu, "ocsvm_gamma": c.gamma()}}[method])
    return d


def to_optuna(tuned: dict[str, Any], n_val: int) -> dict[str, Any] | None:
    """A resolved configuration as Optuna parameters, or None when it lies outside the search space."""
    lim = space_limits(n_val)
    p = {k: v for k, v in tuned.items() if k != "ocsvm_gamma"}
    if "ocsvm_gamma" in tuned:
        g = tuned["ocsvm_gamma"]
        if g == "scale":
            p["ocsvm_gamma_kind"] = "scale"
        elif isinstance(g, (int, float)) and OCSVM_GAMMA[0] <= g <= OCSVM_GAMMA[1]:
            p.update(ocsvm_gamma_kind="value", ocsvm_gamma_value=float(g))
        else:
            return None  # "auto" or a gamma out of range
    ranges = {"n_neighbors": lim["n_neighbors"], "min_dist": MIN_DIST, "n_components": lim["n_components"],
              "dbscan_eps": DBSCAN_EPS, "dbscan_min_samples": DBSCAN_MIN_SAMPLES, "ocsvm_nu": OCSVM_NU}
    if any(k in p and not lo <= p[k] <= hi for k, (lo, hi) in ranges.items()):
        return None
    if "kmeans_k" in p and p["kmeans_k"] not in KMEANS_K:
        return None
    return p


def _check_tuned(tuned: dict[str, Any], method: str) -> dict[str, Any]:
    if method not in METHOD_KEYS:
        raise TuneError(f"unknown method {method!r}; choose from {METHODS}")
    want = set(UMAP_KEYS) | set(METHOD_KEYS[method])
    if set(tuned) != want:
        raise TuneError(f"tuned params for {method} must have exactly the keys {sorted(want)} (the 'params' of a "
                        f"best_params.json entry), got {sorted(tuned)}")
    return tuned


def apply_tuned(base: ClusteringParams, tuned: dict[str, Any], method: str) -> ClusteringParams:
    """`base` with the tuned knobs of one method replaced (validated by ClusteringParams)."""
    t = _check_tuned(dict(tuned), method)
    umap = {**base.umap.model_dump(), "n_neighbors": int(t.pop("n_neighbors")), "min_dist": float(t.pop("min_dist")),
            "n_components": int(t.pop("n_components"))}
    if isinstance(t.get("kmeans_k"), np.integer) or isinstance(t.get("dbscan_min_samples"), np.integer):
        t = {k: int(v) if isinstance(v, np.integer) else v for k, v in t.items()}
    # validated as params.yaml is: a tuned value outside the rules fails here, with the key named
    return ClusteringParams.model_validate({**base.model_dump(), "umap": umap,
                                            "standardize": bool(t.pop("standardize")), **t})


# --- the objective (val only) ----------------------------------------------------------------------------------

def embed_val(feats_val: np.ndarray, c: ClusteringParams, seed: int) -> np.ndarray:
    """Standardise and embed the val features with one UMAP fitted on val alone.

    The protocol's own embedding of val (`protocol.embed` fits on val alone), so the untuned trial sees the
    val embedding evaluate saw.
    """
    from zoofusion.core.protocol import embed

    return embed(feats_val, None, **c.umap_kwargs(), seed=seed)[0]


def ocsvm_cv_scores(emb: np.ndarray, y: np.ndarray, c: ClusteringParams, seed: int) -> dict[str, float]:
    """One-class SVM scored out-of-fold on val, exactly as evaluate scores it (`protocol.ocsvm_crossfit`, over
    `evaluate.clustering.ocsvm_val_folds` folds): the calls' metrics and the AUROC / average precision of the
    out-of-fold decision function."""
    from zoofusion.core.metrics import score_predictions
    from zoofusion.core.protocol import ocsvm_crossfit
    from zoofusion.core.scores import average_precision, balanced_accuracy, roc_auc

    pred, score = ocsvm_crossfit(emb, y, c.method_params(), seed)
    return {**score_predictions(y, pred), "balanced_accuracy": balanced_accuracy(y, pred),
            "auroc": roc_auc(y, score), "average_precision": average_precision(y, score)}


def metric_prefix(method: str) -> str:
    return f"val_cv/{method}" if method == "ocsvm" else f"val/{method}"


def val_scores(feats_val: np.ndarray, y_val: np.ndarray, method: str, tuned: dict[str, Any],
               base: ClusteringParams, seed: int) -> dict[str, float]:
    """All val metrics of one configuration (UMAP on val only; OCSVM cross-validated). `seed` is used as is."""
    from zoofusion.core.protocol import cluster_split

    c = apply_tuned(base, tuned, method)
    emb = embed_val(feats_val, c, seed)
    if method == "ocsvm":
        return ocsvm_cv_scores(emb, y_val, c, seed)
    return cluster_split(emb, y_val, method, c.method_params(), seed)


# --- studies ---------------------------------------------------------------------------------------------------

def _engine_kwargs(url: str) -> dict | None:
    # Two workers (or other people's processes) may write one sqlite file; wait for its lock instead of failing.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None


def display_url(url: str) -> str:
    """The storage URL with any password masked (for logs and MLflow); `env:<VAR>` as it is."""
    from sqlalchemy.engine import make_url

    if url.startswith("env:"):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return "<unparsable>"


def storage_url(storage: str) -> str:
    """`tune.storage` as a URL: `env:<VAR>` reads it from the environment at run time, so a password never enters
    params.yaml, dvc.lock or MLflow (which see only `env:<VAR>`)."""
    if not storage.startswith("env:"):
        return storage
    name = storage.removeprefix("env:")
    url = os.environ.get(name, "")
    if not url:
        raise ConfigError(f"tune.storage: {storage}, but the environment variable {name} is not set; export it "
                          f"(e.g. eval \"$(scripts/services.sh start)\") or name a URL")
    return url


def check_storage(url: str):
    """Open (and create the tables of) the Optuna RDB storage now, so a bad URL fails before any work."""
    from sqlalchemy.engine import make_url

    hint = "use an RDB URL such as sqlite:///optuna.db (relative to the cwd) or postgresql+psycopg2://user:password@host/db"
    try:
        u = make_url(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy raises several kinds
        raise ConfigError(f"tune.storage: {url!r} is not a database URL ({e}); {hint}") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        parent = Path(u.database).parent
        if not parent.is_dir():
            raise ConfigError(f"tune.storage: folder {parent} of sqlite file {u.database} does not exist; {hint}")
    import optuna

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as e:  # noqa: BLE001 - driver missing, server down, bad credentials...
        raise ConfigError(f"tune.storage: cannot open {display_url(url)}: {type(e).__name__}: {e}; {hint}") from None


def make_sampler(tp: TuneParams, seed: int, study: Study):
    import optuna

    s = derive_seed(seed, "tune", study.method, study.candidate)
    if tp.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s)
    # A quick budget (12 trials) would be all start-up trials with TPE's default of 10; a third of the budget
    # is random start-up, the rest guided.
    return optuna.samplers.TPESampler(seed=s, n_startup_trials=max(2, min(10, tp.n_trials // 3)))


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000) if dt is not None else int(time.time() * 1000)


def run_study(task: tuple, shared: None = None) -> dict:
    """Run one study to completion (in this process) and return its trials as plain data."""
    import optuna

    study, feats, y, tp, base, seed, storage_url = task
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=_engine_kwargs(storage_url))
    # Start from an empty study: TPE conditions on every finished trial of the study, so resuming one left by an
    # earlier run would make this run's trials (and best params) depend on how often the stage ran before.
    # Deleting it first makes a rerun of the stage reproduce the same trials from the same params.
    try:
        optuna.delete_study(study_name=study.name, storage=storage)
    except KeyError:
        pass
    opt = optuna.create_study(study_name=study.name, storage=storage, direction="maximize",
                              sampler=make_sampler(tp, seed, study))
    for k, v in {"method": study.method, "candidate": study.candidate, "kind": study.kind,
                 "objective": objective_of(study.method)}.items():
        opt.set_user_attr(k, v)
    n_val = len(y)
    start = to_optuna(untuned(base, study.method), n_val)
    if start is not None:
        opt.enqueue_trial(start, user_attrs={"untuned": True})
    tseed = derive_seed(seed, "tune")

    def objective(trial) -> float:
        m = val_scores(feats, y, study.method, suggest(trial, study.method, n_val), base, tseed)
        trial.set_user_attr("metrics", m)
        # Each cluster takes its majority class on the very points it scores, so many tiny clusters would
        # score well by construction (DBSCAN found 49 on 299 points); such trials count as failures.
        if m.get("n_clusters", 0) > tp.max_clusters:
            return 0.0
        return m[objective_of(study.method)]

    opt.optimize(objective, n_trials=tp.n_trials)
    done = [t for t in opt.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # best = highest value, earliest trial on ties (accuracies are multiples of 1/n_val, so ties are common and
    # the storage's own best_trial does not promise which tied trial it returns)
    best = min(done, key=lambda t: (-t.value, t.number))
    trials = [{"number": t.number, "params": resolve(t.params), "value": float(t.value),
               "metrics": t.user_attrs["metrics"], "untuned": bool(t.user_attrs.get("untuned")),
               "start_ms": _ms(t.datetime_start), "end_ms": _ms(t.datetime_complete)} for t in done]
    return {"method": study.method, "candidate": study.candidate, "kind": study.kind, "study": study.name,
            "n_trials": len(done), "best_value": float(best.value), "best_params": resolve(best.params),
            "best_trial": best.number, "best_metrics": best.user_attrs["metrics"],
            "untuned_value": trials[0]["value"] if trials[0]["untuned"] else None, "seconds": time.perf_counter() - t0, "trials": trials}


def validate_val(feats: dict[str, np.ndarray], y_val: np.ndarray, folds: int) -> np.ndarray:
    y = np.asarray(y_val)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise TuneError("y_val must be a 1-d array of 0/1 labels (1 = black cat)")
    space_limits(len(y))
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < folds or n_neg < 1:
        raise TuneError(f"val has {n_pos} black cats and {n_neg} others; tuning needs both classes and at least "
                        f"{folds} black cats (the One-class SVM is cross-fitted over evaluate.clustering."
                        f"ocsvm_val_folds={folds} folds)")
    for cid, f in feats.items():
        f = np.asarray(f)
        if f.ndim != 2 or f.shape[0] != len(y):
            raise TuneError(f"features of {cid!r} must be (n_val={len(y)}, n_features), got shape {f.shape}")
        if not np.isfinite(f).all():
            raise TuneError(f"features of {cid!r} contain NaN or inf; fix the feature extractor before tuning")
    return y.astype(np.int64)


def tune_all(studies: Sequence[Study], feats: dict[str, np.ndarray], y_val: np.ndarray, tp: TuneParams,
             base: ClusteringParams, seed: int, workers: int = 1,
             on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every study (val features only) and return their results in `studies` order.

    All inputs are checked, and the storage opened, before the first UMAP; `on_result` sees each result as it
    arrives (in order). With workers > 1 the studies are spread over that many processes; results do not depend
    on `workers`.
    """
    bad = sorted({s.method for s in studies} - set(METHODS))
    if bad:
        raise TuneError(f"unknown method(s) {bad}; choose from {METHODS}")
    missing = sorted({s.candidate for s in studies} - set(feats))
    if missing:
        raise TuneError(f"no features for candidate(s) {missing}")
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise TuneError(f"duplicate studies: {sorted({n for n in names if names.count(n) > 1})}")
    y = validate_val({s.candidate: feats[s.candidate] for s in studies}, y_val, base.ocsvm_val_folds)
    url = storage_url(tp.storage)
    check_storage(url)
    tasks = [(s, np.asarray(feats[s.candidate]), y, tp, base, seed, url) for s in studies]
    bar = progress(total=len(tasks), desc="tune", unit="study")
    results = []

    def take(r: dict) -> None:
        results.append(r)
        bar.update(1)
        if on_result is not None:
            on_result(r)

    for r in run_tasks(run_study, tasks, workers):
        take(r)
    bar.close()
    return results


# --- the protocol with tuned params (for the report) -----------------------------------------------------------

def tuned_evaluation(base: ClusteringParams, seed: int, best_params_for_method: dict[str, Any], method: str,
                     feats_val: np.ndarray, y_val: np.ndarray, feats_test: np.ndarray,
                     y_test: np.ndarray) -> dict[str, float]:
    """The full protocol (UMAP on val ∪ test, as evaluate runs it, with evaluate's seed) for one method with
    tuned params (the rest from `base`, evaluate's clustering; `seed` the params.yaml seed); returns
    `<split>/<method>/<metric>` for val and test.

    `best_params_for_method` is an entry of best_params.json (e.g. `["methods"]["kmeans"]["candidates"][id]`) or its
    `params`. With :func:`untuned` params it reproduces evaluate's numbers, so tuned and untuned test scores
    differ only by the params.
    """
    from zoofusion.core.protocol import evaluate_features

    tuned = best_params_for_method.get("params", best_params_for_method)
    c = apply_tuned(base, tuned, method)
    ev = evaluate_features(feats_val, y_val, feats_test, y_test, **c.umap_kwargs(), p=c.method_params(),
                           seed=derive_seed(seed, "evaluate"), methods=(method,))
    return ev.metrics
