"""Where a trial runs and what it sees there: the device choice and the trial's environment.

Environment given to each trial (on top of the parent's environment and ``job.env``)
-------------------------------------------------------------------------------------
* ``CUDA_VISIBLE_DEVICES``: the slot's GPU id, or ``""`` on a CPU slot (the pool owns this
  variable; ``job.env`` cannot override it). ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` unless set,
  so GPU ids mean what ``nvidia-smi`` shows.
* ``DNAS_DEVICE``: the torch device to use in the trial: ``"cuda:0"`` (the only GPU it
  sees) or ``"cpu"``; ``"cuda"`` for a trial given a group of GPUs (``--nproc-per-trial``),
  whose rank r takes ``cuda:r``. ``DNAS_GPU_ID``: the physical GPU id(s) (``""`` on CPU).
* ``DNAS_TRIAL_KEY``, ``DNAS_ATTEMPT`` (1, 2, ...), ``DNAS_POOL_PID`` (see
  :func:`watch_parent`).
* On CPU slots ``OMP_NUM_THREADS`` = CPU cores // CPU slots unless set, so parallel CPU
  trials do not oversubscribe the cores. ``PYTHONUNBUFFERED=1`` unless set, so logs are live.

Placement
---------
Among devices with a free slot, the pool picks the GPU with the most free memory
(``nvidia-smi``, never a CUDA context in the parent), counting the ``memory_hint_mb`` of
trials started there in the last ``settle_seconds`` as already used (they may not have
allocated yet) and preferring devices where the hint fits. When free memory is unknown
(no ``nvidia-smi``, CPU slots) it picks the device with the fewest running trials. The
hint only guides placement: a trial is never held back for memory; if it runs out, it is
requeued.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from dnas_core.runner import devices as _devices
from dnas_core.runner.jobs import Job

ENV_DEVICE = "DNAS_DEVICE"
ENV_GPU_ID = "DNAS_GPU_ID"
ENV_TRIAL_KEY = "DNAS_TRIAL_KEY"
ENV_ATTEMPT = "DNAS_ATTEMPT"


def pick_device(job: Job, candidates: Sequence[str], busy: Mapping[str, int],
                free: Mapping[str, float], reserved: Mapping[str, float]) -> str:
    """The device among ``candidates`` (each with a free slot) for ``job``: the most free
    memory net of ``reserved`` (hints of trials that may not have allocated yet), where
    the hint fits; the fewest running trials where free memory is unknown."""
    if len(candidates) > 1 and all(d in free for d in candidates):
        def effective(d: str) -> float:
            return free[d] - reserved.get(d, 0.0)

        hint = job.memory_hint_mb
        return max(candidates, key=lambda d: (hint is None or effective(d) >= hint,
                                              effective(d), -busy.get(d, 0)))
    return min(candidates, key=lambda d: busy.get(d, 0))


def trial_env(job: Job, device: str, attempt: int, cpu_threads: int,
              pool_pid: int) -> dict[str, str]:
    """The environment of one attempt: the parent's, ``job.env``, then the pool's own."""
    from dnas_core.runner.processes import ENV_POOL_PID

    env = dict(os.environ)
    env.update(job.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if device == _devices.CPU:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env[ENV_DEVICE] = "cpu"
        env[ENV_GPU_ID] = ""
        env.setdefault("OMP_NUM_THREADS", str(cpu_threads))
    else:
        env["CUDA_VISIBLE_DEVICES"] = device
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        # a group of GPUs ("0,1") is one distributed trial: rank r takes cuda:r
        env[ENV_DEVICE] = "cuda" if "," in device else "cuda:0"
        env[ENV_GPU_ID] = device
    env[ENV_TRIAL_KEY] = job.key
    env[ENV_ATTEMPT] = str(attempt)
    env[ENV_POOL_PID] = str(pool_pid)
    return env
