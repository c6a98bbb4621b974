"""The experiment pipeline end to end on the toy domain: trials run as real processes."""

import json
from pathlib import Path

import pytest
import yaml

from dnas_core.config.validate import ConfigError
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.orchestrate import ExperimentFailed, PoolSettings, run_experiment
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Studies, default_storage

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"search.batch_size": 64, "search.warmup_epochs": 0.5, "search.total_epochs": 2,
         "search.alternate_every": 0.5, "search.arch_sampling": {1.5: 3},
         "search.arch_optimizer.lr": 0.2, "search.weights_optimizer.lr": 0.2,
         "train.epochs": 2, "train.batch_size": 64, "train.optimizer.lr": 0.2,
         # the linear toy operator cannot beat the constant predictor on XOR: only a
         # blow-up counts as divergence here
         "train.divergence.margin": 1.0, "domain.rows": 1200}


@pytest.fixture(autouse=True)
def toy_in_trials(monkeypatch):
    """Trial processes load the toy plugin module, like the test process."""
    monkeypatch.setenv("DNAS_PLUGIN_MODULES", "tests.core.toy_plugin")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def overrides(values):
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def write_experiment(path: Path, **stages) -> Path:
    path.write_text(yaml.safe_dump({"plugin": "toy", "set": SMALL, **stages}))
    return path


def test_single_search_writes_every_artifact(tmp_path, toy_registry):
    plan = plan_experiment(toy_registry, plugin="toy", overrides=overrides(SMALL))
    run_dir = tmp_path / "run"
    summary = run_experiment(run_dir, plan, PoolSettings(["cpu"]))
    every = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    rows = [r for r in every if r["role"] == "search"]
    assert {r["role"] for r in every} == {"search", "random"}  # the toy has no reference
    assert rows and summary["trained_architectures"] == len(rows)
    for row in rows:
        for key in ("arch_id", "search_space", "val_logloss", "val_auc", "val_calibration",
                    "cost", "params", "train_seconds", "test_logloss"):
            assert key in row
        arch = json.loads((run_dir / "architectures" / f"{row['arch_id']}.json").read_text())
        assert arch["costs"]["flops"] == row["cost"] and "probabilities" in arch
    assert summary["best_arch_id"] == min(rows, key=lambda r: r["val_logloss"])["arch_id"]
    report = (run_dir / "report.md").read_text()
    for heading in ("Statistics for toy", "Test results of the selected architectures",
                    "toy lowest loss", "toy most efficient", "pareto.png"):
        assert heading in report
    assert (run_dir / "pareto.png").stat().st_size > 0
    assert list(run_dir.rglob("events.out.tfevents.*"))

    # the same command again: nothing is rerun, nothing changes
    before = (run_dir / "results.jsonl").read_text()
    assert run_experiment(run_dir, plan, PoolSettings(["cpu"])) == summary
    assert (run_dir / "results.jsonl").read_text() == before


def test_grids_expand_and_stage_two_trains_each_architecture_per_grid_point(tmp_path,
                                                                            toy_registry):
    path = write_experiment(
        tmp_path / "exp.yaml",
        supernets={"grid": {"search.temperature_decay": [0.1, 0.3]}},
        architectures={"grid": {"train.optimizer.lr": [0.1, 0.3]}})
    plan = plan_experiment(toy_registry, experiment=path)
    run_dir = tmp_path / "run"
    run_experiment(run_dir, plan, PoolSettings(["cpu"], jobs_per_device=2))
    studies = Studies(default_storage(run_dir))
    supernets = studies.trials(SUPERNETS)
    assert sorted(t.params["search.temperature_decay"] for t in supernets) == [0.1, 0.3]
    archs = studies.trials(ARCHITECTURES)
    # a random-baseline architecture may equal a searched one: it is its own trial
    pairs = [(t.user_attrs["supernet"], t.user_attrs["arch_id"], t.user_attrs["role"],
              t.params["train.optimizer.lr"]) for t in archs]
    assert len(pairs) == len(set(pairs))  # no trial twice
    per_arch = {}
    for supernet, arch, role, lr in pairs:
        per_arch.setdefault((supernet, arch, role), set()).add(lr)
    assert all(lrs == {0.1, 0.3} for lrs in per_arch.values())
    assert all(t.state.name == "COMPLETE" for t in supernets + archs)


def test_bad_grid_key_fails_before_anything_runs(tmp_path, toy_registry):
    path = write_experiment(tmp_path / "exp.yaml",
                            architectures={"grid": {"train.optimiser.lr": [0.1]}})
    with pytest.raises(ConfigError, match="train.optimiser: unknown key"):
        plan_experiment(toy_registry, experiment=path)


def test_resuming_with_other_settings_is_refused(tmp_path, toy_registry):
    run_dir = tmp_path / "run"
    run_experiment(run_dir, plan_experiment(toy_registry, plugin="toy",
                                            overrides=overrides(SMALL)), PoolSettings(["cpu"]))
    other = plan_experiment(toy_registry, plugin="toy", overrides=overrides(SMALL) + ["seed=2"])
    with pytest.raises(ConfigError, match="made by another experiment"):
        run_experiment(run_dir, other, PoolSettings(["cpu"]))


def test_unknown_cost_term_fails_the_trial_and_is_reported(tmp_path, toy_registry):
    plan = plan_experiment(toy_registry, plugin="toy",
                           overrides=overrides(SMALL) + ["search.cost.terms={latency: 1}"])
    run_dir = tmp_path / "run"
    with pytest.raises(ExperimentFailed, match=r"no searched architecture finished training "
                       r"\(1 trials failed, 0 diverged\); first: supernets/0: failed: exit 1: "
                       r".*unknown cost 'latency'.*\(log: .*/trials/supernet-\w+/log.txt\)"):
        run_experiment(run_dir, plan, PoolSettings(["cpu"]))
    log = next(run_dir.glob("trials/supernet-*/log.txt")).read_text()
    assert "unknown cost 'latency'; toy offers flops" in log


def test_faulty_trials_are_handled_while_the_others_finish(tmp_path, toy_registry):
    path = write_experiment(
        tmp_path / "exp.yaml", trial_timeout=30, max_oom_retries=1, baseline="none",
        architectures={"grid": {"domain.fault": ["none", "oom", "crash", "hang", "nan"]}})
    plan = plan_experiment(toy_registry, experiment=path)
    run_dir = tmp_path / "run"
    summary = run_experiment(run_dir, plan, PoolSettings(["cpu"], jobs_per_device=2,
                                                         timeout=plan.trial_timeout,
                                                         max_oom_retries=plan.max_oom_retries))
    studies = Studies(default_storage(run_dir))
    by_fault = {}
    for trial in studies.trials(ARCHITECTURES):
        by_fault.setdefault(trial.params["domain.fault"], []).append(trial)
    assert all(t.state.name == "COMPLETE" for t in by_fault["none"])
    for fault, status in [("oom", "oom"), ("crash", "failed"), ("hang", "timeout"),
                          ("nan", "diverged")]:
        for trial in by_fault[fault]:
            assert trial.state.name == "FAIL"
            assert trial.user_attrs["error"].startswith(status), trial.user_attrs["error"]
    crash_key = by_fault['crash'][0].user_attrs['key']
    crash_log = next(run_dir.glob(f"trials/arch-*-{crash_key}/log.txt"))
    assert "the toy plugin crashes on purpose" in crash_log.read_text()
    oom_log = next(run_dir.glob(f"trials/arch-*-{by_fault['oom'][0].user_attrs['key']}/log.txt"))
    assert "attempt 2" in oom_log.read_text()  # requeued once, then given up
    every = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    rows = [r for r in every if r["status"] == "ok"]
    assert {r["hyperparameters"]["domain.fault"] for r in rows} == {"none"}
    assert all(r["val_logloss"] == r["val_logloss"] for r in rows)  # no NaN recorded
    # a NaN loss is retried at smaller LRs, then reported as diverged, never as a result
    nan_rows = [r for r in every if r["hyperparameters"]["domain.fault"] == "nan"]
    assert nan_rows and all(r["status"] == "diverged" and "val_logloss" not in r
                            and "non-finite" in r["failed_attempts"][0]["reason"]
                            for r in nan_rows)
    assert summary["failed_trials"] == 3 * len(by_fault["none"])
    assert summary["diverged_architectures"] == len(by_fault["nan"])
    # each failed trial is listed with the line that says why and its log (issue 10, item 8)
    failed = {f["trial"]: f for f in summary["failed"]}
    assert len(failed) == summary["failed_trials"]
    for fault, line in [("oom", "oom: exit 75: CUDA out of memory: "), ("crash", "failed: exit 1: "
                        "ValueError: the toy plugin crashes on purpose"), ("hang", "timeout:")]:
        for trial in by_fault[fault]:
            listed = failed[f"architectures/{trial.number}"]
            assert listed["error"].startswith(line), listed
            assert (run_dir / listed["log"]).is_file()
    report = (run_dir / "report.md").read_text()
    assert f"**{len(failed)} trials failed**" in report and "## Failed trials" in report
    for listed in failed.values():
        assert f"| {listed['trial']} | {listed['error']} | [{listed['log']}]" in report


def test_optuna_prunes_a_hopeless_training_run(tmp_path, toy_registry):
    path = write_experiment(
        tmp_path / "exp.yaml", baseline="none",
        # one architecture (the argmax), trained with three learning rates in this order
        set={**SMALL, "search.sample_argmax": True, "train.epochs": 3},
        architectures={"grid": {"train.optimizer.lr": [0.2, 0.25, 1e-5]}, "prune": True})
    plan = plan_experiment(toy_registry, experiment=path)
    run_dir = tmp_path / "run"
    run_experiment(run_dir, plan, PoolSettings(["cpu"]))
    states = {t.params["train.optimizer.lr"]: t.state.name
              for t in Studies(default_storage(run_dir)).trials(ARCHITECTURES)}
    assert states == {0.2: "COMPLETE", 0.25: "COMPLETE", 1e-5: "PRUNED"}
