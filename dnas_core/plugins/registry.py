"""Finding, validating and registering plugins.

Plugins are found through the entry-point group ``dnas``. Each is loaded on its own: one
that fails to import, implements a hook the core does not define, or registers a domain
twice is rejected with an error that names it, and every other plugin still works.
``DNAS_PLUGINS=a,b`` limits loading to the named entry points (an empty value loads none),
which keeps tests isolated from whatever else is installed; ``DNAS_PLUGIN_MODULES=pkg.mod``
also loads plugin modules that are not installed (while developing one, and in tests,
where trial processes must see the same plugins as the test).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import pluggy

from dnas_core.plugins import hookspecs
from dnas_core.plugins.domain import Domain

ENTRY_POINT_GROUP = "dnas"


class PluginError(RuntimeError):
    """A plugin or domain cannot be used."""


@dataclass
class PluginInfo:
    name: str
    version: str | None = None
    distribution: str | None = None
    hooks: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    error: str | None = None
    #: problems that did not stop the plugin, e.g. a command it may not add
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "distribution": self.distribution,
                "hooks": self.hooks, "domains": self.domains, "error": self.error,
                "notes": self.notes}


def _spec_names() -> set[str]:
    return {n for n in dir(hookspecs) if n.startswith("dnas_")}


def _hook_names(plugin: object) -> list[str]:
    return sorted(n for n in dir(plugin) if hasattr(getattr(plugin, n, None), "dnas_impl"))


class Registry:
    """The loaded plugins, their domains, and the hook relay."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("dnas")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.domains: dict[str, Domain] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def add(self, plugin: object, info: PluginInfo) -> None:
        """Validate and register one plugin; on failure record the error and skip it."""
        self.plugins[info.name] = info
        info.hooks = _hook_names(plugin)
        unknown = [h for h in info.hooks if h not in _spec_names()]
        if unknown:
            info.error = (f"implements unknown hook {unknown[0]!r}; the hooks are "
                          f"{', '.join(sorted(_spec_names()))}")
            return
        try:
            self.pm.register(plugin, name=info.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            info.error = f"invalid hook implementation: {exc}"
            return
        found: list[Domain] = []
        caller = self.pm.subset_hook_caller(
            "dnas_register_domains",
            remove_plugins=[p for p in self.pm.get_plugins() if p is not plugin])
        try:
            caller(register=found.append)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
            self.pm.unregister(plugin)
            info.error = f"dnas_register_domains failed: {exc!r}"
            return
        clash = [d.name for d in found if d.name in self.domains]
        if clash:
            self.pm.unregister(plugin)
            other = self.domains[clash[0]].plugin
            info.error = f"domain {clash[0]!r} is already registered by plugin {other!r}"
            return
        for domain in found:
            self.domains[domain.name] = replace(domain, plugin=info.name)
        info.domains = [d.name for d in found]

    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        wanted = None if only is None else set(only)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, version=dist.version if dist else None,
                              distribution=dist.name if dist else None)
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - report, keep the other plugins
                self.plugins[ep.name] = info
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                info.error = f"failed to import {ep.value!r}: {last}"
                continue
            self.add(module, info)

    def errors(self) -> dict[str, str]:
        return {n: i.error for n, i in self.plugins.items() if i.error}

    def domain(self, name: str) -> Domain:
        """The domain called ``name``, or the single domain of the plugin called ``name``."""
        if name in self.domains:
            return self.domains[name]
        info = self.plugins.get(name)
        if info and info.error:
            raise PluginError(f"plugin {name!r} is not usable: {info.error}")
        if info and len(info.domains) == 1:
            return self.domains[info.domains[0]]
        available = ", ".join(sorted(self.domains)) or "none"
        if info and info.domains:
            raise PluginError(f"plugin {name!r} provides several domains; choose one of "
                              f"{', '.join(info.domains)}")
        raise PluginError(f"no installed plugin provides {name!r}; available: {available} "
                          f"(see `dnas plugins`)")


def make_registry(modules: Iterable[ModuleType | object] = (),
                  entry_points: bool = True) -> Registry:
    """A fresh registry: the entry-point plugins (filtered by ``DNAS_PLUGINS``) plus
    ``modules`` given directly (handy in tests)."""
    registry = Registry()
    if entry_points:
        env = os.environ.get("DNAS_PLUGINS")
        only = None if env is None else [n.strip() for n in env.split(",") if n.strip()]
        registry.load_entry_points(only)
    extra = [m.strip() for m in os.environ.get("DNAS_PLUGIN_MODULES", "").split(",") if m.strip()]
    for dotted in extra:
        try:
            registry.add(importlib.import_module(dotted), PluginInfo(dotted))
        except ImportError as exc:
            registry.plugins[dotted] = PluginInfo(dotted, error=f"failed to import: {exc}")
    for module in modules:
        name = getattr(module, "__name__", type(module).__name__)
        if name not in registry.plugins:
            registry.add(module, PluginInfo(name))
    return registry
