"""FC-of-FC MLP supernet: path walk (defect 2), expected cost through skips (defect 3),
hard-sampling frequencies, and the sampled MLP's FLOPs."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from dnas_core.engine.architecture import Architecture
from dnas_dlrm.models import build_sampled, build_supernet, cost_models
from dnas_dlrm.models.backbone import linear_flops, module_flops
from dnas_dlrm.models.fcfc import FcOfFc
from dnas_dlrm.settings import DlrmSettings

CARDS = [3, 40, 7, 1000, 55, 260]


def flops(a: int, b: int) -> float:
    return 2.0 * a * b


def enumerate_paths(net: FcOfFc, probs: dict[str, torch.Tensor]):
    """Every walk from the output back to the input: (probability, layer sizes).

    Written independently of the supernet: a walk picks the output's source node, then at
    each node of layers N-1..2 one of its incoming operators (an FC from a node below, or
    the skip from the same-size node below); layer-1 nodes always take the input's FC.
    """
    k, depth = len(net.sizes), net.n_node_layers

    def walk(layer: int, node: int, p: float, hidden: list[int]):
        if layer == 1:
            yield p, [net.n_in, net.sizes[node], *hidden, net.n_out]
            return
        row = probs[f"layer{layer}"][node]
        for option in range(k + 1):
            q = p * float(row[option])
            if option == k:  # skip: same node one layer down, no FC
                yield from walk(layer - 1, node, q, hidden)
            else:
                yield from walk(layer - 1, option, q, [net.sizes[node], *hidden])

    for node in range(k):
        yield from walk(depth, node, float(probs["output"][node]), [])


def double_probs(net: FcOfFc) -> dict[str, torch.Tensor]:
    return {name: torch.softmax(d.theta.detach().double(), dim=-1)
            for name, d in net.decisions().items()}


def random_theta(net: FcOfFc, seed: int, spread: float = 1.5) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for decision in net.decisions().values():
            decision.theta.copy_(torch.randn(decision.theta.shape, generator=gen) * spread)


@pytest.mark.parametrize("sizes,max_layers", [([4, 8], 3), ([4, 8], 4), ([3, 5, 9], 3),
                                              ([3, 5, 9], 4)])
def test_expected_cost_equals_sum_over_enumerated_paths(sizes, max_layers):
    net = FcOfFc(6, 2, sizes, max_layers, final_relu=False)
    random_theta(net, seed=len(sizes) * 10 + max_layers)
    net.sample_expected()
    net(torch.randn(3, 6))
    paths = list(enumerate_paths(net, double_probs(net)))
    assert math.isclose(sum(p for p, _ in paths), 1.0, rel_tol=1e-12)
    exact = sum(p * linear_flops(layers) for p, layers in paths)
    got = net.expected_cost(net.cost_tables(flops))
    assert got.shape == (3,)
    # float32 mixing weights: agreement to float32 precision
    torch.testing.assert_close(got, torch.full((3,), exact, dtype=torch.float64),
                               rtol=1e-6, atol=0)
    # some walks go through skips (defect 3: their mass must be counted, and it is)
    assert min(len(layers) for _, layers in paths) == 3


def test_expected_cost_is_per_example_under_soft_sampling():
    net = FcOfFc(6, 2, [3, 5, 9], 4, final_relu=True)
    random_theta(net, seed=3)
    net.sample_soft(1.0, torch.Generator().manual_seed(0))
    net(torch.randn(5, 6))
    got = net.expected_cost(net.cost_tables(flops)).detach()
    assert got.shape == (5,)
    for b in range(5):  # each example's own Gumbel weights define its own path distribution
        weights = {name: d.last_weights[b].detach().double()
                   for name, d in net.decisions().items()}
        weights = {name: w / w.sum(-1, keepdim=True) for name, w in weights.items()}
        exact = sum(p * linear_flops(layers) for p, layers in enumerate_paths(net, weights))
        assert math.isclose(float(got[b]), exact, rel_tol=1e-6)
    assert len(set(got.tolist())) == 5


def test_walk_follows_the_chosen_operators_and_is_in_input_to_output_order():
    net = FcOfFc(6, 2, [16, 32, 64], 4, final_relu=False)  # node layers 1..3
    # output <- node 32 of layer 3 <- FC from node 16 of layer 2 <- FC from node 64 of layer 1
    choices = {"output": 1, "layer3": [0, 0, 0], "layer2": [2, 0, 0]}
    assert net.layers(choices) == [6, 64, 16, 32, 2]
    # output <- node 64 of layer 3 <- skip <- node 64 of layer 2 <- FC from node 32 of layer 1
    choices = {"output": 2, "layer3": [0, 0, 3], "layer2": [0, 0, 1]}
    assert net.layers(choices) == [6, 32, 64, 2]
    # skips all the way down: the shortest MLP
    choices = {"output": 0, "layer3": [3, 3, 3], "layer2": [3, 3, 3]}
    assert net.layers(choices) == [6, 16, 2]


def test_fixed_route_computes_exactly_the_walked_mlp():
    torch.manual_seed(0)
    net = FcOfFc(6, 2, [16, 32, 64], 4, final_relu=False)
    choices = {"output": 1, "layer3": [0, 0, 0], "layer2": [2, 0, 0]}
    net.fix(choices)
    x = torch.randn(4, 6)
    relu = torch.relu

    def block(linear, start, size, inp):
        return inp @ linear.weight[start:start + size].T + linear.bias[start:start + size]

    h1 = relu(block(net.first, 16 + 32, 64, x))  # input -> node 64
    h2 = relu(block(net.hidden[0][2], 0, 16, h1))  # node 64 -> node 16
    h3 = relu(block(net.hidden[1][0], 16, 32, h2))  # node 16 -> node 32
    expected = block(net.out_ops[1], 0, 2, h3)  # node 32 -> output
    torch.testing.assert_close(net(x), expected)


def test_hard_sample_frequencies_match_path_probabilities():
    net = FcOfFc(6, 2, [4, 8], 4, final_relu=False)
    random_theta(net, seed=11, spread=1.0)
    probs = double_probs(net)
    by_mlp: Counter[tuple[int, ...]] = Counter()
    for p, layers in enumerate_paths(net, probs):
        by_mlp[tuple(layers)] += p
    gen = torch.Generator().manual_seed(5)
    draws = 20_000
    # hard samples (draws from softmax(theta), as SuperNet.sample_choices makes them), drawn
    # for all 20k architectures at once, then each walked back from the output
    picks = {name: torch.multinomial(d.probabilities().reshape(-1, d.n_options), draws,
                                     replacement=True, generator=gen)
             for name, d in net.decisions().items()}
    grouped = {name: d.grouped for name, d in net.decisions().items()}
    seen: Counter[tuple[int, ...]] = Counter()
    for i in range(draws):
        choices = {name: (p[:, i].tolist() if grouped[name] else int(p[0, i]))
                   for name, p in picks.items()}
        seen[tuple(net.layers(choices))] += 1
    assert tuple(net.layers(net.sample_choices(gen))) in by_mlp
    assert set(seen) <= set(by_mlp)
    worst = max(abs(seen[m] / draws - p) for m, p in by_mlp.items())
    # binomial standard error at n=20k is at most 0.0035; allow 4.5 sigma
    assert worst < 0.016, worst


def mlp_settings(**kw) -> DlrmSettings:
    base = dict(search=["bottom_mlp", "top_mlp"], embedding_dim=4, max_rows=50,
                mlp_size_options=[8, 16, 24], mlp_max_layers=4)
    base.update(kw)
    return DlrmSettings(**base)


def test_sampled_mlp_flops_equal_the_cost_of_its_path():
    settings = mlp_settings()
    supernet = build_supernet(settings, CARDS, 5)
    cost = {m.name: m for m in cost_models(settings, CARDS, supernet)}["mlp_flops"]
    gen = torch.Generator().manual_seed(2)
    random_theta(supernet.bottom_mlp, 4)
    random_theta(supernet.top_mlp, 5)
    seen = set()
    for _ in range(25):
        choices = supernet.sample_choices(gen)
        spec = supernet.decode(choices)
        seen.add((tuple(spec["bottom_mlp"]), tuple(spec["top_mlp"])))
        model = build_sampled(settings, spec, CARDS, 5)
        real = module_flops(model.bottom_mlp) + module_flops(model.top_mlp)
        assert real == cost.of(Architecture("dlrm", "mlp", choices, spec))
        # the supernet routed through the same choices has that expected cost exactly
        supernet.fix(choices)
        supernet((torch.randn(2, 5), torch.zeros(2, len(CARDS), dtype=torch.long)))
        torch.testing.assert_close(cost.expected(supernet), torch.full((2,), float(real)))
    assert len(seen) > 5


def test_mlp_supernet_output_and_shapes_at_the_depth_limits():
    for max_layers in (1, 2, 5):
        settings = mlp_settings(mlp_max_layers=max_layers)
        supernet = build_supernet(settings, CARDS, 5)
        supernet.sample_soft(0.5, torch.Generator().manual_seed(0))
        out = supernet((torch.randn(7, 5), torch.randint(0, 3, (7, len(CARDS)))))
        assert out.shape == (7,) and bool(((out > 0) & (out < 1)).all())
        spec = supernet.decode(supernet.sample_choices(torch.Generator().manual_seed(1)))
        assert 2 <= len(spec["bottom_mlp"]) <= max_layers + 1
        assert spec["bottom_mlp"][0] == 5 and spec["bottom_mlp"][-1] == 4
        assert spec["top_mlp"][-1] == 1


def test_cost_gradient_reaches_every_mlp_decision():
    settings = mlp_settings()
    supernet = build_supernet(settings, CARDS, 5)
    cost = {m.name: m for m in cost_models(settings, CARDS, supernet)}["mlp_flops"]
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    supernet((torch.randn(8, 5), torch.randint(0, 3, (8, len(CARDS)))))
    torch.log(cost.expected(supernet)).mean().backward()
    for name, decision in supernet.decisions().items():
        assert decision.theta.grad is not None and decision.theta.grad.abs().sum() > 0, name


def test_every_path_is_reachable_by_enumeration_count():
    # k sizes, N layers: k^(N-1) FC-only walks plus the walks with skips
    net = FcOfFc(6, 2, [4, 8], 4, final_relu=False)
    probs = double_probs(net)
    walks = list(enumerate_paths(net, probs))
    # output node (2) x per layer (k + 1 = 3) choices for layers 3 and 2
    assert len(walks) == 2 * 3 * 3
    mlps = {tuple(m) for _, m in walks}
    expected = {(6, *mid, 2) for n in (1, 2, 3) for mid in itertools.product([4, 8], repeat=n)}
    assert mlps == expected


def test_recomputed_node_layers_give_the_same_outputs_and_gradients():
    """Recomputation in the backward redraws no Gumbel noise and changes no number."""
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        net = FcOfFc(7, 3, [4, 8, 16], 4, final_relu=True, recompute=recompute)
        net.sample_soft(1.0, torch.Generator().manual_seed(1))
        out = net(torch.randn(32, 7, generator=torch.Generator().manual_seed(2)))
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    (out_kept, grads_kept), (out_recomputed, grads_recomputed) = results
    assert torch.equal(out_kept, out_recomputed)
    assert len(grads_kept) == len(grads_recomputed) > 0
    for kept, recomputed in zip(grads_kept, grads_recomputed):
        torch.testing.assert_close(kept, recomputed, rtol=1e-6, atol=1e-7)
