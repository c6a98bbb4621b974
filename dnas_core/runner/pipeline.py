"""The work of one trial (paper Algorithm 1): build a domain's objects through the
plugin hooks, train a supernet, or train and test one sampled architecture.

Each is a plain function of (registry, run spec, trial directory), called by the trial
worker (:mod:`dnas_core.runner.worker`); everything it produces lands in that directory, and a
supernet search rerun there continues from its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dnas_core.config.runspec import RunSpec, check_same_run
from dnas_core.config.validate import ConfigError
from dnas_core.engine import checkpoint
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CombinedCost, CostModel
from dnas_core.engine.data import BatchSource, DataBundle
from dnas_core.engine.search import SearchManager
from dnas_core.engine.supernet import SuperNet
from dnas_core.engine.tasks import Task
from dnas_core.engine.tblog import RunLogger, save_heatmap
from dnas_core.engine.training import count_parameters, evaluate, train_sampled
from dnas_core.plugins.registry import Registry


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


def loss_cost(spec: RunSpec, models: dict[str, CostModel]) -> CostModel | None:
    """The cost the search loss uses: one model, or several normalised and weighted."""
    if spec.settings.search.cost.form == "off":
        return None
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


def run_search(registry: Registry, spec: RunSpec, run_dir: Path, built: Built,
               progress: bool = True) -> SearchOutcome:
    """Train the supernet (resuming if a checkpoint exists) and save its architectures."""
    torch.manual_seed(spec.settings.seed)
    supernet = _required(registry.hook.dnas_make_supernet(
        domain=spec.domain.name, settings=spec.domain_settings, data_info=built.data.info),
        "dnas_make_supernet", spec)
    models = cost_models(registry, spec, built.data.info, supernet)
    logger = RunLogger(run_dir / "tensorboard" / "search")
    try:
        manager = SearchManager(supernet, built.data, built.task, loss_cost(spec, models),
                                models, spec.settings.search, domain=spec.domain.name,
                                space=spec.space, seed=spec.settings.seed, device=spec.device(),
                                run_dir=run_dir, logger=logger, progress=progress)
        architectures = manager.run()
    finally:
        logger.close()
    for arch in architectures:
        arch.save(run_dir / "architectures")
    for name, (matrix, rows, cols) in supernet.heatmaps().items():
        save_heatmap(run_dir / "heatmaps" / f"{name}.png", matrix, rows, cols,
                     f"{spec.space}: softmax(theta) of {name}")
    units = {n: m.unit for n, m in models.items()}
    units["cost"] = manager.loss_cost.unit if manager.loss_cost else "none"
    supernet.sample_expected()
    val = BatchSource(built.data.table, built.data.splits["val"],
                      spec.settings.train.eval_batch_size, spec.settings.seed, "val", shuffle=False)
    return SearchOutcome(architectures, evaluate(supernet, val, built.task, spec.device()), units)


def train_architecture(registry: Registry, spec: RunSpec, arch: Architecture, run_dir: Path,
                       built: Built, progress: bool = True,
                       on_epoch: Any = None) -> dict[str, Any]:
    """Train one sampled architecture and return its result row (validation metrics)."""
    torch.manual_seed(spec.settings.seed)
    model = _required(registry.hook.dnas_make_sampled(
        domain=spec.domain.name, settings=spec.domain_settings, architecture=arch,
        data_info=built.data.info), "dnas_make_sampled", spec)
    logger = RunLogger(run_dir / "tensorboard" / "train" / arch.arch_id)
    try:
        outcome = train_sampled(model, built.data, built.task, spec.settings.train,
                                seed=spec.settings.seed, device=spec.device(), logger=logger,
                                on_epoch=on_epoch, progress=progress)
    finally:
        logger.close()
    checkpoint.save(outcome.best_state, run_dir / "checkpoints" / f"{arch.arch_id}.pt")
    terms = spec.cost_terms()
    cost = (arch.costs[next(iter(terms))] if len(terms) == 1
            else sum(w * arch.costs[n] for n, w in terms.items()))
    return {"arch_id": arch.arch_id, "search_space": arch.space,
            **{f"val_{k}": v for k, v in outcome.best_metrics.items()},
            "cost": cost, "costs": arch.costs, "params": count_parameters(model),
            "primary_metric": f"val_{built.task.primary}",
            "train_seconds": round(outcome.train_seconds, 3), "best_epoch": outcome.best_epoch,
            "history": outcome.history}


def test_architecture(registry: Registry, spec: RunSpec, arch: Architecture, run_dir: Path,
                      built: Built) -> dict[str, float]:
    """Test metrics of a trained architecture, from its best checkpoint."""
    model = _required(registry.hook.dnas_make_sampled(
        domain=spec.domain.name, settings=spec.domain_settings, architecture=arch,
        data_info=built.data.info), "dnas_make_sampled", spec)
    model.load_state_dict(checkpoint.load(run_dir / "checkpoints" / f"{arch.arch_id}.pt"))
    test = BatchSource(built.data.table, built.data.splits["test"],
                       spec.settings.train.eval_batch_size, spec.settings.seed, "test",
                       shuffle=False)
    return evaluate(model.to(spec.device()), test, built.task, spec.device())


def prepare_run_dir(spec: RunSpec, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    current = spec.to_dict()
    if saved.exists():
        check_same_run(yaml.safe_load(saved.read_text()) or {}, current, saved)
    else:
        saved.write_text(yaml.safe_dump(current, sort_keys=False))
