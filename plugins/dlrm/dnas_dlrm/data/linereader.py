"""Reading Criteo text files as chunks of whole lines (plain or gzip), hashing the bytes read.

Gzip is detected by its magic bytes, not the file name. Every byte of a file, as stored
(compressed bytes for gzip), feeds an optional hash while it is read, so the checksum in
the manifest costs no second read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from pathlib import Path

DEFAULT_CHUNK_BYTES = 16 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class CorruptInput(ValueError):
    """An input whose compressed stream ends early or is damaged (the message names it)."""


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


class _HashingReader(io.RawIOBase):
    """A binary file whose reads also feed a hash (the file's bytes as stored)."""

    def __init__(self, raw, hasher):
        self._raw, self._hasher = raw, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self._hasher.update(memoryview(buffer)[:count])
        return count

    def tell(self) -> int:
        return self._raw.tell()


def iter_line_chunks(path: str | Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     hasher: hashlib._Hash | None = None
                     ) -> Iterator[tuple[memoryview, int, int, int]]:
    """Yield ``(chunk, first_line, n_lines, bytes_read)``: chunks of whole lines, the
    1-based number of their first line, their number of lines and how many bytes of the
    file as stored (compressed for gzip) were read so far (for progress; it reaches the
    file's size with the last chunk). A last line without a final newline is a line.
    ``hasher`` receives every byte of the file as stored.

    Each chunk is a view of its own buffer (read once, never copied, never reused).
    """
    raw = open(path, "rb", buffering=0)
    try:
        hashing = _HashingReader(raw, hasher) if hasher is not None else raw
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stored = io.BufferedReader(hashing, 1 << 20)  # its tell(): the bytes consumed
        stream = gzip.GzipFile(fileobj=stored, mode="rb") if gzipped else stored
        carry = b""
        first_line = 1
        while True:
            buffer = bytearray(len(carry) + chunk_bytes)
            buffer[:len(carry)] = carry
            view = memoryview(buffer)
            filled = len(carry)
            while filled < len(buffer):
                try:
                    count = stream.readinto(view[filled:])
                except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                    whole = first_line - 1 + buffer.count(b"\n", 0, filled)
                    where = f" after line {whole:,}" if whole else ""
                    raise CorruptInput(
                        f"{path}: the gzip data is cut short or damaged{where} ({error}); "
                        "download or copy it again") from None
                if not count:
                    break
                filled += count
            if filled == len(carry):  # end of input
                if carry:
                    yield view[:filled], first_line, 1, stored.tell()
                return
            cut = buffer.rfind(b"\n", 0, filled)
            if cut < 0:  # a line longer than the buffer: read more
                carry = bytes(view[:filled])
                continue
            carry = bytes(view[cut + 1:filled])
            lines = buffer.count(b"\n", 0, cut + 1)
            yield view[:cut + 1], first_line, lines, stored.tell()
            first_line += lines
    finally:
        raw.close()
