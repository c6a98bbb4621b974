import json

import pytest

from dnas_core.config import ConfigError
from dnas_core.pipeline import run_pipeline
from dnas_core.runspec import resolve

SMALL = ["search.batch_size=64", "search.warmup_epochs=0.5", "search.total_epochs=2",
         "search.alternate_every=0.5", "search.arch_sampling={1.5: 3}",
         "search.arch_optimizer.lr=0.2", "search.weights_optimizer.lr=0.2",
         "train.epochs=2", "train.batch_size=64", "train.optimizer.lr=0.2"]


def test_pipeline_writes_every_artifact_and_resumes(tmp_path, toy_registry):
    spec = resolve(toy_registry, "toy", overrides=SMALL)
    run_dir = tmp_path / "run"
    summary = run_pipeline(toy_registry, spec, run_dir, progress=False)
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        for key in ("arch_id", "search_space", "val_logloss", "val_auc", "val_calibration",
                    "cost", "params", "train_seconds"):
            assert key in row
        assert (run_dir / "architectures" / f"{row['arch_id']}.json").exists()
        arch = json.loads((run_dir / "architectures" / f"{row['arch_id']}.json").read_text())
        assert arch["costs"]["flops"] == row["cost"] and "probabilities" in arch
    assert summary["best_arch_id"] == min(rows, key=lambda r: r["val_logloss"])["arch_id"]
    assert 0 < summary["test_logloss"] < 1 and 0 <= summary["test_auc"] <= 1
    report = (run_dir / "report.md").read_text()
    assert "| arch_id |" in report and "flops (FLOPs)" in report
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))

    # running again finds everything done: nothing is retrained, results are unchanged
    before = (run_dir / "results.jsonl").read_text()
    assert run_pipeline(toy_registry, spec, run_dir, progress=False) == summary
    assert (run_dir / "results.jsonl").read_text() == before


def test_a_run_directory_refuses_other_settings(tmp_path, toy_registry):
    run_dir = tmp_path / "run"
    run_pipeline(toy_registry, resolve(toy_registry, "toy", overrides=SMALL), run_dir,
                 progress=False)
    other = resolve(toy_registry, "toy", overrides=SMALL + ["seed=2"])
    with pytest.raises(ConfigError, match="made with seed=1, not 2"):
        run_pipeline(toy_registry, other, run_dir, progress=False)


def test_unknown_cost_term_is_named(tmp_path, toy_registry):
    spec = resolve(toy_registry, "toy", overrides=SMALL + ["search.cost.terms={latency: 1}"])
    with pytest.raises(ConfigError, match="unknown cost 'latency'; toy offers flops"):
        run_pipeline(toy_registry, spec, tmp_path / "run", progress=False)
