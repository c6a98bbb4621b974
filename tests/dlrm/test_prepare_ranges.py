"""The Terabyte path (issue 11 item 7): day files prepared with hashing, the day split and
row-ranges splits give the documented parts, a search runs on them end to end, and bad
requests are refused in one line naming the option or file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnas_core.engine import rowsets
from dnas_core.engine.rowsets import RowRanges, iter_rows, row_uniform
from dnas_dlrm.data import CriteoArrays, PrepareError, PrepareOptions, prepare, write_tsv
from dnas_dlrm.data.cli import prepare_command
from dnas_dlrm.data.manifest import COUNTS_FILE
from dnas_dlrm.data.verify import problems

DAYS = (3000, 2500, 3500, 2000)  # lines of day_0 .. day_3


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("days")
    return [write_tsv(root / f"day_{i}.gz", n, seed=10 + i) for i, n in enumerate(DAYS)]


@pytest.fixture(scope="module")
def ranged(days, tmp_path_factory) -> Path:
    """Prepared in blocks of 1024 rows (not 65,536), so that every split spans many and the
    last day starts inside one."""
    out = tmp_path_factory.mktemp("prepared") / "tb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowsets, "BLOCK_ROWS", 1024)
        prepare(days, out, PrepareOptions(hash_size=5000, split="day", eval_file=days[-1],
                                          split_storage="ranges", seed=3))
    return out


def rows_of(split: RowRanges) -> np.ndarray:
    return np.concatenate(list(iter_rows(split, 1 << 20)))


def test_day_split_as_ranges_gives_the_documented_parts(ranged):
    table = CriteoArrays.open(ranged)
    manifest = table.manifest
    n_train, n = sum(DAYS[:-1]), sum(DAYS)
    assert manifest.rows == n and manifest.split["storage"] == "ranges"
    assert manifest.split["train_rows"] == [0, n_train]
    assert not any((ranged / f"split_{s}.npy").exists() for s in ("weights", "val"))
    assert (ranged / COUNTS_FILE).is_file() and problems(ranged) == []
    splits = table.splits()
    assert all(isinstance(s, RowRanges) for s in splits.values())
    assert manifest.split["block_rows"] == 1024 and splits["test"].num_pieces == 3
    assert splits["weights"].ranges == splits["arch"].ranges == ((0, n_train),)
    assert splits["val"].ranges == splits["test"].ranges == ((n_train, n),)
    rows = {name: rows_of(split) for name, split in splits.items()}
    # weights and arch: disjoint, together every training row, arch ~ 20% by the hash rule
    assert np.intersect1d(rows["weights"], rows["arch"]).size == 0
    np.testing.assert_array_equal(np.union1d(rows["weights"], rows["arch"]),
                                  np.arange(n_train))
    assert abs(len(rows["arch"]) / n_train - 0.2) < 0.02
    np.testing.assert_array_equal(rows["arch"],
                                  np.flatnonzero(row_uniform(6, np.arange(n_train)) < 0.2))
    # val and test: disjoint halves of the last day
    assert np.intersect1d(rows["val"], rows["test"]).size == 0
    np.testing.assert_array_equal(np.union1d(rows["val"], rows["test"]), np.arange(n_train, n))
    assert abs(len(rows["val"]) / DAYS[-1] - 0.5) < 0.05
    assert {k: len(v) for k, v in rows.items()} == manifest.split_sizes


def test_the_cli_takes_split_storage_and_refuses_what_it_cannot_do(days, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    done = runner.invoke(prepare_command, [*map(str, days), "--out", str(out), "--split", "day",
                                           "--eval-file", str(days[-1]), "--hash-size",
                                           "1000", "--split-storage", "ranges", "-q"])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "manifest.json").read_text())["split"]["storage"] == "ranges"
    done = runner.invoke(prepare_command, [str(days[0]), "--out", str(tmp_path / "neg"),
                                           "--hash-size", "1000", "--split-storage", "ranges",
                                           "--negative-rate", "0.5"])
    assert done.exit_code != 0
    assert "split_storage (--split-storage) ranges cannot downsample negatives" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "neg").exists()
    with pytest.raises(PrepareError, match=r"eval_file \(--eval-file\) .* is not one of"):
        prepare(days[:2], tmp_path / "x", PrepareOptions(
            hash_size=100, split="day", eval_file=days[-1], split_storage="ranges"))
    done = runner.invoke(prepare_command, [str(days[0]), str(tmp_path / "day_9.gz"), "--out",
                                           str(tmp_path / "y"), "--split-storage", "ranges"])
    assert done.exit_code != 0 and "day_9.gz" in done.output and "does not exist" in done.output


def test_small_data_keeps_index_arrays_unless_asked(days, tmp_path):
    manifest = prepare(days[:2], tmp_path / "small", PrepareOptions(hash_size=100))
    assert not manifest.ranges and "storage" not in manifest.split
    assert manifest.format_version == 1
    assert (tmp_path / "small" / "split_weights.npy").is_file()


def test_position_split_as_ranges_is_two_consecutive_eval_ranges(days, tmp_path):
    table = CriteoArrays.open(_prepared(days[:1], tmp_path / "pos", split="position",
                                        val_fraction=0.1, test_fraction=0.1))
    splits, n = table.splits(), DAYS[0]
    assert splits["val"].ranges == ((n - 600, n - 300),) and splits["val"].filter is None
    assert splits["test"].ranges == ((n - 300, n),) and len(splits["test"]) == 300


def _prepared(inputs, out, **options) -> Path:
    prepare(inputs, out, PrepareOptions(hash_size=100, split_storage="ranges", **options))
    return out


def test_a_cut_counts_file_is_named_before_a_run(ranged, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in ranged.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    with open(copy / COUNTS_FILE, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 8)
    found = problems(copy)
    assert len(found) == 1 and COUNTS_FILE in found[0] and "truncated" in found[0]


def test_a_search_runs_on_range_splits_end_to_end(ranged, tmp_path):
    env = dict(os.environ, DNAS_PLUGINS="dlrm")
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "dnas_cli.main", "search", "--plugin", "dlrm", "--out",
            str(run_dir), "--devices", "cpu", "--data", str(ranged), "--no-baseline"]
    for item in ["domain.bottom_mlp=[16]", "domain.top_mlp=[16]", "domain.max_rows=500",
                 "search.total_epochs=1", "search.warmup_epochs=0.5",
                 "search.alternate_every=0.5", "search.arch_sampling={0.5: 1}",
                 "search.batch_size=256", "train.epochs=1", "train.batch_size=256",
                 "train.divergence.retries=0", "train.divergence.margin=1"]:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(0 < r["val_logloss"] < 1 for r in rows)


def test_a_run_of_days_with_one_left_out_is_a_subset_not_an_error(days, tmp_path):
    """Training on some days and evaluating on a later one is a common cut of the logs."""
    manifest = prepare([days[0], days[2], days[3]], tmp_path / "subset", PrepareOptions(
        hash_size=100, split="day", eval_file=days[3], split_storage="ranges"))
    assert manifest.rows == DAYS[0] + DAYS[2] + DAYS[3]
    assert manifest.split["train_rows"] == [0, DAYS[0] + DAYS[2]]
    assert [Path(source["path"]).name for source in manifest.sources] == \
        ["day_0.gz", "day_2.gz", "day_3.gz"]
