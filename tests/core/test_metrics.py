"""The metrics that rank architectures, checked against scikit-learn, and their bootstrap
standard errors checked against analytic ones (issue 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dnas_core.engine import metrics
from dnas_core.engine.tasks import BinaryClassification


def clicks(n: int, seed: int, low: float = 0.01, high: float = 0.99):
    """Probabilities in [low, high] and labels drawn from them (a calibrated model)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(low, high, size=n)
    y = (rng.uniform(size=n) < p).astype(np.float64)
    return p, y


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_loss_matches_sklearn(seed):
    p, y = clicks(5000, seed)
    assert metrics.log_loss(t(p), t(y)) == pytest.approx(sk_log_loss(y, p), abs=1e-9)
    # float32 inputs (what models output) are scored in double
    assert metrics.log_loss(t(p).float(), t(y).float()) == pytest.approx(
        sk_log_loss(y, p.astype(np.float32).astype(np.float64)), abs=1e-9)


def test_log_loss_clamps_certain_wrong_predictions():
    loss = metrics.log_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert loss == pytest.approx(-math.log(1e-7), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn(seed):
    p, y = clicks(5000, seed)
    assert metrics.roc_auc(t(p), t(y)) == pytest.approx(roc_auc_score(y, p), abs=1e-9)


def test_roc_auc_with_ties_matches_sklearn():
    p, y = clicks(4000, 3)
    tied = np.round(p, 1)  # 11 distinct scores: most rows tie with many others
    assert len(np.unique(tied)) <= 11
    assert metrics.roc_auc(t(tied), t(y)) == pytest.approx(roc_auc_score(y, tied), abs=1e-9)
    # all scores equal: every pair is a tie, AUC exactly one half
    assert metrics.roc_auc(torch.full((10,), 0.3), t(y[:10])) == pytest.approx(0.5, abs=1e-12)
    # a hand-counted case: pos {0.5, 0.8}, neg {0.5, 0.2}: pairs 1 + 1 + 0.5 + 1 = 3.5 of 4
    assert metrics.roc_auc(torch.tensor([0.5, 0.8, 0.5, 0.2]),
                           torch.tensor([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.875)


def test_roc_auc_of_one_class_is_nan():
    scores = torch.tensor([0.1, 0.4, 0.9])
    assert math.isnan(metrics.roc_auc(scores, torch.ones(3)))
    assert math.isnan(metrics.roc_auc(scores, torch.zeros(3)))


def test_calibration_is_predicted_over_observed_clicks():
    p, y = clicks(5000, 4)
    assert metrics.calibration(t(p), t(y)) == pytest.approx(p.sum() / y.sum(), abs=1e-9)
    assert metrics.calibration(t(p) * 2, t(y)) == pytest.approx(2 * p.sum() / y.sum(), abs=1e-9)
    assert math.isnan(metrics.calibration(t(p), torch.zeros(len(p))))


def test_binary_task_metrics_without_negative_rate():
    p, y = clicks(3000, 5)
    got = BinaryClassification().metrics(t(p).float().view(-1, 1), t(y).float())
    p32 = p.astype(np.float32).astype(np.float64)
    assert got["logloss"] == pytest.approx(sk_log_loss(y, p32), abs=1e-9)
    assert got["auc"] == pytest.approx(roc_auc_score(y, p32), abs=1e-9)
    assert got["calibration"] == pytest.approx(p32.sum() / y.sum(), abs=1e-6)


def test_binary_task_metrics_undo_negative_downsampling():
    """A model trained on data keeping a fraction r of the negatives sees odds inflated by
    1/r; the task must score the probabilities corrected back to the true rate."""
    rate = 0.25
    p_true, y = clicks(3000, 6, low=0.005, high=0.3)
    inflated = p_true / (p_true + (1 - p_true) * rate)  # what the ideal model predicts
    task = BinaryClassification(negative_rate=rate)
    np.testing.assert_allclose(task.corrected(t(inflated)).numpy(), p_true, rtol=1e-12)
    got = task.metrics(t(inflated), t(y))
    assert got["logloss"] == pytest.approx(sk_log_loss(y, p_true), abs=1e-9)
    assert got["calibration"] == pytest.approx(p_true.sum() / y.sum(), abs=1e-9)
    assert got["auc"] == pytest.approx(roc_auc_score(y, inflated), abs=1e-9)  # monotone
    uncorrected = BinaryClassification().metrics(t(inflated), t(y))
    assert uncorrected["logloss"] > got["logloss"] + 0.05
    assert uncorrected["calibration"] > 1.5 * got["calibration"]
    assert BinaryClassification(negative_rate=1.0).metrics(t(inflated), t(y)) == uncorrected
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="negative_rate"):
            BinaryClassification(negative_rate=bad)


# ----- bootstrap standard errors ------------------------------------------------------------
def test_bootstrap_se_of_log_loss_matches_the_standard_error_of_a_mean():
    p, y = clicks(10_000, 7)
    per_row = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    analytic = per_row.std(ddof=1) / math.sqrt(len(p))
    se = metrics.bootstrap_se(t(p), t(y), metrics.log_loss, n_resamples=200, seed=0)
    assert se == pytest.approx(analytic, rel=0.15), (se, analytic)


def test_bootstrap_se_of_calibration_matches_the_delta_method():
    p, y = clicks(10_000, 8, low=0.01, high=0.4)
    ratio = p.mean() / y.mean()
    # Var(mean p / mean y) ~ Var(p - R y) / (n mean(y)^2)
    analytic = (p - ratio * y).std(ddof=1) / (math.sqrt(len(p)) * y.mean())
    se = metrics.bootstrap_se(t(p), t(y), metrics.calibration, n_resamples=200, seed=0)
    assert se == pytest.approx(analytic, rel=0.15), (se, analytic)


def test_bootstrap_is_deterministic_by_seed():
    p, y = clicks(10_000, 9)
    first = metrics.bootstrap_se(t(p), t(y), metrics.log_loss, n_resamples=200, seed=3)
    assert metrics.bootstrap_se(t(p), t(y), metrics.log_loss, n_resamples=200,
                                seed=3) == first
    other = metrics.bootstrap_se(t(p), t(y), metrics.log_loss, n_resamples=200, seed=4)
    assert other != first and other == pytest.approx(first, rel=0.3)


def test_paired_difference_se_is_smaller_than_unpaired_for_correlated_models():
    p, y = clicks(10_000, 10)
    rng = np.random.default_rng(11)
    logit = np.log(p / (1 - p))
    q = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.2, size=len(p)))))  # a close variant
    a, b, labels = t(p), t(q), t(y)
    paired = metrics.paired_difference_se(a, b, labels, metrics.log_loss, seed=0)
    unpaired = math.hypot(metrics.bootstrap_se(a, labels, metrics.log_loss, seed=0),
                          metrics.bootstrap_se(b, labels, metrics.log_loss, seed=1))
    assert 0 < paired < 0.5 * unpaired, (paired, unpaired)
    # against its analytic value: the SE of the mean per-row loss difference
    la = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    lb = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    analytic = (la - lb).std(ddof=1) / math.sqrt(len(p))
    assert paired == pytest.approx(analytic, rel=0.15), (paired, analytic)
    # a model compared with itself differs by exactly nothing on every resample
    assert metrics.paired_difference_se(a, a, labels, metrics.roc_auc, n_resamples=20) == 0.0


def test_binary_metrics_with_se():
    p, y = clicks(4000, 12)
    got = metrics.binary_metrics_with_se(t(p), t(y), n_resamples=50, seed=2)
    assert set(got) == {"logloss", "auc", "calibration"}
    assert got["logloss"][0] == pytest.approx(sk_log_loss(y, p), abs=1e-9)
    assert got["auc"][0] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    for name, (_, se) in got.items():
        assert se == metrics.bootstrap_se(t(p), t(y), metrics.BINARY_METRICS[name],
                                          n_resamples=50, seed=2)
        assert 0 < se < 0.05, (name, se)


def test_bootstrap_skips_resamples_where_auc_is_undefined():
    # one positive among 30 rows, ranked mid-way: about a third of resamples draw it not at
    # all (AUC undefined), the others score it above however many negatives they drew
    y = torch.zeros(30)
    y[15] = 1
    se = metrics.bootstrap_se(torch.linspace(0, 1, 30), y, metrics.roc_auc, n_resamples=50)
    assert math.isfinite(se) and se > 0
    assert math.isnan(metrics.bootstrap_se(torch.rand(5), torch.zeros(5), metrics.roc_auc,
                                           n_resamples=10))


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="rows"):
        metrics.bootstrap_se(torch.rand(5), torch.ones(4), metrics.log_loss)
    with pytest.raises(ValueError, match="rows"):
        metrics.paired_difference_se(torch.rand(5), torch.rand(4), torch.ones(5),
                                     metrics.log_loss)
    with pytest.raises(ValueError, match="n_resamples"):
        metrics.bootstrap_se(torch.rand(5), torch.ones(5), metrics.log_loss, n_resamples=1)
