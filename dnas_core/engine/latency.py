"""Measured operator latencies, cached on disk per device (a latency lookup table).

A latency-aware search needs the cost of every candidate operator on the device that will
serve the model (paper eq. 4 with measured costs). Measuring is slow and the answer depends
only on the device and the operator's shapes, so each result is stored in a JSON file keyed
by the device's name and the operator's shape signature: a cached entry is reused by any
later run on the same kind of device, and an operator whose shapes change is measured anew.
The timing itself is domain-agnostic: any ``nn.Module`` with an example input, or any
zero-argument callable.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

Clock = Callable[[], float]


def device_name(device: str | torch.device) -> str:
    """A name that identifies the hardware a timing is valid for.

    CUDA devices are named by their product name; CPUs by their model and the number of
    threads torch uses, since the thread count changes every CPU timing.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{_cpu_model()}:{torch.get_num_threads()}threads"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def shape_signature(value: Any) -> str:
    """Shapes and dtypes of a (nested) input, e.g. ``float32[512,13]``."""
    if isinstance(value, Tensor):
        dims = ",".join(str(d) for d in value.shape)
        return f"{str(value.dtype).removeprefix('torch.')}[{dims}]"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(shape_signature(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{shape_signature(v)}" for k, v in sorted(value.items())) + "}"
    if value is None:
        return "-"
    return repr(value)


def module_signature(module: nn.Module) -> str:
    """Parameter and buffer shapes, so that a resized operator never reuses a stale entry."""
    parts = [f"{name}:{shape_signature(t)}" for name, t in
             list(module.named_parameters()) + list(module.named_buffers())]
    return f"{type(module).__name__}<{';'.join(parts)}>"


class LatencyTable:
    """Time operators on one device (warm-up, then the median of repeats), cached in JSON.

    ``measure(key, op, example_input)`` returns milliseconds. The cache key joins ``key``
    with the input's shape signature (and, for a module, its parameter shapes); the file
    maps device names to such keys, so one file can serve several machines. ``clock`` is
    injectable so tests can count measurements without timing anything real.
    """

    def __init__(self, cache_path: str | Path | None, device: str | torch.device = "cpu", *,
                 warmup: int = 3, repeats: int = 10, clock: Clock = time.perf_counter):
        if warmup < 0 or repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.device = torch.device(device)
        self.device_name = device_name(self.device)
        self.warmup, self.repeats, self.clock = warmup, repeats, clock
        self.measured = 0  # fresh measurements made by this object (cache misses)
        self._entries: dict[str, float] = dict(self._read().get(self.device_name, {}))

    # ----- cache file -------------------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, float]]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a damaged cache only costs a re-measurement
        return data if isinstance(data, dict) else {}

    def save(self) -> None:
        """Merge this device's entries into the file (keeping other devices' and writers')."""
        if self.cache_path is None:
            return
        data = self._read()
        data.setdefault(self.device_name, {}).update(self._entries)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(f"{self.cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.cache_path)

    # ----- measuring --------------------------------------------------------------------------
    def cache_key(self, key: str, op: nn.Module | Callable[[], Any],
                  example_input: Any = None) -> str:
        parts = [key, shape_signature(example_input)]
        if isinstance(op, nn.Module):
            parts.append(module_signature(op))
        return "|".join(parts)

    def lookup(self, full_key: str) -> float | None:
        return self._entries.get(full_key)

    def measure(self, key: str, op: nn.Module | Callable[[], Any],
                example_input: Any = None, *, save: bool = True) -> float:
        """Latency of ``op(example_input)`` (or ``op()``) in ms: cached, or timed now."""
        full_key = self.cache_key(key, op, example_input)
        if full_key in self._entries:
            return self._entries[full_key]
        value = self._time(op, example_input)
        self._entries[full_key] = value
        self.measured += 1
        if save:
            self.save()
        return value

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def _time(self, op: nn.Module | Callable[[], Any], example_input: Any) -> float:
        if isinstance(op, nn.Module):
            op = op.to(self.device).eval()
        inputs = _to_device(example_input, self.device)

        def call() -> Any:
            if example_input is None:
                return op()
            run = cast(Callable[..., Any], op)
            return run(*inputs) if isinstance(inputs, tuple) else run(inputs)

        for _ in range(self.warmup):
            call()
        self._sync()
        times = []
        for _ in range(self.repeats):
            start = self.clock()
            call()
            self._sync()
            times.append((self.clock() - start) * 1000.0)
        return float(statistics.median(times))


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


__all__ = ["LatencyTable", "device_name", "module_signature", "shape_signature"]
