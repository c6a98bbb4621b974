"""What a plugin registers: a named domain with its typed settings and shipped YAML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Domain:
    """A family of search spaces over one backbone, e.g. ``dlrm`` or ``cnn``.

    ``settings_type`` is the dataclass that validates the ``domain:`` section of a run's
    configuration. ``defaults`` is a YAML file of run settings merged over the core's
    defaults; ``presets`` are further YAML files selected with ``--preset NAME``.
    ``default_cost`` names the cost model used when the configuration picks none, or maps
    the domain's settings to weighted cost terms (e.g. a joint search combining two costs).
    """

    name: str
    settings_type: type
    default_cost: str | Callable[[Any], Mapping[str, float]]
    description: str = ""
    defaults: Path | None = None
    presets: Mapping[str, Path] = field(default_factory=dict)
    plugin: str = ""
