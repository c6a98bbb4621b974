"""``CriteoArrays``: O(1) opening, exact random-access batches, splits, refusal of bad dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_dlrm.data import (
    CriteoArrays,
    ManifestError,
    PrepareOptions,
    generate,
    make_splits,
    prepare,
    write_tsv,
)

ROWS = 3000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    write_tsv(root / "train.txt", ROWS, seed=21)
    prepare(root / "train.txt", root / "prepared",
            PrepareOptions(hash_size=5000, seed=9, negative_rate=0.5))
    return root / "prepared"


@pytest.fixture(scope="module")
def synthetic():
    return generate(ROWS, seed=21)


def test_open_is_memory_mapped(prepared):
    table = CriteoArrays.open(prepared)
    assert isinstance(table.dense, np.memmap) and isinstance(table.sparse, np.memmap)
    assert isinstance(table.labels, np.memmap)
    assert len(table) == ROWS and table.cardinalities == [5000] * 26
    assert table.negative_rate == 0.5 and table.manifest.seed == 9


def test_gather_is_exact_in_any_order(prepared, synthetic):
    table = CriteoArrays.open(prepared)
    dense = np.load(prepared / "dense.npy")
    sparse = np.load(prepared / "sparse.npy")
    labels = np.load(prepared / "labels.npy")
    rng = np.random.default_rng(0)
    for rows in (rng.integers(0, ROWS, 2048), np.array([5, 5, 0, ROWS - 1, 17, 5]),
                 np.arange(ROWS)[::-1], np.array([42])):
        (d, s), y = table.gather(rows)
        assert d.dtype == torch.float32 and d.shape == (len(rows), 13)
        assert s.dtype == torch.int64 and s.shape == (len(rows), 26)
        assert y.dtype == torch.float32 and y.shape == (len(rows),)
        np.testing.assert_array_equal(d.numpy(), dense[rows])
        np.testing.assert_array_equal(s.numpy(), sparse[rows])
        np.testing.assert_array_equal(y.numpy(), labels[rows])
        # and the values are the generator's rows (labels and dense are identical)
        np.testing.assert_array_equal(d.numpy(), synthetic.dense[rows])
        np.testing.assert_array_equal(y.numpy(), synthetic.labels[rows])
    (d, s), y = table.gather(np.array([], dtype=np.int64))
    assert d.shape == (0, 13) and s.shape == (0, 26) and y.shape == (0,)


def test_gather_rejects_bad_rows(prepared):
    table = CriteoArrays.open(prepared)
    for rows in (np.array([ROWS]), np.array([-1]), np.array([[1, 2]])):
        with pytest.raises((IndexError, ValueError)):
            table.gather(rows)
    with pytest.raises(ValueError):
        table.gather(np.array([0.5]))


def test_prepared_splits_match_the_rule(prepared):
    table = CriteoArrays.open(prepared)
    splits = table.splits()
    assert set(splits) == {"weights", "arch", "val", "test"}
    labels = np.asarray(table.labels)
    reference = make_splits(ROWS, 9, labels=labels, negative_rate=0.5)
    for name, rows in splits.items():
        np.testing.assert_array_equal(rows, reference[name])
        assert len(rows) == table.manifest.split_sizes[name]
    union = np.concatenate(list(splits.values()))
    assert len(np.unique(union)) == len(union)


def test_from_synthetic_uses_the_same_split_rule(synthetic):
    table = CriteoArrays.from_synthetic(synthetic, seed=4)
    splits = table.splits()
    reference = make_splits(ROWS, 4)
    for name in splits:
        np.testing.assert_array_equal(splits[name], reference[name])
    n_train = ROWS * 6 // 7
    assert len(splits["weights"]) + len(splits["arch"]) == n_train
    assert len(splits["val"]) + len(splits["test"]) == ROWS - n_train
    assert table.planted is synthetic.planted and table.cardinalities == synthetic.cardinalities
    rows = np.array([2999, 0, 7, 7])
    (d, s), y = table.gather(rows)
    np.testing.assert_array_equal(d.numpy(), synthetic.dense[rows])
    np.testing.assert_array_equal(s.numpy(), synthetic.sparse[rows])
    np.testing.assert_array_equal(y.numpy(), synthetic.labels[rows])
    assert (s.numpy() < np.array(table.cardinalities)).all()
    other = CriteoArrays.from_synthetic(synthetic, seed=5).splits()
    assert not np.array_equal(other["arch"], splits["arch"])


def test_satisfies_the_core_table_contract(synthetic, prepared):
    from dnas_core.engine.data import BatchSource, DataBundle, Table

    for table in (CriteoArrays.from_synthetic(synthetic), CriteoArrays.open(prepared)):
        assert isinstance(table, Table)
        bundle = DataBundle(table=table, splits=table.splits(), info=table.info())
        source = BatchSource(bundle.table, bundle.splits["weights"], 256, seed=1, name="weights")
        (d, s), y = source.batch(3)
        assert d.shape == (256, 13) and s.shape == (256, 26) and y.shape == (256,)


def test_constructor_validates_shapes(synthetic):
    with pytest.raises(ValueError, match="dense"):
        CriteoArrays(synthetic.dense[:, :5], synthetic.sparse, synthetic.labels,
                     synthetic.cardinalities)
    with pytest.raises(ValueError, match="cardinalities"):
        CriteoArrays(synthetic.dense, synthetic.sparse, synthetic.labels, [10] * 3)


def test_loader_refuses_incomplete_directories(prepared, tmp_path):
    with pytest.raises(ManifestError, match="no such"):
        CriteoArrays.open(tmp_path / "absent")
    empty = tmp_path / "partial"
    empty.mkdir()
    np.save(empty / "dense.npy", np.zeros((3, 13), np.float32))
    with pytest.raises(ManifestError, match="no manifest.json"):
        CriteoArrays.open(empty)
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable manifest"):
        CriteoArrays.open(empty)

    manifest = json.loads((prepared / "manifest.json").read_text())
    for change, message in ((lambda m: m.update(format_version=99), "version"),
                            (lambda m: m.update(format="other"), "not a"),
                            (lambda m: m.pop("cardinalities"), "lacks"),
                            (lambda m: m.update(rows=ROWS + 1), "shapes")):
        copy = tmp_path / f"copy_{message}"
        copy.mkdir()
        for item in prepared.iterdir():
            (copy / item.name).symlink_to(item)
        (copy / "manifest.json").unlink()
        edited = json.loads(json.dumps(manifest))
        change(edited)
        (copy / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(ManifestError, match=message):
            CriteoArrays.open(copy)
    missing = tmp_path / "missing_file"
    missing.mkdir()
    for item in prepared.iterdir():
        if item.name != "split_test.npy":
            (missing / item.name).symlink_to(item)
    with pytest.raises(ManifestError, match="split_test.npy"):
        CriteoArrays.open(missing)
