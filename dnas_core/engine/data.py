"""Data contract between domains and the core: a random-access table and row splits.

A domain hands over one :class:`Table` (anything with ``len`` and ``gather``) and the row
indices of the four splits the paper uses (or, for data too large to enumerate, their
description: :mod:`dnas_core.engine.rowsets`). The core turns each split into a
:class:`BatchSource` whose batches are addressed by (epoch, position): the order of an
epoch is a pure function of the seed, the split and the epoch number, so a search can stop
and resume anywhere, even mid-epoch with fractional alternation, and see the same batches.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dnas_core.engine.rowsets import Split, check_split

SPLITS = ("weights", "arch", "val", "test")


@runtime_checkable
class Table(Protocol):
    def __len__(self) -> int: ...

    def gather(self, rows: np.ndarray) -> Any:
        """The batch made of these rows, in this order: ``(inputs, targets)``."""


class TensorTable:
    """An in-memory table of aligned tensors: ``gather`` returns ``(inputs, targets)``."""

    def __init__(self, inputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor):
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def gather(self, rows: np.ndarray) -> tuple[Any, torch.Tensor]:
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if isinstance(self.inputs, tuple):
            inputs: Any = tuple(t[index] for t in self.inputs)
        else:
            inputs = self.inputs[index]
        return inputs, self.targets[index]


@dataclass
class DataBundle:
    """What a domain's data hook returns.

    Each split is either sorted row indices (an int64 array) or, for data too large to
    enumerate, a :class:`~dnas_core.engine.rowsets.RowRanges` (ranges and a per-row hash
    filter), which the core streams (:mod:`dnas_core.engine.streaming`).
    """

    table: Table
    splits: Mapping[str, Split]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"data bundle lacks splits {missing}; expected {list(SPLITS)}")
        n = len(self.table)
        for name in SPLITS:
            check_split(name, self.splits[name], n)


def _split_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


class BatchSource:
    """Batches of one split, shuffled per epoch by seed (or kept in order for evaluation)."""

    def __init__(self, table: Table, rows: np.ndarray, batch_size: int, seed: int, name: str,
                 shuffle: bool = True):
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.name = name
        self._seed = _split_seed(seed, name)
        self._order_epoch: int | None = None
        self._order = self.rows

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return -(-len(self.rows) // self.batch_size)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.rows
        if self._order_epoch != epoch:
            rng = np.random.default_rng([self._seed, epoch])
            self._order = self.rows[rng.permutation(len(self.rows))]
            self._order_epoch = epoch
        return self._order

    def batch_rows(self, global_index: int) -> np.ndarray:
        """The table rows of batch number ``global_index`` counted across epochs."""
        epoch, position = divmod(global_index, len(self))
        order = self._epoch_order(epoch)
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def batch(self, global_index: int) -> Any:
        """Batch number ``global_index`` counted across epochs."""
        return self.table.gather(self.batch_rows(global_index))

    def batches(self, start: int, stop: int) -> Iterator[Any]:
        for index in range(start, stop):
            yield self.batch(index)

    def epoch_range(self, epoch: int) -> range:
        """The global indices of the batches of ``epoch``."""
        return range(epoch * len(self), (epoch + 1) * len(self))

    def epoch(self, epoch: int = 0) -> Iterator[Any]:
        indices = self.epoch_range(epoch)
        return self.batches(indices.start, indices.stop)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_tensors(batch: Any) -> list[torch.Tensor]:
    """The tensors of a batch (nested tuples, lists and mappings), in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)):
        return [leaf for part in batch for leaf in batch_tensors(part)]
    if isinstance(batch, Mapping):
        return [leaf for key in batch for leaf in batch_tensors(batch[key])]
    raise TypeError(f"a table's batch must be made of tensors, got {type(batch).__name__}")


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor, its structure kept."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(part, fn) for part in batch)
    if isinstance(batch, Mapping):
        return {key: map_tensors(value, fn) for key, value in batch.items()}
    raise TypeError(f"a table's batch must be made of tensors, got {type(batch).__name__}")


def batch_size_of(batch: Any) -> int:
    """Number of examples in a batch (the length of its targets)."""
    return len(batch[1])
