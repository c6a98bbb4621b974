"""What every synthetic generator shares: dense counts, the id-to-hex bijection, the writer.

The planted (:mod:`.synthetic`) and the realistic (:mod:`.realistic`) generators differ only
in how categorical values and labels arise; the integer counts, the raw hex values of ids and
the streamed Criteo text are the same code, so both exercise the reader identically.
"""

from __future__ import annotations

import gzip as gzip_module
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from .schema import (
    COLUMN_NAMES,
    DENSE_MISSING_RATES,
    DENSE_QUANTILES,
    I2_NEGATIVE_RATE,
    NUM_DENSE,
    NUM_SPARSE,
)

CHUNK_ROWS = 1 << 14
_RHO = 0.5  # correlation of the dense features' latent Gaussians
_Z99 = 2.3263478740408408


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def hex_values(keys: np.ndarray, j: int, ids: np.ndarray) -> np.ndarray:
    """The seeded bijection id -> 32-bit raw value of feature ``j`` (written as hex):
    ``keys`` are one random uint64 per feature, drawn by the generator's seed."""
    shifted = (np.asarray(ids, dtype=np.uint64) + keys[j]) & np.uint64(0xFFFFFFFF)
    return fmix32(shifted)


class DenseCounts:
    """The 13 dense count features: Criteo's medians, tails, negatives and missing rates."""

    def __init__(self) -> None:
        quantiles = np.array(DENSE_QUANTILES, dtype=np.float64)
        self.mu = np.log1p(quantiles[:, 0] + 0.5)
        self.sigma = np.maximum((np.log1p(quantiles[:, 1]) - self.mu) / _Z99, 0.05)
        self.max = quantiles[:, 2]
        self.missing = np.array(DENSE_MISSING_RATES)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows of raw integer counts (0 where missing) and the missing mask."""
        common = rng.standard_normal((n, 1))
        z = _RHO * common + np.sqrt(1 - _RHO**2) * rng.standard_normal((n, NUM_DENSE))
        values = np.floor(np.expm1(self.mu + self.sigma * z))
        values = np.clip(values, 0, self.max).astype(np.int64)
        negative = rng.random(n) < I2_NEGATIVE_RATE
        values[negative, 1] = rng.choice(np.array([-1, -2, -3]), p=[0.8, 0.15, 0.05],
                                         size=int(negative.sum()))
        # dense features with equal rates miss together, as in the real data
        missing = np.zeros((n, NUM_DENSE), dtype=bool)
        uniforms: dict[float, np.ndarray] = {}
        for k, rate in enumerate(self.missing):
            if rate > 0:
                if rate not in uniforms:
                    uniforms[rate] = rng.random(n)
                missing[:, k] = uniforms[rate] < rate
        values[missing] = 0
        return values, missing


class RowModel(Protocol):
    """A generator the writer can stream: chunks of rows and the hex value of each id."""

    def chunks(self, n_rows: int) -> Iterator[dict]: ...

    def hex_values(self, j: int, ids: np.ndarray) -> np.ndarray: ...


@dataclass
class SyntheticData:
    """Preprocessed generated rows with their cardinalities, planted structure and oracle
    (the true logit of every row)."""

    dense: np.ndarray          # float32 (n, 13)
    sparse: np.ndarray         # int64 (n, 26), 0 <= id < cardinalities[j]
    labels: np.ndarray         # float32 (n,)
    cardinalities: list[int]
    planted: Any  # the planted generator's PlantedStructure; None for the realistic one
    logits: np.ndarray         # float32 (n,): the true logit of each row
    seed: int
    model: RowModel = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(28, -4, -4, dtype=np.uint32)


def _hex_array(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    n = len(values)
    chars = _HEX_DIGITS[(values[:, None] >> _SHIFTS) & np.uint32(15)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    validity = np.packbits(~missing, bitorder="little")
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()),
                                       pa.py_buffer(validity.tobytes()),
                                       int(missing.sum()))


def _arrow_chunk(model: RowModel, chunk: dict) -> pa.Table:
    columns = [pa.array(chunk["labels"], type=pa.int8())]
    for k in range(NUM_DENSE):
        columns.append(pa.array(chunk["raw"][:, k], type=pa.int64(),
                                mask=chunk["dense_missing"][:, k]))
    for j in range(NUM_SPARSE):
        ids = chunk["sparse"][:, j]
        columns.append(_hex_array(model.hex_values(j, ids), ids == 0))
    return pa.Table.from_arrays(columns, names=list(COLUMN_NAMES))


def write_model_tsv(path: str | Path, model: RowModel, n_rows: int, *,
                    gzip: bool | None = None) -> Path:
    """Stream ``model.chunks(n_rows)`` as raw Criteo text (40 TAB-separated fields).

    gzip when ``gzip`` is true, or when it is ``None`` and the name ends with ``.gz``.
    Memory is bounded by one chunk of :data:`CHUNK_ROWS` rows whatever ``n_rows``.
    """
    path = Path(path)
    compress = path.suffix == ".gz" if gzip is None else gzip
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none",
                                  batch_size=CHUNK_ROWS)
    schema = _arrow_chunk(model, next(model.chunks(1))).schema
    with (gzip_module.open(path, "wb", compresslevel=6) if compress else open(path, "wb")) \
            as handle:
        with pa_csv.CSVWriter(handle, schema, write_options=options) as writer:
            for chunk in model.chunks(n_rows):
                writer.write_table(_arrow_chunk(model, chunk))
    return path
