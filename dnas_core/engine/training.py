"""Training and evaluating one sampled architecture (paper Algorithm 1, second loop)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dnas_core.config.settings import LoaderSettings, TrainSettings
from dnas_core.engine.baseline import training_rows
from dnas_core.engine.budget import resolve_batch_size
from dnas_core.engine.data import BatchSource, DataBundle, to_device
from dnas_core.engine.loader import Loader
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm
from dnas_core.engine.progress import Reporter, Step
from dnas_core.engine.search import NonFiniteLoss, sparse_groups
from dnas_core.engine.steps import StepMonitor, autocast, compiled
from dnas_core.engine.tasks import Task
from dnas_core.engine.tblog import RunLogger


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The module's named weight groups if it defines them, else one group."""
    groups = getattr(model, "weight_param_groups", None)
    return groups() if callable(groups) else {"default": list(model.parameters())}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict(model: nn.Module, source: BatchSource,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs on a whole split, and the split's targets."""
    model.eval()
    outputs, targets = [], []
    for inputs, target in source.epoch(0):
        outputs.append(model(to_device(inputs, device)).float().cpu())
        targets.append(target.cpu())
    return torch.cat(outputs), torch.cat(targets)


def evaluate(model: nn.Module, source: BatchSource, task: Task,
             device: torch.device) -> dict[str, float]:
    """Metrics over a whole split, computed once on all predictions."""
    return task.metrics(*predict(model, source, device))


@dataclass
class TrainOutcome:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    best_state: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0
    params: int = 0  # set by the caller, which built the model


def train_sampled(model: nn.Module, data: DataBundle, task: Task, settings: TrainSettings, *,
                  seed: int, device: torch.device, logger: RunLogger | None = None,
                  on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                  reporter: Reporter | None = None, loader: LoaderSettings | None = None
                  ) -> TrainOutcome:
    """Train for ``settings.epochs`` (fewer with ``patience``), validating after each; keep
    the best epoch.

    ``on_epoch(epoch, val_metrics)`` lets a caller report intermediate values (Optuna
    pruning) and stop the trial by raising. ``reporter`` is told every batch and every
    validation (batch counts only).
    """
    logger = logger or RunLogger(None)
    model = model.to(device)
    rows = training_rows(data)
    budget = settings.batch_budget
    batch_size = resolve_batch_size(settings.batch_size, len(rows), budget.steps_per_epoch,
                                    budget.min_batch_size, budget.max_batch_size)
    batches = Loader(data.table, loader, device)
    train = batches.source(rows, batch_size, seed, "train")
    val = batches.source(data.splits["val"], settings.eval_batch_size, seed, "val",
                         shuffle=False)
    forward = compiled(model, settings.compile, "train.compile")
    optimizer = OptimizerSet(settings.optimizer, param_groups(model), sparse_groups(model),
                             "train.optimizer")
    outcome: TrainOutcome | None = None
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    step = 0
    for epoch in range(settings.epochs):
        model.train()
        optimizer.set_epoch(epoch)
        label = f"epoch {epoch + 1}/{settings.epochs}"
        monitor = StepMonitor(settings.check_every, device)
        for i, (inputs, targets) in enumerate(batches.stream(train, train.epoch_range(epoch))):
            with autocast(settings.precision, device):
                outputs = forward(inputs)
            loss = task.loss(outputs.float(), targets)
            monitor.add(step, loss)
            if monitor.due(step + 1, i == len(train) - 1):
                bad, means = monitor.read()
                if bad is not None:
                    raise NonFiniteLoss(f"non-finite training loss {bad[1]} in epoch {epoch}")
                logger.scalars(step + 1, means, prefix="train/")
            optimizer.zero_grad()
            loss.backward()
            if settings.clip_grad_norm is not None:
                clip_grad_norm(optimizer.params(), settings.clip_grad_norm)
            optimizer.step()
            step += 1
            if reporter is not None:
                reporter(Step("train", label, i + 1, len(train), epoch * len(train) + i + 1,
                              settings.epochs * len(train)))
        if reporter is not None:
            done = (epoch + 1) * len(train)
            reporter(Step("train", f"{label} validation", len(train), len(train), done,
                          settings.epochs * len(train)))
        metrics = evaluate(model, val, task, device)
        if not np.isfinite(metrics[task.primary]):
            raise NonFiniteLoss(f"non-finite validation {task.primary} in epoch {epoch}")
        history.append({"epoch": epoch, **metrics})
        logger.scalars(epoch, metrics, prefix="val/")
        if outcome is None or metrics[task.primary] < outcome.best_metrics[task.primary]:
            outcome = TrainOutcome(epoch, metrics,
                                   best_state=copy.deepcopy(model.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if settings.patience is not None and epoch - outcome.best_epoch >= settings.patience:
            break
    assert outcome is not None
    outcome.history = history
    outcome.batch_size = batch_size
    outcome.train_seconds = time.perf_counter() - started
    return outcome
