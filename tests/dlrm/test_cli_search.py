"""`dnas search --plugin dlrm` end to end through the installed command line, tiny."""

import json
import os
import subprocess
import sys

from dnas_core.engine.architecture import Architecture
from dnas_dlrm import models
from dnas_dlrm.settings import DlrmSettings

TINY = ["domain.data.synthetic_rows=6000", "domain.bottom_mlp=[32]", "domain.top_mlp=[32]",
        "domain.max_rows=500", "search.total_epochs=2", "search.arch_sampling={1: 2}",
        "search.batch_size=512", "train.epochs=2", "train.batch_size=256"]


def dnas(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dnas_cli.main", *args], capture_output=True,
                          text=True, env=env, check=False)


def test_search_writes_results_whose_costs_match_the_sampled_models(tmp_path):
    env = dict(os.environ, DNAS_PLUGINS="dlrm")
    run_dir = tmp_path / "run"
    args = ["search", "--plugin", "dlrm", "--out", str(run_dir), "--devices", "cpu"]
    for item in TINY:
        args += ["--set", item]
    done = dnas(*args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {r["role"] for r in rows} == {"search", "reference", "random"}
    assert summary["trained_architectures"] == len([r for r in rows if r["role"] == "search"])
    assert summary["diverged_architectures"] == 0
    assert {r["search_space"] for r in rows} == {"emb_dim"}
    assert "emb_dim.png" in (run_dir / "report.md").read_text()
    settings = DlrmSettings(max_rows=500, bottom_mlp=[32], top_mlp=[32])
    for row in rows:
        arch = Architecture.load(run_dir / "architectures" / f"{row['arch_id']}.json")
        if row["role"] == "search":  # baselines are not drawn from theta
            assert len(arch.probabilities["emb_dim"]) == 26  # one row per feature
        assert row["cost"] == arch.costs["emb_params"]
        # the trained model's size: embeddings as costed, plus the dense layers
        sampled = models.build_sampled(settings, arch.spec, arch.spec["hash_sizes"], 13)
        tables = sum(p.numel() for name, p in sampled.named_parameters() if "emb" in name)
        assert tables == row["costs"]["emb_params"]
        assert row["params"] == sum(p.numel() for p in sampled.parameters())
        assert 0 < row["val_logloss"] < 1 and 0 < row["val_auc"] < 1


def test_configuration_errors_name_the_key(tmp_path):
    env = dict(os.environ, DNAS_PLUGINS="dlrm")
    done = dnas("search", "--plugin", "dlrm", "--out", str(tmp_path / "r"),
                "--set", "domain.search=[emb_size]", env=env)
    assert done.returncode != 0
    assert "domain.search[0]: expected one of 'bottom_mlp', 'top_mlp', 'emb_dim', 'emb_card'" \
        in done.stderr
    assert not (tmp_path / "r").exists()  # nothing started


def test_plugins_lists_both_shipped_plugins():
    env = dict(os.environ)
    env.pop("DNAS_PLUGINS", None)
    done = dnas("plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    found = {p["name"]: p for p in json.loads(done.stdout)}
    assert found["dlrm"]["distribution"] == "dnas-dlrm" and found["dlrm"]["version"]
    assert found["cnn"]["distribution"] == "dnas-cnn"
    assert "dnas_make_supernet" in found["dlrm"]["hooks"]
    assert found["dlrm"]["domains"] == ["dlrm"] and found["dlrm"]["error"] is None
