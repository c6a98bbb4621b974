"""The life of one trial process: start it in its own session, signal its whole group,
reap it without leaving grandchildren, and read its log.

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
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ENV_POOL_PID = "DNAS_POOL_PID"

_TAIL_LINES = 20
_TAIL_BYTES = 8192


class Terminated(SystemExit):
    """Raised in :meth:`TrialPool.run` when the parent gets SIGTERM or SIGHUP (after the
    running trials are killed). Its exit code is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def start_process(argv: list[str], env: dict[str, str], log_path: Path,
                  header: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` in a new session with its output appended to ``log_path`` after
    ``header``; returns the process and the log offset where its output begins."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(header.encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    return proc, offset


def append_log(path: Path, text: str) -> None:
    """Add a line of the pool's own to a trial's log; a log that cannot be written is
    no reason to stop the pool."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            log.write(text.encode(errors="replace"))


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
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


def leader_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the trial's main process has exited, without reaping it (so its process
    group id cannot be reused before we kill what is left of the group)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere: let Popen find out
        return proc.poll() is not None
    return info is not None and info.si_pid == proc.pid


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the trial's process group (its pgid is its pid: new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def log_tail(path: Path, offset: int, note: str) -> str:
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


def watch_parent(interval: float = 1.0) -> threading.Thread | None:
    """In a trial process: start a daemon thread that kills this trial's process group if
    the pool that started it dies (even by SIGKILL, when it cannot clean up). Does nothing
    outside a pool (no ``DNAS_POOL_PID``)."""
    try:
        parent = int(os.environ[ENV_POOL_PID])
    except (KeyError, ValueError):
        return None

    # a rank of a distributed trial is the child of torchrun, itself the pool's child:
    # it watches that the pool lives on
    ranked = "TORCHELASTIC_RUN_ID" in os.environ

    def pool_alive() -> bool:
        if not ranked:
            return os.getppid() == parent
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def loop() -> None:
        while pool_alive():
            time.sleep(interval)
        with contextlib.suppress(OSError):
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)

    thread = threading.Thread(target=loop, name="dnas-watch-parent", daemon=True)
    thread.start()
    return thread
