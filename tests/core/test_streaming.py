"""Row-ranges splits and their streaming source (issue 11 item 7): every row once per
epoch, a seeded order that differs by epoch, batch g the same cold or in sequence (resume),
memory bounded by the window whatever the split's size, and the core's users (the
bundle, the loader, the constant predictor) taking the new split kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnas_core.config.settings import LoaderSettings
from dnas_core.engine.baseline import constant_metrics, training_rows, training_targets
from dnas_core.engine.data import DataBundle, TensorTable
from dnas_core.engine.loader import Loader
from dnas_core.engine.rowsets import RowFilter, RowRanges, first_rows, iter_rows, row_uniform
from dnas_core.engine.streaming import StreamingSource, batch_source
from dnas_core.engine.tasks import BinaryClassification

CPU = torch.device("cpu")
BLOCK = 64


def numbered(rows: int) -> TensorTable:
    """A table whose inputs are the row numbers (so a batch says which rows it holds)."""
    index = torch.arange(rows)
    return TensorTable((index.float()[:, None], index), (index % 3 == 0).float())


def train_split(rows: int, low: float = 0.25, high: float = 1.0) -> RowRanges:
    return RowRanges(((0, rows),), RowFilter(7, low, high), block_rows=BLOCK)


def served(source: StreamingSource, epoch: int) -> np.ndarray:
    return np.concatenate([source.batch(g)[0][1].numpy() for g in source.epoch_range(epoch)])


def test_row_ranges_cut_at_blocks_and_count_the_filtered_rows():
    split = RowRanges(((10, 150), (200, 260)), RowFilter(3, 0.0, 0.5), block_rows=BLOCK)
    starts, stops = split.pieces()
    assert starts.tolist() == [10, 64, 128, 200, 256]
    assert stops.tolist() == [64, 128, 150, 256, 260]
    rows = np.concatenate([np.arange(10, 150), np.arange(200, 260)])
    kept = rows[row_uniform(3, rows) < 0.5]
    assert len(split) == len(kept)
    np.testing.assert_array_equal(np.concatenate(list(iter_rows(split, 17))), kept)
    assert [len(c) for c in iter_rows(split, 17)][:-1] == [17] * (len(kept) // 17)
    np.testing.assert_array_equal(first_rows(split, 5), kept[:5])
    with pytest.raises(ValueError, match="counts must give"):
        RowRanges(((0, 100),), block_rows=BLOCK, counts=np.array([64]))
    with pytest.raises(ValueError, match="sorted, disjoint"):
        RowRanges(((50, 100), (0, 10)))


def test_complementary_filters_join_into_the_whole_range():
    weights, arch = train_split(1000), train_split(1000, 0.0, 0.25)
    joined = weights.union(arch)
    assert joined.filter is None and len(joined) == 1000 == len(weights) + len(arch)
    assert 0.2 < len(arch) / 1000 < 0.3
    kept = np.concatenate(list(iter_rows(arch, 1000)))
    assert not set(kept.tolist()) & set(np.concatenate(list(iter_rows(weights, 1000))).tolist())
    other = RowRanges(((1000, 1200),), block_rows=BLOCK)
    assert len(RowRanges(((0, 1000),), block_rows=BLOCK).union(other)) == 1200
    with pytest.raises(ValueError, match="cannot be joined"):
        weights.union(other)


def test_every_row_once_per_epoch_a_new_order_each_epoch_the_same_for_the_seed():
    split = train_split(5000)
    expected = np.concatenate(list(iter_rows(split, 5000)))
    source = StreamingSource(numbered(5000), split, 100, seed=4, name="weights",
                             window_pieces=4)
    first, second = served(source, 0), served(source, 1)
    np.testing.assert_array_equal(np.sort(first), expected)  # each row exactly once
    np.testing.assert_array_equal(np.sort(second), expected)
    assert not np.array_equal(first, second)
    assert np.mean(first == expected) < 0.01  # shuffled, not in row order
    again = StreamingSource(numbered(5000), split, 100, seed=4, name="weights",
                            window_pieces=4)
    np.testing.assert_array_equal(served(again, 1), second)
    other = StreamingSource(numbered(5000), split, 100, seed=5, name="weights",
                            window_pieces=4)
    assert not np.array_equal(served(other, 0), first)
    # batch_rows names the rows batch() serves, targets included
    batch = source.batch(17)
    np.testing.assert_array_equal(batch[0][1].numpy(), source.batch_rows(17))
    np.testing.assert_array_equal(batch[1].numpy(), (source.batch_rows(17) % 3 == 0))


def test_a_cold_source_serves_batch_g_as_the_one_that_read_up_to_it():
    split = train_split(3000)
    warm = StreamingSource(numbered(3000), split, 96, seed=2, name="arch", window_pieces=3)
    in_sequence = [warm.batch(g)[0][1].numpy() for g in range(3 * len(warm))]
    for g in (0, 5, len(warm) - 1, len(warm), 2 * len(warm) + 7):
        cold = StreamingSource(numbered(3000), split, 96, seed=2, name="arch",
                               window_pieces=3)
        np.testing.assert_array_equal(cold.batch(g)[0][1].numpy(), in_sequence[g])
        assert cold.held_rows <= 2 * 3 * BLOCK  # only the windows of batch g were read


def test_held_rows_stay_within_two_windows_whatever_the_split_size():
    held = {}
    for rows in (4_000, 40_000):
        source = StreamingSource(numbered(rows), train_split(rows), 128, seed=0, name="w",
                                 window_pieces=4)
        most = 0
        for g in source.epoch_range(0):
            source.batch(g)
            most = max(most, source.held_rows)
        held[rows] = most
    assert held[4_000] <= 2 * 4 * BLOCK and held[40_000] <= 2 * 4 * BLOCK
    assert held[40_000] <= held[4_000] * 1.2  # ten times the rows, the same buffer


def test_without_shuffling_batches_follow_row_order():
    split = RowRanges(((100, 900),), RowFilter(1, 0.0, 0.5), block_rows=BLOCK)
    source = batch_source(numbered(1000), split, 50, seed=0, name="val", shuffle=False)
    assert isinstance(source, StreamingSource)
    np.testing.assert_array_equal(served(source, 0), np.concatenate(list(iter_rows(split, 900))))
    np.testing.assert_array_equal(served(source, 3), served(source, 0))


def ranged_bundle(rows: int = 2000) -> DataBundle:
    train, evaluation = ((0, rows * 4 // 5),), ((rows * 4 // 5, rows),)
    splits = {"weights": RowRanges(train, RowFilter(1, 0.25, 1.0), BLOCK),
              "arch": RowRanges(train, RowFilter(1, 0.0, 0.25), BLOCK),
              "val": RowRanges(evaluation, RowFilter(2, 0.0, 0.5), BLOCK),
              "test": RowRanges(evaluation, RowFilter(2, 0.5, 1.0), BLOCK)}
    return DataBundle(numbered(rows), splits)


def test_the_bundle_checks_range_splits():
    bundle = ranged_bundle()
    with pytest.raises(ValueError, match="outside the table"):
        DataBundle(numbered(100), bundle.splits)
    empty = dict(bundle.splits, arch=RowRanges(((0, 1600),), RowFilter(1, 0.0, 0.0), BLOCK))
    with pytest.raises(ValueError, match="split 'arch' is empty"):
        DataBundle(numbered(2000), empty)


def test_the_loader_streams_range_splits_prefetched_as_plain():
    bundle = ranged_bundle()
    prefetched = Loader(bundle.table, LoaderSettings(placement="host", prefetch=3), CPU)
    plain = Loader(bundle.table, LoaderSettings(placement="host", prefetch=0), CPU)
    resident = Loader(bundle.table, LoaderSettings(placement="device"), CPU)
    sources = [loader.source(bundle.splits["weights"], 64, 3, "weights")
               for loader in (prefetched, plain, resident)]
    assert all(isinstance(s, StreamingSource) for s in sources)
    batches = range(5, 40)
    streams = [list(loader.stream(source, batches))
               for loader, source in zip((prefetched, plain, resident), sources)]
    for a, b, c in zip(*streams, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_the_constant_predictor_reads_range_splits():
    bundle = ranged_bundle()
    rows = training_rows(bundle)
    assert isinstance(rows, RowRanges) and len(rows) == 1600
    targets = training_targets(bundle)
    assert len(targets) == 1600
    assert float(targets.mean()) == pytest.approx(np.mean(np.arange(1600) % 3 == 0))
    metrics = constant_metrics(BinaryClassification(), bundle, "val")
    assert metrics is not None and 0 < metrics["logloss"] < 1


def test_a_search_on_range_splits_reads_each_split_only_in_its_phase(tmp_path, monkeypatch):
    from tests.core.test_rows_served import RecordingTable, tagged_search
    from tests.core.toy_plugin import make_data

    toy = make_data(2000, 1)
    bundle = ranged_bundle()
    table = RecordingTable(toy.table)
    tagged_search(DataBundle(table, bundle.splits), table, tmp_path, monkeypatch, {1.5: 1})
    rows = {k: set(rows_of_split(v).tolist()) for k, v in bundle.splits.items()}
    assert set(table.rows("weights").tolist()) == rows["weights"]  # only, and all of them
    assert set(table.rows("arch").tolist()) == rows["arch"]
    assert table.rows("outside").size == 0


def rows_of_split(split: RowRanges) -> np.ndarray:
    return np.concatenate(list(iter_rows(split, len(split))))


def test_the_constant_predictor_samples_runs_of_a_large_range_split(monkeypatch):
    from dnas_core.engine import baseline

    monkeypatch.setattr(baseline, "MAX_TARGET_ROWS", 300)
    bundle = ranged_bundle()
    read: list[np.ndarray] = []
    gather = bundle.table.gather
    monkeypatch.setattr(bundle.table, "gather", lambda rows: read.append(rows) or gather(rows))
    targets = baseline.training_targets(bundle, seed=5)
    assert len(targets) == 300 and sum(len(r) for r in read) == 300  # only those rows read
    rows = np.concatenate(read)
    assert (np.diff(rows) > 0).all() and rows.max() < 1600  # training rows, each once
    again = baseline.training_targets(bundle, seed=5)
    torch.testing.assert_close(targets, again)


def test_a_search_on_range_splits_resumed_mid_way_equals_the_uninterrupted_one(tmp_path):
    from dnas_core.config.settings import OptimizerSettings, SearchSettings
    from dnas_core.engine.cost import DecisionCostTable
    from dnas_core.engine.search import SearchManager
    from tests.core.toy_plugin import FLOPS, ToySuperNet, make_data

    def manager(run_dir):
        torch.manual_seed(1)
        toy = make_data(2000, 1)
        settings = SearchSettings(
            warmup_epochs=0.5, total_epochs=2, alternate_every=0.25, batch_size=64,
            arch_sampling={1.5: 2}, weights_optimizer=OptimizerSettings("SGD", lr=0.2),
            arch_optimizer=OptimizerSettings("Adam", lr=0.2))
        cost = DecisionCostTable("flops", "FLOPs", {"op": torch.tensor(FLOPS)})
        return SearchManager(ToySuperNet(16), DataBundle(toy.table, ranged_bundle().splits),
                             BinaryClassification(), cost, {"flops": cost}, settings,
                             domain="toy", space="toy", seed=1, device=CPU, run_dir=run_dir)

    full = manager(tmp_path / "full")
    archs = full.run()
    cut = manager(tmp_path / "cut")

    def stop(chunk):  # chunks of a quarter epoch: the resume starts mid-epoch
        if chunk.index == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut.run(on_chunk_end=stop)
    resumed = manager(tmp_path / "cut")
    assert [a.to_dict() for a in resumed.run()] == [a.to_dict() for a in archs]
    for (name, a), b in zip(full.supernet.state_dict().items(),
                            resumed.supernet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
