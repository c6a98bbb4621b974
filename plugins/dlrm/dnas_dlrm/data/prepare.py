"""Streaming ``prepare``: Criteo text files in, a memory-mappable directory out.

Pass 1 reads every input once, in chunks of whole lines: a reader thread reads, inflates
and hashes; one worker thread per core parses a chunk (pyarrow, single-threaded per chunk:
chunk-level parallelism also spreads the NumPy work) and encodes it; the main thread appends
the results in order to ``.npy`` files whose headers are fixed at the end (:mod:`.npyfile`).
Memory is bounded by a few chunks whatever the input size.

Categorical encoding, per feature:

* hashing (``hash_size`` H): missing -> row 0, a value v -> row ``1 + v mod (H - 1)``;
  the table has exactly H rows. Single pass.
* vocabulary (features without a hash size): pass 1 stores the raw values in a temporary
  file; pass 2 counts them over the training rows only; pass 3 maps them: missing -> row 0,
  values seen fewer than ``min_count`` times in training, or never -> the shared row 1,
  the others -> ``2 + rank`` by descending training count (ties: smaller value first).

Rows kept: every good line (bad lines are an error, or skipped and listed), times an
optional seeded subsample (a per-line hash of seed, file and line number, so it does not
depend on chunking). Splits follow :mod:`.splits` and are stored as index arrays; negative
downsampling removes training negatives from the ``weights``/``arch`` index arrays (the
rows stay in the arrays) and the rate is recorded for :func:`.splits.correct_downsampled`.

Output goes to a temporary sibling directory (``.NAME.prepare-*``), renamed onto ``out``
after the manifest, written last, is on disk: an interrupted prepare leaves nothing that
looks complete.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .criteo import (
    DEFAULT_CHUNK_BYTES,
    BadLine,
    ParsedBlock,
    is_gzip,
    iter_line_chunks,
    parse_chunk,
)
from .manifest import ARRAY_FILES, MANIFEST_NAME, MISSING_ROW, SPLIT_FILES, UNKNOWN_ROW, Manifest
from .npyfile import NpyAppender
from .schema import NUM_DENSE, NUM_SPARSE, SPARSE_NAMES, feature_index
from .splits import SPLIT_NAMES, default_train_rows, iter_split_blocks

_VOCAB_BLOCK_ROWS = 1 << 19
_DAY_PATTERN = re.compile(r"day_(\d+)")


class PrepareError(ValueError):
    """Invalid options or inputs for prepare (the message names the option or file)."""


@dataclass
class PrepareOptions:
    """Options of :func:`prepare`, validated once on construction.

    ``hash_size`` applies to every categorical feature; ``hash_sizes`` overrides it per
    feature (``{"C3": 100000}``, or a sequence of 26 sizes, ``None`` for vocabulary).
    Features left without a size use a vocabulary built on the training rows.
    """

    hash_size: int | None = None
    hash_sizes: Mapping[str, int] | Sequence[int | None] | None = None
    min_count: int = 1
    seed: int = 0
    arch_fraction: float = 0.2
    split_by_day: bool = False
    subsample: float = 1.0
    negative_rate: float | None = None
    on_bad_line: Literal["error", "skip"] = "error"
    allow_short_lines: bool = False
    overwrite: bool = False
    use_threads: bool = True
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    sparse_dtype: Literal["auto", "int32", "int64"] = "auto"
    max_listed_bad_lines: int = 100_000
    table_sizes: tuple[int | None, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def fail(option: str, flag: str, message: str) -> None:
            raise PrepareError(f"{option} ({flag}) {message}")

        def check_size(option: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                fail(option, "--hash-size", f"must be an integer >= 2 (row 0 holds missing "
                     f"values), got {value!r}")
            return int(value)

        sizes: list[int | None] = [None] * NUM_SPARSE
        if self.hash_size is not None:
            sizes = [check_size("hash_size", self.hash_size)] * NUM_SPARSE
        if isinstance(self.hash_sizes, Mapping):
            for name, value in self.hash_sizes.items():
                try:
                    index = feature_index(str(name))
                except ValueError as error:
                    fail("hash_sizes", "--hash-size", str(error))
                sizes[index] = check_size(f"hash_sizes[{name!r}]", value)
        elif self.hash_sizes is not None:
            listed = list(self.hash_sizes)
            if len(listed) != NUM_SPARSE:
                fail("hash_sizes", "--hash-size", f"must list {NUM_SPARSE} sizes, got "
                     f"{len(listed)}")
            for index, value in enumerate(listed):
                if value is not None:
                    sizes[index] = check_size(f"hash_sizes[{index}]", value)
        self.table_sizes = tuple(sizes)
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) \
                or self.min_count < 1:
            fail("min_count", "--min-count", f"must be an integer >= 1, got {self.min_count!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "--seed", f"must be an integer >= 0, got {self.seed!r}")
        if not 0.0 <= self.arch_fraction < 1.0:
            fail("arch_fraction", "--arch-fraction", f"must be in [0, 1), got "
                 f"{self.arch_fraction!r}")
        if not 0.0 < self.subsample <= 1.0:
            fail("subsample", "--subsample", f"must be in (0, 1], got {self.subsample!r}")
        if self.negative_rate is not None and not 0.0 < self.negative_rate <= 1.0:
            fail("negative_rate", "--negative-rate", f"must be in (0, 1], got "
                 f"{self.negative_rate!r}")
        if self.on_bad_line not in ("error", "skip"):
            fail("on_bad_line", "--on-bad-line", f"must be 'error' or 'skip', got "
                 f"{self.on_bad_line!r}")
        if self.sparse_dtype not in ("auto", "int32", "int64"):
            fail("sparse_dtype", "--sparse-dtype", f"must be auto, int32 or int64, got "
                 f"{self.sparse_dtype!r}")
        if self.chunk_bytes < 1 << 16:
            fail("chunk_bytes", "--chunk-mb", f"must be at least 65536, got {self.chunk_bytes}")
        if self.max_listed_bad_lines < 0:
            fail("max_listed_bad_lines", "-", "must be >= 0")

    @property
    def vocab_features(self) -> list[int]:
        return [j for j, size in enumerate(self.table_sizes) if size is None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hash_sizes"] = {SPARSE_NAMES[j]: size for j, size in enumerate(self.table_sizes)}
        data.pop("table_sizes", None)
        return data


# ----------------------------------------------------------------------------- helpers
def _line_uniform(seed: int, file_index: int, lines: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per (seed, file, line): splitmix64 of the line number."""
    mask = (1 << 64) - 1
    key = (seed * 0x9E3779B97F4A7C15 + (file_index + 1) * 0xD1B54A32D192ED03) & mask
    x = lines.astype(np.uint64) + np.uint64(key)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run an iterator in a background thread, ``depth`` items ahead; errors re-raised here."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            box.put((done, error))

    thread = threading.Thread(target=work, name="dnas-prepare-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _check_inputs(inputs: Sequence[Path], options: PrepareOptions) -> None:
    if not inputs:
        raise PrepareError("no input files given")
    for path in inputs:
        if not path.is_file():
            raise PrepareError(f"input {path}: no such file")
    if options.split_by_day:
        if len(inputs) < 2:
            raise PrepareError("split_by_day (--split-by-day) needs at least two input files: "
                               "the last one becomes validation and test")
        days = [_DAY_PATTERN.search(p.name) for p in inputs]
        if all(days):
            numbers = [int(m.group(1)) for m in days]  # type: ignore[union-attr]
            if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
                raise PrepareError(
                    "split_by_day (--split-by-day): the day files are not in time order "
                    f"({', '.join(p.name for p in inputs)}); list them as day_0 day_1 ... "
                    "(e.g. `ls day_* | sort -V`)")


class _Vocabulary:
    """Training counts of one feature's raw values, merged block by block."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        values = values[values >= 0]
        if not len(values):
            return
        keys, counts = np.unique(values, return_counts=True)
        if not len(self.keys):
            self.keys, self.counts = keys, counts.astype(np.int64)
            return
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        np.add.at(self.counts, at[found], counts[found])
        if not found.all():
            merged_keys = np.concatenate([self.keys, keys[~found]])
            merged_counts = np.concatenate([self.counts, counts[~found]])
            order = np.argsort(merged_keys, kind="stable")
            self.keys, self.counts = merged_keys[order], merged_counts[order]

    def finish(self, min_count: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted kept keys and the row of each (2 + rank by descending count)."""
        keep = self.counts >= min_count
        keys, counts = self.keys[keep], self.counts[keep]
        order = np.lexsort((keys, -counts))
        rows = np.empty(len(keys), dtype=np.int64)
        rows[order] = np.arange(2, 2 + len(keys), dtype=np.int64)
        return keys, rows


def _map_vocab(values: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.full(len(values), UNKNOWN_ROW, dtype=np.int64)
    out[values < 0] = MISSING_ROW
    if len(keys):
        at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
        hit = (keys[at] == values) & (values >= 0)
        out[hit] = rows[at[hit]]
    return out


@dataclass
class _Encoded:
    """One chunk's rows, ready to append."""

    n_lines: int
    bad: list[BadLine]
    subsampled_out: int
    labels: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray
    raw_vocab: np.ndarray | None
    clicks: int


def _encode(block: ParsedBlock, options: PrepareOptions, file_index: int,
            sparse_dtype: np.dtype) -> _Encoded:
    """Subsample and encode one parsed chunk (runs in a worker thread)."""
    labels, dense = block.labels, block.dense
    values, present = block.cat_values, block.cat_present
    subsampled_out = 0
    if options.subsample < 1.0 and len(labels):
        keep = _line_uniform(options.seed, file_index, block.line_numbers) < options.subsample
        subsampled_out = int(len(keep) - np.count_nonzero(keep))
        labels, dense, values, present = labels[keep], dense[keep], values[keep], present[keep]
    n = len(labels)
    ids = np.zeros((NUM_SPARSE, n), dtype=sparse_dtype)  # column-major, transposed below
    for j, size in enumerate(options.table_sizes):
        if size is None:
            continue
        column = values[:, j]
        if size - 1 < 2**32:
            column = column % np.uint32(size - 1)
        ids[j] = np.where(present[:, j], column.astype(np.int64) + 1, MISSING_ROW)
    raw_vocab = None
    vocab = options.vocab_features
    if vocab:
        raw_vocab = np.where(present[:, vocab], values[:, vocab].astype(np.int64), -1)
    return _Encoded(n_lines=block.n_lines, bad=block.bad, subsampled_out=subsampled_out,
                    labels=labels.astype(np.float32), dense=np.ascontiguousarray(dense),
                    sparse=np.ascontiguousarray(ids.T), raw_vocab=raw_vocab,
                    clicks=int(np.count_nonzero(labels)))


def _ordered_map(function: Callable[[Any], Any], items: Iterator, workers: int) -> Iterator:
    """``map`` on a thread pool, results in input order, at most ``workers + 1`` in flight."""
    if workers <= 1:
        yield from map(function, items)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dnas-prepare") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _source_stat(path: Path) -> tuple[int, float]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime


# ----------------------------------------------------------------------------- prepare
def prepare(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
            options: PrepareOptions | None = None, *,
            progress: Callable[[dict[str, Any]], None] | None = None) -> Manifest:
    """Prepare Criteo text files (in time order) into ``out_dir``; return its manifest.

    Raises :class:`PrepareError` for bad options or inputs and
    :class:`.criteo.BadLineError` for a malformed line under ``on_bad_line="error"``.
    """
    options = options or PrepareOptions()
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    _check_inputs(paths, options)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not options.overwrite and not (
            out_dir.is_dir() and not any(out_dir.iterdir())):
        raise PrepareError(f"output {out_dir} exists; pass overwrite (--overwrite) to "
                           "replace it")
    if out_dir.exists() and options.overwrite:
        _check_replaceable(out_dir, paths)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.prepare-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        manifest = _prepare_into(paths, tmp, options, progress)
        if out_dir.exists():
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
            elif options.overwrite:
                old = out_dir.parent / f".{out_dir.name}.old-{secrets.token_hex(4)}"
                os.rename(out_dir, old)
                os.rename(tmp, out_dir)
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink()
                return manifest
            else:
                raise PrepareError(f"output {out_dir} appeared while preparing; not replaced")
        os.rename(tmp, out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(out_dir: Path, inputs: list[Path]) -> None:
    """--overwrite deletes ``out_dir``: allow it only for a prepared data set that holds
    neither an input nor the working directory, so a typo cannot destroy anything else."""
    if not out_dir.is_dir() or not (out_dir / MANIFEST_NAME).is_file():
        raise PrepareError(f"output {out_dir} is not a prepared data set (no {MANIFEST_NAME}); "
                           "--overwrite replaces only those")
    real = out_dir.resolve()
    for inside in [Path.cwd(), *inputs]:
        if inside.resolve().is_relative_to(real):
            raise PrepareError(f"output {out_dir} contains {inside}; refusing to replace it")


def _prepare_into(paths: list[Path], tmp: Path, options: PrepareOptions,
                  progress: Callable[[dict[str, Any]], None] | None) -> Manifest:
    started = time.perf_counter()
    sizes = options.table_sizes
    vocab = options.vocab_features
    max_rows_needed = max([s for s in sizes if s is not None] + [0])
    if options.sparse_dtype == "auto":
        sparse_dtype = np.dtype(np.int32 if max_rows_needed < 2**31 else np.int64)
    else:
        sparse_dtype = np.dtype(options.sparse_dtype)
    if sparse_dtype == np.int32 and max_rows_needed >= 2**31:
        raise PrepareError("sparse_dtype (--sparse-dtype) int32 cannot hold hash sizes "
                           ">= 2**31")

    dense_out = NpyAppender(tmp / ARRAY_FILES["dense"], np.float32, (NUM_DENSE,))
    sparse_out = NpyAppender(tmp / ARRAY_FILES["sparse"], sparse_dtype, (NUM_SPARSE,))
    labels_out = NpyAppender(tmp / ARRAY_FILES["labels"], np.float32)
    raw_path = tmp / "vocab_raw.tmp.npy"
    raw_out = NpyAppender(raw_path, np.int64, (len(vocab),)) if vocab else None
    writers = [w for w in (dense_out, sparse_out, labels_out, raw_out) if w is not None]

    bad_listed: list[list[Any]] = []
    bad_count = 0
    sources: list[dict[str, Any]] = []
    rows = 0
    label_sum = 0
    workers = _cores() if options.use_threads else 1
    try:
        for file_index, path in enumerate(paths):
            size_before, mtime_before = _source_stat(path)
            hasher = hashlib.sha256()
            source = {"path": str(path.absolute()), "name": path.name, "size": size_before,
                      "mtime": mtime_before, "gzip": is_gzip(path), "first_row": rows,
                      "lines": 0, "rows": 0, "bad_lines": 0, "subsampled_out": 0}

            def work(item: tuple[memoryview, int, int], path=path,
                     file_index=file_index) -> _Encoded:
                block = parse_chunk(item[0], item[1], str(path),
                                    skip_bad=options.on_bad_line == "skip",
                                    allow_short_lines=options.allow_short_lines,
                                    threads=options.use_threads and workers == 1,
                                    n_lines=item[2])
                return _encode(block, options, file_index, sparse_dtype)

            chunks = _prefetch(iter_line_chunks(path, options.chunk_bytes, hasher))
            for encoded in _ordered_map(work, chunks, workers):
                source["lines"] += encoded.n_lines
                if encoded.bad:
                    source["bad_lines"] += len(encoded.bad)
                    bad_count += len(encoded.bad)
                    room = options.max_listed_bad_lines - len(bad_listed)
                    bad_listed.extend([file_index, b.line, b.field, b.reason]
                                      for b in encoded.bad[:max(room, 0)])
                source["subsampled_out"] += encoded.subsampled_out
                if not len(encoded.labels):
                    continue
                sparse_out.append(encoded.sparse)
                if raw_out is not None:
                    raw_out.append(encoded.raw_vocab)
                dense_out.append(encoded.dense)
                labels_out.append(encoded.labels)
                label_sum += encoded.clicks
                rows += len(encoded.labels)
                source["rows"] += len(encoded.labels)
                if progress is not None:
                    progress({"file": str(path), "file_index": file_index,
                              "lines": source["lines"], "rows": rows,
                              "elapsed_s": time.perf_counter() - started})
            if _source_stat(path) != (size_before, mtime_before):
                raise PrepareError(f"input {path} changed while it was being read")
            source["sha256"] = hasher.hexdigest()
            sources.append(source)
    finally:
        for writer in writers:
            writer.close()

    if options.split_by_day:
        train_rows = sources[-1]["first_row"]
    else:
        train_rows = default_train_rows(rows)
    cardinalities = [int(s) if s is not None else 0 for s in sizes]
    encodings: list[dict[str, Any]] = []
    if vocab:
        vocab_sizes = _build_vocabularies(tmp, raw_path, vocab, train_rows, rows,
                                          options.min_count)
        for j, card in zip(vocab, vocab_sizes):
            cardinalities[j] = card
        raw_path.unlink()
    if max(cardinalities) >= 2**31 and sparse_dtype == np.int32:  # pragma: no cover
        raise PrepareError("a vocabulary exceeds int32; use sparse_dtype int64")
    for j, s in enumerate(sizes):
        if s is None:
            encodings.append({"feature": SPARSE_NAMES[j], "mode": "vocab",
                              "min_count": options.min_count,
                              "vocabulary": cardinalities[j] - 2})
        else:
            encodings.append({"feature": SPARSE_NAMES[j], "mode": "hash", "hash_size": int(s)})

    split_sizes = _write_splits(tmp, rows, train_rows, options)
    manifest = Manifest(
        rows=rows, cardinalities=cardinalities, encodings=encodings,
        sparse_dtype=sparse_dtype.name, split_sizes=split_sizes, seed=options.seed,
        options=options.to_dict(), negative_rate=options.negative_rate,
        label_mean=(label_sum / rows) if rows else 0.0,
        bad_lines={"policy": options.on_bad_line, "count": bad_count,
                   "fields": ["file_index", "line", "field", "reason"],
                   "listed": bad_listed, "truncated": bad_count > len(bad_listed)},
        sources=sources, elapsed_s=round(time.perf_counter() - started, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(tmp)
    return manifest


def _build_vocabularies(tmp: Path, raw_path: Path, vocab: list[int], train_rows: int,
                        rows: int, min_count: int) -> list[int]:
    """Count raw values over training rows, then map every row; returns table sizes."""
    if rows == 0:
        return [2] * len(vocab)
    raw = np.load(raw_path, mmap_mode="r")
    counters = [_Vocabulary() for _ in vocab]
    for start in range(0, train_rows, _VOCAB_BLOCK_ROWS):
        block = np.asarray(raw[start:min(start + _VOCAB_BLOCK_ROWS, train_rows)])
        for position, counter in enumerate(counters):
            counter.add(block[:, position])
    tables = [counter.finish(min_count) for counter in counters]
    del counters
    sparse = np.load(tmp / ARRAY_FILES["sparse"], mmap_mode="r+")
    for start in range(0, rows, _VOCAB_BLOCK_ROWS):
        stop = min(start + _VOCAB_BLOCK_ROWS, rows)
        block = np.asarray(raw[start:stop])
        mapped = np.asarray(sparse[start:stop])
        for position, (j, (keys, table_rows)) in enumerate(zip(vocab, tables)):
            mapped[:, j] = _map_vocab(block[:, position], keys, table_rows)
        sparse[start:stop] = mapped
    sparse.flush()
    del sparse, raw
    return [2 + len(keys) for keys, _ in tables]


def _write_splits(tmp: Path, rows: int, train_rows: int,
                  options: PrepareOptions) -> dict[str, int]:
    labels = np.load(tmp / ARRAY_FILES["labels"], mmap_mode="r") if rows else None
    writers = {name: NpyAppender(tmp / SPLIT_FILES[name], np.int64) for name in SPLIT_NAMES}
    try:
        for block in iter_split_blocks(rows, options.seed, arch_fraction=options.arch_fraction,
                                       train_rows=train_rows, labels=labels,
                                       negative_rate=options.negative_rate):
            for name in SPLIT_NAMES:
                writers[name].append(block[name])
    finally:
        for writer in writers.values():
            writer.close()
    return {name: writers[name].rows for name in SPLIT_NAMES}
