"""Options of :func:`.prepare.prepare` and its error type, validated once on construction.

Every check names the Python option and its command-line flag, so the same message serves
``PrepareOptions(...)`` callers and ``dnas dlrm prepare`` users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .linereader import DEFAULT_CHUNK_BYTES
from .schema import NUM_SPARSE, SPARSE_NAMES, feature_index


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

