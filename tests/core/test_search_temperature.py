"""The Gumbel-softmax temperature the search really uses (issue 9): it must follow the
annealing schedule tau = T0 * exp(-decay * arch epochs done) chunk by chunk, through
warm-up and fractional alternation, or the architecture distribution that ranks the
candidates is trained at the wrong sharpness.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dnas_core.config.settings import CostSettings, OptimizerSettings, SearchSettings
from dnas_core.engine import schedules
from dnas_core.engine.search import SearchManager
from dnas_core.engine.tasks import BinaryClassification
from tests.core.toy_plugin import ToySuperNet, make_data

INIT, DECAY = 2.0, 0.7


class SpySuperNet(ToySuperNet):
    """The toy supernet, remembering every temperature it is asked to sample at, and how
    many training batches ran at each."""

    def __init__(self) -> None:
        super().__init__(16)
        self.temperatures: list[float] = []
        self.batches: list[int] = []

    def sample_soft(self, temperature: float, generator: torch.Generator | None) -> None:
        self.temperatures.append(temperature)
        self.batches.append(0)
        super().sample_soft(temperature, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.batches:
            self.batches[-1] += 1
        # every Decision must sample at the temperature last set, whatever called it
        assert self.op._state.mode == "soft"
        assert self.op._state.temperature == self.temperatures[-1]
        return super().forward(x)


def test_search_anneals_the_temperature_by_architecture_epochs_done(tmp_path: Path):
    settings = SearchSettings(
        warmup_epochs=0.75, total_epochs=2.25, alternate_every=0.5, batch_size=60,
        init_temperature=INIT, temperature_decay=DECAY, arch_sampling={1.5: 1},
        weights_optimizer=OptimizerSettings("SGD", lr=0.1),
        arch_optimizer=OptimizerSettings("Adam", lr=0.1), cost=CostSettings(form="off"))
    torch.manual_seed(1)
    net = SpySuperNet()
    manager = SearchManager(net, make_data(1200, 1), BinaryClassification(), None, {},
                            settings, domain="toy", space="toy", seed=1,
                            device=torch.device("cpu"), run_dir=tmp_path)
    manager.run()

    plan = manager.plan
    # warm-up 0.75, then weights 0.5 / arch 0.5 until 2.25 weight epochs: W W A W A W A
    assert [c.kind for c in plan] == ["weights", "weights", "arch", "weights", "arch",
                                      "weights", "arch"]
    arch_done = [c.arch_epochs_done for c in plan]
    assert arch_done == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    expected = [schedules.temperature(INIT, DECAY, done) for done in arch_done]
    assert net.temperatures == pytest.approx(expected, rel=1e-12)
    # the schedule's formula itself, so a wrong schedule cannot agree with itself
    assert expected[-1] == pytest.approx(INIT * math.exp(-DECAY * 1.0), rel=1e-12)
    # the temperature really falls: a manager that ignored the schedule (a constant, or
    # the initial value throughout) fails here
    assert len(set(net.temperatures)) == 3
    assert net.temperatures[-1] < 0.5 * net.temperatures[0]
    # every chunk trained at the temperature it set: weights 720 rows = 12 batches of 60
    # per epoch (9, then 6 per half), arch 240 rows = 4 batches (2 per half epoch)
    assert net.batches == [9, 6, 2, 6, 2, 6, 2]


def test_temperature_schedule_decays_exponentially():
    assert schedules.temperature(3.0, 0.0, 5.0) == 3.0
    assert schedules.temperature(1.0, 0.1, 0.0) == 1.0
    values = [schedules.temperature(1.0, 0.1, e) for e in (0, 0.5, 1, 1.5)]
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert ratios == pytest.approx([math.exp(-0.05)] * 3, rel=1e-12)
