"""``manifest.json``: what a prepared directory holds, how it was made, and whether it is whole.

A prepared directory is complete exactly when it has a valid manifest: ``prepare`` writes
every array first, the manifest last, inside a temporary sibling directory that is renamed
into place only at the end. :meth:`Manifest.load` refuses anything else with a message
that says what is wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .schema import NUM_DENSE, NUM_SPARSE
from .splits import SPLIT_NAMES

FORMAT_NAME = "dnas-dlrm-criteo"
FORMAT_VERSION = 1
#: the version of a directory whose splits are row ranges (older readers refuse it)
RANGES_FORMAT_VERSION = 2
READ_VERSIONS = (FORMAT_VERSION, RANGES_FORMAT_VERSION)
MANIFEST_NAME = "manifest.json"
ARRAY_FILES = {"dense": "dense.npy", "sparse": "sparse.npy", "labels": "labels.npy"}
SPLIT_FILES = {name: f"split_{name}.npy" for name in SPLIT_NAMES}
#: row-ranges storage: kept rows of each split per block of the table, int64 (blocks, 4)
COUNTS_FILE = "split_counts.npy"

#: Row of every categorical table that holds missing values (empty fields).
MISSING_ROW = 0
#: Row shared, in vocabulary mode, by values unseen in training or seen < min_count times.
UNKNOWN_ROW = 1

LAYOUT = {
    "dense": f"float32 (rows, {NUM_DENSE}): log(1 + max(x, 0)), missing -> 0",
    "sparse": f"int32 or int64 (rows, {NUM_SPARSE}): row of each feature's table, "
              f"0 <= id < cardinalities[j]",
    "labels": "float32 (rows,): 0 or 1",
    "splits": "int64 sorted row indices, one file per split; or (split.storage 'ranges') "
              "a row range and hash interval per split in split.parts, with the kept rows "
              f"per block of split.block_rows rows in {COUNTS_FILE}; protocol in 'split'",
    "missing_row": MISSING_ROW,
    "hash": "row = 1 + (hex value mod (hash_size - 1)); table size = hash_size",
    "vocab": "row = 2 + rank of the value by descending training count (ties: smaller value "
             "first); unknown or rare values -> row 1; table size = 2 + vocabulary",
    "unknown_row_vocab": UNKNOWN_ROW,
    "source_checksum": "sha256 of each input file's bytes as stored (compressed bytes for "
                       "gzip), computed while reading, with its size and mtime",
}


class ManifestError(ValueError):
    """A directory that is not a complete prepared dataset."""


@dataclass
class Manifest:
    rows: int
    cardinalities: list[int]
    encodings: list[dict[str, Any]]
    sparse_dtype: str
    split_sizes: dict[str, int]
    seed: int
    options: dict[str, Any]
    negative_rate: float | None
    label_mean: float
    bad_lines: dict[str, Any]
    sources: list[dict[str, Any]]
    elapsed_s: float
    created: str
    #: The split protocol and its row ranges (:func:`.protocols.record`); empty in data
    #: prepared before it was recorded.
    split: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=lambda: {**ARRAY_FILES, **{
        f"split_{k}": v for k, v in SPLIT_FILES.items()}})
    layout: dict[str, Any] = field(default_factory=lambda: dict(LAYOUT))
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def ranges(self) -> bool:
        """Whether the splits are row ranges (else index arrays)."""
        return self.split.get("storage") == "ranges"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read and check the manifest of a prepared directory (O(1): no data is read)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ManifestError(f"{directory}: no such prepared data directory")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"{directory} is not a complete prepared dataset: it has no {MANIFEST_NAME} "
                "(an interrupted or failed `dnas dlrm prepare` leaves none); run "
                "`dnas dlrm prepare INPUT... --out DIR` again")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ManifestError(f"{path}: unreadable manifest: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ManifestError(f"{path}: not a {FORMAT_NAME} manifest")
        version = data.get("format_version")
        if version not in READ_VERSIONS:
            raise ManifestError(f"{path}: format version {version!r}; this dnas-dlrm reads "
                                f"versions {list(READ_VERSIONS)}: prepare the data again")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ManifestError(f"{path}: manifest lacks {missing}")
        manifest = cls(**{k: v for k, v in data.items() if k in names})
        if len(manifest.cardinalities) != NUM_SPARSE or min(manifest.cardinalities) < 1:
            raise ManifestError(f"{path}: expected {NUM_SPARSE} positive cardinalities")
        absent = [name for name in manifest.files.values() if not (directory / name).is_file()]
        if absent:
            raise ManifestError(f"{directory}: incomplete prepared dataset, missing {absent}")
        return manifest
