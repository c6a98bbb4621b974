"""One search run as several ranks (``torchrun``): the small interface the engine needs.

The core knows nothing of how a domain shards its weights. It reads torchrun's
environment, joins the process group, and makes a rank behave like one slice of the
single-process search: each rank reads a contiguous share of every global batch, its loss
is weighted so that averaging gradients across ranks gives the gradient of the global
batch's mean loss, replicated weights and theta are averaged (one architecture
distribution, never one per rank), and only rank 0 writes. A plugin may take some weights
off the replicated set (``dnas_shard_supernet``, e.g. TorchRec embedding tables); it
returns a :class:`ShardedPart`, whose own optimizer and state the engine drives through
this protocol. Without that hook a distributed run is plain data parallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

#: torchrun's variables that say which rank this process is
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands among the ranks of one run (1 rank: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """Rank 0 writes checkpoints, architectures and logs; the others only compute."""
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single rank when unset."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name in RANK_VARIABLES:
            raw = environ.get(name)
            if raw is None:
                values[name] = 1 if name == "WORLD_SIZE" else 0
                continue
            try:
                values[name] = int(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}={raw!r} is not an integer") \
                    from None
        env = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
        if env.world_size < 1 or not 0 <= env.rank < env.world_size:
            raise ValueError(f"RANK={env.rank} does not fit WORLD_SIZE={env.world_size}")
        return env

    def device(self, device: torch.device) -> torch.device:
        """The rank's own device: ``cuda:LOCAL_RANK`` when the run is on CUDA."""
        if device.type == "cuda" and self.active and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """Join the run's process group (gloo on CPU, nccl on CUDA) unless already in it."""
    if not env.active or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(env.device(device))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=timedelta(minutes=10))


class ShardedPart(Protocol):
    """Weights a plugin split across the ranks, with their own (fused) optimizer.

    They are not parameters of the supernet module (so neither the engine's optimizer
    nor its gradient averaging sees them) and not in its ``state_dict``.
    """

    #: the placement, as printed in the trial log
    plan: str

    def set_trainable(self, trainable: bool) -> None:
        """Weights chunks train the tables; architecture chunks must leave them alone."""

    def set_epoch(self, epoch: float) -> None:
        """Apply the learning-rate schedule of the weights optimizer at this epoch."""

    def state_dict(self) -> dict[str, Any]:
        """Tables and optimizer state, as ``torch.distributed.checkpoint`` saves them."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class DataParallel:
    """The collectives one rank of a distributed search needs; see the module docstring."""

    def __init__(self, env: DistEnv, sharded: ShardedPart | None = None):
        if not env.active:
            raise ValueError("DataParallel needs WORLD_SIZE > 1")
        self.env = env
        self.sharded = sharded

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` examples."""
        start = n * self.env.rank // self.env.world_size
        stop = n * (self.env.rank + 1) // self.env.world_size
        if stop == start:
            raise ValueError(f"a batch of {n} examples cannot feed {self.env.world_size} "
                             f"ranks; raise search.batch_size")
        return slice(start, stop)

    def loss_weight(self, local: int, total: int) -> float:
        """Weight of a rank's mean loss such that the average over ranks of the weighted
        losses is the global batch's mean loss (ranks may hold unequal shares)."""
        return local * self.env.world_size / total

    def mean(self, value: Tensor) -> Tensor:
        """The average over ranks of a (weighted) scalar: every rank gets the same one."""
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.env.world_size

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of replicated weights (and theta) in one all-reduce; a
        parameter without a gradient on a rank counts as a zero gradient there."""
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        grads = [torch.zeros_like(p) if p.grad is None
                 else (p.grad.to_dense() if p.grad.is_sparse else p.grad) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.env.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            mean = flat[offset:offset + g.numel()].view_as(g)
            offset += g.numel()
            sparse = p.grad is not None and p.grad.is_sparse
            p.grad = mean.to_sparse(1) if sparse else mean  # rows, as nn.Embedding's

    def broadcast(self, tensors: Sequence[Tensor]) -> None:
        """Give every rank rank 0's values (replicated weights, buffers, theta)."""
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def max_difference(self, tensors: Sequence[Tensor]) -> float:
        """The largest |x - x on rank 0| over these tensors and every rank."""
        worst = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for tensor in tensors:
                reference = tensor.detach().clone()
                dist.broadcast(reference, src=0)
                worst = torch.maximum(worst, (tensor.detach() - reference).abs().max()
                                      .double().cpu())
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst)

    def check_identical(self, tensors: Sequence[Tensor], what: str) -> None:
        """Refuse to go on when the ranks' copies of ``what`` drifted apart at all."""
        difference = self.max_difference(tensors)
        if difference != 0.0:
            raise RuntimeError(f"{what} differs across ranks by up to {difference:.3g}: the "
                               f"ranks no longer share one architecture distribution")

    def barrier(self) -> None:
        dist.barrier()
