"""Optimizers by name over named parameter groups, LR schedules, sparse-safe clipping."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from dnas_core.config.settings import OptimizerSettings
from dnas_core.config.validate import ConfigError, Origins, fail

# Optimizers whose step() accepts sparse gradients (embedding tables with sparse=True).
SPARSE_CAPABLE = {"SGD", "SparseAdam", "Adagrad"}

# Adagrad's sparse step warns on every call that torch skips its own invariant checks; the
# gradients it builds come from nn.Embedding and are well formed
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def optimizer_class(name: str, where: str,
                    origins: Origins | None = None) -> type[torch.optim.Optimizer]:
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) \
            or cls is torch.optim.Optimizer:
        known = sorted(n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                       and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                       and n != "Optimizer")
        raise fail(where, origins or {}, f"unknown optimizer {name!r}; expected one of "
                                         f"{', '.join(known)}")
    return cls


def check_optimizer(settings: OptimizerSettings, where: str, origins: Origins) -> None:
    """Build each optimizer these settings name (the base one and every group's) over a
    dummy parameter, so an unknown name or an argument it does not take fails when the
    run is planned, not after a supernet has trained."""
    parts = [(where, settings.name, settings.lr, settings.args)] + [
        (f"{where}.groups.{group}", o.optimizer or settings.name,
         settings.lr if o.lr is None else o.lr, settings.args if o.args is None else o.args)
        for group, o in settings.groups.items()]
    for path, name, lr, args in parts:
        cls: Any = optimizer_class(
            name, f"{path}.optimizer" if path != where else f"{where}.name", origins)
        try:
            cls([nn.Parameter(torch.zeros(1))], lr=lr, **args)
        except (TypeError, ValueError) as exc:
            raise fail(f"{path}.args", origins, f"{name} refuses these arguments "
                                                f"({args}): {exc}") from None


@dataclass(frozen=True)
class GroupOptimizer:
    """What one named parameter group is trained with, overrides applied."""

    name: str
    lr: float
    lr_decay: float
    args: dict[str, Any]
    #: the key a wrong ``name`` is reported under
    where: str


def group_settings(settings: OptimizerSettings, group: str,
                   where: str = "optimizer") -> GroupOptimizer:
    """The optimizer, LR, decay and arguments of ``group``: its override in
    ``settings.groups`` where it gives one, else the base settings."""
    override = settings.groups.get(group)
    name = override.optimizer if override and override.optimizer else settings.name
    args = dict(override.args) if override and override.args is not None \
        else dict(settings.args)
    lr = override.lr if override and override.lr is not None else settings.lr
    decay = (override.lr_decay if override and override.lr_decay is not None
             else settings.lr_decay)
    key = (f"{where}.groups.{group}.optimizer" if override and override.optimizer
           else f"{where}.name")
    return GroupOptimizer(name, lr, decay, args, key)


class OptimizerSet:
    """One optimizer per distinct (name, args) over named parameter groups, stepped as one.

    Each group keeps its own initial LR and decay, so ``set_epoch`` can apply
    ``lr * decay ** epoch`` per group (the paper's ``weights_lr_lambdas``).
    """

    def __init__(self, settings: OptimizerSettings, groups: Mapping[str, list[nn.Parameter]],
                 sparse_groups: Iterable[str] = (), where: str = "optimizer"):
        unknown = set(settings.groups) - set(groups)
        if unknown:
            raise ConfigError(f"{where}.groups: unknown parameter group "
                              f"{sorted(unknown)[0]!r}; this model has {sorted(groups)}")
        sparse_groups = set(sparse_groups)
        by_optimizer: dict[tuple[str, str], list[dict[str, Any]]] = {}
        args_of: dict[tuple[str, str], dict[str, Any]] = {}
        self._schedule: dict[str, tuple[float, float]] = {}
        for group_name, params in groups.items():
            if not params:
                continue
            group = group_settings(settings, group_name, where)
            name, args, lr, decay = group.name, group.args, group.lr, group.lr_decay
            cls_where = group.where
            optimizer_class(name, cls_where)
            if group_name in sparse_groups and name not in SPARSE_CAPABLE:
                raise ConfigError(
                    f"{cls_where}: {name} cannot step the sparse gradients of parameter group "
                    f"{group_name!r}; use one of {sorted(SPARSE_CAPABLE)} for it, e.g. "
                    f"{where}.groups.{group_name}.optimizer=SparseAdam")
            key = (name, repr(sorted(args.items())))
            pg = {"params": params, "lr": lr, "name": group_name}
            by_optimizer.setdefault(key, []).append(pg)
            args_of[key] = args
            self._schedule[group_name] = (lr, decay)
        self.optimizers: list[torch.optim.Optimizer] = []
        for key, param_groups in by_optimizer.items():
            cls = optimizer_class(key[0], where)
            try:
                self.optimizers.append(cls(param_groups, **args_of[key]))
            except TypeError as exc:
                raise ConfigError(f"{where}.args: {exc}") from exc

    def _groups(self) -> list[dict[str, Any]]:
        # looked up each time: load_state_dict replaces the param-group dicts
        return [pg for opt in self.optimizers for pg in opt.param_groups]

    def set_epoch(self, epoch: float) -> None:
        for pg in self._groups():
            lr, decay = self._schedule[pg["name"]]
            pg["lr"] = lr * decay ** epoch

    def lrs(self) -> dict[str, float]:
        return {pg["name"]: pg["lr"] for pg in self._groups()}

    def params(self) -> list[nn.Parameter]:
        return [p for pg in self._groups() for p in pg["params"]]

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def scale_lrs(settings: OptimizerSettings, factor: float) -> OptimizerSettings:
    """The same optimizer with every learning rate (the base and each group's) times
    ``factor``: how a diverged training is retried."""
    groups = {name: replace(group, lr=None if group.lr is None else group.lr * factor)
              for name, group in settings.groups.items()}
    return replace(settings, lr=settings.lr * factor, groups=groups)


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global L2 norm of dense and sparse gradients alike; returns the norm (a
    tensor on the gradients' device: reading it would make the host wait, see
    :mod:`dnas_core.engine.steps`, so the scale is applied on the device, 1 when the norm
    is within ``max_norm``).

    ``torch.nn.utils.clip_grad_norm_`` rejects sparse gradients; a sparse gradient may hold
    repeated indices, so its norm is taken after coalescing, and the coalesced gradient
    replaces the parameter's: the optimizer's sparse step would otherwise coalesce again
    (Adagrad) or add every repeated row (SGD), which for a supernet's candidate tables
    cost more than the rest of the step. The scale is computed in float64 and rounded
    once to the gradients' type, as a Python float would be.
    """
    with_grads = [p for p in params if p.grad is not None]
    if not with_grads:
        return torch.zeros(())
    for p in with_grads:
        grad = p.grad
        if grad is not None and grad.is_sparse and not grad.is_coalesced():
            p.grad = grad.coalesce()
    grads = [p.grad for p in with_grads if p.grad is not None]
    norms = [(g._values() if g.is_sparse else g).norm(2) for g in grads]
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    coef = (max_norm / (total.double() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total
