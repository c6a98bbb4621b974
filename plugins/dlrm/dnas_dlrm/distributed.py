"""The DLRM supernets' embedding tables sharded with TorchRec (the ``distributed`` extra).

Imported only by a distributed search (``dnas_shard_supernet``), so the default install
needs no TorchRec. The supernet's fused table module is replaced, in place, by
:class:`ShardedLookup`: an ``EmbeddingBagCollection`` placed by TorchRec's planner
(table-wise, row-wise or column-wise as it decides) and sharded by
``DistributedModelParallel``, initialised with the very weights the single-process
supernet drew.

- plain tables and ``emb_dim``: one table per feature at the widest option; the prefix
  mask (``DimMask``) stays a dense op on the looked-up vectors.
- ``emb_card``: one table per (feature, candidate hash size), looked up at
  ``id mod size``; the per-example mix over candidates is a dense weighted sum of the
  looked-up vectors, so theta's gradient flows through ordinary autograd (not through the
  KJT's per-sample weights, whose gradient the fused kernels do not all provide).

The tables train with TorchRec's fused optimizer, applied in the backward pass; see
:func:`fused_params` for what matches the single-process optimizer and what does not.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dnas_core.config.settings import OptimizerSettings
from dnas_core.engine.distributed import DistEnv
from dnas_dlrm.models import tbe
from dnas_dlrm.models.emb_card import HashedEmbeddings
from dnas_dlrm.models.supernet import DlrmSuperNet


def fused_params(optimizer: OptimizerSettings) -> tuple[dict[str, Any], float, float]:
    """TorchRec's fused optimizer for the tables, its LR and LR decay.

    SGD becomes EXACT_SGD and Adagrad EXACT_ADAGRAD: the same update rule, applied once
    per step to each touched row after summing its gradients, as torch's sparse step
    does. What differs from a single process: gradient clipping (``clip_grad_norm``)
    leaves the tables out (their gradients never leave the fused kernel), and only
    those two optimizers at their neutral arguments (no momentum, weight decay, LR decay
    inside Adagrad, or initial accumulator) are accepted (:func:`tbe.fused_optimizer`).
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    fused = tbe.fused_optimizer(optimizer, "search.weights_optimizer", "sharded tables")
    params: dict[str, Any] = {"optimizer": getattr(EmbOptimType, fused.fbgemm_name),
                              "learning_rate": fused.lr}
    if fused.name == "Adagrad":
        params["eps"] = fused.eps
    return params, fused.lr, fused.lr_decay


class ShardedLookup(nn.Module):
    """Drop-in for the supernet's table module: ``(ids[, card weights]) -> (b, f, width)``.

    The sharded collection is kept out of this module's parameters and state (the core
    replicates and checkpoints those); :class:`ShardedTables` owns it.
    """

    def __init__(self, dmp: nn.Module, keys: list[list[str]], moduli: Tensor):
        super().__init__()
        object.__setattr__(self, "dmp", dmp)
        self.keys = keys  # per feature, its tables' keys (one, or one per candidate)
        self.register_buffer("moduli", moduli, persistent=False)  # (features, candidates)
        self.trainable = True

    def _lookup(self, ids: Tensor) -> Tensor:
        from torchrec import KeyedJaggedTensor

        batch, features = ids.shape
        candidates = self.moduli.shape[1]
        rows = torch.remainder(ids.unsqueeze(-1), self.moduli)  # (b, f, candidates)
        flat = [k for keys in self.keys for k in keys]
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=flat, values=rows.permute(1, 2, 0).reshape(-1),
            lengths=torch.ones(len(flat) * batch, dtype=torch.int32, device=ids.device))
        pooled = self.dmp(kjt)
        pooled = pooled.wait() if hasattr(pooled, "wait") else pooled
        by_key = pooled.to_dict()
        vectors = torch.stack([by_key[k] for k in flat], dim=1)
        return vectors.view(batch, features, candidates, -1)

    def forward(self, ids: Tensor, weights: Tensor | None = None) -> Tensor:
        if self.trainable:
            vectors = self._lookup(ids)
        else:  # an architecture chunk: no gradient may reach (and step) the tables
            with torch.no_grad():
                vectors = self._lookup(ids)
        if weights is None:
            return vectors[:, :, 0]
        return (weights.to(vectors.dtype).unsqueeze(-1) * vectors).sum(dim=2)


class ShardedTables:
    """The core's ``ShardedPart`` for the supernet's tables: plan, schedule, state."""

    def __init__(self, lookup: ShardedLookup, plan: str, lr: float, decay: float):
        self.lookup, self.plan = lookup, plan
        self.lr, self.decay = lr, decay

    @property
    def dmp(self) -> Any:
        return self.lookup.dmp

    def set_trainable(self, trainable: bool) -> None:
        self.lookup.trainable = trainable

    def set_epoch(self, epoch: float) -> None:
        optimizer = self.dmp.fused_optimizer
        for group in optimizer.param_groups:
            group["lr"] = self.lr * self.decay ** epoch
        optimizer.zero_grad()  # TorchRec hands the LR to the fused kernels here

    def state_dict(self) -> dict[str, Any]:
        return {"tables": self.dmp.state_dict(),
                "optimizer": self.dmp.fused_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dmp.load_state_dict(state["tables"])
        self.dmp.fused_optimizer.load_state_dict(state["optimizer"])


def _tables(supernet: DlrmSuperNet) -> tuple[list[list[str]], list[list[Tensor]], Tensor]:
    """Per feature: its tables' keys and initial weights, and the moduli (f, candidates)."""
    module = supernet.embeddings.tables
    weight = module.weight.detach()
    keys, weights, moduli = [], [], []
    for j, sizes in enumerate(supernet.row_options):
        if isinstance(module, HashedEmbeddings):
            starts = [int(s) for s in module.offsets[j]]
        else:
            starts = [int(module.offsets[j])]
        keys.append([f"f{j}_{o}" for o in range(len(sizes))])
        weights.append([weight[s:s + n] for s, n in zip(starts, sizes, strict=True)])
        moduli.append(list(sizes))
    return keys, weights, torch.tensor(moduli, dtype=torch.long)


def shard_supernet(supernet: DlrmSuperNet, env: DistEnv, device: torch.device,
                   optimizer: OptimizerSettings) -> ShardedTables:
    """Replace the supernet's tables by a TorchRec-sharded collection, in place."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.comm_ops import set_gradient_division
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints

    # the pooled all-to-all divides the tables' gradients by the world size on the way
    # back, as the core averages the replicated ones: both see the global batch's mean
    set_gradient_division(True)
    params, lr, decay = fused_params(optimizer)
    keys, weights, moduli = _tables(supernet)
    configs = [EmbeddingBagConfig(name=f"t_{key}", embedding_dim=supernet.width,
                                  num_embeddings=int(w.shape[0]), feature_names=[key])
               for feature_keys, feature_weights in zip(keys, weights, strict=True)
               for key, w in zip(feature_keys, feature_weights, strict=True)]
    collection = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    sharder = EmbeddingBagCollectionSharder(fused_params=params)
    constraints = {c.name: ParameterConstraints(
        sharding_types=["table_wise", "row_wise", "column_wise"], compute_kernels=["fused"])
        for c in configs}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=env.world_size, compute_device=device.type,
                          local_world_size=_local_world(env)),
        constraints=constraints)
    plan = planner.collective_plan(collection, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(collection, device=device, plan=plan, sharders=[sharder])
    initial = {f"t_{key}": w for feature_keys, feature_weights in zip(keys, weights, strict=True)
               for key, w in zip(feature_keys, feature_weights, strict=True)}
    _copy_in(dmp, initial)
    lookup = ShardedLookup(dmp, keys, moduli.to(device))
    supernet.embeddings.tables = lookup
    return ShardedTables(lookup, str(plan), lr, decay)


def _local_world(env: DistEnv) -> int:
    """Ranks on this machine (torchrun's LOCAL_WORLD_SIZE): the planner's host grouping."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))


def _copy_in(dmp: nn.Module, initial: dict[str, Tensor]) -> None:
    """Every rank's shards take their block of the single-process initial weights."""
    with torch.no_grad():
        for name, value in dmp.state_dict().items():
            table = name.split(".")[-2]
            for shard in value.local_shards():
                (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                shard.tensor.copy_(initial[table][r0:r0 + nr, c0:c0 + nc])
