"""A tiny trial process for the pool tests: ``python fake_trial.py BEHAVIOUR [options]``.

Behaviours: ``ok`` (write ``--out`` as JSON with the device environment), ``oom`` (exit
EXIT_OOM on the first ``--fail-times`` attempts, counted in ``--counter``, then behave as
``ok``), ``crash`` (raise a RuntimeError: a crash, not an out-of-memory), ``hang`` (sleep
forever, optionally with a grandchild and ignoring SIGTERM), ``nan`` (exit EXIT_NONFINITE),
``pruned`` (exit EXIT_PRUNED), ``signal`` (kill itself with SIGKILL).
``--grandchild-pid FILE`` first starts a long-sleeping child process and writes its pid.

Deliberately imports neither torch nor dnas_core (fast start); the exit codes are copied
here and a test checks they match ``dnas_core.runner.pool``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_OOM = 75
EXIT_NONFINITE = 76
EXIT_PRUNED = 77


def _record(args: argparse.Namespace, started: float) -> None:
    info = {
        "argv": sys.argv[1:],
        "batch": args.batch,
        "tag": args.tag,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "dnas_device": os.environ.get("DNAS_DEVICE"),
        "dnas_gpu_id": os.environ.get("DNAS_GPU_ID"),
        "attempt": os.environ.get("DNAS_ATTEMPT"),
        "extra": os.environ.get("FAKE_EXTRA"),
        "start": started,
        "end": time.time(),
    }
    print(f"CUDA_VISIBLE_DEVICES={info['cuda_visible_devices']!r} "
          f"DNAS_DEVICE={info['dnas_device']}", flush=True)
    if args.out:
        tmp = Path(args.out + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(args.out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("behaviour",
                        choices=["ok", "oom", "crash", "hang", "nan", "pruned", "signal"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--counter", default=None)
    parser.add_argument("--fail-times", type=int, default=10**9)
    parser.add_argument("--grandchild-pid", default=None)
    parser.add_argument("--ignore-term", action="store_true")
    args = parser.parse_args()
    started = time.time()
    print(f"fake trial {args.behaviour} pid {os.getpid()}", flush=True)

    if args.grandchild_pid:  # a process of our own that outlives us unless the pool kills it
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
        Path(args.grandchild_pid).write_text(str(child.pid))

    if args.behaviour == "oom":
        attempt = 1
        if args.counter:
            counter = Path(args.counter)
            attempt = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(attempt))
        if attempt <= args.fail_times:
            print(f"CUDA out of memory (simulated) at batch {args.batch}", flush=True)
            return EXIT_OOM
    elif args.behaviour == "crash":
        raise RuntimeError("boom: an ordinary crash, not an out-of-memory error")
    elif args.behaviour == "nan":
        print("loss is nan", flush=True)
        return EXIT_NONFINITE
    elif args.behaviour == "pruned":
        return EXIT_PRUNED
    elif args.behaviour == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    elif args.behaviour == "hang":
        if args.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hanging", flush=True)
        while True:
            time.sleep(1000)

    if args.sleep:
        time.sleep(args.sleep)
    _record(args, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
