"""Batches of a split too large for memory: block reads, a bounded shuffle, direct addressing.

:class:`StreamingSource` serves a :class:`~dnas_core.engine.rowsets.RowRanges` split with
the interface of :class:`~dnas_core.engine.data.BatchSource`, holding O(pieces) of order
and at most two *windows* of rows, never O(rows). The order of epoch ``e`` (a pure
function of the seed, the split's name and ``e``):

1. the split's pieces (one block of the table each) are permuted, seeded by
   ``(seed, name, e)``; consecutive groups of ``window_pieces`` of them form windows;
2. a window's kept rows are read piece by piece in ascending row order (long sequential
   reads of a memory-mapped table) and permuted, seeded by ``(seed, name, e, window)``;
3. the epoch is the windows' rows one after the other, cut into batches of
   ``batch_size`` (the last may be smaller; a batch may span two windows).

Every row of the split is served once per epoch. Batch ``g`` is found without reading
anything before it: the windows' row counts come from the split's per-piece counts, so
epoch position -> window is a binary search; a resumed search reads only the windows it
trains on. Without shuffling (evaluation) pieces and rows stay in row order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dnas_core.engine.data import BatchSource, Table, _split_seed, batch_tensors, map_tensors
from dnas_core.engine.rowsets import RowRanges, Split

#: pieces (blocks of the table) per shuffle window: with 65,536-row blocks, 524,288 rows
WINDOW_PIECES = 8
#: windows kept at a time (a batch that spans two finds both)
_KEPT_WINDOWS = 2


@dataclass
class _Window:
    rows: np.ndarray  # the window's table rows in serving order
    data: Any  # the rows as the table gathers them, in read order; None: gather per batch
    order: torch.Tensor  # serving position -> position in data


class StreamingSource(BatchSource):
    """Batches of a row-ranges split: the epoch order above, memory bounded by
    ``2 * window_pieces * split.block_rows`` rows."""

    def __init__(self, table: Table, split: RowRanges, batch_size: int, seed: int, name: str,
                 shuffle: bool = True, window_pieces: int = WINDOW_PIECES):
        if window_pieces < 1:
            raise ValueError(f"window_pieces must be at least 1, got {window_pieces}")
        self.table = table
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.name = name
        self.window_pieces = window_pieces
        self._seed = _split_seed(seed, name)
        self._lock = threading.Lock()
        self._plan_key: int | None = None
        self._pieces = np.empty(0, dtype=np.int64)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._windows: OrderedDict[tuple[int, int], _Window] = OrderedDict()

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    @property
    def num_rows(self) -> int:
        return len(self.split)

    @property
    def held_rows(self) -> int:
        """Rows of the windows held now (what the memory bound is about)."""
        return sum(len(w.rows) for w in self._windows.values())

    # ------------------------------------------------------------------ the epoch's order
    def _plan(self, epoch: int) -> None:
        """The epoch's piece order and the first epoch position of each window."""
        key = epoch if self.shuffle else 0
        if self._plan_key == key:
            return
        n = self.split.num_pieces
        if self.shuffle:
            pieces = np.random.default_rng([self._seed, epoch, 0]).permutation(n)
        else:
            pieces = np.arange(n)
        counts = self.split.piece_counts[pieces]
        starts = np.arange(0, n, self.window_pieces)
        sizes = np.add.reduceat(counts, starts) if n else np.empty(0, dtype=np.int64)
        self._pieces, self._plan_key = pieces, key
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._windows.clear()

    def _window(self, epoch: int, index: int) -> _Window:
        key = (epoch if self.shuffle else 0, index)
        found = self._windows.get(key)
        if found is not None:
            self._windows.move_to_end(key)
            return found
        chosen = np.sort(self._pieces[index * self.window_pieces:
                                      (index + 1) * self.window_pieces])
        rows = np.concatenate([self.split.piece_rows(int(p)) for p in chosen])
        if self.shuffle:
            order = np.random.default_rng([self._seed, epoch, 1, index]).permutation(len(rows))
        else:
            order = np.arange(len(rows))
        data = self.table.gather(rows)
        try:
            batch_tensors(data)
        except TypeError:  # batches not made of tensors: gather each batch's rows instead
            data = None
        window = _Window(rows[order], data, torch.from_numpy(order))
        self._windows[key] = window
        while len(self._windows) > _KEPT_WINDOWS:
            self._windows.popitem(last=False)
        return window

    def _segments(self, global_index: int) -> list[tuple[_Window, int, int]]:
        """(window, first, stop) serving positions that make up batch ``global_index``."""
        epoch, position = divmod(global_index, len(self))
        self._plan(epoch)
        first = position * self.batch_size
        stop = min(first + self.batch_size, len(self.split))
        segments = []
        index = int(np.searchsorted(self._offsets, first, side="right")) - 1
        while first < stop:
            base = int(self._offsets[index])
            end = min(stop, int(self._offsets[index + 1]))
            if end > first:
                segments.append((self._window(epoch, index), first - base, end - base))
            first = max(first, end)
            index += 1
        return segments

    # ------------------------------------------------------------------ the interface
    def batch_rows(self, global_index: int) -> np.ndarray:
        with self._lock:
            parts = [w.rows[a:z] for w, a, z in self._segments(global_index)]
        return np.concatenate(parts)

    def batch(self, global_index: int) -> Any:
        with self._lock:
            segments = self._segments(global_index)
        if any(w.data is None for w, _, _ in segments):
            return self.table.gather(np.concatenate([w.rows[a:z] for w, a, z in segments]))
        parts = [_select(w.data, w.order[a:z]) for w, a, z in segments]
        if len(parts) == 1:
            return parts[0]
        joined = iter(zip(*(batch_tensors(p) for p in parts), strict=True))
        return map_tensors(parts[0], lambda _: torch.cat(next(joined)))


def _select(data: Any, positions: torch.Tensor) -> Any:
    return map_tensors(data, lambda t: t.index_select(0, positions.to(t.device)))


def batch_source(table: Table, split: Split, batch_size: int, seed: int, name: str,
                 shuffle: bool = True) -> BatchSource:
    """The source for a split of either kind: index arrays are permuted whole
    (:class:`BatchSource`), row ranges streamed (:class:`StreamingSource`)."""
    if isinstance(split, RowRanges):
        return StreamingSource(table, split, batch_size, seed, name, shuffle)
    return BatchSource(table, split, batch_size, seed, name, shuffle)
