"""Ids read back from a (shared, writable by others) storage never name a path outside
the run directory."""

import json

import pytest
from optuna.trial import TrialState

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.paths import UnsafeName
from dnas_core.runner.experiment import Experiment
from dnas_core.runner.orchestrate import Coordinator, PoolSettings
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Studies, default_storage
from dnas_core.runner.worker import trial_dir

CRAFTED = "x/../../../escaped"


@pytest.fixture
def studies(tmp_path):
    run_dir = tmp_path / "deep" / "er" / "run"
    run_dir.mkdir(parents=True)
    return run_dir, Studies(default_storage(run_dir), Experiment(plugin="toy"))


def _tamper(studies: Studies, name: str, **attrs) -> None:
    trial = studies.trials(name)[0]
    for key, value in attrs.items():
        studies.storage.set_trial_user_attr(trial._trial_id, key, value)


def _everything(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_an_honest_trial_gets_its_directory(studies):
    run_dir, studies = studies
    trial = studies.trials(SUPERNETS)[0]
    assert trial_dir(run_dir, trial) == run_dir / "trials" / f"supernet-{trial.user_attrs['key']}"


@pytest.mark.parametrize("key", [CRAFTED, "../" * 3 + "abcdef012345", "ABCDEF012345", 7, None])
def test_a_crafted_supernet_key_is_refused(studies, key):
    run_dir, studies = studies
    _tamper(studies, SUPERNETS, key=key)
    with pytest.raises(UnsafeName, match="key of trial 0"):
        trial_dir(run_dir, studies.trials(SUPERNETS)[0])


def test_a_crafted_arch_id_is_refused(studies):
    run_dir, studies = studies
    arch = {"arch_id": CRAFTED, "spec": {}, "source": {}}
    studies.enqueue_architectures("0123456789ab", [arch])
    trial = studies.trials(ARCHITECTURES)[0]
    assert trial.user_attrs["arch_id"] == CRAFTED
    with pytest.raises(UnsafeName, match="arch_id of trial 0"):
        trial_dir(run_dir, trial)


def test_the_coordinator_fails_a_tampered_trial_and_writes_nothing(studies, tmp_path):
    run_dir, studies = studies
    _tamper(studies, SUPERNETS, key=CRAFTED)
    before = _everything(tmp_path)
    coordinator = Coordinator(run_dir, studies, PoolSettings(["cpu"]))
    assert coordinator.next_job() is None
    trial = studies.trials(SUPERNETS)[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["final"] is True
    assert "refusing key of trial 0" in trial.user_attrs["error"]
    assert _everything(tmp_path) == before


def test_an_architecture_from_a_crafted_space_is_not_saved_outside(tmp_path):
    directory = tmp_path / "run" / "architectures"
    arch = Architecture("toy", "../../../escaped", {}, {"op": "mlp"})
    # the id matches the contents (from_dict accepts it): only the name check stops it
    assert Architecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    with pytest.raises(UnsafeName, match="architecture id"):
        arch.save(directory)
    assert _everything(tmp_path) == []
    good = Architecture("toy", "toy", {}, {"op": "mlp"}).save(directory)
    assert good.parent == directory and good.name == f"toy-{good.stem[-10:]}.json"


def test_recovering_a_tampered_orphan_fails_it_and_writes_nothing(studies, tmp_path):
    import socket
    import subprocess

    run_dir, studies = studies
    trial = studies.trials(SUPERNETS)[0]
    studies.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _tamper(studies, SUPERNETS, key=CRAFTED, owner=f"{socket.gethostname()}:{dead.pid}")
    before = _everything(tmp_path)
    Coordinator(run_dir, studies, PoolSettings(["cpu"])).recover()
    trial = studies.trials(SUPERNETS)[0]
    assert trial.state == TrialState.FAIL and "refusing key" in trial.user_attrs["error"]
    assert _everything(tmp_path) == before
