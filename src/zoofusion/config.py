"""Typed, frozen view of params.yaml, loaded once and validated before any work starts.

Every knob of the pipeline lives in params.yaml; stages receive the relevant section of `Params`.
An unknown key, a wrong type, a negative size or an impossible combination raises `ConfigError`
with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DOMAINS = ("black", "cat")
METHODS = ("kmeans", "dbscan", "ocsvm")
METRICS = ("accuracy", "precision", "recall", "entropy", "purity")


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown or out of range."""


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        _require(getattr(obj, n) > 0, n, f"must be > 0, got {getattr(obj, n)!r}")


def _non_negative(obj: Any, *names: str) -> None:
    for n in names:
        _require(getattr(obj, n) >= 0, n, f"must be >= 0, got {getattr(obj, n)!r}")


def _fraction(obj: Any, *names: str, open_ends: bool = True) -> None:
    for n in names:
        v = getattr(obj, n)
        ok = 0 < v < 1 if open_ends else 0 <= v <= 1
        _require(ok, n, f"must be in {'(0, 1)' if open_ends else '[0, 1]'}, got {v!r}")


@dataclass(frozen=True)
class NegativeMix:
    """Proportions of the three kinds of 'other' images in val/test (they must sum to 1)."""

    nonblack_cat: float = 0.4
    dark_noncat: float = 0.3
    random: float = 0.3

    def __post_init__(self) -> None:
        _non_negative(self, "nonblack_cat", "dark_noncat", "random")
        total = self.nonblack_cat + self.dark_noncat + self.random
        _require(abs(total - 1.0) < 1e-6, "nonblack_cat+dark_noncat+random", f"must sum to 1, got {total:g}")


@dataclass(frozen=True)
class DataParams:
    source: Literal["folder", "cifar10"] = "folder"
    path: str = "../shared/data/cifar10-jpg.tar.gz"
    labels: str = "../shared/data/blackcat_labels_train.csv"
    cat_class: str = "cat"
    dark_luminance: int = 70
    darkness_threshold: float = 0.6
    black_positive: int = 600
    black_negative: int = 600
    cat_positive: int = 600
    cat_negative: int = 600
    val_fraction: float = 0.5
    negatives_per_positive: float = 2.0
    negative_mix: NegativeMix = field(default_factory=NegativeMix)
    nonblack_cat_max_darkness: float = 0.15
    sheet_per_class: int = 40

    def __post_init__(self) -> None:
        _positive(self, "black_positive", "black_negative", "cat_positive", "cat_negative",
                  "negatives_per_positive", "sheet_per_class")
        _require(0 < self.dark_luminance <= 255, "dark_luminance", f"must be in 1..255, got {self.dark_luminance}")
        _fraction(self, "darkness_threshold", "val_fraction")
        _fraction(self, "nonblack_cat_max_darkness", open_ends=False)
        _require(self.nonblack_cat_max_darkness < self.darkness_threshold, "nonblack_cat_max_darkness",
                 f"must be below darkness_threshold ({self.darkness_threshold}) so 'non-black' and 'dark' differ")


@dataclass(frozen=True)
class TestsetParams:
    manifest: str = ""  # CSV of `path,label`; "" keeps the test split built by the data stage


@dataclass(frozen=True)
class DomainSizes:
    black: int = 12
    cat: int = 12

    def __post_init__(self) -> None:
        _positive(self, "black", "cat")


@dataclass(frozen=True)
class ZooParams:
    n_models: DomainSizes = field(default_factory=DomainSizes)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.01
    val_fraction: float = 0.2
    group_size: int = 8
    shard_size: int = 16
    workers: int = 2
    grid_models: int = 4

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "group_size", "shard_size", "workers")
        _non_negative(self, "grid_models")
        _fraction(self, "val_fraction")


@dataclass(frozen=True)
class KernelsParams:
    min_val_accuracy: float = 0.6

    def __post_init__(self) -> None:
        _fraction(self, "min_val_accuracy", open_ends=False)


@dataclass(frozen=True)
class CycleGANParams:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    hidden: int = 32
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    checkpoint_every: int = 20
    grid_every: int = 50
    max_loss: float = 10000.0

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "lr", "hidden", "checkpoint_every", "grid_every", "max_loss")
        _non_negative(self, "lambda_cycle", "lambda_identity")
        _fraction(self, "beta1", "beta2", open_ends=False)


@dataclass(frozen=True)
class GenerateParams:
    max_per_domain: int = 0  # 0 = every source model that passed the zoo's accuracy floor
    bias: Literal["source", "zero"] = "source"

    def __post_init__(self) -> None:
        _non_negative(self, "max_per_domain")


@dataclass(frozen=True)
class UmapParams:
    n_neighbors: int = 15
    min_dist: float = 0.1
    n_components: int = 2
    metric: str = "euclidean"

    def __post_init__(self) -> None:
        _require(self.n_neighbors >= 2, "n_neighbors", f"must be >= 2, got {self.n_neighbors}")
        _positive(self, "n_components")
        _require(0 <= self.min_dist <= 1, "min_dist", f"must be in [0, 1], got {self.min_dist}")


@dataclass(frozen=True)
class ClusteringParams:
    standardize: bool = True
    umap: UmapParams = field(default_factory=UmapParams)
    kmeans_k: int = 2
    kmeans_n_init: int = 10
    dbscan_eps: float = 3.0
    dbscan_min_samples: int = 3
    ocsvm_kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"
    ocsvm_nu: float = 0.1
    ocsvm_gamma: str = "scale"

    def __post_init__(self) -> None:
        _require(self.kmeans_k in (2, 3), "kmeans_k", f"must be 2 or 3 (the study's choices), got {self.kmeans_k}")
        _positive(self, "kmeans_n_init", "dbscan_eps", "dbscan_min_samples")
        _require(0 < self.ocsvm_nu <= 1, "ocsvm_nu", f"must be in (0, 1], got {self.ocsvm_nu}")
        g = self.ocsvm_gamma
        ok = g in ("scale", "auto")
        if not ok:
            try:
                ok = float(g) > 0
            except ValueError:
                ok = False
        _require(ok, "ocsvm_gamma", f"must be 'scale', 'auto' or a positive number, got {g!r}")

    def gamma(self) -> str | float:
        return self.ocsvm_gamma if self.ocsvm_gamma in ("scale", "auto") else float(self.ocsvm_gamma)


@dataclass(frozen=True)
class EvaluateParams:
    clustering: ClusteringParams = field(default_factory=ClusteringParams)
    select_metric: str = "val/kmeans/accuracy"
    n_selected: int = 3
    baseline_models: int = 4
    max_models: int = 0  # 0 = every generated model
    feature_batch: int = 256
    workers: int = 2

    def __post_init__(self) -> None:
        _positive(self, "n_selected", "baseline_models", "feature_batch", "workers")
        _non_negative(self, "max_models")
        parts = self.select_metric.split("/")
        ok = len(parts) == 3 and parts[0] == "val" and parts[1] in METHODS and parts[2] in METRICS
        _require(ok, "select_metric",
                 f"must be val/<{'|'.join(METHODS)}>/<{'|'.join(METRICS)}> (selection uses val only), "
                 f"got {self.select_metric!r}")


@dataclass(frozen=True)
class TuneParams:
    n_trials: int = 12
    sampler: Literal["tpe", "random"] = "tpe"
    objective: Literal["accuracy", "precision", "recall", "purity"] = "accuracy"
    storage: str = "sqlite:///optuna.db"
    top_models: int = 2
    methods: tuple[str, ...] = METHODS
    max_clusters: int = 3  # the majority mapping is fit on the scored points: more clusters inflate accuracy
    workers: int = 2

    def __post_init__(self) -> None:
        _positive(self, "n_trials", "top_models", "workers")
        _require(self.max_clusters >= 2, "max_clusters", f"must be >= 2, got {self.max_clusters}")
        bad = [m for m in self.methods if m not in METHODS]
        _require(not bad and len(self.methods) > 0, "methods", f"must be a non-empty subset of {METHODS}, got {self.methods}")


@dataclass(frozen=True)
class Params:
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    data: DataParams = field(default_factory=DataParams)
    testset: TestsetParams = field(default_factory=TestsetParams)
    zoo: ZooParams = field(default_factory=ZooParams)
    kernels: KernelsParams = field(default_factory=KernelsParams)
    cyclegan: CycleGANParams = field(default_factory=CycleGANParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tune: TuneParams = field(default_factory=TuneParams)

    def __post_init__(self) -> None:
        _non_negative(self, "seed")

    def torch_device(self) -> str:
        """Resolve `device: auto` to cuda when available."""
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and lightly coerce) a YAML value against a field type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp), value
    if origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return True, tuple(value)
        return False, value
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a)[0] for a in typing.get_args(tp)), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    return isinstance(value, tp), value


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings"
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "params.yaml"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key "
                          f"(allowed under {where}: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp, value = hints[name], data[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        ok, value = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {data[name]!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{e}") from None


def parse_params(raw: dict) -> Params:
    """Build and validate `Params` from an already-parsed params.yaml mapping."""
    params = _build(Params, raw, "")
    # Cross-section checks: these combinations cannot work.
    if params.tune.top_models > params.evaluate.n_selected:
        raise ConfigError(f"tune.top_models: must be <= evaluate.n_selected ({params.evaluate.n_selected}), "
                          f"got {params.tune.top_models}; only the models selected on val are tuned")
    z = params.zoo
    if z.group_size > z.shard_size:
        raise ConfigError(f"zoo.group_size: must be <= zoo.shard_size ({z.shard_size}), got {z.group_size}")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load params.yaml once; every stage calls this first, before any expensive work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root, or pass --params PATH)")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return parse_params(raw)
