"""CNN searches that run: the picked architecture beats random ones, and the CLI end to end."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_cnn import plugin
from dnas_cnn.costs import count_flops
from dnas_core import Architecture
from dnas_core.config.runspec import resolve
from dnas_core.engine.search import SearchManager
from dnas_core.engine.training import train_sampled
from dnas_core.plugins.registry import make_registry

REPO = Path(__file__).resolve().parents[2]
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
CPU = torch.device("cpu")


def short(spec) -> str:
    return " ".join("skip" if layer["op"] == "skip" else f"k{layer['kernel']}w{layer['width']}"
                    for layer in spec["layers"])


@pytest.mark.skipif(not HAS_SKLEARN, reason="needs scikit-learn's digits (pip install "
                                            "'dnas-cnn[digits]'); the random-image task has "
                                            "nothing to learn")
def test_searched_architecture_beats_random_ones_of_the_same_flops(tmp_path):
    """With fixed seeds, the most likely architecture after a short search on digits has
    a lower validation loss than the mean of five random architectures whose FLOPs are
    within 25% of it, all trained with the same budget and seed."""
    registry = make_registry([plugin], entry_points=False)
    spec = resolve(registry, "cnn", overrides=[
        "seed=1", "domain.dataset=digits", "search.warmup_epochs=2", "search.total_epochs=5",
        "search.arch_sampling={3: 1}", "search.sample_argmax=true", "train.epochs=3"])
    settings, domain = spec.settings, spec.domain_settings
    hook = registry.hook
    data = hook.dnas_make_data(domain="cnn", settings=domain, seed=settings.seed)
    task = hook.dnas_make_task(domain="cnn", settings=domain, data_info=data.info)
    torch.manual_seed(settings.seed)
    supernet = hook.dnas_make_supernet(domain="cnn", settings=domain, data_info=data.info)
    flops = hook.dnas_cost_models(domain="cnn", settings=domain, data_info=data.info,
                                  supernet=supernet)[0][0]
    assert flops.name == "flops"
    manager = SearchManager(supernet, data, task, flops, {"flops": flops}, settings.search,
                            domain="cnn", space="cnn", seed=settings.seed, device=CPU,
                            run_dir=tmp_path)
    (picked,) = manager.run()
    assert picked.choices == supernet.sample_choices(argmax=True)

    def val_metrics(arch_spec) -> dict[str, float]:
        torch.manual_seed(settings.seed)
        model = hook.dnas_make_sampled(domain="cnn", settings=domain,
                                       architecture=Architecture("cnn", "cnn", {}, arch_spec),
                                       data_info=data.info)
        return train_sampled(model, data, task, settings.train, seed=settings.seed,
                             device=CPU).best_metrics

    target = picked.costs["flops"]
    assert target == count_flops(hook.dnas_make_sampled(
        domain="cnn", settings=domain, architecture=picked, data_info=data.info),
        data.table.gather(np.array([0]))[0])
    rng = random.Random(0)
    candidates = list(supernet.space.enumerate_choices())
    rng.shuffle(candidates)
    others: list[dict] = []
    for ops, widths in candidates:
        arch_spec = supernet.space.decode(ops, widths)
        if (abs(flops.of_spec(arch_spec) - target) <= 0.25 * target
                and arch_spec != picked.spec and arch_spec not in others):
            others.append(arch_spec)
        if len(others) == 5:
            break
    assert len(others) == 5
    mine = val_metrics(picked.spec)
    theirs = [val_metrics(s) for s in others]
    summary = (f"picked {short(picked.spec)}: loss {mine['loss']:.4f} acc "
               f"{mine['accuracy']:.4f}; random: " + "; ".join(
                   f"{short(s)} loss {m['loss']:.4f} acc {m['accuracy']:.4f}"
                   for s, m in zip(others, theirs, strict=True)))
    assert mine["loss"] < np.mean([m["loss"] for m in theirs]), summary
    assert mine["accuracy"] > 0.9, summary


def test_cli_search_runs_the_papers_random_image_task(tmp_path):
    """`dnas search --plugin cnn --preset random` end to end (tiny, through the real CLI)."""
    try:
        importlib.metadata.distribution("dnas-cnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("dnas-cnn is not installed (pip install -e plugins/cnn)")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DNAS_PLUGINS": "cnn",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "dnas_cli.main", "search", "--plugin", "cnn", "--preset", "random",
         "--out", str(out),
         "--set", "domain.random.images=120", "--set", "domain.random.size=20",
         "--set", "domain.widths=[4, 8]", "--set", "domain.layer_strides=[1, 2]",
         "--set", "search.batch_size=32", "--set", "search.warmup_epochs=1",
         "--set", "search.total_epochs=2", "--set", "search.arch_sampling={1: 1}",
         "--set", "train.epochs=1", "--set", "train.batch_size=32"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
            if line.strip()]
    archs = sorted((out / "architectures").glob("*.json"))
    assert rows and archs
    for path in archs:
        arch = Architecture.load(path)
        assert arch.domain == "cnn" and arch.spec["in_channels"] == 3
        assert arch.spec["classes"] == 5 and set(arch.costs) >= {"flops"}
        model = plugin.dnas_make_sampled(domain="cnn", settings=None, architecture=arch,
                                         data_info={})
        assert arch.costs["flops"] == count_flops(model, torch.zeros(1, 3, 20, 20))
    assert {row["arch_id"] for row in rows} <= {Architecture.load(p).arch_id for p in archs}
