"""Exact expected costs for the CNN space: FLOPs (counted) and latency (measured).

Why not the core's ``DecisionCostTable``: a conv's cost depends on its input width, which
is the output width of the nearest earlier layer that did not skip, so costs are not a sum
of independent per-decision terms. The decisions themselves are independent (per layer and
per decision), though, so the cost can still be taken in expectation exactly: walking the
layers in order we carry ``p_l``, the distribution of the channel count entering layer
``l`` (a vector over every possible channel count), and

    E[cost of layer l] = sum_{k, c, w} P(op_l = conv k) * p_l(c) * P(width_l = w) * T_l[k, c, w]
                         + P(op_l = skip) * sum_c p_l(c) * S_l[c]
    p_{l+1}(c)         = P(op_l = skip) * p_l(c) + P(op_l is a conv) * P(width_l = c)

which is exact because ``p_l`` depends only on the decisions of earlier layers. Under
Gumbel-softmax soft sampling the per-example mixing weights stand in for the probabilities
(the paper's eq. 4 relaxation); with one-hot weights the formula gives the architecture's
cost, and with ``softmax(theta)`` it gives ``sum_a P(a) * cost(a)`` over all architectures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dnas_cnn.space import CnnSpace
from dnas_cnn.supernet import conv_bn_relu, skip_path
from dnas_core import Architecture, SuperNet


@dataclass
class CostTables:
    """Per-layer costs indexed by the space's ``channel_values`` (c) and options.

    ``conv[l]``: (kernels, channel values, widths); ``skip[l]``: (channel values,);
    ``head``: (channel values,); ``base``: the fixed stem.
    """

    conv: list[Tensor]
    skip: list[Tensor]
    head: Tensor
    base: float


class LayeredCost:
    """A cost model (the core's CostModel protocol) over :class:`CostTables`.

    ``tables`` may be a callable, evaluated on first use (measuring latency takes time, and
    a run that never uses this cost should not pay for it).
    """

    def __init__(self, name: str, unit: str, space: CnnSpace,
                 tables: CostTables | Callable[[], CostTables]):
        self.name = name
        self.unit = unit
        self.space = space
        self._tables = tables
        values = space.channel_values
        self._index = {c: i for i, c in enumerate(values)}
        self._width_to_value = torch.zeros(len(space.widths), len(values), dtype=torch.float64)
        for j, w in enumerate(space.widths):
            self._width_to_value[j, self._index[w]] = 1.0

    @property
    def tables(self) -> CostTables:
        if callable(self._tables):
            self._tables = self._tables()
        return self._tables

    def expected(self, supernet: SuperNet) -> Tensor:
        op_w, width_w = supernet.op.last_weights, supernet.width.last_weights
        if op_w is None or width_w is None:
            raise RuntimeError("the supernet has not been run yet: no mixing weights to cost")
        return self.expected_from(op_w, width_w)

    def expected_from(self, op_w: Tensor, width_w: Tensor) -> Tensor:
        """Expected cost per example from mixing weights (batch, layers, ops) and
        (batch, layers, widths)."""
        tables = self.tables
        kernels = len(self.space.kernels)
        dtype, device = op_w.dtype, op_w.device
        to_value = self._width_to_value.to(device, dtype)
        p = torch.zeros(op_w.shape[0], len(self._index), dtype=dtype, device=device)
        p[:, self._index[self.space.stem_width]] = 1.0
        total = torch.full((op_w.shape[0],), tables.base, dtype=dtype, device=device)
        for layer in range(len(self.space.layers)):
            conv_w = op_w[:, layer, :kernels]
            widths = width_w[:, layer]
            total = total + torch.einsum("bk,bc,bw,kcw->b", conv_w, p, widths,
                                         tables.conv[layer].to(device, dtype))
            out = conv_w.sum(dim=1, keepdim=True) * (widths @ to_value)
            if self.space.skip:
                skip_w = op_w[:, layer, kernels]
                total = total + skip_w * (p @ tables.skip[layer].to(device, dtype))
                out = out + skip_w[:, None] * p
            p = out
        return total + p @ tables.head.to(device, dtype)

    def of_spec(self, spec: Mapping[str, Any]) -> float:
        tables = self.tables
        channels = spec["stem"]["width"]
        total = tables.base
        for layer, chosen in enumerate(spec["layers"]):
            c = self._index[channels]
            if chosen["op"] == "skip":
                total += float(tables.skip[layer][c])
            else:
                k = self.space.kernels.index(chosen["kernel"])
                w = self.space.widths.index(chosen["width"])
                total += float(tables.conv[layer][k, c, w])
                channels = chosen["width"]
        return total + float(tables.head[self._index[channels]])

    def of(self, architecture: Architecture) -> float:
        return self.of_spec(architecture.spec)

    def scale(self) -> float:
        """An upper bound on any architecture's cost: the costliest option per layer."""
        tables = self.tables
        per_layer = [max(float(conv.max()), float(skip.max()) if skip.numel() else 0.0)
                     for conv, skip in zip(tables.conv, tables.skip, strict=True)]
        return tables.base + sum(per_layer) + float(tables.head.max())

    def bounds(self) -> tuple[float, float]:
        """Exact (cheapest, costliest) architecture, by dynamic programming over the
        channel count entering each layer."""
        tables = self.tables
        best = {self.space.stem_width: (tables.base, tables.base)}
        for layer in range(len(self.space.layers)):
            nxt: dict[int, tuple[float, float]] = {}

            def offer(c: int, lo: float, hi: float,
                      nxt: dict[int, tuple[float, float]] = nxt) -> None:
                old = nxt.get(c)
                nxt[c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

            for c, (lo, hi) in best.items():
                ci = self._index[c]
                for k in range(len(self.space.kernels)):
                    for j, w in enumerate(self.space.widths):
                        cost = float(tables.conv[layer][k, ci, j])
                        offer(w, lo + cost, hi + cost)
                if self.space.skip:
                    cost = float(tables.skip[layer][ci])
                    offer(c, lo + cost, hi + cost)
            best = nxt
        finals = [(lo + float(tables.head[self._index[c]]), hi + float(tables.head[self._index[c]]))
                  for c, (lo, hi) in best.items()]
        return min(f[0] for f in finals), max(f[1] for f in finals)


# ----- FLOPs -------------------------------------------------------------------------------
def conv_flops(kernel: int, c_in: int, c_out: int, out_size: int) -> float:
    """2 x multiply-accumulates of a dense conv (bias, BN, ReLU and pooling not counted)."""
    return 2.0 * kernel * kernel * c_in * c_out * out_size * out_size


def flops_tables(space: CnnSpace) -> CostTables:
    values = space.channel_values
    conv, skip = [], []
    for layer in space.layers:
        conv.append(torch.tensor([[[conv_flops(k, c, w, layer.out_size) for w in space.widths]
                                   for c in values] for k in space.kernels],
                                 dtype=torch.float64))
        skip.append(torch.zeros(len(values), dtype=torch.float64))
    head = torch.tensor([2.0 * c * space.classes for c in values], dtype=torch.float64)
    base = conv_flops(3, space.in_channels, space.stem_width, space.stem_size)
    return CostTables(conv, skip, head, base)


def flops_cost(space: CnnSpace) -> LayeredCost:
    return LayeredCost("flops", "FLOPs", space, flops_tables(space))


def count_flops(model: nn.Module, example: Tensor) -> float:
    """FLOPs of one example counted from a model's real Conv2d and Linear layers, by the
    same convention as :func:`conv_flops` (2 x multiply-accumulates)."""
    total = 0.0

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        nonlocal total
        per_example = output.numel() / output.shape[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2.0 * per_example * kh * kw * module.in_channels / module.groups
        elif isinstance(module, nn.Linear):
            total += 2.0 * per_example * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example[:1])
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total


# ----- measured latency ---------------------------------------------------------------------
def default_latency_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "dnas" / "cnn-latency.json"


def latency_tables(space: CnnSpace, device: str, batch: int,
                   cache: Path | None = None) -> CostTables:
    """Per-layer latency in milliseconds, measured once per distinct shape and cached by
    the core's latency table (keyed by device and shapes)."""
    from dnas_core.engine.latency import LatencyTable

    table = LatencyTable(cache or default_latency_cache(), device)

    def measure(key: str, module: nn.Module, shape: Sequence[int]) -> float:
        return float(table.measure(key, module.eval(), torch.randn(batch, *shape), save=False))

    values = space.channel_values
    conv, skip = [], []
    for layer in space.layers:
        grid = torch.zeros(len(space.kernels), len(values), len(space.widths),
                           dtype=torch.float64)
        pool = torch.zeros(len(values), dtype=torch.float64)
        for ci, c in enumerate(values):
            if c not in layer.in_widths:
                continue  # this channel count never enters this layer: probability 0
            shape = (c, layer.in_size, layer.in_size)
            for ki, k in enumerate(space.kernels):
                for wi, w in enumerate(space.widths):
                    grid[ki, ci, wi] = measure(
                        f"cnn/conv{k}/s{layer.stride}/{c}->{w}",
                        conv_bn_relu(c, w, k, layer.stride), shape)
            if space.skip and layer.stride != 1:
                pool[ci] = measure(f"cnn/avgpool3/s{layer.stride}/{c}", skip_path(layer.stride),
                                   shape)
        conv.append(grid)
        skip.append(pool)
    head = torch.zeros(len(values), dtype=torch.float64)
    for ci, c in enumerate(values):
        if c in space.final_widths:
            head[ci] = measure(f"cnn/head/{c}->{space.classes}", _Head(c, space.classes),
                               (c, space.layers[-1].out_size, space.layers[-1].out_size))
    base = measure(f"cnn/stem/s{space.stem_stride}/{space.in_channels}->{space.stem_width}",
                   conv_bn_relu(space.in_channels, space.stem_width, 3, space.stem_stride),
                   (space.in_channels, space.image_size, space.image_size))
    table.save()
    return CostTables(conv, skip, head, base)


class _Head(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=(2, 3)))


def latency_cost(space: CnnSpace, device: str = "cpu", batch: int = 1,
                 cache: Path | None = None) -> LayeredCost:
    """Measured latency (ms), summed over layers; measured lazily on first use."""
    return LayeredCost("latency", "ms", space,
                       lambda: latency_tables(space, device, batch, cache))
