"""Decoding Criteo's 8-digit hex categorical values without a Python loop.

The 8 bytes of a value, seen as four 2-byte pairs, are looked up in a 65536-entry table
that gives each pair's byte value or flags it invalid (:func:`hex8_to_uint32`). The Arrow
arrays come from the fast path (``fixed_size_binary(8)``) or the slow path (strings).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .schema import NUM_DENSE, NUM_SPARSE


def _pair_table() -> np.ndarray:
    """uint16 table indexed by two ASCII bytes (little-endian): their hex byte value, or
    0x100 when either byte is not one of ``0-9 a-f A-F``."""
    table = np.full(1 << 16, 0x100, dtype=np.uint16)
    digits = np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8).astype(np.uint16)
    values = np.array([int(chr(c), 16) for c in digits.tolist()], dtype=np.uint16)
    table[digits[:, None] | (digits[None, :] << 8)] = values[:, None] * 16 + values[None, :]
    return table


_PAIR_TABLE = _pair_table()
_ASCII_ZEROS = np.frombuffer(b"00000000", dtype="<u8")[0]


def hex8_to_uint32(words: np.ndarray) -> tuple[np.ndarray, bool]:
    """Decode 8 ASCII hex digits packed in each little-endian uint64 (no byte loop).

    Each pair of characters is looked up in a 65536-entry table (hex byte value, or 0x100
    if a character is not one of ``0-9 a-f A-F``). Returns ``(values uint32, any_bad)``.
    """
    pairs = _PAIR_TABLE[np.ascontiguousarray(words, dtype="<u8").view("<u2")]
    if pairs.max(initial=0) > 0xFF:
        return np.zeros(len(words), dtype=np.uint32), True
    return pairs.astype(np.uint8).view(">u4").astype(np.uint32), False


def _validity(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little", count=array.offset + len(array))[
        array.offset:].astype(bool)


def decode_hex(array: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode an Arrow array of 8-digit hex values (nulls are missing).

    Accepts ``fixed_size_binary(8)`` (the fast path) and string/binary arrays. Returns
    ``(values uint32, present bool)``, values 0 where missing, or ``None`` when some
    non-null value is not exactly 8 hex digits (either case).
    """
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=bool)
    if pa.types.is_fixed_size_binary(array.type):
        if array.type.byte_width != 8:
            return None
        present = _validity(array)
        words = np.frombuffer(array.buffers()[1], dtype="<u8", count=n, offset=array.offset * 8)
    else:
        large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
        offset_type = np.int64 if large else np.int32
        offsets = np.frombuffer(array.buffers()[1], dtype=offset_type, count=n + 1,
                                offset=array.offset * np.dtype(offset_type).itemsize)
        lengths = np.diff(offsets)
        present = lengths != 0
        count = int(np.count_nonzero(present))
        if np.count_nonzero(lengths == 8) != count:
            return None
        words = np.zeros(n, dtype=np.uint64)
        if count:
            data = np.frombuffer(array.buffers()[2], dtype=np.uint8, count=8 * count,
                                 offset=int(offsets[0]))
            words[present] = data.copy().view("<u8")
    if not present.all():
        words = np.where(present, words, _ASCII_ZEROS)
    values, bad = hex8_to_uint32(words)
    if bad:
        return None
    return values, present


def decode_columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode C1..C26 of a table at once: ``(values (26, n) uint32, present (26, n) bool)``."""
    n = table.num_rows
    columns = [table.column(1 + NUM_DENSE + j) for j in range(NUM_SPARSE)]
    if not all(pa.types.is_fixed_size_binary(c.type) and c.type.byte_width == 8
               for c in columns):
        values = np.empty((NUM_SPARSE, n), dtype=np.uint32)
        present = np.empty((NUM_SPARSE, n), dtype=bool)
        for j, column in enumerate(columns):
            position = 0
            for chunk in column.chunks:
                decoded = decode_hex(chunk)
                if decoded is None:
                    return None
                values[j, position:position + len(chunk)] = decoded[0]
                present[j, position:position + len(chunk)] = decoded[1]
                position += len(chunk)
        return values, present
    words = np.empty((NUM_SPARSE, n), dtype="<u8")
    present = np.ones((NUM_SPARSE, n), dtype=bool)
    for j, column in enumerate(columns):
        position = 0
        for chunk in column.chunks:
            size = len(chunk)
            words[j, position:position + size] = np.frombuffer(
                chunk.buffers()[1], dtype="<u8", count=size, offset=chunk.offset * 8)
            if chunk.null_count:
                present[j, position:position + size] = _validity(chunk)
            position += size
    words[~present] = _ASCII_ZEROS
    values, bad = hex8_to_uint32(words.reshape(-1))
    if bad:
        return None
    return values.reshape(NUM_SPARSE, n), present
