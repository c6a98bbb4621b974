"""The TPE baseline (``--baseline tpe``): its space, its asks and tells, and a run end to end.

The unit tests use an in-memory Optuna storage; the run trains the toy domain's trials as
real processes and checks the TPE study against results.jsonl and the report.
"""

import json
from statistics import fmean

import numpy as np
import optuna
import torch

from dnas_core.runner import tpe
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.orchestrate import PoolSettings, run_experiment
from dnas_core.runner.study import SUPERNETS, Studies, default_storage
from tests.core.test_pipeline import SMALL, overrides, toy_in_trials

__all__ = ["toy_in_trials"]  # the autouse fixture: trial processes load the toy plugin

#: eight grouped choices of four options, and one ungrouped choice of three
SPACE = {"ops": {"grouped": True, "options": [[0, 1, 2, 3]] * 8},
         "width": {"grouped": False, "options": [[0, 1, 2]]}}


def _score(choices):
    """A planted objective: every choice at option 0 is best."""
    return float(sum(choices["ops"]) + choices["width"])


def _run_tpe(storage, name, trials, startup=5):
    scores = []
    for slot in range(trials):
        number, choices = tpe.ask(storage, name, SPACE, seed=1_000 + slot, n_startup=startup)
        scores.append(_score(choices))
        tpe.tell(storage, name, number, scores[-1])
    return scores


def test_choice_options_leave_out_duplicate_options():
    from dnas_dlrm.models import build_supernet
    from dnas_dlrm.settings import DlrmSettings

    cards = [3, 10, 100, 1000, 50_000] + [20] * 21
    supernet = build_supernet(DlrmSettings(search=["emb_card"], max_rows=None,
                                           emb_card_options=[1.0, 0.1, 0.01, 0.001]), cards, 13)
    options = tpe.choice_options(supernet)
    assert options["emb_card"]["grouped"] is True
    groups = options["emb_card"]["options"]
    assert len(groups) == 26
    assert groups[1] == [0, 1]  # 10 values: 0.1, 0.01 and 0.001 are all a one-row table
    assert groups[4] == [0, 1, 2, 3]
    storage = optuna.storages.InMemoryStorage()
    for slot in range(12):
        number, choices = tpe.ask(storage, "s", options, seed=slot, n_startup=4)
        allowed = supernet.emb_card.allowed()
        assert all(allowed[j, c] for j, c in enumerate(choices["emb_card"]))
        tpe.tell(storage, "s", number, float(slot))
    # a proposal routes the supernet like any architecture
    supernet.fix(choices)
    assert torch.equal(supernet.emb_card._fixed, torch.tensor(choices["emb_card"]))


def test_tpe_learns_from_what_it_is_told():
    """Told the results, TPE's later proposals are far better than random draws; if the
    tells were lost it would stay random."""
    told = _run_tpe(optuna.storages.InMemoryStorage(), "planted", 40)
    rng = np.random.default_rng(0)
    random = [_score({"ops": list(rng.integers(0, 4, 8)), "width": int(rng.integers(0, 3))})
              for _ in range(40)]
    assert fmean(told[-15:]) < fmean(random[-15:]) - 3.0
    assert min(told) < min(random)
    # the same seeds and results give the same proposals: the baseline is reproducible
    assert _run_tpe(optuna.storages.InMemoryStorage(), "planted", 40) == told


def test_an_interrupted_trial_is_proposed_again_until_told():
    storage = optuna.storages.InMemoryStorage()
    number, choices = tpe.ask(storage, "s", SPACE, seed=3, n_startup=2)
    again, same = tpe.ask(storage, "s", SPACE, seed=99, n_startup=2, known=number)
    assert (again, same) == (number, choices)
    tpe.tell(storage, "s", number, None)  # failed: told once, never again
    tpe.tell(storage, "s", number, 1.0)
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.trials[number].state == optuna.trial.TrialState.FAIL
    fresh, _ = tpe.ask(storage, "s", SPACE, seed=3, n_startup=2, known=number)
    assert fresh != number


def test_startup_and_names():
    assert [tpe.startup_trials(n) for n in (1, 4, 10, 40)] == [2, 2, 5, 10]
    a = tpe.study_name("k", {"train.optimizer.lr": 0.1})
    assert a != tpe.study_name("k", {"train.optimizer.lr": 0.2})
    assert a != tpe.study_name("other", {"train.optimizer.lr": 0.1})
    slot = tpe.slots("emb_card", "k", range(2, 3))[0]
    assert slot == {"arch_id": tpe.slot_id("emb_card", "k", 2),
                    "source": {"role": "tpe", "slot": 2}}


def test_tpe_baseline_end_to_end(tmp_path, toy_registry):
    plan = plan_experiment(toy_registry, plugin="toy", overrides=overrides(SMALL))
    plan.baseline = "random,tpe"
    run_dir = tmp_path / "run"
    summary = run_experiment(run_dir, plan, PoolSettings(["cpu"]))
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["role"] for r in rows} == {"search", "random", "tpe"}
    asked = sorted((r for r in rows if r["role"] == "tpe"), key=lambda r: r["tpe_trial"])
    studies = Studies(default_storage(run_dir))
    budgets = {k.split(":")[0]: v for k, v in studies.studies[SUPERNETS].user_attrs.items()
               if k.startswith(("tpe:", "random:"))}
    info = budgets["tpe"]
    assert len(asked) == info["n_search"] + info["extra"] >= 1
    # the same budget as random search: one mean over both baselines' first architectures
    assert info["seconds_per_arch"] == budgets["random"]["seconds_per_arch"]
    assert len([r for r in rows if r["role"] == "random"]) == len(asked)
    # every proposal was trained once and told with the validation loss it reached
    (name,) = {r["tpe_study"] for r in asked}
    study = optuna.load_study(study_name=name, storage=default_storage(run_dir))
    assert [t.number for t in study.trials] == [r["tpe_trial"] for r in asked]
    for trial, row in zip(study.trials, asked):
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == row["val_logloss"]
        saved = json.loads((run_dir / "architectures" / f"{row['arch_id']}.json").read_text())
        assert saved["choices"] == {"op": trial.params["op"]}
        assert saved["spec"] == {"op": ["linear", "mlp"][trial.params["op"]]}
    (found,) = summary["baselines"].values()
    models = {m["model"]: m for m in found["models"]}
    best = min(asked, key=lambda r: r["val_logloss"])
    assert models["TPE (best)"]["arch_id"] == best["arch_id"]
    assert models["TPE (best)"]["test"] == best["test_logloss"]
    assert models["TPE (best)"]["count"] == len(asked)
    assert "random search (best)" in models
    report = (run_dir / "report.md").read_text()
    assert f"TPE at equal compute: {info['n_search']} architectures" in report
    label = "TPE (best)" + (f" of {len(asked)}" if len(asked) > 1 else "")
    assert f"| {label} | {best['arch_id']}" in report
