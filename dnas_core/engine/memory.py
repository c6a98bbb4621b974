"""How much memory a supernet's search needs, known before a byte of it is allocated.

The supernet is built on the meta device (shapes without storage), so a space that cannot
fit the device is refused in seconds, saying how many devices would hold it, instead of
failing after allocating tens of gigabytes: an uncapped Criteo Kaggle emb_dim supernet with
128-wide options holds 4.3 billion weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dnas_core.config.settings import OptimizerSettings
from dnas_core.engine.supernet import SuperNet

GIB = 1 << 30

#: state tensors torch.optim keeps per parameter, each the parameter's size
STATE_PER_PARAMETER = {"Adam": 2, "AdamW": 2, "SparseAdam": 2, "NAdam": 2, "RAdam": 2,
                       "Adamax": 2, "Adadelta": 2, "Adagrad": 1, "ASGD": 1, "Rprop": 2,
                       "LBFGS": 2}
ASSUMED_STATE = 2  # an optimizer not listed: assumed as heavy as Adam


class DoesNotFit(RuntimeError):
    """The supernet needs more memory than its device has."""


def state_tensors(name: str, args: dict) -> int:
    """State tensors per parameter of optimizer ``name`` with arguments ``args``."""
    if name == "SGD":
        return 1 if args.get("momentum", 0) else 0
    if name == "RMSprop":
        return 1 + bool(args.get("momentum", 0)) + bool(args.get("centered", False))
    if name in ("Adam", "AdamW") and args.get("amsgrad", False):
        return 3
    return STATE_PER_PARAMETER.get(name, ASSUMED_STATE)


def size_text(n: int) -> str:
    """Bytes in the unit that reads best: KiB, MiB or GiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1024:.1f} KiB"


def _bytes(params: list[nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one search step needs: weights, their gradients and optimizer state, split
    into what a distributed run shards (embedding tables) and what every device holds."""

    sharded: int  # sharded groups' weights + dense gradients + optimizer state
    replicated: int  # the other weights, theta, their gradients and optimizer state
    weights: int
    gradients: int
    optimizer_state: int
    activations: int | None  # None: the domain gives no estimate
    sharded_groups: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.sharded + self.replicated + (self.activations or 0)

    def describe(self) -> str:
        acts = ("not estimated by this domain" if self.activations is None
                else size_text(self.activations))
        return (f"weights {size_text(self.weights)}, gradients {size_text(self.gradients)}, "
                f"optimizer state {size_text(self.optimizer_state)}, activations {acts}; "
                f"{size_text(self.total)} in all")

    def per_rank(self, ranks: int) -> int:
        """What each of ``ranks`` devices holds when the sharded part and the batch are
        split evenly over them (the planner's balance is not guaranteed)."""
        return self.replicated + -(-(self.sharded + (self.activations or 0)) // ranks)

    def devices_needed(self, capacity: int) -> int | None:
        """Devices of ``capacity`` bytes that hold it with the sharded part split evenly;
        None when the replicated part alone does not fit one."""
        room = capacity - self.replicated - (self.activations or 0)
        if room <= 0:
            return None
        return max(1, math.ceil(self.sharded / room))


def estimate(supernet: SuperNet, weights: OptimizerSettings, arch: OptimizerSettings,
             batch_size: int) -> MemoryEstimate:
    """Memory of a search step of ``supernet`` (built on any device, the meta device
    included). Sparse groups get gradients the size of a batch's rows, counted with the
    activations, not tables' worth."""
    sparse = set(getattr(supernet, "sparse_groups", ()))
    parts = {"sharded": 0, "replicated": 0}
    totals = {"weights": 0, "gradients": 0, "state": 0}
    groups = dict(supernet.weight_param_groups())
    groups["theta"] = supernet.arch_parameters()
    for name, params in groups.items():
        size = _bytes(params)
        settings = arch if name == "theta" else weights
        override = settings.groups.get(name)
        optimizer = override.optimizer if override and override.optimizer else settings.name
        args = override.args if override and override.args is not None else settings.args
        state = size * state_tensors(optimizer, args)
        gradients = 0 if name in sparse else size
        part = "sharded" if name in supernet.sharded_groups else "replicated"
        parts[part] += size + gradients + state
        totals["weights"] += size
        totals["gradients"] += gradients
        totals["state"] += state
    return MemoryEstimate(parts["sharded"], parts["replicated"], totals["weights"],
                          totals["gradients"], totals["state"],
                          supernet.activation_bytes(batch_size),
                          tuple(sorted(supernet.sharded_groups)))


def on_meta(build: Callable[[], SuperNet]) -> SuperNet:
    """The supernet ``build`` makes, with every parameter on the meta device."""
    with torch.device("meta"):
        return build()


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_fits(needed: MemoryEstimate, device: torch.device, where: str,
               ranks: int = 1) -> str:
    """A line for the log saying what the search needs against what ``device`` has;
    :class:`DoesNotFit` naming the number of such devices it would take when it is more.
    A distributed search (``ranks`` > 1) is judged by what one rank holds."""
    free = available_bytes(device)
    line = f"memory for {where}: {needed.describe()}"
    if ranks > 1:
        line += f"; {size_text(needed.per_rank(ranks))} on each of {ranks} ranks"
    if free is None:
        return f"{line}; free memory of {device} unknown"
    line += f"; {device} has {size_text(free)} free"
    if (needed.total if ranks == 1 else needed.per_rank(ranks)) <= free:
        return line
    count = needed.devices_needed(free)
    if count is None:
        raise DoesNotFit(f"{line}: it does not fit, and what every device holds (the "
                         f"unsharded weights and the activations) alone does not; lower the "
                         f"batch size or make the space smaller")
    raise DoesNotFit(f"{line}: it does not fit; sharding its "
                     f"{' and '.join(needed.sharded_groups)} weights would take {count} "
                     f"devices like this one, or make the space smaller")
