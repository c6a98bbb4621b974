"""The loader (issue 11 item 1): prefetched and device-resident batches are the plain
gather's batches bit for bit, across epochs and from a mid-epoch resume position; the
prefetch thread stops when a loop ends early; its errors surface in the loop.

The DLRM table (memory-mapped Criteo arrays) is covered in
tests/dlrm/test_loader_criteo.py; on this CPU-only machine "device" is host memory, the
same code path as a GPU's but for the device of its tensors.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from dnas_core.config.settings import LoaderSettings
from dnas_core.config.validate import ConfigError, build
from dnas_core.engine.data import BatchSource, TensorTable
from dnas_core.engine.loader import Loader, Prefetcher, ResidentSource, ResidentTable, table_bytes

CPU = torch.device("cpu")


def toy_table(rows: int = 1000) -> TensorTable:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 5, generator=gen)
    ids = torch.randint(0, 1 << 40, (rows, 3), generator=gen)
    return TensorTable((x, ids), (torch.rand(rows, generator=gen) < 0.3).float())


class MappedTable:
    """A table over memory-mapped numpy arrays, gathered like the DLRM plugin's."""

    def __init__(self, directory, table: TensorTable):
        for name, tensor in (("x", table.inputs[0]), ("ids", table.inputs[1]),
                             ("y", table.targets)):
            np.save(directory / f"{name}.npy", tensor.numpy())
        self.arrays = [np.load(directory / f"{n}.npy", mmap_mode="r") for n in ("x", "ids", "y")]

    def __len__(self) -> int:
        return len(self.arrays[2])

    def gather(self, rows):
        x, ids, y = (torch.from_numpy(np.ascontiguousarray(a[rows])) for a in self.arrays)
        return (x, ids), y


def flat(batch) -> list[torch.Tensor]:
    (x, ids), y = batch
    return [x, ids, y]


def assert_same(a, b) -> None:
    for left, right in zip(flat(a), flat(b), strict=True):
        assert left.dtype == right.dtype and torch.equal(left, right)


ROWS = np.arange(100, 900)  # 800 rows of the table's 1000: batches of 96, the last 32


@pytest.mark.parametrize("placement,prefetch", [("host", 3), ("host", 1), ("host", 0),
                                                ("device", 4)])
@pytest.mark.parametrize("mapped", [False, True])
def test_every_mode_serves_the_plain_batches_across_epochs_and_from_mid_epoch(
        tmp_path, placement, prefetch, mapped):
    table = toy_table()
    if mapped:
        table = MappedTable(tmp_path, table)
    plain = BatchSource(table, ROWS, 96, seed=7, name="weights")
    loader = Loader(table, LoaderSettings(placement=placement, prefetch=prefetch), CPU)
    source = loader.source(ROWS, 96, seed=7, name="weights")
    assert isinstance(source, ResidentSource) == (placement == "device")
    assert len(source) == len(plain) == 9
    # three epochs from the start, then a resume in the middle of epoch 1 through epoch 2
    for start, stop in [(0, 27), (13, 22), (5, 6)]:
        served = list(loader.stream(source, range(start, stop)))
        assert len(served) == stop - start
        for index, batch in zip(range(start, stop), served, strict=True):
            assert_same(batch, plain.batch(index))
    assert len(flat(plain.batch(8))[2]) == 800 - 8 * 96


def test_evaluation_order_is_kept_by_a_resident_table():
    table = toy_table()
    loader = Loader(table, LoaderSettings(placement="device"), CPU)
    val = loader.source(ROWS[::-1].copy(), 128, seed=1, name="val", shuffle=False)
    plain = BatchSource(table, ROWS[::-1].copy(), 128, seed=1, name="val", shuffle=False)
    for a, b in zip(val.epoch(0), plain.epoch(0), strict=True):
        assert_same(a, b)


def test_a_resident_table_is_built_chunk_by_chunk(monkeypatch):
    monkeypatch.setattr("dnas_core.engine.loader.CHUNK_ROWS", 64)  # 1000 rows: 16 chunks
    table = toy_table()
    resident = ResidentTable(table, CPU)
    rows = np.array([999, 0, 63, 64, 500, 0])
    assert_same(resident.gather(rows), table.gather(rows))
    assert_same(resident.gather(torch.from_numpy(rows)), table.gather(rows))
    assert table_bytes(table) == 1000 * (5 * 4 + 3 * 8 + 4)


def test_auto_placement_keeps_the_table_on_the_host_without_a_gpu():
    loader = Loader(toy_table(), LoaderSettings(), CPU)
    assert loader.placement == "host" and not isinstance(loader.table, ResidentTable)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dnas-prefetch")]


def test_the_prefetch_thread_stops_when_a_loop_ends_early_or_drops_it():
    source = BatchSource(toy_table(), ROWS, 16, seed=1, name="weights")  # 50 batches
    full = Prefetcher(source, range(50), CPU, ahead=2)
    assert len(list(full)) == 50
    assert not full.thread.is_alive()

    early = Prefetcher(source, range(50), CPU, ahead=2)
    next(early), next(early)  # early stopping after two batches
    early.close()
    assert not early.thread.is_alive()

    with Prefetcher(source, range(50), CPU, ahead=3) as scoped:
        next(scoped)
    assert not scoped.thread.is_alive()

    dropped = Prefetcher(source, range(50), CPU, ahead=2)
    next(dropped)
    thread = dropped.thread
    del dropped
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive() and not prefetch_threads()


class FailingTable:
    def __init__(self, inner: TensorTable, bad_row: int):
        self.inner, self.bad_row = inner, bad_row

    def __len__(self) -> int:
        return len(self.inner)

    def gather(self, rows):
        if self.bad_row in rows:
            raise OSError(f"cannot read row {self.bad_row}")
        return self.inner.gather(rows)


def test_an_error_in_the_prefetch_thread_is_raised_in_the_loop():
    rows = np.arange(1000)
    source = BatchSource(FailingTable(toy_table(), 500), rows, 100, seed=1, name="w",
                         shuffle=False)
    stream = Loader(source.table, LoaderSettings(prefetch=2), CPU).stream(source, range(10))
    served = []
    with pytest.raises(OSError, match="cannot read row 500"):
        for batch in stream:
            served.append(batch)
    assert len(served) == 5  # the batches before the bad one, then the error
    assert not prefetch_threads()


def test_loader_settings_are_checked_at_the_edge():
    with pytest.raises(ConfigError, match="loader.placement: expected one of 'auto', 'host'"):
        build(LoaderSettings, {"placement": "gpu"}, "loader")
    with pytest.raises(ConfigError, match="loader.prefetch: must be at least 0"):
        build(LoaderSettings, {"prefetch": -1}, "loader")
    with pytest.raises(ConfigError, match=r"loader.device_fraction: must lie in \(0, 1\]"):
        build(LoaderSettings, {"device_fraction": 1.5}, "loader")
