"""Atomic, safe checkpoints: write-then-rename, and load with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save(obj: Any, path: Path) -> None:
    """Write ``obj`` so that a crash mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> Any:
    """Load tensors and plain containers only: never unpickle arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)
