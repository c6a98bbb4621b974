"""Embedding-cardinality search: each feature hashed by its own size (defect 6), the
memory bound, fused lookups, parameters equal to the cost."""

from __future__ import annotations

import pytest
import torch

from dnas_core.engine.architecture import Architecture
from dnas_dlrm.models import build_sampled, build_supernet, cost_models
from dnas_dlrm.models.emb_card import HashedEmbeddings, hash_sizes
from dnas_dlrm.settings import DlrmSettings
from tests.dlrm.batches import random_inputs

KAGGLE = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
          27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
# the first feature is small: hashing every feature by it (defect 6) would show at once
CARDS = [7, 5000, 3, 1234, 260, 40]
N_DENSE = 4
FRACTIONS = [1.0, 0.1, 0.01, 0.001]


def settings(**kw) -> DlrmSettings:
    base = dict(search=["emb_card"], embedding_dim=4, max_rows=None, bottom_mlp=[8],
                top_mlp=[8])
    base.update(kw)
    return DlrmSettings(**base)


def inputs(batch: int, seed: int = 0):
    return random_inputs(CARDS, N_DENSE, batch, seed)


def test_candidate_sizes_use_each_features_own_rows():
    assert hash_sizes(CARDS, FRACTIONS) == [
        [7, 1, 1, 1], [5000, 500, 50, 5], [3, 1, 1, 1], [1234, 123, 12, 1],
        [260, 26, 3, 1], [40, 4, 1, 1]]
    supernet = build_supernet(settings(), CARDS, N_DENSE)
    assert supernet.row_options == hash_sizes(CARDS, FRACTIONS)
    capped = build_supernet(settings(max_rows=1000), CARDS, N_DENSE)
    assert capped.row_options[1] == [1000, 100, 10, 1]


@pytest.mark.parametrize("max_rows", [None, 20_000])
def test_candidate_tables_take_at_most_1_12_times_the_full_ones(max_rows):
    rows = [c if max_rows is None else min(c, max_rows) for c in KAGGLE]
    total = sum(sum(feature) for feature in hash_sizes(rows, FRACTIONS))
    assert total <= 1.12 * sum(rows)


def test_built_supernet_memory_bound_on_scaled_down_kaggle():
    cards = [max(1, c // 100) for c in KAGGLE]
    s = DlrmSettings(search=["emb_card"], embedding_dim=4, max_rows=None)
    supernet = build_supernet(s, cards, 13)
    params = sum(p.numel() for p in supernet.weight_param_groups()["embeddings"])
    assert params <= 1.12 * sum(cards) * 4


def test_lookups_hash_each_feature_by_its_own_candidate_size():
    supernet = build_supernet(settings(), CARDS, N_DENSE)
    tables = supernet.embeddings.tables
    ids = torch.tensor([[6, 4999, 2, 1233, 259, 39], [3, 777, 1, 1000, 100, 17]])
    for option in range(4):
        supernet.fix({"emb_card": [option] * len(CARDS)})
        weights = supernet.emb_card.mix_weights(2)
        out = tables(ids, weights)
        for j, h in enumerate(hash_sizes(CARDS, FRACTIONS)):
            row = tables.offsets[j, option] + ids[:, j] % h[option]
            torch.testing.assert_close(out[:, j], tables.weight[row])


def test_bag_and_gather_lookups_agree_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, c, (16,), generator=gen) for c in CARDS], 1)
    weights = torch.softmax(torch.randn(16, len(CARDS), 4, generator=gen), -1)
    results = []
    for mode in ("bag", "gather"):
        torch.manual_seed(3)
        tables = HashedEmbeddings(CARDS, FRACTIONS, 5, sparse=True, mode=mode)
        w = weights.clone().requires_grad_(True)
        out = tables(ids, w)
        (out * torch.arange(5.0)).sum().backward()
        results.append((out, tables.weight.grad.to_dense(), w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_expected_params_cost_and_sampled_params_equal_the_cost():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    cost = {m.name: m for m in cost_models(s, CARDS, supernet)}["emb_params"]
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        supernet.emb_card.theta.copy_(torch.randn(supernet.emb_card.theta.shape, generator=gen))
    supernet.sample_expected()
    out = supernet(inputs(3))
    assert out.shape == (3,) and bool(((out > 0) & (out < 1)).all())
    probs = supernet.emb_card.probabilities().double()
    sizes = torch.tensor(hash_sizes(CARDS, FRACTIONS), dtype=torch.float64)
    exact = float((probs * sizes).sum()) * 4
    torch.testing.assert_close(cost.expected(supernet).double(),
                               torch.full((3,), exact, dtype=torch.float64), rtol=1e-6, atol=0)
    for _ in range(10):
        choices = supernet.sample_choices(gen)
        spec = supernet.decode(choices)
        model = build_sampled(s, spec, CARDS, N_DENSE)
        out = model(inputs(5))
        assert out.shape == (5,) and bool(((out > 0) & (out < 1)).all())
        arch = Architecture("dlrm", "emb_card", choices, spec)
        assert model.embedding_parameters() == cost.of(arch) == 4 * sum(spec["hash_sizes"])


def test_fixed_supernet_equals_sampled_model_with_inherited_tables():
    s = settings()
    torch.manual_seed(0)
    supernet = build_supernet(s, CARDS, N_DENSE)
    choices = {"emb_card": [1, 0, 3, 2, 1, 0]}
    supernet.fix(choices)
    spec = supernet.decode(choices)
    assert spec["hash_sizes"] == [1, 5000, 1, 12, 26, 40]
    model = build_sampled(s, spec, CARDS, N_DENSE)
    model.bottom_mlp.load_state_dict(supernet.bottom_mlp.state_dict())
    model.top_mlp.load_state_dict(supernet.top_mlp.state_dict())
    full = supernet.embeddings.tables
    (group,) = model.embeddings.groups
    with torch.no_grad():
        for j, option in enumerate(choices["emb_card"]):
            h = spec["hash_sizes"][j]
            start = full.offsets[j, option]
            group.weight[group.offsets[j]:group.offsets[j] + h].copy_(full.weight[start:start + h])
    x = inputs(12)
    torch.testing.assert_close(model(x), supernet(x))


def test_sparse_gradients_and_parameter_groups():
    s = settings()
    supernet = build_supernet(s, CARDS, N_DENSE)
    groups = supernet.weight_param_groups()
    assert [id(p) for p in groups["embeddings"]] == [id(supernet.embeddings.tables.weight)]
    assert id(supernet.emb_card.theta) not in {id(p) for p in supernet.weight_parameters()}
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    supernet(inputs(8)).sum().backward()
    assert supernet.embeddings.tables.weight.grad.is_sparse
    assert supernet.emb_card.theta.grad.abs().sum() > 0
