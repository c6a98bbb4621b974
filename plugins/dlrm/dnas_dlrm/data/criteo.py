"""Parsing Criteo text: fields, dense transform, bad lines (one chunk of whole lines at a time).

Chunks of whole lines come from :mod:`.linereader` (plain or gzip); each is parsed by
``pyarrow.csv.read_csv`` on all cores with explicit column types (label int8, I1..I13
int64, C1..C26 fixed-size 8-byte binary; the empty field is missing), and the hex values
are decoded by :mod:`.hexcodec`. Both modules' public names are re-exported here.

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

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from .hexcodec import decode_columns, decode_hex, hex8_to_uint32
from .linereader import DEFAULT_CHUNK_BYTES, is_gzip, iter_line_chunks
from .schema import COLUMN_NAMES, DENSE_NAMES, NUM_DENSE, NUM_FIELDS, NUM_SPARSE, dense_transform

__all__ = [
    "DEFAULT_CHUNK_BYTES", "BadLine", "BadLineError", "ParsedBlock", "decode_hex",
    "hex8_to_uint32", "is_gzip", "iter_line_chunks", "pad_short_lines", "parse_chunk",
]

TABS_PER_LINE = NUM_FIELDS - 1
_ARROW_BLOCK_BYTES = 512 << 10
_FAST_TYPES = {name: (pa.int8() if name == "label" else
                      pa.int64() if name in DENSE_NAMES else pa.binary(8))
               for name in COLUMN_NAMES}
_STRING_TYPES = {name: pa.string() for name in COLUMN_NAMES}
#: longer lines are bad: a Criteo line has a few hundred bytes, and pyarrow cannot parse a
#: line longer than its block (a 10 MB field made it fail with ``ArrowInvalid``)
MAX_LINE_BYTES = 64 << 10
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
    decoded = decode_columns(table)
    if decoded is None:
        return None
    values, present = decoded
    return ParsedBlock(labels=labels.astype(np.int8, copy=False),
                       dense=np.ascontiguousarray(dense_transform(raw).T),
                       cat_values=values.T, cat_present=present.T, line_numbers=line_numbers,
                       n_lines=n_lines)


# ----------------------------------------------------------------------------- parsing
def _read(chunk: bytes | memoryview, types: dict, threads: bool) -> pa.Table:
    """The chunk as a table; ``ArrowInvalid`` for a wrong field count or value. (No
    invalid-row handler: pyarrow decodes a bad row as UTF-8 before calling one, which
    prints decoder noise for binary input.)"""
    return pa_csv.read_csv(
        pa.py_buffer(chunk),
        read_options=pa_csv.ReadOptions(column_names=list(COLUMN_NAMES), use_threads=threads,
                                        block_size=_ARROW_BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                                          escape_char=False, newlines_in_values=False,
                                          ignore_empty_lines=False),
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


def _lines_holding(buf: np.ndarray, ends: np.ndarray, byte: int) -> np.ndarray:
    """Per line (given the index of each line's end), whether it holds ``byte``."""
    found = np.zeros(len(ends), dtype=bool)
    found[np.searchsorted(ends, np.flatnonzero(buf == byte))] = True
    return found


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
    binary = _lines_holding(buf, ends, 0)
    long = (ends - starts > MAX_LINE_BYTES) & (tabs == TABS_PER_LINE)
    wrong = (tabs != TABS_PER_LINE) | stray | binary | long
    for i in np.flatnonzero(wrong):
        line = first_line + int(i)
        if binary[i]:
            bad.append(BadLine(file, line, "line", "binary data (a NUL byte): not Criteo text"))
        elif long[i]:
            fields = bytes(buf[starts[i]:ends[i]]).split(b"\t")
            widest = max(range(len(fields)), key=lambda k: len(fields[k]))
            bad.append(BadLine(file, line, COLUMN_NAMES[widest],
                               f"a value of {len(fields[widest]):,} bytes (the line has "
                               f"{int(ends[i] - starts[i]):,}; a Criteo line has a few "
                               "hundred)"))
        elif stray[i]:
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
    table = _read(chunk, _STRING_TYPES, threads)
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
    try:
        table = _read(chunk, _FAST_TYPES, threads)
    except pa.ArrowInvalid:
        table = None
    if table is not None and table.num_rows == n_lines:
        lines = np.arange(first_line, first_line + n_lines, dtype=np.int64)
        block = _convert(table, lines, n_lines)
        if block is not None:
            return block
    return _slow_path(chunk, first_line, file, skip_bad, threads)
