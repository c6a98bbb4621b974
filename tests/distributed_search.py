"""A tiny supernet search run the way a trial runs it (``pipeline.run_search``), for
``tests/dlrm/test_torchrec_sharded.py`` and ``tests/core/test_data_parallel.py``: alone,
or as every rank under ``torchrun``.

    python tests/distributed_search.py SPACE RUN_DIR OUT_PREFIX [--kill-rank R --kill-at C]

SPACE is a DLRM space (``emb_dim``, ``emb_card``: sharded with TorchRec under torchrun),
``plain-emb_dim`` (the same without the sharding hook: plain data parallel) or ``cnn``
(the CNN plugin's default space, which has BatchNorm: plain data parallel).

Each rank writes ``OUT_PREFIX-rank{R}.json``: its final theta per decision, and (rank 0)
the sampled architectures' choices. ``--kill-at C`` makes rank R exit hard right after
the checkpoint of chunk C was written, once (a marker file in RUN_DIR remembers it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from dnas_core.config.runspec import resolve
from dnas_core.engine.distributed import DistEnv
from dnas_core.plugins.registry import make_registry
from dnas_core.runner import pipeline

CNN: dict[str, Any] = {
    "seed": 3, "search.warmup_epochs": 1, "search.total_epochs": 3,
    "search.arch_sampling": {2: 3}, "search.arch_optimizer": {"name": "Adam", "lr": 0.1},
}
SETTINGS: dict[str, Any] = {
    "seed": 3,
    "domain.data.synthetic_rows": 3000, "domain.max_rows": 60,
    "domain.bottom_mlp": [16], "domain.top_mlp": [16],
    "domain.emb_dim_options": [4, 8, 16], "domain.emb_card_options": [1.0, 0.5, 0.1],
    "search.batch_size": 200, "search.warmup_epochs": 1, "search.total_epochs": 3,
    "search.alternate_every": 1, "search.arch_sampling": {2: 4},
    "search.arch_optimizer": {"name": "Adam", "lr": 0.1},
    "search.arch_lr_scaling": "none", "search.clip_grad_norm": None,
    "search.cost": {"form": "additive", "coef": 0.01},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("space")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out")
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--kill-at", type=int, default=-1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = DistEnv.from_environ()
    managers = []

    class Recorded(pipeline.SearchManager):  # keeps the supernet; kills a rank when asked
        def __init__(self, *a: Any, **k: Any):
            super().__init__(*a, **k)
            managers.append(self)

        def _save(self) -> None:
            super()._save()
            marker = args.run_dir / "killed"
            if (env.rank == args.kill_rank and self.next_chunk == args.kill_at
                    and not marker.exists()):
                marker.touch()
                os._exit(9)

    pipeline.SearchManager = Recorded  # type: ignore[misc]
    if args.space.startswith("plain-"):  # the DLRM space without its sharding hook
        import dnas_dlrm.plugin

        del dnas_dlrm.plugin.dnas_shard_supernet
        args.space = args.space.removeprefix("plain-")
    registry = make_registry()
    if args.space == "cnn":
        spec = resolve(registry, "cnn", values=CNN)
    else:
        spec = resolve(registry, "dlrm", values={**SETTINGS, "domain.search": [args.space]})
    built = pipeline.build_data(registry, spec)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    outcome = pipeline.run_search(registry, spec, args.run_dir, built)
    supernet = managers[-1].supernet
    result = {"theta": {n: d.theta.detach().tolist() for n, d in supernet.decisions().items()},
              "architectures": [a.choices for a in outcome.architectures],
              "world_size": env.world_size,
              "buffers": [b.tolist() for b in supernet.buffers() if b.is_floating_point()]}
    Path(f"{args.out}-rank{env.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
