"""The search plan: which parameter set trains when, at what temperature.

The plan is computed up front as a list of chunks so that the search manager, its
checkpoints and its resume logic all agree on one sequence. Amounts may be fractional
epochs: a chunk covers a half-open range of an epoch-progress counter, and batches are
addressed by a global index, so a chunk can start or end mid-epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

_EPS = 1e-9


@dataclass(frozen=True)
class Chunk:
    """One uninterrupted stretch of training of one parameter set."""

    index: int
    kind: Literal["weights", "arch"]
    start: float          # epoch progress of this kind's data split at chunk start
    stop: float
    weight_epochs_done: float   # drives the weights LR schedule
    arch_epochs_done: float     # drives temperature and the arch LR schedule
    sample_count: int = 0       # architectures to sample when this chunk ends

    def batch_range(self, batches_per_epoch: int) -> range:
        first = round(self.start * batches_per_epoch)
        last = round(self.stop * batches_per_epoch)
        return range(first, last)


def temperature(initial: float, decay: float, arch_epochs_done: float) -> float:
    """tau = T0 * exp(-decay * arch epochs completed)."""
    return initial * math.exp(-decay * arch_epochs_done)


def plan_chunks(warmup_epochs: float, total_epochs: float, alternate_every: float,
                arch_sampling: Mapping[float, int]) -> list[Chunk]:
    """Warm up the weights, then alternate weights and architecture chunks.

    With warmup 1, total 5, alternate 1: W[0,1) W[1,2) A[0,1) W[2,3) A[1,2) ... A[3,4):
    five weight epochs, four architecture epochs. ``arch_sampling`` maps an amount of
    architecture epochs to the number of architectures to sample once it is reached.
    """
    if total_epochs <= 0:
        raise ValueError("search.total_epochs must be positive")
    if not 0 <= warmup_epochs <= total_epochs:
        raise ValueError("search.warmup_epochs must lie between 0 and search.total_epochs")
    if alternate_every <= 0:
        raise ValueError("search.alternate_every must be positive")

    chunks: list[Chunk] = []
    weights_done = 0.0
    arch_done = 0.0

    def add(kind: Literal["weights", "arch"], amount: float) -> None:
        nonlocal weights_done, arch_done
        start = weights_done if kind == "weights" else arch_done
        chunks.append(Chunk(len(chunks), kind, start, start + amount, weights_done, arch_done))
        if kind == "weights":
            weights_done += amount
        else:
            arch_done += amount

    if warmup_epochs > _EPS:
        add("weights", warmup_epochs)
    while weights_done < total_epochs - _EPS:
        add("weights", min(alternate_every, total_epochs - weights_done))
        add("arch", alternate_every)

    arch_stops = [(i, c.stop) for i, c in enumerate(chunks) if c.kind == "arch"]
    due: dict[int, int] = {}
    for key, count in arch_sampling.items():
        at = next((i for i, stop in arch_stops if stop >= key - _EPS), None)
        if key <= 0 or at is None:
            raise ValueError(
                f"search.arch_sampling: key {key} must be a positive number of architecture "
                f"epochs no larger than the {arch_done:g} this plan trains")
        due[at] = due.get(at, 0) + count
    return [replace(c, sample_count=due.get(i, 0)) for i, c in enumerate(chunks)]
