"""params.yaml as typed, frozen, validated objects (pydantic), loaded once before any work starts.

Every knob of the pipeline lives in params.yaml; a stage receives `Params` and reads its own section. An unknown
key, a wrong type, a negative size or an impossible combination raises `ConfigError` with one line naming the key
and what is allowed. Each rule lives in one place: plain ranges here, as field constraints; the rules of a
science object (the CycleGAN's betas, the clustering methods' knobs) in that object in `zoofusion.core`, which
the section below builds once to check them (`_core_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.types import Strict

DOMAINS = ("black", "cat")
VARIANTS = ("study", "aligned")  # translation variants, each its own cyclegan@<variant> / generate@<variant>
METHODS = ("kmeans", "dbscan", "ocsvm")
METRICS = ("accuracy", "precision", "recall", "entropy", "purity")

# YAML types, strictly: an int is never a bool or a string; a float may be written as an int.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Pos = Annotated[int, Strict(), Field(gt=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
NonNeg = Annotated[int, Strict(), Field(ge=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
Fraction = Annotated[float, Strict(), Field(gt=0, lt=1)]
ClosedFraction = Annotated[float, Strict(), Field(ge=0, le=1)]


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown or out of range."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _core_check(build) -> None:
    """Run a core object's own validation; its ValueError becomes the field's error."""
    try:
        build()
    except ValueError as e:
        raise ValueError(str(e)) from None


class NegativeMix(Section):
    """Proportions of the three kinds of 'other' images in val/test (they must sum to 1)."""

    nonblack_cat: NonNegFloat = 0.4
    dark_noncat: NonNegFloat = 0.3
    random: NonNegFloat = 0.3

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.nonblack_cat + self.dark_noncat + self.random
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"nonblack_cat+dark_noncat+random: must sum to 1, got {total:g}")
        return self


class DataParams(Section):
    source: Literal["folder", "cifar10"] = "folder"
    path: Str = "../shared/data/cifar10-jpg.tar.gz"
    labels: Str = "../shared/data/blackcat_labels_train.csv"
    cat_class: Str = "cat"
    dark_luminance: Annotated[int, Strict(), Field(gt=0, le=255)] = 70
    darkness_threshold: Fraction = 0.6
    black_positive: Pos = 600
    black_negative: Pos = 600
    cat_positive: Pos = 600
    cat_negative: Pos = 600
    val_fraction: Fraction = 0.5
    negatives_per_positive: PosFloat = 2.0
    negative_mix: NegativeMix = NegativeMix()
    nonblack_cat_max_darkness: ClosedFraction = 0.15
    sheet_per_class: Pos = 40

    @model_validator(mode="after")
    def _dark_differs_from_light(self):
        if self.nonblack_cat_max_darkness >= self.darkness_threshold:
            raise ValueError(f"nonblack_cat_max_darkness: must be below darkness_threshold ({self.darkness_threshold}) "
                             "so 'non-black' and 'dark' differ")
        return self


class TestsetParams(Section):
    manifest: Str = ""  # CSV of `path,label`; "" keeps the test split built by the data stage


class DomainSizes(Section):
    black: Pos = 12
    cat: Pos = 12


class ZooParams(Section):
    n_models: DomainSizes = DomainSizes()
    epochs: Pos = 20
    batch_size: Pos = 128
    lr: PosFloat = 0.01
    val_fraction: Fraction = 0.2
    group_size: Pos = 8  # the largest group of models trained as one network (batched_g*, shared_g*)
    shard_size: Pos = 16
    workers: Pos = 2
    grid_models: NonNeg = 4
    data_order: Literal["own", "shared"] = "own"  # own: a model's seed fixes its data order (the study); shared: a
    #                                               shard's models walk one order (faster path, other models)
    path: Str = "auto"  # auto: the fastest path calibrated on this machine; or single, batched_g<N>, shared_g<N>

    @model_validator(mode="after")
    def _group_fits_shard(self):
        if self.group_size > self.shard_size:
            raise ValueError(f"group_size: must be <= zoo.shard_size ({self.shard_size}), got {self.group_size}")
        if self.path != "auto":
            from zoofusion.core.train import path_data_orders

            _core_check(lambda: path_data_orders(self.path))
            if self.data_order not in path_data_orders(self.path):
                raise ValueError(f"path: {self.path} cannot train data_order {self.data_order}; use auto or a path "
                                 f"that can ({'shared_g<N>' if self.data_order == 'shared' else 'single, batched_g<N>'})")
        return self


class KernelsParams(Section):
    min_val_accuracy: ClosedFraction = 0.6


class CycleGANParams(Section):
    epochs: Pos = 200
    batch_size: Pos = 64
    lr: PosFloat = 0.0002
    beta1: Float = 0.5
    beta2: Float = 0.999
    hidden: Pos = 32
    lambda_cycle: NonNegFloat = 10.0
    lambda_identity: NonNegFloat = 5.0
    checkpoint_every: Pos = 20
    grid_every: Pos = 50
    max_loss: PosFloat = 10000.0

    @model_validator(mode="after")
    def _core_rules(self):
        from zoofusion.core.cyclegan import CycleGANConfig

        # the fields other sections decide get valid stand-ins: this checks only this section's values
        _core_check(lambda: CycleGANConfig(**self.core_kwargs(), seed=0, device="cpu", arch="volume",
                                           lr_decay=False, disc_output="sigmoid", pool_size=0))
        return self

    def core_kwargs(self) -> dict[str, Any]:
        """The CycleGANConfig arguments these params decide (seed and device come from the top level)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "betas": (self.beta1, self.beta2),
                "hidden": self.hidden, "lambda_cycle": self.lambda_cycle, "lambda_identity": self.lambda_identity,
                "checkpoint_every": self.checkpoint_every, "max_loss": self.max_loss}


class VariantParams(Section):
    """One way to translate zoo kernels: which kernels, which CycleGAN, which training details.

    align: channels in the canonical order of one reference model (kernels/aligned) instead of as trained;
    translate: `layers`, one CycleGAN per conv layer (the study's Conv3d volume networks), or `pair`, one CycleGAN
    for a model's conv1 and conv2 together (core/pair.py: conv2's input slices stay matched to conv1's channels);
    lr_decay: constant lr for the first half of the epochs, then linearly to 0; disc_output: the discriminator's
    scores through a sigmoid (the study) or raw (the reference CycleGAN's least squares); pool_size: image pool
    of generated samples for the discriminators (0 = none; the reference: 50).
    """

    align: Bool = False
    translate: Literal["layers", "pair"] = "layers"
    lr_decay: Bool = False
    disc_output: Literal["sigmoid", "raw"] = "sigmoid"
    pool_size: NonNeg = 0

    def core_kwargs(self) -> dict[str, Any]:
        """The CycleGANConfig arguments this variant decides."""
        return {"arch": "set" if self.translate == "pair" else "volume", "lr_decay": self.lr_decay,
                "disc_output": self.disc_output, "pool_size": self.pool_size}


class TranslationParams(Section):
    """The translation variants `dvc repro` makes side by side (names fixed: dvc.yaml lists them)."""

    study: VariantParams = VariantParams()
    aligned: VariantParams = VariantParams(align=True, translate="pair", lr_decay=True, disc_output="raw",
                                           pool_size=50)

    def variant(self, name: str) -> VariantParams:
        if name not in VARIANTS:
            raise ConfigError(f"translation variant must be one of {', '.join(VARIANTS)}, got {name!r}")
        return getattr(self, name)


class GenerateParams(Section):
    max_per_domain: NonNeg = 0  # 0 = every source model that passed the zoo's accuracy floor
    bias: Literal["source", "zero"] = "source"


class UmapParams(Section):
    n_neighbors: Annotated[int, Strict(), Field(ge=2)] = 15
    min_dist: ClosedFraction = 0.1
    n_components: Pos = 2
    metric: Str = "euclidean"


class ClusteringParams(Section):
    standardize: Bool = True
    umap: UmapParams = UmapParams()
    kmeans_k: Int = 2
    kmeans_n_init: Int = 10
    dbscan_eps: Float = 3.0
    dbscan_min_samples: Int = 3
    ocsvm_kernel: Str = "rbf"
    ocsvm_nu: Float = 0.1
    ocsvm_gamma: Str | Float = "scale"

    @model_validator(mode="after")
    def _core_rules(self):
        _core_check(self.method_params)
        return self

    def gamma(self) -> str | float:
        g = self.ocsvm_gamma
        if isinstance(g, str) and g not in ("scale", "auto"):
            try:
                return float(g)
            except ValueError:
                return g  # the core's check names it
        return g

    def method_params(self):
        """The protocol's MethodParams (its constructor holds the rules of the three methods)."""
        from zoofusion.core.protocol import MethodParams

        return MethodParams(kmeans_k=self.kmeans_k, kmeans_n_init=self.kmeans_n_init, dbscan_eps=self.dbscan_eps,
                            dbscan_min_samples=self.dbscan_min_samples, ocsvm_kernel=self.ocsvm_kernel,
                            ocsvm_nu=self.ocsvm_nu, ocsvm_gamma=self.gamma())

    def umap_kwargs(self) -> dict:
        u = self.umap
        return {"standardize": self.standardize, "n_neighbors": u.n_neighbors, "min_dist": u.min_dist,
                "n_components": u.n_components, "metric": u.metric}


class EvaluateParams(Section):
    clustering: ClusteringParams = ClusteringParams()
    select_metric: Str = "val/kmeans/accuracy"
    n_selected: Pos = 3
    budget: NonNeg = 0  # candidates per kind, generated and every baseline alike; 0 = as many as generated models
    n_boot: Annotated[int, Strict(), Field(ge=100)] = 1000  # bootstrap resamples of the test images per interval
    feature_batch: Pos = 256
    workers: Pos = 2

    @field_validator("select_metric")
    @classmethod
    def _val_only(cls, v: str) -> str:
        parts = v.split("/")
        if not (len(parts) == 3 and parts[0] == "val" and parts[1] in METHODS and parts[2] in METRICS):
            raise ValueError(f"must be val/<{'|'.join(METHODS)}>/<{'|'.join(METRICS)}> (selection uses val only), "
                             f"got {v!r}")
        return v


class TuneParams(Section):
    n_trials: Pos = 12
    sampler: Literal["tpe", "random"] = "tpe"
    # balanced accuracy: chance is 0.5 at any share of black cats (accuracy rewards calling everything "other")
    objective: Literal["balanced_accuracy", "accuracy", "precision", "recall", "purity"] = "balanced_accuracy"
    storage: Str = "sqlite:///optuna.db"
    top_models: Pos = 2
    methods: tuple[Literal["kmeans", "dbscan", "ocsvm"], ...] = METHODS
    max_clusters: Annotated[int, Strict(), Field(ge=2)] = 3  # majority mapping on the scored points: more inflate
    workers: Pos = 2

    @field_validator("methods", mode="before")
    @classmethod
    def _list(cls, v):
        if isinstance(v, list):
            v = tuple(v)
        if v == ():
            raise ValueError(f"must be a non-empty subset of {METHODS}, got []")
        return v


class ExecutorParams(Section):
    backend: Literal["local", "ray"] = "local"  # where zoo shards and evaluate's candidates run
    address: Str = ""  # ray: a cluster to join ("" = RAY_ADDRESS, else a local instance)


class Params(Section):
    seed: NonNeg = 42
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    data: DataParams = DataParams()
    testset: TestsetParams = TestsetParams()
    zoo: ZooParams = ZooParams()
    kernels: KernelsParams = KernelsParams()
    cyclegan: CycleGANParams = CycleGANParams()
    translation: TranslationParams = TranslationParams()
    generate: GenerateParams = GenerateParams()
    evaluate: EvaluateParams = EvaluateParams()
    tune: TuneParams = TuneParams()
    executor: ExecutorParams = ExecutorParams()

    @model_validator(mode="after")
    def _cross_sections(self):
        if self.tune.top_models > self.evaluate.n_selected:
            raise ValueError(f"tune.top_models: must be <= evaluate.n_selected ({self.evaluate.n_selected}), "
                             f"got {self.tune.top_models}; only the models selected on val are tuned")
        return self

    def torch_device(self) -> str:
        """`device` as torch names it; `cuda` on a machine without one is refused here, before any work."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda, but torch sees no CUDA GPU on this machine; set device: cpu "
                              "(or auto) in params.yaml")
        return self.device


def _key(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _one_line(err: dict, raw: dict) -> str:
    """pydantic's first error as `key: what is allowed, got value` (one line, the wording users know)."""
    loc, typ, value = tuple(err["loc"]), err["type"], err.get("input")
    key = _key(loc)
    if typ == "extra_forbidden":
        model = Params
        for part in loc[:-1]:
            model = model.model_fields[part].annotation
        where = _key(loc[:-1]) or "params.yaml"
        return f"{key}: unknown key (allowed under {where}: {', '.join(model.model_fields)})"
    if typ == "literal_error":
        return f"{key}: expected one of {err['ctx']['expected'].replace(' or ', ', ')}, got {value!r}"
    if typ in ("int_type", "int_parsing", "int_from_float"):
        return f"{key}: expected int, got {value!r}"
    if typ in ("float_type", "float_parsing"):
        return f"{key}: expected float, got {value!r}"
    if typ in ("bool_type", "bool_parsing"):
        return f"{key}: expected bool, got {value!r}"
    if typ in ("string_type",):
        return f"{key}: expected str, got {value!r}"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key or 'params.yaml'}: must be a mapping of keys, got {type(value).__name__}"
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(err["ctx"].values()))
        return f"{key}: must be {op} {bound}, got {value!r}"
    msg = err["msg"].removeprefix("Value error, ")
    # a model-level rule names its own key ("group_size: ..."): prefix the section only
    return f"{key + '.' if key else ''}{msg}" if ":" in msg.split(" ")[0] else f"{key}: {msg}"


def parse_params(raw: dict) -> Params:
    """Build and validate `Params` from an already-parsed params.yaml mapping."""
    if raw is None:
        raw = {}
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(e.errors(include_url=False)[0], raw)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load params.yaml once; every stage calls this first, before any expensive work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root, or pass --params PATH)")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return parse_params(raw)
