"""Reading Criteo text: chunks of whole lines, fields, hex decoding, dense transform, bad lines.

Input is read in chunks of whole lines (plain or gzip, detected by the gzip magic bytes),
each chunk parsed by ``pyarrow.csv.read_csv`` on all cores with explicit column types
(label int8, I1..I13 int64, C1..C26 fixed-size 8-byte binary; the empty field is missing).
Hex is decoded without a Python loop: the 8 bytes of a value, seen as four 2-byte pairs,
are looked up in a 65536-entry table that gives each pair's byte value or flags it invalid
(:func:`hex8_to_uint32`).

Every chunk takes the fast path unless something is wrong in it (a wrong field count, a
value that is not an integer, a label that is not 0/1, a categorical value that is not
8 hex digits). Then the chunk is re-read by the slow path, which works on line boundaries
found with NumPy, so every bad line is named by its file, its 1-based line number in that
file and its first bad field (``label``, ``I3``, ``C7``; a wrong field count names the first
missing field, or the last field when there are too many). Columns are never shifted:
a line whose field count is not 40 is bad, unless ``allow_short_lines`` pads lines whose
trailing tabs were stripped (fewer than 40 fields) with empty fields.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from .schema import COLUMN_NAMES, DENSE_NAMES, NUM_DENSE, NUM_FIELDS, NUM_SPARSE, dense_transform

TABS_PER_LINE = NUM_FIELDS - 1
DEFAULT_CHUNK_BYTES = 16 << 20
_ARROW_BLOCK_BYTES = 512 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_FAST_TYPES = {name: (pa.int8() if name == "label" else
                      pa.int64() if name in DENSE_NAMES else pa.binary(8))
               for name in COLUMN_NAMES}
_STRING_TYPES = {name: pa.string() for name in COLUMN_NAMES}
_INT_PATTERN = r"^-?[0-9]+$"
_HEX_PATTERN = r"^[0-9a-fA-F]{8}$"


@dataclass(frozen=True)
class BadLine:
    """One rejected line: where it is and its first bad field."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}, field {self.field}: {self.reason}"


class BadLineError(ValueError):
    """A malformed line under ``on_bad_line="error"``."""

    def __init__(self, bad: BadLine):
        self.bad = bad
        super().__init__(f"bad line in {bad} (use --on-bad-line skip to skip and count "
                         "such lines)")


@dataclass
class ParsedBlock:
    """The good rows of one chunk of lines, in file order."""

    labels: np.ndarray        # int8 (n,), 0 or 1
    dense: np.ndarray         # float32 (n, 13), transformed
    cat_values: np.ndarray    # uint32 (n, 26), 0 where missing (column-major)
    cat_present: np.ndarray   # bool (n, 26) (column-major)
    line_numbers: np.ndarray  # int64 (n,), 1-based line of each row in its file
    n_lines: int              # lines in the chunk, good and bad
    bad: list[BadLine] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- input
def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


class _HashingReader(io.RawIOBase):
    """A binary file whose reads also feed a hash (the file's bytes as stored)."""

    def __init__(self, raw, hasher):
        self._raw, self._hasher = raw, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self._hasher.update(memoryview(buffer)[:count])
        return count


def iter_line_chunks(path: str | Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     hasher: hashlib._Hash | None = None
                     ) -> Iterator[tuple[memoryview, int, int]]:
    """Yield ``(chunk, first_line, n_lines)``: chunks of whole lines, the 1-based number of
    their first line and their number of lines. A last line without a final newline is a
    line. ``hasher`` receives every byte of the file as stored (compressed for gzip).

    Each chunk is a view of its own buffer (read once, never copied, never reused).
    """
    raw = open(path, "rb", buffering=0)
    try:
        hashing = _HashingReader(raw, hasher) if hasher is not None else raw
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=io.BufferedReader(hashing, 1 << 20), mode="rb") \
            if gzipped else io.BufferedReader(hashing, 1 << 20)
        carry = b""
        first_line = 1
        while True:
            buffer = bytearray(len(carry) + chunk_bytes)
            buffer[:len(carry)] = carry
            view = memoryview(buffer)
            filled = len(carry)
            while filled < len(buffer):
                count = stream.readinto(view[filled:])
                if not count:
                    break
                filled += count
            if filled == len(carry):  # end of input
                if carry:
                    yield view[:filled], first_line, 1
                return
            cut = buffer.rfind(b"\n", 0, filled)
            if cut < 0:  # a line longer than the buffer: read more
                carry = bytes(view[:filled])
                continue
            carry = bytes(view[cut + 1:filled])
            lines = buffer.count(b"\n", 0, cut + 1)
            yield view[:cut + 1], first_line, lines
            first_line += lines
    finally:
        raw.close()


# ----------------------------------------------------------------------------- decoding
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


def _decode_columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
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


def _to_int(column: pa.ChunkedArray, arrow_type: pa.DataType) -> np.ndarray:
    if column.type != arrow_type:
        column = pc.cast(column, arrow_type)
    if column.null_count:
        column = pc.fill_null(column, 0)
    return column.to_numpy()


def _convert(table: pa.Table, line_numbers: np.ndarray, n_lines: int) -> ParsedBlock | None:
    """Arrays of a parsed table, or ``None`` if any value is invalid (then: slow path).

    The (n, 26) categorical arrays are column-major (Fortran order): each column is
    filled and later encoded contiguously.
    """
    n = table.num_rows
    label_column = table.column(0)
    if label_column.null_count:
        return None
    try:
        labels = _to_int(label_column, pa.int8())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if np.count_nonzero(labels > 1) or np.count_nonzero(labels < 0):
        return None
    raw = np.empty((NUM_DENSE, n), dtype=np.int64)
    try:
        for k in range(NUM_DENSE):
            raw[k] = _to_int(table.column(1 + k), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    decoded = _decode_columns(table)
    if decoded is None:
        return None
    values, present = decoded
    return ParsedBlock(labels=labels.astype(np.int8, copy=False),
                       dense=np.ascontiguousarray(dense_transform(raw).T),
                       cat_values=values.T, cat_present=present.T, line_numbers=line_numbers,
                       n_lines=n_lines)


# ----------------------------------------------------------------------------- parsing
def _read(chunk: bytes | memoryview, types: dict, threads: bool, invalid: list | None) -> pa.Table:
    def handler(row) -> str:
        if invalid is None:
            return "error"
        invalid.append(row)
        return "skip"

    return pa_csv.read_csv(
        pa.py_buffer(chunk),
        read_options=pa_csv.ReadOptions(column_names=list(COLUMN_NAMES), use_threads=threads,
                                        block_size=_ARROW_BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                                          escape_char=False, newlines_in_values=False,
                                          ignore_empty_lines=False, invalid_row_handler=handler),
        convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""],
                                              strings_can_be_null=True, check_utf8=False),
    )


def _lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per line of a chunk: start, end (index of its newline, or the chunk's end), tab count,
    and whether it holds a carriage return that is not part of a final CRLF."""
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if (len(buf) and buf[-1] == 10) else np.append(newlines, len(buf))
    starts = np.concatenate(([0], newlines + 1))[:len(ends)]
    tabs = np.flatnonzero(buf == 9)
    tab_counts = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts)
    stray = np.zeros(len(ends), dtype=bool)
    returns = np.flatnonzero(buf == 13)
    if len(returns):
        following = np.where(returns + 1 < len(buf), buf[np.minimum(returns + 1, len(buf) - 1)], 10)
        inner = returns[following != 10]
        if len(inner):
            stray[np.searchsorted(ends, inner)] = True
    return starts, ends, tab_counts, stray


def pad_short_lines(chunk: bytes | memoryview) -> bytes | memoryview:
    """Append empty fields to lines with fewer than 40 fields (stripped trailing tabs)."""
    buf = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends, tabs, _ = _lines(buf)
    short = tabs < TABS_PER_LINE
    if not short.any():
        return chunk
    at = ends[short]
    crlf = (at > starts[short]) & (buf[np.maximum(at - 1, 0)] == 13)
    at = at - crlf
    return np.insert(buf, np.repeat(at, TABS_PER_LINE - tabs[short]), np.uint8(9)).tobytes()


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _slow_path(chunk: bytes | memoryview, first_line: int, file: str, skip_bad: bool,
               threads: bool) -> ParsedBlock:
    buf = np.frombuffer(chunk, dtype=np.uint8)
    starts, ends, tabs, stray = _lines(buf)
    n_lines = len(starts)
    bad: list[BadLine] = []
    wrong = (tabs != TABS_PER_LINE) | stray
    for i in np.flatnonzero(wrong):
        line = first_line + int(i)
        if stray[i]:
            bad.append(BadLine(file, line, "line", "carriage return inside the line"))
        elif starts[i] == ends[i] or (ends[i] - starts[i] == 1 and buf[starts[i]] == 13):
            bad.append(BadLine(file, line, COLUMN_NAMES[0], "empty line"))
        elif tabs[i] < TABS_PER_LINE:
            found = int(tabs[i]) + 1
            bad.append(BadLine(file, line, COLUMN_NAMES[found],
                               f"{found} field{'s' if found > 1 else ''}, expected "
                               f"{NUM_FIELDS} (field {COLUMN_NAMES[found]} and later are "
                               "absent)"))
        else:
            bad.append(BadLine(file, line, COLUMN_NAMES[-1],
                               f"{int(tabs[i]) + 1} fields, expected {NUM_FIELDS} "
                               "(extra fields)"))
    good_lines = np.flatnonzero(~wrong)
    if wrong.any():
        lengths = np.minimum(ends + 1, len(buf)) - starts
        chunk = buf[np.repeat(~wrong, lengths)].tobytes()
    line_numbers = first_line + good_lines.astype(np.int64)
    if not len(good_lines):
        if bad and not skip_bad:
            raise BadLineError(bad[0])
        return _empty_block(n_lines, bad)
    table = _read(chunk, _STRING_TYPES, threads, invalid=None)
    if table.num_rows != len(good_lines):  # pragma: no cover - defensive
        raise RuntimeError(f"{file}: internal error: {table.num_rows} rows parsed from "
                           f"{len(good_lines)} lines starting at line {first_line}")
    row_bad = np.zeros((table.num_rows, NUM_FIELDS), dtype=bool)
    label = table.column(0)
    ok = pc.fill_null(pc.or_(pc.equal(label, "0"), pc.equal(label, "1")), False)
    row_bad[:, 0] = ~ok.to_numpy()
    for k in range(NUM_DENSE):
        column = table.column(1 + k)
        ok = pc.fill_null(pc.match_substring_regex(column, _INT_PATTERN), True).to_numpy()
        long = pc.fill_null(pc.greater(pc.utf8_length(column), 18), False).to_numpy() & ok
        for i in np.flatnonzero(long):
            if not -2**63 <= int(column[int(i)].as_py()) < 2**63:
                ok[i] = False
        row_bad[:, 1 + k] = ~ok
    for j in range(NUM_SPARSE):
        column = table.column(1 + NUM_DENSE + j)
        ok = pc.fill_null(pc.match_substring_regex(column, _HEX_PATTERN), True)
        row_bad[:, 1 + NUM_DENSE + j] = ~ok.to_numpy()
    any_bad = row_bad.any(axis=1)
    for i in np.flatnonzero(any_bad):
        column = int(np.argmax(row_bad[i]))
        name = COLUMN_NAMES[column]
        value = table.column(column)[int(i)].as_py()
        if column == 0:
            reason = "label is missing" if value is None else \
                f"label must be 0 or 1, found {_preview(value)}"
        elif column <= NUM_DENSE:
            reason = f"not a 64-bit integer: {_preview(value)}"
        else:
            reason = f"not an 8-digit hex value: {_preview(value)}"
        bad.append(BadLine(file, int(line_numbers[i]), name, reason))
    bad.sort(key=lambda b: b.line)
    if bad and not skip_bad:
        raise BadLineError(bad[0])
    if any_bad.any():
        table = table.filter(pa.array(~any_bad))
        line_numbers = line_numbers[~any_bad]
    block = _convert(table, line_numbers, n_lines)
    if block is None:  # pragma: no cover - defensive: every invalid value was removed
        raise RuntimeError(f"{file}: internal error converting lines from {first_line}")
    block.bad = bad
    return block


def _empty_block(n_lines: int, bad: list[BadLine]) -> ParsedBlock:
    return ParsedBlock(labels=np.zeros(0, np.int8), dense=np.zeros((0, NUM_DENSE), np.float32),
                       cat_values=np.zeros((0, NUM_SPARSE), np.uint32),
                       cat_present=np.zeros((0, NUM_SPARSE), bool),
                       line_numbers=np.zeros(0, np.int64), n_lines=n_lines, bad=bad)


def parse_chunk(chunk: bytes | memoryview, first_line: int, file: str, *,
                skip_bad: bool = False, allow_short_lines: bool = False, threads: bool = True,
                n_lines: int | None = None) -> ParsedBlock:
    """Parse a chunk of whole lines whose first line is ``first_line`` (1-based) of ``file``.

    Raises :class:`BadLineError` on the first bad line unless ``skip_bad``; then bad lines
    are dropped and listed in ``ParsedBlock.bad``. ``n_lines`` may be passed if known.
    """
    if not len(chunk):
        return _empty_block(0, [])
    if allow_short_lines:
        chunk = pad_short_lines(chunk)
    if n_lines is None or allow_short_lines:
        data = np.frombuffer(chunk, dtype=np.uint8)
        n_lines = int(np.count_nonzero(data == 10)) + (0 if data[-1] == 10 else 1)
    invalid: list = []
    try:
        table = _read(chunk, _FAST_TYPES, threads, invalid)
    except pa.ArrowInvalid:
        table = None
    if table is not None and not invalid and table.num_rows == n_lines:
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        block = _convert(table, lines, n_lines)
        if block is not None:
            return block
    return _slow_path(chunk, first_line, file, skip_bad, threads)
