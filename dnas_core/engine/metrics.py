"""Evaluation metrics computed on whole splits (not averaged per batch)."""

from __future__ import annotations

import torch
from torch import Tensor

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
