"""Exercise the trial pool on real GPUs (or CPU slots when there is none).

    python benchmarks/gpu_pool.py [--devices auto] [--jobs-per-device 2] [--seconds S]

Runs ``2 x slots`` small training trials (an MLP trained with real torch steps on the
trial's device for ``--seconds``) plus one trial that first asks for far more memory than
its GPU has, catches ``torch.cuda.OutOfMemoryError``, exits ``EXIT_OOM``, and is requeued
by the pool with a size that fits (through ``on_oom``). Prints what ran where and the
packing ratio: the sum of trial times over the total wall time (ideal: the slot count).
Without a GPU the same runs on CPU slots and the out-of-memory is simulated (there is no
CUDA allocator to exhaust); the output says so. Exits 1 if any trial did not end "ok".

The script is its own trial program: the pool runs it again with ``--trial ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnas_core.runner.jobs import EXIT_OOM, Job, Outcome  # noqa: E402
from dnas_core.runner.pool import TrialPool  # noqa: E402

# ----------------------------------------------------------------------- the trials


def train_trial(seconds: float, width: int, batch: int) -> int:
    import torch

    device = torch.device(os.environ.get("DNAS_DEVICE", "cpu"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, width), torch.nn.ReLU(),
                                torch.nn.Linear(width, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, width, device=device)
    y = torch.randn(batch, 1, device=device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps % 20 == 0 and device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        torch.cuda.synchronize()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"RESULT {steps} steps in {time.perf_counter() - t0:.1f} s, loss "
          f"{float(loss):.3g}, on {device} ({name}, "
          f"physical GPU {os.environ.get('DNAS_GPU_ID') or '-'})", flush=True)
    return 0


def oom_trial(fraction: float, seconds: float) -> int:
    """Hold ``fraction`` x the device's total memory for a while (>1: certain OOM)."""
    import torch

    device = torch.device(os.environ.get("DNAS_DEVICE", "cpu"))
    if device.type != "cuda":  # no allocator to exhaust: simulate the protocol
        if fraction > 1:
            print(f"simulated CUDA out of memory (CPU slot): asked for {fraction:g} x "
                  "the device", flush=True)
            return EXIT_OOM
        time.sleep(seconds)
        print(f"RESULT held {fraction:g} x the (simulated) device for {seconds:g} s",
              flush=True)
        return 0
    total = torch.cuda.mem_get_info(0)[1]
    nbytes = int(total * fraction)
    try:
        block = torch.empty(nbytes, dtype=torch.uint8, device=device)
    except torch.cuda.OutOfMemoryError as exc:  # this class only: other errors are crashes
        print(f"torch.cuda.OutOfMemoryError for {nbytes / 2**30:.1f} GiB on a "
              f"{total / 2**30:.1f} GiB device: {str(exc).splitlines()[0]}", flush=True)
        return EXIT_OOM
    block.fill_(1)
    torch.cuda.synchronize()
    time.sleep(seconds)
    print(f"RESULT held {nbytes / 2**30:.1f} GiB of {total / 2**30:.1f} GiB for "
          f"{seconds:g} s on physical GPU {os.environ.get('DNAS_GPU_ID')}", flush=True)
    return 0


# ------------------------------------------------------------------------ the driver


def _result_line(outcome: Outcome) -> str:
    try:
        lines = outcome.job.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [ln[len("RESULT "):] for ln in lines if ln.startswith("RESULT ")]
    return found[-1] if found else (outcome.message.splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="auto",
                        help="'auto', 'cpu' or GPU ids such as '0,1'")
    parser.add_argument("--jobs-per-device", type=int, default=2)
    parser.add_argument("--trials-per-slot", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None,
                        help="training seconds per trial (default 3 on GPU, 1.5 on CPU)")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--trial", choices=["train", "oom"], default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, default=4.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.trial is not None and args.seconds is None:
        args.seconds = 3.0
    if args.trial == "train":
        return train_trial(args.seconds, args.width, args.batch)
    if args.trial == "oom":
        return oom_trial(args.fraction, args.seconds)

    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="dnas-gpu-pool-"))
    devices = args.devices if args.devices == "auto" else args.devices.split(",")

    def on_oom(job: Job, attempt: int) -> Job:
        argv = list(job.argv)
        argv[argv.index("--fraction") + 1] = "0.125"  # 1/8 of the device: fits
        return Job(job.key, argv, job.log_path, job.timeout, job.env, job.memory_hint_mb)

    pool = TrialPool(devices=devices, jobs_per_device=args.jobs_per_device,
                     max_oom_retries=2, on_oom=on_oom, poll_interval=0.1)
    on_cpu = all(d == "cpu" for d in pool.devices)
    if args.seconds is None:
        args.seconds = 1.5 if on_cpu else 3.0
    print(f"devices: {pool.devices}, {args.jobs_per_device} job(s) per device, "
          f"{pool.slots} slots; logs in {log_dir}")
    if on_cpu:
        print("NOTE: no GPU found: running on CPU slots; the out-of-memory trial is "
              "simulated (it exits EXIT_OOM without touching an allocator).")

    me = [sys.executable, str(Path(__file__).resolve())]
    timeout = 60 + 10 * args.seconds
    pool.submit(Job("oom-then-fit", [*me, "--trial", "oom", "--fraction", "4",
                                     "--seconds", str(args.seconds)],
                    log_dir / "oom-then-fit.log", timeout=timeout))
    width = args.width if not on_cpu else min(args.width, 512)
    batch = args.batch if not on_cpu else min(args.batch, 256)
    for i in range(args.trials_per_slot * pool.slots):
        pool.submit(Job(f"train-{i}", [*me, "--trial", "train", "--seconds", str(args.seconds),
                                       "--width", str(width), "--batch", str(batch)],
                        log_dir / f"train-{i}.log", timeout=timeout, memory_hint_mb=1024))

    t0 = time.perf_counter()
    outcomes = pool.run(on_done=lambda o: print(f"  done: {o.job.key} {o.status} on "
                                                f"{o.device} after {o.seconds:.1f} s",
                                                flush=True))
    wall = time.perf_counter() - t0

    print(f"\n{'trial':<14} {'device':<8} {'att':>3} {'status':<9} {'seconds':>7}  result")
    for o in sorted(outcomes, key=lambda o: o.job.key):
        print(f"{o.job.key:<14} {o.device:<8} {o.attempts:>3} {o.status:<9} "
              f"{o.seconds:>7.1f}  {_result_line(o)}")
    busy = sum(o.seconds for o in outcomes)
    print(f"\nwall {wall:.1f} s, sum of trial times {busy:.1f} s, packing ratio "
          f"{busy / wall:.2f} (ideal {pool.slots}: slots busy all the time)")
    oom = next(o for o in outcomes if o.job.key == "oom-then-fit")
    bad = [o for o in outcomes if o.status != "ok"]
    if oom.attempts != 2:
        print(f"UNEXPECTED: the out-of-memory trial took {oom.attempts} attempt(s), not 2")
        return 1
    if bad:
        print("FAILED: " + ", ".join(f"{o.job.key}={o.status}" for o in bad))
        for o in bad:
            print(f"--- {o.job.key}\n{o.message}")
        return 1
    print("all trials ok; the out-of-memory trial was requeued once and fitted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
