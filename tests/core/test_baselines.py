"""Baselines and divergence end to end on the toy domain (trials run as real processes).

A diverged architecture is retried at smaller learning rates, then reported under its own
heading and nowhere else; the random-search baseline's table agrees with results.jsonl.
"""

import json

import numpy as np
import pytest

from dnas_core.runner import report as report_module
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.orchestrate import PoolSettings, run_experiment
from dnas_core.runner.study import SUPERNETS, Studies, default_storage
from tests.core.test_pipeline import SMALL, overrides, toy_in_trials, write_experiment

__all__ = ["toy_in_trials"]  # the autouse fixture: trial processes load the toy plugin

HUGE_LR = 1.0e6


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_a_diverged_architecture_is_retried_then_listed_apart(tmp_path, toy_registry,
                                                              monkeypatch):
    plotted = []
    real_plot = report_module.pareto_plot

    def spy(path, rows, *args):
        plotted.extend(rows)
        return real_plot(path, rows, *args)

    monkeypatch.setattr(report_module, "pareto_plot", spy)
    path = write_experiment(tmp_path / "exp.yaml", baseline="none",
                            architectures={"grid": {"train.optimizer.lr": [0.2, HUGE_LR]}})
    run_dir = tmp_path / "run"
    summary = run_experiment(run_dir, plan_experiment(toy_registry, experiment=path),
                             PoolSettings(["cpu"], jobs_per_device=2))
    rows = _rows(run_dir)
    diverged = [r for r in rows if r["hyperparameters"]["train.optimizer.lr"] == HUGE_LR]
    fine = [r for r in rows if r["hyperparameters"]["train.optimizer.lr"] == 0.2]
    assert diverged and fine
    for row in diverged:
        assert row["status"] == "diverged" and "val_logloss" not in row
        # tried at the configured LR, then twice at a tenth of the one before
        assert [a["lr_scale"] for a in row["failed_attempts"]] == pytest.approx([1, 0.1, 0.01])
        assert all("constant predictor" in a["reason"] or "non-finite" in a["reason"]
                   for a in row["failed_attempts"])
    assert all(r["status"] == "ok" and r["lr_scale"] == 1.0 for r in fine)

    assert summary["diverged_architectures"] == len(diverged)
    assert summary["trained_architectures"] == len(fine)
    assert summary["best_arch_id"] in {r["arch_id"] for r in fine}
    assert summary["failed_trials"] == 0
    assert {r["trial"] for r in plotted} == {r["trial"] for r in fine}

    report = (run_dir / "report.md").read_text()
    ranked, apart = report.split("## Diverged architectures (not ranked)")
    assert f"train.optimizer.lr={HUGE_LR}" not in ranked
    assert f"train.optimizer.lr={0.2}" in ranked
    assert all(r["arch_id"] in apart for r in diverged)


def test_random_baseline_table_matches_the_results(tmp_path, toy_registry):
    plan = plan_experiment(toy_registry, plugin="toy", overrides=overrides(SMALL))
    assert plan.baseline == "random"
    run_dir = tmp_path / "run"
    summary = run_experiment(run_dir, plan, PoolSettings(["cpu"], jobs_per_device=2))
    rows = _rows(run_dir)
    searched = [r for r in rows if r["role"] == "search"]
    random = [r for r in rows if r["role"] == "random"]
    assert searched and random
    # as many random architectures as the search trained (the toy space has two), plus
    # those the supernet's time would buy, up to the pool
    studies = Studies(default_storage(run_dir))
    (info,) = [v for k, v in studies.studies[SUPERNETS].user_attrs.items()
               if k.startswith("random:")]
    assert info["extra"] is not None
    assert len(random) == info["n_search"] + info["extra"]
    assert info["n_search"] == min(len(searched), len(info["pool"]))

    (found,) = summary["baselines"].values()
    models = {m["model"]: m for m in found["models"]}
    assert set(models) == {"constant predictor", "random search (best)", "search (best)"}
    best_random = min(random, key=lambda r: r["val_logloss"])
    assert models["random search (best)"]["arch_id"] == best_random["arch_id"]
    assert models["random search (best)"]["test"] == best_random["test_logloss"]
    assert models["random search (best)"]["count"] == len(random)
    best = min(searched, key=lambda r: r["val_logloss"])
    assert models["search (best)"]["test"] == best["test_logloss"]
    assert summary["best_arch_id"] == best["arch_id"]
    # the constant predictor predicts the training click rate: about log 2 on XOR labels
    assert abs(models["constant predictor"]["test"] - 0.693) < 0.02
    searched_losses = np.load(run_dir / best["test_row_losses"])
    assert searched_losses.mean() == pytest.approx(best["test_logloss"], abs=1e-6)
    for verdict in found["verdicts"]:
        baseline = models[verdict["baseline"]]
        assert abs(verdict["margin"] - (baseline["test"] - best["test_logloss"])) < 1e-12
        # the paired noise: per-row loss differences on the same test rows
        diff = np.load(run_dir / baseline["row_losses"]) - searched_losses
        paired = 2 * diff.std(ddof=1) / np.sqrt(best["test_rows"])
        assert verdict["noise"] == pytest.approx(paired, rel=1e-5)
        assert verdict["noise"] < 2 * np.hypot(baseline["test_se"], best["test_logloss_se"])

    report = (run_dir / "report.md").read_text()
    first_table = report.split("## Did the search beat the baselines? (toy)")[1]
    first_table = first_table.split("##")[0]
    label = "random search (best)" + (f" of {len(random)}" if len(random) > 1 else "")
    assert f"| {label} | {best_random['arch_id']}" in first_table  # the count is timing-based
    assert f"{best_random['test_logloss']:.4f} ± {best_random['test_logloss_se']:.4f}" \
        in first_table
    assert (f"Random search at equal compute: {info['n_search']} architectures, as many as "
            f"the search trained, plus {info['extra']} that the supernet's") in first_table
    assert "How far the search moved from uniform" in report
    # baselines are compared, never ranked with the searched architectures
    ranked = report.split("## All trained architectures")[1].split("##")[0]
    assert sum(line.startswith("| [") for line in ranked.splitlines()) == len(searched)
