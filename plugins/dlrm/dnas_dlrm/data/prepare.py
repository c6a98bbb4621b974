"""Streaming ``prepare``: Criteo text files in, a memory-mappable directory out.

Pass 1 reads every input once, in chunks of whole lines (:mod:`.pipeline`): a reader
thread reads, inflates and hashes; one worker thread per core parses a chunk (pyarrow,
single-threaded per chunk: chunk-level parallelism also spreads the NumPy work) and encodes
it; the main thread appends the results in order to ``.npy`` files whose headers are fixed
at the end (:mod:`.npyfile`). Memory is bounded by a few chunks whatever the input size.

Categorical encoding, per feature:

* hashing (``hash_size`` H): missing -> row 0, a value v -> row ``1 + v mod (H - 1)``;
  the table has exactly H rows. Single pass.
* vocabulary (features without a hash size): pass 1 stores the raw values in a temporary
  file; :mod:`.vocabulary` then counts them over the training rows only and maps them.

Rows kept: every good line (bad lines are an error, or skipped and listed), times an
optional seeded subsample (a per-line hash of seed, file and line number, so it does not
depend on chunking). Splits follow the protocol of :mod:`.protocols` (``random``,
``position``, ``day``; rule in :mod:`.splits`) and are stored as index arrays; negative
downsampling removes training negatives from the ``weights``/``arch`` index arrays (the
rows stay in the arrays) and the rate is recorded for :func:`.splits.correct_downsampled`.
With ``split_storage`` ``ranges`` (``auto`` above :data:`.prepare_options.RANGES_ABOVE_ROWS`
rows) the splits are described instead (:func:`.splits.range_parts`) and only their kept
rows per block are written (:data:`.manifest.COUNTS_FILE`): with hashed features, nothing
prepare holds grows with the number of rows (docs/data.md, "The Terabyte logs").

Output goes to a temporary sibling directory (``.NAME.prepare-*``), renamed onto ``out``
after the manifest, written last, is on disk: an interrupted prepare leaves nothing that
looks complete, and a killed one's directory is removed by the next prepare into the same
``out`` (:mod:`.leftovers`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import leftovers, protocols
from .criteo import BadLine, ParsedBlock, parse_chunk
from .linereader import is_gzip, iter_line_chunks
from .manifest import (
    ARRAY_FILES,
    COUNTS_FILE,
    MANIFEST_NAME,
    MISSING_ROW,
    RANGES_FORMAT_VERSION,
    SPLIT_FILES,
    Manifest,
)
from .npyfile import NpyAppender
from .pipeline import cores, ordered_map, prefetch
from .prepare_options import PrepareError, PrepareOptions
from .schema import NUM_DENSE, NUM_SPARSE, SPARSE_NAMES
from .splits import SPLIT_NAMES, iter_split_blocks, range_parts
from .vocabulary import build_vocabularies

__all__ = ["PrepareError", "PrepareOptions", "prepare"]

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
    bytes_read: int = 0  # of the input file as stored, up to this chunk's end (progress)


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


def _source_stat(path: Path) -> tuple[int, float]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime


# ----------------------------------------------------------------------------- prepare
def prepare(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
            options: PrepareOptions | None = None, *,
            progress: Callable[[dict[str, Any]], None] | None = None,
            notes: Callable[[str], None] | None = None) -> Manifest:
    """Prepare Criteo text files (in time order) into ``out_dir``; return its manifest.

    Raises :class:`PrepareError` for bad options or inputs (no row kept included),
    :class:`.criteo.BadLineError` for a malformed line under ``on_bad_line="error"`` and
    :class:`.linereader.CorruptInput` for a cut-short gzip file. ``notes`` receives a
    sentence for each temporary directory of an earlier, killed prepare (see
    :mod:`.leftovers`).
    """
    options = options or PrepareOptions()
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    protocols.check_inputs(paths, options)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not options.overwrite and not (
            out_dir.is_dir() and not any(out_dir.iterdir())):
        raise PrepareError(f"output {out_dir} exists; pass overwrite (--overwrite) to "
                           "replace it")
    if out_dir.exists() and options.overwrite:
        _check_replaceable(out_dir, paths)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for note in leftovers.clear(out_dir):
        if notes is not None:
            notes(note)
    tmp = out_dir.parent / f".{out_dir.name}.prepare-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        leftovers.claim(tmp)
        manifest = _prepare_into(paths, tmp, options, progress)
        leftovers.release(tmp)
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
    workers = cores() if options.use_threads else 1
    bytes_total = sum(p.stat().st_size for p in paths)
    bytes_before = 0  # of the files done
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
                return replace(_encode(block, options, file_index, sparse_dtype),
                               bytes_read=item[3])

            chunks = prefetch(iter_line_chunks(path, options.chunk_bytes, hasher))
            for encoded in ordered_map(work, chunks, workers):
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
                              "bytes_read": bytes_before + encoded.bytes_read,
                              "bytes_total": bytes_total, "gzip": source["gzip"],
                              "elapsed_s": time.perf_counter() - started})
            bytes_before += size_before
            if _source_stat(path) != (size_before, mtime_before):
                raise PrepareError(f"input {path} changed while it was being read")
            source["sha256"] = hasher.hexdigest()
            sources.append(source)
    finally:
        for writer in writers:
            writer.close()

    if not rows:
        raise PrepareError(_no_rows(sources, bad_listed, paths, options))
    split_plan = protocols.plan(options, rows, sources)
    cardinalities = [int(s) if s is not None else 0 for s in sizes]
    encodings: list[dict[str, Any]] = []
    if vocab:
        vocab_sizes = build_vocabularies(tmp, raw_path, vocab, split_plan.train_rows, rows,
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

    split_record = protocols.record(options, split_plan, rows)
    extra: dict[str, Any] = {}
    if options.ranges_for(rows):
        split_sizes, described = _write_range_splits(tmp, rows, split_plan, options)
        split_record.update(described)
        extra = {"files": {**ARRAY_FILES, "split_counts": COUNTS_FILE},
                 "format_version": RANGES_FORMAT_VERSION}
    else:
        split_sizes = _write_splits(tmp, rows, split_plan, options)  # no "storage": indices
    manifest = Manifest(
        rows=rows, cardinalities=cardinalities, encodings=encodings,
        sparse_dtype=sparse_dtype.name, split_sizes=split_sizes, seed=options.seed,
        split=split_record,
        options=options.to_dict(), negative_rate=options.negative_rate,
        label_mean=(label_sum / rows) if rows else 0.0,
        bad_lines={"policy": options.on_bad_line, "count": bad_count,
                   "fields": ["file_index", "line", "field", "reason"],
                   "listed": bad_listed, "truncated": bad_count > len(bad_listed)},
        sources=sources, elapsed_s=round(time.perf_counter() - started, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    )
    manifest.save(tmp)
    return manifest


def _no_rows(sources: list[dict[str, Any]], bad: list[list[Any]], paths: list[Path],
             options: PrepareOptions) -> str:
    """Why no row was kept: a data set of 0 rows is never written."""
    names = ", ".join(str(p) for p in paths)
    lines = sum(s["lines"] for s in sources)
    if not lines:
        return f"no rows to prepare: the input ({names}) holds no lines"
    bad_count = sum(s["bad_lines"] for s in sources)
    if bad_count == lines:
        first = f" (the first: {paths[bad[0][0]]}, line {bad[0][1]}, field {bad[0][2]}: " \
                f"{bad[0][3]})" if bad else ""
        return (f"no rows to prepare: every one of the {lines:,} lines of {names} is bad and "
                f"was skipped{first}; is this Criteo text?")
    return (f"no rows to prepare: subsample (--subsample) {options.subsample} kept none of "
            f"the {lines - bad_count:,} good lines of {names}")


def _write_splits(tmp: Path, rows: int, split_plan: protocols.SplitPlan,
                  options: PrepareOptions) -> dict[str, int]:
    labels = np.load(tmp / ARRAY_FILES["labels"], mmap_mode="r") if rows else None
    writers = {name: NpyAppender(tmp / SPLIT_FILES[name], np.int64) for name in SPLIT_NAMES}
    try:
        for block in iter_split_blocks(rows, options.seed, arch_fraction=options.arch_fraction,
                                       train_rows=split_plan.train_rows,
                                       val_rows=split_plan.val_rows, labels=labels,
                                       negative_rate=options.negative_rate):
            for name in SPLIT_NAMES:
                writers[name].append(block[name])
    finally:
        for writer in writers.values():
            writer.close()
    return {name: writers[name].rows for name in SPLIT_NAMES}


def _write_range_splits(tmp: Path, rows: int, split_plan: protocols.SplitPlan,
                        options: PrepareOptions) -> tuple[dict[str, int], dict[str, Any]]:
    """The splits as row ranges (:func:`.splits.range_parts`) and their kept rows per block
    of the table, counted by the core's rule (the loader's): O(blocks) memory."""
    from dnas_core.engine.rowsets import BLOCK_ROWS, RowFilter, RowRanges

    parts = range_parts(rows, options.seed, arch_fraction=options.arch_fraction,
                        train_rows=split_plan.train_rows, val_rows=split_plan.val_rows)
    blocks = -(-rows // BLOCK_ROWS)
    counts = np.zeros((blocks, len(SPLIT_NAMES)), dtype=np.int64)
    sizes = {}
    made: dict[str, RowRanges] = {}
    # arch and val first: weights and test complement them (same range and hash, the other
    # interval), so their counts are the pieces' sizes minus those, with no second pass
    for name, partner in (("arch", None), ("val", None), ("weights", "arch"), ("test", "val")):
        (start, stop), = parts[name]["ranges"]
        hashed = parts[name]["filter"]
        known = None
        if partner is not None and _complements(parts[partner], parts[name]):
            piece_starts, piece_stops = made[partner].pieces()
            known = piece_stops - piece_starts - made[partner].piece_counts
        split = RowRanges(((start, stop),), RowFilter(**hashed) if hashed else None,
                          BLOCK_ROWS, known)
        first = start // BLOCK_ROWS
        counts[first:first + split.num_pieces, SPLIT_NAMES.index(name)] = split.piece_counts
        sizes[name] = len(split)
        made[name] = split
    np.save(tmp / COUNTS_FILE, counts)
    record = {"storage": "ranges", "block_rows": BLOCK_ROWS, "parts": parts,
              "val_test": "hash halves" if parts["val"]["filter"] else "in row order",
              "counts": {"file": COUNTS_FILE, "columns": list(SPLIT_NAMES)}}
    return {name: sizes[name] for name in SPLIT_NAMES}, record


def _complements(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether ``second`` holds exactly the rows of its range that ``first`` leaves out."""
    a, b = first["filter"], second["filter"]
    return bool(a and b and first["ranges"] == second["ranges"] and a["key"] == b["key"]
                and a["low"] == 0.0 and a["high"] == b["low"] and b["high"] == 1.0)
