"""Is the data path ever the bottleneck? Batch-serving rates against the supernet's step.

One run prints, at batch 2048 and 8192, examples/s of:

* ``gather``: the synchronous gather from memory-mapped Criteo arrays (what the step loop
  did before the loader: sorted reads of the rows, put back in order, then the copy);
* ``prefetch``: the same batches from the loader's background thread (``placement:
  host``), pinned and copied ``non_blocking`` on CUDA;
* ``resident``: the loader's device-resident table (``placement: device``): an index
  gather on the device (on a CPU: the table in memory as tensors);
* ``step``: the search's weights step of the supernet (``--space``, its shipped preset),
  on resident batches (compute alone) and on prefetched memory-mapped batches (what
  ``placement: auto`` gives on a CPU: the step with the loader in the loop);

and each serving rate over the step rate (the issue's targets: 5x on a CPU, 10x on a GPU).
Serving rates count the copy to the device and end with a device synchronisation.

Then, at batch 2048 on ``--stream-rows`` memory-mapped rows (several times the streaming
source's two windows), the row-ranges source of the Terabyte path
(:class:`~dnas_core.engine.streaming.StreamingSource`: block reads, window shuffle)
against the index-array source's random gather, over the same ``weights``-like split
(80% of the rows by hash), plainly and prefetched. ``--only-streaming`` prints that alone.

    python benchmarks/bench_loader.py [--rows 1000000] [--batches 2048,8192] [--steps 2]
    python benchmarks/bench_loader.py --only-streaming [--stream-rows 3000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_gpu import KAGGLE, chunk_rate, registry, sync

from dnas_core.config.runspec import RunSpec, resolve
from dnas_core.config.settings import LoaderSettings
from dnas_core.engine.data import BatchSource, DataBundle, to_device
from dnas_core.engine.loader import Loader
from dnas_core.engine.rowsets import RowFilter, RowRanges, iter_rows
from dnas_core.engine.search import SearchManager
from dnas_core.engine.streaming import StreamingSource
from dnas_core.engine.tasks import BinaryClassification
from dnas_core.runner.pipeline import ranking_cost
from dnas_dlrm.data import CriteoArrays
from dnas_dlrm.models import build_supernet, cost_models

N_DENSE = 13


def mapped_arrays(directory: Path, rows: int, seed: int) -> CriteoArrays:
    """Random rows in the prepared data's format (int32 ids below Kaggle's cardinalities),
    written as ``.npy`` files and memory-mapped, as ``CriteoArrays.open`` maps them."""
    rng = np.random.default_rng(seed)
    arrays = {"dense": np.log1p(rng.random((rows, N_DENSE), dtype=np.float32) * 100),
              "sparse": (rng.random((rows, len(KAGGLE))) * np.array(KAGGLE)).astype(np.int32),
              "labels": (rng.random(rows) < 0.25).astype(np.float32)}
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
    del arrays
    mapped = {name: np.load(directory / f"{name}.npy", mmap_mode="r")
              for name in ("dense", "sparse", "labels")}
    return CriteoArrays(mapped["dense"], mapped["sparse"], mapped["labels"], KAGGLE, seed=seed)


WARM = 2  # batches served before the clock starts (first touches, thread start)


def serving_rate(batches, count: int, batch: int, device: torch.device) -> float:
    """Examples/s of taking ``count`` batches from ``batches`` (on the device) after
    :data:`WARM` untimed ones."""
    for _ in range(WARM):
        next(batches)
    sync(device)
    started = time.perf_counter()
    for _ in range(count):
        next(batches)
    sync(device)
    return count * batch / (time.perf_counter() - started)


def plain(source: BatchSource, count: int, device: torch.device):
    for index in range(count):
        yield to_device(source.batch(index), device)


def step_rate(table: CriteoArrays, spec: RunSpec, placement: str, batch: int, steps: int,
              device: torch.device) -> float:
    """Examples/s of the supernet's weights step, its batches placed as ``placement``."""
    torch.manual_seed(0)
    domain = spec.domain_settings
    supernet = build_supernet(domain, KAGGLE, N_DENSE)
    models = {m.name: m for m in cost_models(domain, KAGGLE, supernet)}
    settings = replace(spec.settings.search, batch_size=batch)
    with tempfile.TemporaryDirectory() as run_dir:
        manager = SearchManager(supernet, DataBundle(table, table.splits()),
                                BinaryClassification(),
                                ranking_cost(spec, models), models, settings, domain="dlrm",
                                space=spec.space, seed=0, device=device, run_dir=Path(run_dir),
                                loader=LoaderSettings(placement=placement))
        return chunk_rate(manager, "weights", steps)


def streaming_line(directory: Path, rows: int, count: int, device: torch.device) -> None:
    """Random gather (index arrays) against the streaming source, batch 2048, one split."""
    batch = 2048
    table = mapped_arrays(directory, rows, seed=2)
    split = RowRanges(((0, rows),), RowFilter(0, 0.2, 1.0))
    indices = np.concatenate(list(iter_rows(split, rows)))
    random = BatchSource(table, indices, batch, 1, "weights")
    stream = StreamingSource(table, split, batch, 1, "weights")
    count = min(count, len(random) - WARM)
    window = stream.window_pieces * split.block_rows
    gather = serving_rate(plain(random, count + WARM, device), count, batch, device)
    streamed = serving_rate(plain(stream, count + WARM, device), count, batch, device)
    host = Loader(table, LoaderSettings(placement="host", prefetch=4), device)
    prefetched = serving_rate(host.stream(host.source(split, batch, 1, "weights"),
                                          range(count + WARM)), count, batch, device)
    print(f"streaming, batch {batch}, {rows:,} memory-mapped rows ({count} batches, "
          f"{count * batch / window:.1f} windows of {window:,} rows): random gather "
          f"{gather:,.0f}, streamed {streamed:,.0f} ({streamed / gather:.1f}x), streamed "
          f"+ prefetch {prefetched:,.0f} ({prefetched / gather:.1f}x) examples/s; the "
          f"source held at most {2 * window:,} rows, the index array {len(indices):,}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", default="2048,8192")
    parser.add_argument("--serve", type=int, default=20, help="batches timed per serving rate")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (3 runs)")
    parser.add_argument("--space", default="emb_dim", help="the supernet's preset")
    parser.add_argument("--stream-rows", type=int, default=3_000_000,
                        help="memory-mapped rows of the streaming comparison")
    parser.add_argument("--stream-batches", type=int, default=600,
                        help="batches timed per streaming rate")
    parser.add_argument("--only-streaming", action="store_true",
                        help="only the streaming comparison")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = 10 if device.type == "cuda" else 5
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    if args.only_streaming:
        with tempfile.TemporaryDirectory() as directory:
            streaming_line(Path(directory), args.stream_rows, args.stream_batches, device)
        return 0
    spec = resolve(registry(), "dlrm", preset=args.space)
    print(f"torch {torch.__version__} on {where}; {args.rows:,} memory-mapped rows; "
          f"{args.space} supernet (preset, max_rows {spec.domain_settings.max_rows}); "
          f"examples/s; target: serving >= {target}x the step", flush=True)
    print(f"{'batch':>6} {'gather':>10} {'prefetch':>10} {'resident':>10} | "
          f"{'step':>8} {'step+pf':>8} | {'gather/step':>11} {'prefetch/step':>13} "
          f"{'resident/step':>13}", flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as directory:
        table = mapped_arrays(Path(directory), args.rows, seed=1)
        rows = table.splits()["weights"]
        host = Loader(table, LoaderSettings(placement="host", prefetch=4), device)
        resident = Loader(table, LoaderSettings(placement="device"), device)
        for batch in (int(b) for b in args.batches.split(",")):
            count = min(args.serve, len(rows) // batch - WARM)
            source = BatchSource(table, rows, batch, 1, "weights")
            gather = serving_rate(plain(source, count + WARM, device), count, batch, device)
            prefetched = serving_rate(host.stream(host.source(rows, batch, 1, "weights"),
                                                  range(count + WARM)), count, batch, device)
            on_device = serving_rate(
                resident.stream(resident.source(rows, batch, 1, "weights"),
                                range(count + WARM)), count, batch, device)
            compute = step_rate(table, spec, "device", batch, args.steps, device)
            in_loop = step_rate(table, spec, "host", batch, args.steps, device)
            best = max(prefetched, on_device)
            ok &= best >= target * compute
            print(f"{batch:>6} {gather:>10,.0f} {prefetched:>10,.0f} {on_device:>10,.0f} | "
                  f"{compute:>8,.0f} {in_loop:>8,.0f} | {gather / compute:>10.1f}x "
                  f"{prefetched / compute:>12.1f}x {on_device / compute:>12.1f}x", flush=True)
        print(f"step: compute alone (resident batches); step+pf: with prefetched "
              f"memory-mapped batches. Target met: {'yes' if ok else 'no'}")
        apart = Path(directory) / "streaming"  # new files: the mapped ones stay whole
        apart.mkdir()
        streaming_line(apart, args.stream_rows, args.stream_batches, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
