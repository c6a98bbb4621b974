"""The Criteo record layout, its published statistics and the standard dense transform.

Facts only (see ``criteo-format.md`` in the project references): 40 TAB-separated fields,
``label``, ``I1..I13`` (integers, possibly negative or empty), ``C1..C26`` (8-digit hex or
empty). Everything in the data layer indexes features 0-based: dense feature ``k`` is
``I{k+1}``, categorical feature ``j`` is ``C{j+1}``.
"""

from __future__ import annotations

import numpy as np

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE  # 40 fields, 39 tabs per line

LABEL_NAME = "label"
DENSE_NAMES: tuple[str, ...] = tuple(f"I{k + 1}" for k in range(NUM_DENSE))
SPARSE_NAMES: tuple[str, ...] = tuple(f"C{j + 1}" for j in range(NUM_SPARSE))
COLUMN_NAMES: tuple[str, ...] = (LABEL_NAME, *DENSE_NAMES, *SPARSE_NAMES)

#: Distinct values per categorical feature on Criteo Kaggle (paper, section VIII-B).
KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
KAGGLE_LINES = 45_840_617

#: Missing rate per dense feature, I1..I13 (first 10k lines of train.txt).
DENSE_MISSING_RATES: tuple[float, ...] = (
    0.449, 0.0, 0.203, 0.198, 0.049, 0.252, 0.049, 0.001, 0.049, 0.449, 0.049, 0.774, 0.198,
)
#: Missing rate per categorical feature, C1..C26.
SPARSE_MISSING_RATES: tuple[float, ...] = (
    0.0, 0.0, 0.036, 0.036, 0.0, 0.133, 0.0, 0.0, 0.0, 0.0, 0.0, 0.036, 0.0, 0.0, 0.0, 0.036,
    0.0, 0.0, 0.45, 0.45, 0.036, 0.818, 0.0, 0.036, 0.45, 0.45,
)
#: (median, 99th percentile, max) of each dense feature, I1..I13.
DENSE_QUANTILES: tuple[tuple[int, int, int], ...] = (
    (1, 44, 214), (3, 2224, 18522), (7, 307, 65535), (4, 45, 280), (2582, 316625, 1618112),
    (40, 1734, 12167), (3, 190, 1658), (7, 48, 2230), (41, 1228, 7335), (0, 3, 6), (1, 22, 79),
    (0, 14, 98), (5, 74, 1843),
)
#: Fraction of negative values of I2.
I2_NEGATIVE_RATE = 0.098


def feature_index(name: str) -> int:
    """0-based index of a categorical feature given as ``C7``, ``c7`` or ``6``."""
    text = name.strip()
    if text[:1] in ("C", "c") and text[1:].isdigit():
        number = int(text[1:])
        if 1 <= number <= NUM_SPARSE:
            return number - 1
    elif text.isdigit() and int(text) < NUM_SPARSE:
        return int(text)
    raise ValueError(f"unknown categorical feature {name!r}: expected C1..C{NUM_SPARSE}")


_LUT_SIZE = 1 << 16
_LOG1P_LUT = np.log1p(np.arange(_LUT_SIZE, dtype=np.float64)).astype(np.float32)


def dense_transform(raw: np.ndarray) -> np.ndarray:
    """The standard dense preprocessing: ``log(1 + max(x, 0))`` as float32.

    ``raw`` holds the integer values with missing entries already set to 0 (missing -> 0,
    negative -> 0). Computed in float64 and rounded to float32 (values below 65536 through
    a table of exactly those results). The one function used by both the reader and the
    synthetic generator, so the two paths give bit-identical values.
    """
    raw = np.asarray(raw, dtype=np.int64)
    out = _LOG1P_LUT[np.clip(raw, 0, _LUT_SIZE - 1)]
    big = raw >= _LUT_SIZE
    if big.any():
        out[big] = np.log1p(raw[big].astype(np.float64)).astype(np.float32)
    return out
