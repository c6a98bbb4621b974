"""Data layer of the DLRM plugin: Criteo-format reading, ``prepare``, datasets, synthetic data.

Importing this package does not import torch (``CriteoArrays.gather`` does, when called).
"""

from .criteo import BadLine, BadLineError, parse_chunk
from .dataset import CriteoArrays
from .manifest import MISSING_ROW, UNKNOWN_ROW, Manifest, ManifestError
from .prepare import PrepareError, PrepareOptions, prepare
from .realistic import RealisticConfig, generate_realistic, write_realistic_tsv
from .schema import (
                     COLUMN_NAMES,
                     DENSE_NAMES,
                     KAGGLE_CARDINALITIES,
                     NUM_DENSE,
                     NUM_SPARSE,
                     SPARSE_NAMES,
                     dense_transform,
)
from .splits import SPLIT_NAMES, correct_downsampled, make_splits
from .synthetic import (
                     PlantedStructure,
                     SyntheticConfig,
                     SyntheticData,
                     SyntheticModel,
                     generate,
                     synthetic_cardinalities,
                     write_tsv,
)

__all__ = [
    "BadLine", "BadLineError", "COLUMN_NAMES", "CriteoArrays", "DENSE_NAMES",
    "KAGGLE_CARDINALITIES", "MISSING_ROW", "Manifest", "ManifestError", "NUM_DENSE",
    "NUM_SPARSE", "PlantedStructure", "PrepareError", "PrepareOptions", "SPARSE_NAMES",
    "SPLIT_NAMES", "SyntheticConfig", "SyntheticData", "SyntheticModel", "UNKNOWN_ROW",
    "correct_downsampled", "dense_transform", "generate", "make_splits", "parse_chunk",
    "prepare", "synthetic_cardinalities", "write_tsv", "RealisticConfig",
    "generate_realistic", "write_realistic_tsv",
]
