"""Checks that need more than the settings' own types, run when a run is planned.

The settings dataclasses check each value on its own; what is left is whether the whole
can run: the search plan (warm-up, epochs, alternation, when architectures are sampled),
whether ``torch.optim`` has each named optimizer and takes its arguments, and whether the
configured device exists here; and whether the configured data is whole (the plugin's
``dnas_check_data``). All are cheap, so every grid point of an experiment is
checked before its first trial starts instead of failing inside a trial after the
supernet has trained.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dnas_core.config.runspec import RunSpec
from dnas_core.config.validate import ConfigError, fail
from dnas_core.engine.optim import check_optimizer
from dnas_core.engine.schedules import plan_chunks


def check_runnable(spec: RunSpec) -> None:
    """Raise a :class:`ConfigError` naming the key (and where it was set) if ``spec``'s
    search plan or optimizers cannot be built."""
    search = spec.settings.search
    try:
        plan_chunks(search.warmup_epochs, search.total_epochs, search.alternate_every,
                    search.arch_sampling)
    except ValueError as exc:  # "search.total_epochs must be positive": the key comes first
        key, _, rest = str(exc).partition(" ")
        raise fail(key.rstrip(":"), spec.origins, rest) from None
    for where, settings in (("search.weights_optimizer", search.weights_optimizer),
                            ("search.arch_optimizer", search.arch_optimizer),
                            ("train.optimizer", spec.settings.train.optimizer)):
        check_optimizer(settings, where, spec.origins)
    device = spec.settings.device
    if device != "auto" and torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        count = torch.cuda.device_count()  # asks the driver; creates no CUDA context
        if index >= count:
            raise fail("device", spec.origins, f"{device!r} is not available here: this "
                                               f"machine has {count} visible CUDA GPU(s)")


def check_data(registry: Any, spec: RunSpec) -> None:
    """Raise a :class:`ConfigError` with every problem the domain's plugins find in the
    configured data (a missing, truncated or empty prepared data set), before any run
    directory exists."""
    answers = registry.pm.hook.dnas_check_data(domain=spec.domain.name,
                                               settings=spec.domain_settings)
    problems = [p for answer in answers if answer for p in answer]
    if problems:
        raise fail("domain.data.path", spec.origins, "; ".join(problems))


def make_run_dir(run_dir: Path) -> None:
    """Create (or reuse) the run directory, or say in one sentence why it cannot be."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot create the run directory: "
                          f"{exc.strerror or exc}; choose another --out") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{run_dir}: the run directory is not writable; choose another "
                          f"--out")
