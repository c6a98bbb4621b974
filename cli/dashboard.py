"""``dnas dashboard RUN_DIR``: optuna-dashboard on the run's storage and TensorBoard on its
event files, one command, stopped together by Ctrl-C.

Both servers are child processes started from argument lists in their own sessions, so the
terminal's Ctrl-C reaches only this command, which then stops them in order; their output
goes to ``RUN_DIR/logs/`` (a server's own log is where its failure is explained).
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click

READY_SECONDS = 90.0  # TensorBoard's first start imports a lot; a slow disk needs the time
#: what each server needs, and the extra that installs it
NEEDS = {"optuna-dashboard": ("optuna_dashboard", "dnas[dashboard]"),
         "tensorboard": ("tensorboard", "dnas (tensorboard is a core dependency)")}


@dataclass
class Server:
    name: str
    argv: list[str]
    url: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = self.log.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=self.log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)

    def wait_ready(self, deadline: float) -> None:
        """Poll the URL until it answers; a server that exits first is an error."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise click.ClickException(
                    f"{self.name} exited with status {self.process.returncode} before it "
                    f"served; its log: {self.log}{_tail(self.log)}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise click.ClickException(f"{self.name} did not answer on {self.url} within "
                                   f"{READY_SECONDS:.0f} s; its log: {self.log}")

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def reap(self, deadline: float) -> None:
        """Wait for the process to end until ``deadline``, then kill it."""
        if self.process is not None:
            try:
                self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_file is not None:
            self.log_file.close()


STOP_SECONDS = 10.0  # a server that has not exited this long after SIGTERM is killed


def stop_all(servers: list[Server]) -> None:
    """SIGTERM every server at once, then wait for them together: stopping one after the
    other would add their shutdown times."""
    for server in servers:
        server.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for server in servers:
        server.reap(deadline)


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  {line}" for line in text)


def port_for(host: str, preferred: int) -> int:
    """``preferred`` when it is free on ``host``, else one the system picks."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise click.ClickException(f"no free port on {host}")


def _require(name: str) -> None:
    module, extra = NEEDS[name]
    if importlib.util.find_spec(module) is None:
        raise click.ClickException(f"{name} is not installed; install it with "
                                   f"pip install '{extra}', or pass --no-{name.split('-')[0]}")


def _storage_url(run_dir: Path, storage: str | None) -> str:
    from dnas_core.runner.study import default_storage

    if storage:
        return storage
    if not (run_dir / "study.db").is_file():
        raise click.ClickException(f"{run_dir}: no study.db here; pass --storage URL (the "
                                   f"storage the run used)")
    return default_storage(run_dir)


@click.command("dashboard")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--storage", help="The run's Optuna storage URL when it is not RUN_DIR/study.db.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface both servers listen on (0.0.0.0 to reach them from elsewhere).")
@click.option("--optuna-port", default=8080, show_default=True,
              help="optuna-dashboard's port (another is picked when it is taken).")
@click.option("--tensorboard-port", default=6006, show_default=True,
              help="TensorBoard's port (another is picked when it is taken).")
@click.option("--no-optuna", is_flag=True, help="Do not start optuna-dashboard.")
@click.option("--no-tensorboard", is_flag=True, help="Do not start TensorBoard.")
def dashboard(run_dir: Path, storage: str | None, host: str, optuna_port: int,
              tensorboard_port: int, no_optuna: bool, no_tensorboard: bool) -> None:
    """Open a run's dashboards: its studies (optuna-dashboard) and its training curves and
    architecture heatmaps (TensorBoard). Ctrl-C stops both."""
    servers: list[Server] = []
    logs = run_dir / "logs"
    if not no_optuna:
        _require("optuna-dashboard")
        url = _storage_url(run_dir, storage)
        port = port_for(host, optuna_port)
        servers.append(Server("optuna-dashboard",
                              [sys.executable, "-m", "dnas_cli.optuna_board", url, host,
                               str(port)],
                              f"http://{host}:{port}/dashboard", logs / "optuna-dashboard.log"))
    if not no_tensorboard:
        _require("tensorboard")
        port = port_for(host, tensorboard_port)
        servers.append(Server("tensorboard",
                              [sys.executable, "-m", "tensorboard.main", "--logdir",
                               str(run_dir.resolve()), "--host", host, "--port", str(port)],
                              f"http://{host}:{port}/", logs / "tensorboard.log"))
    if not servers:
        raise click.UsageError("nothing to start: --no-optuna and --no-tensorboard together")

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop_on_term)
    try:
        deadline = time.monotonic() + READY_SECONDS
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(deadline)
            click.echo(f"{server.name}: {server.url}")
        click.echo("Ctrl-C stops both." if len(servers) > 1 else "Ctrl-C stops it.")
        while True:
            for server in servers:
                assert server.process is not None
                if server.process.poll() is not None:
                    raise click.ClickException(f"{server.name} stopped (status "
                                               f"{server.process.returncode}); its log: "
                                               f"{server.log}{_tail(server.log)}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping the dashboards", err=True)
    finally:
        stop_all(servers)
        signal.signal(signal.SIGTERM, previous)
