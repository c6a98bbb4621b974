"""Jobs, outcomes and the exit-code protocol between a trial process and the pool.

Exit-code protocol (trial process -> pool)
------------------------------------------
==================  =====  =========================================================
constant            value  meaning
==================  =====  =========================================================
``EXIT_OK``         0      success -> ``"ok"``
``EXIT_OOM``        75     CUDA out of memory: the trial caught
                           ``torch.cuda.OutOfMemoryError`` (that class only, never a
                           generic ``RuntimeError``) -> requeued at the back of the
                           queue up to ``max_oom_retries`` times (through ``on_oom``
                           if given), then ``"oom"``
``EXIT_NONFINITE``  76     NaN/inf loss or metric -> ``"nonfinite"`` (never ``"ok"``)
``EXIT_PRUNED``     77     pruned by Optuna -> ``"pruned"``
anything else              crash, including death by a signal -> ``"failed"``; the log
                           is kept and the other trials go on
==================  =====  =========================================================

:func:`exit_code_for` maps an exception to its code for the worker's ``except`` clause.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EXIT_OK = 0
EXIT_OOM = 75
EXIT_NONFINITE = 76
EXIT_PRUNED = 77

Status = Literal["ok", "failed", "timeout", "oom", "nonfinite", "pruned"]


@dataclass
class Job:
    """One trial to run.

    ``key`` is unique within a pool. ``argv`` is the command as a list of strings (never a
    shell string). ``log_path`` receives every attempt's output, appended. ``timeout`` is
    in seconds of wall time per attempt. ``env`` is added to the parent's environment.
    ``memory_hint_mb`` is the GPU memory the trial is expected to need (placement only).
    """

    key: str
    argv: list[str]
    log_path: Path
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    memory_hint_mb: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("Job.key must be a non-empty string")
        if isinstance(self.argv, (str, bytes)):
            raise TypeError(f"Job {self.key!r}: argv must be a list of strings, not a "
                            "string (trials are never run through a shell)")
        self.argv = [os.fspath(a) for a in self.argv]
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise TypeError(f"Job {self.key!r}: argv must be a non-empty list of strings")
        self.log_path = Path(self.log_path)
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"Job {self.key!r}: timeout must be positive, got {self.timeout}")
        bad = {k: v for k, v in self.env.items()
               if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise TypeError(f"Job {self.key!r}: env keys and values must be strings: {bad!r}")


@dataclass
class Outcome:
    """What became of a job.

    ``job`` is the last job that ran (after any ``on_oom`` changes). ``returncode`` is the
    last attempt's exit status (negative: killed by that signal; None: never started).
    ``device`` is ``"cpu"`` or ``"cuda:<physical id>"`` of the last attempt. ``seconds``
    is the wall time of all attempts together. ``message`` holds the last lines of the
    last attempt's log when the status is not ``"ok"``.
    """

    job: Job
    status: Status
    returncode: int | None
    attempts: int
    device: str
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def status_for(rc: int | None, timed_out: bool) -> Status:
    """The outcome status of one attempt from its exit status (a timeout wins)."""
    if timed_out:
        return "timeout"
    statuses: dict[int | None, Status] = {EXIT_OK: "ok", EXIT_OOM: "oom",
                                          EXIT_NONFINITE: "nonfinite", EXIT_PRUNED: "pruned"}
    return statuses.get(rc, "failed")


def describe_rc(rc: int | None) -> str:
    if rc is None:
        return "no exit status"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    names = {EXIT_OK: "exit 0", EXIT_OOM: "exit 75: CUDA out of memory",
             EXIT_NONFINITE: "exit 76: non-finite loss", EXIT_PRUNED: "exit 77: pruned"}
    return names.get(rc, f"exit {rc}")


def exit_code_for(exc: BaseException) -> int | None:
    """The protocol exit code for an exception raised in a trial, or None for a crash.

    ``torch.cuda.OutOfMemoryError`` -> EXIT_OOM (no other error counts as out of memory);
    ``dnas_core.engine.search.NonFiniteLoss`` -> EXIT_NONFINITE; ``optuna.TrialPruned`` ->
    EXIT_PRUNED. Modules are looked up only if the trial already imported them.
    """
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return EXIT_OOM
    search = sys.modules.get("dnas_core.engine.search")
    nonfinite = getattr(search, "NonFiniteLoss", None)
    if nonfinite is not None and isinstance(exc, nonfinite):
        return EXIT_NONFINITE
    optuna = sys.modules.get("optuna")
    pruned = getattr(optuna, "TrialPruned", None)
    if pruned is not None and isinstance(exc, pruned):
        return EXIT_PRUNED
    return None
