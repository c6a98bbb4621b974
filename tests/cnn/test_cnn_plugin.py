"""The CNN plugin: packaging, hooks, search space, exact costs, data and its CLI command."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import tomllib
import torch
from click.testing import CliRunner

from dnas_cnn import plugin
from dnas_cnn.costs import CostTables, LayeredCost, count_flops, flops_cost
from dnas_cnn.data import make_data, resolve_dataset
from dnas_cnn.sampled import SampledCNN
from dnas_cnn.settings import CnnSettings, RandomImages
from dnas_cnn.space import CnnSpace
from dnas_cnn.supernet import CnnSuperNet
from dnas_core import Architecture
from dnas_core.config.validate import ConfigError, build

PLUGIN_ROOT = Path(plugin.__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[2]
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_LATENCY = importlib.util.find_spec("dnas_core.engine.latency") is not None
DIGITS_INFO = {"channels": 1, "image_size": 8, "classes": 10}
RANDOM_INFO = {"channels": 3, "image_size": 50, "classes": 5}


def tiny_settings(**changes) -> CnnSettings:
    values = {"stem_width": 4, "layer_strides": [1, 2], "kernels": [3, 5], "widths": [4, 8],
              "skip": True}
    values.update(changes)
    return CnnSettings(**values)


def arch_of(space: CnnSpace, ops, widths) -> Architecture:
    return Architecture("cnn", "cnn", {"op": list(ops), "width": list(widths)},
                        space.decode(ops, widths))


def sample_choices(space: CnnSpace, count: int, seed: int):
    rng = random.Random(seed)
    options = space.layer_options()
    for _ in range(count):
        combo = [rng.choice(options) for _ in space.layers]
        yield [op for op, _ in combo], [w for _, w in combo]


# ----- packaging and discovery ----------------------------------------------------------------
def test_pyproject_depends_on_the_core_only():
    meta = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "dnas-cnn"
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in
             project["dependencies"]}
    assert "dnas" in names and "torch" in names
    assert "dnas-dlrm" not in names and "scikit-learn" not in names
    assert not any("==" in dep for dep in project["dependencies"])  # ranges, never pins
    assert any(dep.startswith("dnas>=") for dep in project["dependencies"])
    assert any(dep.startswith("torch>=") for dep in project["dependencies"])
    assert project["optional-dependencies"]["digits"] == ["scikit-learn>=1.3"]
    assert project["entry-points"]["dnas"] == {"cnn": "dnas_cnn.plugin"}
    assert "configs/*.yaml" in meta["tool"]["setuptools"]["package-data"]["dnas_cnn"]


def test_plugin_uses_only_the_public_core_api():
    """Defect 10 of the original code: the sample extension copied framework files."""
    for path in (PLUGIN_ROOT / "dnas_cnn").glob("*.py"):
        text = path.read_text()
        imports = [line for line in text.splitlines()
                   if line.lstrip().startswith(("from dnas_core", "import dnas_core"))]
        for line in imports:
            allowed = ("from dnas_core import", "from dnas_core.engine.latency")
            assert line.strip().startswith(allowed), \
                f"{path.name}: {line.strip()}"


def test_entry_point_registers_the_cnn_domain(monkeypatch):
    try:
        dist = importlib.metadata.distribution("dnas-cnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("dnas-cnn is not installed (pip install -e plugins/cnn)")
    from dnas_core.plugins.registry import make_registry

    monkeypatch.setenv("DNAS_PLUGINS", "cnn")
    registry = make_registry()
    info = registry.plugins["cnn"]
    assert info.error is None
    assert (info.distribution, info.version) == ("dnas-cnn", dist.version)
    assert info.domains == ["cnn"]
    assert set(info.hooks) == {"dnas_register_domains", "dnas_make_data", "dnas_make_supernet",
                               "dnas_make_sampled", "dnas_cost_models", "dnas_make_task",
                               "dnas_register_commands", "dnas_example_inputs"}
    domain = registry.domain("cnn")
    assert domain.settings_type is CnnSettings and domain.default_cost == "flops"
    assert domain.defaults.exists() and set(domain.presets) == {"random", "latency"}
    assert all(path.exists() for path in domain.presets.values())


def test_hooks_ignore_other_domains():
    settings = CnnSettings()
    assert plugin.dnas_make_data(domain="dlrm", settings=settings, seed=1) is None
    assert plugin.dnas_make_supernet(domain="dlrm", settings=settings, data_info={}) is None
    assert plugin.dnas_make_sampled(domain="dlrm", settings=settings, architecture=None,
                                    data_info={}) is None
    assert plugin.dnas_cost_models(domain="dlrm", settings=settings, data_info={},
                                   supernet=None) is None
    assert plugin.dnas_make_task(domain="dlrm", settings=settings, data_info={}) is None


def test_settings_are_validated_by_the_core_loader():
    settings = build(CnnSettings, {"kernels": [3, 5], "random": {"images": 100}}, "domain")
    assert settings.kernels == [3, 5] and settings.random.images == 100
    with pytest.raises(ConfigError, match="domain.kernels: must be odd"):
        build(CnnSettings, {"kernels": [3, 4]}, "domain")
    with pytest.raises(ConfigError, match="domain.dataset"):
        build(CnnSettings, {"dataset": "imagenet"}, "domain")
    with pytest.raises(ConfigError, match="domain.splits: split fractions must sum to 1"):
        build(CnnSettings, {"splits": {"weights": 0.9}}, "domain")


# ----- data --------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed (extra 'digits')")
def test_digits_data_and_seeded_splits():
    settings = CnnSettings(dataset="digits")
    data = make_data(settings, seed=3)
    assert data.info == {"dataset": "digits", **DIGITS_INFO, "images": 1797}
    inputs, targets = data.table.gather(np.array([0, 5]))
    assert inputs.shape == (2, 1, 8, 8) and targets.dtype == torch.long
    rows = np.concatenate([data.splits[s] for s in ("weights", "arch", "val", "test")])
    assert sorted(rows.tolist()) == list(range(1797))  # disjoint and complete
    again = make_data(settings, seed=3)
    other = make_data(settings, seed=4)
    for name in ("weights", "arch", "val", "test"):
        assert np.array_equal(data.splits[name], again.splits[name])
    assert not np.array_equal(data.splits["val"], other.splits["val"])


def test_random_image_task_is_the_papers_and_seeded():
    settings = CnnSettings(dataset="random", random=RandomImages(images=60))
    data = make_data(settings, seed=1)
    assert data.info == {"dataset": "random", **RANDOM_INFO, "images": 60}
    inputs, targets = data.table.gather(np.arange(60))
    assert inputs.shape == (60, 3, 50, 50) and set(targets.tolist()) <= set(range(5))
    again, _ = make_data(settings, seed=1).table.gather(np.arange(60))
    other, _ = make_data(settings, seed=2).table.gather(np.arange(60))
    assert torch.equal(inputs, again) and not torch.equal(inputs, other)


def test_auto_dataset_falls_back_to_random_without_scikit_learn(monkeypatch):
    import dnas_cnn.data

    monkeypatch.setattr(dnas_cnn.data, "digits_available", lambda: False)
    assert resolve_dataset(CnnSettings()) == "random"
    data = make_data(CnnSettings(random=RandomImages(images=40)), seed=1)
    assert data.info["dataset"] == "random"
    monkeypatch.setattr(dnas_cnn.data, "digits_available", lambda: True)
    assert resolve_dataset(CnnSettings()) == "digits"
    assert resolve_dataset(CnnSettings(dataset="random")) == "random"


# ----- supernet and sampled model ----------------------------------------------------------
@pytest.mark.parametrize("info", [DIGITS_INFO, RANDOM_INFO], ids=["digits", "random"])
def test_supernet_and_sampled_shapes(info):
    space = CnnSpace.build(CnnSettings(), info)
    net = CnnSuperNet(space)
    images = torch.randn(4, info["channels"], info["image_size"], info["image_size"])
    net.sample_soft(1.0, torch.Generator().manual_seed(0))
    assert net(images).shape == (4, info["classes"])
    assert set(net.decisions()) == {"op", "width"}
    assert net.op.theta.shape == (4, 4) and net.width.theta.shape == (4, 3)
    theta_ids = {id(p) for p in net.arch_parameters()}
    assert not theta_ids & {id(p) for p in net.weight_parameters()}
    for ops, widths in sample_choices(space, 5, seed=0):
        model = SampledCNN(space.decode(ops, widths))
        assert model(images).shape == (4, info["classes"])


def copy_shared_weights(net: CnnSuperNet, model: SampledCNN, spec) -> None:
    """Load the supernet's weights for one architecture into the sampled model."""
    model.stem.load_state_dict(net.stem.state_dict())
    channels = spec["stem"]["width"]
    for layer, chosen, target in zip(net.layers, spec["layers"], model.layers, strict=True):
        if chosen["op"] == "skip":
            continue
        source = layer.convs[net.space.kernels.index(chosen["kernel"])]
        width = chosen["width"]
        target[0].weight.data.copy_(source[0].weight.data[:width, :channels])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target[1], name).data.copy_(getattr(source[1], name).data[:width])
        channels = width
    model.head.weight.data.copy_(net.head.weight.data[:, :channels])
    model.head.bias.data.copy_(net.head.bias.data)


def test_fixed_supernet_computes_exactly_the_sampled_model():
    """Channel masking is exact: a supernet routed through one architecture is that
    architecture's model with the shared weights sliced out."""
    torch.manual_seed(0)
    space = CnnSpace.build(CnnSettings(), DIGITS_INFO)
    net = CnnSuperNet(space)
    for module in net.modules():  # non-trivial BN statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    images = torch.randn(6, 1, 8, 8)
    for ops, widths in sample_choices(space, 12, seed=1):
        spec = space.decode(ops, widths)
        model = SampledCNN(spec).eval()
        copy_shared_weights(net, model, spec)
        net.fix({"op": ops, "width": widths})
        torch.testing.assert_close(net(images), model(images), rtol=1e-4, atol=1e-5)


# ----- costs -------------------------------------------------------------------------------
@pytest.mark.parametrize("info", [DIGITS_INFO, RANDOM_INFO], ids=["digits", "random"])
def test_flops_of_an_architecture_equal_its_counted_flops(info):
    space = CnnSpace.build(CnnSettings(), info)
    flops = flops_cost(space)
    net = CnnSuperNet(space).eval()
    images = torch.randn(1, info["channels"], info["image_size"], info["image_size"])
    extremes = [([0] * 4, [0] * 4), ([2] * 4, [2] * 4), ([3] * 4, [0] * 4)]
    for i, (ops, widths) in enumerate(extremes + list(sample_choices(space, 16, seed=2))):
        arch = arch_of(space, ops, widths)
        counted = count_flops(SampledCNN(arch.spec), images)
        assert flops.of(arch) == counted
        if i < 5:  # the supernet routed through it costs the same (a slower check)
            net.fix(arch.choices)
            net(images)
            assert float(flops.expected(net)[0]) == pytest.approx(counted, rel=1e-6)
    low, high = flops.bounds()
    assert low == count_flops(SampledCNN(space.decode([3] * 4, [0] * 4)), images)
    assert high == count_flops(SampledCNN(space.decode([2] * 4, [2] * 4)), images)
    assert high <= flops.scale()


def random_tables(space: CnnSpace, seed: int) -> CostTables:
    """Costs that depend on input width arbitrarily (like measured latency)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(space.channel_values)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    return CostTables([rand(len(space.kernels), n, len(space.widths)) for _ in space.layers],
                      [rand(n) for _ in space.layers], rand(n), 0.25)


@pytest.mark.parametrize("skip", [True, False])
def test_expected_cost_is_the_mean_over_every_architecture(skip):
    """E[cost] from softmax(theta) equals sum over all raw choices of P(choices) x cost."""
    space = CnnSpace.build(tiny_settings(skip=skip, layer_strides=[1, 2, 1]), DIGITS_INFO)
    net = CnnSuperNet(space)
    with torch.no_grad():
        net.op.theta.normal_(generator=torch.Generator().manual_seed(1))
        net.width.theta.normal_(generator=torch.Generator().manual_seed(2))
    net.sample_expected()
    net(torch.randn(3, 1, 8, 8))
    op_p = torch.softmax(net.op.theta.detach().double(), -1)
    width_p = torch.softmax(net.width.theta.detach().double(), -1)
    for cost in (flops_cost(space), LayeredCost("random", "?", space, random_tables(space, 3))):
        expected = cost.expected(net)
        assert expected.shape == (3,)
        total = 0.0
        layers = range(len(space.layers))
        for ops in itertools.product(range(space.n_ops), repeat=len(space.layers)):
            for widths in itertools.product(range(len(space.widths)), repeat=len(space.layers)):
                p = float(np.prod([op_p[i, ops[i]] * width_p[i, widths[i]] for i in layers]))
                total += p * cost.of(arch_of(space, ops, widths))
        assert float(expected[0].detach()) == pytest.approx(total, rel=1e-5)
        # and it is differentiable with respect to theta
        net.zero_grad()
        cost.expected(net).sum().backward()
        assert net.op.theta.grad is not None and net.op.theta.grad.abs().sum() > 0
        assert net.width.theta.grad.abs().sum() > 0
        net(torch.randn(3, 1, 8, 8))


def test_soft_sampled_cost_is_per_example_and_between_bounds():
    space = CnnSpace.build(CnnSettings(), DIGITS_INFO)
    net = CnnSuperNet(space)
    net.sample_soft(0.5, torch.Generator().manual_seed(0))
    net(torch.randn(16, 1, 8, 8))
    costs = flops_cost(space).expected(net)
    low, high = flops_cost(space).bounds()
    assert costs.shape == (16,) and len(set(costs.tolist())) > 1
    assert (costs >= low - 1e-3).all() and (costs <= high + 1e-3).all()


@pytest.mark.skipif(not HAS_LATENCY, reason="dnas_core.engine.latency is not available")
def test_measured_latency_cost_is_cached_and_consistent(tmp_path):
    from dnas_cnn.costs import latency_cost

    space = CnnSpace.build(tiny_settings(), DIGITS_INFO)
    cache = tmp_path / "latency.json"
    latency = latency_cost(space, "cpu", 1, cache)
    assert not cache.exists()  # measured lazily, on first use
    net = CnnSuperNet(space).eval()
    arch = arch_of(space, [1, 2], [1, 0])
    value = latency.of(arch)
    assert value > 0 and cache.exists()
    net.fix(arch.choices)
    net(torch.randn(2, 1, 8, 8))
    assert float(latency.expected(net)[0]) == pytest.approx(value, rel=1e-6)
    entries = json.loads(cache.read_text())
    assert len(entries) == 1 and all(len(v) > 0 for v in entries.values())
    again = latency_cost(space, "cpu", 1, cache)
    assert again.of(arch) == value  # read back from the cache, not re-measured


def test_cost_models_hook_offers_flops_and_latency():
    settings = CnnSettings()
    space_net = plugin.dnas_make_supernet(domain="cnn", settings=settings, data_info=DIGITS_INFO)
    models = plugin.dnas_cost_models(domain="cnn", settings=settings, data_info=DIGITS_INFO,
                                     supernet=space_net)
    names = [m.name for m in models]
    assert names == (["flops", "latency"] if HAS_LATENCY else ["flops"])
    assert {m.unit for m in models} <= {"FLOPs", "ms"}


# ----- CLI ---------------------------------------------------------------------------------
def test_cnn_info_command_prints_the_search_space(tmp_path):
    @click.group()
    def cli():
        pass

    plugin.dnas_register_commands(cli=cli)
    runner = CliRunner()
    result = runner.invoke(cli, ["cnn", "info"])
    assert result.exit_code == 0, result.output
    assert "conv7x7" in result.output and "skip" in result.output
    assert "distinct architectures: 10,000" in result.output
    config = tmp_path / "run.yaml"
    config.write_text("domain:\n  dataset: random\n  widths: [4, 8]\n")
    result = runner.invoke(cli, ["cnn", "info", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["dataset"] == "random" and info["widths"] == [4, 8]
    assert info["architectures"] == 7 ** 4 and info["flops_min"] < info["flops_max"]
    assert info["ops"] == ["conv3x3", "conv5x5", "conv7x7", "skip"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DNAS_PLUGINS": "cnn"}
    return subprocess.run([sys.executable, "-m", "dnas_cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_real_cli_lists_cnn_and_runs_its_command():
    try:
        version = importlib.metadata.version("dnas-cnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("dnas-cnn is not installed (pip install -e plugins/cnn)")
    listing = run_cli("plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    (cnn,) = [p for p in json.loads(listing.stdout) if p["name"] == "cnn"]
    assert cnn["version"] == version and cnn["distribution"] == "dnas-cnn"
    assert cnn["error"] is None and "dnas_register_commands" in cnn["hooks"]
    info = run_cli("cnn", "info")
    assert info.returncode == 0, info.stderr
    assert "layer 3" in info.stdout


# ----- presets -----------------------------------------------------------------------------
def test_presets_select_the_random_task_and_the_latency_cost(tmp_path):
    from dnas_core.config.runspec import resolve
    from dnas_core.engine.search import SearchManager
    from dnas_core.plugins.registry import make_registry

    registry = make_registry([plugin], entry_points=False)
    spec = resolve(registry, "cnn", preset="random")
    assert spec.domain_settings.dataset == "random" and spec.cost_terms() == {"flops": 1.0}
    assert spec.settings.search.batch_size == 128  # the plugin's defaults apply
    if not HAS_LATENCY:
        return
    spec = resolve(registry, "cnn", preset="latency", overrides=[
        "domain.dataset=random", "domain.random.images=80", "domain.random.size=12",
        "domain.random.signal=1.0", "domain.widths=[4, 8]", "domain.layer_strides=[1, 2]",
        f"domain.latency_cache={tmp_path / 'latency.json'}", "search.batch_size=16",
        "search.warmup_epochs=0", "search.total_epochs=1", "search.arch_sampling={1: 2}"])
    assert spec.cost_terms() == {"latency": 1.0}
    settings, domain = spec.settings, spec.domain_settings
    data = plugin.dnas_make_data(domain="cnn", settings=domain, seed=1)
    net = plugin.dnas_make_supernet(domain="cnn", settings=domain, data_info=data.info)
    models = {m.name: m for m in plugin.dnas_cost_models(domain="cnn", settings=domain,
                                                         data_info=data.info, supernet=net)}
    before = net.op.theta.detach().clone()
    manager = SearchManager(net, data, plugin.dnas_make_task(domain="cnn", settings=domain,
                                                             data_info=data.info),
                            models["latency"], models, settings.search, domain="cnn",
                            space="cnn", seed=1, device=torch.device("cpu"),
                            run_dir=tmp_path / "run")
    archs = manager.run()
    assert archs and not torch.equal(before, net.op.theta.detach())
    assert (tmp_path / "latency.json").exists()
    for arch in archs:
        assert arch.costs["latency"] > 0 and arch.costs["flops"] > 0
