"""The plugin contract: every hook a domain plugin may implement.

A plugin is a module (found through the entry-point group ``dnas``) with functions marked
``@hookimpl`` whose names and arguments match the specs below. A plugin registers one or
more domains by name in :func:`dnas_register_domains`; the build hooks then receive that
name and return ``None`` for domains that are not theirs, so the first plugin that owns
the domain answers (``firstresult``). Cost models and CLI commands are collected from every
plugin, so a third-party plugin can add a cost to someone else's domain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from torch import nn

    from dnas_core.engine.architecture import Architecture
    from dnas_core.engine.cost import CostModel
    from dnas_core.engine.data import DataBundle
    from dnas_core.engine.distributed import DistEnv, ShardedPart
    from dnas_core.engine.supernet import SuperNet
    from dnas_core.engine.tasks import Task
    from dnas_core.plugins.domain import Domain

hookspec = pluggy.HookspecMarker("dnas")
hookimpl = pluggy.HookimplMarker("dnas")


@hookspec
def dnas_register_domains(register: Callable[[Domain], None]) -> None:
    """Call ``register(Domain(...))`` once per domain (search-space family) provided."""


@hookspec(firstresult=True)
def dnas_make_data(domain: str, settings: Any, seed: int) -> DataBundle | None:
    """The table and the weights / arch / val / test row splits, deterministic by seed."""


@hookspec
def dnas_check_data(domain: str, settings: Any) -> list[str] | None:
    """Problems with the configured data, each naming its file (empty: none), found
    cheaply (headers and sizes, no rows read). Called when a run is planned, before its
    run directory exists, so a directory that is not prepared data or a truncated array
    fails at once instead of inside every trial. Optional; ``None`` for other domains."""


@hookspec(firstresult=True)
def dnas_make_supernet(domain: str, settings: Any, data_info: dict[str, Any]) -> SuperNet | None:
    """The supernet for the configured search space."""


@hookspec(firstresult=True)
def dnas_make_sampled(domain: str, settings: Any, architecture: Architecture,
                      data_info: dict[str, Any]) -> nn.Module | None:
    """A plain module for one sampled architecture (built from ``architecture.spec``)."""


@hookspec
def dnas_cost_models(domain: str, settings: Any, data_info: dict[str, Any],
                     supernet: SuperNet) -> list[CostModel] | None:
    """Cost models for this supernet; names must be unique across plugins."""


@hookspec(firstresult=True)
def dnas_make_task(domain: str, settings: Any, data_info: dict[str, Any]) -> Task | None:
    """The task loss and the evaluation metrics."""


@hookspec(firstresult=True)
def dnas_example_inputs(domain: str, settings: Any, data_info: dict[str, Any],
                        batch_size: int) -> Any:
    """A valid input batch of ``batch_size`` rows for the domain's sampled modules, as
    they receive it (a tensor, or a tuple of tensors whose first dimension is the batch):
    ``dnas export`` traces the model with it and keeps it in the exported program."""


@hookspec(firstresult=True)
def dnas_shard_supernet(domain: str, settings: Any, supernet: SuperNet, env: DistEnv,
                        device: Any, optimizer: Any) -> ShardedPart | None:
    """Split some of the supernet's weights across the ranks of a distributed search
    (``env.world_size > 1``, the process group already joined), in place: those weights
    leave the supernet's parameters and state and are trained by the returned part's own
    optimizer, configured from ``optimizer`` (the search's weights optimizer settings).
    Without an answer the run is plain data parallel: every weight replicated."""


@hookspec
def dnas_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``dnas`` command line."""
