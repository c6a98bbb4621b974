"""Splits described, not enumerated: row ranges and a per-row hash filter (O(1) memory).

A split of billions of rows stored as an index array costs 8 bytes a row on disk and, once
shuffled, twice that in memory. :class:`RowRanges` says instead which rows a split holds:
the rows of some half-open ranges whose hash :func:`row_uniform` falls in an interval
(:class:`RowFilter`), e.g. "rows 0..T with u < 0.2" for ``arch``. Membership of a row is
a pure function of the row number, so any part of a split can be listed without the rest.

Ranges are cut into *pieces* at multiples of ``block_rows`` (a piece lies inside one
block of the table); ``counts`` holds each piece's number of kept rows. A domain that
computed them once (DLRM's ``prepare`` stores them) hands them over; without them they are
computed here by one vectorised pass over the ranges' rows. Everything here is O(pieces)
in memory, never O(rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: rows of a block of the table unless a split says otherwise (pieces never cross blocks)
BLOCK_ROWS = 1 << 16
_MASK = (1 << 64) - 1
_UNIT = 1.0 / (1 << 53)
#: rows hashed at a time when counting pieces
_COUNT_ROWS = 1 << 20


def row_uniform(key: int, rows: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) float64 per row: splitmix64 of ``row + key * golden``, top 53 bits.

    The rule behind every :class:`RowFilter`: exact in float64, the same on every machine.
    """
    offset = np.uint64((int(key) * 0x9E3779B97F4A7C15 + 0xD1B54A32D192ED03) & _MASK)
    x = np.asarray(rows).astype(np.uint64) + offset
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * _UNIT


@dataclass(frozen=True)
class RowFilter:
    """Keep a row when ``low <= row_uniform(key, row) < high``."""

    key: int
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"a row filter needs 0 <= low <= high <= 1, got [{self.low}, "
                             f"{self.high})")

    def keep(self, rows: np.ndarray) -> np.ndarray:
        """A boolean mask of the rows kept."""
        u = row_uniform(self.key, rows)
        return (u >= self.low) & (u < self.high)


@dataclass(frozen=True, eq=False)
class RowRanges:
    """The rows of ``ranges`` (half-open, sorted, disjoint) that ``filter`` keeps.

    ``counts`` (optional): kept rows per piece, in the order of :meth:`pieces`; computed
    when not given. ``len()`` is the number of rows of the split.
    """

    ranges: tuple[tuple[int, int], ...]
    filter: RowFilter | None = None
    block_rows: int = BLOCK_ROWS
    counts: np.ndarray | None = field(default=None, repr=False)
    _starts: np.ndarray = field(init=False, repr=False)
    _stops: np.ndarray = field(init=False, repr=False)
    _rows: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ranges = tuple((int(a), int(b)) for a, b in self.ranges)
        object.__setattr__(self, "ranges", ranges)
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {self.block_rows}")
        last = 0
        for start, stop in ranges:
            if start < last or stop < start:
                raise ValueError(f"row ranges must be sorted, disjoint and non-negative, got "
                                 f"{list(ranges)}")
            last = stop
        starts, stops = self._cut()
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_stops", stops)
        if self.counts is None:
            counts = self._count(starts, stops)
        else:
            counts = np.asarray(self.counts, dtype=np.int64)
            if counts.shape != starts.shape or (counts < 0).any() or \
                    (counts > stops - starts).any():
                raise ValueError(f"counts must give 0..size kept rows for each of the "
                                 f"{len(starts)} pieces, got shape {counts.shape}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "_rows", int(counts.sum()))

    def _cut(self) -> tuple[np.ndarray, np.ndarray]:
        starts, stops = [], []
        b = self.block_rows
        for start, stop in self.ranges:
            if stop == start:
                continue
            first, last = start // b, (stop - 1) // b
            edges = np.arange(first + 1, last + 1, dtype=np.int64) * b
            starts.append(np.concatenate([[start], edges]).astype(np.int64))
            stops.append(np.concatenate([edges, [stop]]).astype(np.int64))
        if not starts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(starts), np.concatenate(stops)

    def _count(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        sizes = stops - starts
        if self.filter is None:
            return sizes.copy()
        counts = np.zeros(len(starts), dtype=np.int64)
        step = max(1, _COUNT_ROWS // self.block_rows)
        for first in range(0, len(starts), step):
            last = min(len(starts), first + step)
            rows = np.concatenate([np.arange(a, z, dtype=np.int64)
                                   for a, z in zip(starts[first:last], stops[first:last])])
            kept = self.filter.keep(rows).astype(np.int64)
            bounds = np.concatenate([[0], np.cumsum(sizes[first:last])])
            counts[first:last] = np.add.reduceat(kept, bounds[:-1]) if len(kept) else 0
        return counts

    # ------------------------------------------------------------------ the split's rows
    def __len__(self) -> int:
        return self._rows

    @property
    def piece_counts(self) -> np.ndarray:
        """Kept rows per piece (int64, in the order of :meth:`pieces`)."""
        assert self.counts is not None  # set on construction
        return self.counts

    @property
    def num_pieces(self) -> int:
        return len(self._starts)

    def pieces(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, stops)`` of the pieces (each inside one block of ``block_rows``)."""
        return self._starts, self._stops

    def piece_rows(self, index: int) -> np.ndarray:
        """The kept rows of piece ``index``, ascending (int64)."""
        start, stop = int(self._starts[index]), int(self._stops[index])
        rows = np.arange(start, stop, dtype=np.int64)
        return rows if self.filter is None else rows[self.filter.keep(rows)]

    @property
    def bounds(self) -> tuple[int, int]:
        """The first row a piece starts at and the row after the last piece (0, 0: none)."""
        if not self.num_pieces:
            return 0, 0
        return int(self._starts[0]), int(self._stops[-1])

    def union(self, other: RowRanges) -> RowRanges:
        """These rows and ``other``'s, when the result is again ranges and one filter: the
        same ranges with adjacent filter intervals (e.g. ``weights`` and ``arch``), or the
        same filter over disjoint ranges. Anything else raises ValueError."""
        a, b = self, other
        if a.block_rows != b.block_rows:
            raise ValueError("cannot join row ranges of different block sizes")
        if a.ranges == b.ranges and a.filter is not None and b.filter is not None \
                and a.filter.key == b.filter.key:
            first, second = sorted((a.filter, b.filter), key=lambda f: f.low)
            if first.high == second.low:
                low, high = first.low, second.high
                joined = None if (low, high) == (0.0, 1.0) else \
                    RowFilter(first.key, low, high)
                counts = a.piece_counts + b.piece_counts
                return RowRanges(a.ranges, joined, a.block_rows, counts)
        if a.filter == b.filter:
            merged = sorted(a.ranges + b.ranges)
            if all(x[1] <= y[0] for x, y in zip(merged, merged[1:])):
                order = np.argsort(np.concatenate([a._starts, b._starts]),
                                   kind="stable")
                counts = np.concatenate([a.piece_counts, b.piece_counts])[order]
                return RowRanges(tuple(merged), a.filter, a.block_rows, counts)
        raise ValueError("these two splits cannot be joined as row ranges (different ranges "
                         "and filters)")


#: what a domain may hand over per split: sorted row indices, or a description of them
Split = np.ndarray | RowRanges


def join_splits(first: Split, second: Split) -> Split:
    """The rows of both splits: index arrays concatenated, ranges joined."""
    if isinstance(first, RowRanges) and isinstance(second, RowRanges):
        return first.union(second)
    if isinstance(first, RowRanges) or isinstance(second, RowRanges):
        raise TypeError("cannot join an index-array split with a row-ranges split")
    return np.concatenate([np.asarray(first), np.asarray(second)])


def iter_rows(split: Split, chunk: int) -> Iterator[np.ndarray]:
    """The split's rows in order, ``chunk`` at a time (the last chunk may be smaller)."""
    if not isinstance(split, RowRanges):
        rows = np.asarray(split)
        for start in range(0, len(rows), chunk):
            yield rows[start:start + chunk]
        return
    held: list[np.ndarray] = []
    count = 0
    for index in range(split.num_pieces):
        rows = split.piece_rows(index)
        while len(rows):
            take = rows[:chunk - count]
            held.append(take)
            count += len(take)
            rows = rows[len(take):]
            if count == chunk:
                yield np.concatenate(held)
                held, count = [], 0
    if count:
        yield np.concatenate(held)


def first_rows(split: Split, n: int) -> np.ndarray:
    """The split's first ``n`` rows (fewer when it has fewer)."""
    return next(iter_rows(split, n), np.empty(0, dtype=np.int64))


def sample_rows(split: RowRanges, max_rows: int, rng: np.random.Generator,
                run: int = 4096) -> np.ndarray:
    """About ``max_rows`` rows of the split (all of them when it has no more), sorted: runs
    of ``run`` consecutive rows of pieces drawn at random, so that only those are read."""
    if len(split) <= max_rows:
        return np.concatenate([split.piece_rows(i) for i in range(split.num_pieces)]
                              or [np.empty(0, dtype=np.int64)])
    starts, stops = split.pieces()
    taken: list[np.ndarray] = []
    count = 0
    for index in rng.permutation(split.num_pieces):
        size = int(stops[index] - starts[index])
        offset = int(rng.integers(0, max(size - run, 0) + 1))
        rows = np.arange(starts[index] + offset, starts[index] + min(size, offset + run),
                         dtype=np.int64)
        if split.filter is not None:
            rows = rows[split.filter.keep(rows)]
        taken.append(rows)
        count += len(rows)
        if count >= max_rows:
            break
    return np.sort(np.concatenate(taken))[:max_rows]


def check_split(name: str, split: Split, table_rows: int) -> None:
    """ValueError unless the split has rows and every one lies in the table."""
    if isinstance(split, RowRanges):
        low, high = split.bounds
        if len(split) == 0:
            raise ValueError(f"split {name!r} is empty")
        if high > table_rows:
            raise ValueError(f"split {name!r} has rows outside the table of {table_rows} rows")
        return
    rows = np.asarray(split)
    if rows.size == 0:
        raise ValueError(f"split {name!r} is empty")
    if rows.min() < 0 or rows.max() >= table_rows:
        raise ValueError(f"split {name!r} has rows outside the table of {table_rows} rows")


__all__ = ["BLOCK_ROWS", "RowFilter", "RowRanges", "Split", "check_split",
                          "first_rows", "iter_rows", "join_splits", "row_uniform",
                          "sample_rows"]
