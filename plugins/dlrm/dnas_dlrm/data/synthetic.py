"""Synthetic Criteo-format data with planted structure that the searches must find.

One seeded generator, two outputs holding the same rows for the same seed:
:func:`generate` returns preprocessed arrays (the standard dense transform, categorical
row ids) and :func:`write_tsv` writes the raw TAB-separated format, streamed. Rows come in
chunks of :data:`.rows.CHUNK_ROWS`, each from its own seeded generator, so
``generate(n, s)`` is a prefix of ``generate(m, s)`` for ``n < m``.

The statistics follow Criteo Kaggle (``criteo-format.md``). The planted roles (rich, weak,
noise, many-category and few-category features, a dense ridge function) each have a known
best embedding dimension, table size or MLP size; docs/data.md ("How the planted structure
is built") explains each construction, the defaults and the measured log losses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rows import CHUNK_ROWS, DenseCounts, SyntheticData, hex_values, sigmoid, write_model_tsv
from .schema import (
    KAGGLE_CARDINALITIES,
    NUM_DENSE,
    NUM_SPARSE,
    SPARSE_MISSING_RATES,
    SPARSE_NAMES,
    dense_transform,
)

_CALIBRATION_ROWS = 1 << 15

RICH_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (4, 7))
WEAK: tuple[int, ...] = (5, 8, 13, 16, 22)
MANY: tuple[int, ...] = (9, 23, 25)
FEW_GROUPS: dict[int, int] = {2: 10, 11: 5, 15: 8, 20: 7}
RICH: tuple[int, ...] = tuple(sorted({j for pair in RICH_PAIRS for j in pair}))
NOISE: tuple[int, ...] = tuple(j for j in range(NUM_SPARSE)
                               if j not in RICH + WEAK + MANY + tuple(FEW_GROUPS))
_ZIPF = {"rich": 0.5, "weak": 0.9, "many": 0.6, "few": 1.05, "noise": 1.1}


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (the planted roles themselves are fixed, see the module doc)."""

    scale: float = 0.003
    floor: int = 100
    click_rate: float = 0.25
    signal: float = 1.0
    rich_rank: int = 32
    dense_ridges: int = 8
    dense_std: float = 0.8
    rich_std: float = 1.0
    weak_std: float = 0.35
    many_std: float = 0.6
    few_std: float = 0.6

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.floor < 3:
            raise ValueError(f"floor must be >= 3, got {self.floor}")
        if not 0.01 <= self.click_rate <= 0.99:
            raise ValueError(f"click_rate must be in [0.01, 0.99], got {self.click_rate}")
        if self.signal < 0:
            raise ValueError(f"signal must be >= 0, got {self.signal}")
        if min(self.dense_std, self.rich_std, self.weak_std, self.many_std, self.few_std) < 0:
            raise ValueError("component standard deviations must be >= 0")
        if self.rich_rank < 1 or self.dense_ridges < 1:
            raise ValueError("rich_rank and dense_ridges must be >= 1")


def role_of(j: int) -> str:
    """Planted role of categorical feature ``j``: rich, weak, many, few or noise."""
    if j in RICH:
        return "rich"
    if j in WEAK:
        return "weak"
    if j in MANY:
        return "many"
    if j in FEW_GROUPS:
        return "few"
    return "noise"


def synthetic_cardinalities(config: SyntheticConfig = SyntheticConfig()) -> list[int]:
    """Kaggle's profile scaled with a floor, rounded as the planted roles require."""
    cards = []
    for j, kaggle in enumerate(KAGGLE_CARDINALITIES):
        card = kaggle if kaggle <= config.floor else max(config.floor,
                                                         int(round(kaggle * config.scale)))
        role = role_of(j)
        if role == "few":
            unit = 1000 * FEW_GROUPS[j]
            card = max(unit, int(round(card / unit)) * unit)
        elif role == "many":
            card = max(100, int(round(card / 100)) * 100)
        elif role == "rich":
            card = 3 * config.rich_rank // 2
        cards.append(max(card, 2))
    return cards


def candidate_hash_sizes(card: int, fractions=(1.0, 0.1, 0.01, 0.001)) -> list[int]:
    """The cardinality search's table sizes for one feature: ``max(1, round(f * card))``."""
    return [max(1, int(round(f * card))) for f in fractions]


@dataclass(frozen=True)
class PlantedStructure:
    """What the searches should find on this data (0-based categorical feature indices)."""

    cardinalities: tuple[int, ...]
    rich: tuple[int, ...]
    rich_pairs: tuple[tuple[int, int], ...]
    rich_rank: int
    weak: tuple[int, ...]
    noise: tuple[int, ...]
    many_categories: tuple[int, ...]
    few_categories: tuple[int, ...]
    few_groups: dict[int, int]
    dense_ridges: int
    component_std: dict[str, float]
    intercept: float
    click_rate: float
    bayes_logloss: float
    base_logloss: float

    def role(self, j: int) -> str:
        return role_of(j)

    def best_emb_dims(self, options=(8, 16, 32, 64, 128)) -> list[int]:
        """Known best dimension per feature: rank for rich features, else the smallest."""
        ordered = sorted(options)
        fitting = [d for d in ordered if d >= self.rich_rank]
        rich_best = fitting[0] if fitting else ordered[-1]
        return [rich_best if j in self.rich else ordered[0] for j in range(NUM_SPARSE)]

    def best_card_fractions(self, options=(1.0, 0.1, 0.01, 0.001)) -> list[float | None]:
        """Known best fraction per feature (``None``: not planted, a trade-off)."""
        best: list[float | None] = []
        for j in range(NUM_SPARSE):
            if j in self.few_categories or j in self.noise:
                best.append(min(options))
            elif j in self.many_categories or j in self.rich:
                best.append(max(options))
            else:
                best.append(None)
        return best

    def best_mlp_width(self, options=(128, 256, 512, 1024)) -> int:
        """Smallest offered width that represents the dense part exactly (>= dense_ridges)."""
        fitting = [w for w in sorted(options) if w >= self.dense_ridges]
        return fitting[0] if fitting else max(options)

    def summary(self) -> str:
        names = lambda idx: ", ".join(SPARSE_NAMES[j] for j in idx)  # noqa: E731
        return (f"rich (dim {self.rich_rank}): {names(self.rich)}; weak: {names(self.weak)}; "
                f"noise: {names(self.noise)}; many categories: {names(self.many_categories)}; "
                f"few categories: {names(self.few_categories)}; dense: sum of "
                f"{self.dense_ridges} ReLU ridges; Bayes log loss {self.bayes_logloss:.4f} "
                f"vs base rate {self.base_logloss:.4f}")


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


class SyntheticModel:
    """The seeded generative model: frequencies, effects, dense ridges, intercept."""

    def __init__(self, seed: int = 0, config: SyntheticConfig | None = None):
        self.seed = int(seed)
        self.config = config = config or SyntheticConfig()
        rng = np.random.default_rng([self.seed, 0x57C7])
        self.cardinalities = synthetic_cardinalities(config)
        self.counts = DenseCounts()
        self.sparse_missing = np.array(SPARSE_MISSING_RATES)
        self.hex_keys = rng.integers(0, 2**32, size=NUM_SPARSE, dtype=np.uint64)

        # value frequencies: p[0] = missing rate, ids 1.. Zipf with shuffled ranks
        self.frequencies: list[np.ndarray] = []
        self.cdfs: list[np.ndarray] = []
        self.guides: list[np.ndarray] = []
        for j, card in enumerate(self.cardinalities):
            values = card - 1
            weights = 1.0 / np.arange(1, values + 1) ** _ZIPF[role_of(j)]
            weights = weights[rng.permutation(values)]
            weights /= weights.sum()
            cdf = np.cumsum(weights)
            cdf[-1] = 1.0
            self.cdfs.append(cdf)
            self.guides.append(np.searchsorted(cdf, np.arange(2 * values) / (2 * values),
                                               side="right"))
            p = np.empty(card)
            p[0] = self.sparse_missing[j]
            p[1:] = (1 - self.sparse_missing[j]) * weights
            self.frequencies.append(p)

        s = config.signal
        self.component_std = {"dense": config.dense_std * s, "rich_pair": config.rich_std * s,
                              "weak": config.weak_std * s, "many": config.many_std * s,
                              "few": config.few_std * s}
        self.effects: dict[int, np.ndarray] = {}
        for j in WEAK:
            self.effects[j] = self._scaled(rng.standard_normal(self.cardinalities[j]), j,
                                           self.component_std["weak"])
        for j in MANY:
            card = self.cardinalities[j]
            z = rng.standard_normal(card)
            z[0] = 0.0
            p = self.frequencies[j].copy()
            p[0] = 0.0
            buckets = np.arange(card) % (card // 10)
            mass = np.bincount(buckets, weights=p)
            mean = np.bincount(buckets, weights=p * z) / np.where(mass > 0, mass, 1)
            z = z - mean[buckets]
            z[0] = 0.0
            self.effects[j] = self._scaled(z, j, self.component_std["many"], center=False)
        for j, groups in FEW_GROUPS.items():
            card = self.cardinalities[j]
            g = rng.standard_normal(groups)
            self.effects[j] = self._scaled(g[np.arange(card) % groups], j,
                                           self.component_std["few"])
        self.interactions: dict[tuple[int, int], np.ndarray] = {}
        for a, b in RICH_PAIRS:
            qa = np.linalg.qr(rng.standard_normal((self.cardinalities[a], config.rich_rank)))[0]
            qb = np.linalg.qr(rng.standard_normal((self.cardinalities[b], config.rich_rank)))[0]
            table = qa @ qb.T
            pa_, pb_ = self.frequencies[a], self.frequencies[b]
            mean = pa_ @ table @ pb_
            var = pa_ @ (table - mean) ** 2 @ pb_
            self.interactions[(a, b)] = table * (self.component_std["rich_pair"] / np.sqrt(var))

        # dense ridges, fitted to a calibration sample of the dense features
        calibration = np.random.default_rng([self.seed, 0xCA1B])
        raw, _ = self._dense_raw(calibration, _CALIBRATION_ROWS)
        x = dense_transform(raw).astype(np.float64)
        self.dense_mean = x.mean(axis=0)
        self.dense_std = x.std(axis=0) + 1e-6
        z = (x - self.dense_mean) / self.dense_std
        w = rng.standard_normal((NUM_DENSE, config.dense_ridges))
        self.ridge_w = w / np.linalg.norm(w, axis=0)
        pre = z @ self.ridge_w
        quantile = rng.uniform(0.3, 0.7, size=config.dense_ridges)
        self.ridge_b = -np.array([np.quantile(pre[:, k], quantile[k])
                                  for k in range(config.dense_ridges)])
        a = rng.standard_normal(config.dense_ridges)
        f = np.maximum(pre + self.ridge_b, 0) @ a
        self.ridge_a = a * (self.component_std["dense"] / (f.std() + 1e-12))
        self.ridge_c = -float((np.maximum(pre + self.ridge_b, 0) @ self.ridge_a).mean())

        # intercept: mean click probability = click_rate on a calibration sample
        self.intercept = 0.0
        sample = self._chunk(calibration, _CALIBRATION_ROWS, labels=False)
        base = sample["logits"]
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if sigmoid(base + mid).mean() < config.click_rate:
                lo = mid
            else:
                hi = mid
        self.intercept = (lo + hi) / 2
        p = sigmoid(base + self.intercept)
        self.planted = PlantedStructure(
            cardinalities=tuple(self.cardinalities), rich=RICH, rich_pairs=RICH_PAIRS,
            rich_rank=config.rich_rank, weak=WEAK, noise=NOISE, many_categories=MANY,
            few_categories=tuple(sorted(FEW_GROUPS)), few_groups=dict(FEW_GROUPS),
            dense_ridges=config.dense_ridges, component_std=dict(self.component_std),
            intercept=float(self.intercept), click_rate=float(p.mean()),
            bayes_logloss=float(_entropy(p).mean()),
            base_logloss=float(_entropy(np.array(config.click_rate))))

    def _scaled(self, values: np.ndarray, j: int, std: float, center: bool = True) -> np.ndarray:
        p = self.frequencies[j]
        if center:
            values = values - p @ values
        scale = np.sqrt(p @ (values - p @ values) ** 2)
        return values * (std / scale) if scale > 0 else values * 0.0

    # ------------------------------------------------------------------ the true logit
    def dense_logit(self, dense: np.ndarray) -> np.ndarray:
        """``f_dense``: the sum of ReLU ridges of the standardized transformed features."""
        z = (np.asarray(dense, dtype=np.float64) - self.dense_mean) / self.dense_std
        return np.maximum(z @ self.ridge_w + self.ridge_b, 0) @ self.ridge_a + self.ridge_c

    def logits(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """The true logit of rows given their transformed dense values and their ids."""
        sparse = np.asarray(sparse)
        out = self.intercept + self.dense_logit(dense)
        for (a, b), table in self.interactions.items():
            out += table[sparse[:, a], sparse[:, b]]
        for j, effect in self.effects.items():
            out += effect[sparse[:, j]]
        return out

    # ------------------------------------------------------------------ rows
    def _dense_raw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.counts.sample(rng, n)

    def _chunk(self, rng: np.random.Generator, n: int, labels: bool = True) -> dict:
        raw, dense_missing = self._dense_raw(rng, n)
        sparse = np.empty((n, NUM_SPARSE), dtype=np.int64)
        uniforms = rng.random((n, NUM_SPARSE))
        for j in range(NUM_SPARSE):
            sparse[:, j] = self._inverse_cdf(j, uniforms[:, j]) + 1
        np.minimum(sparse, np.array(self.cardinalities) - 1, out=sparse)
        sparse[rng.random((n, NUM_SPARSE)) < self.sparse_missing] = 0  # independent
        dense = dense_transform(raw)
        logits = self.logits(dense, sparse)
        out = {"raw": raw, "dense_missing": dense_missing, "dense": dense, "sparse": sparse,
               "logits": logits}
        if labels:
            out["labels"] = (rng.random(n) < sigmoid(logits)).astype(np.int8)
        return out

    def _inverse_cdf(self, j: int, u: np.ndarray) -> np.ndarray:
        """``searchsorted(cdf, u, side="right")`` through a guide table (same result, faster)."""
        cdf, guide = self.cdfs[j], self.guides[j]
        index = guide[(u * len(guide)).astype(np.int64)]
        last = len(cdf) - 1
        back = np.flatnonzero((index > 0) & (cdf[np.maximum(index - 1, 0)] > u))
        while len(back):  # float rounding of the guide cell: step back (rare)
            index[back] -= 1
            back = back[(index[back] > 0) & (cdf[np.maximum(index[back] - 1, 0)] > u[back])]
        todo = np.flatnonzero((index < last) & (cdf[np.minimum(index, last)] <= u))
        while len(todo):
            index[todo] += 1
            todo = todo[(index[todo] < last) & (cdf[index[todo]] <= u[todo])]
        return index

    def chunks(self, n_rows: int) -> Iterator[dict]:
        """Rows in chunks of :data:`CHUNK_ROWS` (the last one truncated)."""
        for index, start in enumerate(range(0, n_rows, CHUNK_ROWS)):
            rng = np.random.default_rng([self.seed, 0xDA7A, index])
            chunk = self._chunk(rng, CHUNK_ROWS)
            size = min(CHUNK_ROWS, n_rows - start)
            if size < CHUNK_ROWS:
                chunk = {k: v[:size] for k, v in chunk.items()}
            yield chunk

    def hex_values(self, j: int, ids: np.ndarray) -> np.ndarray:
        """The seeded bijection id -> 32-bit raw value of feature ``j`` (written as hex)."""
        return hex_values(self.hex_keys, j, ids)


@functools.lru_cache(maxsize=8)
def _model(seed: int, config: SyntheticConfig) -> SyntheticModel:
    """Models are pure functions of (seed, config): built once, shared (do not mutate)."""
    return SyntheticModel(seed, config)


def generate(n_rows: int, seed: int = 0, config: SyntheticConfig | None = None) -> SyntheticData:
    """``n_rows`` preprocessed synthetic rows (deterministic by ``seed``)."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    model = _model(int(seed), config or SyntheticConfig())
    parts = list(model.chunks(n_rows))

    def stack(key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if not parts:
            return np.zeros(shape, dtype=dtype)
        return np.concatenate([c[key] for c in parts]).astype(dtype, copy=False)

    return SyntheticData(
        dense=stack("dense", (0, NUM_DENSE), np.float32),
        sparse=stack("sparse", (0, NUM_SPARSE), np.int64),
        labels=stack("labels", (0,), np.float32),
        cardinalities=list(model.cardinalities), planted=model.planted,
        logits=stack("logits", (0,), np.float32), seed=int(seed), model=model)


def write_tsv(path: str | Path, n_rows: int, seed: int = 0, *, gzip: bool | None = None,
              config: SyntheticConfig | None = None) -> Path:
    """Write the rows of ``generate(n_rows, seed)`` in the raw Criteo format, streamed.

    gzip when ``gzip`` is true, or when it is ``None`` and the name ends with ``.gz``.
    Memory is bounded by one chunk of :data:`CHUNK_ROWS` rows whatever ``n_rows``.
    """
    return write_model_tsv(path, _model(int(seed), config or SyntheticConfig()), n_rows,
                           gzip=gzip)
