"""A trial's progress as a small file in its own trial directory, written and read back.

Trials may run on other machines than the coordinator that watches them, so they report
through the one thing every worker shares with its trials: the trial directory.
:class:`ProgressWriter` turns the engine's per-batch :class:`~dnas_core.engine.progress.Step`
into ``progress.json``, replaced atomically (``os.replace``) and at most once per
``min_interval`` seconds (a phase's first and last step at once), so a reader never sees
half a file and the trial pays a clock read per batch. :func:`read_progress` reads it
back, tolerating a file that is missing or unreadable (the trial may not have started).

Times in the file are the trial's own wall clock; the time left is computed from them
alone, so clocks of different machines need not agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnas_core.engine.progress import Step, time_left

PROGRESS_FILE = "progress.json"

#: seconds between two writes of a trial's progress file (at most two a second)
MIN_INTERVAL = 0.5


@dataclass(frozen=True)
class TrialProgress:
    """What a trial last wrote: its phase, where it stands, and its time left."""

    phase: str
    label: str = ""
    batch: int = 0
    batches: int = 0
    fraction: float = 0.0
    left: float | None = None  # seconds, at the rate of this attempt so far

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "label": self.label, "batch": self.batch,
                "batches": self.batches, "fraction": self.fraction, "left": self.left}


class ProgressWriter:
    """A :data:`~dnas_core.engine.progress.Reporter` that writes ``progress.json``.

    The rate is measured from the first step of a phase (a resumed search starts part of
    the way in; a training retried at a smaller learning rate starts again from zero)."""

    def __init__(self, directory: Path, min_interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(directory) / PROGRESS_FILE
        self.min_interval = min_interval
        self.clock = clock
        self.writes = 0
        self._last_write: float | None = None
        self._phase: str | None = None
        self._start: tuple[float, float] = (0.0, 0.0)  # (clock, fraction) the rate is from
        self._fraction = 0.0

    def phase(self, name: str, label: str = "") -> None:
        """A phase without batch counts (building the data, testing): written at once."""
        self._phase = name
        self._write(TrialProgress(name, label))

    def __call__(self, step: Step) -> None:
        now = self.clock()
        fraction = step.fraction
        if step.phase != self._phase or fraction < self._fraction:
            self._phase = step.phase
            self._start = (now, fraction)
            self._last_write = None  # a new phase is shown at once
        self._fraction = fraction
        last = step.done == step.total  # the end of a phase is always shown
        if not last and self._last_write is not None and \
                now - self._last_write < self.min_interval:
            return
        started, from_fraction = self._start
        left = time_left(now - started, fraction, from_fraction)
        self._write(TrialProgress(step.phase, step.label, step.batch, step.batches, fraction,
                                  None if left is None else round(left, 1)), now)

    def _write(self, progress: TrialProgress, now: float | None = None) -> None:
        self._last_write = self.clock() if now is None else now
        self.writes += 1
        record = {**progress.to_dict(), "updated": time.time()}
        tmp = self.path.with_name(f"{PROGRESS_FILE}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # progress is never a reason to fail a trial
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)


def read_progress(directory: Path) -> TrialProgress | None:
    """The progress a trial last wrote in ``directory``, or None if there is none yet."""
    try:
        data = json.loads((Path(directory) / PROGRESS_FILE).read_text())
        return TrialProgress(str(data["phase"]), str(data.get("label", "")),
                             int(data.get("batch", 0)), int(data.get("batches", 0)),
                             float(data.get("fraction", 0.0)),
                             None if data.get("left") is None else float(data["left"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
