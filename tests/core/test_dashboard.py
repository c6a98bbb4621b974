"""dnas dashboard: both servers start on a run's storage and event files, serve what the run
holds, and stop with Ctrl-C; a missing extra or storage is one clear line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from click.testing import CliRunner
from torch.utils.tensorboard import SummaryWriter

from dnas_cli import dashboard as dashboard_module
from dnas_cli.main import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """What a run leaves for the dashboards: a study.db with a finished study and an
    event file with a scalar."""
    where = tmp_path_factory.mktemp("dash") / "run"
    where.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="architectures",
                                storage=f"sqlite:///{where / 'study.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    writer = SummaryWriter(str(where / "trials" / "arch-1" / "tensorboard"))
    for step in range(3):
        writer.add_scalar("train/logloss", 0.5 - 0.01 * step, step)
    writer.close()
    return where


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_both_dashboards_serve_the_run_and_stop_on_ctrl_c(run_dir):
    ports = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dnas_cli.main", "dashboard", str(run_dir),
         "--optuna-port", str(ports[0]), "--tensorboard-port", str(ports[1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "DNAS_PLUGINS": ""})
    try:
        urls = {}
        deadline = time.monotonic() + 120
        while len(urls) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            name, _, url = line.strip().partition(": ")
            if name in {"optuna-dashboard", "tensorboard"}:
                urls[name] = url
        assert urls == {"optuna-dashboard": f"http://127.0.0.1:{ports[0]}/dashboard",
                        "tensorboard": f"http://127.0.0.1:{ports[1]}/"}, process.stderr.read()
        studies = json.loads(_get(f"http://127.0.0.1:{ports[0]}/api/studies"))
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "architectures"
        tags = json.loads(_get(f"http://127.0.0.1:{ports[1]}/data/plugin/scalars/tags"))
        assert any("train/logloss" in run_tags for run_tags in tags.values())
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground command
        assert process.wait(timeout=60) == 0  # servers get 10 s, then are killed
        assert "stopping the dashboards" in process.stderr.read()
        assert _refused(ports[0]) and _refused(ports[1])  # both servers are gone
        assert (run_dir / "logs" / "tensorboard.log").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_a_missing_extra_is_named_and_nothing_starts(run_dir, monkeypatch):
    real = dashboard_module.importlib.util.find_spec
    monkeypatch.setattr(dashboard_module.importlib.util, "find_spec",
                        lambda name: None if name == "optuna_dashboard" else real(name))
    started = []
    monkeypatch.setattr(dashboard_module.Server, "start", lambda self: started.append(self))
    result = CliRunner().invoke(cli, ["dashboard", str(run_dir)])
    assert result.exit_code == 1 and not started
    assert "optuna-dashboard is not installed" in result.output
    assert "pip install 'dnas[dashboard]'" in result.output and "--no-optuna" in result.output


def test_a_run_without_study_db_asks_for_its_storage(tmp_path):
    result = CliRunner().invoke(cli, ["dashboard", str(tmp_path), "--no-tensorboard"])
    assert result.exit_code == 1
    assert f"{tmp_path}: no study.db here; pass --storage URL" in result.output


def test_a_taken_port_is_replaced_by_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = dashboard_module.port_for("127.0.0.1", port)
    assert other != port and other > 0
