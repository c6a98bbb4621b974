"""Everything a run needs is checked when it is planned, for every grid point, with an
error naming the key and the place that set it (issue 10, item 4)."""

import pytest

from dnas_core.config.runspec import resolve
from dnas_core.config.validate import ConfigError
from dnas_core.runner.devices import check_available
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.preflight import check_runnable


@pytest.mark.parametrize("setting, message", [
    ("train.eval_batch_size=0", "train.eval_batch_size: must be at least 1, got 0"),
    ("search.total_epochs=0", "search.total_epochs: must be positive"),
    ("search.warmup_epochs=-1", "search.warmup_epochs: must lie between 0 and"),
    ("search.warmup_epochs=6", "search.warmup_epochs: must lie between 0 and"),
    ("search.alternate_every=0", "search.alternate_every: must be positive"),
    ("search.arch_sampling={}", "search.arch_sampling: must name at least one"),
    ("search.arch_sampling={9: 2}", "search.arch_sampling: key 9.0 must be a positive number "
                                    "of architecture epochs no larger than the 4"),
    ("search.weights_optimizer.name=Adamm", "search.weights_optimizer.name: unknown optimizer "
                                            "'Adamm'; expected one of ASGD"),
    ("search.arch_optimizer.args={foo: 1}", "search.arch_optimizer.args: Adam refuses these "
                                            "arguments ({'foo': 1})"),
    ("train.optimizer.args={momentum: -1}", "train.optimizer.args: SGD refuses these "
                                            "arguments ({'momentum': -1}): Invalid momentum"),
    ("train.optimizer.groups={dense: {optimizer: Nope}}",
     "train.optimizer.groups.dense.optimizer: unknown optimizer 'Nope'"),
    ("device=bogus", "device: must be 'auto' or a torch device"),
    ("device=cuda:99", "device: 'cuda:99' is not available here"),
])
def test_a_run_that_cannot_run_is_refused_when_planned(toy_registry, setting, message):
    with pytest.raises(ConfigError) as err:
        plan_experiment(toy_registry, plugin="toy", overrides=[setting])
    assert str(err.value).startswith(f"--set {setting}: {message}")


def test_good_settings_pass(toy_registry):
    spec = resolve(toy_registry, "toy", overrides=[
        "search.arch_optimizer.args={betas: [0.8, 0.9]}", "device=cpu",
        "train.optimizer.groups={emb: {optimizer: SparseAdam, lr: 0.1}}"])
    check_runnable(spec)


def test_every_grid_point_is_checked_and_its_line_named(tmp_path, toy_registry):
    exp = tmp_path / "exp.yaml"
    exp.write_text("plugin: toy\nsupernets:\n  grid:\n    search.total_epochs: [5, 6]\n"
                   "architectures:\n  grid:\n    train.optimizer.name: [Adam, Adamm]\n")
    with pytest.raises(ConfigError) as err:
        plan_experiment(toy_registry, experiment=exp)
    assert str(err.value).startswith(f"{exp} line 7 (grid value 'Adamm'): train.optimizer.name: "
                                     f"unknown optimizer 'Adamm'")
    exp.write_text("plugin: toy\nsupernets:\n  grid:\n    search.warmup_epochs: [1, 9]\n")
    with pytest.raises(ConfigError, match=r"exp.yaml line 4 \(grid value 9\): "
                                          r"search.warmup_epochs: must lie between"):
        plan_experiment(toy_registry, experiment=exp)


def test_a_gpu_that_is_not_there_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    check_available(["0", "1", "cpu", "GPU-6f3c"])
    with pytest.raises(ValueError, match=r"GPU 7 is not visible here \(visible: 0, 1\)"):
        check_available(["0", "7"])


def test_both_ends_of_a_sampled_range_are_checked(tmp_path, toy_registry):
    exp = tmp_path / "exp.yaml"
    exp.write_text("plugin: toy\narchitectures:\n  n_trials: 3\n  grid:\n"
                   "    train.eval_batch_size: {low: 0, high: 64, integer: true}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml line 5 \(grid value 0\): "
                                          r"train.eval_batch_size: must be at least 1, got 0"):
        plan_experiment(toy_registry, experiment=exp)
    exp.write_text("plugin: toy\narchitectures:\n  n_trials: 3\n  grid:\n"
                   "    train.eval_batch_size: {low: 1, high: 64, integer: true}\n")
    assert plan_experiment(toy_registry, experiment=exp).architectures.range_ends() == [
        {"train.eval_batch_size": 1}, {"train.eval_batch_size": 64}]
