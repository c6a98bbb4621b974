"""The core's distributed interface without a process group: torchrun's environment, batch
shares and loss weights, GPU groups for ``--nproc-per-trial`` and the trial environment."""

from __future__ import annotations

import pytest
import torch

from dnas_core.engine.distributed import DataParallel, DistEnv
from dnas_core.runner.devices import group_devices
from dnas_core.runner.jobs import Job
from dnas_core.runner.placement import trial_env


def test_env_reads_torchrun_variables_and_names_a_bad_one():
    assert DistEnv.from_environ({}) == DistEnv(0, 1, 0)
    env = DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert env.active and not env.writer
    assert env.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert env.device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        DistEnv.from_environ({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="RANK=2 does not fit WORLD_SIZE=2"):
        DistEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2"})


def test_shares_cover_the_global_batch_and_weights_give_its_mean():
    ranks = [DataParallel(DistEnv(r, 3, r)) for r in range(3)]
    shares = [p.rows(10) for p in ranks]
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 6), (6, 10)]
    losses = torch.arange(10.0)
    weighted = [float(losses[s].mean()) * p.loss_weight(s.stop - s.start, 10)
                for p, s in zip(ranks, shares, strict=True)]
    assert sum(weighted) / 3 == pytest.approx(float(losses.mean()))
    with pytest.raises(ValueError, match="batch of 2 examples cannot feed 3 ranks"):
        ranks[0].rows(2)


def test_gpu_groups_and_the_trial_environment_of_a_group(tmp_path):
    assert group_devices(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]
    assert group_devices(["cpu"], 4) == ["cpu"]
    with pytest.raises(ValueError, match="4 GPUs per trial, but only 2"):
        group_devices(["0", "1"], 4)
    job = Job("k", ["true"], tmp_path / "log.txt")
    env = trial_env(job, "2,3", 1, 1, 1)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["DNAS_DEVICE"] == "cuda"
    assert trial_env(job, "1", 1, 1, 1)["DNAS_DEVICE"] == "cuda:0"


def test_memory_check_judges_a_distributed_search_per_rank():
    from dnas_core.engine.memory import MemoryEstimate

    needed = MemoryEstimate(sharded=100, replicated=10, weights=60, gradients=20,
                            optimizer_state=30, activations=20, sharded_groups=("tables",))
    assert needed.total == 130
    assert needed.per_rank(2) == 10 + 60
    assert needed.per_rank(3) == 10 + 40


def test_a_rank_exit_code_of_the_protocol_survives_torchrun(tmp_path):
    import os
    import subprocess
    import sys

    from dnas_core.runner.ranks import status_of

    assert status_of([-15, 76]) == 76 and status_of([1, -9]) == 1
    script = tmp_path / "rank.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['RANK'] == '1':\n    sys.exit(75)\ntime.sleep(30)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-m", "dnas_core.runner.ranks", "--standalone",
                           "--nproc_per_node", "2", str(script)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 75, done.stderr[-2000:]
