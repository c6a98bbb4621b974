"""The DLRM cost models: embedding parameters and bytes, MLP FLOPs, measured latency.

Each answers for a supernet (per-example expected cost from the weights its last forward
drew, differentiable w.r.t. theta) and for one architecture (exact, from its spec, i.e.
from the very shapes the sampled model is built with, so a sampled model's real count
equals ``of(arch)``).

Embedding costs are per feature a function of (rows, width). When both the hash size and
the width are searched the two choices are independent draws, so the expected cost of a
feature is ``sum_{c,d} w_card[c] w_dim[d] cost(rows_c, dim_d)``. MLP costs are per FC
layer a function of (in, out); an FC-of-FC part uses the dependent path probabilities
(:meth:`FcOfFc.expected_cost`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CostModel
from dnas_core.engine.latency import LatencyTable
from dnas_core.engine.supernet import SuperNet
from dnas_dlrm.models.backbone import FusedEmbedding, Mlp
from dnas_dlrm.models.fcfc import FcOfFc
from dnas_dlrm.models.supernet import DlrmSuperNet

EmbCost = Callable[[int, int], float]  # (rows, dim) -> cost of one feature's table
OpCost = Callable[[int, int], float]  # (in, out) -> cost of one FC layer

BYTES_PER_FLOAT32 = 4
LATENCY_BATCH = 512  # examples per timed call: a typical ranking request's candidates
LATENCY_MAX_ROWS = 1 << 18  # larger tables are timed at this size (random rows miss cache)


class EmbeddingCost:
    """A per-feature (rows, dim) cost summed over features (params, bytes, latency)."""

    def __init__(self, name: str, unit: str, per_table: EmbCost, supernet: DlrmSuperNet):
        self.name, self.unit, self.per_table = name, unit, per_table
        tables = [[[per_table(r, d) for d in supernet.dim_options] for r in feature]
                  for feature in supernet.row_options]
        self.table = torch.tensor(tables, dtype=torch.float64)  # (features, n_card, n_dim)

    def expected(self, supernet: SuperNet) -> Tensor:
        card, dim = supernet.embedding_weights()
        cost = torch.einsum("bjc,bjd,jcd->b", card.double(), dim.double(),
                            self.table.to(card.device))
        return cost.to(card.dtype)

    def of(self, architecture: Architecture) -> float:
        spec = architecture.spec
        return float(sum(self.per_table(int(r), int(d))
                         for r, d in zip(spec["hash_sizes"], spec["emb_dims"], strict=True)))

    def scale(self) -> float:
        return float(self.table.flatten(1).max(dim=1).values.sum())


class MlpCost:
    """A per-FC-layer (in, out) cost summed over the bottom and top MLPs.

    A sampled model's MLPs end and start at its own widest table, so their cost depends on
    the widths drawn as well as on the MLP choices: the expectation is taken over the
    distribution of the widest width (:meth:`DlrmSuperNet.width_probabilities`), independent
    of the MLP draws, with the parts priced at each width.
    """

    def __init__(self, name: str, unit: str, per_layer: OpCost, supernet: DlrmSuperNet):
        self.name, self.unit, self.per_layer = name, unit, per_layer
        self.widths = supernet.width_options()
        self.tables: list[dict[str, dict[str, Tensor]]] = []  # per width: part -> tables
        self.fixed: list[float] = []  # per width: the unsearched MLPs' cost
        for width in self.widths:
            ends = supernet.mlp_ends(width)
            tables, fixed = {}, 0.0
            for part, module in self._parts(supernet):
                n_in, n_out = ends[part]
                if isinstance(module, FcOfFc):
                    tables[part] = module.cost_tables(per_layer, n_in, n_out)
                elif isinstance(module, Mlp):
                    fixed += self.layers_cost([n_in, *module.sizes[1:-1], n_out])
            self.tables.append(tables)
            self.fixed.append(fixed)
        self._scale = self.fixed[-1] + sum(module.largest_cost(per_layer)
                                           for _, module in self._parts(supernet)
                                           if isinstance(module, FcOfFc))

    @staticmethod
    def _parts(supernet: SuperNet) -> list[tuple[str, object]]:
        return [("bottom_mlp", supernet.bottom_mlp), ("top_mlp", supernet.top_mlp)]

    def layers_cost(self, sizes: Sequence[int]) -> float:
        return float(sum(self.per_layer(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:])))

    def expected(self, supernet: SuperNet) -> Tensor:
        if supernet.last_batch_size is None:
            raise RuntimeError("no forward pass yet")
        p_width = supernet.width_probabilities()  # (b, n_width)
        total = torch.zeros(p_width.shape[0], dtype=torch.float64, device=p_width.device)
        for k, (tables, fixed) in enumerate(zip(self.tables, self.fixed, strict=True)):
            at_width = torch.full_like(total, fixed)
            for part, module in self._parts(supernet):
                if part in tables:
                    at_width = at_width + module.expected_cost(tables[part])
            total = total + p_width[:, k] * at_width
        return total.float()

    def of(self, architecture: Architecture) -> float:
        spec = architecture.spec
        return self.layers_cost(spec["bottom_mlp"]) + self.layers_cost(spec["top_mlp"])

    def scale(self) -> float:
        return float(self._scale)


class SumCost:
    """Several costs in the same unit added (e.g. embedding plus MLP latency)."""

    def __init__(self, name: str, unit: str, parts: Sequence[CostModel]):
        self.name, self.unit, self.parts = name, unit, list(parts)

    def expected(self, supernet: SuperNet) -> Tensor:
        return sum(part.expected(supernet) for part in self.parts)

    def of(self, architecture: Architecture) -> float:
        return float(sum(part.of(architecture) for part in self.parts))

    def scale(self) -> float:
        return float(sum(part.scale() for part in self.parts))


def emb_params(supernet: DlrmSuperNet) -> EmbeddingCost:
    return EmbeddingCost("emb_params", "parameters", lambda r, d: float(r * d), supernet)


def emb_bytes(supernet: DlrmSuperNet) -> EmbeddingCost:
    return EmbeddingCost("emb_bytes", "bytes",
                         lambda r, d: float(r * d * BYTES_PER_FLOAT32), supernet)


def mlp_flops(supernet: DlrmSuperNet) -> MlpCost:
    return MlpCost("mlp_flops", "FLOPs", lambda a, b: float(2 * a * b), supernet)


def latency_cache_path() -> Path:
    """``$DNAS_LATENCY_CACHE``, else ``~/.cache/dnas/latency.json``."""
    env = os.environ.get("DNAS_LATENCY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dnas" / "latency.json"


class _LinearRelu(torch.nn.Sequential):
    def __init__(self, a: int, b: int):
        super().__init__(torch.nn.Linear(a, b), torch.nn.ReLU())


def latency(supernet: DlrmSuperNet, table: LatencyTable,
            batch: int = LATENCY_BATCH) -> SumCost:
    """Measured latency (ms per batch of ``batch``): every FC shape and every table shape
    any architecture of this supernet can have, timed once each on ``table``'s device."""
    @functools.cache
    def fc(a: int, b: int) -> float:
        return table.measure(f"fc:{a}x{b}", _LinearRelu(a, b), torch.zeros(batch, a),
                             save=False)

    @functools.cache
    def lookup(rows: int, dim: int) -> float:
        timed_rows = min(rows, LATENCY_MAX_ROWS)
        ids = torch.randint(0, timed_rows, (batch, 1), generator=torch.Generator().manual_seed(0))
        return table.measure(f"emb:{timed_rows}x{dim}", FusedEmbedding([timed_rows], dim, False),
                             ids, save=False)

    parts = [EmbeddingCost("emb_latency", "ms", lookup, supernet),
             MlpCost("mlp_latency", "ms", fc, supernet)]
    table.save()
    return SumCost("latency", "ms", parts)
