"""Synthetic Criteo-format data with the difficulty of real click logs.

The planted generator (:mod:`.synthetic`) is built so that searches can find known answers;
its signal is strong and its tables small, so nearly any training setting looks fine on it.
This one is built to tell good training defaults from bad ones, as real Criteo data does:

- weak signal: the true logit's spread is small (``signal_std``), and most of it sits on
  rare categorical values that a model sees a few times at most, so a logistic regression
  on one-hot features reaches an AUC of about 0.70-0.78 (tested), not 0.95;
- click rate 0.22 (the intercept is calibrated on a sample);
- the 13 dense count features of the planted generator (heavy tails, zeros, missing);
- 26 categorical features with Criteo's very different cardinalities (Kaggle's counts,
  capped at ``max_card``: 3 to ~1M values) and Zipf-distributed values (exponent ~1.1:
  most distinct values are seen once or twice, a few are very frequent);
- signal from main effects of some categorical features (a Gaussian effect per value,
  larger for rare values' share of the variance since they are most values), a linear
  effect of a few log-transformed dense features, and low-rank (rank ``pair_rank``)
  interactions between pairs of categorical features. A model with enough capacity to
  memorize rare values overfits after one or two epochs at 10K-100K rows.

Rows come in seeded chunks of :data:`.rows.CHUNK_ROWS`, so memory is bounded whatever
the row count, and ``generate(n, s)`` is a prefix of ``generate(m, s)``. The model has no
planted answers (``SyntheticData.planted`` is ``None``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rows import CHUNK_ROWS, DenseCounts, hex_values, sigmoid, write_model_tsv
from .schema import (
    KAGGLE_CARDINALITIES,
    NUM_DENSE,
    NUM_SPARSE,
    SPARSE_MISSING_RATES,
    dense_transform,
)
from .synthetic import SyntheticData

#: 0-based categorical features with a main effect (a mix of small and huge tables)
MAIN_EFFECTS: tuple[int, ...] = (0, 1, 2, 5, 8, 10, 13, 16, 22, 23)
#: pairs with a low-rank interaction
PAIRS: tuple[tuple[int, int], ...] = ((0, 4), (1, 12), (6, 14), (10, 17))
#: dense features with a linear effect (on log1p counts)
DENSE_EFFECTS: tuple[int, ...] = (0, 3, 6, 9, 10)


@dataclass(frozen=True)
class RealisticConfig:
    """Knobs of the realistic generator."""

    click_rate: float = 0.22
    max_card: int = 1 << 20
    zipf: float = 1.1
    main_std: float = 0.45
    pair_std: float = 0.35
    pair_rank: int = 4
    dense_std: float = 0.3

    def __post_init__(self) -> None:
        if not 0.01 <= self.click_rate <= 0.99:
            raise ValueError(f"click_rate must be in [0.01, 0.99], got {self.click_rate}")
        if self.max_card < 3:
            raise ValueError(f"max_card must be >= 3, got {self.max_card}")
        if self.zipf <= 0 or self.pair_rank < 1:
            raise ValueError("zipf must be > 0 and pair_rank >= 1")
        if min(self.main_std, self.pair_std, self.dense_std) < 0:
            raise ValueError("component standard deviations must be >= 0")


def realistic_cardinalities(config: RealisticConfig = RealisticConfig()) -> list[int]:
    """Kaggle's cardinalities capped at ``max_card`` (row 0: the missing value)."""
    return [min(card, config.max_card) + 1 for card in KAGGLE_CARDINALITIES]


class RealisticModel:
    """The seeded generative model; rows through :meth:`chunks`."""

    def __init__(self, seed: int = 0, config: RealisticConfig | None = None):
        self.seed = int(seed)
        self.config = config = config or RealisticConfig()
        rng = np.random.default_rng([self.seed, 0x2EA1])
        self.cardinalities = realistic_cardinalities(config)
        self.counts = DenseCounts()
        self.sparse_missing = np.array(SPARSE_MISSING_RATES)
        self.hex_keys = rng.integers(0, 2**32, size=NUM_SPARSE, dtype=np.uint64)
        self.cdfs: list[np.ndarray] = []
        for card in self.cardinalities:
            values = card - 1
            weights = 1.0 / np.arange(1, values + 1) ** config.zipf
            weights = weights[rng.permutation(values)]
            cdf = np.cumsum(weights / weights.sum())
            cdf[-1] = 1.0
            self.cdfs.append(cdf)
        # effects per id; id 0 (missing) gets its own effect like any value
        self.main = {j: rng.standard_normal(self.cardinalities[j]) for j in MAIN_EFFECTS}
        self.pairs = {(a, b): (rng.standard_normal((self.cardinalities[a], config.pair_rank)),
                               rng.standard_normal((self.cardinalities[b], config.pair_rank)))
                      for a, b in PAIRS}
        self.dense_w = np.zeros(NUM_DENSE)
        self.dense_w[list(DENSE_EFFECTS)] = rng.standard_normal(len(DENSE_EFFECTS))

        # scale every component to its std on a calibration sample, then the intercept
        self.scales = {"main": 1.0, "pair": 1.0, "dense": 1.0}
        self.intercept = 0.0
        sample = self._rows(np.random.default_rng([self.seed, 0xCA1B]), CHUNK_ROWS)
        parts = self._components(sample["dense"], sample["sparse"])
        self.scales = {"main": config.main_std / (parts["main"].std() + 1e-12)
                       * np.sqrt(len(MAIN_EFFECTS)),
                       "pair": config.pair_std / (parts["pair"].std() + 1e-12)
                       * np.sqrt(len(PAIRS)),
                       "dense": config.dense_std / (parts["dense"].std() + 1e-12)}
        base = self.logits(sample["dense"], sample["sparse"])
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sigmoid(base + mid).mean() < config.click_rate else (lo, mid)
        self.intercept = (lo + hi) / 2

    def _components(self, dense: np.ndarray, sparse: np.ndarray) -> dict[str, np.ndarray]:
        n = len(sparse)
        main = np.zeros(n)
        for j, effect in self.main.items():
            main += effect[sparse[:, j]]
        pair = np.zeros(n)
        for (a, b), (u, v) in self.pairs.items():
            pair += np.einsum("ij,ij->i", u[sparse[:, a]], v[sparse[:, b]]) / np.sqrt(u.shape[1])
        z = np.asarray(dense, dtype=np.float64)
        dense_part = (z - 2.0) @ self.dense_w
        return {"main": main * self.scales["main"], "pair": pair * self.scales["pair"],
                "dense": dense_part * self.scales["dense"]}

    def logits(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """The true logit of rows given their transformed dense values and their ids."""
        return self.intercept + sum(self._components(dense, sparse).values())

    def _rows(self, rng: np.random.Generator, n: int) -> dict:
        raw, dense_missing = self.counts.sample(rng, n)
        uniforms = rng.random((n, NUM_SPARSE))
        sparse = np.empty((n, NUM_SPARSE), dtype=np.int64)
        for j, cdf in enumerate(self.cdfs):
            sparse[:, j] = np.minimum(np.searchsorted(cdf, uniforms[:, j], side="right"),
                                      len(cdf) - 1) + 1
        sparse[rng.random((n, NUM_SPARSE)) < self.sparse_missing] = 0
        return {"raw": raw, "dense_missing": dense_missing, "dense": dense_transform(raw),
                "sparse": sparse}

    def chunks(self, n_rows: int) -> Iterator[dict]:
        """Rows in chunks of :data:`CHUNK_ROWS` (the last one truncated), labels drawn."""
        for index, start in enumerate(range(0, n_rows, CHUNK_ROWS)):
            rng = np.random.default_rng([self.seed, 0xDA7A, index])
            chunk = self._rows(rng, CHUNK_ROWS)
            chunk["logits"] = self.logits(chunk["dense"], chunk["sparse"])
            chunk["labels"] = (rng.random(CHUNK_ROWS) < sigmoid(chunk["logits"])).astype(np.int8)
            size = min(CHUNK_ROWS, n_rows - start)
            yield {k: v[:size] for k, v in chunk.items()} if size < CHUNK_ROWS else chunk

    def hex_values(self, j: int, ids: np.ndarray) -> np.ndarray:
        """The seeded bijection id -> 32-bit raw value of feature ``j`` (written as hex)."""
        return hex_values(self.hex_keys, j, ids)


@functools.lru_cache(maxsize=4)
def _model(seed: int, config: RealisticConfig) -> RealisticModel:
    return RealisticModel(seed, config)


def generate_realistic(n_rows: int, seed: int = 0,
                       config: RealisticConfig | None = None) -> SyntheticData:
    """``n_rows`` preprocessed realistic rows (deterministic by ``seed``)."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    model = _model(int(seed), config or RealisticConfig())
    dense = np.zeros((n_rows, NUM_DENSE), dtype=np.float32)
    sparse = np.zeros((n_rows, NUM_SPARSE), dtype=np.int64)
    labels = np.zeros(n_rows, dtype=np.float32)
    logits = np.zeros(n_rows, dtype=np.float32)
    for index, chunk in enumerate(model.chunks(n_rows)):
        rows = slice(index * CHUNK_ROWS, index * CHUNK_ROWS + len(chunk["labels"]))
        dense[rows], sparse[rows] = chunk["dense"], chunk["sparse"]
        labels[rows], logits[rows] = chunk["labels"], chunk["logits"]
    return SyntheticData(dense=dense, sparse=sparse, labels=labels,
                         cardinalities=list(model.cardinalities), planted=None,
                         logits=logits, seed=int(seed), model=model)


def write_realistic_tsv(path: str | Path, n_rows: int, seed: int = 0, *,
                        gzip: bool | None = None, config: RealisticConfig | None = None) -> Path:
    """Write the rows of ``generate_realistic(n_rows, seed)`` as raw Criteo text, streamed."""
    return write_model_tsv(path, _model(int(seed), config or RealisticConfig()), n_rows,
                           gzip=gzip)
