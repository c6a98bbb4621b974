"""The measured-latency lookup table: median timing, a JSON cache keyed by device and
shapes, reuse of cached entries, re-measurement when shapes change."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dnas_core.engine.latency import LatencyTable, device_name, shape_signature


class FakeClock:
    """Returns the given instants in turn and counts how often it was read."""

    def __init__(self, instants=None, step: float = 0.002):
        self.instants = list(instants or [])
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.instants:
            return self.instants.pop(0)
        self.now += self.step
        return self.now


def test_measure_is_the_median_of_the_repeats_in_ms():
    clock = FakeClock([0.0, 0.005, 1.0, 1.001, 2.0, 2.003])  # 5 ms, 1 ms, 3 ms
    table = LatencyTable(None, "cpu", warmup=2, repeats=3, clock=clock)
    calls = []
    value = table.measure("op", lambda: calls.append(1))
    assert value == pytest.approx(3.0)
    assert len(calls) == 2 + 3 and clock.calls == 6 and table.measured == 1


def test_cached_entries_are_reused_and_changed_shapes_are_measured_again(tmp_path):
    path = tmp_path / "latency.json"
    clock = FakeClock()
    table = LatencyTable(path, "cpu", warmup=1, repeats=2, clock=clock)
    op = nn.Linear(8, 4)
    first = table.measure("fc", op, torch.zeros(16, 8))
    reads = clock.calls
    assert table.measure("fc", op, torch.zeros(16, 8)) == first
    assert clock.calls == reads and table.measured == 1  # reused, nothing timed
    table.measure("fc", op, torch.zeros(32, 8))  # another batch size
    table.measure("fc", nn.Linear(8, 5), torch.zeros(16, 8))  # same key, resized operator
    assert table.measured == 3

    # a new table (a later run) on the same device reads the file and times nothing
    clock2 = FakeClock()
    again = LatencyTable(path, "cpu", warmup=1, repeats=2, clock=clock2)
    assert again.measure("fc", nn.Linear(8, 4), torch.zeros(16, 8)) == first
    assert clock2.calls == 0 and again.measured == 0
    data = json.loads(path.read_text())
    assert list(data) == [device_name("cpu")] and len(data[device_name("cpu")]) == 3


def test_entries_of_other_devices_are_kept_apart_and_preserved(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text(json.dumps({"cuda:Some GPU": {"fc|float32[16,8]|x": 0.01}}))
    table = LatencyTable(path, "cpu", warmup=0, repeats=1, clock=FakeClock())
    assert table.lookup("fc|float32[16,8]|x") is None
    table.measure("fc", lambda x: x, torch.zeros(16, 8))
    data = json.loads(path.read_text())
    assert data["cuda:Some GPU"] == {"fc|float32[16,8]|x": 0.01}
    assert len(data[device_name("cpu")]) == 1


def test_a_damaged_cache_file_only_costs_a_measurement(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text("{not json")
    table = LatencyTable(path, "cpu", warmup=0, repeats=1, clock=FakeClock())
    table.measure("op", lambda: None)
    assert table.measured == 1 and json.loads(path.read_text())


def test_device_names_and_signatures():
    name = device_name("cpu")
    assert name.startswith("cpu:") and name.endswith(f"{torch.get_num_threads()}threads")
    assert shape_signature((torch.zeros(2, 3), torch.zeros(4, dtype=torch.long))) == \
        "(float32[2,3],int64[4])"


def test_real_timing_of_a_module_is_positive():
    table = LatencyTable(None, "cpu", warmup=1, repeats=3)
    assert table.measure("fc", nn.Linear(32, 32), torch.randn(64, 32)) > 0
