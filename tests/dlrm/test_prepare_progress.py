"""``dnas dlrm prepare`` progress: percent of the input bytes read, rows/s and time left."""

from __future__ import annotations

import gzip

from click.testing import CliRunner

from dnas_dlrm.data import PrepareOptions, prepare, write_tsv
from dnas_dlrm.data.cli import prepare_command
from dnas_dlrm.data.prepare_progress import prepare_progress, progress_line


def test_prepare_reports_the_input_bytes_read_over_every_file(tmp_path):
    plain = write_tsv(tmp_path / "day_0", 2800, seed=11)
    packed = tmp_path / "day_1.gz"
    packed.write_bytes(gzip.compress(write_tsv(tmp_path / "d1", 2800, seed=12).read_bytes()))
    states = []
    prepare([plain, packed], tmp_path / "out", PrepareOptions(chunk_bytes=1 << 16),
            progress=states.append)
    total = plain.stat().st_size + packed.stat().st_size
    assert all(s["bytes_total"] == total for s in states)
    read = [s["bytes_read"] for s in states]
    assert read == sorted(read) and len(set(read)) > 4  # several chunks, never backwards
    first = [s for s in states if s["file_index"] == 0]
    assert first[-1]["bytes_read"] == plain.stat().st_size and not first[-1]["gzip"]
    second = [s for s in states if s["file_index"] == 1]
    assert second[-1]["gzip"] and plain.stat().st_size < second[0]["bytes_read"] <= total
    assert second[-1]["bytes_read"] > total - 64  # the gzip trailer may be left unread


def test_a_progress_line_shows_percent_rate_and_time_left():
    state = {"file": "/data/day_0.gz", "file_index": 0, "lines": 1_000_000,
             "rows": 1_000_000, "bytes_read": 250, "bytes_total": 1000, "gzip": True,
             "elapsed_s": 4.0}
    assert progress_line(state) == ("day_0.gz: 25.0% of input bytes (compressed), "
                                    "1,000,000 rows, 250,000 rows/s, 0:12 left")
    assert progress_line({**state, "gzip": False, "bytes_read": 1000}) == \
        "day_0.gz: 100.0% of input bytes, 1,000,000 rows, 250,000 rows/s, 0:00 left"


def test_without_a_terminal_a_line_every_few_seconds(capsys):
    now = [0.0]
    with prepare_progress(quiet=False, every=5.0, clock=lambda: now[0]) as progress:
        assert progress is not None
        for second in range(13):
            now[0] = float(second)
            progress({"file": "train.txt", "rows": 100 * (second + 1),
                      "bytes_read": 10 * (second + 1), "bytes_total": 130, "gzip": False,
                      "elapsed_s": second + 1.0})
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["train.txt: 7.7% of input bytes, 100 rows, 100 rows/s, 0:12 left",
                     "train.txt: 46.2% of input bytes, 600 rows, 100 rows/s, 0:07 left",
                     "train.txt: 84.6% of input bytes, 1,100 rows, 100 rows/s, 0:02 left"]
    with prepare_progress(quiet=True) as progress:
        assert progress is None


def test_the_command_prints_progress_on_stderr(tmp_path):
    source = write_tsv(tmp_path / "train.txt", 500, seed=3)
    result = CliRunner().invoke(prepare_command, [str(source), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "train.txt: 100.0% of input bytes, 500 rows, " in result.stderr
    assert " rows/s, 0:00 left" in result.stderr and "prepared 500 rows" in result.stderr
    quiet = CliRunner().invoke(prepare_command, [str(source), "--out", str(tmp_path / "q"),
                                                 "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
