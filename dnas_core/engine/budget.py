"""Batch sizes from a step budget, so that one setting fits ten thousand rows and ten million.

A fixed batch is wrong at one end or the other: 4,096 rows on an 8,000-row training set give
two optimizer steps an epoch (nothing is learnt), while 64 on 40 million rows waste a GPU.
``batch_size: auto`` asks instead for about ``steps_per_epoch`` steps per epoch: the batch
is the power of two nearest ``rows / steps_per_epoch``, clipped to the given bounds.
"""

from __future__ import annotations

import math
from typing import Literal

AUTO = "auto"


def auto_batch_size(rows: int, steps_per_epoch: int, min_batch: int, max_batch: int) -> int:
    """The power of two nearest ``rows / steps_per_epoch`` within ``[min_batch, max_batch]``."""
    if rows < 1 or steps_per_epoch < 1:
        raise ValueError("rows and steps_per_epoch must be at least 1")
    target = max(rows / steps_per_epoch, 1.0)
    batch = 2 ** round(math.log2(target))
    return int(min(max(batch, min_batch), max_batch))


def resolve_batch_size(batch_size: int | Literal["auto"], rows: int, steps_per_epoch: int,
                       min_batch: int, max_batch: int) -> int:
    """``batch_size`` itself, or the step-budget batch when it is ``auto``."""
    if batch_size == AUTO:
        return auto_batch_size(rows, steps_per_epoch, min_batch, max_batch)
    return int(batch_size)
