"""Optuna glue: storages, the two stage studies, claiming and recovering trials.

Each stage of an experiment is one Optuna study in one storage: ``supernets`` (stage 1)
and ``architectures`` (stage 2). Grid points are enqueued up front and claimed by moving a
WAITING trial to RUNNING, which the storage does atomically, so several workers sharing a
storage never run the same trial twice. (Optuna's GridSampler picks grid points at random
and may repeat one under concurrency, which is why grids are enqueued instead.)
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from dnas_core.runner.experiment import Experiment, decode, encode, params_key

SUPERNETS = "supernets"
ARCHITECTURES = "architectures"

optuna.logging.set_verbosity(optuna.logging.WARNING)
# heartbeats are marked experimental; they are the storage's own mechanism we rely on
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


@dataclass(frozen=True)
class Liveness:
    """How workers sharing a storage tell a dead one from a slow one: each records a
    heartbeat for its running trials every ``heartbeat`` seconds, and any worker fails a
    RUNNING trial whose last heartbeat is older than ``grace`` seconds; Optuna then queues
    it again (up to 3 times) for whoever is alive. A shorter grace recovers sooner; it must
    outlast the longest pause of a loaded machine."""

    heartbeat: int = 20
    grace: int = 120

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat < self.grace:
            raise ValueError(f"the grace period ({self.grace} s) must be longer than the "
                             f"heartbeat interval ({self.heartbeat} s), both positive")


def open_storage(url: str, liveness: Liveness = Liveness()) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite, postgresql, mysql) or ``journal:PATH`` for a journal file.

    RDB storages record heartbeats, so trials of a worker that died on another machine are
    failed after the grace period and retried by ``RetryFailedTrialCallback``.
    """
    if url.startswith("journal:"):
        path = url[len("journal:"):].removeprefix("//")
        backend = optuna.storages.journal.JournalFileBackend(path)  # type: ignore[attr-defined]
        return optuna.storages.JournalStorage(backend)
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:  # optuna >= 4.9 renamed the callback and its argument
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=3)}
    else:
        callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
    return optuna.storages.RDBStorage(url, heartbeat_interval=liveness.heartbeat,
                                      grace_period=liveness.grace, **callback)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(value: str | None) -> bool:
    """True for trials claimed by a process on this host that no longer exists."""
    if not value or ":" not in value:
        return False
    host, pid = value.rsplit(":", 1)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Studies:
    """The two stage studies of one experiment in one storage."""

    def __init__(self, storage_url: str, experiment: Experiment | None = None, seed: int = 1,
                 liveness: Liveness = Liveness()):
        self.url = storage_url
        self.liveness = liveness
        self.storage = open_storage(storage_url, liveness)
        if experiment is None:
            stored = optuna.load_study(study_name=SUPERNETS, storage=self.storage)
            experiment = Experiment.from_json(stored.user_attrs["experiment"])
        self.experiment = experiment
        stages = {SUPERNETS: experiment.supernets, ARCHITECTURES: experiment.architectures}
        self.stages = stages
        self.studies = {
            name: optuna.create_study(
                study_name=name, storage=self.storage, direction="minimize",
                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                pruner=(optuna.pruners.MedianPruner(n_startup_trials=2)
                        if stage.prune else optuna.pruners.NopPruner()))
            for name, stage in stages.items()}
        first = self.studies[SUPERNETS]
        if "experiment" in first.user_attrs:
            self.experiment = Experiment.from_json(first.user_attrs["experiment"])
        else:
            first.set_user_attr("experiment", experiment.to_json())
            self._enqueue_stage(SUPERNETS, {}, {"kind": "supernet"})

    # ----- queueing ------------------------------------------------------------------------
    def trials(self, name: str, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        return self.studies[name].get_trials(deepcopy=False,
                                             states=tuple(states) if states else None)

    def _enqueue_stage(self, name: str, fixed: dict[str, Any], attrs: dict[str, Any]) -> None:
        """Enqueue one stage's trials, skipping any whose key is already queued or done."""
        stage = self.stages[name]
        taken = {t.user_attrs.get("key") for t in self.trials(name)
                 if t.state != TrialState.FAIL or t.user_attrs.get("final")}
        if stage.sampled:
            points = [dict(fixed, _repeat=i) for i in range(stage.trial_count())]
        else:
            points = [dict(fixed, **{k: encode(v) for k, v in p.items()})
                      for p in stage.grid_points()]
        for point in points:
            key = params_key(point)
            if key in taken:
                continue
            # the architecture is an attribute, not a parameter: each one has its own id
            params = {k: v for k, v in point.items() if k not in ("_repeat", "arch", "role")}
            self.studies[name].enqueue_trial(params, user_attrs={**attrs, "key": key})

    def enqueue_architectures(self, supernet_key: str, architectures: list[dict[str, Any]]) -> None:
        """Queue each architecture x the training grid. A baseline architecture (its
        ``source.role`` is ``reference`` or ``random``) is its own trial even when the
        search drew the same one."""
        for arch in architectures:
            role = arch.get("source", {}).get("role", "search")
            fixed = {"arch": arch["arch_id"]} if role == "search" else \
                {"arch": arch["arch_id"], "role": role}
            self._enqueue_stage(ARCHITECTURES, fixed,
                                {"kind": "arch", "supernet": supernet_key, "role": role,
                                 "arch_id": arch["arch_id"], "arch_json": json.dumps(arch)})

    # ----- claiming ------------------------------------------------------------------------
    def claim(self, name: str) -> optuna.Trial | None:
        """Move one WAITING trial to RUNNING (atomic in the storage) and suggest its
        parameters; None when the stage has nothing waiting."""
        study = self.studies[name]
        study_id = self.storage.get_study_id_from_name(name)
        for frozen in self.storage.get_all_trials(study_id, deepcopy=False,
                                                  states=(TrialState.WAITING,)):
            try:
                if not self.storage.set_trial_state_values(frozen._trial_id,
                                                           TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            trial = optuna.Trial(study, frozen._trial_id)
            for key, dist in self.stages[name].distributions().items():
                suggest(trial, key, dist)
            trial.set_user_attr("owner", owner())
            return trial
        return None

    def params(self, trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
        """The trial's setting overrides, decoded."""
        return {k: decode(v) for k, v in trial.params.items()}

    def heartbeat(self, trial_id: int) -> None:
        if isinstance(self.storage, optuna.storages.RDBStorage):
            self.storage.record_heartbeat(trial_id)

    # ----- recovery ------------------------------------------------------------------------
    def orphans(self) -> list[tuple[str, FrozenTrial]]:
        """RUNNING trials whose worker died: local dead pids, and (through heartbeats)
        stale trials of other machines, which Optuna fails and re-enqueues itself."""
        found = []
        for name, study in self.studies.items():
            optuna.storages.fail_stale_trials(study)
            for trial in self.trials(name, [TrialState.RUNNING]):
                if owner_is_dead(trial.user_attrs.get("owner")):
                    found.append((name, trial))
        return found

    def requeue(self, name: str, trial: FrozenTrial) -> None:
        """Fail an orphaned trial and enqueue the same parameters again."""
        self.studies[name].tell(trial.number, state=TrialState.FAIL)
        attrs = {k: v for k, v in trial.user_attrs.items() if k != "owner"}
        self.studies[name].enqueue_trial(dict(trial.params), user_attrs=attrs)


def suggest(trial: optuna.Trial, key: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """Ask the trial for one parameter; enqueued (fixed) values come back as they are."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    floats = cast(optuna.distributions.FloatDistribution, dist)
    return trial.suggest_float(key, floats.low, floats.high, log=floats.log)
