"""The DLRM backbone (paper VI-B, Fig. 5): embedding tables, MLPs, dot interaction, head.

Every model of the plugin, supernet or sampled, is these four parts wired the same way by
:func:`dlrm_forward`; the supernet swaps searched parts in, the sampled model builds each
part at its chosen shape. Embedding tables of one width are fused into one table with
per-feature row offsets: one lookup kernel and one sparse gradient instead of 26.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def table_rows(cardinalities: Sequence[int], max_rows: int | None) -> list[int]:
    """Rows per feature: its own cardinality, capped at ``max_rows`` (ids taken modulo)."""
    if any(c < 1 for c in cardinalities):
        raise ValueError(f"every cardinality must be at least 1, got {list(cardinalities)}")
    if max_rows is None:
        return [int(c) for c in cardinalities]
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    return [min(int(c), int(max_rows)) for c in cardinalities]


def init_embedding_rows(weight: Tensor, rows: Sequence[int]) -> None:
    """DLRM's init, block by block: U(-1/sqrt(n), 1/sqrt(n)) for a table of n rows."""
    with torch.no_grad():
        start = 0
        for n in rows:
            bound = math.sqrt(1.0 / n)
            weight[start:start + n].uniform_(-bound, bound)
            start += n


def init_linear_block(weight: Tensor, bias: Tensor | None, fan_in: int, fan_out: int) -> None:
    """DLRM's init for one FC: N(0, sqrt(2/(in+out))) weights, N(0, sqrt(1/out)) bias."""
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        if bias is not None:
            bias.normal_(0.0, math.sqrt(1.0 / fan_out))


class FusedEmbedding(nn.Module):
    """All features' tables of one width in one weight, looked up at ``id mod rows_j``.

    ``rows[j]`` is feature j's table size; its block starts at ``offsets[j]``. With
    ``sparse`` the gradient is a sparse tensor holding only the rows a batch touched.
    """

    def __init__(self, rows: Sequence[int], dim: int, sparse: bool = True):
        super().__init__()
        if not rows or dim < 1:
            raise ValueError("a fused embedding needs at least one table and a positive dim")
        self.rows = [int(r) for r in rows]
        self.dim = int(dim)
        self.sparse = sparse
        self.weight = nn.Parameter(torch.empty(sum(self.rows), self.dim))
        init_embedding_rows(self.weight, self.rows)
        offsets = torch.tensor([0, *self.rows[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("modulus", torch.tensor(self.rows, dtype=torch.long),
                             persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (batch, features) int64 -> vectors (batch, features, dim)."""
        index = torch.remainder(ids, self.modulus) + self.offsets
        return F.embedding(index, self.weight, sparse=self.sparse)


class EmbeddingTables(nn.Module):
    """Per-feature tables of any rows and widths, zero-padded to the widest (paper VI-C2).

    Features sharing a width share one :class:`FusedEmbedding`. Each vector is zero-padded
    to the largest width present, so the dot interaction sees equal widths whatever widths
    were chosen, and the parameter count is exactly ``sum(rows[j] * dims[j])``.
    """

    def __init__(self, rows: Sequence[int], dims: Sequence[int], sparse: bool = True):
        super().__init__()
        if len(rows) != len(dims):
            raise ValueError(f"{len(rows)} table sizes for {len(dims)} widths")
        self.dims = [int(d) for d in dims]
        self.width = max(self.dims)
        widths = sorted(set(self.dims))
        self.members = [[j for j, d in enumerate(self.dims) if d == w] for w in widths]
        self.groups = nn.ModuleList(
            FusedEmbedding([rows[j] for j in members], w, sparse)
            for w, members in zip(widths, self.members))
        for i, members in enumerate(self.members):
            self.register_buffer(f"members{i}", torch.tensor(members), persistent=False)
        order = [j for members in self.members for j in members]
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        self.register_buffer("inverse", inverse, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (batch, features) -> (batch, features, width), features in their order."""
        if len(self.groups) == 1:
            return self.groups[0](ids)
        parts = []
        for i, group in enumerate(self.groups):
            vectors = group(ids.index_select(1, getattr(self, f"members{i}")))
            parts.append(F.pad(vectors, (0, self.width - group.dim)))
        return torch.cat(parts, dim=1).index_select(1, self.inverse)


class Mlp(nn.Sequential):
    """FC layers of the given sizes (input first), ReLU after each but maybe the last."""

    def __init__(self, sizes: Sequence[int], final_relu: bool):
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs an input and an output size, got {list(sizes)}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(a, b)
            init_linear_block(linear.weight, linear.bias, a, b)
            layers.append(linear)
            if final_relu or i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.sizes = [int(s) for s in sizes]


def linear_flops(sizes: Sequence[int]) -> int:
    """FLOPs per example of an FC stack: 2 x in x out per layer (biases not counted)."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def module_flops(module: nn.Module) -> int:
    """FLOPs per example of every nn.Linear inside a module, read off the real layers."""
    return sum(2 * m.in_features * m.out_features for m in module.modules()
               if isinstance(m, nn.Linear))


class DotInteraction(nn.Module):
    """Pairwise dot products of the bottom output and every embedding (DLRM's "dot").

    ``self_interaction`` also keeps each vector's dot product with itself (the diagonal).
    The output is the bottom vector followed by the upper triangle of F F^T.
    """

    def __init__(self, n_vectors: int, self_interaction: bool = False):
        super().__init__()
        offset = 0 if self_interaction else 1
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=offset)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.n_pairs = int(rows.numel())

    def output_size(self, width: int) -> int:
        return width + self.n_pairs

    def forward(self, bottom: Tensor, embeddings: Tensor) -> Tensor:
        vectors = torch.cat([bottom.unsqueeze(1), embeddings], dim=1)
        products = torch.bmm(vectors, vectors.transpose(1, 2))
        return torch.cat([bottom, products[:, self.rows, self.cols]], dim=1)


def n_pairs(n_sparse: int, self_interaction: bool) -> int:
    """How many dot products the interaction yields for n_sparse embeddings + the bottom."""
    n = n_sparse + 1
    return n * (n + 1) // 2 if self_interaction else n * (n - 1) // 2


def dlrm_forward(bottom: nn.Module, embeddings: nn.Module, interaction: DotInteraction,
                 top: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
    """dense, sparse -> click probabilities of shape (batch,), after a sigmoid (defect 1)."""
    dense, sparse = inputs
    x = bottom(dense)
    z = interaction(x, embeddings(sparse))
    return torch.sigmoid(top(z)).squeeze(-1)
