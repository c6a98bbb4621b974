"""The memory check before a search: exact weight and optimizer-state bytes of a supernet
built on the meta device, the Kaggle presets at Kaggle's cardinalities, and a refusal that
names the number of devices, raised before any supernet is allocated."""

from __future__ import annotations

import pytest
import torch

from dnas_core.config.runspec import resolve
from dnas_core.config.settings import GroupSchedule, OptimizerSettings
from dnas_core.engine import memory
from dnas_core.engine.memory import DoesNotFit, check_fits, estimate, on_meta, state_tensors
from dnas_core.plugins.registry import make_registry
from dnas_core.runner import pipeline
from dnas_dlrm import plugin
from dnas_dlrm.data.schema import KAGGLE_CARDINALITIES
from dnas_dlrm.models import build_supernet
from dnas_dlrm.models.emb_card import hash_sizes
from dnas_dlrm.settings import DlrmSettings

CARDS = [3, 400, 70, 1000, 55]


@pytest.fixture(scope="module")
def dlrm_registry():
    return make_registry([plugin], entry_points=False)
ADAM = OptimizerSettings("Adam", 1e-3, groups={"embeddings": GroupSchedule(optimizer="Adagrad")})


def test_state_tensors_of_the_usual_optimizers():
    assert state_tensors("Adam", {}) == 2 and state_tensors("Adam", {"amsgrad": True}) == 3
    assert state_tensors("Adagrad", {}) == 1 and state_tensors("SparseAdam", {}) == 2
    assert state_tensors("SGD", {}) == 0 and state_tensors("SGD", {"momentum": 0.9}) == 1
    assert state_tensors("RMSprop", {"momentum": 0.9, "centered": True}) == 3


def test_weights_gradients_and_state_are_counted_exactly_and_meta_allocates_nothing():
    settings = DlrmSettings(search=["emb_card"], embedding_dim=4, max_rows=None,
                            bottom_mlp=[8], top_mlp=[8], emb_card_options=[1.0, 0.1])
    real = build_supernet(settings, CARDS, 4)
    meta = on_meta(lambda: build_supernet(settings, CARDS, 4))
    assert all(p.is_meta for p in meta.parameters())
    tables = sum(p.numel() for p in real.weight_param_groups()["embeddings"]) * 4
    dense = sum(p.numel() for p in real.weight_param_groups()["dense"]) * 4
    theta = sum(p.numel() for p in real.arch_parameters()) * 4
    assert tables == sum(sum(s) for s in hash_sizes(CARDS, [1.0, 0.1])) * 4 * 4
    for net in (real, meta):
        got = estimate(net, ADAM, OptimizerSettings("Adam", 0.02), batch_size=64)
        assert got.weights == tables + dense + theta
        assert got.gradients == dense + theta  # the tables' gradients are sparse
        assert got.optimizer_state == tables * 1 + (dense + theta) * 2  # Adagrad, Adam
        assert got.sharded == 2 * tables and got.replicated == 4 * (dense + theta)  # Adam: 2 states
        assert got.activations == real.activation_bytes(64) > 0
        assert got.sharded_groups == ("embeddings",)
    assert real.activation_bytes(128) == 2 * real.activation_bytes(64)


@pytest.mark.parametrize("preset", ["kaggle_emb_dim", "kaggle_emb_card", "kaggle_mlp",
                                    "kaggle_joint"])
def test_kaggle_presets_are_uncapped_and_estimated_at_kaggle_cardinalities(preset,
                                                                          dlrm_registry):
    spec = resolve(dlrm_registry, "dlrm", preset=preset)
    settings = spec.domain_settings
    assert settings.max_rows is None and spec.settings.search.batch_size == 8192
    net = on_meta(lambda: build_supernet(settings, list(KAGGLE_CARDINALITIES), 13))
    rows = sum(KAGGLE_CARDINALITIES)
    got = estimate(net, spec.settings.search.weights_optimizer,
                   spec.settings.search.arch_optimizer, 8192)
    width = max(settings.emb_dim_options) if "emb_dim" in settings.search \
        else settings.embedding_dim
    if "emb_card" in settings.search:
        rows = sum(sum(s) for s in hash_sizes(list(KAGGLE_CARDINALITIES),
                                              settings.emb_card_options))
    assert got.sharded == rows * width * 4 * 2  # the tables and their Adagrad sums


def test_a_supernet_too_big_for_its_device_is_refused_with_the_devices_it_needs(monkeypatch,
                                                                                dlrm_registry):
    spec = resolve(dlrm_registry, "dlrm", preset="kaggle_emb_dim")
    net = on_meta(lambda: build_supernet(spec.domain_settings, list(KAGGLE_CARDINALITIES), 13))
    needed = estimate(net, spec.settings.search.weights_optimizer,
                      spec.settings.search.arch_optimizer, 8192)
    assert needed.sharded == sum(KAGGLE_CARDINALITIES) * 128 * 4 * 2  # with Adagrad's sums
    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * memory.GIB)
    expected = -(-needed.sharded // (16 * memory.GIB - needed.replicated - needed.activations))
    with pytest.raises(DoesNotFit, match=rf"sharding its embeddings weights would take "
                                         rf"{expected} devices like this one"):
        check_fits(needed, torch.device("cpu"), "the emb_dim supernet")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 80 * memory.GIB)
    line = check_fits(needed, torch.device("cpu"), "the emb_dim supernet")
    assert line.startswith("memory for the emb_dim supernet: weights ")
    assert "cpu has 80.00 GiB free" in line


def test_the_search_refuses_before_building_the_supernet(monkeypatch, dlrm_registry, tmp_path):
    spec = resolve(dlrm_registry, "dlrm", values={"domain.data.synthetic_rows": 2000})
    built = pipeline.build_data(dlrm_registry, spec)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)
    made = []
    monkeypatch.setattr(pipeline, "_make_supernet", lambda *a: made.append(a))
    with pytest.raises(DoesNotFit, match="memory for the emb_dim supernet at batch"):
        pipeline.run_search(dlrm_registry, spec, tmp_path, built)
    assert not made and not list(tmp_path.rglob("*.pt"))
