import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT
from zoofusion.config import ConfigError, Params, load_params, parse_params


def test_repo_params_load_and_match_study_defaults():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    # The study's defaults live in params.yaml.
    assert (p.zoo.epochs, p.zoo.batch_size, p.zoo.lr) == (20, 128, 0.01)
    assert (p.cyclegan.batch_size, p.cyclegan.lr, p.cyclegan.beta1, p.cyclegan.beta2) == (64, 0.0002, 0.5, 0.999)
    c = p.evaluate.clustering
    assert (c.dbscan_eps, c.dbscan_min_samples, c.ocsvm_kernel, c.ocsvm_nu, c.ocsvm_gamma) == (3.0, 3, "rbf", 0.1, "scale")


def test_params_are_frozen():
    p = parse_params({})
    with pytest.raises((AttributeError, ValidationError)):
        p.seed = 1  # type: ignore[misc]


def test_unknown_key_names_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"zoo\.epoch: unknown key \(allowed under zoo: n_models, epochs"):
        parse_params({"zoo": {"epoch": 3}})


def test_negative_size_names_the_key():
    with pytest.raises(ConfigError, match=r"^zoo\.n_models\.black: must be > 0, got -1$"):
        parse_params({"zoo": {"n_models": {"black": -1}}})


def test_wrong_type_and_literal():
    with pytest.raises(ConfigError, match=r"^zoo\.epochs: expected int, got 'many'$"):
        parse_params({"zoo": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"^device: expected one of 'auto', 'cpu', 'cuda', got 'tpu'$"):
        parse_params({"device": "tpu"})


def test_impossible_combinations():
    with pytest.raises(ConfigError, match=r"zoo\.group_size: must be <= zoo\.shard_size"):
        parse_params({"zoo": {"group_size": 16, "shard_size": 8}})
    with pytest.raises(ConfigError, match=r"data\.negative_mix\..*must sum to 1"):
        parse_params({"data": {"negative_mix": {"nonblack_cat": 0.5, "dark_noncat": 0.5, "random": 0.5}}})
    with pytest.raises(ConfigError, match=r"evaluate\.select_metric: .*selection uses val only"):
        parse_params({"evaluate": {"select_metric": "test/kmeans/accuracy"}})
    with pytest.raises(ConfigError, match=r"evaluate\.clustering\.kmeans_k: must be 2 or 3"):
        parse_params({"evaluate": {"clustering": {"kmeans_k": 5}}})


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("zoo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_yaml_round_trip_of_overrides(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"seed": 7, "evaluate": {"clustering": {"ocsvm_gamma": 0.5}}}))
    p = load_params(f)
    assert p.seed == 7 and p.evaluate.clustering.gamma() == 0.5


def test_translation_variants_study_off_aligned_on():
    p = load_params(ROOT / "params.yaml")
    s, a = p.translation.study, p.translation.aligned
    assert (s.align, s.translate, s.lr_decay, s.disc_output, s.pool_size) == (False, "layers", False, "sigmoid", 0)
    assert (a.align, a.translate, a.lr_decay, a.disc_output, a.pool_size) == (True, "pair", True, "raw", 50)
    assert parse_params({}).translation == p.translation  # the defaults are the same
    assert s.core_kwargs() == {"arch": "volume", "lr_decay": False, "disc_output": "sigmoid", "pool_size": 0}
    with pytest.raises(ConfigError, match=r"translation\.aligned\.disc_output: expected one of 'sigmoid', 'raw'"):
        parse_params({"translation": {"aligned": {"disc_output": "tanh"}}})
    with pytest.raises(ConfigError, match=r"translation\.best: unknown key \(allowed under translation: study, aligned"):
        parse_params({"translation": {"best": {}}})
    with pytest.raises(ConfigError, match=r"translation\.study\.pool_size: must be >= 0"):
        parse_params({"translation": {"study": {"pool_size": -1}}})
