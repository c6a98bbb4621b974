"""Embedding-cardinality search (paper VI-C3, Fig. 8): one table per hash size, mixed.

Feature j's candidate hash sizes are fractions of ITS OWN table rows (never another
feature's: defect 6), at least one row each; an id is looked up at ``id mod H``. All
candidate tables of all features live in one weight with offsets, and one
``embedding_bag`` call with per-sample weights does every lookup and the per-example
weighted sum at once (see benchmarks/bench_supernets.py for the measured alternatives).
With fractions decreasing by 10x the tables take at most about 1/(1-0.1) = 1.11x the
memory of the full ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dnas_dlrm.models.backbone import init_embedding_rows

LookupMode = Literal["bag", "gather"]


def hash_sizes(rows: Sequence[int], fractions: Sequence[float]) -> list[list[int]]:
    """Candidate hash sizes per feature: max(1, round(fraction x that feature's rows))."""
    return [[max(1, round(f * r)) for f in fractions] for r in rows]


class HashedEmbeddings(nn.Module):
    """Every feature's candidate tables fused in one weight; lookups mixed per example.

    ``forward(ids, weights)`` takes ids (batch, features) and option weights
    (batch, features, n_options) and returns (batch, features, dim). ``mode="bag"`` uses
    ``embedding_bag`` with per-sample weights (fused lookup and sum); ``"gather"`` looks
    up every option and sums with a batched product (kept for the benchmark).
    """

    def __init__(self, rows: Sequence[int], fractions: Sequence[float], dim: int,
                 sparse: bool = True, mode: LookupMode = "bag"):
        super().__init__()
        if mode not in ("bag", "gather"):
            raise ValueError(f"unknown lookup mode {mode!r}")
        self.sizes = hash_sizes(rows, fractions)
        self.n_options = len(fractions)
        self.dim, self.sparse, self.mode = int(dim), sparse, mode
        flat = [h for feature in self.sizes for h in feature]
        self.weight = nn.Parameter(torch.empty(sum(flat), self.dim))
        init_embedding_rows(self.weight, flat)
        starts = torch.tensor([0, *flat[:-1]], dtype=torch.long).cumsum(0)
        shape = (len(self.sizes), self.n_options)
        self.register_buffer("offsets", starts.view(shape), persistent=False)
        self.register_buffer("modulus", torch.tensor(flat, dtype=torch.long).view(shape),
                             persistent=False)

    @property
    def total_rows(self) -> int:
        return self.weight.shape[0]

    def indices(self, ids: Tensor) -> Tensor:
        """(batch, features) ids -> (batch, features, n_options) rows of the fused weight."""
        return torch.remainder(ids.unsqueeze(-1), self.modulus) + self.offsets

    def forward(self, ids: Tensor, weights: Tensor) -> Tensor:
        batch, features = ids.shape
        index = self.indices(ids)
        weights = weights.to(self.weight.dtype)
        if self.mode == "bag":
            out = F.embedding_bag(index.view(-1, self.n_options), self.weight, mode="sum",
                                  sparse=self.sparse,
                                  per_sample_weights=weights.reshape(-1, self.n_options))
            return out.view(batch, features, self.dim)
        vectors = F.embedding(index.view(-1, self.n_options), self.weight, sparse=self.sparse)
        mixed = torch.bmm(weights.reshape(-1, 1, self.n_options), vectors)
        return mixed.view(batch, features, self.dim)
