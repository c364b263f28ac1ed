"""params.yaml as typed, frozen, validated objects (pydantic), loaded once before any work starts.

Every knob of the pipeline lives in params.yaml, and its value lives there ONLY: the models below declare types and
rules but no defaults, so every field is required and a key missing from params.yaml is an error naming it (a
default here would be a second profile that silently disagrees with the file). A stage receives `Params` and reads
its own section. A missing or unknown key, a duplicated key, a wrong type, a negative size, a string outside its
allowed values or an impossible combination raises `ConfigError` with one line naming the key and what is allowed.
Each rule lives in one place: plain ranges and enumerations here, as field constraints; the rules of a science
object (the CycleGAN's betas, the clustering methods' knobs, UMAP's metrics) in that object in `zoofusion.core`,
which the section below builds or consults to check them (`_core_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.types import Strict

DOMAINS = ("black", "cat")
VARIANTS = ("study", "aligned")  # translation variants: units in the one cyclegan stage, each its own generate@<variant>
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
    """A params.yaml mapping: frozen, no unknown keys, and no field defaults (the values live in params.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _core_check(build) -> None:
    """Run a core object's own validation; its ValueError becomes the field's error."""
    try:
        build()
    except ValueError as e:
        raise ValueError(str(e)) from None


class NegativeMix(Section):
    """Proportions of the three kinds of 'other' images in val/test (they must sum to 1)."""

    nonblack_cat: NonNegFloat
    dark_noncat: NonNegFloat
    random: NonNegFloat

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.nonblack_cat + self.dark_noncat + self.random
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"nonblack_cat+dark_noncat+random: must sum to 1, got {total:g}")
        return self


class DataParams(Section):
    source: Literal["folder", "cifar10"]
    path: Str
    labels: Str
    cat_class: Str
    dark_luminance: Annotated[int, Strict(), Field(gt=0, le=255)]
    darkness_threshold: Fraction
    black_positive: Pos
    black_negative: Pos
    cat_positive: Pos
    cat_negative: Pos
    val_fraction: Fraction
    negatives_per_positive: PosFloat
    negative_mix: NegativeMix
    nonblack_cat_max_darkness: ClosedFraction
    sheet_per_class: Pos
    near_copy_bits: NonNeg  # pHash bits within which two images count as copies (64 bits; 0 = identical pHash)

    @model_validator(mode="after")
    def _dark_differs_from_light(self):
        if self.nonblack_cat_max_darkness >= self.darkness_threshold:
            raise ValueError(f"nonblack_cat_max_darkness: must be below darkness_threshold ({self.darkness_threshold}) "
                             "so 'non-black' and 'dark' differ")
        return self


class TestsetParams(Section):
    manifest: Str  # CSV of `path,label`; "" keeps the test split built by the data stage


class DomainSizes(Section):
    black: Pos
    cat: Pos


class ZooParams(Section):
    n_models: DomainSizes
    epochs: Pos
    batch_size: Pos
    lr: PosFloat
    val_fraction: Fraction
    group_size: Pos  # the largest group of models trained as one network (batched_g*, shared_g*)
    shard_size: Pos
    workers: Pos
    grid_models: NonNeg
    data_order: Literal["own", "shared"]  # own: a model's seed fixes its data order (the study); shared: a
    #                                     shard's models walk one order (faster path, other models)
    path: Str  # single, batched_g<N>, shared_g<N>: a param, since paths differ in float rounding

    @model_validator(mode="after")
    def _group_fits_shard(self):
        if self.group_size > self.shard_size:
            raise ValueError(f"group_size: must be <= zoo.shard_size ({self.shard_size}), got {self.group_size}")
        from zoofusion.core.train import path_data_orders

        if self.path == "auto":  # a stopwatch may not decide the arithmetic (paths differ in float rounding)
            raise ValueError("path: 'auto' is no longer allowed: name the training path (single, batched_g<N> or "
                             "shared_g<N>); `python -m zoofusion.bench zoo` prints the fastest on this machine")
        _core_check(lambda: path_data_orders(self.path))
        if self.data_order not in path_data_orders(self.path):
            raise ValueError(f"path: {self.path} cannot train data_order {self.data_order}; use a path that can "
                             f"({'shared_g<N>' if self.data_order == 'shared' else 'single, batched_g<N>'})")
        return self


class KernelsParams(Section):
    min_val_accuracy: ClosedFraction


class ControlParams(Section):
    """The positive control (stage `control`, steps/control.py): LeNets trained on weakly labelled dark cats vs
    other images of the image source's test/ split, outside val and test."""

    n_models: Pos  # LeNets trained; evaluate draws min(evaluate.budget, n_models) of them per control kind
    positive_min_darkness: Fraction  # a cat at least this dark is a positive ("dark cat", the black-cat proxy)
    negatives_per_positive: PosFloat  # negatives sampled per positive

class CycleGANParams(Section):
    epochs: Pos
    batch_size: Pos
    lr: PosFloat
    beta1: Float
    beta2: Float
    hidden: Pos
    lambda_cycle: NonNegFloat
    lambda_identity: NonNegFloat
    checkpoint_every: Pos
    grid_every: Pos
    max_loss: PosFloat
    workers: Pos  # processes training units side by side (one thread each); never changes the arithmetic

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

    align: Bool
    translate: Literal["layers", "pair"]
    lr_decay: Bool
    disc_output: Literal["sigmoid", "raw"]
    pool_size: NonNeg

    def core_kwargs(self) -> dict[str, Any]:
        """The CycleGANConfig arguments this variant decides."""
        return {"arch": "set" if self.translate == "pair" else "volume", "lr_decay": self.lr_decay,
                "disc_output": self.disc_output, "pool_size": self.pool_size}


class TranslationParams(Section):
    """The translation variants `dvc repro` makes side by side (names fixed: dvc.yaml lists them)."""

    study: VariantParams
    aligned: VariantParams

    def variant(self, name: str) -> VariantParams:
        if name not in VARIANTS:
            raise ConfigError(f"translation variant must be one of {', '.join(VARIANTS)}, got {name!r}")
        return getattr(self, name)


class GenerateParams(Section):
    max_per_domain: NonNeg  # 0 = every source model that passed the zoo's accuracy floor
    bias: Literal["source", "zero"]


class UmapParams(Section):
    n_neighbors: Annotated[int, Strict(), Field(ge=2)]
    min_dist: ClosedFraction
    n_components: Pos
    metric: Str
    n_epochs: Annotated[int, Strict(), Field(ge=3)] | None  # None: umap-learn's own; test points get n_epochs // 3

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from zoofusion.core.protocol import UMAP_METRICS  # the protocol's list is the one source

        if v not in UMAP_METRICS:
            raise ValueError(f"expected one of {', '.join(map(repr, sorted(UMAP_METRICS)))}, got {v!r}")
        return v


class ClusteringParams(Section):
    standardize: Bool
    umap: UmapParams
    kmeans_k: Int
    kmeans_n_init: Int
    dbscan_eps: Float
    dbscan_min_samples: Int
    dbscan_eps_quantile: Float  # DBSCAN's val arm: eps from this quantile of the val k-distance curve
    ocsvm_kernel: Str
    ocsvm_nu: Float
    ocsvm_gamma: Str | Float
    ocsvm_val_folds: Int  # the SVM's val score is cross-fitted over this many folds
    probe_c: Float  # the linear probe's L2 regularisation (LogisticRegression C)
    probe_val_folds: Int  # the probe's val score is cross-fitted over this many folds

    @field_validator("ocsvm_gamma", mode="before")
    @classmethod
    def _gamma_type(cls, v):
        # only the type here (a bool or a list would read as a union error); the values are MethodParams' rule
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"must be a float > 0 or 'scale'/'auto', got {v!r}")
        return v

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
                            ocsvm_nu=self.ocsvm_nu, ocsvm_gamma=self.gamma(),
                            dbscan_eps_quantile=self.dbscan_eps_quantile, ocsvm_val_folds=self.ocsvm_val_folds,
                            probe_c=self.probe_c, probe_val_folds=self.probe_val_folds)

    def umap_kwargs(self) -> dict:
        u = self.umap
        return {"standardize": self.standardize, "n_neighbors": u.n_neighbors, "min_dist": u.min_dist,
                "n_components": u.n_components, "metric": u.metric, "n_epochs": u.n_epochs}


class BaselineParams(Section):
    """The weight-generation literature's baselines (Zeng et al. 2025, arXiv 2506.07998; core/baselines.py).

    noise_sigmas: one kind `noise-<sigma>` per value, zoo models plus Gaussian noise of sigma times each conv
    tensor's own std ([] = none); average_k: models of one zoo aligned and averaged per `avg-k` candidate
    (clipped to the zoo's size)."""

    noise_sigmas: tuple[NonNegFloat, ...]
    average_k: Annotated[int, Strict(), Field(ge=2)]

    @field_validator("noise_sigmas", mode="before")
    @classmethod
    def _list(cls, v):
        return tuple(v) if isinstance(v, list) else v

    @field_validator("noise_sigmas")
    @classmethod
    def _distinct(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        from zoofusion.core.candidates import noise_kind

        names = [noise_kind(s) for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"must name distinct kinds (noise-<sigma>, 6 significant digits), got {list(v)} -> {names}")
        return v


class EvaluateParams(Section):
    clustering: ClusteringParams
    baselines: BaselineParams
    # every selection is on val by the method's verdict metric (core.selection.VERDICT_METRIC, the one place);
    # this names the method whose selection is selected.json's list, the champion and the figures
    select_method: Literal[METHODS]
    n_selected: Pos
    umap_seeds: NonNeg  # extra UMAP/clustering seeds stored for each best-on-val candidate (kind x method)
    budget: NonNeg  # candidates per kind, generated and every baseline alike; 0 = as many as generated models
    n_boot: Annotated[int, Strict(), Field(ge=100)]  # bootstrap resamples of the test images per interval
    feature_batch: Pos
    workers: Pos


class NoveltyParams(Section):
    """Stage `novelty` (steps/novelty.py): how near to a zoo model a candidate must lie to be called a near-copy.

    near_copy: a candidate whose aligned distance to its nearest zoo model is below this fraction of that zoo's
    typical distance between two of its models (the median) is a near-copy of that model."""

    near_copy: Fraction


class TuneParams(Section):
    n_trials: Pos
    sampler: Literal["tpe", "random"]
    # no objective knob: each study maximises its method's val verdict metric (core.selection.VERDICT_METRIC)
    storage: Str  # an RDB URL without a password, or env:<VAR> naming the variable that holds the URL
    top_models: Pos
    methods: tuple[Literal[METHODS], ...]
    max_clusters: Annotated[int, Strict(), Field(ge=2)]  # majority mapping on the scored points: more inflate
    workers: Pos

    @field_validator("storage")
    @classmethod
    def _no_secret(cls, v: str) -> str:
        from urllib.parse import urlsplit

        try:
            password = urlsplit(v).password
        except ValueError:
            password = None  # not a URL: the tune stage names what is wrong with it
        if password:
            raise ValueError("holds a password, which params.yaml would carry into dvc.lock, MLflow and the "
                             "reports; export the URL as OPTUNA_STORAGE and set tune.storage: env:OPTUNA_STORAGE")
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _list(cls, v):
        if isinstance(v, list):
            v = tuple(v)
        if v == ():
            raise ValueError(f"must be a non-empty subset of {METHODS}, got []")
        return v


class PrimaryParams(Section):
    """The one pre-registered question the report answers first (`verdict.primary`).

    metric/method: the verdict metric of one clustering method (auroc with kmeans or ocsvm, ari with dbscan: the
    metric `core.verdict` compares that method on). generated: the side under test, the best-on-val candidate
    over these generated kinds (`all`: every translation variant's generated models; or one `generated-<variant>`).
    comparator: the best-on-val candidate over these baseline kinds, chosen on val the same way (`all`: every
    baseline kind, so a baseline kind added later joins the comparator instead of adding a comparison; or one kind,
    checked in `Params`, since the noise kinds depend on evaluate.baselines.noise_sigmas).
    """

    metric: Literal["auroc", "ari"]
    method: Literal[METHODS]
    generated: Str
    comparator: Str

    @model_validator(mode="after")
    def _known(self):
        from zoofusion.core.candidates import generated_kind

        pairs = {"kmeans": "auroc", "ocsvm": "auroc", "dbscan": "ari"}  # core.verdict.VERDICT_METRIC
        if pairs[self.method] != self.metric:
            raise ValueError("metric: must be the method's verdict metric (allowed: "
                             + ", ".join(f"{m}/{k}" for k, m in pairs.items()) + f"), got {self.metric}/{self.method}")
        gen = ("all", *(generated_kind(v) for v in VARIANTS))
        if self.generated not in gen:
            raise ValueError(f"generated: expected one of {', '.join(map(repr, gen))}, got {self.generated!r}")
        return self

    def generated_kinds(self, kinds) -> tuple[str, ...]:
        """The kinds of the generated side among `kinds` (an evaluation's kinds)."""
        from zoofusion.core.candidates import is_generated

        return tuple(k for k in kinds if is_generated(k) and self.generated in ("all", k))

    def comparator_kinds(self, kinds) -> tuple[str, ...]:
        """The kinds of the comparator side among `kinds`: `all` is every rival (no generator, no labels), so the
        controls are named only one by one."""
        from zoofusion.core.candidates import is_control, is_generated

        return tuple(k for k in kinds if not is_generated(k)
                     and (k == self.comparator or (self.comparator == "all" and not is_control(k))))


class VerdictParams(Section):
    """The verdict's statistics: the primary endpoint, the secondary family Holm adjusts, the level and power.

    secondary_family: `best_on_val`: every best-on-val comparison (each generated kind vs each other kind, each
    method of every arm: UMAP, no UMAP, the linear probe); `best_on_val_and_means`: those and the kind-mean comparisons, one family. declared_in: the commit
    (short hash) in which `primary` was declared, written in a later commit; "" = not yet committed. The report
    checks it against git: the primary endpoint at that commit must equal this one.
    """

    primary: PrimaryParams
    secondary_family: Literal["best_on_val", "best_on_val_and_means"]
    alpha: Fraction
    power: Fraction
    declared_in: Str

    @field_validator("declared_in")
    @classmethod
    def _hash(cls, v: str) -> str:
        import re

        if v and not re.fullmatch(r"[0-9a-f]{7,40}", v):
            raise ValueError(f"must be a git commit hash (7-40 hex digits) or \"\" (not yet committed), got {v!r}")
        return v


class ExecutorParams(Section):
    backend: Literal["local", "ray"]  # where zoo shards and evaluate's candidates run
    address: Str  # ray: a cluster to join ("" = RAY_ADDRESS, else a local instance)
    time_limit_s: NonNeg  # seconds a stage may train before it stops cleanly (work done is kept); 0 = no limit


class ReplicateParams(Section):
    """`make replicate` (`python -m zoofusion.replicate`): the whole pipeline once per seed, each a queued DVC
    experiment (`dvc exp run --queue -S seed=<s> -S <key>=<value> ...`), aggregated into reports/replication.md.

    seeds: the pipeline seeds (at least 2, all different); profile: the `-S` overrides every replicate runs with,
    dotted keys of this file mapped to values (a reduced profile that fits the machine; {} = this file's own),
    checked here as the params they make. No stage reads this section."""

    seeds: Annotated[list[NonNeg], Field(min_length=2)]
    profile: dict[str, Any]

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"must all differ, got {v}")
        return v

    @field_validator("profile")
    @classmethod
    def _keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k == "seed" or k.split(".")[0] == "replicate":
                raise ValueError(f"{k}: not an override (the seed comes from replicate.seeds)")
        return v


class Params(Section):
    seed: NonNeg
    device: Literal["auto", "cpu", "cuda"]
    data: DataParams
    testset: TestsetParams
    zoo: ZooParams
    kernels: KernelsParams
    control: ControlParams
    cyclegan: CycleGANParams
    translation: TranslationParams
    generate: GenerateParams
    evaluate: EvaluateParams
    novelty: NoveltyParams
    tune: TuneParams
    verdict: VerdictParams
    executor: ExecutorParams
    replicate: ReplicateParams

    @model_validator(mode="after")
    def _cross_sections(self):
        from zoofusion.core.candidates import baseline_kinds

        base = ("all", *baseline_kinds(VARIANTS, self.evaluate.baselines.noise_sigmas))
        if self.verdict.primary.comparator not in base:
            raise ValueError(f"verdict.primary.comparator: expected one of {', '.join(map(repr, base))}, "
                             f"got {self.verdict.primary.comparator!r}")
        if self.control.positive_min_darkness <= self.data.nonblack_cat_max_darkness:
            raise ValueError(f"control.positive_min_darkness: must be above data.nonblack_cat_max_darkness "
                             f"({self.data.nonblack_cat_max_darkness}) so dark and light cats differ, got "
                             f"{self.control.positive_min_darkness}")
        if self.tune.top_models > self.evaluate.n_selected:
            raise ValueError(f"tune.top_models: must be <= evaluate.n_selected ({self.evaluate.n_selected}), "
                             f"got {self.tune.top_models}; only the models selected on val are tuned")
        return self

    def torch_device(self) -> str:
        """`device` as torch names it; `cuda` on a machine without one is refused here, before any work."""
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda, but torch sees no CUDA GPU on this machine; set device: cpu "
                              "(or auto) in params.yaml")
        from zoofusion.core.device import fp32_only

        fp32_only(device)
        return device


def _key(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _one_line(err: dict, raw: dict) -> str:
    """pydantic's first error as `key: what is allowed, got value` (one line, the wording users know)."""
    loc, typ, value = tuple(err["loc"]), err["type"], err.get("input")
    key = _key(loc)
    if typ == "missing":
        return f"{key}: missing (add it to params.yaml; see the quick profile in the repository's params.yaml)"
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


def _validate(raw: dict, where: str = "") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # a misspelt key is also a missing one: name the misspelling, whose message lists the keys allowed there
        first = next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])
        raise ConfigError(where + _one_line(first, raw)) from None


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """A copy of a params mapping with dotted keys replaced (`dvc exp run -S key=value`); every key must exist."""
    import copy

    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        node, parts = out, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{key}: no such key in params.yaml ({'.'.join(parts[:i]) or 'top level'} has "
                                  f"{', '.join(node) if isinstance(node, dict) else 'no keys'})")
            if i == len(parts) - 1:
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    return out


def parse_params(raw: dict) -> Params:
    """Build and validate `Params` from an already-parsed params.yaml mapping; every key must be there. The
    replicate profile's overrides must make valid params too (checked here, before any replicate is queued)."""
    if raw is None:
        raw = {}
    checked = _validate(raw)  # (not `params`: no stage reads the replicate section, tests/test_dvc_yaml.py)
    try:
        over = apply_overrides(raw, checked.replicate.profile)
    except ConfigError as e:
        raise ConfigError(f"replicate.profile.{e}") from None
    _validate(over, "replicate.profile makes invalid params: ")
    return checked


def _first_duplicate(node: yaml.Node, path: tuple[str, ...] = ()) -> tuple[str, int, int] | None:
    """The first key written twice in one mapping of a composed YAML tree: (dotted key, first line, second line)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            line = k.start_mark.line + 1
            if name in seen:
                return ".".join((*path, name)), seen[name], line
            seen[name] = line
            found = _first_duplicate(v, (*path, name))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _first_duplicate(item, (*path, str(i)))
            if found:
                return found
    return None


def read_yaml(path: str | Path) -> Any:
    """A YAML file as plain data, like yaml.safe_load, but a key written twice in one mapping is refused.

    PyYAML keeps the last of two equal keys without a word, so `epochs: 20` ... `epochs: 2` further down would
    silently win; here it is one line naming the key and both lines. Every reader of params.yaml uses this.
    """
    path = Path(path)
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        dup = _first_duplicate(node)
        if dup:
            key, first, second = dup
            raise ConfigError(f"{path}: duplicate key '{key}' at lines {first} and {second}; keep one")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    finally:
        loader.dispose()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load params.yaml once; every stage calls this first, before any expensive work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root, or pass --params PATH)")
    return parse_params(read_yaml(path) or {})
