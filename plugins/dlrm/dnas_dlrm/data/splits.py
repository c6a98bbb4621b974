"""The split rule (one function, used for prepared and for in-memory synthetic data).

Layout (the paper's): rows are in time order. The first ``floor(6 n / 7)`` rows are the
training part (or ``train_rows`` given explicitly, e.g. every day file but the last). The
rest is shuffled and halved: ``floor(n_eval / 2)`` rows form ``val``, the others ``test``;
or, with ``val_rows`` given, it is cut in row order: its first ``val_rows`` rows form
``val``, the others ``test`` (the ``position`` protocol of :mod:`.protocols`).
The training part is split at random into ``arch`` (a fraction ``arch_fraction``, rounded)
and ``weights`` (the others). With ``negative_rate`` r, each training row with label 0 is
kept with probability r (rows of ``val`` and ``test`` are never downsampled).

Everything is seeded and streamed in fixed blocks of rows, so the result is a pure function
of ``(n_rows, seed, arch_fraction, train_rows, val_rows, labels, negative_rate)``; memory stays
bounded for any number of rows. Exact subset sizes come from sequential hypergeometric
draws: each block receives the number of selected rows a uniformly random subset of the
required size would put there, then a random choice of that many rows inside the block.
Every returned index array is sorted (int64): the splits are sets of rows; batch order is
the core's business.

The same layout *described* (:func:`range_parts`, for data too large for index arrays):
each split is one row range and, where the rule picks rows at random, an interval of a
per-row hash ``u = row_uniform(key, row)`` (the core's :mod:`dnas_core.engine.rowsets`):
``arch`` = training rows with ``u < arch_fraction`` and ``weights`` the others (key
``2 seed``); ``val`` = evaluation rows with ``u < 1/2`` and ``test`` the others (key
``2 seed + 1``), or, with ``val_rows``, the two consecutive ranges. O(1) in memory; subset
sizes are binomial, not exact (the counts are recorded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np

SPLIT_NAMES: tuple[str, ...] = ("weights", "arch", "val", "test")
TRAIN_NUMERATOR, TRAIN_DENOMINATOR = 6, 7
SPLIT_BLOCK_ROWS = 1 << 20
_HYPER_LIMIT = 10**9 - 1  # numpy's hypergeometric needs ngood, nbad < 1e9

T = TypeVar("T")


def default_train_rows(n_rows: int) -> int:
    """Rows of the training part under the paper's rule: the first 6/7, rounded down."""
    return n_rows * TRAIN_NUMERATOR // TRAIN_DENOMINATOR


def split_sizes(n_rows: int, *, arch_fraction: float = 0.2, train_rows: int | None = None,
                val_rows: int | None = None) -> dict[str, int]:
    """Split sizes before negative downsampling (``val_rows`` None: half the eval rows)."""
    n_train = default_train_rows(n_rows) if train_rows is None else int(train_rows)
    n_eval = n_rows - n_train
    n_val = n_eval // 2 if val_rows is None else int(val_rows)
    n_arch = int(round(arch_fraction * n_train))
    return {"weights": n_train - n_arch, "arch": n_arch, "val": n_val, "test": n_eval - n_val}


def _check(n_rows: int, arch_fraction: float, train_rows: int | None, val_rows: int | None,
           negative_rate: float | None) -> int:
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if not 0.0 <= arch_fraction < 1.0:
        raise ValueError(f"arch_fraction must be in [0, 1), got {arch_fraction}")
    if negative_rate is not None and not 0.0 < negative_rate <= 1.0:
        raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
    n_train = default_train_rows(n_rows) if train_rows is None else int(train_rows)
    if not 0 <= n_train <= n_rows:
        raise ValueError(f"train_rows must be in [0, {n_rows}], got {train_rows}")
    if val_rows is not None and not 0 <= val_rows <= n_rows - n_train:
        raise ValueError(f"val_rows must be in [0, {n_rows - n_train}], got {val_rows}")
    return n_train


class _ExactSubset:
    """Streams a uniformly random subset of exactly ``k`` of ``n`` positions, block by block."""

    def __init__(self, rng: np.random.Generator, k: int, n: int):
        self.rng, self.need, self.left = rng, k, n

    def take(self, size: int) -> np.ndarray:
        """Sorted positions (0-based, within this block of ``size``) that are selected."""
        need, left, rng = self.need, self.left, self.rng
        if size >= left:
            count = need
        elif need == 0:
            count = 0
        elif need <= _HYPER_LIMIT and left - need <= _HYPER_LIMIT:
            count = int(rng.hypergeometric(need, left - need, size))
        else:  # beyond numpy's limit: binomial, clamped so the total stays exact
            count = int(rng.binomial(size, need / left))
            count = min(max(count, need - (left - size)), size, need)
        self.need -= count
        self.left -= size
        if count == 0:
            return np.empty(0, dtype=np.int64)
        if count == size:
            return np.arange(size, dtype=np.int64)
        return np.sort(rng.choice(size, size=count, replace=False)).astype(np.int64)


def iter_split_blocks(n_rows: int, seed: int, *, arch_fraction: float = 0.2,
                      train_rows: int | None = None, val_rows: int | None = None,
                      labels: np.ndarray | None = None, negative_rate: float | None = None,
                      block_rows: int = SPLIT_BLOCK_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """The split rule, streamed: yields, per block of rows, the sorted row indices of each split.

    ``labels`` (any array-like of 0/1 indexed by row, e.g. a memmap) is read one block at a
    time and is needed only with ``negative_rate``. Concatenating the blocks gives
    :func:`make_splits`. ``block_rows`` is part of the rule: keep the default.
    """
    n_train = _check(n_rows, arch_fraction, train_rows, val_rows, negative_rate)
    if negative_rate is not None and negative_rate < 1.0 and labels is None:
        raise ValueError("negative downsampling needs the labels")
    sizes = split_sizes(n_rows, arch_fraction=arch_fraction, train_rows=n_train,
                        val_rows=val_rows)
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED5, int(seed) >> 32])
    arch_rng, val_rng, neg_rng = (np.random.default_rng(s) for s in root.spawn(3))
    arch_pick = _ExactSubset(arch_rng, sizes["arch"], n_train)
    val_pick = _ExactSubset(val_rng, sizes["val"], n_rows - n_train)
    # Blocks never straddle the train/eval boundary, so each block is one kind of row.
    bounds = list(range(0, n_train, block_rows)) + [n_train]
    bounds += list(range(n_train + block_rows, n_rows, block_rows)) + [n_rows]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        size = stop - start
        if size <= 0:
            continue
        if start < n_train:
            selected = np.zeros(size, dtype=bool)
            selected[arch_pick.take(size)] = True
            keep = np.ones(size, dtype=bool)
            if negative_rate is not None and negative_rate < 1.0:
                block_labels = np.asarray(labels[start:stop])
                draw = neg_rng.random(size)
                keep = (block_labels != 0) | (draw < negative_rate)
            rows = np.arange(start, stop, dtype=np.int64)
            yield {"weights": rows[~selected & keep], "arch": rows[selected & keep],
                   "val": rows[:0], "test": rows[:0]}
        else:
            rows = np.arange(start, stop, dtype=np.int64)
            if val_rows is not None:  # in row order: the first val_rows eval rows
                selected = rows < n_train + val_rows
            else:
                selected = np.zeros(size, dtype=bool)
                selected[val_pick.take(size)] = True
            yield {"weights": rows[:0], "arch": rows[:0], "val": rows[selected],
                   "test": rows[~selected]}


def make_splits(n_rows: int, seed: int, *, arch_fraction: float = 0.2,
                train_rows: int | None = None, val_rows: int | None = None,
                labels: np.ndarray | None = None,
                negative_rate: float | None = None) -> dict[str, np.ndarray]:
    """The four splits ``weights``, ``arch``, ``val``, ``test`` as sorted int64 row indices."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for block in iter_split_blocks(n_rows, seed, arch_fraction=arch_fraction,
                                   train_rows=train_rows, val_rows=val_rows, labels=labels,
                                   negative_rate=negative_rate):
        for name in SPLIT_NAMES:
            parts[name].append(block[name])
    return {name: (np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64))
            for name, chunks in parts.items()}


def range_parts(n_rows: int, seed: int, *, arch_fraction: float = 0.2,
                train_rows: int | None = None,
                val_rows: int | None = None) -> dict[str, dict[str, Any]]:
    """The splits as ranges and hash intervals, JSON-ready: per split ``{"ranges":
    [[start, stop]], "filter": {"key", "low", "high"} or None}``."""
    n_train = _check(n_rows, arch_fraction, train_rows, val_rows, None)

    def part(start: int, stop: int, key: int | None = None, low: float = 0.0,
             high: float = 1.0) -> dict[str, Any]:
        hashed = None if key is None else {"key": key, "low": low, "high": high}
        return {"ranges": [[start, stop]], "filter": hashed}

    train_key, eval_key = 2 * int(seed), 2 * int(seed) + 1
    out = {"weights": part(0, n_train, train_key, float(arch_fraction), 1.0),
           "arch": part(0, n_train, train_key, 0.0, float(arch_fraction))}
    if val_rows is None:
        out["val"] = part(n_train, n_rows, eval_key, 0.0, 0.5)
        out["test"] = part(n_train, n_rows, eval_key, 0.5, 1.0)
    else:
        out["val"] = part(n_train, n_train + val_rows)
        out["test"] = part(n_train + val_rows, n_rows)
    return out


def correct_downsampled(p: T, negative_rate: float | None) -> T:
    """Undo negative downsampling on predicted click probabilities.

    A model trained on rows whose negatives were kept with probability ``r`` predicts
    ``p``; the probability on the original distribution is ``p / (p + (1 - p) / r)``.
    Works on floats, NumPy arrays and torch tensors; ``None`` or 1 returns ``p`` unchanged.
    """
    if negative_rate is None or negative_rate == 1.0:
        return p
    if not 0.0 < negative_rate <= 1.0:
        raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
    return p / (p + (1 - p) / negative_rate)
