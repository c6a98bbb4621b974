"""dnas export on a tiny DLRM run of every search space: the programs load where dnas cannot
be imported and predict exactly what the trained models predict on the test rows."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from dnas_core.plugins.registry import make_registry
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.export import export_run, load_trained
from dnas_core.runner.orchestrate import PoolSettings, run_experiment
from dnas_dlrm import plugin
from tests.export_check import run_without_dnas

SPACES = {"emb_dim": ["emb_dim"], "emb_card": ["emb_card"], "mlp": ["bottom_mlp", "top_mlp"],
          "joint": ["emb_dim", "emb_card", "bottom_mlp", "top_mlp"]}
TINY = {"domain.data.synthetic_rows": 3000, "domain.bottom_mlp": [16], "domain.top_mlp": [16],
        "domain.embedding_dim": 8, "domain.emb_dim_options": [4, 8], "domain.max_rows": 200,
        "domain.mlp_size_options": [16, 32], "domain.mlp_max_layers": 2,
        "search.warmup_epochs": 0.5, "search.total_epochs": 1, "search.alternate_every": 0.5,
        "search.arch_sampling": {0.5: 1}, "search.batch_size": 512, "train.epochs": 1,
        "train.batch_size": 512,
        # one epoch on 3000 rows need not beat the constant predictor: only blow-ups count
        "train.divergence.margin": 1.0}


@pytest.fixture(scope="module")
def registry():
    return make_registry([plugin], entry_points=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, registry):
    """One experiment, one supernet per search space, no baselines."""
    where = tmp_path_factory.mktemp("dlrm-export")
    experiment = where / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({
        "plugin": "dlrm", "set": TINY, "baseline": "none",
        "supernets": {"grid": {"domain.search": list(SPACES.values())}}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DNAS_PLUGINS", "dlrm")
        plan = plan_experiment(registry, experiment=experiment)
        run_experiment(where / "run", plan, PoolSettings(["cpu"], jobs_per_device=4))
    return where / "run"


def test_every_space_exports_and_predicts_like_the_trained_model(run_dir, registry, tmp_path):
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    by_space = {r["search_space"]: r for r in rows if r["status"] == "ok"}
    assert set(by_space) == set(SPACES)
    jobs, expected = [], []
    for space, row in by_space.items():
        out = tmp_path / f"{space}.pt2"
        sidecar = export_run(registry, run_dir, out, row["arch_id"], onnx=False)
        assert sidecar["search_space"] == space and sidecar["arch_id"] == row["arch_id"]
        assert sidecar["inputs"] == [{"dtype": "float32", "shape": ["batch", 13]},
                                     {"dtype": "int64", "shape": ["batch", 26]}]
        assert sidecar["output"] == {"dtype": "float32", "shape": ["batch"]}
        assert sidecar["feature_order"]["sparse"][0] == "C1"
        assert len(sidecar["feature_order"]["dense"]) == 13
        assert sidecar["preprocessing"]["source"].startswith("synthetic")
        assert sidecar["costs"] == row["costs"] and sidecar["metrics"]["val_logloss"] == \
            row["val_logloss"]
        trained = load_trained(registry, run_dir, row["arch_id"])
        data = trained.built.data
        inputs, _ = data.table.gather(data.splits["test"])
        torch.save({"inputs": inputs}, tmp_path / f"{space}-rows.pt")
        with torch.no_grad():
            expected.append(trained.model(inputs))
        jobs.append((out, tmp_path / f"{space}-rows.pt"))
    for space, got, want in zip(by_space, run_without_dnas(jobs, tmp_path), expected):
        assert got.shape == (len(want),), space
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=space)


def test_prepared_data_facts_reach_the_sidecar(tmp_path):
    """Preprocessing facts come from the prepared data's manifest (hash sizes, vocabulary
    mode, dense transform), for a served model to apply the same."""
    from dnas_dlrm.data import PrepareOptions, prepare, write_tsv
    from dnas_dlrm.settings import DlrmSettings

    source = write_tsv(tmp_path / "day.tsv", 400, seed=11)
    prepare([source], tmp_path / "prep", PrepareOptions(hash_sizes={"C3": 64}, seed=1))
    settings = DlrmSettings()
    settings.data.path = str(tmp_path / "prep")
    bundle = plugin.dnas_make_data(domain="dlrm", settings=settings, seed=1)
    facts = bundle.info["preprocessing"]
    assert facts["source"] == "prepared" and facts["path"] == str(tmp_path / "prep")
    assert "log(1 + max(x, 0))" in facts["dense_transform"]
    assert facts["vocabulary_modes"] == ["hash", "vocab"]
    c3 = next(e for e in facts["encodings"] if e["feature"] == "C3")
    assert c3 == {"feature": "C3", "mode": "hash", "hash_size": 64}
    assert facts["cardinalities"] == bundle.info["cardinalities"]
    example = plugin.dnas_example_inputs(domain="dlrm", settings=settings,
                                         data_info=bundle.info, batch_size=5)
    dense, sparse = example
    assert dense.shape == (5, 13) and dense.dtype == torch.float32
    assert sparse.shape == (5, 26) and sparse.dtype == torch.int64
    assert (sparse < torch.tensor(bundle.info["cardinalities"])).all() and (sparse >= 0).all()


def test_each_space_is_ranked_by_its_loss_cost_in_that_cost_unit(run_dir):
    """The joint space's loss adds normalised costs, so its rows' cost is that normalised
    value (each term at most 1 for the largest model), never parameters plus FLOPs; each
    space keeps its own unit, in units.json and in the report."""
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    units = json.loads((run_dir / "units.json").read_text())
    assert set(units) == set(SPACES)
    assert units["joint"]["cost"] == "normalised" and units["emb_dim"]["cost"] == "parameters"
    assert units["mlp"]["cost"] == "FLOPs"
    for row in rows:
        if row["search_space"] == "joint":
            assert 0 < row["cost"] < 2
        elif row["search_space"] == "mlp":
            assert row["cost"] == row["costs"]["mlp_flops"]
        else:
            assert row["cost"] == row["costs"]["emb_params"]
    report = (run_dir / "report.md").read_text()
    assert "## Statistics for joint" in report
    joint_stats = report.split("## Statistics for joint")[1].split("##")[0]
    assert "cost (normalised)" in joint_stats
