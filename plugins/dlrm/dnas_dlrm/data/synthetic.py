"""Synthetic Criteo-format data with planted structure that the searches must find.

One seeded generator, two outputs holding the same rows for the same seed:
:func:`generate` returns preprocessed arrays (the standard dense transform, categorical
row ids) and :func:`write_tsv` writes the raw TAB-separated format (40 fields, raw integers,
negatives in I2, 8-digit lower-case hex, empty fields for missing values, plain or gzip),
streamed in chunks. Rows come in chunks of :data:`CHUNK_ROWS`, each from its own seeded
generator, so ``generate(n, s)`` is a prefix of ``generate(m, s)`` for ``n < m``.

Statistics (Criteo Kaggle, ``criteo-format.md``): 13 integer features, heavy-tailed counts
(log-normal with the published median and 99th percentile, clipped at the published max,
sharing a common factor so they correlate), I2 negative in 9.8 % of rows; missing values
at the published rates (dense features with equal rates miss together, as in the real
data; categorical features miss independently, so that a missing value of one feature says
nothing about another's planted effect);
26 categorical features with Zipf-like value frequencies (ranks shuffled over the ids);
click rate 25 % (the intercept is calibrated).

Cardinalities: the 26 Kaggle counts times ``scale`` (default 0.003: the largest becomes
~30,000) with a ``floor`` (default 100: a feature keeps its count if it is below the floor,
and is raised to the floor otherwise), then rounded as the planted roles need (below).
Row 0 of every table is the missing row (as in ``prepare``'s output): a missing value has
id 0, present values have ids 1..card-1.

Planted structure (defaults; :class:`PlantedStructure` returns it as data). The true logit is

    logit = b0 + f_dense(x) + sum_pairs M_AB[id_A, id_B] + sum_{weak, many, few} e_j[id_j]

and nothing else: noise features do not enter it.

(a) Embedding dimension.
    RICH: C1, C2, C5, C8 (1.5 x rank = 48 rows each), in pairs (C1, C2) and (C5, C8).
    ``M_AB`` is ``Q_A Q_B^T`` scaled, with ``Q`` random matrices with ``rich_rank`` (32)
    orthonormal columns: rank exactly 32 with 32 equal singular values, so a DLRM dot
    interaction with dimension d < 32 can represent only d/32 of it (exact for uniform
    frequencies; Zipf exponent 0.5 keeps it close). The tables are small (48 x 48 cells,
    ~35 rows per cell in 80k rows) so the interaction is learnable from ~100k rows: with
    100k rows (80k train), 5 epochs of a small DLRM (Adam, planted table sizes, dimension
    8 elsewhere) gave validation log loss 0.431 with dimension 8 for the rich features and
    0.406 with 32. Known best: 32 (the smallest option >= rank).
    WEAK: C6, C9, C14, C17, C23: a scalar random effect per category; dimension 8
    (the smallest option) suffices.
    NOISE: C4, C7, C11, C13, C15, C18, C19, C20, C22, C25: no effect; smallest dimension.
    MANY and FEW features (below) carry scalar effects: smallest dimension suffices.
(b) Embedding cardinality, for candidate sizes ``H = max(1, round(f * card))``,
    ``f`` in (1.0, 0.1, 0.01, 0.001).
    MANY: C10, C24, C26 (cardinalities rounded to multiples of 100: 300, 900, 400).
    A per-category effect whose frequency-weighted mean is exactly zero inside every
    bucket ``id mod (card / 10)`` (the missing row has effect 0), so after hashing to
    ``card/10`` rows, or to ``card/100`` or 1 (unions of those buckets), the best value of
    every hashed row is 0 to first order: the signal is gone. Known best: 1.0.
    FEW: C3, C12, C16, C21 with groups m = 10, 5, 8, 7; cardinalities rounded to
    multiples of 1000 m (30000, 25000, 16000, 21000). The effect depends only on
    ``id mod m``; every candidate H is a multiple of m, so ``(id mod H) mod m == id mod m``
    and hashing to any candidate keeps the signal exactly, while the full table must learn
    ~card separate rows from few examples each. Known best: 0.001.
    NOISE features: no signal, best is the smallest table (0.001).
    RICH features need their full tables (hashing 48 -> 5 rows mixes latent vectors):
    expected 1.0. WEAK: not planted (a trade-off).
    Same small DLRM, all dimensions 32: full tables 0.475; planted sizes (0.001 for few and
    noise features) 0.415; many-category features hashed to 0.1: 0.505.
(c) MLP size: ``f_dense`` is a sum of ``dense_ridges`` (8) ReLU ridge functions of the
    standardized transformed dense features, ``sum_k a_k relu(w_k . z + b_k)``: a linear
    model underfits (R^2 < 0.9 in the tests); one hidden layer of width >= 8 represents it
    exactly. Known best in
    the MLP space: the smallest width offered (128) and the fewest layers; more width or
    depth gains nothing.

Default scales (``signal`` = 1; each is a :class:`SyntheticConfig` field): std of each
component's logit contribution: dense 0.8, each rich pair 1.0, each weak feature 0.35, each
many/few feature 0.6. Bayes log loss ~0.34 versus ~0.56 for the base rate
(``PlantedStructure.bayes_logloss``). The hex bijection scrambles ids, so the id-based
structure of (b) holds for :func:`generate`'s arrays, not for ids that ``prepare`` assigns
to :func:`write_tsv`'s text (that path exists to exercise the reader).
"""

from __future__ import annotations

import functools
import gzip as gzip_module
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from .schema import (
    COLUMN_NAMES,
    DENSE_MISSING_RATES,
    DENSE_QUANTILES,
    I2_NEGATIVE_RATE,
    KAGGLE_CARDINALITIES,
    NUM_DENSE,
    NUM_SPARSE,
    SPARSE_MISSING_RATES,
    SPARSE_NAMES,
    dense_transform,
)

CHUNK_ROWS = 1 << 14
_CALIBRATION_ROWS = 1 << 15
_RHO = 0.5  # correlation of the dense features' latent Gaussians
_Z99 = 2.3263478740408408

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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


class DenseCounts:
    """The 13 dense count features: Criteo's medians, tails, negatives and missing rates.

    Shared by the planted and the realistic generators (their rows differ only in what the
    categorical features and the label do).
    """

    def __init__(self) -> None:
        quantiles = np.array(DENSE_QUANTILES, dtype=np.float64)
        self.mu = np.log1p(quantiles[:, 0] + 0.5)
        self.sigma = np.maximum((np.log1p(quantiles[:, 1]) - self.mu) / _Z99, 0.05)
        self.max = quantiles[:, 2]
        self.missing = np.array(DENSE_MISSING_RATES)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` rows of raw integer counts (0 where missing) and the missing mask."""
        common = rng.standard_normal((n, 1))
        z = _RHO * common + np.sqrt(1 - _RHO**2) * rng.standard_normal((n, NUM_DENSE))
        values = np.floor(np.expm1(self.mu + self.sigma * z))
        values = np.clip(values, 0, self.max).astype(np.int64)
        negative = rng.random(n) < I2_NEGATIVE_RATE
        values[negative, 1] = rng.choice(np.array([-1, -2, -3]), p=[0.8, 0.15, 0.05],
                                         size=int(negative.sum()))
        # dense features with equal rates miss together, as in the real data
        missing = np.zeros((n, NUM_DENSE), dtype=bool)
        uniforms: dict[float, np.ndarray] = {}
        for k, rate in enumerate(self.missing):
            if rate > 0:
                if rate not in uniforms:
                    uniforms[rate] = rng.random(n)
                missing[:, k] = uniforms[rate] < rate
        values[missing] = 0
        return values, missing


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
            if _sigmoid(base + mid).mean() < config.click_rate:
                lo = mid
            else:
                hi = mid
        self.intercept = (lo + hi) / 2
        p = _sigmoid(base + self.intercept)
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
            out["labels"] = (rng.random(n) < _sigmoid(logits)).astype(np.int8)
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
        shifted = (np.asarray(ids, dtype=np.uint64) + self.hex_keys[j]) & np.uint64(0xFFFFFFFF)
        return _fmix32(shifted)


@functools.lru_cache(maxsize=8)
def _model(seed: int, config: SyntheticConfig) -> SyntheticModel:
    """Models are pure functions of (seed, config): built once, shared (do not mutate)."""
    return SyntheticModel(seed, config)


@dataclass
class SyntheticData:
    """Preprocessed synthetic rows with their cardinalities, planted structure and oracle."""

    dense: np.ndarray          # float32 (n, 13)
    sparse: np.ndarray         # int64 (n, 26), 0 <= id < cardinalities[j]
    labels: np.ndarray         # float32 (n,)
    cardinalities: list[int]
    planted: PlantedStructure
    logits: np.ndarray         # float32 (n,): the true logit of each row
    seed: int
    model: SyntheticModel = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)


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


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(28, -4, -4, dtype=np.uint32)


def _hex_array(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    n = len(values)
    chars = _HEX_DIGITS[(values[:, None] >> _SHIFTS) & np.uint32(15)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    validity = np.packbits(~missing, bitorder="little")
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()),
                                       pa.py_buffer(validity.tobytes()),
                                       int(missing.sum()))


def _arrow_chunk(model, chunk: dict) -> pa.Table:
    columns = [pa.array(chunk["labels"], type=pa.int8())]
    for k in range(NUM_DENSE):
        columns.append(pa.array(chunk["raw"][:, k], type=pa.int64(),
                                mask=chunk["dense_missing"][:, k]))
    for j in range(NUM_SPARSE):
        ids = chunk["sparse"][:, j]
        columns.append(_hex_array(model.hex_values(j, ids), ids == 0))
    return pa.Table.from_arrays(columns, names=list(COLUMN_NAMES))


def write_tsv(path: str | Path, n_rows: int, seed: int = 0, *, gzip: bool | None = None,
              config: SyntheticConfig | None = None) -> Path:
    """Write the rows of ``generate(n_rows, seed)`` in the raw Criteo format, streamed.

    gzip when ``gzip`` is true, or when it is ``None`` and the name ends with ``.gz``.
    Memory is bounded by one chunk of :data:`CHUNK_ROWS` rows whatever ``n_rows``.
    """
    return write_model_tsv(path, _model(int(seed), config or SyntheticConfig()), n_rows,
                           gzip=gzip)


def write_model_tsv(path: str | Path, model, n_rows: int, *, gzip: bool | None = None) -> Path:
    """Stream ``model.chunks(n_rows)`` as Criteo text (any model with ``chunks`` and
    ``hex_values``, e.g. the planted or the realistic one)."""
    path = Path(path)
    compress = path.suffix == ".gz" if gzip is None else gzip
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none",
                                  batch_size=CHUNK_ROWS)
    schema = _arrow_chunk(model, next(model.chunks(1))).schema
    with (gzip_module.open(path, "wb", compresslevel=6) if compress else open(path, "wb")) \
            as handle:
        with pa_csv.CSVWriter(handle, schema, write_options=options) as writer:
            for chunk in model.chunks(n_rows):
                writer.write_table(_arrow_chunk(model, chunk))
    return path
