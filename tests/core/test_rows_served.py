"""Which rows each phase reads (issue 9): architectures are ranked on validation and test
rows, so those rows must never reach the supernet's weights or theta, and theta must learn
only from the arch split, as the paper's Algorithm 1 separates them.

A recording table wraps the toy data and logs every ``gather``, tagged by what the code
under test was doing at the time (set by wrapping the engine's own methods).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_core.config.settings import OptimizerSettings, SearchSettings, TrainSettings
from dnas_core.engine import training
from dnas_core.engine.cost import DecisionCostTable
from dnas_core.engine.data import DataBundle, Table
from dnas_core.engine.search import SearchManager
from dnas_core.engine.tasks import BinaryClassification
from tests.core.toy_plugin import FLOPS, ToySampled, ToySuperNet, make_data

ROWS = 1200  # make_data splits 60/20/10/10: weights 720, arch 240, val 120, test 120


class RecordingTable:
    """A table that serves its inner table's rows and remembers who asked for which."""

    def __init__(self, inner: Table):
        self.inner = inner
        self.phase = "outside"
        self.served: list[tuple[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def gather(self, rows: np.ndarray):
        self.served.append((self.phase, np.array(rows, dtype=np.int64)))
        return self.inner.gather(rows)

    def rows(self, phase: str) -> np.ndarray:
        parts = [r for p, r in self.served if p == phase]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def recorded_data(seed: int = 1) -> tuple[DataBundle, RecordingTable]:
    data = make_data(ROWS, seed)
    table = RecordingTable(data.table)
    return DataBundle(table, data.splits, data.info), table


def tagged_search(data: DataBundle, table: RecordingTable, run_dir: Path,
                  monkeypatch: pytest.MonkeyPatch, arch_sampling: dict[float, int]
                  ) -> list[str]:
    """A small toy search whose table knows which kind of chunk is reading it; returns
    the chunk kinds in the order they ran."""
    original = SearchManager._run_chunk
    kinds: list[str] = []

    def tagged(self, chunk):
        kinds.append(chunk.kind)
        table.phase = chunk.kind
        try:
            return original(self, chunk)
        finally:
            table.phase = "outside"

    monkeypatch.setattr(SearchManager, "_run_chunk", tagged)
    torch.manual_seed(1)
    settings = SearchSettings(
        warmup_epochs=0.5, total_epochs=2, alternate_every=0.5, batch_size=64,
        arch_sampling=arch_sampling, weights_optimizer=OptimizerSettings("SGD", lr=0.2),
        arch_optimizer=OptimizerSettings("Adam", lr=0.2))
    cost = DecisionCostTable("flops", "FLOPs", {"op": torch.tensor(FLOPS)})
    SearchManager(ToySuperNet(16), data, BinaryClassification(), cost, {"flops": cost},
                  settings, domain="toy", space="toy", seed=1, device=torch.device("cpu"),
                  run_dir=run_dir).run()
    return kinds


def served_counts(rows: np.ndarray) -> np.ndarray:
    return np.bincount(rows, minlength=ROWS)


def test_search_serves_weights_rows_to_weights_chunks_and_arch_rows_to_arch_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data, table = recorded_data()
    kinds = tagged_search(data, table, tmp_path, monkeypatch, {1.5: 2})

    assert kinds == ["weights", "weights", "arch", "weights", "arch", "weights", "arch"]
    splits = {k: set(v.tolist()) for k, v in data.splits.items()}
    weights_rows, arch_rows = table.rows("weights"), table.rows("arch")
    assert set(weights_rows.tolist()) == splits["weights"]  # only, and all of them
    assert set(arch_rows.tolist()) == splits["arch"]
    # nothing read outside a chunk (sampling architectures reads no data)
    assert table.rows("outside").size == 0
    served = set(weights_rows.tolist()) | set(arch_rows.tolist())
    assert not served & (splits["val"] | splits["test"])
    # whole epochs: 2 weight epochs serve every weights row exactly twice; 1.5 arch epochs
    # serve every arch row once or twice: a full epoch of 240 rows (batches of 64, 64, 64,
    # 48) then the first two batches of the next, 368 reads in all
    counts = served_counts(weights_rows)[data.splits["weights"]]
    assert (counts == 2).all(), np.unique(counts)
    arch_counts = served_counts(arch_rows)[data.splits["arch"]]
    assert set(np.unique(arch_counts).tolist()) == {1, 2} and arch_counts.sum() == 368


def test_train_sampled_trains_on_weights_and_arch_rows_and_validates_on_val_rows(
        monkeypatch: pytest.MonkeyPatch):
    data, table = recorded_data()
    original_evaluate = training.evaluate
    table.phase = "train"

    def tagged_evaluate(*args, **kwargs):
        table.phase = "evaluate"
        try:
            return original_evaluate(*args, **kwargs)
        finally:
            table.phase = "train"

    monkeypatch.setattr(training, "evaluate", tagged_evaluate)
    torch.manual_seed(1)
    settings = TrainSettings(epochs=3, batch_size=64, eval_batch_size=50,
                             optimizer=OptimizerSettings("SGD", lr=0.2))
    outcome = training.train_sampled(ToySampled("mlp", 16), data, BinaryClassification(),
                                     settings, seed=1, device=torch.device("cpu"))
    table.phase = "outside"
    assert len(outcome.history) == 3

    splits = data.splits
    trained, evaluated = table.rows("train"), table.rows("evaluate")
    train_split = np.concatenate([splits["weights"], splits["arch"]])
    # every weights and arch row, once per epoch, and nothing else
    counts = served_counts(trained)
    assert (counts[train_split] == 3).all() and counts.sum() == 3 * len(train_split)
    # each epoch's evaluation reads the val split once, in order, and nothing else
    np.testing.assert_array_equal(evaluated, np.tile(splits["val"], 3))
    test_rows = set(splits["test"].tolist())
    assert not test_rows & set(trained.tolist()) and not test_rows & set(evaluated.tolist())
