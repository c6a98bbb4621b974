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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dnas_core.config.settings import SearchSettings
from dnas_core.engine import checkpoint, dist_checkpoint
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.budget import resolve_batch_size
from dnas_core.engine.cost import CostLoss, CostModel, priced
from dnas_core.engine.data import BatchSource, DataBundle, to_device
from dnas_core.engine.distributed import DataParallel
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm, scale_lrs
from dnas_core.engine.schedules import Chunk, plan_chunks, temperature
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
                 progress: bool = True, parallel: DataParallel | None = None):
        self.supernet = supernet.to(device)
        self.parallel = parallel  # one rank of several: see dnas_core.engine.distributed
        if parallel is not None:
            parallel.broadcast(list(self.supernet.parameters()))
        self.task = task
        self.cost = cost  # what sampled architectures are ranked by
        self.loss_cost = cost if settings.cost.form != "off" else None
        self.cost_models = dict(cost_models)
        self.settings = settings
        self.domain, self.space, self.seed = domain, space, seed
        self.device = device
        self.run_dir = Path(run_dir)
        self.logger = logger or RunLogger(None)
        self.progress = progress
        self.cost_loss = CostLoss(settings.cost.form, settings.cost.coef,
                                  settings.cost.exponent, settings.cost.multiplier)
        if settings.cost.form != "off" and cost is None:
            raise ValueError("a cost-aware loss needs a cost model")
        budget = settings.batch_budget
        self.sources = {
            kind: BatchSource(data.table, data.splits[kind],
                              resolve_batch_size(settings.batch_size, len(data.splits[kind]),
                                                 budget.steps_per_epoch, budget.min_batch_size,
                                                 budget.max_batch_size), seed, kind)
            for kind in ("weights", "arch")}
        arch_settings = settings.arch_optimizer
        if settings.arch_lr_scaling == "steps":
            arch_settings = scale_lrs(arch_settings,
                                      budget.steps_per_epoch / len(self.sources["arch"]))
        self.optimizers = {
            "weights": OptimizerSet(settings.weights_optimizer, supernet.weight_param_groups(),
                                    sparse_groups(supernet), "search.weights_optimizer"),
            "arch": OptimizerSet(arch_settings, {"theta": supernet.arch_parameters()}, (),
                                 "search.arch_optimizer"),
        }
        self._check_groups()
        self.plan = plan_chunks(settings.warmup_epochs, settings.total_epochs,
                                settings.alternate_every, settings.arch_sampling)
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
        sharded = self.parallel.sharded if self.parallel is not None else None
        if sharded is not None:
            sharded.set_trainable(chunk.kind == "weights")

        def set_epoch(epoch: float) -> None:
            optimizer.set_epoch(epoch)
            if sharded is not None and chunk.kind == "weights":
                sharded.set_epoch(epoch)

        set_epoch(epochs_done)
        batches = chunk.batch_range(len(source))
        bar = tqdm(batches, desc=f"search {chunk.index + 1}/{len(self.plan)} {chunk.kind}",
                   disable=not self.progress, leave=False, unit="batch")
        for i, index in enumerate(bar):
            if self.settings.update_lrs_every_step:
                set_epoch(epochs_done + i / len(source))
            inputs, targets, weight = self._batch(source, index)
            outputs = self.supernet(inputs)
            task_loss = self.task.loss(outputs, targets)
            cost = self.loss_cost.expected(self.supernet) if self.loss_cost else None
            total = self.cost_loss(task_loss, cost)
            if self.parallel is not None:  # every rank checks the global batch's loss
                total = total * weight
                task_loss = self.parallel.mean(task_loss * weight)
            shown = total if self.parallel is None else self.parallel.mean(total)
            if not torch.isfinite(shown):
                raise NonFiniteLoss(f"non-finite search loss {float(shown)} at step {self.step}")
            optimizer.zero_grad()
            total.backward()
            if self.parallel is not None:
                self.parallel.average_gradients(optimizer.params())
            if self.settings.clip_grad_norm is not None:
                clip_grad_norm(optimizer.params(), self.settings.clip_grad_norm)
            optimizer.step()
            self.step += 1
            if self.step % 10 == 0 or i == len(batches) - 1:
                values = {"task_loss": float(task_loss.detach()),
                          "total_loss": float(shown.detach()), "temperature": tau}
                if cost is not None:
                    values["cost"] = float(cost.detach().mean())
                values.update({f"lr/{chunk.kind}/{k}": v for k, v in optimizer.lrs().items()})
                self.logger.scalars(self.step, values, prefix="search/")
                bar.set_postfix(loss=f"{values['task_loss']:.4f}")
        self._freeze_for("none")
        if self.parallel is not None:
            self.parallel.check_identical(self.supernet.arch_parameters(), "theta")
            # running statistics (BatchNorm) see only each rank's rows: rank 0's are kept,
            # as DistributedDataParallel's broadcast_buffers does
            self.parallel.broadcast([b for b in self.supernet.buffers()
                                     if b.is_floating_point()])

    def _batch(self, source: BatchSource, index: int) -> tuple[Any, Any, float]:
        """The batch this process trains on, and its loss weight: the whole batch, or
        this rank's share of it (with the supernet told which rows those are)."""
        if self.parallel is None:
            inputs, targets = to_device(source.batch(index), self.device)
            return inputs, targets, 1.0
        rows = source.batch_rows(index)
        share = self.parallel.rows(len(rows))
        self.supernet.slice_batch(len(rows), share)
        inputs, targets = to_device(source.table.gather(rows[share]), self.device)
        return inputs, targets, self.parallel.loss_weight(share.stop - share.start, len(rows))

    def _sample(self, chunk: Chunk) -> None:
        probabilities = {k: v.tolist() for k, v in self.supernet.probabilities().items()}
        known = {a.arch_id for a in self.architectures}
        for _ in range(chunk.sample_count):
            choices = self.supernet.sample_choices(self.sampler, self.settings.sample_argmax)
            arch = Architecture(self.domain, self.space, choices, self.supernet.decode(choices),
                                probabilities=probabilities,
                                source={"after_arch_epochs": chunk.stop, "seed": self.seed})
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
