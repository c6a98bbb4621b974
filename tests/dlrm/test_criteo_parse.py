"""Parsing Criteo lines: every column, missing and negative values, hex, bad lines."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest

from dnas_dlrm.data.criteo import (
    BadLineError,
    decode_hex,
    hex8_to_uint32,
    iter_line_chunks,
    pad_short_lines,
    parse_chunk,
)
from dnas_dlrm.data.schema import COLUMN_NAMES, SPARSE_NAMES, dense_transform, feature_index

HEX_CHARS = b"0123456789abcdefABCDEF"


def make_line(label="1", dense=None, cats=None) -> str:
    dense = [str(k * 10 + 1) for k in range(13)] if dense is None else dense
    cats = [f"{0x10000000 + j * 0x01010101:08x}" for j in range(26)] if cats is None else cats
    assert len(dense) == 13 and len(cats) == 26
    return "\t".join([label, *dense, *cats])


GOOD = make_line()
C7 = f"{0x10000000 + 6 * 0x01010101:08x}"
assert f"\t{C7}\t" in GOOD


def parse(text: str, **kwargs):
    return parse_chunk(text.encode(), 1, "data.txt", **kwargs)


# ----------------------------------------------------------------------------- hex
def test_hex_swar_accepts_exactly_hex_digits_at_every_position():
    for position in range(8):
        for byte in range(256):
            word = bytearray(b"0a1B2c3D")
            word[position] = byte
            values, bad = hex8_to_uint32(np.frombuffer(bytes(word), dtype="<u8"))
            is_hex = bytes([byte]) in HEX_CHARS
            assert bad != is_hex, (position, byte)
            if is_hex:
                assert values[0] == int(bytes(word), 16)


def test_hex_swar_random_values_lower_and_upper_case():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    values[:3] = [0, 0xFFFFFFFF, 0x80000000]
    for fmt in ("{:08x}", "{:08X}"):
        text = b"".join(fmt.format(int(v)).encode() for v in values)
        decoded, bad = hex8_to_uint32(np.frombuffer(text, dtype="<u8"))
        assert not bad
        np.testing.assert_array_equal(decoded, values)


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.binary(8)])
def test_decode_hex_with_missing_values(arrow_type):
    raw = [b"0000000f", None, b"ffffffff", b"1000000A"]
    array = pa.array([r if arrow_type == pa.binary(8) or r is None else r.decode() for r in raw],
                     type=arrow_type)
    values, present = decode_hex(array)
    np.testing.assert_array_equal(values, [15, 0, 0xFFFFFFFF, 0x1000000A])
    np.testing.assert_array_equal(present, [True, False, True, True])
    assert decode_hex(array.slice(1)) is not None  # offsets into a sliced array
    np.testing.assert_array_equal(decode_hex(array.slice(2))[0], [0xFFFFFFFF, 0x1000000A])


@pytest.mark.parametrize("bad", ["0000000g", "0000000", "000000000", " 0000000", "-0000001"])
def test_decode_hex_rejects_non_hex(bad):
    assert decode_hex(pa.array(["0000000f", bad])) is None


# ----------------------------------------------------------------------------- columns
def test_dense_transform_missing_negative_log1p():
    raw = np.array([[0, -1, -3, 1, 7, 65535, 65536, 1618112, 2**40]])
    expected = np.log1p(np.maximum(raw, 0).astype(np.float64)).astype(np.float32)
    out = dense_transform(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert out[0, 1] == 0 and out[0, 2] == 0


def test_every_column_is_parsed():
    dense = ["0", "-2", "", "4", "2582", "", "3", "7", "41", "0", "1", "", "5"]
    cats = [f"{(j + 1) * 0x0a0b0c0d & 0xFFFFFFFF:08x}" for j in range(26)]
    cats[2] = ""          # C3 missing
    cats[21] = ""         # C22 missing
    cats[25] = "DEADBEEF"  # upper case accepted
    block = parse(make_line("0", dense, cats) + "\n" + GOOD + "\n")
    assert len(block) == 2 and block.n_lines == 2 and not block.bad
    np.testing.assert_array_equal(block.labels, [0, 1])
    raw = np.array([0 if v == "" else int(v) for v in dense])
    np.testing.assert_array_equal(block.dense[0], dense_transform(raw[None])[0])
    assert block.dense[0, 1] == 0  # I2 = -2 -> 0
    assert block.dense[0, 2] == 0  # I3 missing -> 0
    for j in range(26):
        if cats[j]:
            assert block.cat_present[0, j]
            assert block.cat_values[0, j] == int(cats[j], 16), SPARSE_NAMES[j]
        else:
            assert not block.cat_present[0, j] and block.cat_values[0, j] == 0
    np.testing.assert_array_equal(block.line_numbers, [1, 2])


def test_last_line_without_newline_and_crlf():
    block = parse(GOOD + "\n" + GOOD)
    assert len(block) == 2 and block.n_lines == 2
    crlf = parse(GOOD + "\r\n" + GOOD + "\r\n")
    assert len(crlf) == 2 and not crlf.bad
    np.testing.assert_array_equal(crlf.cat_values, block.cat_values)


def test_feature_index():
    assert feature_index("C1") == 0 and feature_index("c26") == 25 and feature_index("3") == 3
    with pytest.raises(ValueError, match="C27"):
        feature_index("C27")


# ----------------------------------------------------------------------------- bad lines
BAD_LINES = {
    "short": (GOOD.rsplit("\t", 3)[0], "C24", "37 fields"),
    "long": (GOOD + "\t0", "C26", "41 fields"),
    "empty": ("", "label", "empty line"),
    "dense_float": (GOOD.replace("\t21\t", "\t2.5\t", 1), "I3", "not a 64-bit integer"),
    "dense_text": (GOOD.replace("\t121\t", "\tabc\t", 1), "I13", "not a 64-bit integer"),
    "dense_plus": (GOOD.replace("\t1\t", "\t+1\t", 1), "I1", "not a 64-bit integer"),
    "hex_char": (GOOD.replace(C7, C7[:7] + "g"), "C7", "not an 8-digit hex"),
    "hex_short": (GOOD.replace(C7, C7[:7]), "C7", "not an 8-digit hex"),
    "label_two": ("2" + GOOD[1:], "label", "label must be 0 or 1"),
    "label_missing": (GOOD[1:], "label", "label is missing"),
    "label_text": ("x" + GOOD[1:], "label", "label must be 0 or 1"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_error_names_file_line_and_field(kind):
    line, field, reason = BAD_LINES[kind]
    text = "\n".join([GOOD, GOOD, line, GOOD]) + "\n"
    with pytest.raises(BadLineError) as caught:
        parse_chunk(text.encode(), 41, "day_3.gz")
    error = caught.value
    assert (error.bad.file, error.bad.line, error.bad.field) == ("day_3.gz", 43, field)
    message = str(error)
    assert "day_3.gz" in message and "line 43" in message and f"field {field}" in message
    assert reason in message


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_skip_counts_lists_and_keeps_columns(kind):
    line, field, _ = BAD_LINES[kind]
    other = make_line("0", [str(k) for k in range(13)], [f"{j:08x}" for j in range(26)])
    text = "\n".join([GOOD, line, other, line, GOOD]) + "\n"
    block = parse_chunk(text.encode(), 1, "f", skip_bad=True)
    assert [(b.line, b.field) for b in block.bad] == [(2, field), (4, field)]
    assert len(block) == 3 and block.n_lines == 5
    np.testing.assert_array_equal(block.line_numbers, [1, 3, 5])
    clean = parse("\n".join([GOOD, other, GOOD]) + "\n")
    for name in ("labels", "dense", "cat_values", "cat_present"):  # nothing shifted
        np.testing.assert_array_equal(getattr(block, name), getattr(clean, name))


def test_first_bad_line_of_a_chunk_is_reported_whatever_its_kind():
    text = "\n".join([GOOD, BAD_LINES["hex_char"][0], BAD_LINES["short"][0]]) + "\n"
    with pytest.raises(BadLineError) as caught:
        parse(text)
    assert caught.value.bad.line == 2 and caught.value.bad.field == "C7"


def test_short_lines_only_with_the_option():
    stripped = GOOD.rsplit("\t", 3)[0]  # C24..C26 empty, their tabs stripped
    with pytest.raises(BadLineError, match="C24"):
        parse(stripped + "\n" + GOOD + "\n")
    block = parse(stripped + "\n" + GOOD + "\r\n" + stripped, allow_short_lines=True)
    assert len(block) == 3 and not block.bad
    np.testing.assert_array_equal(block.cat_present[0, 23:], [False] * 3)
    np.testing.assert_array_equal(block.cat_values[0, :23], block.cat_values[1, :23])
    assert pad_short_lines(GOOD.encode()) == GOOD.encode()
    assert pad_short_lines(b"1\t2\n").count(b"\t") == 39


def test_too_long_lines_stay_bad_with_allow_short_lines():
    with pytest.raises(BadLineError, match="41 fields"):
        parse(GOOD + "\t\n", allow_short_lines=True)


def test_all_columns_named_in_order():
    assert COLUMN_NAMES[0] == "label" and COLUMN_NAMES[1] == "I1" and COLUMN_NAMES[14] == "C1"
    assert len(COLUMN_NAMES) == 40


# ----------------------------------------------------------------------------- chunks
@pytest.mark.parametrize("compressed", [False, True])
def test_iter_line_chunks_numbers_lines_across_chunks(tmp_path, compressed):
    lines = [f"line {i} " + "x" * (i % 97) for i in range(5000)]
    text = ("\n".join(lines)).encode()  # no final newline
    path = tmp_path / ("f.gz" if compressed else "f.txt")
    path.write_bytes(gzip.compress(text) if compressed else text)
    seen, read = [], [0]
    for chunk, first, count, bytes_read in iter_line_chunks(path, chunk_bytes=4096):
        assert bytes_read >= read[-1]
        read.append(bytes_read)
        got = bytes(chunk).decode().split("\n")
        if got[-1] == "":
            got.pop()
        assert len(got) == count
        for offset, line in enumerate(got):
            seen.append((first + offset, line))
    assert seen == [(i + 1, line) for i, line in enumerate(lines)]
    assert read[-1] == path.stat().st_size  # the bytes as stored, for progress
