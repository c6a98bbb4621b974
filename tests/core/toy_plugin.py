"""A tiny domain used by the core's tests: choose between a linear and an MLP operator.

The label is an XOR of two inputs, which the linear operator cannot fit, so a search that
works moves theta toward the MLP unless the cost term dominates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from dnas_core import (
    BinaryClassification,
    DataBundle,
    Decision,
    DecisionCostTable,
    Domain,
    SuperNet,
    TensorTable,
    hookimpl,
    weighted_sum,
)

FLOPS = [2.0 * 4, 2.0 * (4 * 16 + 16)]


@dataclass
class ToySettings:
    rows: int = 2000
    hidden: int = 16
    # makes sampled-architecture training misbehave, to test the pipeline's fault handling
    fault: Literal["none", "oom", "crash", "hang", "nan"] = "none"
    # seconds each supernet step sleeps: makes a search last long enough to be killed
    step_delay: float = 0.0


class ToySuperNet(SuperNet):
    def __init__(self, hidden: int, step_delay: float = 0.0):
        super().__init__()
        self.step_delay = step_delay
        self.ops = nn.ModuleList([
            nn.Linear(4, 1),
            nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))])
        self.op = Decision(2, labels=["linear", "mlp"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.step_delay:
            time.sleep(self.step_delay)
        weights = self.op.mix_weights(len(x))
        return torch.sigmoid(weighted_sum(weights, [op(x) for op in self.ops])).squeeze(-1)

    def decode(self, choices):
        return {"op": ["linear", "mlp"][choices["op"]]}


class ToySampled(nn.Module):
    def __init__(self, op: str, hidden: int, fault: str = "none"):
        super().__init__()
        self.fault = fault
        self.net = (nn.Linear(4, 1) if op == "linear" else
                    nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by the toy plugin)")
        if self.fault == "crash":
            raise ValueError("the toy plugin crashes on purpose")
        if self.fault == "hang":
            time.sleep(3600)
        out = torch.sigmoid(self.net(x)).squeeze(-1)
        return out * float("nan") if self.fault == "nan" else out


def make_data(rows: int, seed: int) -> DataBundle:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, generator=gen)
    y = ((x[:, 0] * x[:, 1]) > 0).float()
    cut = [int(rows * f) for f in (0.6, 0.8, 0.9)]
    idx = np.arange(rows)
    return DataBundle(TensorTable(x, y), {"weights": idx[:cut[0]], "arch": idx[cut[0]:cut[1]],
                                          "val": idx[cut[1]:cut[2]], "test": idx[cut[2]:]},
                      {"rows": rows})


@hookimpl
def dnas_register_domains(register):
    register(Domain("toy", ToySettings, default_cost="flops", description="XOR toy"))


@hookimpl
def dnas_make_data(domain, settings, seed):
    if domain == "toy":
        return make_data(settings.rows, seed)
    return None


@hookimpl
def dnas_make_supernet(domain, settings, data_info):
    if domain == "toy":
        return ToySuperNet(settings.hidden, settings.step_delay)
    return None


@hookimpl
def dnas_make_sampled(domain, settings, architecture, data_info):
    if domain == "toy":
        return ToySampled(architecture.spec["op"], settings.hidden, settings.fault)
    return None


@hookimpl
def dnas_cost_models(domain, settings, data_info, supernet):
    if domain == "toy":
        return [DecisionCostTable("flops", "FLOPs", {"op": torch.tensor(FLOPS)})]
    return None


@hookimpl
def dnas_make_task(domain, settings, data_info):
    if domain == "toy":
        return BinaryClassification()
    return None
