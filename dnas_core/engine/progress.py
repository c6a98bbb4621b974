"""Where a training loop stands, told to whoever watches it, and the arithmetic of time left.

The search and training loops call a :data:`Reporter` once per batch with a :class:`Step`
made of batch counts only: reporting reads no tensor, so it adds no host-device sync and
cannot change a result. What to do with a step (write a progress file, draw a bar) is the
caller's business; :mod:`dnas_core.runner.progress` throttles it into a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One point of a loop: ``batch`` of ``batches`` in the current chunk or epoch
    (``label``, e.g. ``"chunk 3/8 weights"``), ``done`` of ``total`` batches in the whole
    phase (``"search"`` or ``"train"``)."""

    phase: str
    label: str
    batch: int
    batches: int
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


Reporter = Callable[[Step], None]


def time_left(elapsed: float, fraction: float, fraction_start: float = 0.0) -> float | None:
    """Seconds left if the work goes on at the rate seen so far: ``elapsed`` seconds took
    the work from ``fraction_start`` (above 0 when a run resumed) to ``fraction`` of the
    whole. ``None`` until some work is done."""
    gained = fraction - fraction_start
    if gained <= 0 or elapsed <= 0:
        return None
    return max(0.0, elapsed * (1.0 - fraction) / gained)


def format_duration(seconds: float | None) -> str:
    """``1:02:03``, ``2:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
