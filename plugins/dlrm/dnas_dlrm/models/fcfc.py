"""FC-of-FC MLP supernet (paper VI-C1, Fig. 6): every MLP of up to N layers over given sizes.

The supernet is a DAG. Node layers 1..N-1 each hold one node per size option; the input
and output nodes have fixed sizes. Into node (l, s) run an FC operator from every node of
layer l-1 (from the input for l = 1) and, for l >= 2, a skip from the same-size node
(l-1, s), which lets the depth shrink. Into the output run FCs from every node of layer
N-1. Each node's value is the per-example Gumbel-weighted sum of its incoming operators;
every node has its own choice (one grouped Decision per node layer: row = node).

An FC operator is Linear then ReLU (the output node's operators of a top MLP have no ReLU:
the DLRM head applies the sigmoid). All FCs leaving one source node are one Linear whose
output is the concatenation of every target size, so a node layer costs one matmul per
source node (exactly the FLOPs of its operators); each target node then adds its slice of
each, weighted by a per-example column. The backward keeps those outputs and nothing the
size of a layer per option: for the paper's space (sizes 128-1024, 5 layers, batch 2048)
the training step's peak is 1.67 GiB, against 2.07 GiB when a weight was spread over every
column first. ``recompute`` recomputes the node layers in the backward instead of keeping
them: 0.98 GiB (benchmarks/bench_supernets.py).

Hard sampling walks back from the output along the chosen operators (defect 2 of the
original: it followed the first option and never reversed). The expected cost propagates
use probabilities backwards, through skips too (defect 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dnas_core.engine.supernet import Decision, SuperNet
from dnas_dlrm.models.backbone import init_linear_block

OpCost = Callable[[int, int], float]


def _fused_linear(n_in: int, outs: Sequence[int]) -> nn.Linear:
    """One Linear from n_in to every size in ``outs``, each block initialised as its own FC."""
    linear = nn.Linear(n_in, sum(outs))
    start = 0
    for n_out in outs:
        init_linear_block(linear.weight[start:start + n_out], linear.bias[start:start + n_out],
                          n_in, n_out)
        start += n_out
    return linear


class FcOfFc(SuperNet):
    """MLP supernet from ``n_in`` to ``n_out`` with hidden ``sizes`` and up to ``max_layers``.

    Decisions (names relative to this module): ``layer{l}`` for node layers l = 2..N-1,
    shape (k, k + 1): row = target node, options = FC from each node of layer l-1, then
    skip; ``output``, shape (k,): FC from each node of layer N-1. Layer 1 has no choice.
    """

    def __init__(self, n_in: int, n_out: int, sizes: Sequence[int], max_layers: int,
                 final_relu: bool, recompute: bool = False):
        super().__init__()
        self.recompute = recompute
        if max_layers < 1 or not sizes:
            raise ValueError("FC-of-FC needs at least one layer and one size option")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.sizes = [int(s) for s in sizes]
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"size options must be distinct, got {self.sizes}")
        self.max_layers = int(max_layers)
        self.final_relu = final_relu
        self.n_node_layers = self.max_layers - 1
        k = len(self.sizes)
        self.last_batch_size: int | None = None
        if self.n_node_layers == 0:
            self.direct = nn.Linear(self.n_in, self.n_out)
            init_linear_block(self.direct.weight, self.direct.bias, self.n_in, self.n_out)
            return
        self.first = _fused_linear(self.n_in, self.sizes)
        self.hidden = nn.ModuleList(
            nn.ModuleList(_fused_linear(s, self.sizes) for s in self.sizes)
            for _ in range(2, self.n_node_layers + 1))
        self.out_ops = nn.ModuleList(_fused_linear(s, [self.n_out]) for s in self.sizes)
        labels = [f"fc from {s}" for s in self.sizes]
        for layer in range(2, self.n_node_layers + 1):
            self.add_module(f"layer{layer}", Decision(
                k + 1, groups=k, labels=[*labels, "skip"],
                group_labels=[f"node {s}" for s in self.sizes]))
        self.output = Decision(k, labels=labels)

    # ----- forward ----------------------------------------------------------------------------
    def layer_decision(self, layer: int) -> Decision:
        return getattr(self, f"layer{layer}")

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        self.last_batch_size = batch
        if self.n_node_layers == 0:
            out = self.direct(x)
            return torch.relu(out) if self.final_relu else out
        h = torch.relu(self.first(x))  # all nodes of layer 1, side by side: their only FC
        for layer, ops in enumerate(self.hidden, start=2):
            # drawn here, outside any recomputation, so the backward redraws no noise
            weights = self.layer_decision(layer).mix_weights(batch).to(x.dtype)  # (b, t, k+1)
            if self.recompute and torch.is_grad_enabled():
                h = checkpoint(self._node_layer, h, weights, ops, use_reentrant=False)
            else:
                h = self._node_layer(h, weights, ops)
        weights = self.output.mix_weights(batch).to(x.dtype)  # (b, k)
        value = None
        for s, (op, node) in enumerate(zip(self.out_ops, torch.split(h, self.sizes, dim=1))):
            out = op(node)
            if self.final_relu:
                out = torch.relu(out)
            term = weights[:, s:s + 1]
            value = out * term if value is None else torch.addcmul(value, out, term)
        return value

    def _node_layer(self, h: Tensor, weights: Tensor, ops: nn.ModuleList) -> Tensor:
        """One node layer: every FC leaving a source, to all targets at once; each target
        node then adds its slice of each, weighted by a (b, 1) column, so the backward keeps
        only those outputs and the weights, never a weight spread over every column."""
        k = len(self.sizes)
        sources = torch.split(h, self.sizes, dim=1)
        outs = [torch.split(torch.relu(op(source)), self.sizes, dim=1)
                for op, source in zip(ops, sources)]
        nodes = []
        for t, skip in enumerate(sources):
            node = skip * weights[:, t, k:]
            for i, out in enumerate(outs):
                node = torch.addcmul(node, out[t], weights[:, t, i:i + 1])
            nodes.append(node)
        return torch.cat(nodes, dim=1)

    # ----- architectures ----------------------------------------------------------------------
    def layers(self, choices: Mapping[str, Any], prefix: str = "") -> list[int]:
        """Sizes of the sampled MLP, input first, found by walking back from the output.

        ``choices`` maps decision names (with ``prefix``, e.g. ``"bottom_mlp."``) to raw
        choices. A skip moves to the same-size node of the layer below without adding a
        layer; an FC adds its target node's size and moves to its source node.
        """
        if self.n_node_layers == 0:
            return [self.n_in, self.n_out]
        k = len(self.sizes)
        hidden: list[int] = []
        node = int(choices[f"{prefix}output"])
        for layer in range(self.n_node_layers, 1, -1):
            pick = int(choices[f"{prefix}layer{layer}"][node])
            if pick == k:  # skip: same node, one layer down
                continue
            hidden.append(self.sizes[node])
            node = pick
        hidden.append(self.sizes[node])  # layer 1: the FC from the input
        return [self.n_in, *reversed(hidden), self.n_out]

    def choices_for(self, hidden: Sequence[int]) -> dict[str, Any] | None:
        """Raw choices whose :meth:`layers` are ``[n_in, *hidden, n_out]``, or None when the
        space cannot express them (a size not offered, or too many layers). Node layers
        above the MLP's depth are skips; choices off the path are the first option."""
        k = len(self.sizes)
        if self.n_node_layers == 0 or not hidden or len(hidden) > self.n_node_layers \
                or any(h not in self.sizes for h in hidden):
            return None if hidden or self.n_node_layers else {}
        nodes = [self.sizes.index(h) for h in hidden]  # node of each hidden layer, bottom up
        choices: dict[str, Any] = {"output": nodes[-1]}
        for layer in range(2, self.n_node_layers + 1):
            row = [0] * k
            if layer <= len(nodes):
                row[nodes[layer - 1]] = nodes[layer - 2]
            else:
                row[nodes[-1]] = k  # skip: the MLP ended below this layer
            choices[f"layer{layer}"] = row
        return choices

    def decode(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        return {"layers": self.layers(choices)}

    # ----- cost -------------------------------------------------------------------------------
    def cost_tables(self, op_cost: OpCost, n_in: int | None = None,
                    n_out: int | None = None) -> dict[str, Tensor]:
        """Per-operator costs: ``first`` (k,), ``hidden`` (source k, target k), ``out`` (k,).

        ``n_in`` / ``n_out`` price the MLP a sampled model builds when its input or output
        is narrower than the supernet's (a DLRM's widest drawn embedding sets both).
        """
        s = self.sizes
        n_in = self.n_in if n_in is None else int(n_in)
        n_out = self.n_out if n_out is None else int(n_out)
        if self.n_node_layers == 0:
            return {"direct": torch.tensor(float(op_cost(n_in, n_out)), dtype=torch.float64)}
        return {
            "first": torch.tensor([op_cost(n_in, b) for b in s], dtype=torch.float64),
            "hidden": torch.tensor([[op_cost(a, b) for b in s] for a in s],
                                   dtype=torch.float64),
            "out": torch.tensor([op_cost(a, n_out) for a in s], dtype=torch.float64),
        }

    def expected_cost(self, tables: Mapping[str, Tensor]) -> Tensor:
        """Per-example expected cost (batch,) under the weights the last forward used.

        use(output) = 1; an FC into node t from source s passes use(t) * w[t, s] to s and
        costs that much times its own cost; a skip into t passes use(t) * w[t, skip] to the
        same-size node below at no cost. Layer-1 nodes pay their FC from the input.
        """
        if self.n_node_layers == 0:
            if self.last_batch_size is None:
                raise RuntimeError("expected_cost before any forward pass")
            return tables["direct"].expand(self.last_batch_size)
        k = len(self.sizes)
        w_out = self.output.last_weights
        if w_out is None:
            raise RuntimeError("expected_cost before any forward pass")
        w_out = w_out.double()
        device = w_out.device
        cost = w_out @ tables["out"].to(device)
        use = w_out  # (b, k): use probability of each node of layer N-1
        hidden_cost = tables["hidden"].to(device)
        for layer in range(self.n_node_layers, 1, -1):
            w = self.layer_decision(layer).last_weights.double()  # (b, target, k + 1)
            fc = w[..., :k]  # (b, target, source)
            flow = use.unsqueeze(-1) * fc  # use flowing from target t into source s
            cost = cost + torch.einsum("bts,st->b", flow, hidden_cost)
            use = flow.sum(dim=1) + use * w[..., k]
        return cost + use @ tables["first"].to(device)

    def largest_cost(self, op_cost: OpCost) -> float:
        """Cost of the deepest MLP at the largest size: a scale for normalising."""
        top = max(self.sizes)
        if self.n_node_layers == 0:
            return float(op_cost(self.n_in, self.n_out))
        return float(op_cost(self.n_in, top) + (self.n_node_layers - 1) * op_cost(top, top)
                     + op_cost(top, self.n_out))
