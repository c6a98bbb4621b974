import pytest

from dnas_core.config.runspec import resolve
from dnas_core.config.settings import RunSettings, SearchSettings
from dnas_core.config.validate import ConfigError, build, load_yaml, parse_override
from dnas_core.plugins.registry import PluginError


def test_defaults_follow_the_paper():
    s = SearchSettings()
    assert (s.warmup_epochs, s.total_epochs, s.alternate_every) == (1.0, 5.0, 1.0)
    assert s.arch_sampling == {4.0: 4} and s.clip_grad_norm == 100.0


def test_unknown_key_is_named_with_file_and_line(tmp_path, toy_registry):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("seed: 3\nsearch:\n  warmup_epochs: 1\n  temprature_decay: 0.2\n")
    with pytest.raises(ConfigError) as err:
        resolve(toy_registry, "toy", config=cfg)
    msg = str(err.value)
    assert "run.yaml line 4" in msg and "search.temprature_decay" in msg
    assert "temperature_decay" in msg  # the valid keys are listed


def test_wrong_type_is_named(tmp_path, toy_registry):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("search:\n  batch_size: lots\n")
    expected = r"line 2: search.batch_size: expected an integer or one of 'auto', got 'lots'"
    with pytest.raises(ConfigError, match=expected):
        resolve(toy_registry, "toy", config=cfg)


def test_domain_section_is_validated_by_the_domain_type(toy_registry):
    expected = r"--set domain.rows=many: domain.rows: expected an integer"
    with pytest.raises(ConfigError, match=expected):
        resolve(toy_registry, "toy", overrides=["domain.rows=many"])
    with pytest.raises(ConfigError, match=r"domain.colour: unknown key"):
        resolve(toy_registry, "toy", overrides=["domain.colour=red"])


def test_overrides_and_nested_optimizer_settings(toy_registry):
    spec = resolve(toy_registry, "toy", overrides=[
        "search.weights_optimizer.name=Adagrad", "search.weights_optimizer.args={eps: 0.1}",
        "search.arch_sampling={2: 3}", "domain.rows=500", "seed=9"])
    assert spec.settings.search.weights_optimizer.name == "Adagrad"
    assert spec.settings.search.weights_optimizer.args == {"eps": 0.1}
    assert spec.settings.search.arch_sampling == {2: 3}
    assert spec.domain_settings.rows == 500 and spec.settings.seed == 9


def test_value_checks_and_bad_yaml(tmp_path, toy_registry):
    with pytest.raises(ConfigError, match="search.cost: multiplier must be positive"):
        resolve(toy_registry, "toy", overrides=["search.cost.multiplier=0"])
    with pytest.raises(ConfigError, match="expected one of 'additive', 'multiplicative', 'off'"):
        resolve(toy_registry, "toy", overrides=["search.cost.form=exp"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("seed")


def test_unknown_plugin_lists_the_available_ones(toy_registry):
    with pytest.raises(PluginError, match="no installed plugin provides 'nope'; available: toy"):
        resolve(toy_registry, "nope")


def test_build_requires_mappings():
    with pytest.raises(ConfigError, match="search: expected a mapping"):
        build(RunSettings, {"search": 3})


def test_a_later_layer_replaces_mapping_settings_whole(tmp_path, toy_registry):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("search:\n  arch_sampling: {2: 1}\n"
                   "  weights_optimizer: {args: {momentum: 0.9}}\n")
    spec = resolve(toy_registry, "toy", config=cfg,
                   overrides=["search.arch_sampling={3: 2}",
                              "search.weights_optimizer.lr=0.5"])
    assert spec.settings.search.arch_sampling == {3: 2}  # not {2: 1, 3: 2}
    # sections still merge key by key
    assert spec.settings.search.weights_optimizer.args == {"momentum": 0.9}
    assert spec.settings.search.weights_optimizer.lr == 0.5
