"""The emb_card tables on fbgemm's TBE (domain.embedding_kernel) against the torch path.

Each test builds the same candidate tables both ways from one seed and compares: the
forward, theta's gradient through the per-sample weights, one fused optimizer step
against torch's sparse step on the same rows, architecture chunks leaving the tables
alone, the LR schedule, and a search resumed from a checkpoint. Float32 throughout;
tolerances are a few float32 ulps of the values compared.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dnas_core.config.settings import GroupSchedule, OptimizerSettings
from dnas_core.config.validate import ConfigError
from dnas_dlrm.models import build_supernet, tbe
from dnas_dlrm.models.emb_card import HashedEmbeddings
from dnas_dlrm.settings import DlrmSettings

needs_fbgemm = pytest.mark.skipif(not tbe.fbgemm_available(),
                                  reason="fbgemm_gpu does not import (the distributed extra)")

ROWS = [300, 40, 7, 1]
FRACTIONS = [1.0, 0.1, 0.01]
WHERE = "search.weights_optimizer"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fbgemm's CPU backward slows down badly on a contended box
    yield
    torch.set_num_threads(threads)


def tables_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    hashed = HashedEmbeddings(ROWS, FRACTIONS, 8)
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.stack([torch.randint(0, 10 * r, (64,), generator=gen) for r in ROWS], 1)
    weights = torch.softmax(torch.randn(64, len(ROWS), len(FRACTIONS), generator=gen), -1)
    grad_out = torch.randn(64, len(ROWS), 8, generator=gen)
    return hashed, ids, weights, grad_out


def fused(hashed: HashedEmbeddings, name: str, lr: float) -> tbe.TbeEmbeddings:
    optimizer = tbe.FusedOptimizer(name, lr, 1.0, tbe.ADAGRAD_EPS)
    return tbe.TbeEmbeddings(hashed.sizes, hashed.dim, hashed.weight.detach().clone(),
                             optimizer)


@needs_fbgemm
def test_forward_and_theta_gradient_equal_the_torch_path():
    hashed, ids, weights, grad_out = tables_and_batch()
    fbgemm = fused(hashed, "SGD", 0.0)  # lr 0: the backward leaves the tables as they are
    w_torch = weights.clone().requires_grad_(True)
    w_fbgemm = weights.clone().requires_grad_(True)
    out_torch = hashed(ids, w_torch)
    out_fbgemm = fbgemm(ids, w_fbgemm)
    torch.testing.assert_close(out_fbgemm, out_torch, rtol=1e-6, atol=1e-7)
    (out_torch * grad_out).sum().backward()
    (out_fbgemm * grad_out).sum().backward()
    torch.testing.assert_close(w_fbgemm.grad, w_torch.grad, rtol=1e-5, atol=1e-6)


@needs_fbgemm
@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_one_fused_step_equals_torchs_sparse_step(name):
    hashed, ids, weights, grad_out = tables_and_batch(1)
    fbgemm = fused(hashed, name, 0.05)
    optimizer = getattr(torch.optim, name)(hashed.parameters(), lr=0.05)
    for step in range(2):  # the second step also checks Adagrad's kept sums
        (hashed(ids + step, weights) * grad_out).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        (fbgemm(ids + step, weights) * grad_out).sum().backward()
        torch.testing.assert_close(fbgemm.weight, hashed.weight.detach(), rtol=1e-5,
                                   atol=1e-6)
    if name == "Adagrad":
        sums = optimizer.state[hashed.weight]["sum"]
        torch.testing.assert_close(fbgemm.sum, sums, rtol=1e-5, atol=1e-7)


@needs_fbgemm
def test_architecture_chunks_leave_the_tables_alone():
    hashed, ids, weights, grad_out = tables_and_batch(2)
    fbgemm = fused(hashed, "Adagrad", 0.5)
    fbgemm.trainable = False
    before = fbgemm.weight.clone()
    w_torch = weights.clone().requires_grad_(True)
    w_fbgemm = weights.clone().requires_grad_(True)
    hashed.weight.requires_grad_(False)
    (hashed(ids, w_torch) * grad_out).sum().backward()
    (fbgemm(ids, w_fbgemm) * grad_out).sum().backward()
    assert torch.equal(fbgemm.weight, before) and not fbgemm.sum.any()
    torch.testing.assert_close(w_fbgemm.grad, w_torch.grad, rtol=1e-5, atol=1e-6)


def supernet(kernel: str = "auto"):
    torch.manual_seed(0)
    return build_supernet(DlrmSettings(search=["emb_card"], embedding_dim=8, max_rows=None,
                                       bottom_mlp=[16], top_mlp=[16], embedding_kernel=kernel),
                          ROWS, 13)


def adagrad_tables(**args) -> OptimizerSettings:
    return OptimizerSettings("Adam", lr=1e-3, lr_decay=0.5, groups={
        "embeddings": GroupSchedule(optimizer="Adagrad", lr=0.05, args=args or None)})


@needs_fbgemm
def test_auto_fuses_sgd_and_adagrad_tables_and_keeps_their_weights():
    net = supernet()
    weight = net.embeddings.tables.weight.detach().clone()
    part = net.fuse_optimizer(adagrad_tables(eps=1e-8), WHERE)
    assert part is not None and "EXACT_ADAGRAD" in part.summary
    tables = net.embeddings.tables
    assert isinstance(tables, tbe.TbeEmbeddings) and tables.optimizer.eps == 1e-8
    assert torch.equal(tables.weight, weight)
    assert tables.weight.data_ptr() == tables.tbe.weights_host.data_ptr()
    assert net.weight_param_groups()["embeddings"] == []
    assert {"embeddings.tables.weight", "embeddings.tables.sum"} <= set(net.state_dict())
    part.set_epoch(2.0)  # the group's own schedule: 0.05 * 0.5 ** 2, kept in float32
    assert tables.tbe.get_learning_rate() == pytest.approx(0.0125, rel=1e-7)
    sgd = supernet().fuse_optimizer(OptimizerSettings("SGD", lr=0.1), WHERE)
    assert sgd is not None and "EXACT_SGD" in sgd.summary


def test_auto_keeps_torch_for_other_optimizers_or_without_fbgemm(monkeypatch):
    assert supernet().fuse_optimizer(OptimizerSettings("Adam", lr=1e-3), WHERE) is None
    assert supernet().fuse_optimizer(adagrad_tables(lr_decay=0.1), WHERE) is None
    assert supernet("torch").fuse_optimizer(adagrad_tables(), WHERE) is None
    monkeypatch.setattr(tbe, "fbgemm_available", lambda: False)
    net = supernet()
    assert net.fuse_optimizer(adagrad_tables(), WHERE) is None
    assert isinstance(net.embeddings.tables, HashedEmbeddings)


@needs_fbgemm
def test_fbgemm_kernel_refuses_what_it_cannot_run(monkeypatch):
    with pytest.raises(ConfigError, match=r"groups\.embeddings\.optimizer.*not 'Adam'"):
        supernet("fbgemm").fuse_optimizer(OptimizerSettings("Adam", lr=1e-3), WHERE)
    with pytest.raises(ConfigError, match=r"groups\.embeddings\.args: lr_decay=0\.1"):
        supernet("fbgemm").fuse_optimizer(adagrad_tables(lr_decay=0.1), WHERE)
    monkeypatch.setattr(tbe, "fbgemm_available", lambda: False)
    with pytest.raises(ConfigError, match="embedding_kernel: fbgemm: fbgemm_gpu does not"):
        supernet("fbgemm").fuse_optimizer(adagrad_tables(), WHERE)


@needs_fbgemm
def test_state_dict_round_trip_restores_tables_and_sums():
    net = supernet()
    net.fuse_optimizer(adagrad_tables(), WHERE)
    net.sample_soft(1.0, torch.Generator().manual_seed(0))
    dense = torch.rand(32, 13)
    ids = torch.stack([torch.randint(0, r, (32,)) for r in ROWS], 1)
    net((dense, ids)).sum().backward()
    saved = copy.deepcopy(net.state_dict())
    other = supernet()
    other.fuse_optimizer(adagrad_tables(), WHERE)
    other.load_state_dict(saved)
    for name, value in saved.items():
        assert torch.equal(other.state_dict()[name], value), name
    tables = other.embeddings.tables
    assert tables.sum.any()  # restored into the TBE's own storage, which it steps
    assert tables.sum.data_ptr() == tables.tbe.momentum1_host.data_ptr()


def search(run_dir, table):
    from dnas_core.config.settings import SearchSettings
    from dnas_core.engine.data import DataBundle
    from dnas_core.engine.search import SearchManager
    from dnas_core.engine.tasks import BinaryClassification
    from dnas_dlrm.data import NUM_DENSE
    from dnas_dlrm.models import cost_models

    torch.manual_seed(0)
    settings = DlrmSettings(search=["emb_card"], embedding_dim=8, bottom_mlp=[16],
                            top_mlp=[16], max_rows=500)
    cards = list(table.cardinalities)
    net = build_supernet(settings, cards, NUM_DENSE)
    models = {m.name: m for m in cost_models(settings, cards, net)}
    settings = SearchSettings(warmup_epochs=1, total_epochs=2, alternate_every=0.5,
                              arch_sampling={1.0: 2}, batch_size=256,
                              weights_optimizer=adagrad_tables(),
                              arch_optimizer=OptimizerSettings("Adam", lr=0.05))
    return SearchManager(net, DataBundle(table, table.splits(), table.info()),
                         BinaryClassification(), models["emb_params"], models, settings,
                         domain="dlrm", space="emb_card", seed=0,
                         device=torch.device("cpu"), run_dir=run_dir)


@needs_fbgemm
def test_fused_search_resumes_bit_exactly(tmp_path):
    from dnas_dlrm.data import CriteoArrays, generate

    table = CriteoArrays.from_synthetic(generate(2000, seed=0))
    full = search(tmp_path / "full", table)
    assert isinstance(full.supernet.embeddings.tables, tbe.TbeEmbeddings)
    full_archs = full.run()
    cut = search(tmp_path / "cut", table)

    def stop(chunk):
        if chunk.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut.run(on_chunk_end=stop)
    resumed = search(tmp_path / "cut", table)
    resumed_archs = resumed.run()
    state, again = full.supernet.state_dict(), resumed.supernet.state_dict()
    assert state.keys() == again.keys() and "embeddings.tables.sum" in state
    for name, value in state.items():
        assert torch.equal(value, again[name]), name
    assert [a.to_dict() for a in full_archs] == [a.to_dict() for a in resumed_archs]


def test_the_kernel_setting_is_validated_by_name():
    from dnas_core.config.runspec import resolve
    from dnas_core.plugins.registry import make_registry
    from dnas_dlrm import plugin

    registry = make_registry([plugin], entry_points=False)
    assert resolve(registry, "dlrm").domain_settings.embedding_kernel == "auto"
    with pytest.raises(ConfigError, match=r"domain\.embedding_kernel.*'auto'.*'fbgemm'"):
        resolve(registry, "dlrm", overrides=["domain.embedding_kernel=cuda"])
