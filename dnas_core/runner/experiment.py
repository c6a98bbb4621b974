"""Experiment files: the supernet grid and the sampled-architecture grid (paper Fig. 2).

A list of values is a grid: every combination is run once. A range ``{low, high, log}``
is sampled by Optuna's TPE sampler, ``n_trials`` times. Values are set by dotted setting
keys (``search.weights_optimizer.lr``), never by substituting text into a command.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from dnas_core.config.validate import (
    ConfigError,
    Origins,
    build,
    load_yaml,
    parse_override,
    to_dict,
)


@dataclass
class Range:
    """A sampled parameter: uniform (or log-uniform) between low and high."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low} and high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")


@dataclass
class Stage:
    """One stage's parameter space; ``n_trials`` is needed once any parameter is a range."""

    grid: dict[str, list[Any] | Range] = field(default_factory=dict)
    n_trials: int | None = None
    prune: bool = False

    def __post_init__(self) -> None:
        for key, values in self.grid.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"grid.{key}: an empty list has no values to try")
        if self.sampled and not self.n_trials:
            raise ValueError("n_trials is required when a parameter is a range")
        if self.n_trials is not None and self.n_trials < 1:
            raise ValueError("n_trials must be at least 1")

    @property
    def sampled(self) -> bool:
        return any(isinstance(v, Range) for v in self.grid.values())

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the listed values (ranges excluded)."""
        lists = {k: v for k, v in self.grid.items() if isinstance(v, list)}
        keys = sorted(lists)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(lists[k] for k in keys))]

    def range_ends(self) -> list[dict[str, Any]]:
        """Each range's low and high on their own: the values checked for a sampled
        parameter before its trials are drawn."""
        return [{key: int(end) if values.integer else end}
                for key, values in sorted(self.grid.items()) if isinstance(values, Range)
                for end in (values.low, values.high)]

    def trial_count(self) -> int:
        return (self.n_trials or 0) if self.sampled else len(self.grid_points())

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Optuna distributions; list values travel as JSON strings (they may be lists)."""
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for key, values in self.grid.items():
            if isinstance(values, Range):
                if values.integer:
                    out[key] = optuna.distributions.IntDistribution(
                        int(values.low), int(values.high), log=values.log)
                else:
                    out[key] = optuna.distributions.FloatDistribution(
                        values.low, values.high, log=values.log)
            else:
                out[key] = optuna.distributions.CategoricalDistribution(
                    [encode(v) for v in values])
        return out


@dataclass
class Experiment:
    plugin: str
    preset: str | None = None
    config: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    supernets: Stage = field(default_factory=Stage)
    architectures: Stage = field(default_factory=Stage)
    trial_timeout: float | None = None
    max_oom_retries: int = 2
    #: ``random``: train the space's reference model and random architectures at the
    #: search's compute next to the searched ones; ``tpe``: the reference model and Optuna
    #: TPE over the same space at the same compute; ``random,tpe``: both; ``none``: the
    #: searched ones only
    baseline: Literal["random", "tpe", "random,tpe", "none"] = "random"

    data_path: str | None = None

    @property
    def baselines(self) -> frozenset[str]:
        """The black-box searches trained as baselines (the reference model comes with any)."""
        return frozenset() if self.baseline == "none" else frozenset(self.baseline.split(","))

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        return build(cls, json.loads(text))


def encode(value: Any) -> Any:
    """Optuna categorical choices must be scalars: other values become JSON text."""
    return value if isinstance(value, (bool, int, float, str)) or value is None \
        else "json:" + json.dumps(value, sort_keys=True)


def decode(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    return value


def params_key(params: dict[str, Any]) -> str:
    """A stable short name for a parameter combination: the trial's directory name."""
    text = json.dumps({k: decode(v) for k, v in params.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_experiment(path: Path) -> tuple[Experiment, Origins]:
    """The experiment in ``path`` and where each of its keys was read from."""
    data, origins = load_yaml(path)
    experiment = build(Experiment, data, origins=origins)
    if experiment.config is not None:
        config = (Path(path).parent / experiment.config)
        if not config.is_file():
            raise ConfigError(f"{origins.get('config', path)}: config: no file {config}")
        experiment.config = str(config.resolve())
    return experiment, origins


def plan_experiment(registry: Any, *, plugin: str | None = None, config: Path | None = None,
                    preset: str | None = None, experiment: Path | None = None,
                    overrides: Sequence[str] = (), data_path: str | None = None) -> Experiment:
    """The experiment a ``dnas search`` command describes, validated before anything runs.

    Without an experiment file it is one supernet and one training per architecture.
    Every grid point of both stages (and both ends of every range) is resolved and
    checked once here, so a misspelt key or a bad value fails at once, naming itself,
    instead of inside a trial hours later.
    """
    from dnas_core.config.runspec import resolve
    from dnas_core.runner.preflight import check_data, check_runnable

    plan, origins = load_experiment(experiment) if experiment else \
        (Experiment(plugin=plugin or ""), {})
    # where each value came from, so that an error blames the line that set it
    labels = {key: f"{origins[f'set.{key}']} (set.{key})" for key in plan.set
              if f"set.{key}" in origins}
    if experiment and plugin and registry.domain(plugin).name != registry.domain(plan.plugin).name:
        raise ConfigError(f"{experiment}: plugin: the experiment is for {plan.plugin!r}, "
                          f"not {plugin!r}")
    if config is not None:
        plan.config = str(Path(config).resolve())
    if preset is not None:
        plan.preset = preset
    for text in overrides:
        key = text.split("=", 1)[0]
        value = parse_override(text)
        for part in key.split("."):
            value = value[part]
        plan.set[key] = value
        labels[key] = f"--set {text}"
    if data_path is not None:
        plan.data_path = str(Path(data_path).resolve())
    base = resolve(registry, plan.plugin or None,
                   config=Path(plan.config) if plan.config else None, preset=plan.preset,
                   values=plan.set, data_path=plan.data_path, value_origins=labels)
    check_runnable(base)
    check_data(registry, base)
    plan.plugin = base.domain.name
    first = plan.supernets.grid_points()[:1] or [{}]
    for point in plan.supernets.grid_points() + plan.supernets.range_ends() + [
            {**first[0], **p} for p in
            plan.architectures.grid_points() + plan.architectures.range_ends()]:
        where = {**labels, **{key: _grid_label(origins, key, value, experiment)
                              for key, value in point.items()}}
        spec = resolve(registry, plan.plugin, config=Path(plan.config) if plan.config else None,
                       preset=plan.preset, values={**plan.set, **point},
                       data_path=plan.data_path, value_origins=where)
        check_runnable(spec)
        if "domain.data.path" in point:  # the data checked above is the same elsewhere
            check_data(registry, spec)
    return plan


def _grid_label(origins: Origins, key: str, value: Any, experiment: Path | None) -> str:
    """Where a grid point's value was written: the experiment file's line of that key."""
    line = next((origins[f"{stage}.grid.{key}"] for stage in ("supernets", "architectures")
                 if f"{stage}.grid.{key}" in origins), str(experiment))
    return f"{line} (grid value {value!r})"
