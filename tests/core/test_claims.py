"""Claiming: a point queued twice (two workers queueing at the same moment) runs once, as
the lower-numbered copy; the copy is failed quietly, never listed as an error."""

from __future__ import annotations

import yaml
from optuna.trial import TrialState

from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.study import ARCHITECTURES, Studies, default_storage
from tests.core.test_resume import EXPERIMENT


def test_a_point_queued_twice_is_claimed_once(tmp_path, toy_registry):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT))
    studies = Studies(default_storage(tmp_path),
                      plan_experiment(toy_registry, experiment=experiment))
    study = studies.studies[ARCHITECTURES]
    attrs = {"kind": "arch", "supernet": "s1", "role": "random", "arch_id": "toy-1",
             "arch_json": "{}", "key": "same-point"}
    for _ in range(2):  # what two racing workers' queueing can leave behind
        study.enqueue_trial({"train.optimizer.lr": 0.2}, user_attrs=attrs)
    first = studies.claim(ARCHITECTURES)
    assert first is not None and first.number == 0
    assert studies.claim(ARCHITECTURES) is None  # the copy is not run
    copy = studies.trials(ARCHITECTURES)[1]
    assert copy.state == TrialState.FAIL and copy.user_attrs["duplicate_of"] == 0
    assert not copy.user_attrs.get("final")  # not a failure to report
