"""A distributed search without a sharding hook is plain data parallel (no TorchRec
needed): every weight replicated, each rank a share of every global batch, gradients
averaged. The DLRM emb_dim search with its hook removed matches the single process
(measured: largest theta difference 3.3e-7, theta up to 0.58); the CNN space, which has
BatchNorm, keeps theta and the running statistics identical on both ranks (rank 0's
statistics are broadcast after every chunk; per-rank batch statistics make its theta
differ from a single process's, as under DistributedDataParallel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).parents[1] / "distributed_search.py"
TOLERANCE = 1e-5


def _run(space: str, prefix: Path, distributed: bool) -> None:
    env = {**os.environ, "DNAS_PLUGINS": "dlrm,cnn", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", "2"] if distributed else [sys.executable])
    done = subprocess.run([*launcher, str(DRIVER), space, str(prefix), str(prefix)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-6000:]
    if distributed:
        assert "no sharding hook: every weight replicated" in done.stderr


def _flat(value) -> list[float]:
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _flat(value[k])]
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [value]


def _load(prefix: Path, rank: int) -> dict:
    return json.loads(Path(f"{prefix}-rank{rank}.json").read_text())


def test_plain_data_parallel_dlrm_matches_the_single_process(tmp_path):
    _run("emb_dim", tmp_path / "single", distributed=False)
    _run("plain-emb_dim", tmp_path / "dist", distributed=True)
    single, rank0, rank1 = (_load(tmp_path / "single", 0), _load(tmp_path / "dist", 0),
                            _load(tmp_path / "dist", 1))
    assert _flat(rank0["theta"]) == _flat(rank1["theta"])
    difference = max(abs(a - b) for a, b in
                     zip(_flat(single["theta"]), _flat(rank0["theta"]), strict=True))
    assert difference < TOLERANCE
    assert rank0["architectures"] == single["architectures"]


def test_batchnorm_statistics_and_theta_stay_identical_across_ranks(tmp_path):
    _run("cnn", tmp_path / "dist", distributed=True)
    rank0, rank1 = _load(tmp_path / "dist", 0), _load(tmp_path / "dist", 1)
    assert _flat(rank0["theta"]) == _flat(rank1["theta"])
    assert rank0["buffers"] and _flat(rank0["buffers"]) == _flat(rank1["buffers"])
    assert rank0["architectures"]
