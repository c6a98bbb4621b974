"""Checkpoints of a distributed search: replicated state by rank 0, shards by every rank.

The replicated state (dense weights, theta, optimizers, generators, progress) is the same
on every rank, so rank 0 writes it as the single-process search does. A plugin's sharded
part is written with ``torch.distributed.checkpoint`` (each rank its own shards) into a
directory named by the chunk, *before* rank 0 names that directory in the replicated
checkpoint: a crash between the two leaves the previous, complete pair in charge. Every
rank reads the replicated checkpoint (the run directory is shared by the ranks of a run).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp

from dnas_core.engine import checkpoint
from dnas_core.engine.distributed import DataParallel

SHARDS_KEY = "shards"


def _shard_dir(path: Path, chunk: int) -> Path:
    return path.with_name(f"{path.stem}-shards-{chunk}")


def save(parallel: DataParallel, state: dict[str, Any], path: Path) -> None:
    """Write the shards (all ranks), then the replicated state naming them (rank 0)."""
    sharded = parallel.sharded
    if sharded is not None:
        directory = _shard_dir(path, int(state["next_chunk"]))
        dcp.save(sharded.state_dict(), checkpoint_id=str(directory))
        state = {**state, SHARDS_KEY: directory.name}
    parallel.barrier()
    if parallel.env.writer:
        checkpoint.save(state, path)
        if sharded is not None:  # earlier chunks' shards are no longer named anywhere
            for old in path.parent.glob(f"{path.stem}-shards-*"):
                if old.name != state[SHARDS_KEY]:
                    shutil.rmtree(old, ignore_errors=True)
    parallel.barrier()


def load(parallel: DataParallel, path: Path) -> dict[str, Any]:
    """The replicated state; the sharded part is loaded into the plugin's modules."""
    state = checkpoint.load(path)
    sharded = parallel.sharded
    if sharded is not None:
        if SHARDS_KEY not in state:
            raise RuntimeError(f"{path} holds no sharded tables: it was written by a run "
                               f"that did not shard them; remove it to start over")
        target = sharded.state_dict()
        dcp.load(target, checkpoint_id=str(path.parent / state[SHARDS_KEY]))
        sharded.load_state_dict(target)
    return state
