"""Benchmark ``dnas dlrm prepare`` in hashing mode on synthetic Criteo-format text.

Writes a synthetic file (default 2,000,000 lines) into a temporary directory, runs
prepare in a child process started from an argument list, and reports lines per second,
the child's peak resident memory (``ru_maxrss`` from ``os.wait4``: native pyarrow and
NumPy memory included), its CPU time, and the predicted time for the 45,840,617-line
Kaggle ``train.txt``. Then times random-access batches of 2048 rows from the memory-mapped
result. Targets on 2 cores: >= 300,000 lines/s, peak memory < 2 GB.

    python benchmarks/bench_prepare.py [--lines 2000000] [--gzip] [--hash-size 1000000]

``--day-rss 250000,2000000`` instead prepares the Terabyte way (hashing, day split,
``--split-storage ranges``) from four gzip day files of each total size and prints the
child's peak RSS per size: flat when nothing prepare holds grows with the rows.

    python benchmarks/bench_prepare.py --day-rss 250000,2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KAGGLE_LINES = 45_840_617


def _startup_cpu() -> float:
    """CPU seconds of starting the child alone (interpreter, imports, ``--help``)."""
    child = subprocess.Popen([sys.executable, "-m", "dnas_dlrm.data.cli", "--help"],
                             stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--gzip", action="store_true", help="gzip the input")
    parser.add_argument("--hash-size", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--batches", type=int, default=200, help="random batches to time")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the synthetic file of an earlier run in --workdir")
    parser.add_argument("--day-rss", metavar="LINES,LINES",
                        help="only: peak RSS of a day-split, row-ranges prepare at these sizes")
    args = parser.parse_args()
    if args.day_rss:
        day_rss([int(n) for n in args.day_rss.split(",")], args.hash_size, args.seed)
        return

    from dnas_dlrm.data import CriteoArrays, write_tsv

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = work / ("synthetic.tsv.gz" if args.gzip else "synthetic.tsv")
        out = work / "prepared"
        marker = source.with_name(source.name + f".{args.lines}-{args.seed}.done")
        if not (args.reuse and marker.exists()):
            started = time.perf_counter()
            write_tsv(source, args.lines, seed=args.seed)
            marker.touch()
            print(f"wrote {args.lines:,} lines in {time.perf_counter() - started:.1f} s",
                  flush=True)
        size_mb = source.stat().st_size / 2**20

        command = [sys.executable, "-m", "dnas_dlrm.data.cli", str(source), "--out", str(out),
                   "--hash-size", str(args.hash_size), "--seed", str(args.seed), "--overwrite",
                   "--quiet"]
        startup_cpu = _startup_cpu()
        load_before = os.getloadavg()
        started = time.perf_counter()
        child = subprocess.Popen(command)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            sys.exit(f"prepare failed with exit code {child.returncode}")
        manifest = json.loads((out / "manifest.json").read_text())
        in_prepare = manifest["elapsed_s"]
        cpu = usage.ru_utime + usage.ru_stime
        peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
        rate = args.lines / in_prepare
        rate_process = args.lines / wall

        table = CriteoArrays.open(out)
        rng = np.random.default_rng(0)
        table.gather(rng.integers(0, len(table), 2048))  # warm the import
        started = time.perf_counter()
        for _ in range(args.batches):
            table.gather(rng.integers(0, len(table), 2048))
        batch_ms = (time.perf_counter() - started) / args.batches * 1e3

        per_cpu_second = args.lines / max(cpu - startup_cpu, 1e-9)
        result = {
            "lines": args.lines, "input_mib": round(size_mb, 1), "gzip": args.gzip,
            "hash_size": args.hash_size, "lines_per_s": round(rate),
            "lines_per_s_whole_process": round(rate_process),
            "prepare_s": in_prepare, "process_wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "startup_cpu_s": round(startup_cpu, 2),
            "lines_per_cpu_s": round(per_cpu_second), "peak_rss_mib": round(peak_mb, 1),
            "kaggle_predicted_s": round(KAGGLE_LINES / rate, 1),
            "gather_2048_random_ms": round(batch_ms, 2), "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
        }
        print(f"prepare: {rate:,.0f} lines/s ({rate_process:,.0f} with process start), "
              f"{cpu:.1f} CPU s for {in_prepare:.1f} s, peak RSS {peak_mb:,.0f} MiB")
        print(f"CPU cost: {per_cpu_second:,.0f} lines per CPU second (interpreter start and "
              f"imports, {startup_cpu:.1f} CPU s, excluded); load average before: "
              f"{', '.join(f'{x:.1f}' for x in load_before)} on {os.cpu_count()} cores")
        print(f"predicted Kaggle train.txt ({KAGGLE_LINES:,} lines): "
              f"{KAGGLE_LINES / rate / 60:.1f} min")
        print(f"gather: {batch_ms:.2f} ms per random batch of 2048 rows (memory-mapped)")
        print(f"targets: >= 300,000 lines/s {'met' if rate >= 300_000 else 'NOT met'}; "
              f"peak < 2 GB {'met' if peak_mb < 2048 else 'NOT met'}")
        print(json.dumps(result))


def day_rss(sizes: list[int], hash_size: int, seed: int, days: int = 4) -> None:
    """Peak RSS of ``prepare`` on ``days`` gzip day files per total size, the Terabyte way."""
    from dnas_dlrm.data import write_tsv

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_prepare_days_") as tmp:
        for total in sizes:
            work = Path(tmp) / str(total)
            work.mkdir()
            files = [write_tsv(work / f"day_{d}.gz", total // days, seed=seed + d)
                     for d in range(days)]
            command = [sys.executable, "-m", "dnas_dlrm.data.cli", *map(str, files), "--out",
                       str(work / "prepared"), "--hash-size", str(hash_size), "--split", "day",
                       "--eval-file", str(files[-1]), "--split-storage", "ranges", "--quiet"]
            child = subprocess.Popen(command)
            _, status, usage = os.wait4(child.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"prepare failed on {total:,} lines")
            manifest = json.loads((work / "prepared" / "manifest.json").read_text())
            peak = usage.ru_maxrss / 1024
            results.append({"lines": total, "rows": manifest["rows"],
                            "peak_rss_mib": round(peak, 1), "prepare_s": manifest["elapsed_s"]})
            print(f"{total:>12,} lines in {days} day files: peak RSS {peak:,.0f} MiB, "
                  f"{manifest['elapsed_s']:.1f} s", flush=True)
            for file in files:
                file.unlink()
    low, high = results[0], results[-1]
    print(f"peak RSS x{high['peak_rss_mib'] / low['peak_rss_mib']:.2f} for "
          f"x{high['lines'] / low['lines']:.0f} the rows")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
