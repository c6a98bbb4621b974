"""Embedding lookups by fbgemm's table-batched embeddings (TBE), optimizer fused in.

``domain.embedding_kernel`` picks the kernel of the ``emb_card`` candidate tables: with
``fbgemm`` (or ``auto`` when ``fbgemm_gpu`` imports and the search runs on the CPU) a
single-process search replaces :class:`HashedEmbeddings` by :class:`TbeEmbeddings`. One
TBE holds every feature's candidate tables (a table per feature, its candidates one
after another: the very layout of ``HashedEmbeddings.weight``), looks a feature's
candidates up as one bag with the Gumbel weights as per-sample weights, and applies the
table optimizer inside its backward pass: the tables never produce a sparse gradient,
which is what made the torch path slow (building, coalescing and stepping 4 rows an
example per feature). Theta's gradient comes back through the per-sample weights.

What differs from the torch path, and why it is acceptable:

- only SGD and Adagrad (at their neutral arguments, Adagrad's ``eps`` aside) have an
  exact fused counterpart (``EXACT_SGD``, ``EXACT_ADAGRAD``: the same update, once per
  step per touched row after summing its gradients, as torch's sparse step does);
  ``fbgemm`` refuses another optimizer by name, ``auto`` keeps the torch path;
- the search's ``clip_grad_norm`` covers the dense weights only: the tables' gradients
  never leave the kernel (as in a distributed search, docs/distributed.md);
- fbgemm keeps the learning rate in float32.

The weights and Adagrad's sums stay buffers of this module (``weight``, ``sum``) that
share their storage with the TBE, so checkpoints carry them and a resumed search
continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dnas_core.config.settings import OptimizerSettings
from dnas_core.config.validate import ConfigError
from dnas_core.engine.optim import group_settings

#: torch's optimizer -> fbgemm's exact counterpart
FUSED = {"SGD": "EXACT_SGD", "Adagrad": "EXACT_ADAGRAD"}
#: arguments of those optimizers at which the fused update equals torch's
NEUTRAL = {"momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False,
           "lr_decay": 0, "initial_accumulator_value": 0, "maximize": False,
           "foreach": None, "differentiable": False, "fused": None}
#: torch Adagrad's default
ADAGRAD_EPS = 1e-10
GROUP = "embeddings"


def fbgemm_available() -> bool:
    """Whether fbgemm's training TBE imports (``pip install dnas-dlrm[distributed]``)."""
    try:
        import fbgemm_gpu.split_table_batched_embeddings_ops_training  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


@dataclass(frozen=True)
class FusedOptimizer:
    """The tables' optimizer as fbgemm runs it: torch's name, LR, LR decay, eps."""

    name: str
    lr: float
    lr_decay: float
    eps: float

    @property
    def fbgemm_name(self) -> str:
        return FUSED[self.name]


def fused_optimizer(optimizer: OptimizerSettings, where: str, what: str
                    ) -> FusedOptimizer:
    """The embeddings group's optimizer of ``optimizer`` (the settings at ``where``) as
    a fused one; a ConfigError naming the key when it has no exact fused counterpart.
    ``what`` says who needs it (``"fbgemm tables"``, ``"sharded tables"``)."""
    group = group_settings(optimizer, GROUP, where)
    key = f"{where}.groups.{GROUP}"
    if group.name not in FUSED:
        raise ConfigError(f"{key}.optimizer: {what} train with fbgemm's fused optimizers, "
                          f"one of {sorted(FUSED)}, not {group.name!r}")
    eps = ADAGRAD_EPS
    for name, value in group.args.items():
        if name == "eps" and group.name == "Adagrad":
            eps = float(value)
        elif NEUTRAL.get(name, object()) != value:
            raise ConfigError(f"{key}.args: {name}={value!r} has no fused counterpart; "
                              f"{what} take only eps (Adagrad)")
    return FusedOptimizer(group.name, group.lr, group.lr_decay, eps)


def _tbe(rows: list[int], dim: int, optimizer: FusedOptimizer, weights: Tensor) -> Any:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        BoundsCheckMode,
        EmbeddingLocation,
        PoolingMode,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from fbgemm_gpu.tbe.config.embedding_config import ComputeDevice

    return SplitTableBatchedEmbeddingBagsCodegen(
        [(r, dim, EmbeddingLocation.HOST, ComputeDevice.CPU) for r in rows],
        optimizer=getattr(EmbOptimType, optimizer.fbgemm_name),
        learning_rate=optimizer.lr, eps=optimizer.eps, weight_decay=0.0,
        pooling_mode=PoolingMode.SUM, bounds_check_mode=BoundsCheckMode.NONE,
        device="cpu", preallocated_host_buffers={"weights": weights})


class TbeEmbeddings(nn.Module):
    """Bags of candidate rows per feature, pooled with per-sample weights, by one TBE.

    ``sizes[j]`` lists feature j's candidate tables (one entry: a plain table); an id is
    looked up at ``id mod size`` in each. ``weight`` (all tables, feature by feature,
    candidate by candidate) is taken over, not copied: the TBE keeps its storage, so
    replacing a module by this one never holds the tables twice (at Criteo Kaggle's
    sizes, 4.8 GB each). ``forward(ids, weights)`` takes ids
    (batch, features) and weights (batch, features, candidates), or None for plain
    tables, and returns (batch, features, dim).
    """

    tbe: Any
    weight: Tensor
    local: Tensor
    offsets: Tensor
    modulus: Tensor
    no_grad: Tensor

    def __init__(self, sizes: list[list[int]], dim: int, weight: Tensor,
                 optimizer: FusedOptimizer):
        super().__init__()
        if weight.device.type != "cpu":
            raise ValueError(f"fbgemm's tables run on the CPU here, not {weight.device}")
        self.sizes, self.dim = sizes, int(dim)
        self.n_options = len(sizes[0])
        self.optimizer = optimizer
        per_feature = [sum(s) for s in sizes]
        if weight.shape != (sum(per_feature), self.dim) or not weight.is_contiguous():
            raise ValueError(f"weight must be contiguous ({sum(per_feature)}, {self.dim}), "
                             f"got {tuple(weight.shape)}")
        tbe = _tbe(per_feature, self.dim, optimizer, weight.detach().view(-1))
        object.__setattr__(self, "tbe", tbe)  # its parameters are not the engine's
        starts = torch.tensor([0, *per_feature[:-1]]).cumsum(0) * self.dim
        if not torch.equal(tbe.weights_offsets.cpu(), starts):
            raise RuntimeError("fbgemm laid the tables out differently than expected")
        # buffers sharing the TBE's storage: checkpoints save them, load copies into them
        self.register_buffer("weight", tbe.weights_host.detach().view(-1, self.dim))
        if optimizer.name == "Adagrad":
            self.register_buffer("sum", tbe.momentum1_host.detach().view(-1, self.dim))
        local = [[sum(s[:i]) for i in range(len(s))] for s in sizes]
        shape = (len(sizes), self.n_options)
        base = torch.tensor([0, *per_feature[:-1]]).cumsum(0).unsqueeze(1)
        self.register_buffer("local", torch.tensor(local).view(shape), persistent=False)
        self.register_buffer("offsets", torch.tensor(local).view(shape) + base,
                             persistent=False)
        self.register_buffer("modulus", torch.tensor(sizes).view(shape), persistent=False)
        self.register_buffer("no_grad", torch.zeros(len(sizes), dtype=torch.int),
                             persistent=False)
        self.trainable = True

    @property
    def total_rows(self) -> int:
        return self.weight.shape[0]

    def set_learning_rate(self, lr: float) -> None:
        self.tbe.set_learning_rate(lr)

    def forward(self, ids: Tensor, weights: Tensor | None = None) -> Tensor:
        if self.weight.data_ptr() != self.tbe.weights_host.data_ptr():
            raise RuntimeError("the fbgemm tables' weight no longer shares the TBE's storage "
                               "(moved off the CPU, or loaded with assign=True)")
        batch, features = ids.shape
        if weights is not None:
            weights = weights.to(torch.float32)
        if self.trainable or not torch.is_grad_enabled():
            # feature-major bags, computed in that order (no copy of the index to reorder)
            by_feature = ids.t().contiguous().unsqueeze(-1)  # (features, batch, 1)
            flat = (torch.remainder(by_feature, self.modulus.unsqueeze(1))
                    + self.local.unsqueeze(1)).view(-1)
            bags = torch.arange(0, flat.numel() + 1, self.n_options, device=flat.device)
            per_sample = None if weights is None else weights.transpose(0, 1).reshape(-1)
            # fbgemm computes the weights' gradient unless told per feature that none is
            # wanted (weights chunks: theta frozen), and that costs as much as the update
            wanted = None if weights is None or weights.requires_grad else self.no_grad
            out = self.tbe(flat, bags, per_sample, feature_requires_grad=wanted)
            return out.view(batch, features, self.dim)
        # architecture chunks: the same rows through torch's kernel, so theta's gradient
        # reaches the weights while nothing reaches (and steps) the tables
        rows = torch.remainder(ids.unsqueeze(-1), self.modulus)
        index = (rows + self.offsets).view(-1, self.n_options)
        out = F.embedding_bag(index, self.weight, mode="sum", per_sample_weights=(
            None if weights is None else weights.reshape(-1, self.n_options)))
        return out.view(batch, features, self.dim)


class FusedTables:
    """The core's ``FusedPart`` for a supernet's TBE tables: trainable flag, schedule."""

    def __init__(self, tables: TbeEmbeddings):
        self.tables = tables
        opt = tables.optimizer
        self.summary = (f"embedding tables by fbgemm TBE ({tables.total_rows} rows x "
                        f"{tables.dim}), {opt.name} as {opt.fbgemm_name} in the backward, lr "
                        f"{opt.lr:g}; clip_grad_norm covers the dense weights only")

    def set_trainable(self, trainable: bool) -> None:
        self.tables.trainable = trainable

    def set_epoch(self, epoch: float) -> None:
        opt = self.tables.optimizer
        self.tables.set_learning_rate(opt.lr * opt.lr_decay ** epoch)
