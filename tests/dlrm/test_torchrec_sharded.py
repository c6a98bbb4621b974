"""Issue 11 item 3: the DLRM supernets sharded with TorchRec under ``torchrun`` (gloo, CPU).

Each search runs the way a trial runs it (``tests/distributed_search.py`` calls
``pipeline.run_search``), once as a single process and once as two ranks whose embedding
tables TorchRec's planner places (the plan is printed in the log). Both ranks must end
with the very same theta (the core checks this after every chunk, and so do we here),
within ``TOLERANCE`` of the single-process theta, and sample the same architectures.

Measured (seed 3, 3 epochs): largest |theta_2 ranks - theta_1 process| 5.2e-7 for emb_dim
and 3.6e-7 for emb_card (theta up to 0.58): float rounding of a different summation
order, amplified a little by Adam. A rank killed right after a checkpoint fails the
torchrun job; the rerun resumes from the sharded checkpoint and ends where the
uninterrupted search would (checked against the single process as well).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchrec", reason="TorchRec is not installed: "
                                       "pip install dnas-dlrm[distributed] (see .ci/run)")

DRIVER = Path(__file__).parents[1] / "distributed_search.py"
NATIVE_ABORT = "terminate called without an active exception"
TOLERANCE = 1e-5  # on theta: the ranks' summation order differs from a single process's


def _run(args: list[str], distributed: bool, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DNAS_PLUGINS": "dlrm", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", "2"] if distributed else [sys.executable])
    done = subprocess.run([*launcher, str(DRIVER), *args], env=env, capture_output=True,
                          text=True, timeout=240)
    if distributed and done.returncode != 0 and NATIVE_ABORT in done.stderr:
        # a rank aborted in native code during start-up (seen once in five CI runs, not
        # reproduced alone); one relaunch, which resumes from any checkpoint it left
        print(f"relaunching after a native abort:\n{done.stderr[-2000:]}", file=sys.stderr)
        done = subprocess.run([*launcher, str(DRIVER), *args], env=env, capture_output=True,
                              text=True, timeout=240)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def _theta(result: dict) -> list[float]:
    return [x for name in sorted(result["theta"]) for row in result["theta"][name]
            for x in (row if isinstance(row, list) else [row])]


def _load(prefix: Path, rank: int) -> dict:
    return json.loads(Path(f"{prefix}-rank{rank}.json").read_text())


def _compare(single: dict, rank0: dict, rank1: dict) -> float:
    assert rank0["world_size"] == 2
    assert _theta(rank0) == _theta(rank1), "the ranks ended with different theta"
    difference = max(abs(a - b) for a, b in zip(_theta(single), _theta(rank0), strict=True))
    assert difference < TOLERANCE
    assert rank0["architectures"] == single["architectures"]
    assert len(single["architectures"]) >= 2
    return difference


def test_emb_dim_sharded_search_matches_single_process(tmp_path):
    _run(["emb_dim", str(tmp_path / "single"), str(tmp_path / "single")], distributed=False)
    done = _run(["emb_dim", str(tmp_path / "dist"), str(tmp_path / "dist")], distributed=True)
    log = done.stdout + done.stderr
    assert "distributed search: 2 ranks; sharding plan:" in log
    assert "rank:1/cpu" in log and "rank:0/cpu" in log  # tables on both ranks
    _compare(_load(tmp_path / "single", 0), _load(tmp_path / "dist", 0),
             _load(tmp_path / "dist", 1))


def test_emb_card_killed_rank_fails_and_rerun_resumes_from_sharded_checkpoint(tmp_path):
    _run(["emb_card", str(tmp_path / "single"), str(tmp_path / "single")], distributed=False)
    run_dir, out = tmp_path / "dist", tmp_path / "dist"
    killed = _run(["emb_card", str(run_dir), str(out), "--kill-rank", "1", "--kill-at", "3"],
                  distributed=True, check=False)
    assert killed.returncode != 0
    assert not Path(f"{out}-rank0.json").exists()  # the job failed as a whole
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "search.pt").exists()
    assert [p.name for p in checkpoints.glob("search-shards-*")] == ["search-shards-3"]
    resumed = _run(["emb_card", str(run_dir), str(out)], distributed=True)
    assert "resuming search from chunk 4/" in resumed.stdout + resumed.stderr
    _compare(_load(tmp_path / "single", 0), _load(out, 0), _load(out, 1))


def test_dnas_search_nproc_per_trial_runs_the_supernet_trial_with_torchrun(tmp_path):
    """The user's side: the pool launches the supernet trial as two ranks."""
    run_dir = tmp_path / "run"
    tiny = ["domain.data.synthetic_rows=4000", "domain.bottom_mlp=[16]",
            "domain.top_mlp=[16]", "domain.max_rows=200", "search.total_epochs=2",
            "search.arch_sampling={1: 1}", "search.batch_size=400", "train.epochs=1",
            "train.batch_size=400"]
    args = [sys.executable, "-m", "dnas_cli.main", "search", "--plugin", "dlrm", "--out",
            str(run_dir), "--devices", "cpu", "--nproc-per-trial", "2", "--no-baseline"]
    for item in tiny:
        args += ["--set", item]
    done = subprocess.run(args, env={**os.environ, "DNAS_PLUGINS": "dlrm"},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = next((run_dir / "trials").glob("supernet-*")).joinpath("log.txt").read_text()
    assert "-m dnas_core.runner.ranks --standalone --nproc_per_node 2" in log
    assert "distributed search: 2 ranks; sharding plan:" in log
    assert json.loads(done.stdout)["trained_architectures"] >= 1
