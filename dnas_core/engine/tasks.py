"""Task losses and metrics: what a domain's task hook returns.

The core ships the two tasks most domains need; a domain with another objective returns
its own object with the same three members.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dnas_core.engine import metrics


@runtime_checkable
class Task(Protocol):
    primary: str  # the metric to minimise when ranking architectures, e.g. "logloss"

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor: ...

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]: ...

    # Optional (the core checks with getattr): ``constant_outputs(train_targets, n)`` gives
    # the outputs of the constant predictor for ``n`` rows, the baseline of every report
    # and the line below which a trained model counts as diverged;
    # ``standard_errors(outputs, targets)`` the standard error of some metrics;
    # ``row_losses(outputs, targets)`` each row's share of the primary metric (its mean).


#: rows a bootstrap standard error is computed on (a seeded subset of a larger split)
SE_ROWS = 50_000


class BinaryClassification:
    """Outputs are click probabilities (after a sigmoid); metrics are the paper's.

    ``negative_rate`` is the fraction of negatives kept when the training data was
    downsampled: evaluation then corrects the probabilities back before scoring, so
    log loss and calibration are measured on the true click rate.
    """

    primary = "logloss"

    def __init__(self, negative_rate: float | None = None):
        if negative_rate is not None and not 0 < negative_rate <= 1:
            raise ValueError(f"negative_rate must lie in (0, 1], got {negative_rate}")
        self.negative_rate = negative_rate

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        # written out rather than F.binary_cross_entropy, which raises on NaN inputs: a
        # diverged model must surface as a non-finite loss, not as a crash
        p = outputs.reshape(-1).clamp(1e-7, 1 - 1e-7)
        y = targets.reshape(-1).to(p.dtype)
        return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()

    def constant_outputs(self, train_targets: Tensor, n: int) -> Tensor:
        """The training click rate for every row (before the downsampling correction,
        which :meth:`metrics` applies to it as to any model's outputs)."""
        return torch.full((n,), float(train_targets.double().mean()))

    def corrected(self, probs: Tensor) -> Tensor:
        if self.negative_rate is None or self.negative_rate == 1:
            return probs
        return probs / (probs + (1 - probs) / self.negative_rate)

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        probs = self.corrected(outputs.reshape(-1).detach())
        return {"logloss": metrics.log_loss(probs, targets),
                "auc": metrics.roc_auc(probs, targets),
                "calibration": metrics.calibration(probs, targets)}

    def row_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Each row's log loss (their mean is ``metrics()["logloss"]``): two models' rows
        differenced give the paired noise of their difference."""
        p = self.corrected(outputs.reshape(-1).detach()).double().clamp(1e-7, 1 - 1e-7)
        y = targets.reshape(-1).double()
        return -(y * torch.log(p) + (1 - y) * torch.log1p(-p))

    def standard_errors(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        """Standard errors of log loss (exact: a mean over rows) and AUC (bootstrap, on at
        most :data:`SE_ROWS` rows scaled to the whole split), so that a report can say
        which differences are larger than the noise of a finite test set."""
        probs = self.corrected(outputs.reshape(-1).detach()).double()
        y = targets.reshape(-1).double()
        losses = self.row_losses(outputs, targets)
        n = len(losses)
        out = {"logloss": float(losses.std() / n ** 0.5) if n > 1 else float("nan")}
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:SE_ROWS]
        scale = (len(rows) / n) ** 0.5 if n else 1.0
        out["auc"] = metrics.bootstrap_se(probs[rows], y[rows], metrics.roc_auc,
                                          n_resamples=100, seed=0) * scale
        return out


class MulticlassClassification:
    """Outputs are logits over classes; targets are class indices."""

    primary = "loss"

    def constant_outputs(self, train_targets: Tensor, n: int) -> Tensor:
        """Log class frequencies of the training targets, for every row."""
        counts = torch.bincount(train_targets.long().reshape(-1)).double() + 1e-3
        return torch.log(counts / counts.sum()).float().expand(n, -1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def row_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Each row's cross-entropy (their mean is ``metrics()["loss"]``)."""
        with torch.no_grad():
            return nn.functional.cross_entropy(outputs, targets, reduction="none").double()

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(nn.functional.cross_entropy(outputs, targets)),
                    "accuracy": metrics.accuracy(outputs, targets)}
