"""All four parts searched at once, probabilities out of every space (defect 1), parameter
groups, and sparse-gradient clipping (defect 8) on sampled models."""

from __future__ import annotations

import json

import pytest
import torch

from dnas_core.config.settings import OptimizerSettings
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CombinedCost, CostLoss
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm
from dnas_dlrm.models import (
    build_sampled,
    build_supernet,
    cost_models,
    default_cost_terms,
    plain_spec,
)
from dnas_dlrm.models.backbone import module_flops
from dnas_dlrm.settings import DlrmSettings

CARDS = [3, 400, 70, 1000, 55, 9, 31]
N_DENSE = 6
ALL = ["emb_dim", "emb_card", "bottom_mlp", "top_mlp"]
SPACES = [["emb_dim"], ["emb_card"], ["bottom_mlp", "top_mlp"], ["bottom_mlp"], ["top_mlp"],
          ALL]


def settings(search, **kw) -> DlrmSettings:
    base = dict(search=search, embedding_dim=4, max_rows=300, bottom_mlp=[6], top_mlp=[5],
                emb_dim_options=[2, 4, 8], emb_card_options=[1.0, 0.1, 0.01],
                mlp_size_options=[4, 8, 12], mlp_max_layers=4)
    base.update(kw)
    return DlrmSettings(**base)


def inputs(batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, N_DENSE, generator=gen) * 3,
            torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in CARDS], 1))


def in_unit_interval(out: torch.Tensor) -> bool:
    return bool(((out > 0) & (out < 1)).all())


@pytest.mark.parametrize("search", SPACES, ids=lambda s: "+".join(s))
def test_every_space_outputs_click_probabilities(search):
    s = settings(search)
    torch.manual_seed(0)
    supernet = build_supernet(s, CARDS, N_DENSE)
    x = inputs(16)
    supernet.sample_soft(0.5, torch.Generator().manual_seed(1))
    soft = supernet(x)
    supernet.sample_expected()
    expected = supernet(x)
    spec = supernet.decode(supernet.sample_choices(torch.Generator().manual_seed(2)))
    sampled = build_sampled(s, spec, CARDS, N_DENSE)(x)
    plain = build_sampled(s, plain_spec(s, CARDS, N_DENSE), CARDS, N_DENSE)(x)
    for out in (soft, expected, sampled, plain):
        assert out.shape == (16,) and in_unit_interval(out)


def test_joint_supernet_trains_both_phases_and_samples_a_consistent_model():
    s = settings(ALL, self_interaction=True)
    torch.manual_seed(0)
    supernet = build_supernet(s, CARDS, N_DENSE)
    names = set(supernet.decisions())
    assert {"emb_dim", "emb_card", "bottom_mlp.output", "top_mlp.layer3"} <= names
    models = {m.name: m for m in cost_models(s, CARDS, supernet)}
    loss_cost = CombinedCost([(models[n], w) for n, w in default_cost_terms(s).items()])
    cost_loss = CostLoss("additive", coef=0.1)
    weights_opt = OptimizerSet(OptimizerSettings(lr=0.1), supernet.weight_param_groups(),
                               supernet.sparse_groups)
    arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=0.05)
    theta_before = [p.detach().clone() for p in supernet.arch_parameters()]
    x, y = inputs(32), (torch.rand(32, generator=torch.Generator().manual_seed(9)) < 0.3).float()
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    for phase in ("weights", "arch"):
        for p in supernet.arch_parameters():
            p.requires_grad_(phase == "arch")
        for p in supernet.weight_parameters():
            p.requires_grad_(phase == "weights")
        out = supernet(x)
        task = torch.nn.functional.binary_cross_entropy(out, y)
        total = cost_loss(task, loss_cost.expected(supernet))
        assert torch.isfinite(total)
        weights_opt.zero_grad()
        arch_opt.zero_grad()
        total.backward()
        if phase == "weights":
            clip_grad_norm(weights_opt.params(), 1.0)
            weights_opt.step()
            # theta is not among the weights, so the weights step never moved it (defect 4)
            for before, p in zip(theta_before, supernet.arch_parameters()):
                assert torch.equal(before, p.detach())
        else:
            arch_opt.step()
    moved = [not torch.equal(b, p.detach())
             for b, p in zip(theta_before, supernet.arch_parameters())]
    assert all(moved)

    choices = supernet.sample_choices(torch.Generator().manual_seed(5))
    spec = supernet.decode(choices)
    arch = Architecture("dlrm", s.space, choices, spec)
    arch = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))
    model = build_sampled(s, arch.spec, CARDS, N_DENSE)
    out = model(x)
    assert out.shape == (32,) and in_unit_interval(out)
    assert model.embedding_parameters() == models["emb_params"].of(arch)
    assert module_flops(model.bottom_mlp) + module_flops(model.top_mlp) == \
        models["mlp_flops"].of(arch)
    assert set(spec) == {"emb_dims", "hash_sizes", "bottom_mlp", "top_mlp"}


@pytest.mark.parametrize("search", SPACES, ids=lambda s: "+".join(s))
def test_weight_groups_partition_the_weights_and_exclude_theta(search):
    s = settings(search)
    supernet = build_supernet(s, CARDS, N_DENSE)
    groups = supernet.weight_param_groups()
    assert set(groups) == {"embeddings", "dense"}
    listed = [id(p) for g in groups.values() for p in g]
    weights = [id(p) for p in supernet.weight_parameters()]
    assert len(listed) == len(set(listed)) and set(listed) == set(weights)
    assert not {id(p) for p in supernet.arch_parameters()} & set(weights)
    assert len(supernet.arch_parameters()) == len(supernet.decisions()) > 0
    model = build_sampled(s, supernet.decode(supernet.sample_choices()), CARDS, N_DENSE)
    sampled_groups = model.weight_param_groups()
    ids = [id(p) for g in sampled_groups.values() for p in g]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert model.sparse_groups == {"embeddings"}


def test_gradient_clipping_handles_a_sampled_models_sparse_gradients():
    s = settings(ALL)
    supernet = build_supernet(s, CARDS, N_DENSE)
    model = build_sampled(s, supernet.decode(supernet.sample_choices(
        torch.Generator().manual_seed(0))), CARDS, N_DENSE)
    x = inputs(64)
    (model(x) * 1000).sum().backward()
    params = list(model.parameters())
    assert any(p.grad.is_sparse for p in params)
    grads = [p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad for p in params]
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert norm > 1.0
    returned = float(clip_grad_norm(params, 1.0))
    assert returned == pytest.approx(norm, rel=1e-5)
    clipped = [p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad for p in params]
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped]))) == \
        pytest.approx(1.0, rel=1e-4)
    optimizer = OptimizerSet(OptimizerSettings(lr=0.1), model.weight_param_groups(),
                             model.sparse_groups)
    optimizer.step()


def test_sampled_models_of_the_joint_space_never_crash():
    s = settings(ALL)
    supernet = build_supernet(s, CARDS, N_DENSE)
    gen = torch.Generator().manual_seed(8)
    x = inputs(4)
    for _ in range(25):
        model = build_sampled(s, supernet.decode(supernet.sample_choices(gen)), CARDS, N_DENSE)
        out = model(x)
        out.sum().backward()
        assert out.shape == (4,)
