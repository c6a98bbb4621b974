"""Append rows to a ``.npy`` file whose length is unknown until the end.

The file starts with a fixed 128-byte version-1.0 header (room for any shape); rows are
appended as raw bytes; :meth:`NpyAppender.close` rewrites the header with the final shape.
No copy at the end, bounded memory, and the result is a plain ``.npy`` that
``np.load(path, mmap_mode="r")`` opens in O(1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HEADER_BYTES = 128
_MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header padded to exactly :data:`HEADER_BYTES` bytes."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    room = HEADER_BYTES - len(_MAGIC) - 2
    if len(text) + 1 > room:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte npy header")
    body = text.ljust(room - 1) + "\n"
    return _MAGIC + len(body).to_bytes(2, "little") + body.encode("latin1")


class NpyAppender:
    """Write a C-ordered array of ``dtype`` and trailing shape ``row_shape`` row block by block."""

    def __init__(self, path: str | Path, dtype: np.dtype | type, row_shape: tuple[int, ...] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.write(npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {block.shape[1:]}, "
                             f"expected {self.row_shape}")
        self._file.write(memoryview(block).cast("B"))
        self.rows += block.shape[0]

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` followed by fsync (the file is complete on disk before the manifest is)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
