"""Embedding-dimension search (paper VI-C2, Fig. 7): prefix masks over one wide table.

Each feature keeps one table of the largest candidate width; option d keeps the first d
columns. Because every option is a prefix, the per-example mix of the masked vectors
``sum_o w_o * (v * mask_o)`` equals ``v * (w @ masks)``: one lookup and one per-column
weight, never a copy of the vector per option. Column c's weight is the total weight of
the options whose width covers c.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class DimMask(nn.Module):
    """Applies per-example, per-feature mixing weights over width options to vectors."""

    def __init__(self, options: Sequence[int]):
        super().__init__()
        if not options or any(d < 1 for d in options):
            raise ValueError(f"width options must be positive, got {list(options)}")
        self.options = [int(d) for d in options]
        self.width = max(self.options)
        columns = torch.arange(self.width)
        masks = torch.stack([(columns < d).float() for d in self.options])
        self.register_buffer("masks", masks, persistent=False)  # (n_options, width)
        self.register_buffer("values", torch.tensor(self.options, dtype=torch.float32),
                             persistent=False)

    def column_weights(self, weights: Tensor) -> Tensor:
        """(batch, features, n_options) option weights -> (batch, features, width)."""
        return torch.matmul(weights, self.masks.to(weights.dtype))

    def forward(self, vectors: Tensor, weights: Tensor) -> Tensor:
        """vectors (batch, features, width) masked and mixed by weights (b, f, n_options)."""
        return vectors * self.column_weights(weights).to(vectors.dtype)
