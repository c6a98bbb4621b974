"""Evaluation metrics computed on whole splits (not averaged per batch), and their noise.

Architectures are ranked by these numbers, so a difference between two models only means
something if it exceeds the sampling noise of the evaluation rows: the bootstrap helpers
below give the standard errors that the report needs to say which differences do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

Metric = Callable[[Tensor, Tensor], float]

_EPS = 1e-7


def log_loss(probs: Tensor, labels: Tensor) -> float:
    """Mean binary cross-entropy (paper eq. 1, averaged)."""
    p = probs.double().clamp(_EPS, 1 - _EPS)
    y = labels.double()
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve via the rank-sum statistic, with ties given average ranks."""
    s = scores.double().flatten()
    y = labels.flatten() > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s)
    sorted_scores = s[order]
    # 1-based ranks, tied scores sharing the mean of their ranks
    ranks = torch.empty_like(s)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    rank_sum = float(ranks[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def calibration(probs: Tensor, labels: Tensor) -> float:
    """Sum of predictions over sum of labels (paper footnote 3): 1.0 is perfectly calibrated."""
    positives = float(labels.double().sum())
    return float(probs.double().sum()) / positives if positives else float("nan")


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).double().mean())


BINARY_METRICS: dict[str, Metric] = {"logloss": log_loss, "auc": roc_auc,
                                     "calibration": calibration}


def _check_rows(labels: Tensor, *predictions: Tensor) -> int:
    n = labels.numel()
    for p in predictions:
        if p.numel() != n:
            raise ValueError(f"predictions have {p.numel()} rows but labels have {n}")
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 rows, got {n}")
    return n


def _resamples(n: int, n_resamples: int, seed: int) -> list[Tensor]:
    """Row indices of each resample, drawn with replacement: a pure function of the seed,
    so two calls with the same seed (and two models on the same rows) see the same draws."""
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples}")
    rng = np.random.default_rng(seed)
    # one resample at a time: a (n_resamples, n) index matrix of a large split would not fit
    return [torch.from_numpy(rng.integers(0, n, size=n)) for _ in range(n_resamples)]


def _spread(values: list[float]) -> float:
    """Standard deviation of the bootstrap replicates, skipping undefined ones (an AUC of a
    resample that drew a single class)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.std(ddof=1)) if len(finite) >= 2 else float("nan")


def bootstrap_se(probs: Tensor, labels: Tensor, metric: Metric, *, n_resamples: int = 200,
                 seed: int = 0) -> float:
    """Standard error of ``metric(probs, labels)`` over resamples of the rows.

    The evaluation split is a sample of the traffic; resampling its rows with replacement
    estimates how much the metric would move on another sample of the same size, without
    assuming a distribution (AUC and calibration are not means of per-row terms).
    """
    p, y = probs.reshape(-1), labels.reshape(-1)
    n = _check_rows(y, p)
    return _spread([metric(p[i], y[i]) for i in _resamples(n, n_resamples, seed)])


def paired_difference_se(probs_a: Tensor, probs_b: Tensor, labels: Tensor, metric: Metric, *,
                         n_resamples: int = 200, seed: int = 0) -> float:
    """Standard error of ``metric(a) - metric(b)`` for two models scored on the same rows.

    Both models are rescored on the same resampled rows, so the row-to-row difficulty they
    share cancels: for similar models this is far smaller than combining their separate
    standard errors, and it is the right yardstick for "is A really better than B".
    """
    a, b, y = probs_a.reshape(-1), probs_b.reshape(-1), labels.reshape(-1)
    n = _check_rows(y, a, b)
    return _spread([metric(a[i], y[i]) - metric(b[i], y[i])
                    for i in _resamples(n, n_resamples, seed)])


def binary_metrics_with_se(probs: Tensor, labels: Tensor, n_resamples: int = 200,
                           seed: int = 0) -> dict[str, tuple[float, float]]:
    """``{name: (value, standard error)}`` for log loss, AUC and calibration.

    ``probs`` must already be on the true click rate (see
    ``BinaryClassification.corrected``), as for the metrics themselves.
    """
    p, y = probs.reshape(-1), labels.reshape(-1)
    return {name: (metric(p, y), bootstrap_se(p, y, metric, n_resamples=n_resamples,
                                              seed=seed))
            for name, metric in BINARY_METRICS.items()}
