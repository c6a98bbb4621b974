"""`dnas search` under a pseudo-terminal: a live view that shows the running trial's
progress within seconds of its start and updates while it runs."""

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.core.test_pipeline import ROOT, SMALL

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
#: a rendered row of the supernet trial: its chunk and batch counts
ROW = re.compile(r"supernets/0 supernet\s+search\s+(chunk \d+/\d+ \w+)\s.*?(\d+)/(\d+)\s")


def search_command(run_dir: Path, *extra: str, **settings) -> list[str]:
    """A tiny toy search: one supernet, one architecture, no baselines."""
    values = {**SMALL, "search.arch_sampling": {1.5: 1}, **settings}
    args = [sys.executable, "-m", "dnas_cli.main", "search", "--plugin", "toy", "--out",
            str(run_dir), "--devices", "cpu", "--no-baseline", *extra]
    for key, value in values.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def toy_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, DNAS_PLUGIN_MODULES="tests.core.toy_plugin", PYTHONPATH=str(ROOT),
                DNAS_PLUGINS="", **extra)


def first_log(run_dir: Path) -> Path | None:
    found = list(run_dir.glob("trials/*/log.txt"))
    return found[0] if found else None


def test_a_terminal_gets_a_live_view_that_follows_the_running_trial(tmp_path):
    run_dir = tmp_path / "run"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    # each supernet step sleeps 0.2 s: the search lasts long enough to be watched
    proc = subprocess.Popen(search_command(run_dir, **{"domain.step_delay": 0.2}),
                            stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                            env=toy_env(TERM="xterm-256color", COLUMNS="200", LINES="40"),
                            start_new_session=True)
    os.close(slave)
    screen = b""
    trial_started = shown_running = None
    rows: dict[tuple[str, str], float] = {}  # (chunk, batches done) -> first seen
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and len(rows) < 2:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the process closed the terminal
                    break
            now = time.monotonic()
            if trial_started is None and first_log(run_dir) is not None:
                trial_started = now
            text = ANSI.sub(b"", screen).decode(errors="replace")
            if shown_running is None and "supernets/0 supernet" in text:
                shown_running = now
            for match in ROW.finditer(text):
                rows.setdefault((match.group(1), match.group(2)), now)
            assert proc.poll() is None, text[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the pool stops its trial on the way out
        proc.wait(timeout=30)
        os.close(master)
    text = ANSI.sub(b"", screen).decode(errors="replace")
    assert trial_started is not None, text[-3000:]
    assert len(rows) >= 2, text[-3000:]  # the progress changed while the trial ran
    assert shown_running is not None and shown_running - trial_started < 3.0
    # the first batch counts follow the trial's first progress write within seconds (the
    # trial process imports torch and builds its data first)
    assert min(rows.values()) - trial_started < 20.0
    assert "supernets 0/1" in text and "elapsed" in text and "left" in text
    assert "trial supernets/0 started: supernet" in text
