"""Synthetic generator: determinism, statistics, raw format, TSV = arrays, planted structure."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from dnas_dlrm.data import (
    MISSING_ROW,
    UNKNOWN_ROW,
    CriteoArrays,
    PrepareOptions,
    SyntheticConfig,
    SyntheticModel,
    generate,
    prepare,
    synthetic_cardinalities,
    write_tsv,
)
from dnas_dlrm.data.schema import SPARSE_MISSING_RATES, dense_transform
from dnas_dlrm.data.splits import default_train_rows
from dnas_dlrm.data.synthetic import candidate_hash_sizes

ROWS, TRAIN = 60_000, 40_000


@pytest.fixture(scope="module")
def data():
    return generate(ROWS, seed=5)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# ----------------------------------------------------------------------------- basics
def test_deterministic_by_seed_with_prefix_property():
    a, b = generate(17_000, seed=1), generate(17_000, seed=1)
    for name in ("dense", "sparse", "labels", "logits"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    prefix = generate(3000, seed=1)
    np.testing.assert_array_equal(prefix.sparse, a.sparse[:3000])
    np.testing.assert_array_equal(prefix.labels, a.labels[:3000])
    other = generate(3000, seed=2)
    assert not np.array_equal(other.sparse, prefix.sparse)
    first, second = SyntheticModel(1), SyntheticModel(1)  # uncached builds agree
    assert first.intercept == second.intercept == a.planted.intercept
    for j, effect in first.effects.items():
        np.testing.assert_array_equal(effect, second.effects[j])
    np.testing.assert_array_equal(first.interactions[(0, 1)], second.interactions[(0, 1)])


def test_shapes_ranges_and_statistics(data):
    assert data.dense.dtype == np.float32 and data.dense.shape == (ROWS, 13)
    assert data.sparse.dtype == np.int64 and data.sparse.shape == (ROWS, 26)
    assert data.labels.dtype == np.float32 and set(np.unique(data.labels)) == {0.0, 1.0}
    assert (data.sparse >= 0).all() and (data.sparse < np.array(data.cardinalities)).all()
    assert (data.dense >= 0).all()
    assert 0.23 < data.labels.mean() < 0.27
    missing = (data.sparse == MISSING_ROW).mean(axis=0)
    np.testing.assert_allclose(missing, SPARSE_MISSING_RATES, atol=0.015)
    assert (data.dense[:, 11] == 0).mean() > 0.75  # I12: 77.4 % missing, plus zeros
    # Zipf-like: the most frequent value of C3 is far above uniform
    counts = np.bincount(data.sparse[:, 2])
    assert counts.max() > 100 * ROWS / data.cardinalities[2]


def test_cardinality_profile():
    cards = synthetic_cardinalities()
    assert min(cards) == 3 and cards[8] == 3  # C9 keeps its 3
    assert 20_000 <= max(cards) <= 40_000 and cards[2] == max(cards)  # C3 the largest
    assert cards[2] == 30_000 and cards[11] == 25_000 and cards[15] == 16_000
    assert cards[20] == 21_000
    assert [cards[j] for j in (9, 23, 25)] == [300, 900, 400]
    assert [cards[j] for j in (0, 1, 4, 7)] == [48] * 4
    smaller = synthetic_cardinalities(SyntheticConfig(scale=0.001))
    assert smaller[2] == 10_000 and smaller[3] < cards[3]
    assert candidate_hash_sizes(30_000) == [30_000, 3_000, 300, 30]
    assert candidate_hash_sizes(24) == [24, 2, 1, 1]


# ----------------------------------------------------------------------------- raw format
def test_write_tsv_raw_format(tmp_path):
    rows = 3000
    plain = write_tsv(tmp_path / "s.tsv", rows, seed=8)
    zipped = write_tsv(tmp_path / "s.tsv.gz", rows, seed=8)
    flagged = write_tsv(tmp_path / "s.bin", rows, seed=8, gzip=True)
    text = plain.read_text()
    assert gzip.decompress(zipped.read_bytes()).decode() == text
    assert gzip.decompress(flagged.read_bytes()).decode() == text
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == rows + 1
    reference = generate(rows, seed=8)
    raw = np.zeros((rows, 13), dtype=np.int64)
    negative_i2 = 0
    for i, line in enumerate(lines[:-1]):
        assert line.count("\t") == 39
        fields = line.split("\t")
        assert fields[0] in ("0", "1") and float(fields[0]) == reference.labels[i]
        for k, value in enumerate(fields[1:14]):
            if value:
                raw[i, k] = int(value)
        negative_i2 += fields[2].startswith("-")
        for j, value in enumerate(fields[14:]):
            assert (value == "") == (reference.sparse[i, j] == MISSING_ROW)
            if value:
                assert len(value) == 8 and value == value.lower()
                int(value, 16)
    assert 0.06 < negative_i2 / rows < 0.14
    np.testing.assert_array_equal(dense_transform(raw), reference.dense)


def relabelling(generated: np.ndarray, prepared: np.ndarray, shared: int | None = None) -> bool:
    """True if ``prepared`` is a function of ``generated`` that is one-to-one, except that
    several values may map to the ``shared`` row."""
    pairs = np.unique(np.stack([generated, prepared], axis=1), axis=0)
    functional = len(np.unique(pairs[:, 0])) == len(pairs)
    distinct = pairs if shared is None else pairs[pairs[:, 1] != shared]
    return functional and len(np.unique(distinct[:, 1])) == len(distinct)


@pytest.mark.parametrize("mode", ["vocab", "hash"])
def test_tsv_path_agrees_with_array_path(tmp_path, mode):
    rows = 6000
    path = write_tsv(tmp_path / "train.txt.gz", rows, seed=13)
    options = PrepareOptions(hash_size=2**31 - 1) if mode == "hash" else PrepareOptions()
    prepare(path, tmp_path / "out", options)
    table = CriteoArrays.open(tmp_path / "out")
    arrays = generate(rows, seed=13)
    np.testing.assert_array_equal(np.asarray(table.labels), arrays.labels)
    np.testing.assert_array_equal(np.asarray(table.dense), arrays.dense)
    sparse = np.asarray(table.sparse)
    n_train = default_train_rows(rows)
    for j in range(26):
        missing = arrays.sparse[:, j] == MISSING_ROW
        np.testing.assert_array_equal(sparse[:, j] == MISSING_ROW, missing)
        if mode == "hash":
            assert relabelling(arrays.sparse[:, j], sparse[:, j]), j
        else:
            assert relabelling(arrays.sparse[:, j], sparse[:, j], shared=UNKNOWN_ROW), j
            unknown = sparse[:, j] == UNKNOWN_ROW
            assert not unknown[:n_train].any()  # every training value is in the vocabulary
            assert not np.isin(arrays.sparse[unknown, j], arrays.sparse[:n_train, j]).any()


# ----------------------------------------------------------------------------- planted
def test_roles_partition_the_features(data):
    planted = data.planted
    groups = [planted.rich, planted.weak, planted.noise, planted.many_categories,
              planted.few_categories]
    assert sorted(j for g in groups for j in g) == list(range(26))
    assert planted.rich == (0, 1, 4, 7) and planted.rich_pairs == ((0, 1), (4, 7))
    assert planted.best_emb_dims()[0] == 32 and planted.best_emb_dims()[3] == 8
    fractions = planted.best_card_fractions()
    assert fractions[2] == 0.001 and fractions[3] == 0.001 and fractions[9] == 1.0
    assert fractions[5] is None
    assert planted.best_mlp_width() == 128 and planted.dense_ridges == 8
    assert "C1" in planted.summary()


def permuted(sparse: np.ndarray, column: int, seed: int = 0) -> np.ndarray:
    out = sparse.copy()
    out[:, column] = np.random.default_rng(seed).permutation(out[:, column])
    return out


def test_noise_features_do_not_enter_the_logit(data):
    model, sparse = data.model, data.sparse[:5000]
    dense = data.dense[:5000]
    logits = model.logits(dense, sparse)
    np.testing.assert_allclose(logits, data.logits[:5000], rtol=1e-6, atol=1e-5)
    for j in range(26):
        changed = model.logits(dense, permuted(sparse, j))
        if j in data.planted.noise:
            np.testing.assert_array_equal(changed, logits)
        else:
            assert np.abs(changed - logits).mean() > 0.05, j


def test_few_category_signal_survives_every_candidate_hash(data):
    model, sparse, dense = data.model, data.sparse[:5000], data.dense[:5000]
    logits = model.logits(dense, sparse)
    for j in data.planted.few_categories:
        for size in candidate_hash_sizes(data.cardinalities[j]):
            assert size % data.planted.few_groups[j] == 0
            hashed = sparse.copy()
            hashed[:, j] %= size
            np.testing.assert_allclose(model.logits(dense, hashed), logits, rtol=0, atol=1e-12)


def test_many_category_signal_vanishes_when_hashed(data):
    model = data.model
    for j in data.planted.many_categories:
        effect, p = model.effects[j], model.frequencies[j]
        card = data.cardinalities[j]
        assert np.sqrt(p @ effect**2) == pytest.approx(model.component_std["many"])
        for size in candidate_hash_sizes(card)[1:]:
            buckets = np.arange(card) % size
            mass = np.bincount(buckets, weights=p, minlength=size)
            mean = np.bincount(buckets, weights=p * effect, minlength=size) / mass
            np.testing.assert_allclose(mean, 0, atol=1e-12)


def test_rich_interactions_have_rank_r_with_a_flat_spectrum(data):
    rank = data.planted.rich_rank
    for table in data.model.interactions.values():
        singular = np.linalg.svd(table, compute_uv=False)
        assert (singular > 1e-9 * singular[0]).sum() == rank
        assert singular[rank - 1] / singular[0] > 0.999  # equal: dim d keeps d / rank of it
        energy = np.cumsum(singular**2) / np.sum(singular**2)
        assert energy[7] == pytest.approx(8 / rank)


def test_dense_part_is_a_width_k_relu_network(data):
    model = data.model
    dense = data.dense[:20_000].astype(np.float64)
    target = model.dense_logit(dense)
    z = (dense - model.dense_mean) / model.dense_std
    hidden = np.maximum(z @ model.ridge_w + model.ridge_b, 0)
    assert hidden.shape[1] == data.planted.dense_ridges
    np.testing.assert_allclose(hidden @ model.ridge_a + model.ridge_c, target)

    def r2(features: np.ndarray) -> float:
        x = np.column_stack([features, np.ones(len(features))])
        residual = target - x @ np.linalg.lstsq(x, target, rcond=None)[0]
        return 1 - residual.var() / target.var()

    assert r2(dense) < 0.9  # a linear model underfits
    assert r2(hidden) > 0.999999  # one hidden layer of width k represents it


def test_bayes_loss_well_below_base_rate(data):
    planted = data.planted
    assert planted.base_logloss == pytest.approx(0.5623, abs=1e-3)
    assert planted.bayes_logloss < planted.base_logloss - 0.15
    realized = log_loss(1 / (1 + np.exp(-data.logits.astype(np.float64))), data.labels)
    assert realized == pytest.approx(planted.bayes_logloss, abs=0.01)


def target_encoding_gain(ids: np.ndarray, labels: np.ndarray) -> float:
    """Held-out log-loss gain of a smoothed per-id click rate over the base rate."""
    y_train, y_test = labels[:TRAIN], labels[TRAIN:]
    base = y_train.mean()
    size = int(ids.max()) + 1
    counts = np.bincount(ids[:TRAIN], minlength=size)
    clicks = np.bincount(ids[:TRAIN], weights=y_train, minlength=size)
    rate = (clicks + 20 * base) / (counts + 20)
    return log_loss(np.full(len(y_test), base), y_test) - log_loss(rate[ids[TRAIN:]], y_test)


def test_planted_signal_is_learnable_and_noise_is_not(data):
    planted, sparse, labels = data.planted, data.sparse, data.labels
    for j in range(26):
        gain = target_encoding_gain(sparse[:, j], labels)
        if j in planted.noise:
            assert gain < 0.0005, j
        elif j in planted.weak + planted.many_categories + planted.few_categories:
            assert gain > 0.0015, j
    for j in planted.many_categories:  # hashing to card/10 destroys it
        assert target_encoding_gain(sparse[:, j] % (data.cardinalities[j] // 10), labels) < 0.0005
    for j in planted.few_categories:  # hashing to card/1000 keeps it, and learns it better
        hashed = sparse[:, j] % candidate_hash_sizes(data.cardinalities[j])[-1]
        assert target_encoding_gain(hashed, labels) > target_encoding_gain(sparse[:, j], labels)


def test_small_fit_beats_the_base_rate(data):
    """Logistic regression (one bias per category, linear in the dense features), fitted by
    Adam in NumPy on 40k rows, beats the base rate clearly on 20k held-out rows."""
    planted = data.planted
    columns = list(planted.weak + planted.many_categories + planted.few_categories)
    few = {j: candidate_hash_sizes(data.cardinalities[j])[-1] for j in planted.few_categories}
    sizes = [few.get(j, data.cardinalities[j]) for j in columns]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = np.stack([data.sparse[:, j] % size for j, size in zip(columns, sizes)], 1) + offsets
    x = np.column_stack([data.dense, np.ones(ROWS)]).astype(np.float64)
    y = data.labels.astype(np.float64)
    params = [np.zeros(sum(sizes)), np.zeros(x.shape[1])]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]

    def logits(rows: slice) -> np.ndarray:
        return params[0][ids[rows]].sum(1) + x[rows] @ params[1]

    for step in range(1, 101):
        residual = 1 / (1 + np.exp(-logits(slice(0, TRAIN)))) - y[:TRAIN]
        grads = [np.bincount(ids[:TRAIN].ravel(), weights=np.repeat(residual, len(columns)),
                             minlength=sum(sizes)) / TRAIN + 1e-5 * params[0],
                 x[:TRAIN].T @ residual / TRAIN]
        for p, g, (m, v) in zip(params, grads, moments):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= 0.1 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    held_out = log_loss(1 / (1 + np.exp(-logits(slice(TRAIN, None)))), y[TRAIN:])
    base = log_loss(np.full(ROWS - TRAIN, y[:TRAIN].mean()), y[TRAIN:])
    assert held_out < base - 0.04, (held_out, base)
