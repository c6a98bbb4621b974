"""The search manager: alternate weights and architecture training, then sample.

One object runs one supernet search from start to finish (paper IV-C). It follows the
chunk plan of :mod:`dnas_core.engine.schedules`, checkpoints after every chunk, and resumes from
the last checkpoint so that an interrupted search ends exactly where an uninterrupted one
with the same seed would.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dnas_core.config.settings import LoaderSettings, SearchSettings
from dnas_core.engine import checkpoint, dist_checkpoint
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.budget import resolve_batch_size
from dnas_core.engine.cost import CostLoss, CostModel, priced
from dnas_core.engine.data import BatchSource, DataBundle, to_device
from dnas_core.engine.distributed import DataParallel
from dnas_core.engine.loader import Loader
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm, scale_lrs
from dnas_core.engine.progress import Reporter, Step
from dnas_core.engine.schedules import Chunk, plan_chunks, temperature
from dnas_core.engine.steps import StepMonitor, autocast, compiled
from dnas_core.engine.supernet import SuperNet
from dnas_core.engine.tasks import Task
from dnas_core.engine.tblog import RunLogger


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss; the result must not be recorded."""


def sparse_groups(module: torch.nn.Module) -> set[str]:
    return set(getattr(module, "sparse_groups", ()))


class SearchManager:
    """Trains one supernet and samples architectures from it."""

    def __init__(self, supernet: SuperNet, data: DataBundle, task: Task,
                 cost: CostModel | None, cost_models: Mapping[str, CostModel],
                 settings: SearchSettings, *, domain: str, space: str, seed: int,
                 device: torch.device, run_dir: Path, logger: RunLogger | None = None,
                 reporter: Reporter | None = None, loader: LoaderSettings | None = None,
                 parallel: DataParallel | None = None):
        self.supernet = supernet.to(device)
        self.parallel = parallel  # one rank of several: see dnas_core.engine.distributed
        if parallel is not None:
            parallel.broadcast(list(self.supernet.parameters()))
        self._forward = compiled(self.supernet, settings.compile, "search.compile")
        self.task = task
        self.cost = cost  # what sampled architectures are ranked by
        self.loss_cost = cost if settings.cost.form != "off" else None
        self.cost_models = dict(cost_models)
        self.settings = settings
        self.domain, self.space, self.seed = domain, space, seed
        self.device = device
        self.run_dir = Path(run_dir)
        self.logger = logger or RunLogger(None)
        self.reporter = reporter
        self.cost_loss = CostLoss(settings.cost.form, settings.cost.coef,
                                  settings.cost.exponent, settings.cost.multiplier)
        if settings.cost.form != "off" and cost is None:
            raise ValueError("a cost-aware loss needs a cost model")
        budget = settings.batch_budget
        self.loader = Loader(data.table, loader, device)
        self.sources = {
            kind: self.loader.source(data.splits[kind],
                                     resolve_batch_size(settings.batch_size,
                                                        len(data.splits[kind]),
                                                        budget.steps_per_epoch,
                                                        budget.min_batch_size,
                                                        budget.max_batch_size), seed, kind)
            for kind in ("weights", "arch")}
        arch_settings = settings.arch_optimizer
        if settings.arch_lr_scaling == "steps":
            arch_settings = scale_lrs(arch_settings,
                                      budget.steps_per_epoch / len(self.sources["arch"]))
        #: weights trained by a plugin's fused optimizer (a distributed search's sharded
        #: tables have theirs in ``parallel.sharded``)
        self.fused = (supernet.fuse_optimizer(settings.weights_optimizer,
                                              "search.weights_optimizer")
                      if parallel is None else None)
        if self.fused is not None:
            print(f"fused weights: {self.fused.summary}", file=sys.stderr, flush=True)
        self.optimizers = {
            "weights": OptimizerSet(settings.weights_optimizer, supernet.weight_param_groups(),
                                    sparse_groups(supernet), "search.weights_optimizer"),
            "arch": OptimizerSet(arch_settings, {"theta": supernet.arch_parameters()}, (),
                                 "search.arch_optimizer"),
        }
        self._check_groups()
        self.plan = plan_chunks(settings.warmup_epochs, settings.total_epochs,
                                settings.alternate_every, settings.arch_sampling)
        sizes = [len(c.batch_range(len(self.sources[c.kind]))) for c in self.plan]
        #: batches of the plan before each chunk, and in all (the search's progress)
        self._batches_before = [sum(sizes[:i]) for i in range(len(sizes))]
        self._batches_total = sum(sizes)
        self.gumbel = torch.Generator(device=device).manual_seed(seed)
        self.sampler = torch.Generator().manual_seed(seed + 7919)
        self.architectures: list[Architecture] = []
        self.step = 0
        self.next_chunk = 0
        self.seconds = 0.0  # training time over every run that resumed this search

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "search.pt"

    def _check_groups(self) -> None:
        grouped = [id(p) for p in self.optimizers["weights"].params()]
        expected = {id(p) for p in self.supernet.weight_parameters()}
        if len(grouped) != len(set(grouped)) or set(grouped) != expected:
            raise ValueError("weight_param_groups() must list every weight parameter once")

    # ----- checkpoints ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"next_chunk": self.next_chunk, "step": self.step, "seconds": self.seconds,
                "supernet": self.supernet.state_dict(),
                "weights_optimizer": self.optimizers["weights"].state_dict(),
                "arch_optimizer": self.optimizers["arch"].state_dict(),
                "gumbel": self.gumbel.get_state(), "sampler": self.sampler.get_state(),
                "architectures": [json.dumps(a.to_dict()) for a in self.architectures]}

    def _save(self) -> None:
        if self.parallel is None:
            checkpoint.save(self._state(), self.checkpoint_path)
        else:
            dist_checkpoint.save(self.parallel, self._state(), self.checkpoint_path)

    def _load(self) -> dict[str, Any]:
        if self.parallel is None:
            return checkpoint.load(self.checkpoint_path)
        return dist_checkpoint.load(self.parallel, self.checkpoint_path)

    def _restore(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.optimizers["weights"].load_state_dict(state["weights_optimizer"])
        self.optimizers["arch"].load_state_dict(state["arch_optimizer"])
        self.gumbel.set_state(state["gumbel"])
        self.sampler.set_state(state["sampler"])
        self.architectures = [Architecture.from_dict(json.loads(a))
                              for a in state["architectures"]]
        self.next_chunk, self.step = state["next_chunk"], state["step"]
        self.seconds = float(state.get("seconds", 0.0))

    # ----- training -------------------------------------------------------------------------
    def _freeze_for(self, kind: str) -> None:
        """Only the trained set needs gradients: skipping the other saves its backward."""
        for p in self.supernet.arch_parameters():
            p.requires_grad_(kind == "arch")
        for p in self.supernet.weight_parameters():
            p.requires_grad_(kind == "weights")

    def _run_chunk(self, chunk: Chunk) -> None:
        source = self.sources[chunk.kind]
        optimizer = self.optimizers[chunk.kind]
        epochs_done = (chunk.weight_epochs_done if chunk.kind == "weights"
                       else chunk.arch_epochs_done)
        tau = temperature(self.settings.init_temperature, self.settings.temperature_decay,
                          chunk.arch_epochs_done)
        self.supernet.train()
        self.supernet.sample_soft(tau, self.gumbel)
        self._freeze_for(chunk.kind)
        sharded = self.parallel.sharded if self.parallel is not None else self.fused
        if sharded is not None:
            sharded.set_trainable(chunk.kind == "weights")

        def set_epoch(epoch: float) -> None:
            optimizer.set_epoch(epoch)
            if sharded is not None and chunk.kind == "weights":
                sharded.set_epoch(epoch)

        set_epoch(epochs_done)
        batches = chunk.batch_range(len(source))
        label = f"chunk {chunk.index + 1}/{len(self.plan)} {chunk.kind}"
        before = self._batches_before[chunk.index]
        monitor = StepMonitor(self.settings.check_every, self.device)
        for i, (inputs, targets, weight) in enumerate(self._stream(source, batches)):
            if self.settings.update_lrs_every_step:
                set_epoch(epochs_done + i / len(source))
            with autocast(self.settings.precision, self.device):
                outputs = self._forward(inputs)
            task_loss = self.task.loss(outputs.float(), targets)
            cost = self.loss_cost.expected(self.supernet) if self.loss_cost else None
            total = self.cost_loss(task_loss, cost)
            shown = total
            if self.parallel is not None:  # every rank checks the global batch's loss
                total = total * weight
                task_loss = self.parallel.mean(task_loss * weight)
                shown = self.parallel.mean(total)
            monitor.add(self.step, shown, task_loss=task_loss,
                        **({} if cost is None else {"cost": cost}))
            if monitor.due(self.step + 1, i == len(batches) - 1):
                self._report(monitor, chunk.kind, tau, optimizer)
            optimizer.zero_grad()
            total.backward()
            if self.parallel is not None:
                self.parallel.average_gradients(optimizer.params())
            if self.settings.clip_grad_norm is not None:
                clip_grad_norm(optimizer.params(), self.settings.clip_grad_norm)
            optimizer.step()
            self.step += 1
            if self.reporter is not None:
                self.reporter(Step("search", label, i + 1, len(batches), before + i + 1,
                                   self._batches_total))
        self._freeze_for("none")
        if self.parallel is not None:
            self.parallel.check_identical(self.supernet.arch_parameters(), "theta")
            # running statistics (BatchNorm) see only each rank's rows: rank 0's are kept,
            # as DistributedDataParallel's broadcast_buffers does
            self.parallel.broadcast([b for b in self.supernet.buffers()
                                     if b.is_floating_point()])

    def _stream(self, source: BatchSource, batches: range) -> Iterator[tuple[Any, Any, float]]:
        """The batches this process trains on, each with its loss weight: whole batches
        through the loader (prefetched or resident), or this rank's share of each."""
        if self.parallel is None:
            for inputs, targets in self.loader.stream(source, batches):
                yield inputs, targets, 1.0
        else:
            for index in batches:
                yield self._share(source, index)

    def _share(self, source: BatchSource, index: int) -> tuple[Any, Any, float]:
        """This rank's share of a batch (the supernet told which rows those are)."""
        assert self.parallel is not None
        rows = source.batch_rows(index)
        share = self.parallel.rows(len(rows))
        self.supernet.slice_batch(len(rows), share)
        inputs, targets = to_device(source.table.gather(rows[share]), self.device)
        return inputs, targets, self.parallel.loss_weight(share.stop - share.start, len(rows))

    def _report(self, monitor: StepMonitor, kind: str, tau: float,
                optimizer: OptimizerSet) -> None:
        """Read the monitor (the only wait for the device in a chunk): raise on a
        non-finite loss, else log the means since the last read."""
        bad, means = monitor.read()
        if bad is not None:
            raise NonFiniteLoss(f"non-finite search loss {bad[1]} at step {bad[0]}")
        values = {"task_loss": means["task_loss"], "total_loss": means["loss"],
                  "temperature": tau}
        if "cost" in means:
            values["cost"] = means["cost"]
        values.update({f"lr/{kind}/{k}": v for k, v in optimizer.lrs().items()})
        self.logger.scalars(self.step + 1, values, prefix="search/")

    def _sample(self, chunk: Chunk) -> None:
        probabilities = {k: v.tolist() for k, v in self.supernet.probabilities().items()}
        known = {a.arch_id for a in self.architectures}
        modes = ([True] if self.settings.include_argmax else []) \
            + [self.settings.sample_argmax] * chunk.sample_count
        for argmax in modes:
            choices = self.supernet.sample_choices(self.sampler, argmax)
            source = {"after_arch_epochs": chunk.stop, "seed": self.seed}
            if argmax:
                source["argmax"] = True
            arch = Architecture(self.domain, self.space, choices, self.supernet.decode(choices),
                                probabilities=probabilities, source=source)
            arch = priced(arch, self.cost_models, self.cost)
            if arch.arch_id not in known:
                known.add(arch.arch_id)
                self.architectures.append(arch)

    def run(self, on_chunk_end: Callable[[Chunk], None] | None = None) -> list[Architecture]:
        """Train (resuming from the last checkpoint if there is one) and return the
        architectures sampled, in the order they were first drawn."""
        if self.checkpoint_path.exists():
            self._restore(self._load())
            print(f"resuming search from chunk {self.next_chunk + 1}/{len(self.plan)} "
                  f"({self.checkpoint_path})", file=sys.stderr, flush=True)
        for chunk in self.plan[self.next_chunk:]:
            started = time.perf_counter()
            self._run_chunk(chunk)
            if chunk.sample_count:
                self._sample(chunk)
            self.seconds += time.perf_counter() - started
            self.next_chunk = chunk.index + 1
            self._save()
            self.logger.heatmaps(self.step, self.supernet.heatmaps())
            if on_chunk_end is not None:
                on_chunk_end(chunk)
        return list(self.architectures)
