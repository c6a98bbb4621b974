"""The step budget, early stopping, LR scaling for retries and the constant predictor."""

import numpy as np
import pytest
import torch

from dnas_core.config.settings import GroupSchedule, OptimizerSettings, TrainSettings
from dnas_core.config.validate import ConfigError, build
from dnas_core.engine.baseline import constant_metrics
from dnas_core.engine.budget import auto_batch_size, resolve_batch_size
from dnas_core.engine.optim import scale_lrs
from dnas_core.engine.tasks import BinaryClassification, MulticlassClassification
from dnas_core.engine.training import train_sampled
from tests.core.toy_plugin import ToySampled, make_data


@pytest.mark.parametrize("rows, expected", [
    (8_000, 64),          # 80 -> 64: about a hundred steps, never two
    (85_000, 1024),       # 850 -> 1024
    (40_000_000, 4096),   # capped
    (100, 64),            # floored
])
def test_auto_batch_gives_about_a_hundred_steps_an_epoch(rows, expected):
    assert auto_batch_size(rows, 100, 64, 4096) == expected
    assert resolve_batch_size("auto", rows, 100, 64, 4096) == expected
    assert resolve_batch_size(512, rows, 100, 64, 4096) == 512


def test_batch_size_must_be_auto_or_positive():
    with pytest.raises(ConfigError, match="batch_size"):
        build(TrainSettings, {"batch_size": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        build(TrainSettings, {"batch_size": "big"})
    assert build(TrainSettings, {"batch_size": "auto"}).batch_size == "auto"


def test_scale_lrs_scales_the_base_and_every_group():
    settings = OptimizerSettings("Adam", 1e-3, groups={
        "embeddings": GroupSchedule(optimizer="Adagrad", lr=0.05), "other": GroupSchedule()})
    scaled = scale_lrs(settings, 0.1)
    assert scaled.lr == pytest.approx(1e-4)
    assert scaled.groups["embeddings"].lr == pytest.approx(0.005)
    assert scaled.groups["embeddings"].optimizer == "Adagrad"
    assert scaled.groups["other"].lr is None  # inherits the scaled base
    assert settings.lr == 1e-3  # the original is untouched


def test_patience_stops_after_epochs_without_improvement():
    data = make_data(1200, seed=0)
    settings = TrainSettings(epochs=12, batch_size=64, patience=1,
                             optimizer=OptimizerSettings("SGD", 5.0))
    torch.manual_seed(0)
    outcome = train_sampled(ToySampled("mlp", 16), data, BinaryClassification(), settings,
                            seed=0, device=torch.device("cpu"))
    losses = [h["logloss"] for h in outcome.history]
    assert len(losses) < 12
    assert losses[-1] >= min(losses)  # stopped on an epoch that did not improve
    assert outcome.best_epoch == int(np.argmin(losses)) == len(losses) - 2
    assert outcome.batch_size == 64


def test_constant_predictor_uses_the_training_click_rate():
    data = make_data(2000, seed=0)
    train = np.concatenate([data.splits["weights"], data.splits["arch"]])
    rate = float(data.table.targets[train].mean())
    val = data.table.targets[data.splits["val"]].double()
    expected = float(-(val * np.log(rate) + (1 - val) * np.log(1 - rate)).mean())
    found = constant_metrics(BinaryClassification(), data, "val")
    assert found["logloss"] == pytest.approx(expected, abs=1e-9)
    assert found["auc"] != found["auc"] or found["auc"] == 0.5  # one score for every row
    assert found["logloss_se"] > 0


def test_multiclass_constant_predicts_the_class_frequencies():
    task = MulticlassClassification()
    outputs = task.constant_outputs(torch.tensor([0, 0, 0, 1]), 3)
    assert outputs.shape == (3, 2)
    assert torch.softmax(outputs, -1)[0].tolist() == pytest.approx([0.75, 0.25], abs=1e-3)
