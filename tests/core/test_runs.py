"""dnas show / compare / runs / export on one finished toy run (trials as real processes)."""

import json
import shutil

import optuna
import pytest
import torch
from click.testing import CliRunner

import dnas_cli.main as cli_main
from dnas_core.runner import runs
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.export import choose_row, load_trained
from dnas_core.runner.orchestrate import PoolSettings, run_experiment
from dnas_core.runner.report import pareto_front
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, default_storage, owner
from tests.core.test_pipeline import ROOT, SMALL, overrides
from tests.export_check import run_without_dnas


@pytest.fixture(scope="module")
def registry():
    from dnas_core.plugins.registry import make_registry
    from tests.core import toy_plugin

    return make_registry([toy_plugin], entry_points=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, registry):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DNAS_PLUGIN_MODULES", "tests.core.toy_plugin")
        patch.setenv("PYTHONPATH", str(ROOT))
        # one searched architecture: the others are the baselines
        plan = plan_experiment(registry, plugin="toy", overrides=overrides(
            {**SMALL, "search.arch_sampling": {1.5: 1}}))
        path = tmp_path_factory.mktemp("runs") / "toy-run"
        run_experiment(path, plan, PoolSettings(["cpu"], jobs_per_device=2))
    return path


@pytest.fixture
def cli(registry, monkeypatch):
    monkeypatch.setattr(cli_main, "_registry", registry)

    def invoke(*args):
        return CliRunner().invoke(cli_main.cli, list(map(str, args)))
    return invoke


def searched(run_dir):
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return [r for r in rows if r["role"] == "search" and r["status"] == "ok"]


def test_show_reports_settings_trials_baselines_and_the_pareto_front(run_dir, registry):
    data = runs.show(run_dir, registry)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert data["state"] == "finished" and data["experiment"]["plugin"] == "toy"
    changed = {c["key"]: (c["default"], c["value"]) for c in data["changed_settings"]}
    assert changed["domain.rows"] == (2000, 1200)
    assert changed["train.epochs"][1] == 2 and changed["search.batch_size"][1] == 64
    assert "seed" not in changed  # unchanged settings are not listed
    studies = {name: optuna.load_study(study_name=name, storage=default_storage(run_dir))
               for name in (SUPERNETS, ARCHITECTURES)}
    assert data["trials"] == {name: {"COMPLETE": len(s.trials)} for name, s in studies.items()}
    assert data["best"]["arch_id"] == summary["best_arch_id"]
    assert data["best"]["val_logloss"] == summary["val_logloss"]
    assert data["baselines"] == summary["baselines"]
    models = [m["model"] for m in data["baselines"]["toy"]["models"]]
    assert models[0] == "constant predictor" and models[-1] == "search (best)"
    rows = searched(run_dir)
    front = [rows[i]["arch_id"] for i in
             pareto_front([(r["cost"], r["val_logloss"]) for r in rows])]
    assert sorted(p["arch_id"] for p in data["pareto"]) == sorted(front)
    assert [p["cost"] for p in data["pareto"]] == sorted(p["cost"] for p in data["pareto"])


def test_show_prints_tables_and_json_round_trips(run_dir, registry, cli):
    done = cli("show", run_dir)
    assert done.exit_code == 0, done.output
    best = runs.show(run_dir, registry)["best"]
    for text in ("Settings that differ from the defaults", "domain.rows", "1200",
                 "constant predictor", "search (best)", "Pareto front", best["arch_id"],
                 "complete"):
        assert text in done.output
    as_json = cli("show", run_dir, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == runs.show(run_dir, registry)


def test_compare_puts_runs_side_by_side(run_dir, tmp_path, cli):
    # a second run: the same one, every architecture 0.5 worse on validation, twice the cost
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other)
    rows = [json.loads(line) for line in (other / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row.get("val_logloss") is not None:
            row["val_logloss"] += 0.5
        row["cost"] *= 2
    (other / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = json.loads((run_dir / "summary.json").read_text())["best_arch_id"]
    data = runs.compare([run_dir, other])
    first, second = data["runs"]
    assert first["best"]["arch_id"] == best == second["best"]["arch_id"]
    assert second["best"]["val_logloss"] == pytest.approx(first["best"]["val_logloss"] + 0.5)
    assert second["best"]["cost"] == 2 * first["best"]["cost"]
    assert first["trained"] == len(searched(run_dir)) == second["trained"]
    assert set(first["verdicts"]["toy"]) >= {"constant predictor"}
    done = cli("compare", run_dir, other)
    assert done.exit_code == 0, done.output
    assert "toy-run" in done.output and "other-run" in done.output
    assert best in done.output and "vs constant predictor" in done.output
    as_json = cli("compare", run_dir, other, "--json")
    assert json.loads(as_json.output) == data


def test_runs_lists_states(run_dir, tmp_path, cli):
    shutil.copytree(run_dir, tmp_path / "a-finished")
    shutil.copytree(run_dir, tmp_path / "b-failed")
    (tmp_path / "b-failed" / "summary.json").unlink()
    for name, claim in (("c-running", True), ("d-stopped", False)):
        shutil.copytree(run_dir, tmp_path / name)
        study = optuna.load_study(study_name=ARCHITECTURES,
                                  storage=default_storage(tmp_path / name))
        if claim:  # claimed by this (live) process
            study.ask().set_user_attr("owner", owner())
        else:  # queued, nobody working on it
            study.enqueue_trial({})
    (tmp_path / "e-broken").mkdir()
    (tmp_path / "e-broken" / "study.db").write_text("not a database")
    (tmp_path / "not-a-run").mkdir()
    data = runs.list_runs(tmp_path)
    states = {r["name"]: r["state"] for r in data["runs"]}
    assert states == {"a-finished": "finished", "b-failed": "failed", "c-running": "running",
                      "d-stopped": "stopped", "e-broken": "unreadable"}
    best = json.loads((run_dir / "summary.json").read_text())["best_arch_id"]
    assert data["runs"][0]["best"]["arch_id"] == best
    assert data["runs"][2]["trials"]["architectures"]["done"] == \
        data["runs"][2]["trials"]["architectures"]["total"] - 1
    done = cli("runs", tmp_path)
    assert done.exit_code == 0, done.output
    for name in states:
        assert name in done.output
    assert "not-a-run" not in done.output and "stopped" in done.output
    assert json.loads(cli("runs", tmp_path, "--json").output) == data


def test_errors_are_one_line(run_dir, tmp_path, cli):
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    for checkpoint in damaged.glob("trials/arch-*/checkpoints/*.pt"):
        checkpoint.write_bytes(b"not a checkpoint")
    for args, message in (
            (("export", damaged, "--out", tmp_path / "m.pt2"), "cannot rebuild"),
            (("show", tmp_path / "missing"), "no such directory"),
            (("show", tmp_path), "not a run directory"),
            (("compare", tmp_path), "not a run directory"),
            (("runs", tmp_path / "missing"), "no such directory"),
            (("export", tmp_path, "--out", tmp_path / "m.pt2"), "not a run directory")):
        done = cli(*args)
        assert done.exit_code == 1 and message in done.output
        assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1


def test_export_loads_without_dnas_and_predicts_like_the_trained_model(run_dir, registry,
                                                                      tmp_path, cli):
    out = tmp_path / "export" / "toy.pt2"
    done = cli("export", run_dir, "--out", out, "--no-onnx")
    assert done.exit_code == 0, done.output
    sidecar = json.loads(out.with_suffix(".json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sidecar["arch_id"] == summary["best_arch_id"] and sidecar["role"] == "search"
    assert sidecar["metrics"]["val_logloss"] == summary["val_logloss"]
    assert sidecar["costs"]["flops"] == summary["cost"]
    assert sidecar["inputs"] == [{"dtype": "float32", "shape": ["batch", 4]}]
    trained = load_trained(registry, run_dir)
    data = trained.built.data
    inputs, _ = data.table.gather(data.splits["test"])
    torch.save({"inputs": inputs}, tmp_path / "rows.pt")
    with torch.no_grad():
        expected = trained.model(inputs)
    (outputs,) = run_without_dnas([(out, tmp_path / "rows.pt")], tmp_path)
    torch.testing.assert_close(outputs, expected, rtol=1e-6, atol=1e-7)

    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    other = next(r for r in rows if r["arch_id"] != summary["best_arch_id"])  # a baseline
    chosen = choose_row(rows, other["arch_id"])  # --arch picks that architecture's row
    assert chosen["arch_id"] == other["arch_id"] and chosen["role"] == other["role"]
    unknown = cli("export", run_dir, "--arch", "toy-nope", "--out", tmp_path / "x.pt2")
    assert unknown.exit_code == 1 and "--arch 'toy-nope'" in unknown.output
