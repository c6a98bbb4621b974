"""Single-device training speed of every DLRM supernet and the plain DLRM, fp32 and bf16.

Each supernet is built from its shipped preset (``--preset emb_dim`` etc.) with
``domain.max_rows=null``: Criteo Kaggle's cardinalities, uncapped (33.8 M embedding rows),
and timed through the engine's own step (``SearchManager._run_chunk``: Gumbel-soft
sampling, the cost-aware loss, clipping, Adagrad for the sparse tables and Adam for the
rest, the loss read every ``check_every`` steps) on a device-resident table of random
rows, in both phases: weights (theta frozen) and architecture (weights frozen). The plain
DLRM (the defaults' fixed shapes, same cardinalities) runs the sampled-training step.
From the rates it projects the wall time of a full Kaggle search with the paper's plan:
5 weight epochs over the weights split and 4 architecture epochs over the arch split
(45,840,617 rows; 6/7 train, of which 0.8 weights and 0.2 arch).

    python benchmarks/bench_gpu.py                 # full size on a GPU, small on the CPU
    python benchmarks/bench_gpu.py --size small    # cardinalities / 1000, batch 256
    python benchmarks/bench_gpu.py --size full     # needs CUDA (else one line, exit 2)

``--compile`` adds torch.compile rows; ``--spaces`` picks supernets.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dnas_core.config.runspec import RunSpec, resolve
from dnas_core.config.settings import LoaderSettings, SearchSettings
from dnas_core.engine.data import DataBundle, TensorTable
from dnas_core.engine.loader import Loader
from dnas_core.engine.optim import OptimizerSet, clip_grad_norm
from dnas_core.engine.schedules import Chunk
from dnas_core.engine.search import SearchManager
from dnas_core.engine.steps import StepMonitor, autocast, compiled
from dnas_core.engine.tasks import BinaryClassification
from dnas_core.plugins.registry import Registry
from dnas_core.runner.pipeline import ranking_cost
from dnas_dlrm.models import build_sampled, build_supernet, cost_models, plain_spec

KAGGLE = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
          27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
KAGGLE_ROWS = 45_840_617
WEIGHTS_ROWS = round(KAGGLE_ROWS * 6 / 7 * 0.8)
ARCH_ROWS = round(KAGGLE_ROWS * 6 / 7 * 0.2)
N_DENSE = 13
SPACES = ("emb_dim", "emb_card", "mlp", "joint")
SIZES = {"small": {"scale": 1000, "batch": 256, "steps": 2},
         "full": {"scale": 1, "batch": 8192, "steps": 10}}
REPEATS = 3  # timed runs of --steps steps each; the fastest counts (others' load only slows)


def cardinalities(scale: int) -> list[int]:
    return [max(2, c // scale) for c in KAGGLE]


def random_table(cards: list[int], rows: int, seed: int) -> TensorTable:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.log1p(torch.rand(rows, N_DENSE, generator=gen) * 100)
    sparse = torch.stack([torch.randint(0, c, (rows,), generator=gen) for c in cards], dim=1)
    return TensorTable((dense, sparse), (torch.rand(rows, generator=gen) < 0.25).float())


def bundle(table: TensorTable) -> DataBundle:
    rows = np.arange(len(table))
    return DataBundle(table, {"weights": rows, "arch": rows, "val": rows[:1], "test": rows[:1]})


def registry() -> Registry:
    found = Registry()
    found.load_entry_points(["dlrm"])
    return found


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def search_rates(spec: RunSpec, cards: list[int], table: TensorTable, args,
                 device: torch.device) -> dict[tuple[str, str, bool], float]:
    """Examples/s of the engine's search step, by (phase, precision, compiled)."""
    torch.manual_seed(0)
    domain = spec.domain_settings
    supernet = build_supernet(domain, cards, N_DENSE)
    models = {m.name: m for m in cost_models(domain, cards, supernet)}
    settings: SearchSettings = replace(spec.settings.search, batch_size=args.batch)
    rates = {}
    with tempfile.TemporaryDirectory() as run_dir:
        manager = SearchManager(supernet, bundle(table), BinaryClassification(),
                                ranking_cost(spec, models), models, settings, domain="dlrm",
                                space=spec.space, seed=0, device=device, run_dir=Path(run_dir),
                                loader=LoaderSettings(placement="device"))
        for use_compile in (False, True) if args.compile else (False,):
            manager._forward = compiled(manager.supernet, use_compile, "search.compile")
            try:
                for precision in ("fp32", "bf16"):
                    manager.settings = replace(settings, precision=precision)
                    for kind in ("weights", "arch"):
                        rates[kind, precision, use_compile] = chunk_rate(manager, kind,
                                                                         args.steps)
            except RuntimeError as error:  # torch.compile cannot compile every supernet
                if not use_compile:
                    raise
                print(f"{spec.space} supernet (compiled): {error}", flush=True)
                rates = {k: v for k, v in rates.items() if not k[2]}
    return rates


def chunk_rate(manager: SearchManager, kind: str, steps: int) -> float:
    """Examples/s of the search's steps on split ``kind``: one warm-up step, then the
    fastest of :data:`REPEATS` chunks of ``steps`` steps (each ends with the loss check)."""
    source = manager.sources[kind]
    n = len(source)
    if n < 1 + REPEATS * steps:
        raise ValueError(f"{kind} split has {n} batches, fewer than 1 + {REPEATS} x {steps}")
    manager._run_chunk(Chunk(0, kind, 0.0, 1 / n, 0.0, 0.0))  # type: ignore[arg-type]
    best = float("inf")
    for r in range(REPEATS):
        first = 1 + r * steps
        sync(manager.device)
        started = time.perf_counter()
        manager._run_chunk(Chunk(1 + r, kind, first / n,  # type: ignore[arg-type]
                                 (first + steps) / n, 0.0, 0.0))
        sync(manager.device)
        best = min(best, time.perf_counter() - started)
    return steps * source.batch_size / best


def plain_rates(spec: RunSpec, cards: list[int], table: TensorTable, args,
                device: torch.device) -> dict[tuple[str, str, bool], float]:
    """Examples/s of the sampled-training step of the plain DLRM (as ``train_sampled``)."""
    torch.manual_seed(0)
    domain = spec.domain_settings
    model = build_sampled(domain, plain_spec(domain, cards, N_DENSE), cards, N_DENSE).to(device)
    train = spec.settings.train
    optimizer = OptimizerSet(train.optimizer, model.weight_param_groups(), model.sparse_groups)
    loader = Loader(table, LoaderSettings(placement="device"), device)
    source = loader.source(np.arange(len(table)), args.batch, 0, "train")
    task = BinaryClassification()
    rates = {}
    for use_compile in (False, True) if args.compile else (False,):
        forward = compiled(model, use_compile, "train.compile")
        for precision in ("fp32", "bf16"):
            monitor = StepMonitor(train.check_every, device)
            batches = loader.stream(source, range(len(source)))

            def step(index: int, batches=batches, forward=forward, precision=precision,
                     monitor=monitor) -> None:
                inputs, targets = next(batches)
                with autocast(precision, device):
                    outputs = forward(inputs)
                loss = task.loss(outputs.float(), targets)
                monitor.add(index, loss)
                optimizer.zero_grad()
                loss.backward()
                if train.clip_grad_norm is not None:
                    clip_grad_norm(optimizer.params(), train.clip_grad_norm)
                optimizer.step()

            step(0)  # warm-up
            best = float("inf")
            for r in range(REPEATS):
                sync(device)
                started = time.perf_counter()
                for i in range(args.steps):
                    step(1 + r * args.steps + i)
                bad, _ = monitor.read()  # the check at the end of an epoch
                sync(device)
                best = min(best, time.perf_counter() - started)
                if bad is not None:
                    raise FloatingPointError(f"plain DLRM: non-finite loss at step {bad[0]}")
            rates["weights", precision, use_compile] = args.steps * args.batch / best
    return rates


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def report(name: str, rates: dict[tuple[str, str, bool], float], search: bool) -> None:
    for use_compile in sorted({c for _, _, c in rates}):
        label = f"{name}{' (compiled)' if use_compile else ''}"
        cells = []
        for precision in ("fp32", "bf16"):
            w = rates["weights", precision, use_compile]
            cell = f"{precision} {w:>10,.0f}"
            if search:
                a = rates["arch", precision, use_compile]
                wall = 5 * WEIGHTS_ROWS / w + 4 * ARCH_ROWS / a
                cell += f" / arch {a:>10,.0f}  Kaggle search {hours(wall):>9}"
            cells.append(cell)
        print(f"{label:<22} " + "   ".join(cells), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["auto", "small", "full"], default="auto",
                        help="full: Kaggle cardinalities (needs CUDA); small: / 1000, on any "
                             "device; auto: full when CUDA is available")
    parser.add_argument("--batch", type=int, help="default: 8192 full, 256 small")
    parser.add_argument("--steps", type=int, help="timed steps (after one warm-up)")
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    size = ("full" if cuda else "small") if args.size == "auto" else args.size
    if size == "full" and not cuda:
        print("bench_gpu: --size full needs a CUDA GPU and torch.cuda.is_available() is "
              "False here; run --size small (or no --size) on this machine", file=sys.stderr)
        return 2
    spaces = [s for s in args.spaces.split(",") if s]
    unknown = sorted(set(spaces) - set(SPACES))
    if unknown:
        print(f"bench_gpu: --spaces: unknown {unknown}; expected some of {list(SPACES)}",
              file=sys.stderr)
        return 2
    args.batch = args.batch or SIZES[size]["batch"]
    args.steps = args.steps or SIZES[size]["steps"]
    device = torch.device("cuda" if cuda else "cpu")
    cards = cardinalities(SIZES[size]["scale"])
    where = torch.cuda.get_device_name(device) if cuda else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; size {size}: {sum(cards):,} embedding rows "
          f"(Kaggle / {SIZES[size]['scale']}, uncapped), batch {args.batch}, {args.steps} "
          f"timed steps, fastest of {REPEATS}, after 1 warm-up; examples/s, weights "
          f"phase / architecture phase; "
          f"the projected search: 5 weight epochs of {WEIGHTS_ROWS:,} rows and 4 arch epochs "
          f"of {ARCH_ROWS:,}", flush=True)
    if size == "small":
        print("(small size: the projection uses this size's rates, not a full-size model's)")
    table = random_table(cards, args.batch * (1 + REPEATS * args.steps), seed=1)
    found = registry()
    for space in spaces:
        spec = resolve(found, "dlrm", preset=space, overrides=["domain.max_rows=null"])
        report(f"{space} supernet", search_rates(spec, cards, table, args, device), True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    spec = resolve(found, "dlrm", overrides=["domain.max_rows=null"])
    report("plain DLRM", plain_rates(spec, cards, table, args, device), False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
