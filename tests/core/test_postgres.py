"""Two workers share one experiment through a PostgreSQL storage, as several machines do:
every trial runs exactly once, and a worker lost mid-trial (killed, or frozen so that only
its missing heartbeats give it away) has that trial recovered by the other.

A PostgreSQL 15 server is started for the module in a temporary data directory (as an
unprivileged user when the tests run as root: the server refuses root). Skipped, saying
why, where the server binaries or the driver are missing; CI installs both.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Liveness, Studies
from tests.core.test_resume import EXPERIMENT, dnas, env  # noqa: F401 - env is a fixture

LIVENESS = ["--heartbeat", "1", "--grace-period", "5"]


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url():
    binaries = _server_binaries()
    if binaries is None or not (binaries / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "apt-get install postgresql")
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("the PostgreSQL driver is missing: pip install psycopg2-binary")
    home = Path(tempfile.mkdtemp(prefix="dnas-pg-"))
    as_user = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(home, "nobody", "nogroup")
        as_user = {"user": "nobody", "group": "nogroup"}
    data, port = home / "data", _free_port()

    def run(*argv: str) -> None:
        subprocess.run([str(binaries / argv[0]), *argv[1:]], check=True, cwd=home,
                       capture_output=True, **as_user)

    try:
        run("initdb", "-D", str(data), "-U", "dnas", "--auth=trust", "--locale=C",
            "-E", "UTF8")
        run("pg_ctl", "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
    except subprocess.CalledProcessError as exc:
        log = home / "server.log"
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode()[-1500:]}"
                    f"{log.read_text()[-1500:] if log.exists() else ''}")
    try:
        yield f"postgresql+psycopg2://dnas@127.0.0.1:{port}/postgres", run
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database(postgres_url, request):
    """A fresh database per test, so each experiment starts from an empty storage."""
    url, run = postgres_url
    name = f"t_{request.node.name.split('[')[-1].rstrip(']').replace('-', '_')}"
    port = url.rsplit(":", 1)[1].split("/")[0]
    run("createdb", "-h", "127.0.0.1", "-p", port, "-U", "dnas", name)
    return url.rsplit("/", 1)[0] + f"/{name}"


def _running_trial(url: str, pid: int) -> bool:
    """Whether the worker with this pid holds a RUNNING trial."""
    studies = Studies(url)
    owner = f"{socket.gethostname()}:{pid}"
    return any(t.user_attrs.get("owner") == owner
               for name in (SUPERNETS, ARCHITECTURES)
               for t in studies.trials(name) if t.state.name == "RUNNING")


@pytest.mark.parametrize("lost", ["killed", "frozen"])
def test_two_workers_on_postgres_run_each_trial_once_and_recover_a_lost_one(
        tmp_path, env, toy_registry, database, lost):  # noqa: F811 - env is the fixture
    experiment = tmp_path / "exp.yaml"
    # no random baseline: what is tested is the storage and the recovery, and the baseline's
    # trials would only lengthen the run (test_resume's two workers share one with it)
    experiment.write_text(yaml.safe_dump({**EXPERIMENT, "baseline": "none"}))
    Studies(database, plan_experiment(toy_registry, experiment=experiment),
            liveness=Liveness(1, 5))
    run_dir = tmp_path / "run"

    def worker() -> subprocess.Popen:
        return subprocess.Popen(dnas("worker", database, "--out", str(run_dir), "--devices",
                                     "cpu", *LIVENESS), env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)

    first = worker()
    deadline = time.monotonic() + 120
    while not _running_trial(database, first.pid):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the first worker never claimed a trial"
        time.sleep(0.3)
    time.sleep(2)  # mid-trial: heartbeats have been recorded
    lost_trials = [t.user_attrs["key"] for name in (SUPERNETS, ARCHITECTURES)
                   for t in Studies(database).trials(name) if t.state.name == "RUNNING"]
    # killed: its pid is gone (found at once on this host); frozen: alive but silent,
    # found only when its heartbeats stop for the grace period, as on another machine
    os.killpg(first.pid, signal.SIGKILL if lost == "killed" else signal.SIGSTOP)
    second = worker()
    try:
        _, err = second.communicate(timeout=400)
        assert second.returncode == 0, err.decode()[-2000:]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    studies = Studies(database)
    completed: dict[str, int] = {}
    for name in (SUPERNETS, ARCHITECTURES):
        for trial in studies.trials(name):
            assert trial.state.name in {"COMPLETE", "FAIL"}, (name, trial.number, trial.state)
            if trial.state.name == "COMPLETE":
                completed[trial.user_attrs["key"]] = completed.get(trial.user_attrs["key"],
                                                                   0) + 1
    assert completed and set(completed.values()) == {1}  # no trial ran to the end twice
    assert lost_trials and all(completed.get(key) == 1 for key in lost_trials)
    supernets = [t for t in studies.trials(SUPERNETS) if t.state.name == "COMPLETE"]
    assert len(supernets) == 2
    failed = [t for name in (SUPERNETS, ARCHITECTURES) for t in studies.trials(name)
              if t.state.name == "FAIL"]
    assert {t.user_attrs["key"] for t in failed} == set(lost_trials)  # the lost, failed once
