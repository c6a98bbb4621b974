"""The constant predictor: the baseline every trained model must beat.

It predicts, for every row, what the training targets say on average (a click rate for
binary classification, the class frequencies for multiclass), so it learns nothing from the
features. A model worse than it on validation has diverged or overfit beyond use; the
report puts it first in the baseline table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dnas_core.engine.data import DataBundle
from dnas_core.engine.rowsets import RowRanges, Split, iter_rows, join_splits, sample_rows
from dnas_core.engine.tasks import Task


def with_standard_errors(task: Task, outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """The task's metrics plus ``<metric>_se`` for those it can give a standard error."""
    found = task.metrics(outputs, targets)
    errors = getattr(task, "standard_errors", None)
    if errors is not None:
        found.update({f"{k}_se": v for k, v in errors(outputs, targets).items()})
    return found


#: the training targets are averaged over at most this many rows (a seeded subset)
MAX_TARGET_ROWS = 1 << 20
#: per-row losses are kept for at most this many test rows: the same seeded subset for
#: every model scored on a split of that size, so that their differences pair up
ROW_LOSS_ROWS = 200_000
_CHUNK = 1 << 16


def _targets(data: DataBundle, rows: Split) -> Iterator[Tensor]:
    for chunk in iter_rows(rows, _CHUNK):
        yield data.table.gather(chunk)[1]


def save_row_losses(task: Task, outputs: Tensor, targets: Tensor, path: Path) -> bool:
    """Save each row's loss (of a fixed subset of rows, see :data:`ROW_LOSS_ROWS`) to
    ``path`` as .npy; False when the task cannot give per-row losses."""
    make = getattr(task, "row_losses", None)
    if make is None:
        return False
    n = len(targets)
    rows = np.arange(n)
    if n > ROW_LOSS_ROWS:
        rows = np.sort(np.random.default_rng([n, 0x10]).choice(n, ROW_LOSS_ROWS,
                                                                replace=False))
    index = torch.from_numpy(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, make(outputs[index], targets[index]).numpy().astype(np.float32))
    return True


def training_rows(data: DataBundle) -> Split:
    """What sampled models train on: the weights and the arch rows."""
    return join_splits(data.splits["weights"], data.splits["arch"])


def training_targets(data: DataBundle, seed: int = 0) -> Tensor:
    """The training targets the constant predictor averages (a seeded subset of at most
    :data:`MAX_TARGET_ROWS` rows): read once, whatever number of splits it scores."""
    rows = training_rows(data)
    rng = np.random.default_rng([seed, 0xC0])
    if isinstance(rows, RowRanges):  # runs of rows from random blocks: only those are read
        rows = sample_rows(rows, MAX_TARGET_ROWS, rng)
    elif len(rows) > MAX_TARGET_ROWS:
        rows = np.sort(rng.choice(rows, MAX_TARGET_ROWS, replace=False))
    return torch.cat(list(_targets(data, rows)))


def constant_metrics(task: Task, data: DataBundle, split: str, seed: int = 0,
                     row_losses: Path | None = None,
                     train_targets: Tensor | None = None) -> dict[str, float] | None:
    """The constant predictor's metrics on ``split``, or None when the task cannot make one
    (a third-party task without ``constant_outputs``); its per-row losses go to
    ``row_losses`` when given. ``train_targets`` (from :func:`training_targets`) saves
    reading them again when several splits are scored."""
    make = getattr(task, "constant_outputs", None)
    if make is None:
        return None
    if train_targets is None:
        train_targets = training_targets(data, seed)
    eval_targets = torch.cat(list(_targets(data, data.splits[split])))
    outputs = make(train_targets, len(eval_targets))
    if row_losses is not None:
        save_row_losses(task, outputs, eval_targets, row_losses)
    return with_standard_errors(task, outputs, eval_targets)
