"""The work of one trial (paper Algorithm 1): build a domain's objects through the
plugin hooks, train a supernet, or train and test one sampled architecture.

Each is a plain function of (registry, run spec, trial directory), called by the trial
worker (:mod:`dnas_core.runner.worker`); everything it produces lands in that directory, and a
supernet search rerun there continues from its checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from dnas_core.config.runspec import RunSpec, check_same_run
from dnas_core.config.validate import ConfigError
from dnas_core.engine import checkpoint
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.baseline import (
    constant_metrics,
    save_row_losses,
    training_targets,
    with_standard_errors,
)
from dnas_core.engine.budget import resolve_batch_size
from dnas_core.engine.cost import CombinedCost, CostModel, priced
from dnas_core.engine.data import DataBundle
from dnas_core.engine.distributed import DataParallel, DistEnv, init_process_group
from dnas_core.engine.memory import check_fits, estimate, on_meta
from dnas_core.engine.optim import scale_lrs
from dnas_core.engine.progress import Reporter
from dnas_core.engine.search import NonFiniteLoss, SearchManager
from dnas_core.engine.streaming import batch_source
from dnas_core.engine.supernet import SuperNet
from dnas_core.engine.tasks import Task
from dnas_core.engine.tblog import RunLogger, save_heatmap
from dnas_core.engine.training import count_parameters, evaluate, predict, train_sampled
from dnas_core.plugins.registry import Registry
from dnas_core.runner.preflight import make_run_dir
from dnas_core.runner.tpe import choice_options


@dataclass
class Built:
    """The domain objects of one run, made through the plugin hooks."""

    data: DataBundle
    task: Task


def _required(value: Any, hook: str, spec: RunSpec) -> Any:
    if value is None:
        raise RuntimeError(f"plugin {spec.domain.plugin!r} registered domain "
                           f"{spec.domain.name!r} but its {hook} hook returned nothing")
    return value


def build_data(registry: Registry, spec: RunSpec) -> Built:
    name, settings, seed = spec.domain.name, spec.domain_settings, spec.settings.seed
    data = _required(registry.hook.dnas_make_data(domain=name, settings=settings, seed=seed),
                     "dnas_make_data", spec)
    task = _required(registry.hook.dnas_make_task(domain=name, settings=settings,
                                                  data_info=data.info), "dnas_make_task", spec)
    return Built(data, task)


def cost_models(registry: Registry, spec: RunSpec, data_info: dict[str, Any],
                supernet: SuperNet) -> dict[str, CostModel]:
    models: dict[str, CostModel] = {}
    for found in registry.hook.dnas_cost_models(domain=spec.domain.name,
                                                settings=spec.domain_settings,
                                                data_info=data_info, supernet=supernet):
        for model in found or []:
            if model.name in models:
                raise RuntimeError(f"two plugins provide a cost model named {model.name!r}")
            models[model.name] = model
    return models


def ranking_cost(spec: RunSpec, models: dict[str, CostModel]) -> CostModel:
    """The cost the search loss uses (unless its form is off) and architectures are ranked
    and plotted by: one model, or several normalised and weighted (never a sum of units)."""
    terms = spec.cost_terms()
    for name in terms:
        if name not in models:
            raise ConfigError(f"search.cost.terms: unknown cost {name!r}; {spec.domain.name} "
                              f"offers {', '.join(sorted(models)) or 'none'}")
    if len(terms) == 1 and not spec.settings.search.cost.normalise:
        (name, _), = terms.items()
        return models[name]
    return CombinedCost([(models[n], w) for n, w in terms.items()])


@dataclass
class SearchOutcome:
    architectures: list[Architecture]
    val_metrics: dict[str, float]  # the supernet's, with softmax(theta) as mixing weights
    units: dict[str, str]  # cost name -> unit; "cost" is the unit of the loss's cost
    search_seconds: float = 0.0
    entropies: dict[str, list[float]] | None = None  # normalised, per decision and choice
    reference: Architecture | None = None  # the space's hand-sized model
    random_pool: list[Architecture] | None = None  # uniform draws, in the order to train
    constant: dict[str, dict[str, float]] | None = None  # split -> constant predictor
    choice_options: dict[str, Any] | None = None  # what TPE may propose (runner.tpe)


#: each trial's per-row test losses (the constant predictor's in a supernet trial's): the
#: report pairs two models' rows to tell a real difference from the noise
ROW_LOSSES = "test_row_losses.npy"

#: uniform draws kept for the random-search baseline, per architecture the search samples
RANDOM_POOL_FACTOR = 4


def _architecture(spec: RunSpec, supernet: SuperNet, choices: dict[str, Any],
                  models: dict[str, CostModel], source: dict[str, Any]) -> Architecture:
    arch = Architecture(spec.domain.name, spec.space, choices, supernet.decode(choices),
                        source=source)
    return priced(arch, models, ranking_cost(spec, models))


def baselines(spec: RunSpec, supernet: SuperNet, models: dict[str, CostModel]
              ) -> tuple[Architecture | None, list[Architecture]]:
    """The space's reference model and a pool of distinct uniform draws from the space,
    seeded: the random-search baseline trains a prefix of the pool."""
    reference_choices = supernet.reference_choices()
    reference = None if reference_choices is None else _architecture(
        spec, supernet, reference_choices, models, {"role": "reference"})
    wanted = RANDOM_POOL_FACTOR * sum(spec.settings.search.arch_sampling.values()) + 8
    generator = torch.Generator().manual_seed(spec.settings.seed + 104_729)
    pool: dict[str, Architecture] = {}
    for _ in range(wanted * 4):
        arch = _architecture(spec, supernet, supernet.uniform_choices(generator), models,
                             {"role": "random", "seed": spec.settings.seed})
        pool.setdefault(arch.arch_id, arch)
        if len(pool) == wanted:
            break
    return reference, list(pool.values())


def architecture_from_choices(registry: Registry, spec: RunSpec, built: Built,
                              choices: dict[str, Any], source: dict[str, Any]) -> Architecture:
    """Decode and price choices made outside a supernet (TPE's proposals), from a
    supernet built on the meta device: no weights are allocated, whatever the tables'
    size. A domain that cannot build without storage is built for real."""
    try:
        supernet = on_meta(lambda: _supernet(registry, spec, built))
        models = cost_models(registry, spec, built.data.info, supernet)
        return _architecture(spec, supernet, choices, models, source)
    except (NotImplementedError, RuntimeError):  # e.g. a cost measured on real tensors
        pass
    supernet, models = _make_supernet(registry, spec, built)
    return _architecture(spec, supernet, choices, models, source)


def _supernet(registry: Registry, spec: RunSpec, built: Built) -> SuperNet:
    return _required(registry.hook.dnas_make_supernet(
        domain=spec.domain.name, settings=spec.domain_settings, data_info=built.data.info),
        "dnas_make_supernet", spec)


def _make_supernet(registry: Registry, spec: RunSpec, built: Built
                   ) -> tuple[SuperNet, dict[str, CostModel]]:
    """The domain's supernet, initialised by the run's seed, and its cost models."""
    torch.manual_seed(spec.settings.seed)
    supernet = _supernet(registry, spec, built)
    return supernet, cost_models(registry, spec, built.data.info, supernet)


def check_memory(registry: Registry, spec: RunSpec, built: Built, ranks: int = 1) -> None:
    """Log what the search will need against what its device has, and refuse
    (:class:`DoesNotFit`) a supernet the device cannot hold, before allocating any of it."""
    try:
        supernet = on_meta(lambda: _supernet(registry, spec, built))
    except Exception as exc:  # noqa: BLE001 - a domain that cannot build without storage
        print(f"memory estimate unavailable: {exc}", file=sys.stderr, flush=True)
        return
    settings = spec.settings.search
    budget = settings.batch_budget
    batch = resolve_batch_size(settings.batch_size, len(built.data.splits["weights"]),
                               budget.steps_per_epoch, budget.min_batch_size,
                               budget.max_batch_size)
    needed = estimate(supernet, settings.weights_optimizer, settings.arch_optimizer, batch)
    print(check_fits(needed, spec.device(), f"the {spec.space} supernet at batch {batch}",
                     ranks), file=sys.stderr, flush=True)


def make_sampled(registry: Registry, spec: RunSpec, arch: Architecture,
                 built: Built) -> torch.nn.Module:
    """The domain's stand-alone module for one architecture (untrained)."""
    return _required(registry.hook.dnas_make_sampled(
        domain=spec.domain.name, settings=spec.domain_settings, architecture=arch,
        data_info=built.data.info), "dnas_make_sampled", spec)


def _parallel(registry: Registry, spec: RunSpec, supernet: SuperNet, env: DistEnv,
              device: torch.device) -> DataParallel | None:
    """One rank of a distributed search (under torchrun): the domain's sharding, if it
    has one, with its plan in the trial log; None for a single process."""
    if not env.active:
        return None
    sharded = registry.hook.dnas_shard_supernet(
        domain=spec.domain.name, settings=spec.domain_settings, supernet=supernet, env=env,
        device=device, optimizer=spec.settings.search.weights_optimizer)
    if env.writer:
        print(f"distributed search: {env.world_size} ranks; " + (
            f"sharding plan:\n{sharded.plan}" if sharded is not None
            else "no sharding hook: every weight replicated (data parallel)"),
            file=sys.stderr, flush=True)
    return DataParallel(env, sharded)


def run_search(registry: Registry, spec: RunSpec, run_dir: Path, built: Built,
               reporter: Reporter | None = None) -> SearchOutcome:
    """Train the supernet (resuming if a checkpoint exists) and save its architectures,
    with the baselines every report compares them to. Under torchrun every rank runs
    this; rank 0 alone writes."""
    env = DistEnv.from_environ()
    device = env.device(spec.device())
    init_process_group(env, device)
    check_memory(registry, spec, built, env.world_size)
    supernet, models = _make_supernet(registry, spec, built)
    reference, random_pool = baselines(spec, supernet, models)
    logger = RunLogger(run_dir / "tensorboard" / "search" if env.writer else None)
    divergence = spec.settings.train.divergence
    try:
        for attempt in range(divergence.retries + 1):
            settings = spec.settings.search
            settings = replace(settings, weights_optimizer=scale_lrs(
                settings.weights_optimizer, divergence.lr_factor ** attempt))
            manager = SearchManager(supernet, built.data, built.task, ranking_cost(spec, models),
                                    models, settings, domain=spec.domain.name,
                                    space=spec.space, seed=spec.settings.seed,
                                    device=device, run_dir=run_dir, logger=logger,
                                    reporter=reporter if env.writer else None,
                                    loader=spec.settings.loader,
                                    parallel=_parallel(registry, spec, supernet, env, device))
            try:
                architectures = manager.run()
                break
            except NonFiniteLoss as exc:
                if attempt == divergence.retries:
                    raise NonFiniteLoss(f"the supernet diverged {attempt + 1} times, the last "
                                        f"at weights LR x{divergence.lr_factor ** attempt:g}: "
                                        f"{exc}") from exc
                print(f"supernet diverged ({exc}); restarting at weights LR "
                      f"x{divergence.lr_factor ** (attempt + 1):g}", file=sys.stderr,
                      flush=True)
                manager.checkpoint_path.unlink(missing_ok=True)
                supernet, models = _make_supernet(registry, spec, built)  # fresh weights
    finally:
        logger.close()
    seconds = manager.seconds
    for arch in architectures if env.writer else ():
        arch.save(run_dir / "architectures")
    for name, (matrix, rows, cols) in supernet.heatmaps().items() if env.writer else ():
        save_heatmap(run_dir / "heatmaps" / f"{name}.png", matrix, rows, cols,
                     f"{spec.space}: softmax(theta) of {name}")
    units = {n: m.unit for n, m in models.items()}
    units["cost"] = ranking_cost(spec, models).unit
    supernet.sample_expected()
    val = batch_source(built.data.table, built.data.splits["val"],
                       spec.settings.train.eval_batch_size, spec.settings.seed, "val",
                       shuffle=False)
    targets = training_targets(built.data, spec.settings.seed)
    constant = {split: metrics for split in ("val", "test")
                if (metrics := constant_metrics(
                    built.task, built.data, split, spec.settings.seed,
                    row_losses=run_dir / ROW_LOSSES if split == "test" and env.writer
                    else None,
                    train_targets=targets)) is not None}
    return SearchOutcome(architectures, evaluate(supernet, val, built.task, device), units,
                         search_seconds=round(seconds, 3), entropies=supernet.entropies(),
                         reference=reference, random_pool=random_pool,
                         constant=constant or None, choice_options=choice_options(supernet))


def _attempts(spec: RunSpec, built: Built, train: Any) -> Any:
    """Train with the configured LRs, then (while the result diverged) with smaller ones.

    Yields ``(lr_scale, outcome or None, reason or None)`` per attempt; the caller stops
    at the first attempt without a reason.
    """
    divergence = spec.settings.train.divergence
    constant = constant_metrics(built.task, built.data, "val", spec.settings.seed)
    primary = built.task.primary
    limit = None if constant is None else constant[primary] + divergence.margin
    for attempt in range(divergence.retries + 1):
        factor = divergence.lr_factor ** attempt
        try:
            outcome = train(replace(spec.settings.train,
                                    optimizer=scale_lrs(spec.settings.train.optimizer, factor)))
        except NonFiniteLoss as exc:
            yield factor, None, str(exc)
            continue
        value = outcome.best_metrics[primary]
        if limit is not None and value > limit:
            yield factor, outcome, (f"best validation {primary} {value:.4f} is worse than the "
                                    f"constant predictor's {limit:.4f}")
            continue
        yield factor, outcome, None
        return


def train_architecture(registry: Registry, spec: RunSpec, arch: Architecture, run_dir: Path,
                       built: Built, reporter: Reporter | None = None,
                       on_epoch: Any = None) -> dict[str, Any]:
    """Train one sampled architecture and return its result row (validation metrics).

    A diverged training is retried at smaller learning rates (``train.divergence``); if
    every attempt diverged the row says ``status: diverged`` and holds no metrics to rank.
    """
    logger = RunLogger(run_dir / "tensorboard" / "train" / arch.arch_id)

    def train(settings: Any) -> Any:
        torch.manual_seed(spec.settings.seed)
        model = make_sampled(registry, spec, arch, built)
        result = train_sampled(model, built.data, built.task, settings,
                               seed=spec.settings.seed, device=spec.device(), logger=logger,
                               on_epoch=on_epoch, reporter=reporter,
                               loader=spec.settings.loader)
        result.params = count_parameters(model)
        return result

    failed: list[dict[str, Any]] = []
    outcome, scale = None, 1.0
    try:
        for attempt in _attempts(spec, built, train):
            scale, outcome, reason = attempt
            if reason is None:
                break
            failed.append({"lr_scale": scale, "reason": reason})
    finally:
        logger.close()
    row: dict[str, Any] = {"arch_id": arch.arch_id, "search_space": arch.space,
                           "role": arch.source.get("role", "search"), "cost": arch.cost,
                           "costs": arch.costs, "primary_metric": f"val_{built.task.primary}",
                           "failed_attempts": failed}
    if len(failed) > spec.settings.train.divergence.retries:
        return {**row, "status": "diverged", "params": None}
    assert outcome is not None
    checkpoint.save(outcome.best_state, run_dir / "checkpoints" / f"{arch.arch_id}.pt")
    return {**row, "status": "ok", **{f"val_{k}": v for k, v in outcome.best_metrics.items()},
            "params": outcome.params, "lr_scale": scale, "batch_size": outcome.batch_size,
            "train_seconds": round(outcome.train_seconds, 3), "best_epoch": outcome.best_epoch,
            "history": outcome.history}


def test_architecture(registry: Registry, spec: RunSpec, arch: Architecture, run_dir: Path,
                      built: Built) -> dict[str, float]:
    """Test metrics of a trained architecture, from its best checkpoint, with standard
    errors where the task gives them (``<metric>_se``)."""
    model = make_sampled(registry, spec, arch, built)
    model.load_state_dict(checkpoint.load(run_dir / "checkpoints" / f"{arch.arch_id}.pt"))
    test = batch_source(built.data.table, built.data.splits["test"],
                        spec.settings.train.eval_batch_size, spec.settings.seed, "test",
                        shuffle=False)
    outputs, targets = predict(model.to(spec.device()), test, spec.device())
    save_row_losses(built.task, outputs, targets, run_dir / ROW_LOSSES)
    return with_standard_errors(built.task, outputs, targets)


def prepare_run_dir(spec: RunSpec, run_dir: Path) -> None:
    make_run_dir(run_dir)
    saved = run_dir / "config.yaml"
    current = spec.to_dict()
    if saved.exists():
        check_same_run(yaml.safe_load(saved.read_text()) or {}, current, saved)
    else:
        saved.write_text(yaml.safe_dump(current, sort_keys=False))
