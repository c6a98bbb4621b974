"""``prepare``: encodings, splits, options, manifest, bad lines, gzip, atomic output, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnas_dlrm.data import (
    MISSING_ROW,
    UNKNOWN_ROW,
    CriteoArrays,
    Manifest,
    ManifestError,
    PrepareError,
    PrepareOptions,
    correct_downsampled,
    make_splits,
    prepare,
    write_tsv,
)
from dnas_dlrm.data.cli import prepare_command
from dnas_dlrm.data.criteo import BadLineError
from dnas_dlrm.data.manifest import FORMAT_VERSION
from dnas_dlrm.data.splits import default_train_rows, split_sizes

ROWS = 2800


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("src") / "train.txt", ROWS, seed=11)


@pytest.fixture(scope="module")
def raw_values(tsv) -> tuple[np.ndarray, np.ndarray]:
    """(n, 26) raw categorical values (-1 where missing) and labels, read with plain Python."""
    values, labels = [], []
    for line in tsv.read_text().splitlines():
        fields = line.split("\t")
        labels.append(int(fields[0]))
        values.append([int(f, 16) if f else -1 for f in fields[14:]])
    return np.array(values, dtype=np.int64), np.array(labels)


def small(**kwargs) -> PrepareOptions:
    return PrepareOptions(chunk_bytes=1 << 16, **kwargs)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- hashing
def test_hashing_mode_ids_manifest_and_arrays(tsv, raw_values, tmp_path):
    values, labels = raw_values
    out = tmp_path / "hashed"
    manifest = prepare(tsv, out, small(hash_size=1000, hash_sizes={"C3": 50}, seed=3))
    sizes = [1000] * 26
    sizes[2] = 50
    assert manifest.cardinalities == sizes
    sparse = np.load(out / "sparse.npy")
    assert sparse.dtype == np.int32 and sparse.shape == (ROWS, 26)
    expected = np.where(values >= 0, 1 + values % (np.array(sizes) - 1), MISSING_ROW)
    np.testing.assert_array_equal(sparse, expected)
    assert (sparse[values < 0] == MISSING_ROW).all()
    np.testing.assert_array_equal(np.load(out / "labels.npy"), labels.astype(np.float32))
    dense = np.load(out / "dense.npy")
    assert dense.dtype == np.float32 and dense.shape == (ROWS, 13) and (dense >= 0).all()

    data = json.loads((out / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION and data["rows"] == ROWS
    assert data["seed"] == 3 and data["options"]["hash_sizes"]["C3"] == 50
    assert data["options"]["hash_sizes"]["C4"] == 1000 and data["sparse_dtype"] == "int32"
    assert data["encodings"][2] == {"feature": "C3", "mode": "hash", "hash_size": 50}
    assert data["split_sizes"] == split_sizes(ROWS)
    assert data["split"]["protocol"] == "random" and data["split"]["train_rows"] == [0, 2400]
    assert data["bad_lines"]["count"] == 0 and data["bad_lines"]["policy"] == "error"
    assert abs(data["label_mean"] - labels.mean()) < 1e-12
    source = data["sources"][0]
    assert source["sha256"] == hashlib.sha256(tsv.read_bytes()).hexdigest()
    assert source["size"] == tsv.stat().st_size and source["lines"] == ROWS
    assert source["rows"] == ROWS and source["gzip"] is False
    assert "sha256" in data["layout"]["source_checksum"]
    assert Manifest.load(out).rows == ROWS
    assert leftovers(tmp_path) == []


def test_hash_sizes_as_a_list_of_26(tsv, tmp_path):
    sizes = [10 + j for j in range(26)]
    manifest = prepare(tsv, tmp_path / "o", small(hash_sizes=sizes))
    assert manifest.cardinalities == sizes
    sparse = np.load(tmp_path / "o" / "sparse.npy")
    assert (sparse < np.array(sizes)).all() and (sparse >= 0).all()


# ----------------------------------------------------------------------------- vocabulary
def test_vocabulary_mode_built_on_training_rows_only(tsv, raw_values, tmp_path):
    values, _ = raw_values
    manifest = prepare(tsv, tmp_path / "v", small(min_count=2))
    sparse = np.load(tmp_path / "v" / "sparse.npy")
    n_train = default_train_rows(ROWS)
    for j in range(26):
        train = values[:n_train, j]
        keys, counts = np.unique(train[train >= 0], return_counts=True)
        kept = keys[counts >= 2]
        assert manifest.cardinalities[j] == 2 + len(kept)
        assert manifest.encodings[j]["mode"] == "vocab"
        column = sparse[:, j]
        np.testing.assert_array_equal(column == MISSING_ROW, values[:, j] < 0)
        known = np.isin(values[:, j], kept)
        np.testing.assert_array_equal(column == UNKNOWN_ROW, (values[:, j] >= 0) & ~known)
        # rows 2.. by descending training count, ties by value
        order = np.lexsort((kept, -counts[counts >= 2]))
        for rank, key in enumerate(kept[order][:5]):
            assert (column[values[:, j] == key] == 2 + rank).all()


def test_vocabulary_unseen_and_rare_values_share_row_one(tmp_path):
    from tests.dlrm.test_criteo_parse import make_line

    cats = lambda c1: [c1] + [f"{j:08x}" for j in range(1, 26)]  # noqa: E731
    # 14 lines: 12 train (6/7), 2 eval; C1: aaaaaaaa x6, bbbbbbbb x5, cccccccc x1 in training
    lines = [make_line("0", None, cats("aaaaaaaa")) for _ in range(6)]
    lines += [make_line("1", None, cats("bbbbbbbb")) for _ in range(5)]
    lines += [make_line("0", None, cats("cccccccc"))]
    lines += [make_line("0", None, cats("dddddddd")), make_line("1", None, cats(""))]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines) + "\n")
    manifest = prepare(path, tmp_path / "o", PrepareOptions(min_count=2))
    c1 = np.load(tmp_path / "o" / "sparse.npy")[:, 0]
    np.testing.assert_array_equal(c1, [2] * 6 + [3] * 5 + [UNKNOWN_ROW, UNKNOWN_ROW, MISSING_ROW])
    assert manifest.cardinalities[0] == 4 and manifest.cardinalities[1] == 3
    assert manifest.encodings[0] == {"feature": "C1", "mode": "vocab", "min_count": 2,
                                     "vocabulary": 2}


def test_mixed_hash_and_vocabulary(tsv, raw_values, tmp_path):
    values, _ = raw_values
    manifest = prepare(tsv, tmp_path / "m", small(hash_sizes={"C3": 7}))
    sparse = np.load(tmp_path / "m" / "sparse.npy")
    assert manifest.encodings[2]["mode"] == "hash" and manifest.encodings[3]["mode"] == "vocab"
    np.testing.assert_array_equal(sparse[:, 2],
                                  np.where(values[:, 2] >= 0, 1 + values[:, 2] % 6, 0))
    assert sparse[:, 3].max() < manifest.cardinalities[3]


# ----------------------------------------------------------------------------- splits
def test_splits_follow_the_rule_and_are_seeded(tsv, tmp_path):
    a = prepare(tsv, tmp_path / "a", small(hash_size=100, seed=5))
    prepare(tsv, tmp_path / "b", small(hash_size=100, seed=5))
    prepare(tsv, tmp_path / "c", small(hash_size=100, seed=6))
    load = lambda d: {k: np.load(tmp_path / d / f"split_{k}.npy") for k in  # noqa: E731
                      ("weights", "arch", "val", "test")}
    sa, sb, sc = load("a"), load("b"), load("c")
    n_train = ROWS * 6 // 7
    assert a.split_sizes == {"weights": n_train - round(0.2 * n_train),
                             "arch": round(0.2 * n_train), "val": (ROWS - n_train) // 2,
                             "test": ROWS - n_train - (ROWS - n_train) // 2}
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name])
        assert sa[name].dtype == np.int64 and (np.diff(sa[name]) > 0).all()
    assert not np.array_equal(sa["arch"], sc["arch"]) and not np.array_equal(sa["val"], sc["val"])
    np.testing.assert_array_equal(np.sort(np.concatenate([sa["weights"], sa["arch"]])),
                                  np.arange(n_train))
    np.testing.assert_array_equal(np.sort(np.concatenate([sa["val"], sa["test"]])),
                                  np.arange(n_train, ROWS))
    reference = make_splits(ROWS, 5)
    for name in sa:
        np.testing.assert_array_equal(sa[name], reference[name])


def test_arch_fraction(tsv, tmp_path):
    manifest = prepare(tsv, tmp_path / "o", small(hash_size=100, arch_fraction=0.5))
    assert manifest.split_sizes["arch"] == round(0.5 * (ROWS * 6 // 7))


def test_split_by_day(tmp_path):
    days = [write_tsv(tmp_path / f"day_{i}", 300 + 100 * i, seed=i) for i in range(3)]
    manifest = prepare(days, tmp_path / "o",
                       PrepareOptions(hash_size=100, split="day", eval_file=days[2]))
    assert manifest.rows == 300 + 400 + 500
    assert [s["first_row"] for s in manifest.sources] == [0, 300, 700]
    table = CriteoArrays.open(tmp_path / "o")
    splits = table.splits()
    np.testing.assert_array_equal(np.sort(np.concatenate([splits["weights"], splits["arch"]])),
                                  np.arange(700))
    assert len(splits["val"]) == 250 and len(splits["test"]) == 250
    assert manifest.split["protocol"] == "day" and manifest.split["train_rows"] == [0, 700]
    assert manifest.split["eval_file"] == str(days[2].absolute())
    with pytest.raises(PrepareError, match="time order"):
        prepare([days[0], days[2], days[1]], tmp_path / "x",
                PrepareOptions(split="day", eval_file=days[1]))
    with pytest.raises(PrepareError, match="only input"):
        prepare(days[:1], tmp_path / "x", PrepareOptions(split="day", eval_file=days[0]))


def test_negative_downsampling_only_in_training(tsv, tmp_path):
    full = prepare(tsv, tmp_path / "full", small(hash_size=100, seed=2))
    down = prepare(tsv, tmp_path / "down", small(hash_size=100, seed=2, negative_rate=0.25))
    labels = np.load(tmp_path / "down" / "labels.npy")
    table = CriteoArrays.open(tmp_path / "down")
    assert table.negative_rate == 0.25 and down.negative_rate == 0.25
    assert down.options["negative_rate"] == 0.25
    before = CriteoArrays.open(tmp_path / "full").splits()
    after = table.splits()
    for name in ("val", "test"):
        np.testing.assert_array_equal(before[name], after[name])
    for name in ("weights", "arch"):
        kept = after[name]
        assert np.isin(kept, before[name]).all()
        dropped = np.setdiff1d(before[name], kept)
        assert (labels[dropped] == 0).all()  # only negatives removed
        assert (labels[before[name]] == 1).sum() == (labels[kept] == 1).sum()
        negatives = (labels[before[name]] == 0).sum()
        assert abs((labels[kept] == 0).sum() / negatives - 0.25) < 0.06
    assert full.split_sizes["val"] == down.split_sizes["val"]


def test_correct_downsampled():
    assert correct_downsampled(0.5, 0.25) == pytest.approx(0.5 / (0.5 + 0.5 / 0.25))
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(correct_downsampled(p, 0.1), p / (p + (1 - p) / 0.1))
    assert correct_downsampled(0.3, None) == 0.3
    # a model trained on downsampled data, corrected, recovers the original click rate
    base = 0.2
    seen = base / (base + (1 - base) * 0.1)
    assert correct_downsampled(seen, 0.1) == pytest.approx(base)


def test_subsample_is_seeded_per_line(tsv, raw_values, tmp_path):
    _, labels = raw_values
    a = prepare(tsv, tmp_path / "a", small(hash_size=100, subsample=0.3, seed=1))
    b = prepare(tsv, tmp_path / "b", PrepareOptions(hash_size=100, subsample=0.3, seed=1))
    assert a.rows == b.rows and abs(a.rows / ROWS - 0.3) < 0.05
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "labels.npy"),
                                  np.load(tmp_path / "b" / "labels.npy"))  # chunking-free
    assert a.sources[0]["subsampled_out"] == ROWS - a.rows
    c = prepare(tsv, tmp_path / "c", small(hash_size=100, subsample=0.3, seed=2))
    assert c.rows != a.rows or not np.array_equal(np.load(tmp_path / "a" / "dense.npy"),
                                                  np.load(tmp_path / "c" / "dense.npy"))


# ----------------------------------------------------------------------------- gzip
def test_gzip_input_matches_plain(tsv, tmp_path):
    compressed = tmp_path / "train.txt.gz"
    compressed.write_bytes(gzip.compress(tsv.read_bytes()))
    plain = prepare(tsv, tmp_path / "p", small(hash_size=1000))
    zipped = prepare(compressed, tmp_path / "z", small(hash_size=1000))
    for name in ("dense", "sparse", "labels", "split_val"):
        np.testing.assert_array_equal(np.load(tmp_path / "p" / f"{name}.npy"),
                                      np.load(tmp_path / "z" / f"{name}.npy"))
    assert zipped.sources[0]["gzip"] is True
    assert zipped.sources[0]["sha256"] == hashlib.sha256(compressed.read_bytes()).hexdigest()
    assert plain.cardinalities == zipped.cardinalities


# ----------------------------------------------------------------------------- bad lines
def corrupt(tsv: Path, tmp_path: Path, edits: dict[int, str]) -> Path:
    lines = tsv.read_text().split("\n")
    for number, replacement in edits.items():
        lines[number - 1] = replacement
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines))
    return path


def test_bad_line_error_across_chunks_leaves_nothing(tsv, tmp_path):
    lines = tsv.read_text().split("\n")
    fields = lines[2399].split("\t")
    fields[20] = "zz"  # C7 of line 2400, many chunks into the file
    path = corrupt(tsv, tmp_path, {2400: "\t".join(fields)})
    with pytest.raises(BadLineError) as caught:
        prepare(path, tmp_path / "out", small(hash_size=100))
    assert (caught.value.bad.line, caught.value.bad.field) == (2400, "C7")
    assert str(path) in str(caught.value)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_bad_lines_skipped_counted_and_listed(tsv, tmp_path):
    lines = tsv.read_text().split("\n")
    bad_dense = lines[9].split("\t")
    bad_dense[3] = "1.5"
    path = corrupt(tsv, tmp_path, {10: "\t".join(bad_dense), 1500: "1\t2\t3",
                                   2700: "7" + lines[2699][1:]})
    manifest = prepare(path, tmp_path / "out", small(hash_size=100, on_bad_line="skip"))
    assert manifest.rows == ROWS - 3
    assert manifest.bad_lines["count"] == 3 and manifest.bad_lines["policy"] == "skip"
    listed = [(entry[1], entry[2]) for entry in manifest.bad_lines["listed"]]
    assert listed == [(10, "I3"), (1500, "I3"), (2700, "label")]
    assert manifest.sources[0]["bad_lines"] == 3 and manifest.sources[0]["lines"] == ROWS
    reference = prepare(tsv, tmp_path / "ref", small(hash_size=100))
    keep = np.setdiff1d(np.arange(ROWS), [9, 1499, 2699])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "sparse.npy"),
                                  np.load(tmp_path / "ref" / "sparse.npy")[keep])
    assert reference.bad_lines["count"] == 0


def test_listing_of_bad_lines_is_capped(tsv, tmp_path):
    path = corrupt(tsv, tmp_path, {n: "x" for n in range(1, 40)})
    manifest = prepare(path, tmp_path / "out", small(hash_size=100, on_bad_line="skip",
                                                     max_listed_bad_lines=5))
    assert manifest.bad_lines["count"] == 39 and len(manifest.bad_lines["listed"]) == 5
    assert manifest.bad_lines["truncated"] is True


# ----------------------------------------------------------------------------- atomic output
def test_interrupted_prepare_leaves_nothing_complete(tsv, tmp_path, monkeypatch):
    from dnas_dlrm.data import npyfile

    calls = {"n": 0}
    original = npyfile.NpyAppender.append

    def failing(self, block):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return original(self, block)

    monkeypatch.setattr(npyfile.NpyAppender, "append", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(tsv, tmp_path / "out", small(hash_size=100))
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_killed_prepare_leaves_a_directory_the_loader_refuses(tsv, tmp_path):
    script = textwrap.dedent(f"""
        import os
        from dnas_dlrm.data import npyfile, prepare, PrepareOptions
        original, calls = npyfile.NpyAppender.append, [0]
        def append(self, block):
            calls[0] += 1
            if calls[0] == 20:
                os._exit(9)  # like SIGKILL: no cleanup runs
            original(self, block)
        npyfile.NpyAppender.append = append
        prepare({str(tsv)!r}, {str(tmp_path / "out")!r},
                PrepareOptions(hash_size=100, chunk_bytes=1 << 16))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    assert not (tmp_path / "out").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.prepare-")]
    assert len(partial) == 1 and (partial[0] / "dense.npy").exists()
    with pytest.raises(ManifestError, match="no manifest.json"):
        CriteoArrays.open(partial[0])


def test_existing_output_needs_overwrite(tsv, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prepare(tsv, out, small(hash_size=10))  # an empty directory is fine
    with pytest.raises(PrepareError, match="overwrite"):
        prepare(tsv, out, small(hash_size=10))
    manifest = prepare(tsv, out, small(hash_size=20, overwrite=True))
    assert Manifest.load(out).cardinalities == manifest.cardinalities == [20] * 26
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kwargs, option", [
    ({"hash_size": 1}, "hash_size"), ({"hash_sizes": {"C27": 10}}, "C27"),
    ({"hash_sizes": [10] * 25}, "26 sizes"), ({"min_count": 0}, "min_count"),
    ({"arch_fraction": 1.0}, "arch_fraction"), ({"subsample": 0.0}, "subsample"),
    ({"negative_rate": 0.0}, "negative_rate"), ({"on_bad_line": "ignore"}, "on_bad_line"),
    ({"seed": -1}, "seed"), ({"sparse_dtype": "int16"}, "sparse_dtype"),
])
def test_options_are_validated_with_clear_errors(kwargs, option):
    with pytest.raises(PrepareError, match=option):
        PrepareOptions(**kwargs)


def test_missing_input_is_an_error(tmp_path):
    with pytest.raises(PrepareError, match="no such file"):
        prepare(tmp_path / "nope.txt", tmp_path / "o")


# ----------------------------------------------------------------------------- CLI
def test_cli_prepare(tsv, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(prepare_command, [str(tsv), "--out", str(out), "--hash-size", "1000",
                                             "--hash-size", "C3=100", "--seed", "4",
                                             "--negative-rate", "0.5", "-q"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(out)
    assert manifest.cardinalities[2] == 100 and manifest.cardinalities[0] == 1000
    assert manifest.seed == 4 and manifest.negative_rate == 0.5

    listed = ",".join(str(10 + j) for j in range(26))
    result = runner.invoke(prepare_command, [str(tsv), "--out", str(tmp_path / "l"),
                                             "--hash-size", listed, "-q"])
    assert result.exit_code == 0 and Manifest.load(tmp_path / "l").cardinalities[25] == 35

    result = runner.invoke(prepare_command, [str(tsv), "--out", str(out), "-q"])
    assert result.exit_code != 0 and "overwrite" in result.output
    result = runner.invoke(prepare_command, [str(tsv), "--out", str(tmp_path / "x"),
                                             "--arch-fraction", "2"])
    assert result.exit_code != 0 and "--arch-fraction" in result.output


def test_cli_reports_bad_lines(tsv, tmp_path):
    path = corrupt(tsv, tmp_path, {7: "1\t2"})
    result = CliRunner().invoke(prepare_command, [str(path), "--out", str(tmp_path / "o"),
                                                  "--hash-size", "100"])
    assert result.exit_code == 1
    assert "line 7" in result.output and "field I2" in result.output
    result = CliRunner().invoke(prepare_command, [str(path), "--out", str(tmp_path / "o"),
                                                  "--hash-size", "100", "--on-bad-line", "skip"])
    assert result.exit_code == 0 and Manifest.load(tmp_path / "o").bad_lines["count"] == 1


def test_overwrite_replaces_only_a_prepared_data_set(tsv, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    with pytest.raises(PrepareError, match="not a prepared data set"):
        prepare(tsv, plain, small(hash_size=10, overwrite=True))
    assert (plain / "keep.txt").read_text() == "mine"
    held = tmp_path / "held"
    held.mkdir()
    source = held / "train.txt"
    source.write_bytes(tsv.read_bytes())
    (held / "manifest.json").write_text("{}")
    with pytest.raises(PrepareError, match="contains"):  # the folder holding the input
        prepare(source, held, small(hash_size=10, overwrite=True))
    assert source.exists()
    out = tmp_path / "out"
    prepare(tsv, out, small(hash_size=10))
    monkeypatch.chdir(out)
    with pytest.raises(PrepareError, match="contains"):  # the working directory
        prepare(tsv, out, small(hash_size=10, overwrite=True))
    assert (out / "manifest.json").exists()
