"""DLRM cost models: hand-computed values, the joint (card x dim) expectation, the
normalised combination, and the measured-latency model on a cached table."""

from __future__ import annotations

import itertools

import pytest
import torch

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CombinedCost
from dnas_core.engine.latency import LatencyTable
from dnas_dlrm.models import (
    build_supernet,
    cost_models,
    default_cost,
    default_cost_terms,
    plain_spec,
)
from dnas_dlrm.models import costs as dlrm_costs
from dnas_dlrm.models.emb_card import hash_sizes
from dnas_dlrm.settings import DlrmSettings

CARDS = [3, 400, 70, 1000, 55]
N_DENSE = 4


def make(search, **kw):
    base = dict(search=search, embedding_dim=4, max_rows=500, bottom_mlp=[6], top_mlp=[5],
                emb_dim_options=[2, 4, 8], emb_card_options=[1.0, 0.1],
                mlp_size_options=[4, 8], mlp_max_layers=3)
    base.update(kw)
    s = DlrmSettings(**base)
    supernet = build_supernet(s, CARDS, N_DENSE)
    return s, supernet, {m.name: m for m in cost_models(s, CARDS, supernet)}


def inputs(batch: int):
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch, N_DENSE, generator=gen),
            torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in CARDS], 1))


def test_names_units_and_hand_computed_values_of_the_plain_model():
    s, _, models = make(["emb_dim"])
    assert {n: m.unit for n, m in models.items()} == {
        "emb_params": "parameters", "emb_bytes": "bytes", "mlp_flops": "FLOPs"}
    spec = plain_spec(s, CARDS, N_DENSE)
    arch = Architecture("dlrm", "plain", {}, spec)
    rows = [3, 400, 70, 500, 55]
    assert spec["top_mlp"] == [4 + 15, 5, 1]  # 6 vectors -> 15 pairs, plus the bottom's 4
    assert models["emb_params"].of(arch) == sum(rows) * 4
    assert models["emb_bytes"].of(arch) == sum(rows) * 4 * 4
    assert models["mlp_flops"].of(arch) == 2 * (4 * 6 + 6 * 4 + 19 * 5 + 5 * 1)


def test_joint_embedding_cost_is_the_expectation_over_independent_card_and_dim_choices():
    _, supernet, models = make(["emb_dim", "emb_card"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for d in (supernet.emb_dim, supernet.emb_card):
            d.theta.copy_(torch.randn(d.theta.shape, generator=gen))
    supernet.sample_expected()
    supernet(inputs(3))
    p_dim = torch.softmax(supernet.emb_dim.theta.detach().double(), -1)
    p_card = torch.softmax(supernet.emb_card.theta.detach().double(), -1)
    sizes = hash_sizes([min(c, 500) for c in CARDS], [1.0, 0.1])
    exact = sum(float(p_card[j, c] * p_dim[j, d]) * sizes[j][c] * [2, 4, 8][d]
                for j in range(len(CARDS)) for c, d in itertools.product(range(2), range(3)))
    got = models["emb_params"].expected(supernet)
    torch.testing.assert_close(got.double(), torch.full((3,), exact, dtype=torch.float64),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(models["emb_bytes"].expected(supernet), got * 4)
    assert models["emb_params"].scale() == sum(s[0] for s in sizes) * 8


@pytest.mark.parametrize("search", [["emb_dim", "emb_card", "bottom_mlp", "top_mlp"],
                                    ["emb_dim", "top_mlp"], ["emb_dim"]],
                         ids=lambda s: "+".join(s))
def test_every_fixed_route_expects_exactly_the_cost_of_its_architecture(search):
    """Including the MLP FLOPs of a draw whose widest embedding is narrower than the
    widest option: the sampled model's MLPs end and start at its own width."""
    _, supernet, models = make(search)
    gen = torch.Generator().manual_seed(3)
    widths = set()
    for trial in range(30):
        choices = supernet.sample_choices(gen)
        widest = trial % 3  # draw the dims below a chosen widest option, which one feature takes
        dims = torch.randint(0, widest + 1, (len(CARDS),), generator=gen)
        dims[trial % len(CARDS)] = widest
        choices["emb_dim"] = dims.tolist()
        arch = Architecture("dlrm", "joint", choices, supernet.decode(choices))
        widths.add(max(arch.spec["emb_dims"]))
        supernet.fix(choices)
        supernet(inputs(2))
        for name in ("emb_params", "mlp_flops"):
            torch.testing.assert_close(models[name].expected(supernet),
                                       torch.full((2,), models[name].of(arch)))
    assert widths == {2, 4, 8}  # every width was drawn, so every case was checked


def test_the_mlp_flops_gradient_rewards_narrower_embeddings():
    """The FLOPs a narrower widest table saves reach theta: lowering the widest option's
    logit lowers the expected MLP cost."""
    _, supernet, models = make(["emb_dim", "top_mlp"])
    supernet.sample_expected()
    supernet(inputs(3))
    p_width = supernet.width_probabilities()
    torch.testing.assert_close(p_width.sum(dim=1), torch.ones(3, dtype=torch.float64))
    models["mlp_flops"].expected(supernet).sum().backward()
    grad = supernet.emb_dim.theta.grad
    assert grad is not None and bool((grad[:, 2] > 0).all())  # the widest costs most


def test_mlp_flops_scale_is_the_deepest_widest_mlp():
    _, supernet, models = make(["bottom_mlp", "top_mlp"])
    top_in = 4 + 15
    expected = 2 * (4 * 8 + 8 * 8 + 8 * 4) + 2 * (top_in * 8 + 8 * 8 + 8 * 1)
    assert models["mlp_flops"].scale() == expected


def test_default_costs_and_their_normalised_combination():
    assert default_cost(DlrmSettings(search=["emb_dim"])) == "emb_params"
    assert default_cost(DlrmSettings(search=["emb_card"])) == "emb_params"
    assert default_cost(DlrmSettings(search=["bottom_mlp", "top_mlp"])) == "mlp_flops"
    assert default_cost_terms(DlrmSettings(search=["top_mlp"])) == {"mlp_flops": 1.0}
    joint = DlrmSettings(search=["emb_dim", "emb_card", "bottom_mlp", "top_mlp"])
    assert default_cost(joint) == "emb_params"
    terms = default_cost_terms(joint)
    assert terms == {"emb_params": 1.0, "mlp_flops": 1.0}
    _, supernet, models = make(joint.search)
    combined = CombinedCost([(models[n], w) for n, w in terms.items()])
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    supernet(inputs(4))
    value = combined.expected(supernet)
    assert value.shape == (4,) and bool(((value > 0) & (value <= 2)).all())
    torch.log(value).mean().backward()
    assert all(p.grad is not None for p in supernet.arch_parameters())


class StepClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def test_latency_cost_from_a_cached_table(tmp_path):
    s, supernet, _ = make(["emb_dim", "emb_card", "bottom_mlp", "top_mlp"])
    path = tmp_path / "lat.json"
    table = LatencyTable(path, "cpu", warmup=0, repeats=1, clock=StepClock())
    model = dlrm_costs.latency(supernet, table, batch=8)
    assert model.name == "latency" and model.unit == "ms"
    assert table.measured > 0 and path.exists()
    gen = torch.Generator().manual_seed(0)
    choices = {**supernet.sample_choices(gen), "emb_dim": [2] * len(CARDS)}
    arch = Architecture("dlrm", "joint", choices, supernet.decode(choices))
    supernet.fix(choices)
    supernet(inputs(2))
    torch.testing.assert_close(model.expected(supernet), torch.full((2,), model.of(arch)))
    # a second build on the same device measures nothing
    again = LatencyTable(path, "cpu", warmup=0, repeats=1, clock=StepClock())
    dlrm_costs.latency(supernet, again, batch=8)
    assert again.measured == 0


def test_latency_is_offered_only_when_a_device_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("DNAS_LATENCY_CACHE", str(tmp_path / "lat.json"))
    _, _, models = make(["bottom_mlp", "top_mlp"])
    assert "latency" not in models
    _, supernet, models = make(["bottom_mlp", "top_mlp"], latency_device="cpu")
    assert models["latency"].scale() > 0 and (tmp_path / "lat.json").exists()
    with pytest.raises(TypeError):
        cost_models(DlrmSettings(), CARDS, object())
