import dataclasses
import re

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from conftest import ROOT, make_params, params_dict
from zoofusion.config import ConfigError, Params, Section, load_params, parse_params, read_yaml
from zoofusion.core.protocol import _OCSVM_KERNELS, UMAP_METRICS, MethodParams

MISSING = "missing (add it to params.yaml; see the quick profile in the repository's params.yaml)"


def test_repo_params_load_and_match_study_defaults():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    # The study's defaults live in params.yaml.
    assert (p.zoo.epochs, p.zoo.batch_size, p.zoo.lr) == (20, 128, 0.01)
    assert (p.cyclegan.batch_size, p.cyclegan.lr, p.cyclegan.beta1, p.cyclegan.beta2) == (64, 0.0002, 0.5, 0.999)
    c = p.evaluate.clustering
    assert (c.dbscan_eps, c.dbscan_min_samples, c.ocsvm_kernel, c.ocsvm_nu, c.ocsvm_gamma) == (3.0, 3, "rbf", 0.1, "scale")


# --- defaults live in params.yaml only ----------------------------------------------------------------------------

def _models(model: type[BaseModel], seen: dict) -> dict:
    """Every pydantic model reachable from `model` through its fields, by name."""
    seen[model.__name__] = model
    for f in model.model_fields.values():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) and f.annotation.__name__ not in seen:
            _models(f.annotation, seen)
    return seen


def test_config_has_no_defaults_of_its_own():
    models = _models(Params, {})
    # the walk reaches every section config defines, so none escapes the check below
    assert set(models) == {m.__name__ for m in Section.__subclasses__()}
    with_default = [f"{name}.{k}" for name, m in models.items() for k, f in m.model_fields.items()
                    if not f.is_required()]
    assert with_default == []
    assert [f.name for f in dataclasses.fields(MethodParams)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING] == []
    with pytest.raises(TypeError):
        MethodParams()  # type: ignore[call-arg]


FREE_MAPPINGS = {("replicate", "profile")}  # mappings of the user's own keys (dotted params -> values): one field


def _leaves(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        nested = isinstance(v, dict) and v and (*prefix, k) not in FREE_MAPPINGS
        out += _leaves(v, (*prefix, k)) if nested else [(*prefix, k)]
    return out


LEAVES = _leaves(read_yaml(ROOT / "params.yaml"))


def _model_leaves(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, f in model.model_fields.items():
        sub = isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
        out += _model_leaves(f.annotation, (*prefix, k)) if sub else [(*prefix, k)]
    return out


def test_the_profile_has_exactly_the_fields_of_params():
    """So the parametrised test below deletes every field once (and the walk is not empty)."""
    assert sorted(LEAVES) == sorted(_model_leaves(Params)) and len(LEAVES) > 50


@pytest.mark.parametrize("leaf", LEAVES, ids=".".join)
def test_every_leaf_key_is_required(leaf):
    raw = params_dict()
    node = raw
    for part in leaf[:-1]:
        node = node[part]
    del node[leaf[-1]]
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    assert str(e.value) == f"{'.'.join(leaf)}: {MISSING}"


def test_a_missing_section_is_named():
    raw = params_dict()
    del raw["evaluate"]
    with pytest.raises(ConfigError, match=rf"^evaluate: {re.escape(MISSING)}$"):
        parse_params(raw)
    with pytest.raises(ConfigError, match=rf"^seed: {re.escape(MISSING)}$"):
        parse_params({})


# --- one line per bad value -----------------------------------------------------------------------------------------

def test_params_are_frozen():
    p = make_params()
    with pytest.raises((AttributeError, ValidationError)):
        p.seed = 1  # type: ignore[misc]


def test_unknown_key_names_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"zoo\.epoch: unknown key \(allowed under zoo: n_models, epochs"):
        make_params({"zoo": {"epoch": 3}})


def test_a_misspelt_key_is_named_before_the_key_it_leaves_missing():
    raw = params_dict()
    raw["zoo"]["epoch"] = raw["zoo"].pop("epochs")
    with pytest.raises(ConfigError, match=r"^zoo\.epoch: unknown key \(allowed under zoo: n_models, epochs, "):
        parse_params(raw)


def test_negative_size_names_the_key():
    with pytest.raises(ConfigError, match=r"^zoo\.n_models\.black: must be > 0, got -1$"):
        make_params({"zoo": {"n_models": {"black": -1}}})


def test_wrong_type_and_literal():
    with pytest.raises(ConfigError, match=r"^zoo\.epochs: expected int, got 'many'$"):
        make_params({"zoo": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"^device: expected one of 'auto', 'cpu', 'cuda', got 'tpu'$"):
        make_params({"device": "tpu"})


def test_impossible_combinations():
    with pytest.raises(ConfigError, match=r"zoo\.group_size: must be <= zoo\.shard_size"):
        make_params({"zoo": {"group_size": 16, "shard_size": 8}})
    with pytest.raises(ConfigError, match=r"data\.negative_mix\..*must sum to 1"):
        make_params({"data": {"negative_mix": {"nonblack_cat": 0.5, "dark_noncat": 0.5, "random": 0.5}}})
    # selection is by each method's verdict metric on val (core.selection): no knob could pick a test metric
    with pytest.raises(ConfigError, match=r"evaluate\.select_metric: unknown key"):
        make_params({"evaluate": {"select_metric": "test/kmeans/accuracy"}})
    with pytest.raises(ConfigError, match=r"tune\.objective: unknown key"):
        make_params({"tune": {"objective": "accuracy"}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.ocsvm_val_folds: must be an integer >= 2"):
        make_params({"evaluate": {"clustering": {"ocsvm_val_folds": 1}}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.dbscan_eps_quantile: must be in \(0, 1\]"):
        make_params({"evaluate": {"clustering": {"dbscan_eps_quantile": 1.5}}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.probe_val_folds: must be an integer >= 2"):
        make_params({"evaluate": {"clustering": {"probe_val_folds": 1}}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.probe_c: must be a number > 0"):
        make_params({"evaluate": {"clustering": {"probe_c": 0.0}}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.kmeans_k: must be 2 or 3"):
        make_params({"evaluate": {"clustering": {"kmeans_k": 5}}})


UMAP_ALLOWED = ", ".join(map(repr, sorted(UMAP_METRICS)))


@pytest.mark.parametrize(("over", "line"), [
    ({"evaluate": {"clustering": {"umap": {"metric": "euclidian"}}}},
     f"evaluate.clustering.umap.metric: expected one of {UMAP_ALLOWED}, got 'euclidian'"),
    ({"evaluate": {"clustering": {"umap": {"n_epochs": 2}}}}, "evaluate.clustering.umap.n_epochs: must be >= 3, got 2"),
    ({"evaluate": {"clustering": {"ocsvm_kernel": "rfb"}}},
     f"evaluate.clustering.ocsvm_kernel: must be one of {_OCSVM_KERNELS}, got 'rfb'"),
    ({"evaluate": {"clustering": {"ocsvm_gamma": "fast"}}},
     "evaluate.clustering.ocsvm_gamma: must be a float > 0 or 'scale'/'auto', got 'fast'"),
    ({"evaluate": {"clustering": {"ocsvm_gamma": -0.5}}},
     "evaluate.clustering.ocsvm_gamma: must be a float > 0 or 'scale'/'auto', got -0.5"),
    ({"evaluate": {"clustering": {"ocsvm_gamma": True}}},
     "evaluate.clustering.ocsvm_gamma: must be a float > 0 or 'scale'/'auto', got True"),
    ({"device": "gpu"}, "device: expected one of 'auto', 'cpu', 'cuda', got 'gpu'"),
    ({"data": {"source": "imagenet"}}, "data.source: expected one of 'folder', 'cifar10', got 'imagenet'"),
    ({"zoo": {"data_order": "random"}}, "zoo.data_order: expected one of 'own', 'shared', got 'random'"),
    ({"zoo": {"path": "fast"}}, None),  # core.train's own message, checked below
    ({"translation": {"study": {"translate": "all"}}},
     "translation.study.translate: expected one of 'layers', 'pair', got 'all'"),
    ({"translation": {"aligned": {"disc_output": "tanh"}}},
     "translation.aligned.disc_output: expected one of 'sigmoid', 'raw', got 'tanh'"),
    ({"generate": {"bias": "none"}}, "generate.bias: expected one of 'source', 'zero', got 'none'"),
    ({"tune": {"methods": ["kmeans", "kmedoids"]}},
     "tune.methods.1: expected one of 'kmeans', 'dbscan', 'ocsvm', got 'kmedoids'"),
    ({"tune": {"sampler": "grid"}}, "tune.sampler: expected one of 'tpe', 'random', got 'grid'"),
    ({"evaluate": {"select_method": "kmedoids"}},
     "evaluate.select_method: expected one of 'kmeans', 'dbscan', 'ocsvm', got 'kmedoids'"),
    ({"executor": {"backend": "slurm"}}, "executor.backend: expected one of 'local', 'ray', got 'slurm'"),
], ids=lambda v: ".".join(_leaves(v)[0]) if isinstance(v, dict) else None)
def test_every_enumerated_string_is_checked_on_read_with_its_allowed_values(over, line):
    with pytest.raises(ConfigError) as e:
        make_params(over)
    msg = str(e.value)
    assert "\n" not in msg
    if line is None:
        assert msg.startswith("zoo.path: must be 'single', 'batched_g<G>' or 'shared_g<G>'") and "'fast'" in msg
    else:
        assert msg == line


def test_every_umap_metric_the_protocol_knows_is_accepted():
    for m in sorted(UMAP_METRICS):
        assert make_params({"evaluate": {"clustering": {"umap": {"metric": m}}}}).evaluate.clustering.umap.metric == m


def test_translation_variant_names_are_fixed():
    p = make_params()
    with pytest.raises(ConfigError, match=r"^translation variant must be one of study, aligned, got 'best'$"):
        p.translation.variant("best")
    with pytest.raises(ConfigError, match=r"translation\.best: unknown key \(allowed under translation: study, aligned"):
        make_params({"translation": {"best": {}}})
    with pytest.raises(ConfigError, match=r"translation\.study\.pool_size: must be >= 0"):
        make_params({"translation": {"study": {"pool_size": -1}}})


# --- reading the file -----------------------------------------------------------------------------------------------

def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("zoo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_yaml_round_trip_of_overrides(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(params_dict({"seed": 7, "evaluate": {"clustering": {"ocsvm_gamma": 0.5}}})))
    p = load_params(f)
    assert p.seed == 7 and p.evaluate.clustering.gamma() == 0.5


def test_a_duplicated_key_is_refused_with_both_lines(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    lines = text.splitlines()
    at = lines.index("  epochs: 20") + 1  # zoo.epochs, 1-based
    f = tmp_path / "params.yaml"
    # the same key again further down the zoo section: PyYAML alone would keep the second without a word
    f.write_text(text.replace("  batch_size: 128\n", "  batch_size: 128\n  epochs: 2\n", 1))
    with pytest.raises(ConfigError) as e:
        load_params(f)
    assert str(e.value) == f"{f}: duplicate key 'zoo.epochs' at lines {at} and {at + 2}; keep one"
    f.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'seed' at lines 1 and 2; keep one$"):
        read_yaml(f)
    f.write_text("tune:\n  methods:\n    - {a: 1, a: 2}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'tune\.methods\.0\.a' at lines 3 and 3; keep one$"):
        read_yaml(f)
    # the same name in two different mappings is no duplicate
    f.write_text("zoo:\n  epochs: 1\ncyclegan:\n  epochs: 2\n")
    assert read_yaml(f) == {"zoo": {"epochs": 1}, "cyclegan": {"epochs": 2}}


def test_read_yaml_reads_what_safe_load_reads():
    f = ROOT / "params.yaml"
    assert read_yaml(f) == yaml.safe_load(f.read_text())


def test_translation_variants_study_off_aligned_on():
    p = load_params(ROOT / "params.yaml")
    s, a = p.translation.study, p.translation.aligned
    assert (s.align, s.translate, s.lr_decay, s.disc_output, s.pool_size) == (False, "layers", False, "sigmoid", 0)
    assert (a.align, a.translate, a.lr_decay, a.disc_output, a.pool_size) == (True, "pair", True, "raw", 50)
    assert s.core_kwargs() == {"arch": "volume", "lr_decay": False, "disc_output": "sigmoid", "pool_size": 0}


def test_the_primary_endpoint_is_declared_typed_and_checked():
    v = make_params().verdict
    assert (v.primary.metric, v.primary.method, v.primary.generated, v.primary.comparator) == \
           ("auroc", "kmeans", "all", "all")
    assert v.secondary_family == "best_on_val" and 0 < v.alpha < 1 and 0 < v.power < 1
    kinds = ("generated-study", "generated-aligned", "random", "pixels", "control-positive", "untrained-study")
    assert v.primary.generated_kinds(kinds) == ("generated-study", "generated-aligned")
    assert v.primary.comparator_kinds(kinds) == ("random", "pixels")  # `all`: every rival, no control
    named = make_params({"verdict": {"primary": {"comparator": "control-positive"}}}).verdict
    assert named.primary.comparator_kinds(kinds) == ("control-positive",)  # a control only when named
    one = make_params({"verdict": {"primary": {"generated": "generated-aligned", "comparator": "random"}}}).verdict
    assert (one.primary.generated_kinds(kinds), one.primary.comparator_kinds(kinds)) == (("generated-aligned",),
                                                                                          ("random",))
    with pytest.raises(ValidationError):
        v.primary.metric = "ari"  # frozen
    cases = [
        ({"primary": {"metric": "ari"}}, "verdict.primary.metric: must be the method's verdict metric (allowed: "
                                         "auroc/kmeans, auroc/ocsvm, ari/dbscan), got ari/kmeans"),
        ({"primary": {"method": "umap"}}, "verdict.primary.method: expected one of 'kmeans', 'dbscan', 'ocsvm', "
                                          "got 'umap'"),
        ({"primary": {"generated": "random"}}, "verdict.primary.generated: expected one of 'all', 'generated-study', "
                                               "'generated-aligned', got 'random'"),
        ({"primary": {"comparator": "generated-study"}}, "verdict.primary.comparator: expected one of 'all', "
         "'random', 'zoo-A', 'zoo-B', 'average', 'aligned', 'concat', 'pixels', 'darkness', 'avg-k', 'gauss-fit', "
         "'head-A', 'head-B', 'experts', 'control-positive', 'control-head', 'noise-0.1', 'noise-0.5', "
         "'untrained-study', 'untrained-aligned', got 'generated-study'"),
        ({"secondary_family": "all"}, "verdict.secondary_family: expected one of 'best_on_val', "
                                      "'best_on_val_and_means', got 'all'"),
        ({"declared_in": "HEAD"}, "verdict.declared_in: must be a git commit hash (7-40 hex digits) or \"\" (not yet "
                                  "committed), got 'HEAD'"),
        ({"alpha": 1.5}, "verdict.alpha: must be < 1.0, got 1.5"),
    ]
    for over, line in cases:
        with pytest.raises(ConfigError) as e:
            make_params({"verdict": over})
        assert str(e.value) == line
    assert make_params({"verdict": {"primary": {"metric": "ari", "method": "dbscan"}}}).verdict.primary.method == "dbscan"


def test_the_literature_baselines_are_typed_and_their_noise_kinds_follow_the_grid():
    b = make_params().evaluate.baselines
    assert b.noise_sigmas == (0.1, 0.5) and b.average_k == 16
    # a noise kind is a comparator only where the grid makes it
    p = make_params({"verdict": {"primary": {"comparator": "noise-0.5"}}})
    assert p.verdict.primary.comparator == "noise-0.5"
    assert make_params({"evaluate": {"baselines": {"noise_sigmas": [2]}},
                        "verdict": {"primary": {"comparator": "noise-2"}}}).evaluate.baselines.noise_sigmas == (2.0,)
    assert make_params({"evaluate": {"baselines": {"noise_sigmas": []}}}).evaluate.baselines.noise_sigmas == ()
    cases = [
        ({"evaluate": {"baselines": {"noise_sigmas": []}}, "verdict": {"primary": {"comparator": "noise-0.1"}}},
         "verdict.primary.comparator: expected one of 'all', 'random', 'zoo-A', 'zoo-B', 'average', 'aligned', "
         "'concat', 'pixels', 'darkness', 'avg-k', 'gauss-fit', 'head-A', 'head-B', 'experts', 'control-positive', "
         "'control-head', 'untrained-study', 'untrained-aligned', got 'noise-0.1'"),
        ({"evaluate": {"baselines": {"noise_sigmas": [-0.1]}}}, "evaluate.baselines.noise_sigmas.0: must be >= 0.0, "
                                                                "got -0.1"),
        ({"evaluate": {"baselines": {"noise_sigmas": [0.1, 0.1000000001]}}},
         "evaluate.baselines.noise_sigmas: must name distinct kinds (noise-<sigma>, 6 significant digits), got "
         "[0.1, 0.1000000001] -> ['noise-0.1', 'noise-0.1']"),
        ({"evaluate": {"baselines": {"average_k": 1}}}, "evaluate.baselines.average_k: must be >= 2, got 1"),
        ({"evaluate": {"baselines": {"average_k": "16"}}}, "evaluate.baselines.average_k: expected int, got '16'"),
    ]
    for over, line in cases:
        with pytest.raises(ConfigError) as e:
            make_params(over)
        assert str(e.value) == line


def test_the_replicate_profile_is_checked_as_the_params_it_makes():
    from zoofusion.config import apply_overrides

    p = make_params()
    assert len(p.replicate.seeds) >= 5 and len(set(p.replicate.seeds)) == len(p.replicate.seeds)
    raw = params_dict()
    assert apply_overrides(raw, {"zoo.n_models.black": 3})["zoo"]["n_models"]["black"] == 3
    assert raw["zoo"]["n_models"]["black"] == 96  # a copy: the mapping given is not changed
    with pytest.raises(ConfigError, match=r"^replicate\.profile\.zoo\.epochz: no such key in params\.yaml \(zoo has "):
        make_params({"replicate": {"profile": {"zoo.epochz": 3}}})
    with pytest.raises(ConfigError, match=r"^replicate\.profile makes invalid params: zoo\.epochs: must be > 0"):
        make_params({"replicate": {"profile": {"zoo.epochs": 0}}})
    with pytest.raises(ConfigError, match=r"^replicate\.profile\.seed: not an override"):
        make_params({"replicate": {"profile": {"seed": 3}}})
    with pytest.raises(ConfigError, match=r"^replicate\.seeds: must all differ"):
        make_params({"replicate": {"seeds": [1, 1, 2]}})
    with pytest.raises(ConfigError, match=r"^replicate\.seeds"):
        make_params({"replicate": {"seeds": [1]}})


def test_the_control_section_is_checked():
    assert make_params().control.n_models >= 1
    for over, line in (({"n_models": 0}, "control.n_models: must be > 0, got 0"),
                       ({"positive_min_darkness": 1.0}, "control.positive_min_darkness: must be < 1.0, got 1.0")):
        with pytest.raises(ConfigError) as e:
            make_params({"control": over})
        assert str(e.value) == line
    with pytest.raises(ConfigError, match=r"control\.positive_min_darkness: must be above "
                                          r"data\.nonblack_cat_max_darkness \(0\.15\)"):
        make_params({"control": {"positive_min_darkness": 0.1}})


def test_cuda_device_turns_tf32_off(monkeypatch):
    """fp32 arithmetic on a GPU as on CPU: speed may not silently change the numbers (cuDNN defaults to TF32)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert make_params({"device": "cpu"}).torch_device() == "cpu"
        assert torch.backends.cudnn.allow_tf32  # cpu leaves the flags alone
        assert make_params({"device": "auto"}).torch_device() == "cuda"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
