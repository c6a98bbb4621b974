"""Optuna's TPE over a supernet's own decisions: the black-box baseline of ``--baseline tpe``.

The space is the supernet's: one categorical parameter per decision (per group of a grouped
decision) over its allowed options, so options that build the same operator count once, as
they do for the search and for random search. Each TPE architecture trial asks for its
architecture when it starts, not when it is queued: TPE proposes from every result told so
far, so with one pool slot the baseline is sequential, as TPE is meant to run; with several,
the trials still running count as lies (Optuna's ``constant_liar``) so parallel asks spread.

The ask lives in the trial process (which has the plugin to decode and price what TPE
proposes); the tell lives in the coordinator, from the recorded result, so a worker killed
after training loses nothing. A trial rerun after a crash finds its TPE trial number in its
attributes and trains the same proposal again. One TPE study per supernet and training grid
point, in the experiment's own storage: several workers share it like the stage studies.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from dnas_core.engine.supernet import SuperNet

if TYPE_CHECKING:
    from dnas_core.runner.study import Studies

ROLE = "tpe"
#: TPE's random start-up trials, as a share of the architectures the search trained
STARTUP_SHARE = 0.5
MAX_STARTUP = 10

#: decision name -> allowed option indices per group; ``None`` groups: ungrouped
ChoiceOptions = dict[str, dict[str, Any]]


def choice_options(supernet: SuperNet) -> ChoiceOptions:
    """The allowed options of every decision, in JSON (what TPE may propose)."""
    out: ChoiceOptions = {}
    for name, decision in supernet.decisions().items():
        allowed = decision.allowed().cpu()
        rows = allowed if decision.grouped else allowed.unsqueeze(0)
        out[name] = {"grouped": decision.grouped,
                     "options": [[i for i, ok in enumerate(row.tolist()) if ok] for row in rows]}
    return out


def startup_trials(n_search: int) -> int:
    """Random draws before TPE models anything: half the search's count, 2 to 10."""
    return max(2, min(MAX_STARTUP, round(STARTUP_SHARE * n_search)))


def study_name(supernet_key: str, params: dict[str, Any]) -> str:
    """The TPE study of one supernet and one point of the training grid."""
    text = json.dumps([supernet_key, params], sort_keys=True, default=str)
    return f"tpe-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def slot_id(space: str, supernet_key: str, slot: int) -> str:
    """The id a TPE trial is queued (and its directory named) under: its architecture is
    known only once the trial asks, so the slot names it."""
    digest = hashlib.sha256(f"{supernet_key}:{slot}".encode()).hexdigest()[:10]
    return f"{space}_tpe{slot}-{digest}"


def slots(space: str, supernet_key: str, numbers: range) -> list[dict[str, Any]]:
    """Queue records of TPE trials (no architecture yet: see :func:`ask`)."""
    return [{"arch_id": slot_id(space, supernet_key, n), "source": {"role": ROLE, "slot": n}}
            for n in numbers]


def _study(storage: optuna.storages.BaseStorage, name: str, seed: int,
           n_startup: int) -> optuna.Study:
    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup,
                                             multivariate=True, constant_liar=True)
    return optuna.create_study(study_name=name, storage=storage, direction="minimize",
                               load_if_exists=True, sampler=sampler)


def _param(decision: str, group: int, grouped: bool) -> str:
    return f"{decision}[{group}]" if grouped else decision


def _choices(space: ChoiceOptions, pick: Any) -> dict[str, Any]:
    """Raw decision choices (an int, or one per group) from ``pick(param, options)``."""
    choices: dict[str, Any] = {}
    for name, info in space.items():
        picks = [int(pick(_param(name, g, info["grouped"]), options))
                 for g, options in enumerate(info["options"])]
        choices[name] = picks if info["grouped"] else picks[0]
    return choices


def ask(storage: optuna.storages.BaseStorage, name: str, space: ChoiceOptions, *, seed: int,
        n_startup: int, known: int | None = None) -> tuple[int, dict[str, Any]]:
    """TPE's next proposal as ``(TPE trial number, choices)``. ``known``: the trial this
    architecture trial asked before it was interrupted, which is proposed again while it
    is still running. ``seed`` differs per queued trial: each asks in a fresh process,
    whose sampler would otherwise repeat the same start-up draw."""
    study = _study(storage, name, seed, n_startup)
    if known is not None:
        trials = study.get_trials(deepcopy=False)
        if known < len(trials) and trials[known].state == TrialState.RUNNING:
            params = trials[known].params
            return known, _choices(space, lambda param, _: params[param])
    trial = study.ask()
    return trial.number, _choices(space, trial.suggest_categorical)


def tell(storage: optuna.storages.BaseStorage, name: str, number: int,
         value: float | None) -> None:
    """Tell TPE how its proposal did (None: diverged or failed); a no-op once told."""
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    if number >= len(trials) or trials[number].state != TrialState.RUNNING:
        return
    if value is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, value)


def info_key(supernet_key: str) -> str:
    """The supernets study's attribute holding one supernet's TPE budget and space."""
    return f"tpe:{supernet_key}"


def propose(studies: Studies, frozen: optuna.trial.FrozenTrial, seed: int) -> dict[str, Any]:
    """The architecture a queued TPE trial trains: ``choices`` and where they came from
    (``tpe_study``, ``tpe_trial``, kept in the trial's attributes for a rerun)."""
    from dnas_core.runner.study import SUPERNETS

    supernet = frozen.user_attrs["supernet"]
    info = studies.studies[SUPERNETS].user_attrs[info_key(supernet)]
    name = study_name(supernet, studies.params(frozen))
    slot = int(json.loads(frozen.user_attrs["arch_json"])["source"]["slot"])
    number, choices = ask(studies.storage, name, info["choice_options"],
                          seed=seed * 1_000 + slot, n_startup=info["startup"],
                          known=frozen.user_attrs.get("tpe_trial"))
    studies.storage.set_trial_user_attr(frozen._trial_id, "tpe_trial", number)
    return {"choices": choices, "tpe_study": name, "tpe_trial": number}
