"""Typed configuration: YAML and ``key=value`` overrides in, validated dataclasses out.

Validation happens once, here, at the edge. Every error names the key path (and, when the
value came from a YAML file, the file and line) and says what was expected, so a user can
fix the input without reading code. Inner code only ever sees typed dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


# Where each key path was read from: "search.temperature_decay" -> "file.yaml line 7".
Origins = dict[str, str]


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string",
            Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def fail(path: str, origins: Origins, message: str) -> ConfigError:
    """The error for key ``path``, prefixed with where that key (or its section) was set."""
    where = origins.get(path) or next(
        (origins[p] for p in sorted(origins, key=len, reverse=True)
         if path.startswith(p + ".")), None)
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}{path or '<root>'}: {message}")


def _numeric_key(tp: Any, key: Any) -> Any:
    """JSON turns mapping keys into text: read ``"4"`` back as 4 where a number is due."""
    if tp in (int, float) and isinstance(key, str):
        try:
            return tp(key)
        except ValueError:
            return key
    return key


def _shaped_like(tp: Any, value: Any) -> bool:
    """Whether ``value`` is a mapping where ``tp`` is one (a dataclass or a dict), or a
    list where ``tp`` is one: then it was meant as ``tp``, and ``tp``'s error is the one
    to report (say ``low`` above ``high`` in a range), not "expected one of ..."."""
    if dataclasses.is_dataclass(tp) or get_origin(tp) in (dict, Mapping):
        return isinstance(value, Mapping)
    return get_origin(tp) in (list, tuple) and isinstance(value, (list, tuple))


def convert(tp: Any, value: Any, path: str, origins: Origins | None = None) -> Any:
    """Check ``value`` against the type annotation ``tp`` and convert it."""
    origins = origins or {}
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(cast(Any, tp), value, path, origins)
    if origin in (Union, types.UnionType):
        errors: list[ConfigError] = []
        for option in get_args(tp):
            try:
                return convert(option, value, path, origins)
            except ConfigError as exc:
                if _shaped_like(option, value):
                    errors.append(exc)
        if len(errors) == 1:  # the value has the one option's shape: its error says why
            raise errors[0]
        raise fail(path, origins, f"expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise fail(path, origins, f"expected null, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise fail(path, origins, f"expected {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail(path, origins, f"expected {_describe(tp)}, got {value!r}")
        item = get_args(tp)[0]
        items = [convert(item, v, f"{path}[{i}]", origins) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise fail(path, origins, f"expected a mapping, got {value!r}")
        key_t, val_t = get_args(tp) or (Any, Any)
        return {convert(key_t, _numeric_key(key_t, k), f"{path}.{k}", origins):
                convert(val_t, v, f"{path}.{k}", origins) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise fail(path, origins, "expected a number, got NaN")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail(path, origins, f"expected {_describe(tp)}, got {value!r}")


def build(cls: type[T], data: Any, path: str = "", origins: Origins | None = None) -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors."""
    origins = origins or {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise fail(path, origins, f"expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise fail(key, origins, f"unknown key; expected one of {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            value = data[name]
            if isinstance(value, Mapping) and dataclasses.is_dataclass(hints[name]) and \
                    field.default_factory is not dataclasses.MISSING:
                # a section given in part keeps the rest of *this* field's default (the
                # arch optimizer is Adam: setting its lr must not make it the type's SGD)
                value = {**to_dict(field.default_factory()), **value}
            kwargs[name] = convert(hints[name], value, key, origins)
        elif field.default is dataclasses.MISSING and \
                field.default_factory is dataclasses.MISSING:
            raise fail(key, origins, f"missing required key ({_describe(hints[name])})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ checks
        # "lr must be positive": the message starts with the field it is about, so the
        # error names that key (and where it was set), not the whole section
        first, _, rest = str(exc).partition(" ")
        if first not in fields or not rest:
            raise fail(path, origins, str(exc)) from exc
        raise fail(f"{path}.{first}" if path else first, origins, rest) from exc


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ----- YAML with line numbers --------------------------------------------------------------
def _walk(node: yaml.Node, prefix: str, label: str, origins: Origins) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            origins[key] = f"{label} line {key_node.start_mark.line + 1}"
            _walk(value_node, key, label, origins)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML would keep
    the last silently) and reads ``3e-6`` as a number (YAML 1.1 wants ``3.0e-6``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); "
                                f"remove one", key_node.start_mark)
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(path: Path) -> tuple[dict[str, Any], Origins]:
    """Read a YAML mapping with :class:`Loader`, remembering the line of every key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML file: byte {exc.start} is not UTF-8 text") \
            from None
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
        node = yaml.compose(text, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    origins: Origins = {}
    if node is not None:
        _walk(node, "", str(path), origins)
    return data, origins


def merge(base: Mapping[str, Any], update: Mapping[str, Any],
          atomic: frozenset[str] = frozenset(), prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into ``base``: sections merge, everything else replaces.

    Paths in ``atomic`` are settings whose value is itself a mapping (say
    ``search.arch_sampling``): a later layer replaces them whole rather than adding keys.
    """
    out = dict(base)
    for key, value in update.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if (isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
                and path not in atomic):
            out[key] = merge(out[key], value, atomic, path)
        else:
            out[key] = value
    return out


def differences(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """The dotted keys at which two settings trees differ, with both values (a key one
    tree lacks has the value None there)."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            here = f"{path}.{key}" if path else str(key)
            out += differences(before.get(key), after.get(key), here)
        return out
    return [] if before == after else [(path or "<root>", before, after)]


def describe_differences(before: Any, after: Any, limit: int = 8) -> str:
    """``"seed: 1 then, 2 now; ..."``: the first ``limit`` keys that differ."""
    found = differences(before, after)
    text = "; ".join(f"{key}: {a!r} then, {b!r} now" for key, a, b in found[:limit])
    return text + (f"; and {len(found) - limit} more" if len(found) > limit else "")


def mapping_settings(cls: type, prefix: str = "") -> frozenset[str]:
    """Dotted paths of the fields of ``cls`` (and its nested dataclasses) typed as dicts."""
    paths: set[str] = set()
    for name, tp in get_type_hints(cls).items():
        path = f"{prefix}.{name}" if prefix else name
        options = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
        for option in options:
            if dataclasses.is_dataclass(option):
                paths |= mapping_settings(cast(type, option), path)
            elif get_origin(option) in (dict, Mapping):
                paths.add(path)
    return frozenset(paths)


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. search.temperature_decay=0.2")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.load(raw, Loader=Loader) if raw else ""  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML") from exc
    return nest(key, value)


def nest(dotted_key: str, value: Any) -> dict[str, Any]:
    """``nest("a.b", 1)`` -> {"a": {"b": 1}}."""
    for part in reversed(dotted_key.split(".")):
        value = {part: value}
    return value


def override_origins(text: str, label: str | None = None) -> Origins:
    """The origin of the key a ``KEY=VALUE`` text sets (``label``, else ``--set TEXT``).

    Only that key: the sections above it keep their own origins, so an error about a
    sibling key never blames this override."""
    return {text.split("=", 1)[0]: label or f"--set {text}"}


__all__ = ["ConfigError", "build", "convert", "describe_differences", "differences", "fail",
           "load_yaml", "merge", "nest",
           "parse_override", "override_origins", "to_dict"]
