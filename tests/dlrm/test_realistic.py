"""The realistic generator: Criteo's difficulty (weak signal, click rate, heavy tails)."""

import numpy as np
import pytest
import scipy.sparse as sp

from dnas_dlrm.data.realistic import generate_realistic

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def data():
    return generate_realistic(20_000, seed=0)


def test_click_rate_and_heavy_tails(data):
    assert 0.2 <= data.labels.mean() <= 0.25
    _, counts = np.unique(data.sparse[:, 2], return_counts=True)  # C3: a huge table
    assert (counts <= 2).mean() > 0.8
    assert counts.max() > 200  # a few values are frequent
    assert data.sparse.max(axis=0).tolist() < data.cardinalities


def test_deterministic_by_seed_and_prefix(data):
    small = generate_realistic(5_000, seed=0)
    np.testing.assert_array_equal(small.sparse, data.sparse[:5_000])
    np.testing.assert_array_equal(small.labels, data.labels[:5_000])
    other = generate_realistic(5_000, seed=1)
    assert (other.sparse != small.sparse).mean() > 0.5


def test_logistic_regression_signal_is_weak(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    train = 16_000
    encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=2)
    x = sp.hstack([encoder.fit_transform(data.sparse[:train]), data.dense[:train] / 5]).tocsr()
    x_test = sp.hstack([encoder.transform(data.sparse[train:]),
                        data.dense[train:] / 5]).tocsr()
    model = LogisticRegression(C=0.1, max_iter=300).fit(x, data.labels[:train])
    auc = roc_auc_score(data.labels[train:], model.predict_proba(x_test)[:, 1])
    assert 0.68 <= auc <= 0.78
