"""Vocabulary encoding of prepare: count raw values over the training rows, then map all rows.

Missing -> row 0 (``MISSING_ROW``); values seen fewer than ``min_count`` times in training,
or never -> the shared row 1 (``UNKNOWN_ROW``); the others -> ``2 + rank`` by descending
training count (ties: smaller value first). Counting and mapping stream the temporary raw
file in blocks, so memory holds the vocabularies and one block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import ARRAY_FILES, MISSING_ROW, UNKNOWN_ROW

_VOCAB_BLOCK_ROWS = 1 << 19


class Vocabulary:
    """Training counts of one feature's raw values, merged block by block."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        values = values[values >= 0]
        if not len(values):
            return
        keys, counts = np.unique(values, return_counts=True)
        if not len(self.keys):
            self.keys, self.counts = keys, counts.astype(np.int64)
            return
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        np.add.at(self.counts, at[found], counts[found])
        if not found.all():
            merged_keys = np.concatenate([self.keys, keys[~found]])
            merged_counts = np.concatenate([self.counts, counts[~found]])
            order = np.argsort(merged_keys, kind="stable")
            self.keys, self.counts = merged_keys[order], merged_counts[order]

    def finish(self, min_count: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted kept keys and the row of each (2 + rank by descending count)."""
        keep = self.counts >= min_count
        keys, counts = self.keys[keep], self.counts[keep]
        order = np.lexsort((keys, -counts))
        rows = np.empty(len(keys), dtype=np.int64)
        rows[order] = np.arange(2, 2 + len(keys), dtype=np.int64)
        return keys, rows


def map_vocab(values: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.full(len(values), UNKNOWN_ROW, dtype=np.int64)
    out[values < 0] = MISSING_ROW
    if len(keys):
        at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
        hit = (keys[at] == values) & (values >= 0)
        out[hit] = rows[at[hit]]
    return out

def build_vocabularies(tmp: Path, raw_path: Path, vocab: list[int], train_rows: int,
                        rows: int, min_count: int) -> list[int]:
    """Count raw values over training rows, then map every row; returns table sizes."""
    if rows == 0:
        return [2] * len(vocab)
    raw = np.load(raw_path, mmap_mode="r")
    counters = [Vocabulary() for _ in vocab]
    for start in range(0, train_rows, _VOCAB_BLOCK_ROWS):
        block = np.asarray(raw[start:min(start + _VOCAB_BLOCK_ROWS, train_rows)])
        for position, counter in enumerate(counters):
            counter.add(block[:, position])
    tables = [counter.finish(min_count) for counter in counters]
    del counters
    sparse = np.load(tmp / ARRAY_FILES["sparse"], mmap_mode="r+")
    for start in range(0, rows, _VOCAB_BLOCK_ROWS):
        stop = min(start + _VOCAB_BLOCK_ROWS, rows)
        block = np.asarray(raw[start:stop])
        mapped = np.asarray(sparse[start:stop])
        for position, (j, (keys, table_rows)) in enumerate(zip(vocab, tables)):
            mapped[:, j] = map_vocab(block[:, position], keys, table_rows)
        sparse[start:stop] = mapped
    sparse.flush()
    del sparse, raw
    return [2 + len(keys) for keys, _ in tables]
