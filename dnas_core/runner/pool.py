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

Process model
-------------
* Every attempt of a trial is ``subprocess.Popen(job.argv, ...)``: an argument list, never a
  shell string, in a new session (its own process group), stdin from ``/dev/null``,
  stdout and stderr appended to ``job.log_path`` after a header line naming the attempt,
  device and argv (and a footer line with the result).
* The parent polls ``Popen`` (``waitid`` without reaping, then kills whatever is left of
  the trial's process group, then reaps): a trial that exits never leaves grandchildren.
* A trial past ``job.timeout`` seconds gets SIGTERM on its whole process group, then
  SIGKILL after ``kill_grace`` seconds; it is reported ``"timeout"`` and not retried.
* KeyboardInterrupt, SIGTERM or SIGHUP in the parent (or an exception from a callback)
  kills every running trial the same way (SIGTERM, grace, SIGKILL) before the exception
  propagates; SIGTERM/SIGHUP surface as :class:`Terminated` (a ``SystemExit``). The
  handlers are installed only while :meth:`TrialPool.run` runs in the main thread and only
  over the default disposition (``nohup``'s SIG_IGN and the caller's handlers stay).
* A trial that survives SIGKILL for ``abandon_after`` seconds (stuck in the kernel) is
  reported and abandoned rather than waited on forever. If the parent itself is killed
  with SIGKILL it cannot clean up; a trial that calls :func:`watch_parent` then ends
  itself.

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

Environment given to each trial (on top of the parent's environment and ``job.env``)
-------------------------------------------------------------------------------------
* ``CUDA_VISIBLE_DEVICES``: the slot's GPU id, or ``""`` on a CPU slot (the pool owns this
  variable; ``job.env`` cannot override it). ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` unless set,
  so GPU ids mean what ``nvidia-smi`` shows.
* ``DNAS_DEVICE``: the torch device to use in the trial: ``"cuda:0"`` (the only GPU it
  sees) or ``"cpu"``. ``DNAS_GPU_ID``: the physical GPU id (``""`` on CPU).
* ``DNAS_TRIAL_KEY``, ``DNAS_ATTEMPT`` (1, 2, ...), ``DNAS_POOL_PID`` (see
  :func:`watch_parent`).
* On CPU slots ``OMP_NUM_THREADS`` = CPU cores // CPU slots unless set, so parallel CPU
  trials do not oversubscribe the cores. ``PYTHONUNBUFFERED=1`` unless set, so logs are live.

Placement
---------
Among devices with a free slot, the pool picks the GPU with the most free memory
(``nvidia-smi``, never a CUDA context in the parent), counting the ``memory_hint_mb`` of
trials started there in the last ``settle_seconds`` as already used (they may not have
allocated yet) and preferring devices where the hint fits. When free memory is unknown
(no ``nvidia-smi``, CPU slots) it picks the device with the fewest running trials. The
hint only guides placement: a trial is never held back for memory; if it runs out, it is
requeued.

POSIX only (process groups, ``waitid``). Not thread-safe: call :meth:`TrialPool.submit`
before :meth:`TrialPool.run` or from its callbacks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from dnas_core.runner import devices as _devices

EXIT_OK = 0
EXIT_OOM = 75
EXIT_NONFINITE = 76
EXIT_PRUNED = 77

ENV_DEVICE = "DNAS_DEVICE"
ENV_GPU_ID = "DNAS_GPU_ID"
ENV_TRIAL_KEY = "DNAS_TRIAL_KEY"
ENV_ATTEMPT = "DNAS_ATTEMPT"
ENV_POOL_PID = "DNAS_POOL_PID"

Status = Literal["ok", "failed", "timeout", "oom", "nonfinite", "pruned"]
FreeMemoryFn = Callable[[Sequence[str]], Mapping[str, float]]

_TAIL_LINES = 20
_TAIL_BYTES = 8192


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


class Terminated(SystemExit):
    """Raised in :meth:`TrialPool.run` when the parent gets SIGTERM or SIGHUP (after the
    running trials are killed). Its exit code is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


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
                 free_memory: FreeMemoryFn | None = None) -> None:
        if jobs_per_device < 1:
            raise ValueError(f"jobs_per_device must be >= 1, got {jobs_per_device}")
        if max_oom_retries < 0:
            raise ValueError(f"max_oom_retries must be >= 0, got {max_oom_retries}")
        if poll_interval <= 0 or kill_grace < 0:
            raise ValueError("poll_interval must be > 0 and kill_grace >= 0")
        self.devices: list[str] = _devices.resolve_devices(devices)
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
        self._cpu_threads = max(1, (os.cpu_count() or 1) // max(1, cpu_slots))

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
            with self._signals_raise():
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
        if len(candidates) > 1 and all(d in free for d in candidates):
            now = time.monotonic()

            def effective(d: str) -> float:
                reserved = sum(r.job.memory_hint_mb or 0 for r in self._running
                               if r.device == d and now - r.started < self.settle_seconds)
                return free[d] - reserved

            hint = job.memory_hint_mb
            return max(candidates, key=lambda d: (hint is None or effective(d) >= hint,
                                                  effective(d), -self._busy_on(d)))
        return min(candidates, key=self._busy_on)

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
                self._append_log(entry.job.log_path,
                                 f"=== dnas pool: {entry.job.key} attempt {entry.attempt} "
                                 f"could not start: {exc!r} ===\n")
                self._finish(Outcome(entry.job, "failed", None, entry.attempt,
                                     _devices.device_label(device), entry.seconds,
                                     f"could not start: {exc!r}"), outcomes, on_done)
        return launched

    def _child_env(self, job: Job, device: str, attempt: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(job.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if device == _devices.CPU:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env[ENV_DEVICE] = "cpu"
            env[ENV_GPU_ID] = ""
            env.setdefault("OMP_NUM_THREADS", str(self._cpu_threads))
        else:
            env["CUDA_VISIBLE_DEVICES"] = device
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            env[ENV_DEVICE] = "cuda:0"
            env[ENV_GPU_ID] = device
        env[ENV_TRIAL_KEY] = job.key
        env[ENV_ATTEMPT] = str(attempt)
        env[ENV_POOL_PID] = str(os.getpid())
        return env

    def _start(self, entry: _Queued, device: str) -> None:
        job = entry.job
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().isoformat(timespec="seconds")
        header = (f"=== dnas pool: {job.key} attempt {entry.attempt} on "
                  f"{_devices.device_label(device)} at {stamp}: {shlex.join(job.argv)} ===\n")
        env = self._child_env(job, device, entry.attempt)
        proc: subprocess.Popen[bytes] | None = None
        with open(job.log_path, "ab") as log:
            log.write(header.encode())
            log.flush()
            offset = log.tell()
            try:
                proc = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, close_fds=True)
                run = _Running(job, entry.attempt, entry.seconds, device, proc,
                               time.monotonic(), offset)
                self._running.append(run)
            except BaseException:
                # Interrupted between start and bookkeeping: do not leave an orphan.
                if proc is not None and not any(r.proc is proc for r in self._running):
                    _signal_group(proc, signal.SIGKILL)
                    with contextlib.suppress(Exception):
                        proc.wait(timeout=5)
                raise

    # ------------------------------------------------------------------- reaping

    def _reap(self, outcomes: list[Outcome],
              on_done: Callable[[Outcome], None] | None) -> bool:
        changed = False
        now = time.monotonic()
        for run in list(self._running):
            if _leader_exited(run.proc):
                _signal_group(run.proc, signal.SIGKILL)  # leftovers of an exited trial
                rc = run.proc.wait()
                self._running.remove(run)
                self._completed(run, rc, outcomes, on_done)
                changed = True
            elif run.term_sent is None:
                if run.job.timeout is not None and now - run.started >= run.job.timeout:
                    run.timed_out = True
                    run.term_sent = now
                    _signal_group(run.proc, signal.SIGTERM)
            elif now - run.term_sent >= self.kill_grace:
                _signal_group(run.proc, signal.SIGKILL)
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
        status: Status
        if run.timed_out:
            status = "timeout"
        elif rc == EXIT_OK:
            status = "ok"
        elif rc == EXIT_OOM:
            status = "oom"
        elif rc == EXIT_NONFINITE:
            status = "nonfinite"
        elif rc == EXIT_PRUNED:
            status = "pruned"
        else:
            status = "failed"
        requeue = status == "oom" and run.attempt <= self.max_oom_retries
        note = _describe_rc(rc)
        if run.timed_out:
            note += f" after exceeding its timeout of {run.job.timeout:g} s"
        if abandoned:
            note += f"; still alive {self.abandon_after:g} s after SIGKILL: abandoned"
        self._append_log(run.job.log_path,
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
        message = "" if status == "ok" else _log_tail(run.job.log_path, run.log_offset, note)
        self._finish(Outcome(run.job, status, rc, run.attempt,
                             _devices.device_label(run.device), seconds, message),
                     outcomes, on_done)

    def _finish(self, outcome: Outcome, outcomes: list[Outcome],
                on_done: Callable[[Outcome], None] | None) -> None:
        self._active.discard(outcome.job.key)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    @staticmethod
    def _append_log(path: Path, text: str) -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as log:
                log.write(text.encode(errors="replace"))

    # ------------------------------------------------------------ stopping, signals

    def _kill_all(self, reason: str) -> None:
        """SIGTERM every running trial's group, wait up to ``kill_grace``, then SIGKILL
        and reap them all (the SIGKILL step runs even if this wait is interrupted)."""
        running, self._running = self._running, []
        for run in running:  # they get no outcome; their keys may be submitted again
            self._active.discard(run.job.key)
        try:
            for run in running:
                _signal_group(run.proc, signal.SIGTERM)
            deadline = time.monotonic() + self.kill_grace
            while time.monotonic() < deadline and not all(_leader_exited(r.proc)
                                                          for r in running):
                time.sleep(0.05)
        finally:
            for run in running:
                _signal_group(run.proc, signal.SIGKILL)
            for run in running:
                with contextlib.suppress(Exception):
                    run.proc.wait(timeout=5)
                self._append_log(run.job.log_path,
                                 f"\n=== dnas pool: {run.job.key} attempt {run.attempt} "
                                 f"killed: {reason} ===\n")

    @contextlib.contextmanager
    def _signals_raise(self) -> Iterator[None]:
        """While running in the main thread, SIGTERM and SIGHUP raise :class:`Terminated`
        (so the trials are killed on the way out) where their handler is the default one
        (which would end the process with no cleanup); ignored signals (``nohup``) and
        handlers of the caller's own are left alone. SIGINT raises KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            raise Terminated(signum)

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:  # keep SIG_IGN (nohup), own handlers
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


# ------------------------------------------------------------------------ helpers


def _leader_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the trial's main process has exited, without reaping it (so its process
    group id cannot be reused before we kill what is left of the group)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere: let Popen find out
        return proc.poll() is not None
    return info is not None and info.si_pid == proc.pid


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the trial's process group (its pgid is its pid: new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _describe_rc(rc: int | None) -> str:
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


def _log_tail(path: Path, offset: int, note: str) -> str:
    """The last lines the latest attempt wrote to its log (for ``Outcome.message``)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            end = log.tell()
            start = max(offset, end - _TAIL_BYTES)
            log.seek(start)
            text = log.read(end - start).decode(errors="replace")
    except OSError as exc:
        return f"{note}; log unreadable: {exc!r}"
    lines = [ln for ln in text.splitlines()
             if ln.strip() and not ln.startswith("=== dnas pool:")]
    tail = "\n".join(lines[-_TAIL_LINES:])
    return f"{note}\n{tail}" if tail else note


# ------------------------------------------------------------- trial-side helpers


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


def watch_parent(interval: float = 1.0) -> threading.Thread | None:
    """In a trial process: start a daemon thread that kills this trial's process group if
    the pool that started it dies (even by SIGKILL, when it cannot clean up). Does nothing
    outside a pool (no ``DNAS_POOL_PID``)."""
    try:
        parent = int(os.environ[ENV_POOL_PID])
    except (KeyError, ValueError):
        return None

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        with contextlib.suppress(OSError):
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)

    thread = threading.Thread(target=loop, name="dnas-watch-parent", daemon=True)
    thread.start()
    return thread
