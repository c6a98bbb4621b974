"""`dnas search` without a terminal: one plain line per trial event and a periodic status
line on stderr, the final JSON alone on stdout; `--quiet` prints no progress at all."""

import json
import re
import subprocess
import time

from tests.core.test_live_progress import search_command, toy_env


def test_a_pipe_gets_one_line_per_event_and_status_lines(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(search_command(run_dir, "--status-every", "1"), cwd=tmp_path,
                          env=toy_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout holds the result only
    lines = done.stderr.splitlines()
    events = [line for line in lines if " trial " in line]
    assert re.fullmatch(r"\[\d+:\d\d\] trial supernets/0 started: supernet", events[0])
    assert re.fullmatch(r"\[\d+:\d\d\] trial supernets/0 finished: supernet: supernet "
                        r"val logloss 0\.\d{4} in \d+\.\d s", events[1])
    assert re.fullmatch(r"\[\d+:\d\d\] trial architectures/0 started: architecture "
                        r"toy-[0-9a-f]{6} \(search\)", events[2])
    finished = re.fullmatch(r"\[\d+:\d\d\] trial architectures/0 finished: architecture "
                            r"toy-[0-9a-f]{6} \(search\): val logloss "
                            r"(0\.\d{4}) in \d+\.\d s", events[3])
    assert finished and len(events) == 4
    assert float(finished.group(1)) == round(summary["val_logloss"], 4)
    status = [line for line in lines if "] status: " in line]
    assert len(status) >= 3  # every second while the trials run
    assert any("supernets/0 search chunk" in line and "batches)" in line or
               "supernets/0 data" in line for line in status)
    # the last status line, at the end: everything done, the best value so far
    assert "supernets 1/1, architectures 1/1 done; 0 running" in status[-1]
    assert f"best val logloss {summary['val_logloss']:.4f}" in status[-1]
    assert status[-1] == lines[-2] and lines[-1].startswith("report: ")


def test_quiet_prints_no_progress(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(search_command(run_dir, "--quiet", "--status-every", "0.5"),
                            cwd=tmp_path, env=toy_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("trials/supernet-*/progress.json")):  # a trial is running
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)  # without --quiet: a status line every 0.5 s, and the start event
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert err.splitlines()[0] == f"run directory: {run_dir}"
    assert " trial " not in err and "status:" not in err, err
