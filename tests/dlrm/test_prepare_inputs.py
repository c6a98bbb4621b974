"""``prepare`` on inputs that are not what they should be (issue 10, item 6), and the
temporary directories a killed prepare leaves. Command-line refusals are rows of
``tests/test_bad_inputs.py``; here is what happens to the data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dnas_dlrm.data import PrepareError, PrepareOptions, prepare, write_tsv
from dnas_dlrm.data.criteo import MAX_LINE_BYTES, BadLineError, parse_chunk
from dnas_dlrm.data.leftovers import OWNER
from dnas_dlrm.data.verify import problems

ROWS = 500


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("src") / "train.txt", ROWS, seed=3)


def options(**kwargs) -> PrepareOptions:
    return PrepareOptions(hash_size=100, chunk_bytes=1 << 16, **kwargs)


def test_a_huge_field_is_a_bad_line_that_skip_skips(tsv, tmp_path):
    lines = tsv.read_text().splitlines(keepends=True)
    fields = lines[99].rstrip("\n").split("\t")
    fields[20] = "f" * (10 << 20)  # C7 of line 100: 10 MB inside a 40-field line
    path = tmp_path / "huge.txt"
    path.write_text("".join(lines[:99]) + "\t".join(fields) + "\n" + "".join(lines[100:]))
    with pytest.raises(BadLineError) as caught:
        prepare(path, tmp_path / "out", options())
    assert (caught.value.bad.line, caught.value.bad.field) == (100, "C7")
    manifest = prepare(path, tmp_path / "out", options(on_bad_line="skip"))
    assert manifest.rows == ROWS - 1
    assert [entry[1:3] for entry in manifest.bad_lines["listed"]] == [[100, "C7"]]
    reference = prepare(tsv, tmp_path / "ref", options())
    keep = np.setdiff1d(np.arange(ROWS), [99])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "dense.npy"),
                                  np.load(tmp_path / "ref" / "dense.npy")[keep])
    assert reference.rows == ROWS


def test_a_line_just_under_the_limit_is_judged_by_its_fields():
    line = "0" + "\t1" * 13 + "\t" + "a" * (MAX_LINE_BYTES - 100) + "\t" * 25 + "\n"
    block = parse_chunk(line.encode(), 1, "x.txt", skip_bad=True)
    assert len(block) == 0 and block.bad[0].field == "C1"
    assert block.bad[0].reason.startswith("not an 8-digit hex value")


def test_binary_input_is_named_without_decoder_noise(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    script = textwrap.dedent(f"""
        from dnas_dlrm.data import PrepareOptions, prepare
        prepare({str(path)!r}, {str(tmp_path / "out")!r},
                PrepareOptions(hash_size=100, on_bad_line="skip"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert "PrepareError: no rows to prepare: every one of the" in done.stderr
    assert "UnicodeDecodeError" not in done.stderr and "Exception ignored" not in done.stderr


def test_no_data_set_of_zero_rows_is_written(tsv, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(PrepareError, match="holds no lines"):
        prepare(empty, tmp_path / "out", options())
    with pytest.raises(PrepareError, match="kept none of the 500 good lines"):
        prepare(tsv, tmp_path / "out", options(subsample=1e-6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_the_same_file_twice_is_refused_even_through_a_link(tsv, tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to(tsv)
    with pytest.raises(PrepareError, match=r"is given twice \(inputs 1 and 2"):
        prepare([tsv, link], tmp_path / "out", options())


def test_a_prepared_directory_is_checked_from_headers_and_sizes(tsv, tmp_path):
    data = tmp_path / "data"
    prepare(tsv, data, options())
    assert problems(data) == []
    with open(data / "split_val.npy", "ab") as handle:
        handle.write(b"\0" * 8)  # one stray row's worth of bytes
    (found,) = problems(data)
    assert found.startswith(f"{data / 'split_val.npy'}: ") and "(truncated or damaged)" in found
    (data / "split_test.npy").write_bytes(b"")
    assert len(problems(data)) == 2 and "split_test.npy: not a readable .npy array" in \
        problems(data)[1]


# ----------------------------------------------------------------------------- leftovers
def killed_prepare(tsv: Path, out: Path) -> Path:
    """Run a prepare into ``out`` and SIGKILL it once it has written rows; its temporary
    directory."""
    script = textwrap.dedent(f"""
        import os, signal
        from dnas_dlrm.data import npyfile, prepare, PrepareOptions
        original, calls = npyfile.NpyAppender.append, [0]
        def append(self, block):
            calls[0] += 1
            if calls[0] == 4:  # the second chunk
                os.kill(os.getpid(), signal.SIGKILL)
            original(self, block)
        npyfile.NpyAppender.append = append
        prepare({str(tsv)!r}, {str(out)!r}, PrepareOptions(hash_size=100, chunk_bytes=1 << 16))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.prepare-")]
    return left


def test_a_killed_prepares_directory_is_removed_by_the_next(tsv, tmp_path):
    out = tmp_path / "out"
    left = killed_prepare(tsv, out)
    assert (left / "dense.npy").stat().st_size > 0 and (left / OWNER).is_file()
    # not ours: no owner recorded, or an owner still alive (this test's own parent)
    foreign = tmp_path / f".out.prepare-{os.getppid()}-0123abcd"
    foreign.mkdir()
    (foreign / OWNER).write_text(f"{socket.gethostname()}:{os.getppid()}\n")
    unknown = tmp_path / ".out.prepare-1-deadbeef"
    unknown.mkdir()
    other = tmp_path / ".other.prepare-1-deadbeef"  # another --out's
    other.mkdir()
    notes: list[str] = []
    manifest = prepare(tsv, out, options(), notes=notes.append)
    assert manifest.rows == ROWS and not (out / OWNER).exists()
    pid = left.name.split("-")[1]
    assert sorted(notes) == sorted([
        f"note: {unknown} looks like the temporary directory of an earlier prepare but "
        "records no owner; remove it if no prepare is running",
        f"removed {left}: the temporary directory of a prepare (pid {pid}) that was killed "
        "before it finished",
        f"note: {foreign} belongs to a prepare still running (pid {os.getppid()} on "
        f"{socket.gethostname()}); left alone"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [foreign.name, unknown.name, other.name, "out"])
