"""``CriteoArrays``: random-access rows of prepared (memory-mapped) or in-memory data.

One class for both sources: :meth:`CriteoArrays.open` maps a prepared directory in O(1)
(``np.load(mmap_mode="r")``, nothing is read until a batch asks for it) and refuses a
directory without a valid manifest; :meth:`CriteoArrays.from_synthetic` (or the
constructor) wraps arrays in memory and makes the splits with the same rule
(:func:`.splits.make_splits`) that ``prepare`` used.

A directory prepared with row-ranges splits (``--split-storage ranges``) opens its splits
as the core's ``RowRanges`` from the manifest and the per-block counts file, O(blocks):
the core streams them (:mod:`dnas_core.engine.streaming`).

``gather(rows)`` serves any rows in any order (random access, not only sequential reads):
for memory-mapped arrays the rows are read in sorted order, for locality, and put back in
the requested order (ascending rows, what the streaming source asks for, are read as they
are).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .manifest import ARRAY_FILES, COUNTS_FILE, SPLIT_FILES, Manifest, ManifestError
from .schema import NUM_DENSE, NUM_SPARSE
from .splits import SPLIT_NAMES, make_splits

if TYPE_CHECKING:
    import torch

    from dnas_core.engine.rowsets import RowRanges, Split

    from .synthetic import PlantedStructure, SyntheticData


class CriteoArrays:
    """A table of Criteo rows: dense float32 (n, 13), sparse ids (n, 26), labels (n,).

    Satisfies the core's ``Table`` protocol: ``len`` and ``gather(rows)`` returning
    ``((dense float32 [B, 13], sparse int64 [B, 26]), labels float32 [B])``.
    """

    def __init__(self, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray,
                 cardinalities: list[int], *, splits: dict[str, Split] | None = None,
                 seed: int = 0, arch_fraction: float = 0.2,
                 negative_rate: float | None = None, manifest: Manifest | None = None,
                 planted: PlantedStructure | None = None, path: Path | None = None):
        n = len(labels)
        if dense.shape != (n, NUM_DENSE):
            raise ValueError(f"dense must have shape ({n}, {NUM_DENSE}), got {dense.shape}")
        if sparse.shape != (n, NUM_SPARSE):
            raise ValueError(f"sparse must have shape ({n}, {NUM_SPARSE}), got {sparse.shape}")
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-d, got shape {labels.shape}")
        if not np.issubdtype(sparse.dtype, np.integer):
            raise ValueError(f"sparse ids must be integers, got {sparse.dtype}")
        if len(cardinalities) != NUM_SPARSE or min(cardinalities) < 1:
            raise ValueError(f"expected {NUM_SPARSE} positive cardinalities")
        self.dense = dense
        self.sparse = sparse
        self.labels = labels
        self.cardinalities = [int(c) for c in cardinalities]
        self.negative_rate = negative_rate
        self.manifest = manifest
        self.planted = planted
        self.path = path
        self._mapped = isinstance(dense, np.memmap) or isinstance(sparse, np.memmap)
        if splits is None:
            splits = make_splits(n, seed, arch_fraction=arch_fraction, labels=labels,
                                 negative_rate=negative_rate)
        missing = [name for name in SPLIT_NAMES if name not in splits]
        if missing:
            raise ValueError(f"splits lack {missing}")
        self._splits = {name: splits[name] for name in SPLIT_NAMES}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def open(cls, path: str | Path) -> CriteoArrays:
        """Map a directory made by ``dnas dlrm prepare`` (O(1): only headers are read)."""
        path = Path(path)
        manifest = Manifest.load(path)
        arrays = {}
        for key, name in ARRAY_FILES.items():
            arrays[key] = cls._map(path / name, manifest.rows)
        if arrays["dense"].shape != (manifest.rows, NUM_DENSE) or \
                arrays["sparse"].shape != (manifest.rows, NUM_SPARSE) or \
                arrays["labels"].shape != (manifest.rows,):
            raise ManifestError(f"{path}: array shapes do not match the manifest's "
                                f"{manifest.rows} rows")
        splits: dict[str, Split] = {}
        if manifest.ranges:
            splits.update(_range_splits(path, manifest))
        for name in SPLIT_NAMES:
            if not manifest.ranges:
                splits[name] = cls._map(path / SPLIT_FILES[name], manifest.split_sizes[name])
            if len(splits[name]) != manifest.split_sizes[name]:
                raise ManifestError(f"{path}: split {name!r} does not match the manifest")
        return cls(arrays["dense"], arrays["sparse"], arrays["labels"],
                   manifest.cardinalities, splits=splits, negative_rate=manifest.negative_rate,
                   manifest=manifest, path=path)

    @staticmethod
    def _map(file: Path, rows: int) -> np.ndarray:
        try:
            if rows == 0:  # an empty file cannot be memory-mapped
                return np.load(file)
            return np.load(file, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ManifestError(f"{file}: unreadable array: {error}") from None

    @classmethod
    def from_synthetic(cls, data: SyntheticData, *, seed: int | None = None,
                       arch_fraction: float = 0.2,
                       negative_rate: float | None = None) -> CriteoArrays:
        """Wrap :func:`.synthetic.generate` output; splits seeded by ``seed`` (default: the
        data's seed) with the paper's layout."""
        return cls(data.dense, data.sparse, data.labels, data.cardinalities,
                   seed=data.seed if seed is None else seed, arch_fraction=arch_fraction,
                   negative_rate=negative_rate, planted=data.planted)

    # ------------------------------------------------------------------ table protocol
    def __len__(self) -> int:
        return len(self.labels)

    def gather_numpy(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dense float32, sparse int64, labels float32)`` of ``rows``, in their order."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise ValueError(f"rows must be a 1-d integer array, got {rows.dtype} "
                             f"{rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside the table of {len(self)} rows")
        if self._mapped and rows.size > 1 and not (np.diff(rows) > 0).all():
            order = np.argsort(rows, kind="stable")
            ordered = rows[order]
            dense = np.empty((rows.size, NUM_DENSE), dtype=np.float32)
            sparse = np.empty((rows.size, NUM_SPARSE), dtype=np.int64)
            labels = np.empty(rows.size, dtype=np.float32)
            dense[order] = self.dense[ordered]
            sparse[order] = self.sparse[ordered]
            labels[order] = self.labels[ordered]
            return dense, sparse, labels
        return (np.asarray(self.dense[rows], dtype=np.float32),
                np.asarray(self.sparse[rows], dtype=np.int64),
                np.asarray(self.labels[rows], dtype=np.float32))

    def gather(self, rows: np.ndarray) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                torch.Tensor]:
        """``((dense [B, 13] float32, sparse [B, 26] int64), labels [B] float32)``."""
        import torch

        dense, sparse, labels = self.gather_numpy(rows)
        return (torch.from_numpy(dense), torch.from_numpy(sparse)), torch.from_numpy(labels)

    def splits(self) -> dict[str, Split]:
        """Row indices of ``weights``, ``arch``, ``val`` and ``test`` (sorted int64), or
        their ``RowRanges`` for a directory prepared with row-ranges splits."""
        return dict(self._splits)

    def info(self) -> dict[str, Any]:
        """A small description for logs and reports."""
        out: dict[str, Any] = {"rows": len(self), "cardinalities": self.cardinalities,
                               "negative_rate": self.negative_rate,
                               "splits": {k: len(v) for k, v in self._splits.items()},
                               "source": str(self.path) if self.path else "in-memory"}
        if self.planted is not None:
            out["planted"] = self.planted.summary()
        return out


def _range_splits(path: Path, manifest: Manifest) -> dict[str, RowRanges]:
    """The splits of a row-ranges directory: one range and hash interval each (manifest),
    the kept rows per block from :data:`.manifest.COUNTS_FILE`."""
    from dnas_core.engine.rowsets import RowFilter, RowRanges

    record = manifest.split
    block = int(record["block_rows"])
    counts = CriteoArrays._map(path / COUNTS_FILE, -(-manifest.rows // block))
    columns = record["counts"]["columns"]
    if counts.shape != (-(-manifest.rows // block), len(columns)):
        raise ManifestError(f"{path / COUNTS_FILE}: holds {counts.shape}, expected "
                            f"({-(-manifest.rows // block)}, {len(columns)}) for "
                            f"{manifest.rows} rows in blocks of {block}")
    out = {}
    for name in SPLIT_NAMES:
        part = record["parts"][name]
        (start, stop), = part["ranges"]
        hashed = part["filter"]
        first = start // block
        last = -(-stop // block) if stop > start else first
        try:
            out[name] = RowRanges(((start, stop),), RowFilter(**hashed) if hashed else None,
                                  block, np.asarray(counts[first:last, columns.index(name)]))
        except (ValueError, TypeError, KeyError) as error:
            raise ManifestError(f"{path}: split {name!r} is not a valid row range: "
                                f"{error}") from None
    return out
