"""Options of :func:`.prepare.prepare` and its error type, validated once on construction.

Every check names the Python option and its command-line flag, so the same message serves
``PrepareOptions(...)`` callers and ``dnas dlrm prepare`` users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .linereader import DEFAULT_CHUNK_BYTES
from .schema import NUM_SPARSE, SPARSE_NAMES, feature_index

#: ``split_storage: auto`` describes the splits as row ranges above this many rows (their
#: index arrays would take 2 GB, and twice that in each trial's memory once shuffled)
RANGES_ABOVE_ROWS = 250_000_000


class PrepareError(ValueError):
    """Invalid options or inputs for prepare (the message names the option or file)."""


@dataclass
class PrepareOptions:
    """Options of :func:`prepare`, validated once on construction.

    ``hash_size`` applies to every categorical feature; ``hash_sizes`` overrides it per
    feature (``{"C3": 100000}``, or a sequence of 26 sizes, ``None`` for vocabulary).
    Features left without a size use a vocabulary built on the training rows.

    ``split`` picks the protocol of :mod:`.protocols`: ``random`` (the paper's: first 6/7
    train, the rest shuffled and halved), ``position`` (file order: train, then
    ``val_fraction``, then ``test_fraction`` of the rows; default 0.1 each) or ``day``
    (``eval_file``, the last input, is halved at random into val and test).

    ``split_storage``: ``indices`` stores each split as sorted row indices (exact subset
    sizes); ``ranges`` describes them (row ranges and a per-row hash, :mod:`.splits`) in
    the manifest, O(1) in the number of rows, and the core streams them; ``auto`` is
    ``ranges`` above :data:`RANGES_ABOVE_ROWS` rows without negative downsampling.
    """

    hash_size: int | None = None
    hash_sizes: Mapping[str, int] | Sequence[int | None] | None = None
    min_count: int = 1
    seed: int = 0
    arch_fraction: float = 0.2
    split: Literal["random", "position", "day"] = "random"
    val_fraction: float | None = None
    test_fraction: float | None = None
    eval_file: str | Path | None = None
    subsample: float = 1.0
    negative_rate: float | None = None
    on_bad_line: Literal["error", "skip"] = "error"
    allow_short_lines: bool = False
    overwrite: bool = False
    use_threads: bool = True
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    sparse_dtype: Literal["auto", "int32", "int64"] = "auto"
    split_storage: Literal["auto", "indices", "ranges"] = "auto"
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
        self._check_split(fail)
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
        if self.split_storage not in ("auto", "indices", "ranges"):
            fail("split_storage", "--split-storage", f"must be auto, indices or ranges, got "
                 f"{self.split_storage!r}")
        if self.split_storage == "ranges" and self.negative_rate is not None:
            fail("split_storage", "--split-storage", "ranges cannot downsample negatives "
                 "(negative_rate, --negative-rate): which training rows are kept depends on "
                 "their labels; use --split-storage indices, or no --negative-rate")
        if self.chunk_bytes < 1 << 16:
            fail("chunk_bytes", "--chunk-mb", f"must be at least 65536, got {self.chunk_bytes}")
        if self.max_listed_bad_lines < 0:
            fail("max_listed_bad_lines", "-", "must be >= 0")

    def _check_split(self, fail: Any) -> None:
        if self.split not in ("random", "position", "day"):
            fail("split", "--split", f"must be random, position or day, got {self.split!r}")
        fractions = {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction}
        for option, value in fractions.items():
            flag = "--" + option.replace("_", "-")
            if value is None:
                continue
            if self.split != "position":
                fail(option, flag, f"applies to the position split only (--split position), "
                     f"not to --split {self.split}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 < value < 1.0:
                fail(option, flag, f"must be a number in (0, 1), got {value!r}")
        if self.split == "position":
            self.val_fraction = 0.1 if self.val_fraction is None else float(self.val_fraction)
            self.test_fraction = 0.1 if self.test_fraction is None else float(self.test_fraction)
            if self.val_fraction + self.test_fraction >= 1.0:
                fail("val_fraction", "--val-fraction", f"plus test_fraction (--test-fraction) "
                     f"must be below 1 to leave training rows, got {self.val_fraction} + "
                     f"{self.test_fraction}")
        if self.split == "day" and self.eval_file is None:
            fail("eval_file", "--eval-file", "is required by the day split (--split day): name "
                 "the input file (the last day) that becomes validation and test")
        if self.split != "day" and self.eval_file is not None:
            fail("eval_file", "--eval-file", f"applies to the day split only (--split day), "
                 f"not to --split {self.split}")

    def ranges_for(self, rows: int) -> bool:
        """Whether the splits of ``rows`` rows are stored as ranges (else index arrays)."""
        if self.split_storage == "auto":
            return rows > RANGES_ABOVE_ROWS and self.negative_rate is None
        return self.split_storage == "ranges"

    @property
    def vocab_features(self) -> list[int]:
        return [j for j, size in enumerate(self.table_sizes) if size is None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hash_sizes"] = {SPARSE_NAMES[j]: size for j, size in enumerate(self.table_sizes)}
        data.pop("table_sizes", None)
        if self.eval_file is not None:
            data["eval_file"] = str(self.eval_file)
        return data
