"""Faults of the whole pipeline: SIGKILL of the coordinator, and two workers on one study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Studies, default_storage
from tests.core.test_pipeline import ROOT, SMALL

# supernet steps slowed down (about 15 s a search), so that a kill lands inside one
EXPERIMENT = {"plugin": "toy", "set": {**SMALL, "domain.step_delay": 0.1},
              "supernets": {"grid": {"search.temperature_decay": [0.1, 0.3]}},
              "architectures": {"grid": {"train.optimizer.lr": [0.2]}}}


@pytest.fixture
def env(monkeypatch):
    environ = dict(os.environ, DNAS_PLUGIN_MODULES="tests.core.toy_plugin",
                   PYTHONPATH=str(ROOT), DNAS_PLUGINS="")
    monkeypatch.setenv("DNAS_PLUGIN_MODULES", "tests.core.toy_plugin")
    return environ


def dnas(*args):
    return [sys.executable, "-m", "dnas_cli.main", *args]


def attempts(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines()
               if line.startswith("=== dnas pool:") and " on " in line)


def check_finished_once(run_dir: Path) -> None:
    studies = Studies(default_storage(run_dir))
    done = {}
    for name in (SUPERNETS, ARCHITECTURES):
        for trial in studies.trials(name):
            if trial.state.name == "COMPLETE":
                key = trial.user_attrs["key"]
                assert key not in done, f"{name} {key} completed twice"
                done[key] = trial
    assert len([t for t in done.values() if t.user_attrs["kind"] == "supernet"]) == 2
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len({(r["supernet"], r["arch_id"], r["role"]) for r in rows})
    assert len(rows) == len([t for t in done.values() if t.user_attrs["kind"] == "arch"]) > 0


@pytest.mark.parametrize("kill_when", ["supernet-checkpoint", "first-architecture-result"])
def test_sigkill_then_rerun_finishes_without_rerunning_finished_trials(tmp_path, env,
                                                                       kill_when):
    experiment = tmp_path / "exp.yaml"
    # a kill inside a supernet comes before any baseline is queued: the baseline's trials
    # would only lengthen the run; a kill after a first result resumes them too
    baseline = "none" if kill_when == "supernet-checkpoint" else "random"
    experiment.write_text(yaml.safe_dump({**EXPERIMENT, "baseline": baseline}))
    run_dir = tmp_path / "run"
    command = dnas("search", "--experiment", str(experiment), "--out", str(run_dir),
                   "--devices", "cpu")
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pattern = ("trials/supernet-*/checkpoints/search.pt" if kill_when == "supernet-checkpoint"
               else "trials/arch-*/result.json")
    deadline = time.monotonic() + 240
    while not list(run_dir.glob(pattern)):
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # the trial process notices its pool is gone and kills itself
    finished_before = {p.parent for p in run_dir.glob("trials/*/result.json")}
    interrupted = {p.parent.parent for p in run_dir.glob("trials/supernet-*/checkpoints/search.pt")
                   if not (p.parent.parent / "result.json").exists()}

    subprocess.run(command, env=env, cwd=tmp_path, check=True, capture_output=True)
    check_finished_once(run_dir)
    for directory in finished_before:  # finished work was recorded, not redone
        assert attempts(directory / "log.txt") == 1
    if kill_when == "supernet-checkpoint":
        assert interrupted  # the kill landed inside a supernet search
    for directory in interrupted:  # it ran again, in the same directory, from its checkpoint
        log = (directory / "log.txt").read_text()
        assert attempts(directory / "log.txt") == 2 and "resuming search from chunk" in log


def test_two_workers_share_one_study_and_run_no_trial_twice(tmp_path, env, toy_registry):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Studies(default_storage(run_dir), plan_experiment(toy_registry, experiment=experiment))
    workers = [subprocess.Popen(dnas("worker", str(run_dir), "--devices", "cpu"), env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=400)
        assert worker.returncode == 0, err.decode()[-2000:]
    check_finished_once(run_dir)
    for log in run_dir.glob("trials/*/log.txt"):
        assert attempts(log) == 1, log


def deterministic(run_dir: Path) -> tuple[list[dict], dict[str, str]]:
    """results.jsonl without what depends on the clock or the order of claims (seconds,
    trial numbers), sorted; and every architecture file's text."""
    rows = [{k: v for k, v in json.loads(line).items() if k not in ("train_seconds", "trial")}
            for line in (run_dir / "results.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: (r["arch_id"], json.dumps(r["hyperparameters"], sort_keys=True)))
    archs = {p.name: p.read_text() for p in sorted((run_dir / "architectures").glob("*.json"))}
    return rows, archs


def test_a_run_resumed_after_sigkill_has_the_results_of_an_uninterrupted_one(tmp_path, env):
    """SIGKILL inside the supernet search, rerun: the same rows and architectures, number
    for number, as a run that was never stopped (the search resumes from its checkpoint
    with the random state it had)."""
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump({
        "plugin": "toy", "baseline": "none", "set": {**SMALL, "domain.step_delay": 0.05},
        "architectures": {"grid": {"train.optimizer.lr": [0.2, 0.3]}}}))

    def command(run_dir: Path) -> list[str]:
        return dnas("search", "--experiment", str(experiment), "--out", str(run_dir),
                    "--devices", "cpu")

    whole = subprocess.Popen(command(tmp_path / "whole"), env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(command(cut), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(cut.glob("trials/supernet-*/checkpoints/search.pt")):
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator's group; the trial follows it
    proc.wait()
    assert not (cut / "results.jsonl").exists()
    time.sleep(2)  # the trial process notices its pool is gone and kills itself
    rerun = subprocess.run(command(cut), env=env, cwd=tmp_path, capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _, err = whole.communicate(timeout=240)
    assert whole.returncode == 0, err.decode()[-2000:]
    log = next(cut.glob("trials/supernet-*/log.txt")).read_text()
    assert "resuming search from chunk" in log  # the kill landed inside the search
    rows, archs = deterministic(cut)
    assert len(rows) == 2 * len(archs) > 0
    assert (rows, archs) == deterministic(tmp_path / "whole")
