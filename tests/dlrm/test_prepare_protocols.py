"""Split protocols of ``prepare``: which source lines land in train, val and test, checked
row by row against the generated text; option combinations that must be refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnas_dlrm.data import CriteoArrays, Manifest, PrepareError, PrepareOptions, prepare, write_tsv
from dnas_dlrm.data.cli import prepare_command
from dnas_dlrm.data.protocols import plan
from dnas_dlrm.data.schema import dense_transform
from dnas_dlrm.data.splits import SPLIT_NAMES


def source_rows(*paths: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and transformed dense values of every line of ``paths``, in order, read with
    plain Python (independent of the reader under test)."""
    labels, raw = [], []
    for path in paths:
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            labels.append(float(fields[0]))
            raw.append([int(f) if f else 0 for f in fields[1:14]])
    return np.array(labels, dtype=np.float32), dense_transform(np.array(raw).T).T


def load_splits(out: Path) -> dict[str, np.ndarray]:
    return {name: np.load(out / f"split_{name}.npy") for name in SPLIT_NAMES}


def assert_lines(out: Path, rows: np.ndarray, lines: np.ndarray, source) -> None:
    """The prepared ``rows`` hold exactly the source ``lines`` (0-based), row by row."""
    labels, dense = source
    np.testing.assert_array_equal(np.load(out / "labels.npy")[rows], labels[lines])
    np.testing.assert_array_equal(np.load(out / "dense.npy")[rows], dense[lines])


def assert_train(splits: dict[str, np.ndarray], n_train: int, arch_fraction: float = 0.2):
    weights, arch = splits["weights"], splits["arch"]
    assert np.intersect1d(weights, arch).size == 0
    np.testing.assert_array_equal(np.union1d(weights, arch), np.arange(n_train))
    assert len(arch) == round(arch_fraction * n_train)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("protocols")
    return {"one": write_tsv(root / "one.txt", 1403, seed=3),
            "a": write_tsv(root / "a.txt", 500, seed=4),
            "b": write_tsv(root / "b.txt", 700, seed=5)}


# ----------------------------------------------------------------------------- position
def test_position_split_is_three_consecutive_line_ranges(files, tmp_path):
    out = tmp_path / "pos"
    manifest = prepare(files["one"], out, PrepareOptions(
        hash_size=100, split="position", val_fraction=0.1, test_fraction=0.15, seed=7))
    # held out floor(1403 * 0.25) = 350 rows; val floor(140.3) = 140; test the last 210
    splits = load_splits(out)
    np.testing.assert_array_equal(splits["val"], np.arange(1053, 1193))
    np.testing.assert_array_equal(splits["test"], np.arange(1193, 1403))
    assert_train(splits, 1053)
    source = source_rows(files["one"])
    for name in SPLIT_NAMES:
        assert_lines(out, splits[name], splits[name], source)
    assert manifest.split == {
        "protocol": "position", "rule": manifest.split["rule"], "seed": 7, "arch_fraction": 0.2,
        "train_rows": [0, 1053], "eval_rows": [1053, 1403], "val_test": "in row order",
        "val_fraction": 0.1, "test_fraction": 0.15, "val_rows": [1053, 1193],
        "test_rows": [1193, 1403]}
    assert Manifest.load(out).split["protocol"] == "position"
    assert manifest.options["split"] == "position"


def test_position_split_defaults_and_exact_ratios(files, tmp_path):
    default = prepare(files["a"], tmp_path / "d", PrepareOptions(hash_size=10, split="position"))
    assert default.split_sizes == {"weights": 320, "arch": 80, "val": 50, "test": 50}
    # the DLRM reference's Kaggle protocol: 6/7 train, 1/14 val, 1/14 test (1/7 held out)
    dlrm = prepare(files["one"], tmp_path / "k", PrepareOptions(
        hash_size=10, split="position", val_fraction=1 / 14, test_fraction=1 / 14))
    held = 1403 // 7
    assert dlrm.split["train_rows"] == [0, 1403 - held]
    assert dlrm.split["val_rows"] == [1403 - held, 1403 - held + 1403 // 14]
    options = PrepareOptions(split="position", val_fraction=1 / 14, test_fraction=1 / 14)
    for n in (7, 14, 700, 7 * 6548659):  # multiples of 7: no float rounding loses a row
        assert plan(options, n, []).train_rows == n * 6 // 7
    # Kaggle's train.txt: day 7 = floor(n / 7) rows as in the DLRM reference, halved
    kaggle = plan(options, 45_840_617, [])
    assert (kaggle.train_rows, kaggle.val_rows) == (39_291_958, 3_274_329)


def test_position_split_keeps_the_seeded_weights_arch_split_of_the_paper_rule(files, tmp_path):
    """Same training rows (6/7) -> same weights/arch rows as the random protocol. (For n
    not a multiple of 7 the two differ by one row: random trains on floor(6n/7) rows,
    position holds out floor(n/7) like the DLRM reference's day 7.)"""
    pos = prepare(files["b"], tmp_path / "p", PrepareOptions(
        hash_size=10, split="position", val_fraction=1 / 14, test_fraction=1 / 14, seed=2))
    rnd = prepare(files["b"], tmp_path / "r", PrepareOptions(hash_size=10, seed=2))
    assert pos.split["train_rows"] == rnd.split["train_rows"] == [0, 600]
    sp, sr = load_splits(tmp_path / "p"), load_splits(tmp_path / "r")
    for name in ("weights", "arch"):
        np.testing.assert_array_equal(sp[name], sr[name])
    np.testing.assert_array_equal(np.union1d(sr["val"], sr["test"]), np.arange(600, 700))
    assert not np.array_equal(sr["val"], np.arange(600, 650))  # random: shuffled halves
    other = prepare(files["b"], tmp_path / "o", PrepareOptions(
        hash_size=10, split="position", val_fraction=1 / 14, test_fraction=1 / 14, seed=3))
    assert not np.array_equal(load_splits(tmp_path / "o")["arch"], sp["arch"])
    np.testing.assert_array_equal(load_splits(tmp_path / "o")["val"], sp["val"])
    assert other.split_sizes == pos.split_sizes


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_position_split_over_two_files_follows_the_order_given(files, tmp_path, order):
    paths = [files[key] for key in order]
    out = tmp_path / "two"
    manifest = prepare(paths, out, PrepareOptions(hash_size=100, split="position"))
    assert [s["first_row"] for s in manifest.sources] == [0, len(source_rows(paths[0])[0])]
    splits = load_splits(out)  # 1200 rows: train 960, val 120, test 120
    np.testing.assert_array_equal(splits["val"], np.arange(960, 1080))
    np.testing.assert_array_equal(splits["test"], np.arange(1080, 1200))
    assert_train(splits, 960)
    source = source_rows(*paths)
    for name in SPLIT_NAMES:
        assert_lines(out, splits[name], splits[name], source)
    # the held-out rows are the last 240 lines of the second file
    second = source_rows(paths[1])
    last = len(second[0])
    assert_lines(out, np.arange(960, 1200), np.arange(last - 240, last), second)


def test_position_split_data_set_feeds_the_search_unchanged(files, tmp_path):
    from dnas_dlrm.plugin import dnas_make_data
    from dnas_dlrm.settings import DlrmSettings

    out = tmp_path / "pos"
    prepare(files["a"], out, PrepareOptions(hash_size=50, split="position"))
    settings = DlrmSettings()
    settings.data.path = str(out)
    bundle = dnas_make_data(domain="dlrm", settings=settings, seed=0)
    assert len(bundle.table) == 500 and bundle.info["cardinalities"] == [50] * 26
    for name, rows in load_splits(out).items():
        np.testing.assert_array_equal(bundle.splits[name], rows)
    (dense, sparse), labels = bundle.table.gather(bundle.splits["test"][:8])
    assert dense.shape == (8, 13) and sparse.shape == (8, 26) and labels.shape == (8,)


# ----------------------------------------------------------------------------- day
def test_day_split_with_an_explicit_eval_file(tmp_path):
    days = [write_tsv(tmp_path / f"day_{i}", 200 + 100 * i, seed=10 + i) for i in range(3)]
    out = tmp_path / "day"
    manifest = prepare(days, out, PrepareOptions(hash_size=100, split="day",
                                                 eval_file=days[2], seed=1))
    splits = load_splits(out)
    assert_train(splits, 500)
    assert np.intersect1d(splits["val"], splits["test"]).size == 0
    np.testing.assert_array_equal(np.union1d(splits["val"], splits["test"]), np.arange(500, 900))
    assert len(splits["val"]) == 200 == len(splits["test"])
    assert_lines(out, np.arange(500, 900), np.arange(400), source_rows(days[2]))
    assert manifest.split["protocol"] == "day" and manifest.split["val_test"] == "shuffled halves"
    assert manifest.split["eval_file"] == str(days[2].absolute())
    assert manifest.options["eval_file"] == str(days[2])

    with pytest.raises(PrepareError, match=r"eval_file \(--eval-file\) .*day_1 must be the last"):
        prepare(days, tmp_path / "x", PrepareOptions(split="day", eval_file=days[1]))
    named = [write_tsv(tmp_path / f"{n}.txt", 50, seed=1) for n in ("jan", "feb", "mar")]
    with pytest.raises(PrepareError, match="--eval-file.*input 2 of 3"):
        prepare(named, tmp_path / "x", PrepareOptions(split="day", eval_file=named[1]))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kwargs, option", [
    ({"split": "kfold"}, r"split \(--split\)"),
    ({"split": "position", "val_fraction": 0.5, "test_fraction": 0.5}, "--test-fraction"),
    ({"split": "position", "val_fraction": 0.95}, r"val_fraction \(--val-fraction\)"),
    ({"split": "position", "val_fraction": 0.0}, "--val-fraction"),
    ({"split": "position", "test_fraction": 1.5}, "--test-fraction"),
    ({"split": "position", "test_fraction": True}, "--test-fraction"),
    ({"val_fraction": 0.1}, "--val-fraction.*position split only"),
    ({"split": "day", "eval_file": "d", "test_fraction": 0.1}, "--test-fraction"),
    ({"split": "day"}, r"eval_file \(--eval-file\) is required"),
    ({"eval_file": "day_9"}, "--eval-file.*day split only"),
    ({"split": "position", "eval_file": "day_9"}, "--eval-file.*day split only"),
])
def test_bad_split_options_name_the_option(kwargs, option):
    with pytest.raises(PrepareError, match=option):
        PrepareOptions(**kwargs)


def test_eval_file_must_be_an_input_checked_before_any_work(files, tmp_path):
    with pytest.raises(PrepareError, match=r"--eval-file.*b.txt is not one of the inputs"):
        prepare([files["one"], files["a"]], tmp_path / "out",
                PrepareOptions(split="day", eval_file=files["b"]))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary directory


# ----------------------------------------------------------------------------- CLI
def test_cli_position_split_end_to_end(files, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(prepare_command, [
        str(files["a"]), str(files["b"]), "--out", str(out), "--hash-size", "100",
        "--split", "position", "--val-fraction", "1/14", "--test-fraction", "0.05"])
    assert result.exit_code == 0, result.output
    assert "position split" in result.output
    manifest = Manifest.load(out)
    assert manifest.split["val_fraction"] == pytest.approx(1 / 14)
    # 1200 rows: held out floor(1200 * (1/14 + 1/20)) = 145, val floor(1200 / 14) = 85
    assert manifest.split["train_rows"] == [0, 1055]
    assert manifest.split["val_rows"] == [1055, 1140]
    table = CriteoArrays.open(out)
    np.testing.assert_array_equal(table.splits()["test"], np.arange(1140, 1200))


def test_cli_day_split_and_its_alias(tmp_path):
    days = [write_tsv(tmp_path / f"day_{i}", 120, seed=i) for i in range(2)]
    runner = CliRunner()
    for flags in (["--split", "day"], ["--split-by-day"]):
        out = tmp_path / flags[0].strip("-")
        result = runner.invoke(prepare_command, [*map(str, days), "--out", str(out), "-q",
                                                 "--hash-size", "10", *flags,
                                                 "--eval-file", str(days[1])])
        assert result.exit_code == 0, result.output
        assert Manifest.load(out).split["train_rows"] == [0, 120]


@pytest.mark.parametrize("flags, message", [
    (["--split-by-day", "--split", "position"], "--split-by-day"),
    (["--split", "day"], "--eval-file"),
    (["--eval-file", "{a}"], "--eval-file"),
    (["--val-fraction", "0.1"], "--val-fraction"),
    (["--split", "position", "--val-fraction", "one tenth"], "fraction"),
    (["--split", "position", "--val-fraction", "1/2", "--test-fraction", "1/2"],
     "--test-fraction"),
    (["--split", "day", "--eval-file", "{b}"], "not one of the inputs"),
])
def test_cli_refuses_bad_combinations(files, tmp_path, flags, message):
    flags = [f.format(a=files["a"], b=files["b"]) for f in flags]
    result = CliRunner().invoke(prepare_command, [str(files["one"]), str(files["a"]), "--out",
                                                  str(tmp_path / "o"), *flags])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
