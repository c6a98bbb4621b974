"""What a training step needs to run at device speed: no host reads, bf16, compile.

Reading a device value on the host (``float(loss)``, ``if not torch.isfinite(loss)``)
makes the host wait until the device has finished every queued kernel, so the next step
cannot be queued while this one runs. :class:`StepMonitor` keeps the finiteness check and
the logged means on the device and reads them once every ``check_every`` steps (and at the
end of every chunk or epoch); the first non-finite step is still reported exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast of a forward pass for ``precision: bf16`` (a no-op for ``fp32``).

    Losses are computed outside it, in float32, from the outputs cast back: a probability
    clamped to ``1 - 1e-7`` is 1 in bf16, whose log loss is infinite.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class _Compiled:
    """A module's forward through ``torch.compile``, whose compile errors name the setting."""

    def __init__(self, module: nn.Module, where: str):
        self.compiled = torch.compile(module)
        self.where = where

    def __call__(self, *args: Any) -> Any:
        try:
            return self.compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            raise RuntimeError(f"{self.where}: torch.compile cannot compile this model "
                               f"({reason}); set {self.where}: false") from None


def compiled(module: nn.Module, enabled: bool, where: str) -> Callable[..., Any]:
    """The forward of ``module`` through ``torch.compile`` when enabled (sharing its
    parameters), else the module itself; the caller keeps using ``module`` for everything
    else. torch 2.13 cannot compile every model (the sparse backward of ``embedding_bag``,
    which DLRM's ``emb_card`` tables use on torch's kernel, fails): that error names
    ``where``, the setting."""
    return _Compiled(module, where) if enabled else module


class StepMonitor:
    """Non-finite losses and running means of logged values, accumulated on the device.

    ``add`` costs a few tiny device operations and never waits; ``read`` (when ``due``)
    returns the first non-finite step with its loss, and the means since the last read.
    """

    def __init__(self, every: int, device: torch.device):
        self.every = every
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self._sums: Tensor | None = None
        self._names: list[str] = []
        self._count = 0
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._bad_value = torch.zeros((), dtype=torch.float32, device=self.device)

    def due(self, step: int, last: bool) -> bool:
        return last or step % self.every == 0

    def add(self, step: int, loss: Tensor, **logged: Tensor) -> None:
        """Record ``loss`` (checked for finiteness, logged as ``loss``) and other values
        (their means are logged) of step number ``step``."""
        loss = loss.detach().float()
        new = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(new, step, self._first_bad)
        self._bad_value = torch.where(new, loss, self._bad_value)
        values = torch.stack([loss, *(v.detach().float().mean() for v in logged.values())])
        self._sums = values if self._sums is None else self._sums + values
        self._names = ["loss", *logged]
        self._count += 1

    def read(self) -> tuple[tuple[int, float] | None, dict[str, float]]:
        """``((first bad step, its loss) or None, means)`` since the last read: one wait."""
        assert self._sums is not None, "read before any step was added"
        packed = torch.cat([self._sums.double() / self._count,
                            self._first_bad.double().reshape(1),
                            self._bad_value.double().reshape(1)]).tolist()
        means = dict(zip(self._names, packed[:len(self._names)], strict=True))
        first, value = int(packed[-2]), packed[-1]
        self._reset()
        return ((first, value) if first >= 0 else None), means
