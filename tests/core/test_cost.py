import math

import pytest
import torch

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CombinedCost, CostLoss, DecisionCostTable
from dnas_core.engine.supernet import Decision, SuperNet


class Two(SuperNet):
    def __init__(self):
        super().__init__()
        self.a = Decision(2)
        self.b = Decision(3, groups=2)


def test_cost_loss_forms_match_hand_computation():
    task = torch.tensor(0.5)
    cost = torch.tensor([100.0, 1000.0])
    mean_log = (math.log(100 * 10) + math.log(1000 * 10)) / 2
    additive = CostLoss("additive", coef=0.01, multiplier=10)(task, cost)
    assert math.isclose(float(additive), 0.5 + 0.01 * mean_log, rel_tol=1e-6)
    multiplicative = CostLoss("multiplicative", coef=0.2, exponent=0.6, multiplier=10)(task, cost)
    assert math.isclose(float(multiplicative), 0.5 * 0.2 * mean_log ** 0.6, rel_tol=1e-6)
    assert float(CostLoss("off")(task, cost)) == 0.5


def test_multiplicative_form_rejects_costs_below_one():
    with pytest.raises(ValueError, match="multiplier"):
        CostLoss("multiplicative")(torch.tensor(1.0), torch.tensor([0.5]))


def test_decision_cost_table_expected_and_exact():
    net = Two()
    table = DecisionCostTable("c", "units", {"a": torch.tensor([1.0, 5.0]),
                                              "b": torch.tensor([[1.0, 2, 3], [10, 20, 30]])})
    net.a.theta.data = torch.tensor([0.0, math.log(3)])  # p = [0.25, 0.75]
    net.sample_expected()
    net.a.mix_weights(2)
    net.b.mix_weights(2)
    expected = 0.25 * 1 + 0.75 * 5 + 2 + 20
    torch.testing.assert_close(table.expected(net), torch.full((2,), expected))
    arch = Architecture("d", "s", {"a": 1, "b": [2, 0]}, {})
    assert table.of(arch) == 5 + 3 + 10
    assert table.scale() == 5 + 3 + 30


def test_combined_cost_normalises_each_term():
    a = DecisionCostTable("a", "x", {"a": torch.tensor([2.0, 4.0])})
    b = DecisionCostTable("b", "y", {"a": torch.tensor([100.0, 300.0])})
    combined = CombinedCost([(a, 1.0), (b, 2.0)])
    arch = Architecture("d", "s", {"a": 0, "b": [0, 0]}, {})
    assert math.isclose(combined.of(arch), 2 / 4 + 2 * 100 / 300)
