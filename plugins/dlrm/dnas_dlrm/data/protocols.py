"""Split protocols of ``prepare``: which rows train, validate and test, and how it is recorded.

Rows are numbered in the order read: the inputs in the order given (which must be time
order), each file's lines in file order, bad lines and subsampled lines left out. Every
protocol puts a prefix of those rows in training and the rest in evaluation; the training
rows are then split at random (seeded) into ``weights`` and ``arch`` by :mod:`.splits`.

* ``random`` (the paper's): the first ``floor(6 n / 7)`` rows train; the rest is shuffled
  (seeded) and halved into ``val`` and ``test``.
* ``position`` (file order throughout): the last ``floor(n (val + test))`` rows are held out,
  the first ``floor(n val)`` of them are ``val`` and the others ``test``; no shuffling.
  With ``val = test = 1/14`` on Kaggle's ``train.txt`` this is the DLRM reference's
  protocol (days 1-6 train, day 7 halved in file order). Fractions are read as exact
  ratios (``Fraction.limit_denominator``), so ``1/14`` gives the same rows on every machine.
* ``day``: every input but ``eval_file`` trains; ``eval_file``, which must be the last
  input, is shuffled and halved into ``val`` and ``test``.

Input checks run before any file is read; the split record goes into the manifest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .prepare_options import PrepareError, PrepareOptions
from .splits import default_train_rows

_DAY_PATTERN = re.compile(r"day_(\d+)")
_RULES = {
    "random": "first floor(6n/7) rows train; the rest shuffled (seeded) and halved into val "
              "and test",
    "position": "file order: first rows train, then floor(n*val_fraction) val, then test "
                "(the last floor(n*(val_fraction+test_fraction)) rows are held out)",
    "day": "every input but eval_file trains; eval_file (the last input) shuffled (seeded) "
           "and halved into val and test",
}


@dataclass(frozen=True)
class SplitPlan:
    """Row counts of a protocol once the rows are known (``val_rows`` None: random halves)."""

    train_rows: int
    val_rows: int | None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def check_inputs(inputs: Sequence[Path], options: PrepareOptions) -> None:
    """Refuse inputs that do not fit the options, before any work starts."""
    if not inputs:
        raise PrepareError("no input files given")
    for i, path in enumerate(inputs):
        if not path.is_file():
            raise PrepareError(f"input {path}: no such file")
        again = next((j for j in range(i) if _same_file(inputs[j], path)), None)
        if again is not None:  # its rows would be read, and trained on, twice
            raise PrepareError(f"input {path} is given twice (inputs {again + 1} and {i + 1} "
                               "are the same file); list each file once")
    days = [_DAY_PATTERN.search(p.name) for p in inputs]
    if len(inputs) > 1 and all(days):
        numbers = [int(m.group(1)) for m in days]  # type: ignore[union-attr]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise PrepareError(
                f"split {options.split} (--split {options.split}): the day files are not in "
                f"time order ({', '.join(p.name for p in inputs)}); list them as day_0 day_1 "
                "... (e.g. `ls day_* | sort -V`)")
    if options.split != "day":
        return
    eval_file = Path(options.eval_file)  # type: ignore[arg-type]
    listed = [i for i, path in enumerate(inputs) if _same_file(path, eval_file)]
    if not listed:
        raise PrepareError(f"eval_file (--eval-file) {eval_file} is not one of the inputs "
                           f"({', '.join(str(p) for p in inputs)}); list it last among them")
    if len(inputs) < 2:
        raise PrepareError(f"eval_file (--eval-file) {eval_file} is the only input: the day "
                           "split (--split day) needs training files before it")
    if listed != [len(inputs) - 1]:
        raise PrepareError(f"eval_file (--eval-file) {eval_file} must be the last input, once "
                           "(inputs are in time order; validation and test come after the "
                           f"training days), but it is input {listed[0] + 1} of {len(inputs)}")


def _exact(value: float) -> Fraction:
    return Fraction(value).limit_denominator(1_000_000)


def plan(options: PrepareOptions, rows: int, sources: Sequence[dict[str, Any]]) -> SplitPlan:
    """The protocol's training and validation rows for ``rows`` rows read from ``sources``."""
    if options.split == "day":
        return SplitPlan(train_rows=sources[-1]["first_row"], val_rows=None)
    if options.split == "position":
        val, test = _exact(options.val_fraction), _exact(options.test_fraction)  # type: ignore[arg-type]
        held_out = int(rows * (val + test))  # floor: exact rational arithmetic
        return SplitPlan(train_rows=rows - held_out, val_rows=int(rows * val))
    return SplitPlan(train_rows=default_train_rows(rows), val_rows=None)


def record(options: PrepareOptions, split_plan: SplitPlan, rows: int) -> dict[str, Any]:
    """The manifest's ``split`` entry: protocol, its parameters and the row ranges."""
    out: dict[str, Any] = {"protocol": options.split, "rule": _RULES[options.split],
                           "seed": options.seed, "arch_fraction": options.arch_fraction,
                           "train_rows": [0, split_plan.train_rows],
                           "eval_rows": [split_plan.train_rows, rows],
                           "val_test": "shuffled halves" if split_plan.val_rows is None
                           else "in row order"}
    if options.split == "position":
        out["val_fraction"], out["test_fraction"] = options.val_fraction, options.test_fraction
        out["val_rows"] = [split_plan.train_rows, split_plan.train_rows + split_plan.val_rows]
        out["test_rows"] = [out["val_rows"][1], rows]
    if options.split == "day":
        out["eval_file"] = str(Path(options.eval_file).absolute())  # type: ignore[arg-type]
    return out
