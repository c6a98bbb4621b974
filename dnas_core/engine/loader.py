"""Serving batches faster than a step: background prefetch, or the table in device memory.

A :class:`~dnas_core.engine.data.BatchSource` addresses every batch by (epoch, position);
nothing here changes which rows a batch holds or their order, only where and when they are
gathered:

* ``host`` placement: a background thread gathers the next batches of the range a loop is
  about to train on (a bounded queue, ``prefetch`` batches ahead), pinned on CUDA so that
  the loop's copy to the device is asynchronous (``non_blocking``);
* ``device`` placement: :class:`ResidentTable` copies every row of the table to the device
  once, and each epoch's order once per epoch, so a batch is an index gather on the device
  and the step never waits for the host.

Both serve the very tensors the plain gather would, bit for bit (tests/core/test_loader.py).
A row-ranges split (:mod:`dnas_core.engine.rowsets`) is served by a
:class:`~dnas_core.engine.streaming.StreamingSource` over either table.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dnas_core.config.settings import LoaderSettings
from dnas_core.engine.data import BatchSource, Table, batch_tensors, map_tensors, to_device
from dnas_core.engine.rowsets import RowRanges, Split
from dnas_core.engine.streaming import StreamingSource

#: rows copied to the device at a time while a table is made resident
CHUNK_ROWS = 1 << 20


def table_bytes(table: Table) -> int:
    """The bytes every row of ``table`` takes as gathered tensors (from a few rows)."""
    n = len(table)
    probe = table.gather(np.arange(min(n, 64), dtype=np.int64))
    per_row = sum(leaf.element_size() * leaf[:1].numel() for leaf in batch_tensors(probe))
    return per_row * n


class ResidentTable:
    """Every row of a table as tensors in ``device`` memory; ``gather`` indexes them there.

    Built chunk by chunk (:data:`CHUNK_ROWS` rows) into tensors allocated once, so the copy
    never holds the table twice. ``gather`` takes host rows (numpy) or device rows (a
    tensor, what :class:`ResidentSource` hands it).
    """

    def __init__(self, table: Table, device: torch.device):
        self.device = torch.device(device)
        n = len(table)
        first = table.gather(np.arange(min(n, CHUNK_ROWS), dtype=np.int64))
        self._store = map_tensors(first, lambda t: torch.empty((n, *t.shape[1:]), dtype=t.dtype,
                                                        device=self.device))
        for start in range(0, n, CHUNK_ROWS):
            rows = np.arange(start, min(n, start + CHUNK_ROWS), dtype=np.int64)
            chunk = first if start == 0 else table.gather(rows)
            for stored, part in zip(batch_tensors(self._store), batch_tensors(chunk), strict=True):
                stored[start:start + len(rows)].copy_(part)
        self._n = n

    def __len__(self) -> int:
        return self._n

    def gather(self, rows: np.ndarray | torch.Tensor) -> Any:
        index = torch.as_tensor(rows, dtype=torch.int64).to(self.device, non_blocking=True)
        return map_tensors(self._store, lambda t: t.index_select(0, index))


class ResidentSource(BatchSource):
    """A batch source over a :class:`ResidentTable`: the epoch's order is copied to the
    device once per epoch, and each batch's rows are a slice of it there."""

    table: ResidentTable

    def __init__(self, table: ResidentTable, rows: np.ndarray, batch_size: int, seed: int,
                 name: str, shuffle: bool = True):
        super().__init__(table, rows, batch_size, seed, name, shuffle)
        self._device_epoch: int | None = None
        self._device_order = torch.empty(0, dtype=torch.int64)

    def batch(self, global_index: int) -> Any:
        epoch, position = divmod(global_index, len(self))
        key = epoch if self.shuffle else 0
        if self._device_epoch != key:
            order = np.ascontiguousarray(self._epoch_order(epoch))
            self._device_order = torch.from_numpy(order).to(self.table.device)
            self._device_epoch = key
        return self.table.gather(self._device_order[position * self.batch_size:
                                                    (position + 1) * self.batch_size])


class _Failure:
    """An exception raised in the prefetch thread, carried to the loop that waits."""

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def _produce(source: BatchSource, indices: Sequence[int], out: queue.Queue[Any],
             stop: threading.Event, pin: bool) -> None:
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for index in indices:
            if stop.is_set():
                return
            batch = source.batch(index)
            if pin:
                batch = map_tensors(batch, torch.Tensor.pin_memory)
            if not put(batch):
                return
        put(_DONE)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
        put(_Failure(error))


class Prefetcher:
    """The batches of ``source`` at ``indices``, in that order, gathered ahead by a thread.

    Iterate it for the batches (on ``device``); ``close()`` (also on ``with`` exit, or when
    the object is dropped) stops and joins the thread, so a loop that ends early (an
    exception, early stopping) leaves no thread behind. An exception in the thread is
    raised by the next ``next()``.
    """

    def __init__(self, source: BatchSource, indices: Sequence[int], device: torch.device,
                 ahead: int):
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        self.device = device
        self._left = len(indices)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        # the thread holds only the queue and the event, never self: dropping the
        # prefetcher collects it, and __del__ stops the thread
        self.thread = threading.Thread(
            target=_produce, args=(source, indices, self._queue, self._stop,
                                   device.type == "cuda"),
            name=f"dnas-prefetch-{source.name}", daemon=True)
        self.thread.start()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._left == 0 or self._stop.is_set():
            self.close()
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("the prefetch thread stopped without a batch") from None
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        self._left -= 1
        if self._left == 0:
            self.close()
        return to_device(item, self.device)

    def close(self) -> None:
        self._stop.set()
        while True:  # free the batches waiting (pinned memory) and unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if sys is not None and not sys.is_finalizing():
            self.close()


def _plain(source: BatchSource, indices: Sequence[int], device: torch.device) -> Iterator[Any]:
    for index in indices:
        yield to_device(source.batch(index), device)


class Loader:
    """Batch sources of one table for one device, placed as ``settings`` say.

    Built once per search or training: a resident table is copied to the device once and
    serves every split made from it.
    """

    def __init__(self, table: Table, settings: LoaderSettings | None, device: torch.device):
        self.settings = settings or LoaderSettings()
        self.device = torch.device(device)
        self.placement = self._placement(table)
        self.table: Table = (ResidentTable(table, self.device)
                             if self.placement == "device" else table)

    def _placement(self, table: Table) -> str:
        wanted = self.settings.placement
        if wanted != "auto":
            return wanted
        if self.device.type != "cuda":
            return "host"
        try:
            size = table_bytes(table)
        except TypeError:  # batches not made of tensors: only the host can serve them
            return "host"
        free, _ = torch.cuda.mem_get_info(self.device)
        return "device" if size <= self.settings.device_fraction * free else "host"

    def source(self, rows: Split, batch_size: int, seed: int, name: str,
               shuffle: bool = True) -> BatchSource:
        if isinstance(rows, RowRanges):  # streamed, from the host or the resident table
            return StreamingSource(self.table, rows, batch_size, seed, name, shuffle)
        if isinstance(self.table, ResidentTable):
            return ResidentSource(self.table, rows, batch_size, seed, name, shuffle)
        return BatchSource(self.table, rows, batch_size, seed, name, shuffle)

    def stream(self, source: BatchSource, indices: Sequence[int]) -> Iterator[Any]:
        """The batches at ``indices`` on the device, in order: prefetched from the host, or
        gathered on the device where the table lives there."""
        if isinstance(source.table, ResidentTable) or self.settings.prefetch == 0:
            return _plain(source, indices, self.device)
        return Prefetcher(source, indices, self.device, self.settings.prefetch)
