"""Step speed options (issue 11 item 2): the loss read every ``check_every`` steps still
catches the first non-finite step exactly; bf16 autocast trains to losses close to fp32's;
``torch.compile`` runs a step; prefetched or device-resident data changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dnas_core.config.settings import (
    LoaderSettings,
    OptimizerSettings,
    SearchSettings,
    TrainSettings,
)
from dnas_core.config.validate import ConfigError, build
from dnas_core.engine.cost import DecisionCostTable
from dnas_core.engine.search import NonFiniteLoss, SearchManager
from dnas_core.engine.steps import StepMonitor
from dnas_core.engine.tasks import BinaryClassification
from dnas_core.engine.training import train_sampled
from tests.core.toy_plugin import FLOPS, ToySampled, ToySuperNet, make_data

CPU = torch.device("cpu")
SEARCH = SearchSettings(
    warmup_epochs=0.5, total_epochs=1.5, alternate_every=0.5, batch_size=64,
    arch_sampling={1.0: 2}, weights_optimizer=OptimizerSettings("SGD", lr=0.2),
    arch_optimizer=OptimizerSettings("Adam", lr=0.2))
TRAIN = TrainSettings(epochs=2, batch_size=64, optimizer=OptimizerSettings("Adam", lr=0.02))


class NanAt(BinaryClassification):
    """The binary task, whose loss is NaN from its ``at``-th call (0-based) on."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, outputs, targets):
        loss = super().loss(outputs, targets)
        self.calls += 1
        return loss * math.nan if self.calls > self.at else loss


def search(run_dir: Path, settings: SearchSettings, task=None,
           loader: LoaderSettings | None = None) -> SearchManager:
    torch.manual_seed(1)
    cost = DecisionCostTable("flops", "FLOPs", {"op": torch.tensor(FLOPS)})
    manager = SearchManager(ToySuperNet(16), make_data(1200, 1), task or BinaryClassification(),
                            cost, {"flops": cost}, settings, domain="toy", space="toy", seed=1,
                            device=CPU, run_dir=run_dir, loader=loader)
    manager.run()
    return manager


def train(settings: TrainSettings, task=None, loader: LoaderSettings | None = None):
    torch.manual_seed(1)
    return train_sampled(ToySampled("mlp", 16), make_data(1200, 1), task or BinaryClassification(),
                         settings, seed=1, device=CPU, loader=loader)


def test_the_monitor_reports_the_first_bad_step_and_interval_means():
    monitor = StepMonitor(every=4, device=CPU)
    for step, value in enumerate([1.0, 3.0, math.inf, math.nan]):
        monitor.add(step, torch.tensor(value), cost=torch.tensor([2.0, 4.0]))
        assert monitor.due(step + 1, last=False) == (step == 3)
    bad, means = monitor.read()
    assert bad == (2, math.inf) and means["cost"] == 3.0
    monitor.add(4, torch.tensor(1.0))
    monitor.add(5, torch.tensor(2.0))
    assert monitor.read() == (None, {"loss": 1.5})


@pytest.mark.parametrize("check_every", [1, 1000])
def test_a_nan_search_loss_is_caught_at_its_step_whatever_check_every(tmp_path, check_every):
    # 720 weights rows / 64 = 12 batches a weights epoch: the first chunk (half an epoch
    # of warm-up) is steps 0 to 5
    settings = replace(SEARCH, check_every=check_every)
    with pytest.raises(NonFiniteLoss, match="non-finite search loss nan at step 3$"):
        search(tmp_path, settings, NanAt(3))
    # the chunk never finished, so no checkpoint holds the diverged weights
    assert not (tmp_path / "checkpoints" / "search.pt").exists()


@pytest.mark.parametrize("check_every", [1, 1000])
def test_a_nan_training_loss_is_caught_in_its_epoch_whatever_check_every(check_every):
    # 960 training rows / 64 = 15 steps an epoch: step 20 is in the second epoch
    with pytest.raises(NonFiniteLoss, match="non-finite training loss nan in epoch 1"):
        train(replace(TRAIN, check_every=check_every), NanAt(20))


def state(manager: SearchManager) -> dict[str, torch.Tensor]:
    return manager.supernet.state_dict()


def test_loader_modes_and_check_every_leave_a_search_unchanged(tmp_path):
    base = search(tmp_path / "a", SEARCH)
    others = [search(tmp_path / "b", replace(SEARCH, check_every=1),
                     loader=LoaderSettings(placement="device")),
              search(tmp_path / "c", replace(SEARCH, check_every=7),
                     loader=LoaderSettings(prefetch=0))]
    for other in others:
        for (name, a), b in zip(state(base).items(), state(other).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        assert [a.to_dict() for a in base.architectures] == \
            [a.to_dict() for a in other.architectures]


def test_bf16_search_and_training_give_finite_losses_close_to_fp32(tmp_path):
    fp32 = search(tmp_path / "fp32", SEARCH)
    bf16 = search(tmp_path / "bf16", replace(SEARCH, precision="bf16"))
    p32, p16 = fp32.supernet.probabilities()["op"], bf16.supernet.probabilities()["op"]
    assert abs(float(p32[1] - p16[1])) < 0.05  # theta moved the same way, by as much
    a, b = train(TRAIN), train(replace(TRAIN, precision="bf16"))
    for row32, row16 in zip(a.history, b.history, strict=True):
        assert math.isfinite(row16["logloss"])
        assert abs(row32["logloss"] - row16["logloss"]) < 0.02, (row32, row16)
    assert a.history[-1]["logloss"] < 0.6  # both learnt the XOR


@pytest.mark.slow
def test_compiled_training_runs_and_matches_eager():
    # about 25 s on 2 shared CPU cores: inductor builds C++ kernels (cached afterwards)
    tiny = replace(TRAIN, epochs=1)
    eager, fast = train(tiny), train(replace(tiny, compile=True))
    assert abs(eager.history[0]["logloss"] - fast.history[0]["logloss"]) < 1e-3


def test_speed_settings_are_checked_at_the_edge():
    with pytest.raises(ConfigError, match="train.check_every: must be at least 1"):
        build(TrainSettings, {"check_every": 0}, "train")
    with pytest.raises(ConfigError, match="search.precision: expected one of 'fp32', 'bf16'"):
        build(SearchSettings, {"precision": "fp16"}, "search")
    with pytest.raises(ConfigError, match="search.compile: expected true or false"):
        build(SearchSettings, {"compile": "yes"}, "search")
