"""A GPU-aware process pool that runs trials, each in its own process (paper section IV-F).

The training manager of the paper keeps every GPU busy: queued jobs start as soon as a
slot frees, and stage-2 jobs (sampled architectures) are queued while stage-1 jobs
(supernets) are still running. This module does that without the original runner's
defects: no shell, no marker files, no "any RuntimeError is out of memory", no hang when
a trial crashes, no unpickling of results.

Usage::

    pool = TrialPool(devices="auto", jobs_per_device=2)
    pool.submit(Job("stage1/lr=0.5", [sys.executable, "-m", "dnas_core.runner.worker", ...],
                    log_path=run_dir / "logs" / "stage1-lr0.5.log", timeout=3600))
    outcomes = pool.run(on_done=lambda o: ...)   # on_done may submit more jobs

or pull work only when a slot is free (e.g. claiming trials from a shared study)::

    pool.run(on_done=record, source=claim_next_job_or_none, on_poll=heartbeat)

The pool's parts: :mod:`~dnas_core.runner.jobs` (jobs, outcomes, the exit-code protocol),
:mod:`~dnas_core.runner.processes` (one trial process's life: sessions, process-group
signals, reaping, logs, signals in the parent) and :mod:`~dnas_core.runner.placement`
(device choice and the trial's environment); this module keeps the queue and the slots.

POSIX only (process groups, ``waitid``). Not thread-safe: call :meth:`TrialPool.submit`
before :meth:`TrialPool.run` or from its callbacks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from dnas_core.runner import devices as _devices
from dnas_core.runner.jobs import Job, Outcome, describe_rc, status_for
from dnas_core.runner.placement import pick_device, trial_env
from dnas_core.runner.processes import (
    append_log,
    leader_exited,
    log_tail,
    signal_group,
    signals_raise,
    start_process,
)

FreeMemoryFn = Callable[[Sequence[str]], Mapping[str, float]]


@dataclass
class _Queued:
    job: Job
    attempt: int  # number of the attempt this entry will be
    seconds: float  # wall time of earlier attempts


@dataclass
class _Running:
    job: Job
    attempt: int
    earlier_seconds: float
    device: str
    proc: subprocess.Popen[bytes]
    started: float
    log_offset: int
    term_sent: float | None = None
    kill_sent: float | None = None
    timed_out: bool = False


class TrialPool:
    """Runs :class:`Job` s in subprocesses on ``jobs_per_device`` slots per device.

    ``devices``: ``"auto"`` (every visible GPU, CPU when there is none), a list of GPU ids
    (``["0", "1"]``, ``"cuda:1"`` also accepted), or ``["cpu"]``.
    ``max_oom_retries``: how many times a trial that ran out of GPU memory is requeued.
    ``on_oom(job, attempt)``: returns the job to run next after attempt number ``attempt``
    ran out of memory (e.g. with a smaller batch); it must keep ``job.key``.
    ``poll_interval``: seconds between polls when nothing happens.
    ``kill_grace``: seconds between SIGTERM and SIGKILL when a trial is stopped.
    ``free_memory``: ``f(gpu_ids) -> {gpu_id: free MiB}``; default asks ``nvidia-smi``;
    ``lambda ids: {}`` places by running count only.
    """

    #: Seconds during which a started trial's ``memory_hint_mb`` counts as used on its GPU.
    settle_seconds = 30.0
    #: Seconds after SIGKILL after which a trial that still has not exited is abandoned.
    abandon_after = 60.0

    def __init__(self, devices: Sequence[str] | Literal["auto"] = "auto",
                 jobs_per_device: int = 1, max_oom_retries: int = 2,
                 on_oom: Callable[[Job, int], Job] | None = None,
                 poll_interval: float = 0.2, kill_grace: float = 5.0,
                 free_memory: FreeMemoryFn | None = None, devices_per_trial: int = 1) -> None:
        if jobs_per_device < 1:
            raise ValueError(f"jobs_per_device must be >= 1, got {jobs_per_device}")
        if max_oom_retries < 0:
            raise ValueError(f"max_oom_retries must be >= 0, got {max_oom_retries}")
        if poll_interval <= 0 or kill_grace < 0:
            raise ValueError("poll_interval must be > 0 and kill_grace >= 0")
        self.devices: list[str] = _devices.group_devices(_devices.resolve_devices(devices),
                                                         devices_per_trial)
        self.jobs_per_device = jobs_per_device
        self.max_oom_retries = max_oom_retries
        self.on_oom = on_oom
        self.poll_interval = poll_interval
        self.kill_grace = kill_grace
        self._free_memory: FreeMemoryFn = free_memory or _devices.free_memory_mb
        self._queue: deque[_Queued] = deque()
        self._running: list[_Running] = []
        self._active: set[str] = set()  # keys queued or running
        self._in_run = False
        cpu_slots = jobs_per_device * self.devices.count(_devices.CPU)
        self._cpu_threads = max(1, (os.cpu_count() or 1)
                                // max(1, cpu_slots * devices_per_trial))

    # ----------------------------------------------------------------- public API

    @property
    def slots(self) -> int:
        return self.jobs_per_device * len(self.devices)

    def submit(self, job: Job) -> None:
        """Queue ``job`` (at the back). Allowed from callbacks while :meth:`run` runs."""
        self._accept(job)
        self._queue.append(_Queued(job, 1, 0.0))

    def _accept(self, job: object) -> None:
        if not isinstance(job, Job):
            raise TypeError(f"expected a Job, got {type(job).__name__}")
        if job.key in self._active:
            raise ValueError(f"a job with key {job.key!r} is already queued or running")
        self._active.add(job.key)

    def run(self, on_done: Callable[[Outcome], None] | None = None,
            source: Callable[[], Job | None] | None = None,
            on_poll: Callable[[], None] | None = None) -> list[Outcome]:
        """Run until every submitted job (including jobs submitted from callbacks while
        running, with no barrier between them) has an outcome and ``source`` has nothing
        more; return the outcomes in the order they finished.

        ``on_done(outcome)`` is called once per job with its final outcome (not for
        requeued out-of-memory attempts). ``source()`` is asked for a job whenever a slot
        is free and no submitted or requeued job is waiting (a pull model: claim work only
        when it can start); ``None`` means "nothing now". It is asked again on every poll
        while trials run, and once more after the last one ends, before :meth:`run`
        returns. ``on_poll()`` is called about every ``poll_interval`` seconds (e.g. for
        heartbeats; rate-limit it yourself if it is expensive). An exception from a
        callback, a KeyboardInterrupt or SIGTERM/SIGHUP kills every running trial and
        propagates."""
        if self._in_run:
            raise RuntimeError("TrialPool.run is not re-entrant")
        self._in_run = True
        outcomes: list[Outcome] = []
        try:
            with signals_raise():
                try:
                    last_poll = time.monotonic()
                    while True:
                        busy = self._reap(outcomes, on_done)
                        busy = self._launch(outcomes, on_done, source) or busy
                        if not self._queue and not self._running:
                            break
                        if on_poll is not None and \
                                time.monotonic() - last_poll >= self.poll_interval:
                            last_poll = time.monotonic()
                            on_poll()
                        if not busy:
                            time.sleep(self.poll_interval)
                finally:
                    if self._running:
                        self._kill_all("pool interrupted")
        finally:
            self._in_run = False
        return outcomes

    # ------------------------------------------------------------------ launching

    def _busy_on(self, device: str) -> int:
        return sum(1 for r in self._running if r.device == device)

    def _pick_device(self, job: Job, free: Mapping[str, float]) -> str:
        candidates = [d for d in self.devices if self._busy_on(d) < self.jobs_per_device]
        now = time.monotonic()
        reserved: dict[str, float] = {}
        for r in self._running:
            if now - r.started < self.settle_seconds:
                reserved[r.device] = reserved.get(r.device, 0.0) + (r.job.memory_hint_mb or 0)
        busy = {d: self._busy_on(d) for d in candidates}
        return pick_device(job, candidates, busy, free, reserved)


    def _next_entry(self, source: Callable[[], Job | None] | None) -> _Queued | None:
        if self._queue:
            return self._queue.popleft()
        if source is not None:
            job = source()
            if job is not None:
                self._accept(job)
                return _Queued(job, 1, 0.0)
        return None

    def _launch(self, outcomes: list[Outcome], on_done: Callable[[Outcome], None] | None,
                source: Callable[[], Job | None] | None = None) -> bool:
        launched = False
        free: Mapping[str, float] | None = None
        # Every device has the same number of slots, so a free slot exists on some device
        # exactly when fewer trials run than there are slots.
        while len(self._running) < self.slots:
            entry = self._next_entry(source)
            if entry is None:
                break
            if free is None:
                gpus_open = [d for d in self.devices if d != _devices.CPU
                             and self._busy_on(d) < self.jobs_per_device]
                free = self._free_memory(gpus_open) if len(gpus_open) > 1 else {}
            device = self._pick_device(entry.job, free)
            launched = True
            try:
                self._start(entry, device)
            except OSError as exc:  # e.g. executable missing: that trial fails, others go on
                append_log(entry.job.log_path,
                                 f"=== dnas pool: {entry.job.key} attempt {entry.attempt} "
                                 f"could not start: {exc!r} ===\n")
                self._finish(Outcome(entry.job, "failed", None, entry.attempt,
                                     _devices.device_label(device), entry.seconds,
                                     f"could not start: {exc!r}"), outcomes, on_done)
        return launched


    def _start(self, entry: _Queued, device: str) -> None:
        job = entry.job
        stamp = datetime.now().isoformat(timespec="seconds")
        header = (f"=== dnas pool: {job.key} attempt {entry.attempt} on "
                  f"{_devices.device_label(device)} at {stamp}: {shlex.join(job.argv)} ===\n")
        env = trial_env(job, device, entry.attempt, self._cpu_threads, os.getpid())
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc, offset = start_process(job.argv, env, job.log_path, header)
            self._running.append(_Running(job, entry.attempt, entry.seconds, device, proc,
                                          time.monotonic(), offset))
        except BaseException:
            # Interrupted between start and bookkeeping: do not leave an orphan.
            if proc is not None and not any(r.proc is proc for r in self._running):
                signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
            raise


    # ------------------------------------------------------------------- reaping

    def _reap(self, outcomes: list[Outcome],
              on_done: Callable[[Outcome], None] | None) -> bool:
        changed = False
        now = time.monotonic()
        for run in list(self._running):
            if leader_exited(run.proc):
                signal_group(run.proc, signal.SIGKILL)  # leftovers of an exited trial
                rc = run.proc.wait()
                self._running.remove(run)
                self._completed(run, rc, outcomes, on_done)
                changed = True
            elif run.term_sent is None:
                if run.job.timeout is not None and now - run.started >= run.job.timeout:
                    run.timed_out = True
                    run.term_sent = now
                    signal_group(run.proc, signal.SIGTERM)
            elif now - run.term_sent >= self.kill_grace:
                signal_group(run.proc, signal.SIGKILL)
                run.kill_sent = run.kill_sent or now
                if now - run.kill_sent >= self.abandon_after:
                    # Unkillable (e.g. stuck in the driver): give up on it, never hang.
                    self._running.remove(run)
                    self._completed(run, None, outcomes, on_done, abandoned=True)
                    changed = True
        return changed

    def _completed(self, run: _Running, rc: int | None, outcomes: list[Outcome],
                   on_done: Callable[[Outcome], None] | None, abandoned: bool = False) -> None:
        seconds = run.earlier_seconds + (time.monotonic() - run.started)
        status = status_for(rc, run.timed_out)
        requeue = status == "oom" and run.attempt <= self.max_oom_retries
        note = describe_rc(rc)
        if run.timed_out:
            note += f" after exceeding its timeout of {run.job.timeout:g} s"
        if abandoned:
            note += f"; still alive {self.abandon_after:g} s after SIGKILL: abandoned"
        append_log(run.job.log_path,
                   f"\n=== dnas pool: {run.job.key} attempt {run.attempt} ended: "
                   f"{status} ({note}) after {time.monotonic() - run.started:.1f} s"
                   f"{'; requeued' if requeue else ''} ===\n")
        if requeue:
            job = run.job
            if self.on_oom is not None:
                job = self.on_oom(run.job, run.attempt)
                if not isinstance(job, Job) or job.key != run.job.key:
                    raise ValueError(f"on_oom must return a Job with key {run.job.key!r}")
            self._queue.append(_Queued(job, run.attempt + 1, seconds))
            return
        message = "" if status == "ok" else log_tail(run.job.log_path, run.log_offset, note)
        self._finish(Outcome(run.job, status, rc, run.attempt,
                             _devices.device_label(run.device), seconds, message),
                     outcomes, on_done)


    def _finish(self, outcome: Outcome, outcomes: list[Outcome],
                on_done: Callable[[Outcome], None] | None) -> None:
        self._active.discard(outcome.job.key)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)


    # ------------------------------------------------------------ stopping, signals

    def _kill_all(self, reason: str) -> None:
        """SIGTERM every running trial's group, wait up to ``kill_grace``, then SIGKILL
        and reap them all (the SIGKILL step runs even if this wait is interrupted)."""
        running, self._running = self._running, []
        for run in running:  # they get no outcome; their keys may be submitted again
            self._active.discard(run.job.key)
        try:
            for run in running:
                signal_group(run.proc, signal.SIGTERM)
            deadline = time.monotonic() + self.kill_grace
            while time.monotonic() < deadline and not all(leader_exited(r.proc)
                                                          for r in running):
                time.sleep(0.05)
        finally:
            for run in running:
                signal_group(run.proc, signal.SIGKILL)
            for run in running:
                with contextlib.suppress(Exception):
                    run.proc.wait(timeout=5)
                append_log(run.job.log_path,
                                 f"\n=== dnas pool: {run.job.key} attempt {run.attempt} "
                                 f"killed: {reason} ===\n")
