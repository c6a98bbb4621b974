"""Hardware-cost models and the cost-aware search loss (paper eq. 4, 5 and 6).

A cost model answers two questions about the same quantity: the differentiable expected
cost of the architectures a supernet just sampled (per example, from the mixing weights
its forward pass used), and the exact cost of one hard-sampled architecture. The search
checks that a sampled model's real cost equals the second answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, cast, runtime_checkable

import torch
from torch import Tensor

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.supernet import SuperNet


@runtime_checkable
class CostModel(Protocol):
    name: str
    unit: str

    def expected(self, supernet: SuperNet) -> Tensor:
        """Per-example expected cost, shape (batch,), differentiable w.r.t. theta."""

    def of(self, architecture: Architecture) -> float:
        """Exact cost of one sampled architecture."""

    def scale(self) -> float:
        """A typical magnitude (e.g. the largest architecture's cost), for normalising."""


def priced(architecture: Architecture, models: Mapping[str, CostModel],
           ranking: CostModel | None) -> Architecture:
    """``architecture`` with every cost model's exact cost and the ranking cost."""
    return replace(architecture, costs={n: m.of(architecture) for n, m in models.items()},
                   cost=None if ranking is None else ranking.of(architecture))


class DecisionCostTable:
    """Cost that is a sum of independent per-option costs (paper eq. 4).

    ``tables[name]`` has the shape of that decision's theta: the cost of every option of
    every group. Decisions not named cost nothing.
    """

    def __init__(self, name: str, unit: str, tables: Mapping[str, Tensor],
                 base: float = 0.0):
        self.name = name
        self.unit = unit
        self.tables = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in tables.items()}
        self.base = float(base)

    def expected(self, supernet: SuperNet) -> Tensor:
        decisions = supernet.decisions()
        total: Tensor | int = 0
        for name, table in self.tables.items():
            weights = decisions[name].last_weights
            if weights is None:
                raise RuntimeError(f"decision {name!r} has not been sampled yet")
            cost = (weights * table.to(weights.device, weights.dtype)).reshape(
                weights.shape[0], -1).sum(dim=1)
            total = total + cost
        return cast(Tensor, total + self.base)

    def of(self, architecture: Architecture) -> float:
        total = self.base
        for name, table in self.tables.items():
            picks = torch.as_tensor(architecture.choices[name], dtype=torch.long)
            if table.dim() == 1:
                total += float(table[picks])
            else:
                total += float(table.gather(1, picks.view(-1, 1)).sum())
        return total

    def scale(self) -> float:
        return self.base + sum(float(t.max(dim=-1).values.sum()) for t in self.tables.values())


class CombinedCost:
    """Several costs as one: each divided by its scale, then weighted (joint search)."""

    unit = "normalised"

    def __init__(self, terms: Sequence[tuple[CostModel, float]]):
        if not terms:
            raise ValueError("a combined cost needs at least one term")
        self.terms = list(terms)
        self.name = "+".join(f"{w:g}*{m.name}" for m, w in self.terms)

    def expected(self, supernet: SuperNet) -> Tensor:
        return cast(Tensor, sum(w * m.expected(supernet) / m.scale() for m, w in self.terms))

    def of(self, architecture: Architecture) -> float:
        return sum(w * m.of(architecture) / m.scale() for m, w in self.terms)

    def scale(self) -> float:
        return float(sum(w for _, w in self.terms))


CostForm = Literal["additive", "multiplicative", "off"]


@dataclass(frozen=True)
class CostLoss:
    """TaskLoss combined with log cost: eq. 6 (additive) or eq. 5 (multiplicative).

    additive:        task + coef * mean(log(multiplier * cost))
    multiplicative:  task * coef * mean(log(multiplier * cost)) ** exponent
    """

    form: CostForm = "additive"
    coef: float = 3e-6
    exponent: float = 1.0
    multiplier: float = 1.0

    def log_cost(self, cost: Tensor) -> Tensor:
        return torch.log(cost * self.multiplier).mean()

    def __call__(self, task_loss: Tensor, cost: Tensor | None) -> Tensor:
        if self.form == "off" or cost is None:
            return task_loss
        log_cost = self.log_cost(cost)
        if self.form == "additive":
            return task_loss + self.coef * log_cost
        if float(log_cost) <= 0:
            raise ValueError(
                f"multiplicative cost loss needs log(multiplier * cost) > 0, got "
                f"{float(log_cost):.4g}; raise search.cost.multiplier")
        return task_loss * self.coef * log_cost ** self.exponent
