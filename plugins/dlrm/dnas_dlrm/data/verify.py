"""Whether a prepared directory is whole, from its manifest and the arrays' headers alone.

Run before a search starts (the plugin's ``dnas_check_data``): a directory that is not
prepared data, an array file cut short or emptied after ``prepare`` (a full disk, an
interrupted copy), or a data set without rows would otherwise fail inside every trial,
after the run directory was made. Nothing is read but each file's header and size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import (
    ARRAY_FILES,
    COUNTS_FILE,
    MANIFEST_NAME,
    SPLIT_FILES,
    Manifest,
    ManifestError,
)
from .schema import NUM_DENSE, NUM_SPARSE

#: splits every run reads (``arch`` may be empty: ``--arch-fraction 0`` for ``dnas train``)
NEEDED_SPLITS = frozenset(SPLIT_FILES[name] for name in ("weights", "val", "test"))


def expected_arrays(manifest: Manifest) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Each file's dtype and shape as the manifest describes them."""
    rows = manifest.rows
    out = {ARRAY_FILES["dense"]: (np.dtype(np.float32), (rows, NUM_DENSE)),
           ARRAY_FILES["sparse"]: (np.dtype(manifest.sparse_dtype), (rows, NUM_SPARSE)),
           ARRAY_FILES["labels"]: (np.dtype(np.float32), (rows,))}
    if manifest.ranges:
        block = int(manifest.split.get("block_rows", 1))
        columns = len(manifest.split.get("counts", {}).get("columns", ()))
        out[COUNTS_FILE] = (np.dtype(np.int64), (-(-rows // block), columns))
        return out
    for name, file in SPLIT_FILES.items():
        out[file] = (np.dtype(np.int64), (int(manifest.split_sizes.get(name, -1)),))
    return out


def _header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and data offset of a ``.npy`` file (ValueError if it has none)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return dtype, shape, handle.tell()


def problems(directory: str | Path) -> list[str]:
    """What is wrong with a prepared directory (empty: nothing), each naming its file."""
    directory = Path(directory)
    try:
        manifest = Manifest.load(directory)
    except ManifestError as error:
        return [str(error)]
    if manifest.rows <= 0:
        return [f"{directory / 'manifest.json'}: the data set has no rows; prepare it again "
                "from inputs that have good lines"]
    found = []
    for file, (dtype, shape) in expected_arrays(manifest).items():
        path = directory / file
        size = path.stat().st_size
        try:
            got_dtype, got_shape, offset = _header(path)
        except (OSError, ValueError) as error:
            found.append(f"{path}: not a readable .npy array ({size} bytes): {error}")
            continue
        if got_dtype != dtype or tuple(got_shape) != shape:
            found.append(f"{path}: holds {got_dtype} {tuple(got_shape)}, the manifest "
                         f"says {dtype} {shape}")
            continue
        want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != want:
            found.append(f"{path}: {size:,} bytes, expected {want:,} for {dtype} {shape} "
                         f"(truncated or damaged); prepare the data again")
        elif shape[0] == 0 and file in NEEDED_SPLITS:
            found.append(f"{path}: the split is empty; training and testing need its rows")
    if manifest.ranges:
        found += [f"{directory / MANIFEST_NAME}: split {name!r} is empty; training and "
                  "testing need its rows" for name in ("weights", "val", "test")
                  if manifest.split_sizes.get(name, 0) <= 0]
    return found
