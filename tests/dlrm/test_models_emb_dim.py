"""Embedding-dimension search: prefix masks, sampled models of any widths (defect 5),
parameters equal to the cost, sparse gradients, JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

from dnas_core.engine.architecture import Architecture
from dnas_dlrm.models import build_sampled, build_supernet, cost_models
from dnas_dlrm.models.backbone import EmbeddingTables
from dnas_dlrm.models.emb_dim import DimMask
from dnas_dlrm.settings import DlrmSettings
from tests.dlrm.batches import random_inputs

CARDS = [3, 40, 7, 1000, 55, 260, 90, 12]
N_DENSE = 5
OPTIONS = [2, 4, 8, 16]


def settings(**kw) -> DlrmSettings:
    base = dict(search=["emb_dim"], emb_dim_options=OPTIONS, max_rows=100,
                bottom_mlp=[12], top_mlp=[10])
    base.update(kw)
    return DlrmSettings(**base)


def inputs(batch: int, seed: int = 0):
    return random_inputs(CARDS, N_DENSE, batch, seed)


def test_prefix_mask_mix_equals_the_weighted_sum_of_masked_vectors():
    gen = torch.Generator().manual_seed(0)
    mask = DimMask([8, 2, 4])  # order of options does not matter
    vectors = torch.randn(5, 3, 8, generator=gen)
    weights = torch.softmax(torch.randn(5, 3, 3, generator=gen), dim=-1)
    naive = sum(weights[..., o:o + 1] * torch.cat(
        [vectors[..., :d], torch.zeros(5, 3, 8 - d)], dim=-1) for o, d in enumerate([8, 2, 4]))
    torch.testing.assert_close(mask(vectors, weights), naive)


def test_supernet_outputs_probabilities_and_expected_params_cost():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        supernet.emb_dim.theta.copy_(torch.randn(supernet.emb_dim.theta.shape, generator=gen))
    supernet.sample_expected()
    out = supernet(inputs(6))
    assert out.shape == (6,) and bool(((out > 0) & (out < 1)).all())
    cost = {m.name: m for m in cost_models(s, CARDS, supernet)}["emb_params"]
    probs = supernet.emb_dim.probabilities().double()
    rows = [min(c, 100) for c in CARDS]
    exact = sum(rows[j] * float(probs[j] @ torch.tensor(OPTIONS, dtype=torch.float64))
                for j in range(len(CARDS)))
    torch.testing.assert_close(cost.expected(supernet).double(),
                               torch.full((6,), exact, dtype=torch.float64), rtol=1e-6, atol=0)
    assert cost.scale() == sum(rows) * 16


@pytest.mark.parametrize("draw", ["random", "all_smallest", "no_largest", "all_largest",
                                  "one_largest"])
def test_sampled_models_of_any_widths_build_run_and_count_their_cost(draw):
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    cost = {m.name: m for m in cost_models(s, CARDS, supernet)}["emb_params"]
    n = len(CARDS)
    gen = torch.Generator().manual_seed(3)
    picks = {"random": torch.randint(0, 4, (n,), generator=gen).tolist(),
             "all_smallest": [0] * n, "no_largest": [1, 2] * (n // 2),
             "all_largest": [3] * n, "one_largest": [0] * (n - 1) + [3]}[draw]
    choices = {"emb_dim": picks}
    spec = supernet.decode(choices)
    arch = Architecture("dlrm", "emb_dim", choices, spec)
    model = build_sampled(s, spec, CARDS, N_DENSE)
    width = max(OPTIONS[p] for p in picks)
    assert spec["bottom_mlp"][-1] == width  # padded to this model's widest table
    out = model(inputs(9))
    assert out.shape == (9,) and bool(((out > 0) & (out < 1)).all())
    out.sum().backward()
    assert model.embedding_parameters() == cost.of(arch)
    assert model.embedding_parameters() == sum(min(c, 100) * OPTIONS[p]
                                               for c, p in zip(CARDS, picks))
    # the supernet routed through the same choices expects exactly that cost
    supernet.fix(choices)
    supernet(inputs(2))
    torch.testing.assert_close(cost.expected(supernet),
                               torch.full((2,), float(cost.of(arch))))


def test_many_random_draws_never_crash():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    gen = torch.Generator().manual_seed(7)
    for _ in range(30):
        spec = supernet.decode(supernet.sample_choices(gen))
        model = build_sampled(s, spec, CARDS, N_DENSE)
        assert model(inputs(3)).shape == (3,)


def test_narrow_tables_are_zero_padded_to_the_widest():
    tables = EmbeddingTables([5, 6, 7], [2, 8, 4], sparse=False)
    out = tables(torch.tensor([[1, 2, 3]]))
    assert out.shape == (1, 3, 8)
    assert bool((out[0, 0, 2:] == 0).all()) and bool((out[0, 2, 4:] == 0).all())
    torch.testing.assert_close(out[0, 1], tables.groups[2].weight[2])
    assert sum(p.numel() for p in tables.parameters()) == 5 * 2 + 6 * 8 + 7 * 4


def test_fixed_supernet_equals_sampled_model_with_inherited_weights():
    # with the widest option drawn somewhere the shapes agree, so copying the kept columns
    # of each table and the MLPs must reproduce the supernet's output exactly
    s = settings(self_interaction=True)
    torch.manual_seed(0)
    supernet = build_supernet(s, CARDS, N_DENSE)
    picks = [3, 0, 1, 2, 3, 0, 2, 1]
    choices = {"emb_dim": picks}
    supernet.fix(choices)
    model = build_sampled(s, supernet.decode(choices), CARDS, N_DENSE)
    model.bottom_mlp.load_state_dict(supernet.bottom_mlp.state_dict())
    model.top_mlp.load_state_dict(supernet.top_mlp.state_dict())
    full = supernet.embeddings.tables
    with torch.no_grad():
        for group, members in zip(model.embeddings.groups, model.embeddings.members):
            for i, j in enumerate(members):
                src = full.weight[full.offsets[j]:full.offsets[j] + full.rows[j]]
                dst = group.weight[group.offsets[i]:group.offsets[i] + group.rows[i]]
                dst.copy_(src[:, :group.dim])
    x = inputs(11)
    torch.testing.assert_close(model(x), supernet(x))


def test_theta_is_apart_from_weights_and_embedding_gradients_are_sparse():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    theta = {id(p) for p in supernet.arch_parameters()}
    assert theta == {id(supernet.emb_dim.theta)}
    assert not theta & {id(p) for p in supernet.weight_parameters()}
    groups = supernet.weight_param_groups()
    listed = [id(p) for g in groups.values() for p in g]
    assert sorted(listed) == sorted(id(p) for p in supernet.weight_parameters())
    assert supernet.sparse_groups == {"embeddings"}
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    supernet(inputs(8)).sum().backward()
    assert all(p.grad.is_sparse for p in groups["embeddings"])
    assert all(not p.grad.is_sparse for p in groups["dense"] if p.grad is not None)
    assert supernet.emb_dim.theta.grad is not None


def test_dense_gradients_when_sparse_embeddings_are_off():
    s = settings(sparse_embeddings=False)
    supernet = build_supernet(s, CARDS, N_DENSE)
    assert supernet.sparse_groups == set()
    supernet.sample_expected()
    supernet(inputs(4)).sum().backward()
    assert not supernet.embeddings.tables.weight.grad.is_sparse


def test_architecture_json_round_trip_rebuilds_the_same_model():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    choices = supernet.sample_choices(torch.Generator().manual_seed(4))
    spec = supernet.decode(choices)
    arch = Architecture("dlrm", s.space, choices, spec, costs={"emb_params": 1.0})
    loaded = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert loaded == arch and loaded.arch_id == arch.arch_id
    torch.manual_seed(1)
    a = build_sampled(s, loaded.spec, CARDS, N_DENSE)
    torch.manual_seed(1)
    b = build_sampled(s, spec, CARDS, N_DENSE)
    x = inputs(5)
    torch.testing.assert_close(a(x), b(x))


def test_inconsistent_specs_are_refused_with_the_field_named():
    s = settings()
    spec = build_supernet(s, CARDS, N_DENSE).decode({"emb_dim": [0] * len(CARDS)})
    with pytest.raises(ValueError, match="bottom_mlp"):
        build_sampled(s, {**spec, "bottom_mlp": [N_DENSE, 12, 16]}, CARDS, N_DENSE)
    with pytest.raises(ValueError, match="emb_dims"):
        build_sampled(s, {**spec, "emb_dims": [2] * 3}, CARDS, N_DENSE)
