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
    with pytest.raises(ConfigError, match="search.cost.multiplier: must be positive"):
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


# ----- configuration files (issue 10, item 7) ----------------------------------------------
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("search:\n  total_epochs: 2\nseed: 3\nsearch:\n  warmup_epochs: 1\n")
    with pytest.raises(ConfigError, match=r"run.yaml line 4: .*key 'search' is given twice "
                                          r"\(lines 1 and 4\)"):
        load_yaml(cfg)
    cfg.write_text("search:\n  cost:\n    coef: 1\n    coef: 2\n")
    with pytest.raises(ConfigError, match=r"key 'coef' is given twice \(lines 3 and 4\)"):
        load_yaml(cfg)


def test_a_binary_file_is_named(tmp_path):
    cfg = tmp_path / "model.bin"
    cfg.write_bytes(b"seed: 1\n\x89PNG\xff\xfe")
    with pytest.raises(ConfigError, match=r"model.bin: not a YAML file: byte 8 is not UTF-8"):
        load_yaml(cfg)


@pytest.mark.parametrize("text, value", [("3e-6", 3e-6), ("1E5", 1e5), ("-2.5e+3", -2500.0),
                                         ("3.0e-6", 3e-6), ("7", 7)])
def test_numbers_are_read_as_people_type_them(tmp_path, toy_registry, text, value):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"search:\n  cost:\n    coef: {text}\n")
    assert resolve(toy_registry, "toy", config=cfg).settings.search.cost.coef == value
    spec = resolve(toy_registry, "toy", overrides=[f"search.cost.coef={text}"])
    assert spec.settings.search.cost.coef == value
    assert parse_override("domain.name=1e5x") == {"domain": {"name": "1e5x"}}  # still text


def test_nan_is_not_a_number(toy_registry):
    with pytest.raises(ConfigError, match=r"search.cost.coef: expected a number, got NaN"):
        resolve(toy_registry, "toy", overrides=["search.cost.coef=.nan"])
    with pytest.raises(ConfigError, match=r"search.cost.terms.flops: expected a number, got NaN"):
        resolve(toy_registry, "toy", overrides=["search.cost.terms={flops: .nan}"])


def test_a_settings_check_names_its_key_and_where_that_key_was_set(tmp_path, toy_registry):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("seed: 1\ntrain:\n  optimizer:\n    lr: -1\n")
    with pytest.raises(ConfigError, match=r"run.yaml line 4: train.optimizer.lr: must be "
                                          r"positive, got -1.0"):
        resolve(toy_registry, "toy", config=cfg, overrides=["train.optimizer.name=Adam"])


def test_a_range_with_low_above_high_says_so(tmp_path, toy_registry):
    from dnas_core.runner.experiment import plan_experiment

    exp = tmp_path / "exp.yaml"
    exp.write_text("plugin: toy\nsupernets:\n  n_trials: 2\n  grid:\n"
                   "    search.cost.coef: {low: 2, high: 1}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml line 5: supernets.grid.search.cost.coef.low: "
                                          r"must be below high, got low=2.0 and high=1.0"):
        plan_experiment(toy_registry, experiment=exp)


def test_a_grid_value_is_blamed_on_its_experiment_line_not_on_a_set(tmp_path, toy_registry):
    from dnas_core.runner.experiment import plan_experiment

    exp = tmp_path / "exp.yaml"
    exp.write_text("plugin: toy\nset:\n  seed: 2\nsupernets:\n  grid:\n"
                   "    search.cost.coef: [1e-6, nope]\n")
    with pytest.raises(ConfigError) as err:
        plan_experiment(toy_registry, experiment=exp)
    assert str(err.value) == (f"{exp} line 6 (grid value 'nope'): search.cost.coef: expected "
                              f"a number, got 'nope'")
    exp.write_text("plugin: toy\nset:\n  seed: two\n")
    with pytest.raises(ConfigError, match=r"exp.yaml line 3 \(set.seed\): seed: expected an "):
        plan_experiment(toy_registry, experiment=exp)


def test_a_section_given_in_part_keeps_the_rest_of_its_default(toy_registry):
    spec = resolve(toy_registry, "toy", overrides=["search.arch_optimizer.lr=0.01"])
    arch = spec.settings.search.arch_optimizer
    assert (arch.name, arch.lr) == ("Adam", 0.01)  # not the plain OptimizerSettings' SGD


# ----- refusals that say why (issue 10, item 9) ---------------------------------------------
def test_rerunning_with_other_settings_names_each_key_and_both_values(tmp_path, toy_registry):
    from dnas_core.config.runspec import check_same_run

    saved = resolve(toy_registry, "toy").to_dict()
    current = resolve(toy_registry, "toy", overrides=["seed=2", "search.cost.coef=0.5"]).to_dict()
    check_same_run(saved, saved, tmp_path / "config.yaml")
    with pytest.raises(ConfigError) as err:
        check_same_run(saved, current, tmp_path / "config.yaml")
    assert str(err.value) == (
        f"{tmp_path / 'config.yaml'}: this run directory was made with other settings "
        f"(search.cost.coef: 3e-06 then, 0.5 now; seed: 1 then, 2 now); use another --out, "
        f"or the same settings to resume")


def test_differences_reach_into_lists_of_keys_one_side_lacks():
    from dnas_core.config.validate import describe_differences, differences

    assert differences({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [2], "d": 3}}) == [
        ("a.c", [1], [2]), ("a.d", None, 3)]
    many = describe_differences({f"k{i}": 0 for i in range(10)}, {f"k{i}": 1 for i in range(10)},
                                limit=2)
    assert many == "k0: 0 then, 1 now; k1: 0 then, 1 now; and 8 more"
