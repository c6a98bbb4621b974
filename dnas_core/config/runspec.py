"""Resolving a run's settings: core defaults, the domain's YAML, a preset, the user's file
and ``--set`` overrides, merged in that order and validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dnas_core.config.settings import RunSettings
from dnas_core.config.validate import (
    ConfigError,
    Origins,
    build,
    describe_differences,
    differences,
    load_yaml,
    mapping_settings,
    merge,
    nest,
    override_origins,
    parse_override,
    to_dict,
)
from dnas_core.plugins.domain import Domain
from dnas_core.plugins.registry import Registry


@dataclass
class RunSpec:
    """A validated run: the core's settings, the domain and its typed settings."""

    settings: RunSettings
    domain: Domain
    domain_settings: Any
    #: where each key was set, for errors found after validation
    origins: Origins = field(default_factory=dict)

    @property
    def space(self) -> str:
        return str(getattr(self.domain_settings, "space", self.domain.name))

    def to_dict(self) -> dict[str, Any]:
        data = to_dict(self.settings)
        data["domain"] = to_dict(self.domain_settings)
        return data

    def device(self) -> torch.device:
        """The trial pool's placement (``DNAS_DEVICE``) wins over the configuration: a
        trial sees only its own GPU, as ``cuda:0``."""
        placed = os.environ.get("DNAS_DEVICE")
        if placed:
            return torch.device(placed)
        if self.settings.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.settings.device)

    def cost_terms(self) -> dict[str, float]:
        terms = self.settings.search.cost.terms
        if terms:
            return dict(terms)
        default = self.domain.default_cost
        if callable(default):
            return dict(default(self.domain_settings))
        return {default: 1.0}


def _layer(data: dict[str, Any], origins: Origins, update: Mapping[str, Any],
           update_origins: Origins) -> dict[str, Any]:
    origins.update(update_origins)
    # "domain" is one section whose inside the domain's own type validates later
    return merge(data, update, mapping_settings(RunSettings) - {"domain"})


def resolve(registry: Registry, plugin: str | None, *, config: Path | None = None,
            preset: str | None = None, overrides: Sequence[str] = (),
            values: Mapping[str, Any] | None = None, data_path: str | None = None,
            value_origins: Mapping[str, str] | None = None) -> RunSpec:
    """Merge every configuration layer and validate the result.

    ``overrides`` are ``KEY=VALUE`` texts from the command line; ``values`` are the same
    with typed values (e.g. an experiment trial's parameters), applied after them, and
    ``value_origins`` says where each came from (an error then names that place).
    """
    data: dict[str, Any] = {}
    origins: Origins = {}
    user: dict[str, Any] = {}
    user_origins: Origins = {}
    if config is not None:
        user, user_origins = load_yaml(config)
    name = plugin or user.get("plugin")
    if not name:
        raise ConfigError("no plugin chosen: pass --plugin NAME or set `plugin:` in the config")
    if plugin and user.get("plugin") not in (None, plugin):
        raise ConfigError(f"{user_origins.get('plugin', config)}: plugin: config says "
                          f"{user['plugin']!r} but --plugin says {plugin!r}")
    domain = registry.domain(name)
    if domain.defaults is not None:
        data = _layer(data, origins, *load_yaml(domain.defaults))
    if preset is not None:
        if preset not in domain.presets:
            raise ConfigError(f"--preset {preset!r}: unknown preset for {domain.name}; "
                              f"available: {', '.join(sorted(domain.presets)) or 'none'}")
        data = _layer(data, origins, *load_yaml(domain.presets[preset]))
    data = _layer(data, origins, user, user_origins)
    for text in overrides:
        data = _layer(data, origins, parse_override(text), override_origins(text))
    for key, value in (values or {}).items():
        data = _layer(data, origins, nest(key, value),
                      override_origins(f"{key}={value!r}", (value_origins or {}).get(key)))
    if data_path is not None:
        data = merge(data, {"domain": {"data": {"path": data_path}}})
        origins.update(override_origins(f"domain.data.path={data_path}", f"--data {data_path}"))
    data["plugin"] = domain.name
    settings = build(RunSettings, data, origins=origins)
    domain_settings: Any = build(domain.settings_type, settings.domain, "domain", origins)
    return RunSpec(settings, domain, domain_settings, origins)


def check_same_run(saved: Mapping[str, Any], current: Mapping[str, Any], where: Path) -> None:
    """Refuse to continue a run directory with different settings (it would mix results),
    naming every key that differs and both its values."""
    if differences(saved, current):
        raise ConfigError(f"{where}: this run directory was made with other settings "
                          f"({describe_differences(saved, current)}); use another --out, "
                          f"or the same settings to resume")
