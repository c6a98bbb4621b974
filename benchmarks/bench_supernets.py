"""Training throughput of each DLRM supernet against the plain DLRM of its largest shapes.

One run prints samples/second (forward + backward + SGD step, sparse embedding gradients,
weights phase: theta frozen, Gumbel-soft sampling) for:

* emb_dim supernet vs plain DLRM with every table at the largest width;
* the cardinality candidates' lookups alone (forward, backward, sparse SGD step) in three
  layouts: one fused table with ``embedding_bag`` + per-sample weights (what the package
  uses), one fused table with ``embedding`` + a batched weighted sum, and one separate
  table per feature and option (the paper's layout), against the plain fused table;
* emb_card supernet vs plain DLRM with full tables, the supernet as shipped
  (``domain.embedding_kernel: auto``: fbgemm's TBE with the table optimizer fused into
  the backward when fbgemm_gpu imports) against the plain model as shipped (torch
  tables) and, when fbgemm is used, also against the plain model on the same fbgemm
  kernel, and the supernet on the torch kernel: four models interleaved in one run
  (``--card-variants``: also whole supernets with the two other torch layouts);
* FC-of-FC MLP supernet vs plain DLRM with the largest MLPs, and the ratio of the measured
  time per example to what the operators' FLOPs predict:
  (t_super / t_plain) x (FLOPs_plain / FLOPs_super), 1.0 = no overhead beyond FLOPs;
* the joint supernet (all four parts) vs plain with the largest of everything (its
  time/FLOPs ratio also carries the embedding search's extra lookups, which FLOPs ignore).

Every timed step is the search's weights step: the task loss plus the cost term
(``coef * mean log expected cost``, the domain's default cost) for the supernet, gradient
clipping at 100 for both. Each space runs with the package's default (small) MLPs and at
the paper's sizes (Table II); each model's peak memory (RSS of a process that builds it
and trains a few steps, above what the process held before) is printed next to its speed,
and the FC-of-FC space also with ``mlp_recompute``. ``--kaggle-memory`` trains the
emb_card supernet and the plain model at Criteo Kaggle's full cardinalities (dim 32,
Adagrad tables and Adam MLPs, as the defaults) and prints both peaks.

``--card-phases`` also prints where the emb_card step's time goes (the Gumbel sampling,
each forward part, loss and cost term, backward, clipping, optimizer step) for those four
models, as a markdown table.

Timings interleave the models' steps and keep each one's fastest step, so that other
processes on a shared machine disturb the ratios as little as possible.

Cardinalities are Criteo Kaggle's, capped at ``--max-rows`` (default 20,000) so that the
run fits in memory. Ids are random.

    python benchmarks/bench_supernets.py [--threads 1] [--spaces emb_card] [--batch 2048]
        [--steps 6] [--mlp-steps 3] [--sizes small,paper] [--no-memory] [--kaggle-memory]
        [--card-phases]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dnas_core.config.settings import GroupSchedule, OptimizerSettings
from dnas_core.engine.cost import CostLoss, CostModel
from dnas_core.engine.memory import on_meta
from dnas_core.engine.optim import clip_grad_norm
from dnas_dlrm.models import build_sampled, build_supernet, cost_models, default_cost
from dnas_dlrm.models.backbone import FusedEmbedding, init_embedding_rows, module_flops
from dnas_dlrm.models.emb_card import HashedEmbeddings, hash_sizes
from dnas_dlrm.models.fcfc import FcOfFc
from dnas_dlrm.models.tbe import TbeEmbeddings, fbgemm_available, fused_optimizer
from dnas_dlrm.settings import DlrmSettings, EmbeddingKernel

KAGGLE = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
          27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
N_DENSE = 13
BIG = [1024, 1024, 1024]
CLIP = 100.0  # the defaults' search.clip_grad_norm
COST_COEF = 0.01  # the defaults' search.cost.coef
LR = 0.1  # the timed models' SGD
#: the weights optimizers the fused tables take their own from, as a search does
SGD = OptimizerSettings("SGD", lr=LR)
DEFAULTS = OptimizerSettings("Adam", lr=1e-3, groups={
    "embeddings": GroupSchedule(optimizer="Adagrad", lr=0.05)})
#: the MLP shapes of each size: fixed hidden layers, then the FC-of-FC space
MLP_SIZES = {"small": ([256, 128], [64, 128, 256, 512], 4),  # the package's defaults
             "paper": (BIG, [128, 256, 512, 1024], 5)}  # the paper's Table II


class SeparateHashedEmbeddings(nn.Module):
    """The paper's layout: one nn.Embedding per feature and candidate hash size."""

    def __init__(self, rows: list[int], fractions: list[float], dim: int, sparse: bool):
        super().__init__()
        self.sizes = hash_sizes(rows, fractions)
        self.tables = nn.ModuleList(nn.Embedding(h, dim, sparse=sparse)
                                    for feature in self.sizes for h in feature)
        for table, h in zip(self.tables, [h for f in self.sizes for h in f]):
            init_embedding_rows(table.weight, [h])
        self.dim, self.n_options = dim, len(fractions)

    def forward(self, ids: Tensor, weights: Tensor) -> Tensor:
        out = []
        for j, feature in enumerate(self.sizes):
            mixed = 0
            for o, h in enumerate(feature):
                table = self.tables[j * self.n_options + o]
                mixed = mixed + table(ids[:, j] % h) * weights[:, j, o:o + 1]
            out.append(mixed)
        return torch.stack(out, dim=1)


def settings_for(space: str, max_rows: int | None, size: str = "paper",
                 recompute: bool = False, kernel: EmbeddingKernel = "auto") -> DlrmSettings:
    hidden, options, layers = MLP_SIZES[size]
    search = {"emb_dim": ["emb_dim"], "emb_card": ["emb_card"],
              "mlp": ["bottom_mlp", "top_mlp"]}.get(
        space, ["emb_dim", "emb_card", "bottom_mlp", "top_mlp"])
    return DlrmSettings(search=search, embedding_dim=32, max_rows=max_rows, bottom_mlp=hidden,
                        top_mlp=hidden, mlp_size_options=options, mlp_max_layers=layers,
                        mlp_recompute=recompute, embedding_kernel=kernel)


def largest_spec(supernet: nn.Module, settings: DlrmSettings) -> dict:
    """The spec of the plain DLRM with the supernet's largest option everywhere."""
    n = supernet.n_sparse
    width = supernet.width
    spec = {"emb_dims": [width] * n, "hash_sizes": list(supernet.rows)}
    for part, module in (("bottom_mlp", supernet.bottom_mlp), ("top_mlp", supernet.top_mlp)):
        if isinstance(module, FcOfFc):
            big = max(module.sizes)
            spec[part] = [module.n_in, *[big] * module.n_node_layers, module.n_out]
        else:
            spec[part] = list(module.sizes)
    return spec


def make_batch(batch: int, rows: list[int], seed: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch, N_DENSE, generator=gen) * 5
    sparse = torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in rows], dim=1)
    labels = (torch.rand(batch, generator=gen) < 0.25).float()
    return (dense, sparse), labels


class Trainer:
    """Training steps of one model on a few pre-made batches: the loss (with the cost term
    when a cost model is given), backward, gradient clipping, the optimizer step."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], batch: int,
                 rows: list[int], lr: float = LR, cost: CostModel | None = None,
                 optimizer: torch.optim.Optimizer | None = None):
        self.model, self.batch, self.params, self.cost = model, batch, params, cost
        self.optimizer = optimizer or torch.optim.SGD(params, lr=lr)
        self.batches = [make_batch(batch, rows, seed) for seed in range(4)]
        self.loss_fn = nn.BCELoss()
        self.cost_loss = CostLoss("additive", COST_COEF)
        self.calls = 0

    def step(self, laps: Laps | None = None) -> float:
        """One step; returns its wall time in seconds (and adds its phases to ``laps``)."""
        inputs, labels = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self.model.train()
        start = time.perf_counter()
        lap = laps.start(start) if laps is not None else (lambda name: None)
        loss = self.loss_fn(self.model(inputs), labels)
        if self.cost is not None:
            loss = self.cost_loss(loss, self.cost.expected(self.model))
        lap("loss + cost term")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward (fbgemm: with the tables' update)")
        clip_grad_norm(self.params, CLIP)
        lap("gradient clipping (torch: coalescing)")
        self.optimizer.step()
        lap("optimizer step")
        return time.perf_counter() - start


class Laps:
    """Wall time of a step's phases, each phase closed by ``lap(name)``; the forward's
    parts are closed by hooks on the DLRM's four parts (:meth:`watch`)."""

    FORWARD = {"bottom_mlp": "bottom MLP forward", "embeddings": "lookup forward",
               "interaction": "interaction forward", "top_mlp": "top MLP forward"}

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.last = 0.0

    def start(self, now: float) -> Callable[[str], None]:
        self.last = now
        return self.lap

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.last
        self.last = now

    def watch(self, model: nn.Module) -> None:
        """Everything before the bottom MLP (a supernet's Gumbel sampling) is one phase."""
        model.bottom_mlp.register_forward_pre_hook(lambda *_: self.lap("Gumbel sampling"))
        for part, name in self.FORWARD.items():
            getattr(model, part).register_forward_hook(lambda *_, n=name: self.lap(n))


def supernet_trainer(supernet, settings: DlrmSettings, batch: int, rows: list[int],
                     optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
                     ) -> Trainer:
    """Weights phase as the search runs it: the tables fused as the domain's
    ``embedding_kernel`` says (taking their optimizer from the one timed), theta frozen,
    per-example Gumbel weights, the domain's default cost in the loss."""
    supernet.fuse_optimizer(DEFAULTS if optimizer is adagrad_adam else SGD, "bench")
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    for p in supernet.arch_parameters():
        p.requires_grad_(False)
    cost = {m.name: m for m in cost_models(settings, KAGGLE, supernet)}[default_cost(settings)]
    return Trainer(supernet, supernet.weight_parameters(), batch, rows, cost=cost,
                   optimizer=optimizer(supernet) if optimizer else None)


def models_for(space: str, settings: DlrmSettings, cards: list[int]
               ) -> tuple[nn.Module, nn.Module]:
    """The supernet and the plain DLRM of its largest shapes, seeded."""
    torch.manual_seed(0)
    supernet = build_supernet(settings, cards, N_DENSE)
    plain = build_sampled(settings, largest_spec(supernet, settings), cards, N_DENSE)
    return supernet, plain


def adagrad_adam(model: nn.Module) -> torch.optim.Optimizer:
    """The defaults' optimizers in one: Adagrad for the tables, Adam for the rest (the
    tables' sparse gradients rule out one Adam)."""
    tables = [p for n, p in model.named_parameters() if "embeddings" in n]
    dense = [p for n, p in model.named_parameters() if "embeddings" not in n
             and p.requires_grad]
    adam = torch.optim.Adam(dense, lr=1e-3)  # fused tables have their Adagrad inside
    return _Both(torch.optim.Adagrad(tables, lr=0.05), adam) if tables else adam


class _Both(torch.optim.Optimizer):
    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None) -> None:
        for o in self.optimizers:
            o.step()


def high_water_kib() -> int:
    """This process's peak RSS in KiB. /proc's VmHWM starts afresh at exec; ru_maxrss can
    carry the parent's peak across fork and exec, hiding a child smaller than its parent."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_of(job: str, args) -> dict:
    """Run in this process: build one model of ``job`` (space:size:model[:kaggle]
    [:recompute]) and train a few steps; its peak RSS above what the process held."""
    space, size, which, *flags = job.split(":")
    kaggle = "kaggle" in flags
    cards = KAGGLE
    settings = settings_for(space, None if kaggle else args.max_rows, size,
                            "recompute" in flags)
    base = high_water_kib()
    optimizer = adagrad_adam if kaggle else None
    torch.manual_seed(0)
    if which == "supernet":  # only the measured model is ever allocated
        supernet = build_supernet(settings, cards, N_DENSE)
        rows = list(supernet.rows)
        trainer = supernet_trainer(supernet, settings, args.batch, rows, optimizer)
    else:
        shapes = on_meta(lambda: build_supernet(settings, cards, N_DENSE))
        rows = list(shapes.rows)
        plain = build_sampled(settings, largest_spec(shapes, settings), cards, N_DENSE)
        trainer = Trainer(plain, list(plain.parameters()), args.batch, rows,
                          optimizer=optimizer(plain) if optimizer else None)
    for _ in range(3):
        trainer.step()
    return {"peak_gib": (high_water_kib() - base) / (1 << 20)}


def measured_peak(job: str, args) -> float:
    """The peak of ``job`` in a fresh process, so models never share an allocator."""
    threads = [] if args.threads is None else ["--threads", str(args.threads)]
    done = subprocess.run([sys.executable, __file__, "--peak-of", job, "--batch",
                           str(args.batch), "--max-rows", str(args.max_rows), *threads],
                          capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_gib"])


def throughputs(trainers: list[Trainer], warmup: int, steps: int) -> list[float]:
    """Samples/s of several models, their steps interleaved and each timed by its fastest
    step: other processes on a shared machine only ever slow a step down, so the minimum
    is the least disturbed estimate, and interleaving exposes all to the same load."""
    for _ in range(warmup):
        for trainer in trainers:
            trainer.step()
    times: list[list[float]] = [[] for _ in trainers]
    for _ in range(steps):
        for trainer, kept in zip(trainers, times):
            kept.append(trainer.step())
    return [trainer.batch / min(kept) for trainer, kept in zip(trainers, times)]


class TbePlainTables(nn.Module):
    """A plain model's tables on the fbgemm kernel (a bag of one row per feature, no
    per-sample weights), the optimizer fused as the supernet's: a fair second baseline."""

    def __init__(self, tables: FusedEmbedding, optimizer: OptimizerSettings):
        super().__init__()
        self.tables = TbeEmbeddings([[r] for r in tables.rows], tables.dim, tables.weight,
                                    fused_optimizer(optimizer, "bench", "fbgemm tables"))

    def forward(self, ids: Tensor) -> Tensor:
        return self.tables(ids)


def on_fbgemm(plain: nn.Module) -> nn.Module:
    """The plain model with its (one-width) tables moved to the fbgemm kernel."""
    groups = plain.embeddings.groups
    if len(groups) != 1:
        raise ValueError("the fbgemm baseline needs tables of one width")
    plain.embeddings = TbePlainTables(groups[0], SGD)
    return plain


def compare(space: str, args, size: str = "paper", swap: Callable[[nn.Module], None] | None = None,
            label: str | None = None) -> tuple[float, float, nn.Module, nn.Module]:
    settings = settings_for(space, args.max_rows, size)
    supernet, plain = models_for(space, settings, KAGGLE)
    if swap is not None:
        swap(supernet)
    rows = list(supernet.rows)
    steps = args.mlp_steps if space in ("mlp", "joint") else args.steps
    trainers = [supernet_trainer(supernet, settings, args.batch, rows),
                Trainer(plain, list(plain.parameters()), args.batch, rows)]
    fused = isinstance(supernet.embeddings.tables, TbeEmbeddings)
    if space == "emb_card" and swap is None:  # the kernels' four models, in one run
        torch_net, plain_tbe = models_for(space, settings_for(space, args.max_rows, size,
                                                              kernel="torch"), KAGGLE)
        trainers.append(supernet_trainer(torch_net, settings, args.batch, rows))
        if fused:
            on_fbgemm(plain_tbe)
            trainers.append(Trainer(plain_tbe, list(plain_tbe.parameters()), args.batch, rows))
    speeds = throughputs(trainers, args.warmup, steps)
    super_sps, plain_sps = speeds[:2]
    kernel = " fbgemm" if fused else (" torch" if space == "emb_card" else "")
    name = f"{label or space} ({size} MLPs){kernel}"
    memory = ""
    if args.memory and swap is None:
        peaks = [measured_peak(f"{space}:{size}:{m}", args) for m in ("supernet", "plain")]
        memory = f"   peak {peaks[0]:5.2f} GiB vs {peaks[1]:5.2f} GiB"
    print(f"{name:<34} supernet {super_sps:8.0f} /s   plain {plain_sps:8.0f} /s   "
          f"ratio {super_sps / plain_sps:5.2f}x{memory}", flush=True)
    if len(speeds) > 2:
        print(f"{'':<34} supernet on torch tables {speeds[2]:8.0f} /s: "
              f"{speeds[2] / plain_sps:5.2f}x of plain", flush=True)
    if len(speeds) > 3:
        print(f"{'':<34} plain on fbgemm tables   {speeds[3]:8.0f} /s: supernet "
              f"{super_sps / speeds[3]:5.2f}x of it", flush=True)
    return super_sps, plain_sps, supernet, plain


class TableTrainer:
    """Embedding lookups alone: forward, backward of a weighted sum, sparse SGD step."""

    def __init__(self, module: nn.Module, rows: list[int], batch: int, hashed: bool):
        self.module, self.batch, self.hashed = module, batch, hashed
        params = list(module.parameters())  # none: fbgemm's tables step themselves
        self.optimizer = torch.optim.SGD(params, lr=LR) if params else None
        gen = torch.Generator().manual_seed(0)
        self.ids = [torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in rows], 1)
                    for _ in range(4)]
        n_options = getattr(module, "n_options", 1)
        self.weights = torch.softmax(torch.randn(batch, len(rows), n_options, generator=gen), -1)
        self.calls = 0

    def step(self) -> float:
        ids = self.ids[self.calls % len(self.ids)]
        self.calls += 1
        start = time.perf_counter()
        out = self.module(ids, self.weights) if self.hashed else self.module(ids)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        out.sum().backward()
        if self.optimizer is not None:
            self.optimizer.step()
        return time.perf_counter() - start


def lookups_only(args) -> None:
    """The cardinality candidates' lookups alone (no MLPs), where layouts differ most."""
    rows = [min(c, args.max_rows) if args.max_rows else c for c in KAGGLE]
    fractions = [1.0, 0.1, 0.01, 0.001]
    torch.manual_seed(0)
    plain = TableTrainer(FusedEmbedding(rows, 32, True), rows, args.batch, hashed=False)
    variants = {
        "fused, embedding_bag": HashedEmbeddings(rows, fractions, 32, True, mode="bag"),
        "fused, gather + bmm": HashedEmbeddings(rows, fractions, 32, True, mode="gather"),
        "separate tables": SeparateHashedEmbeddings(rows, fractions, 32, True),
    }
    if fbgemm_available():
        bag = variants["fused, embedding_bag"]
        variants["fbgemm TBE, fused SGD"] = TbeEmbeddings(
            bag.sizes, bag.dim, bag.weight.detach().clone(),
            fused_optimizer(SGD, "bench", "fbgemm tables"))
    trainers = {k: TableTrainer(m, rows, args.batch, hashed=True) for k, m in variants.items()}
    everything = {"plain": plain, **trainers}
    for trainer in everything.values():
        for _ in range(2):
            trainer.step()
    times: dict[str, list[float]] = {k: [] for k in everything}
    for _ in range(args.lookup_steps):
        for name, trainer in everything.items():
            times[name].append(trainer.step())
    base = min(times["plain"])
    print(f"{'emb_card lookups only':<28} plain fused table {base * 1e3:6.1f} ms/step", flush=True)
    for name in trainers:
        best = min(times[name])
        print(f"{'':<28} {name:<22} {best * 1e3:6.1f} ms/step ({best / base:4.2f}x plain)",
              flush=True)


def card_phases(args) -> None:
    """Where the time of the emb_card step goes (small MLPs): each phase's fastest of
    ``--steps`` interleaved steps of the four models, as a markdown table."""
    settings = settings_for("emb_card", args.max_rows, "small")
    shipped, plain = models_for("emb_card", settings, KAGGLE)
    on_torch, plain_tbe = models_for("emb_card", settings_for(
        "emb_card", args.max_rows, "small", kernel="torch"), KAGGLE)
    rows = list(shipped.rows)
    trainers = {"supernet, torch tables": supernet_trainer(on_torch, settings, args.batch, rows),
                "supernet as shipped": supernet_trainer(shipped, settings, args.batch, rows),
                "plain as shipped": Trainer(plain, list(plain.parameters()), args.batch, rows)}
    if isinstance(shipped.embeddings.tables, TbeEmbeddings):
        on_fbgemm(plain_tbe)
        trainers["plain, fbgemm tables"] = Trainer(plain_tbe, list(plain_tbe.parameters()),
                                                   args.batch, rows)
    laps = {name: Laps() for name in trainers}
    for name, trainer in trainers.items():
        laps[name].watch(trainer.model)
    best: dict[str, dict[str, float]] = {name: {} for name in trainers}
    for step in range(args.warmup + args.steps):
        for name, trainer in trainers.items():
            laps[name].times = {}
            trainer.step(laps[name])
            if step >= args.warmup:
                for phase, seconds in laps[name].times.items():
                    best[name][phase] = min(best[name].get(phase, seconds), seconds)
    print("| phase (ms) | " + " | ".join(trainers) + " |")
    print("|---|" + "---:|" * len(trainers))
    phases = list(best["supernet as shipped"])
    for phase in phases:
        print(f"| {phase} | " + " | ".join(f"{best[n].get(phase, 0.0) * 1e3:.1f}"
                                          for n in trainers) + " |")
    print("| sum | " + " | ".join(f"{sum(best[n].values()) * 1e3:.1f}" for n in trainers)
          + " |", flush=True)


def fcfc_flops(module: nn.Module) -> int:
    """Per-example forward FLOPs of every FC operator of an MLP part."""
    return module_flops(module)


def fcfc_memory(args) -> None:
    """The FC-of-FC space at the paper's sizes, node layers kept and recomputed."""
    kept = measured_peak("mlp:paper:supernet", args)
    recomputed = measured_peak("mlp:paper:supernet:recompute", args)
    print(f"{'FC-of-FC memory (paper space)':<34} peak {kept:.2f} GiB kept, {recomputed:.2f} "
          f"GiB with domain.mlp_recompute (target 1.45 GB)", flush=True)


def kaggle_memory(args) -> None:
    """emb_card at Kaggle's full cardinalities against the plain model, same optimizers."""
    peaks = [measured_peak(f"emb_card:small:{m}:kaggle", args) for m in ("supernet", "plain")]
    print(f"{'emb_card, full Kaggle tables':<34} peak {peaks[0]:.2f} GiB vs plain "
          f"{peaks[1]:.2f} GiB: {peaks[0] / peaks[1]:.2f}x (target 1.2x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model")
    parser.add_argument("--mlp-steps", type=int, default=3,
                        help="timed steps per model for the (slow) FC-of-FC spaces")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lookup-steps", type=int, default=30,
                        help="timed steps of the lookup-only comparison")
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--spaces", default="emb_dim,emb_card,mlp,joint")
    parser.add_argument("--sizes", default="small,paper", help="MLP sizes: small, paper")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory processes")
    parser.add_argument("--kaggle-memory", action="store_true",
                        help="also the emb_card peak at full Kaggle cardinalities (~10 GB)")
    parser.add_argument("--card-variants", action="store_true",
                        help="also train whole models with the slower cardinality layouts")
    parser.add_argument("--card-phases", action="store_true",
                        help="also the emb_card step's phases (small MLPs), a markdown table")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.peak_of:
        print(json.dumps(peak_of(args.peak_of, args)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"fastest of {args.steps} ({args.mlp_steps} for mlp/joint) interleaved steps after "
          f"{args.warmup} warm-up, max_rows {args.max_rows}", flush=True)
    spaces, sizes = args.spaces.split(","), args.sizes.split(",")
    if "emb_card" in spaces:
        lookups_only(args)
    for space in ("emb_dim", "emb_card", "mlp", "joint"):
        if space not in spaces:
            continue
        for size in sizes:
            super_sps, plain_sps, supernet, plain = compare(space, args, size)
            if space in ("mlp", "joint"):
                super_flops = fcfc_flops(supernet.bottom_mlp) + fcfc_flops(supernet.top_mlp)
                plain_flops = module_flops(plain.bottom_mlp) + module_flops(plain.top_mlp)
                print(f"{'':<34} MLP FLOPs/example: supernet {super_flops / 1e6:.1f} M (all "
                      f"operators), plain {plain_flops / 1e6:.1f} M; time/FLOPs ratio "
                      f"{(plain_sps / super_sps) / (super_flops / plain_flops):.2f}",
                      flush=True)
        if space == "emb_card" and args.card_variants:
            for kind in ("gather", "separate"):
                compare("emb_card", args, sizes[0], card_layout(kind), f"emb_card ({kind})")
    if args.card_phases:
        card_phases(args)
    if "mlp" in spaces and args.memory:
        fcfc_memory(args)
    if args.kaggle_memory:
        kaggle_memory(args)


def card_layout(kind: str) -> Callable[[nn.Module], None]:
    """Swap an emb_card supernet's candidate tables for another layout."""
    def swap(supernet: nn.Module) -> None:
        old = supernet.embeddings.tables
        fractions = supernet.settings.emb_card_options
        if kind == "separate":
            new = SeparateHashedEmbeddings(supernet.rows, fractions, old.dim, True)
        else:
            new = HashedEmbeddings(supernet.rows, fractions, old.dim, True, mode=kind)
        supernet.embeddings.tables = new
    return swap


if __name__ == "__main__":
    main()
