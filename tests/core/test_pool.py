"""The trial pool: exit-code protocol, OOM requeue, timeouts, process groups, no shell,
no barrier between stages, bounded concurrency, per-slot device environment, signals.

Every trial is ``tests/core/fake_trial.py`` run by the current interpreter (no torch
import in the trial, so each starts in a few tens of milliseconds).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from dnas_core.runner import jobs as jobs_mod
from dnas_core.runner import placement as placement_mod
from dnas_core.runner import pool as pool_mod
from dnas_core.runner import processes as processes_mod
from dnas_core.runner.devices import resolve_devices
from dnas_core.runner.jobs import (
    EXIT_NONFINITE,
    EXIT_OOM,
    EXIT_PRUNED,
    Job,
    Outcome,
    exit_code_for,
)
from dnas_core.runner.pool import TrialPool
from dnas_core.runner.processes import Terminated
from tests.core import fake_trial

FAKE = str(Path(fake_trial.__file__).resolve())
FAST = {"poll_interval": 0.02, "kill_grace": 0.5}


def trial(tmp: Path, key: str, behaviour: str, *args: str, timeout: float | None = None,
          **kw) -> Job:
    safe = key.replace("/", "_")
    return Job(key=key, argv=[sys.executable, FAKE, behaviour, *args],
               log_path=tmp / "logs" / f"{safe}.log", timeout=timeout, **kw)


def ok_trial(tmp: Path, key: str, *args: str, **kw) -> Job:
    return trial(tmp, key, "ok", "--out", str(tmp / f"{key.replace('/', '_')}.json"), *args,
                 **kw)


def result(tmp: Path, key: str) -> dict:
    return json.loads((tmp / f"{key.replace('/', '_')}.json").read_text())


def by_key(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.job.key: o for o in outcomes}


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.exists() and Path("/proc/self").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_dead(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return not alive(pid)


def wait_file(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


# --------------------------------------------------------------------- protocol


def test_exit_codes_are_distinct_and_shared_with_the_fake_trial():
    codes = {EXIT_OOM, EXIT_NONFINITE, EXIT_PRUNED}
    assert len(codes) == 3 and all(0 < c < 126 for c in codes) and 1 not in codes
    assert (fake_trial.EXIT_OOM, fake_trial.EXIT_NONFINITE, fake_trial.EXIT_PRUNED) == \
        (EXIT_OOM, EXIT_NONFINITE, EXIT_PRUNED)


def test_exit_code_for_maps_only_the_real_oom_class():
    import optuna
    import torch

    from dnas_core.engine.search import NonFiniteLoss

    assert exit_code_for(torch.cuda.OutOfMemoryError("CUDA out of memory")) == EXIT_OOM
    # Defect 9: a RuntimeError that merely says "out of memory" is a crash, not an OOM.
    assert exit_code_for(RuntimeError("CUDA out of memory. Tried to allocate")) is None
    assert exit_code_for(MemoryError()) is None
    assert exit_code_for(NonFiniteLoss("nan")) == EXIT_NONFINITE
    assert exit_code_for(optuna.TrialPruned()) == EXIT_PRUNED
    assert exit_code_for(ValueError("x")) is None


def test_each_behaviour_gets_its_status_while_the_others_finish(tmp_path):
    pool = TrialPool(devices=["cpu"], jobs_per_device=3, max_oom_retries=1, **FAST)
    jobs = [
        ok_trial(tmp_path, "ok1"),
        trial(tmp_path, "crash", "crash"),
        trial(tmp_path, "nan", "nan"),
        trial(tmp_path, "pruned", "pruned"),
        trial(tmp_path, "signal", "signal"),
        trial(tmp_path, "hang", "hang", timeout=1.0),
        trial(tmp_path, "oom", "oom"),
        ok_trial(tmp_path, "ok2", "--sleep", "0.2"),
    ]
    for job in jobs:
        pool.submit(job)
    seen: list[str] = []
    t0 = time.monotonic()
    outcomes = pool.run(on_done=lambda o: seen.append(o.job.key))
    assert time.monotonic() - t0 < 10
    got = by_key(outcomes)
    assert sorted(got) == sorted(j.key for j in jobs) == sorted(seen)
    assert {k: o.status for k, o in got.items()} == {
        "ok1": "ok", "ok2": "ok", "crash": "failed", "nan": "nonfinite", "pruned": "pruned",
        "signal": "failed", "hang": "timeout", "oom": "oom"}
    assert result(tmp_path, "ok1")["dnas_device"] == "cpu"
    # A crash raising RuntimeError is never taken for an OOM: one attempt, log kept.
    crash = got["crash"]
    assert crash.attempts == 1 and crash.returncode == 1
    assert "RuntimeError: boom" in crash.message
    assert "RuntimeError: boom" in crash.job.log_path.read_text()
    assert got["signal"].returncode == -signal.SIGKILL and "SIGKILL" in got["signal"].message
    assert got["nan"].returncode == EXIT_NONFINITE and "loss is nan" in got["nan"].message
    assert got["oom"].attempts == 2 and got["oom"].returncode == EXIT_OOM
    assert got["hang"].attempts == 1 and got["hang"].seconds < 5
    assert got["ok1"].message == "" and got["ok1"].device == "cpu"


def test_oom_requeued_with_on_oom_then_succeeds(tmp_path):
    calls: list[tuple[str, int]] = []

    def smaller_batch(job: Job, attempt: int) -> Job:
        calls.append((job.key, attempt))
        argv = list(job.argv)
        i = argv.index("--batch")
        argv[i + 1] = str(int(argv[i + 1]) // 2)
        return Job(job.key, argv, job.log_path, job.timeout, job.env, job.memory_hint_mb)

    pool = TrialPool(devices=["cpu"], max_oom_retries=2, on_oom=smaller_batch, **FAST)
    job = trial(tmp_path, "big", "oom", "--fail-times", "1", "--counter",
                str(tmp_path / "count"), "--batch", "64", "--out", str(tmp_path / "big.json"))
    pool.submit(job)
    [out] = pool.run()
    assert out.status == "ok" and out.attempts == 2 and out.returncode == 0
    assert calls == [("big", 1)]
    assert result(tmp_path, "big")["batch"] == 32
    assert out.job.argv[out.job.argv.index("--batch") + 1] == "32"
    log = job.log_path.read_text()
    headers = [ln for ln in log.splitlines() if ln.startswith("=== dnas pool: big attempt")
               and " on " in ln]
    assert len(headers) == 2
    assert "attempt 1 on cpu" in headers[0] and "--batch 64" in headers[0]
    assert "attempt 2 on cpu" in headers[1] and "--batch 32" in headers[1]
    assert "CUDA out of memory (simulated) at batch 64" in log
    assert "requeued" in log


def test_oom_retries_are_bounded(tmp_path):
    pool = TrialPool(devices=["cpu"], max_oom_retries=2, **FAST)
    counter = tmp_path / "count"
    pool.submit(trial(tmp_path, "always", "oom", "--counter", str(counter)))
    [out] = pool.run()
    assert out.status == "oom" and out.attempts == 3
    assert counter.read_text() == "3"


def test_oom_requeue_goes_to_the_back_of_the_queue(tmp_path):
    pool = TrialPool(devices=["cpu"], jobs_per_device=1, **FAST)
    pool.submit(trial(tmp_path, "a", "oom", "--fail-times", "1", "--counter",
                      str(tmp_path / "count")))
    pool.submit(ok_trial(tmp_path, "b"))
    pool.submit(ok_trial(tmp_path, "c"))
    outcomes = pool.run()
    assert [o.job.key for o in outcomes] == ["b", "c", "a"]
    assert outcomes[-1].status == "ok" and outcomes[-1].attempts == 2


# ------------------------------------------------------------- processes, kills


def test_timeout_kills_the_whole_process_group(tmp_path):
    pool = TrialPool(devices=["cpu"], **FAST)
    pid_file = tmp_path / "grandchild.pid"
    pool.submit(trial(tmp_path, "hang", "hang", "--grandchild-pid", str(pid_file),
                      timeout=1.0))
    [out] = pool.run()
    assert out.status == "timeout"
    assert "timeout" in out.message and "hanging" in out.message
    assert wait_dead(int(pid_file.read_text()))


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    pool = TrialPool(devices=["cpu"], poll_interval=0.02, kill_grace=0.3)
    pid_file = tmp_path / "grandchild.pid"
    pool.submit(trial(tmp_path, "stubborn", "hang", "--ignore-term", "--grandchild-pid",
                      str(pid_file), timeout=0.5))
    t0 = time.monotonic()
    [out] = pool.run()
    assert out.status == "timeout" and out.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5
    assert wait_dead(int(pid_file.read_text()))


def test_a_finished_trial_leaves_no_grandchildren(tmp_path):
    pool = TrialPool(devices=["cpu"], **FAST)
    pid_file = tmp_path / "grandchild.pid"
    pool.submit(ok_trial(tmp_path, "leaky", "--grandchild-pid", str(pid_file)))
    [out] = pool.run()
    assert out.status == "ok"
    assert wait_dead(int(pid_file.read_text()))


def test_missing_executable_fails_that_job_only(tmp_path):
    pool = TrialPool(devices=["cpu"], **FAST)
    pool.submit(Job("missing", [str(tmp_path / "no-such-program")], tmp_path / "m.log"))
    pool.submit(ok_trial(tmp_path, "fine"))
    got = by_key(pool.run())
    assert got["missing"].status == "failed" and got["missing"].returncode is None
    assert "could not start" in got["missing"].message
    assert got["fine"].status == "ok"


def test_argv_is_never_given_to_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"x; touch {marker} && echo $(touch {marker}) `touch {marker}` | true"
    pool = TrialPool(devices=["cpu"], **FAST)
    pool.submit(ok_trial(tmp_path, "evil", "--tag", evil))
    [out] = pool.run()
    assert out.status == "ok"
    assert result(tmp_path, "evil")["tag"] == evil
    assert not marker.exists()
    with pytest.raises(TypeError, match="shell"):
        Job("s", f"{sys.executable} -c pass", tmp_path / "s.log")  # type: ignore[arg-type]


def test_duplicate_keys_are_refused_while_queued_or_running(tmp_path):
    pool = TrialPool(devices=["cpu"], **FAST)
    pool.submit(ok_trial(tmp_path, "same"))
    with pytest.raises(ValueError, match="already queued or running"):
        pool.submit(ok_trial(tmp_path, "same"))
    assert [o.status for o in pool.run()] == ["ok"]
    pool.submit(ok_trial(tmp_path, "same"))  # finished: the key is free again
    assert [o.status for o in pool.run()] == ["ok"]


# ------------------------------------------------------------ scheduling, devices


def test_jobs_submitted_from_on_done_run_without_a_barrier(tmp_path):
    pool = TrialPool(devices=["cpu"], jobs_per_device=2, **FAST)
    pool.submit(ok_trial(tmp_path, "stage1/fast", "--sleep", "0.1"))
    pool.submit(ok_trial(tmp_path, "stage1/slow", "--sleep", "2.0"))

    def on_done(o: Outcome) -> None:
        if o.job.key == "stage1/fast":
            pool.submit(ok_trial(tmp_path, "stage2/from-fast"))

    outcomes = pool.run(on_done=on_done)
    assert [o.job.key for o in outcomes] == ["stage1/fast", "stage2/from-fast", "stage1/slow"]
    assert all(o.ok for o in outcomes)
    # Stage 2 ran (started and finished) while the slow stage-1 trial was still running.
    assert result(tmp_path, "stage2/from-fast")["end"] < result(tmp_path, "stage1/slow")["end"]


def test_source_is_pulled_only_when_a_slot_is_free_and_until_exhausted(tmp_path):
    """The orchestrator's pull model: stage-2 work appears in ``source`` only after a
    stage-1 trial's on_done; the pool neither stops early nor waits for stage 1."""
    pool = TrialPool(devices=["cpu"], jobs_per_device=2, **FAST)
    pending = [ok_trial(tmp_path, "s1/fast", "--sleep", "0.1"),
               ok_trial(tmp_path, "s1/slow", "--sleep", "1.5")]
    outstanding: set[str] = set()
    calls_with_full_pool = []
    polls = []

    def source():
        if len(outstanding) >= 2:
            calls_with_full_pool.append(sorted(outstanding))
        if not pending:
            return None
        job = pending.pop(0)
        outstanding.add(job.key)
        return job

    def on_done(o: Outcome) -> None:
        outstanding.discard(o.job.key)
        if o.job.key == "s1/fast":
            pending.extend(ok_trial(tmp_path, f"s2/{i}", "--sleep", "0.1") for i in range(2))
        if o.job.key == "s2/1":
            pending.append(ok_trial(tmp_path, "s2/last"))  # appears after all else ended?

    t0 = time.monotonic()
    outcomes = pool.run(on_done=on_done, source=source, on_poll=lambda: polls.append(1))
    elapsed = time.monotonic() - t0
    keys = [o.job.key for o in outcomes]
    assert sorted(keys) == ["s1/fast", "s1/slow", "s2/0", "s2/1", "s2/last"]
    assert all(o.ok for o in outcomes)
    assert keys.index("s2/0") < keys.index("s1/slow")  # no barrier between stages
    assert not calls_with_full_pool
    assert 1 <= len(polls) <= elapsed / FAST["poll_interval"] + 2


def test_source_is_asked_again_after_the_last_trial_ends(tmp_path):
    pool = TrialPool(devices=["cpu"], **FAST)
    pending = [ok_trial(tmp_path, "only")]

    def on_done(o: Outcome) -> None:
        if o.job.key == "only":
            pending.append(ok_trial(tmp_path, "follow-up"))

    outcomes = pool.run(on_done=on_done, source=lambda: pending.pop(0) if pending else None)
    assert [o.job.key for o in outcomes] == ["only", "follow-up"]


def test_concurrency_is_bounded_by_slots(tmp_path):
    pool = TrialPool(devices=["cpu"], jobs_per_device=2, **FAST)
    keys = [f"j{i}" for i in range(4)]
    for key in keys:
        pool.submit(ok_trial(tmp_path, key, "--sleep", "0.4"))
    assert all(o.ok for o in pool.run())
    spans = [(result(tmp_path, k)["start"], result(tmp_path, k)["end"]) for k in keys]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda ev: (ev[0], ev[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2


def test_device_environment_is_set_per_slot(tmp_path):
    pool = TrialPool(devices=["0", "cuda:1"], jobs_per_device=1,
                     free_memory=lambda ids: {}, **FAST)
    keys = [f"g{i}" for i in range(4)]
    for key in keys:
        pool.submit(ok_trial(tmp_path, key, "--sleep", "0.2", env={"FAKE_EXTRA": "yes",
                                                                    "CUDA_VISIBLE_DEVICES": "7"}))
    got = by_key(pool.run())
    used = set()
    for key in keys:
        r = result(tmp_path, key)
        assert r["cuda_visible_devices"] in {"0", "1"}
        assert r["dnas_device"] == "cuda:0"
        assert r["dnas_gpu_id"] == r["cuda_visible_devices"]
        assert r["extra"] == "yes"
        assert got[key].device == f"cuda:{r['cuda_visible_devices']}"
        assert f"CUDA_VISIBLE_DEVICES='{r['cuda_visible_devices']}'" in \
            got[key].job.log_path.read_text()
        used.add(r["cuda_visible_devices"])
    assert used == {"0", "1"}

    cpu_pool = TrialPool(devices=["cpu"], **FAST)
    cpu_pool.submit(ok_trial(tmp_path, "c"))
    cpu_pool.run()
    r = result(tmp_path, "c")
    assert r["cuda_visible_devices"] == "" and r["dnas_device"] == "cpu" and r["attempt"] == "1"


def test_placement_prefers_the_gpu_with_most_free_memory(tmp_path):
    free = {"0": 1000.0, "1": 5000.0, "2": 3000.0}
    queried: list[list[str]] = []

    def free_memory(ids):
        queried.append(list(ids))
        return {i: free[i] for i in ids}

    pool = TrialPool(devices=["0", "1", "2"], free_memory=free_memory, **FAST)
    for key in ("first", "second", "third"):
        pool.submit(ok_trial(tmp_path, key, "--sleep", "0.3"))
    got = by_key(pool.run())
    assert [got[k].device for k in ("first", "second", "third")] == \
        ["cuda:1", "cuda:2", "cuda:0"]
    assert queried and queried[0] == ["0", "1", "2"]


def test_memory_hint_steers_away_from_a_gpu_that_was_just_filled(tmp_path):
    free = {"0": 6000.0, "1": 5000.0}
    pool = TrialPool(devices=["0", "1"], jobs_per_device=2,
                     free_memory=lambda ids: {i: free[i] for i in ids}, **FAST)
    # Both launch in one round: "a" takes GPU 0 and reserves 4000 MiB there, so "b"
    # (which needs 3000) goes to GPU 1 although GPU 0 reported more free memory.
    pool.submit(ok_trial(tmp_path, "a", "--sleep", "0.3", memory_hint_mb=4000))
    pool.submit(ok_trial(tmp_path, "b", "--sleep", "0.3", memory_hint_mb=3000))
    got = by_key(pool.run())
    assert (got["a"].device, got["b"].device) == ("cuda:0", "cuda:1")


def test_resolve_devices(monkeypatch):
    assert resolve_devices(["cuda:1", "0", "CPU"]) == ["1", "0", "cpu"]
    assert resolve_devices("0,1") == ["0", "1"]
    with pytest.raises(ValueError):
        resolve_devices(["0", "cuda:0"])
    with pytest.raises(ValueError):
        resolve_devices([])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_devices("auto") == ["cpu"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_devices("auto") == ["2", "3"]


# ------------------------------------------------------------------ interruption


def _signal_when(path: Path, sig: int) -> threading.Thread:
    def fire() -> None:
        wait_file(path)
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, KeyboardInterrupt),
                                      (signal.SIGTERM, Terminated)])
def test_parent_interrupt_kills_running_trials(tmp_path, sig, exc):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    before = signal.getsignal(signal.SIGTERM)
    pool = TrialPool(devices=["cpu"], jobs_per_device=2, **FAST)
    pid_file = tmp_path / "grandchild.pid"
    pool.submit(trial(tmp_path, "hang", "hang", "--grandchild-pid", str(pid_file)))
    pool.submit(trial(tmp_path, "hang2", "hang", "--ignore-term"))
    pool.submit(ok_trial(tmp_path, "never"))
    _signal_when(pid_file, sig)
    t0 = time.monotonic()
    with pytest.raises(exc) as info:
        pool.run()
    assert time.monotonic() - t0 < 8
    if sig == signal.SIGTERM:
        assert info.value.code == 128 + signal.SIGTERM
    assert wait_dead(int(pid_file.read_text()))
    assert not pool._running
    assert "killed: pool interrupted" in (tmp_path / "logs" / "hang2.log").read_text()
    assert not (tmp_path / "never.json").exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_exception_in_on_done_kills_running_trials_and_propagates(tmp_path):
    pool = TrialPool(devices=["cpu"], jobs_per_device=2, **FAST)
    pid_file = tmp_path / "grandchild.pid"
    pool.submit(trial(tmp_path, "hang", "hang", "--grandchild-pid", str(pid_file)))
    pool.submit(ok_trial(tmp_path, "quick", "--sleep", "0.3"))

    def on_done(o: Outcome) -> None:
        raise LookupError(f"bug in callback for {o.job.key}")

    with pytest.raises(LookupError, match="quick"):
        pool.run(on_done=on_done)
    assert wait_dead(int(wait_file(pid_file)))


def test_module_docstring_documents_the_protocol():
    for module, names in ((jobs_mod, ("EXIT_OOM", "EXIT_NONFINITE", "EXIT_PRUNED")),
                          (placement_mod, ("CUDA_VISIBLE_DEVICES", "DNAS_DEVICE"))):
        for name in names:
            assert name in (module.__doc__ or "")


def test_an_unkillable_trial_is_abandoned_not_waited_on(tmp_path, monkeypatch):
    real = processes_mod.signal_group
    # Pretend SIGKILL cannot end it (as for a process stuck in the driver).
    monkeypatch.setattr(pool_mod, "signal_group",
                        lambda proc, sig: real(proc, sig) if sig != signal.SIGKILL else None)
    pool = TrialPool(devices=["cpu"], poll_interval=0.02, kill_grace=0.2)
    pool.abandon_after = 0.3
    job = trial(tmp_path, "stuck", "hang", "--ignore-term", timeout=0.5)
    pool.submit(job)
    try:
        [out] = pool.run()
        assert out.status == "timeout" and out.returncode is None
        assert "abandoned" in out.message
    finally:
        pid = int(wait_file(job.log_path).split("fake trial hang pid ")[1].split()[0])
        real(type("P", (), {"pid": pid})(), signal.SIGKILL)
        assert wait_dead(pid)


def test_signal_handlers_respect_nohup_and_are_restored(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread")
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_term = signal.getsignal(signal.SIGTERM)
    seen = {}
    try:
        pool = TrialPool(devices=["cpu"], **FAST)
        pool.submit(ok_trial(tmp_path, "x"))
        pool.run(on_done=lambda o: seen.update(hup=signal.getsignal(signal.SIGHUP),
                                               term=signal.getsignal(signal.SIGTERM)))
        assert seen["hup"] is signal.SIG_IGN
        if old_term is signal.SIG_DFL:
            assert seen["term"] is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == old_term
    finally:
        signal.signal(signal.SIGHUP, old_hup)


def test_watch_parent_ends_the_trial_when_the_pool_is_gone(monkeypatch):
    monkeypatch.delenv(processes_mod.ENV_POOL_PID, raising=False)
    assert processes_mod.watch_parent() is None  # not started by a pool: nothing to watch
    calls: list[tuple] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        calls.append(("exit", code))
        done.set()

    monkeypatch.setenv(processes_mod.ENV_POOL_PID, str(os.getppid() + 12345))
    monkeypatch.setattr(processes_mod.os, "killpg", lambda pgid, sig: calls.append(("kill", sig)))
    monkeypatch.setattr(processes_mod.os, "_exit", fake_exit)
    thread = processes_mod.watch_parent(interval=0.01)
    assert thread is not None and done.wait(5)
    thread.join(5)
    assert calls == [("kill", signal.SIGKILL), ("exit", 128 + signal.SIGKILL)]
