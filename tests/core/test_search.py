from pathlib import Path

import pytest
import torch
from torch import nn

from dnas_core.config.settings import GroupSchedule, OptimizerSettings, SearchSettings
from dnas_core.config.validate import ConfigError
from dnas_core.engine.cost import DecisionCostTable
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm
from dnas_core.engine.search import SearchManager
from dnas_core.engine.tasks import BinaryClassification
from tests.core.toy_plugin import FLOPS, ToySuperNet, make_data


def small_settings(**changes) -> SearchSettings:
    return SearchSettings(
        warmup_epochs=0.5, total_epochs=2, alternate_every=0.5, batch_size=64,
        arch_sampling={1.5: 3},
        weights_optimizer=OptimizerSettings("SGD", lr=0.2, lr_decay=0.9),
        arch_optimizer=OptimizerSettings("Adam", lr=0.2), **changes)


def manager(run_dir: Path, settings: SearchSettings | None = None, seed: int = 1):
    torch.manual_seed(seed)
    settings = settings or small_settings()
    cost = DecisionCostTable("flops", "FLOPs", {"op": torch.tensor(FLOPS)})
    return SearchManager(ToySuperNet(16), make_data(1200, seed), BinaryClassification(), cost,
                         {"flops": cost}, settings, domain="toy", space="toy", seed=seed,
                         device=torch.device("cpu"), run_dir=run_dir)


def test_weights_phase_never_moves_theta(tmp_path):
    sm = manager(tmp_path)
    before = sm.supernet.op.theta.detach().clone()
    seen = []

    def check(chunk):
        seen.append(chunk.kind)
        if chunk.kind == "weights":
            torch.testing.assert_close(sm.supernet.op.theta.detach(), before, rtol=0, atol=0)
        else:
            before.copy_(sm.supernet.op.theta.detach())

    sm.run(on_chunk_end=check)
    assert "arch" in seen and "weights" in seen
    # even a weights optimizer over *all* parameters of the supernet could not see theta
    theta_ids = {id(p) for p in sm.supernet.arch_parameters()}
    assert not theta_ids & {id(p) for p in sm.optimizers["weights"].params()}


def test_search_moves_toward_the_operator_that_fits(tmp_path):
    sm = manager(tmp_path)
    architectures = sm.run()
    probs = torch.softmax(sm.supernet.op.theta.detach(), 0)
    assert probs[1] > 0.7  # XOR needs the MLP; theta starts at 0.5
    assert architectures and all(a.costs["flops"] in FLOPS for a in architectures)


def test_resume_equals_uninterrupted_run(tmp_path):
    full = manager(tmp_path / "full")
    full_archs = full.run()

    interrupted = manager(tmp_path / "cut")

    def stop(chunk):
        if chunk.index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.run(on_chunk_end=stop)
    resumed = manager(tmp_path / "cut")
    resumed_archs = resumed.run()
    for (name, a), b in zip(full.supernet.state_dict().items(),
                            resumed.supernet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [a.to_dict() for a in full_archs] == [a.to_dict() for a in resumed_archs]


def test_include_argmax_adds_theta_mode_before_the_same_draws(tmp_path):
    """The mode is trained besides the draws, not instead of one: the draws, the training
    and the random state are those of a run without it."""
    plain = manager(tmp_path / "plain", small_settings(include_argmax=False))
    drawn = plain.run()
    with_mode = manager(tmp_path / "mode", small_settings(include_argmax=True))
    archs = with_mode.run()
    for a, b in zip(plain.supernet.state_dict().values(),
                    with_mode.supernet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    mode = int(torch.argmax(with_mode.supernet.op.theta.detach()))
    assert archs[0].choices == {"op": mode} and archs[0].source["argmax"] is True
    assert not any(a.source.get("argmax") for a in drawn)
    expected = [archs[0].arch_id] + [a.arch_id for a in drawn if a.arch_id != archs[0].arch_id]
    assert [a.arch_id for a in archs] == expected


def test_clip_grad_norm_handles_sparse_and_dense_gradients():
    emb = nn.Embedding(10, 4, sparse=True)
    lin = nn.Linear(4, 1)
    ids = torch.tensor([1, 1, 2])  # repeated index: the sparse gradient is uncoalesced
    (lin(emb(ids)).sum() * 100).backward()
    dense_equiv = torch.cat([emb.weight.grad.to_dense().flatten(), lin.weight.grad.flatten(),
                             lin.bias.grad.flatten()]).norm()
    norm = float(clip_grad_norm([emb.weight, lin.weight, lin.bias], 1.0))
    assert norm == pytest.approx(float(dense_equiv), rel=1e-5)
    clipped = torch.cat([emb.weight.grad.to_dense().flatten(), lin.weight.grad.flatten(),
                         lin.bias.grad.flatten()]).norm()
    assert float(clipped) == pytest.approx(1.0, rel=1e-4)


def test_optimizer_groups_get_their_own_schedules():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    settings = OptimizerSettings("SGD", lr=1.0, lr_decay=0.5,
                                 groups={"b": GroupSchedule(lr=0.1, lr_decay=1.0)})
    opts = OptimizerSet(settings, {"a": [a], "b": [b]})
    opts.set_epoch(2)
    assert opts.lrs() == {"a": 0.25, "b": 0.1}


def test_dense_only_optimizer_on_sparse_group_is_a_config_error():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match="groups.embeddings.optimizer=SparseAdam"):
        OptimizerSet(OptimizerSettings("Adam"), {"embeddings": [p]}, {"embeddings"},
                     "search.weights_optimizer")
    with pytest.raises(ConfigError, match="unknown optimizer 'Adamm'"):
        OptimizerSet(OptimizerSettings("Adamm"), {"x": [p]}, (), "train.optimizer")
