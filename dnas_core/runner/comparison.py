"""Did the search beat the baselines a user would run first? The report's first table.

Per search space, on the same validation and test rows: the constant predictor, the
space's reference (hand-sized) model, random search (architectures drawn uniformly from the
same space, as many as the search trained plus as many as the supernet's training time
would have bought), Optuna's TPE over the same space at the same budget (where asked for),
and the search's best architecture, each selected by validation loss.
A difference counts as beyond the noise when it exceeds twice its standard error. The models
are scored on the same test rows, so the error is the paired one: the standard deviation of
the per-row loss differences over the square root of the test rows (from the per-row losses
each trial saves, on a fixed subset of rows for a large test set). Without per-row losses
it falls back to ``sqrt(se_a**2 + se_b**2)``, which is far larger: two models' errors on the
same rows are strongly correlated.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnas_core.engine.paths import inside

NOISE_Z = 2.0


@dataclass
class Entry:
    """One line of the comparison: a model, how it scored, what it cost."""

    model: str
    arch_id: str | None
    val: float | None
    test: float | None
    test_se: float | None
    test_auc: float | None
    params: int | None
    cost: float | None
    seconds: float
    count: int = 1  # architectures behind this line (random search: all it trained)
    row_losses: str | None = None  # per-row test losses, relative to the run directory
    test_rows: int | None = None


@dataclass
class Verdict:
    """How the search's best compares with one baseline (positive margin: search better)."""

    baseline: str
    margin: float | None
    noise: float | None
    beats: bool | None
    beyond_noise: bool | None


def _entry(model: str, row: dict[str, Any], metric: str, seconds: float,
           count: int = 1) -> Entry:
    return Entry(model, row["arch_id"], row.get(f"val_{metric}"), row.get(f"test_{metric}"),
                 row.get(f"test_{metric}_se"), row.get("test_auc"), row.get("params"),
                 row.get("cost"), round(seconds, 1), count, row.get("test_row_losses"),
                 row.get("test_rows"))


def _best(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    ranked = [r for r in rows if r.get(f"val_{metric}") is not None]
    return min(ranked, key=lambda r: r[f"val_{metric}"]) if ranked else None


def compare_space(rows: Sequence[dict[str, Any]], supernets: Sequence[dict[str, Any]],
                  metric: str, run_dir: Path) -> tuple[list[Entry], list[Verdict]]:
    """The comparison of one search space: ``rows`` are its trained architectures (status
    ok, any role), ``supernets`` the stored info of its supernet trials."""
    by_role: dict[str, list[dict[str, Any]]] = {"search": [], "reference": []}
    for row in rows:
        by_role.setdefault(row.get("role", "search"), []).append(row)
    entries: list[Entry] = []
    info = next((s for s in supernets if s.get("constant")), None)
    if info:
        constant = info["constant"]
        test = constant.get("test", {})
        entries.append(Entry("constant predictor", None, constant["val"].get(metric),
                             test.get(metric), test.get(f"{metric}_se"), test.get("auc"),
                             0, None, 0.0, 1, info.get("test_row_losses"),
                             info.get("test_rows")))
    reference = _best(by_role["reference"], metric)
    if reference:
        entries.append(_entry("reference model", reference, metric,
                              sum(r.get("train_seconds", 0) for r in by_role["reference"])))
    for role, name in BASELINE_NAMES.items():
        top = _best(by_role.get(role, []), metric)
        if top:
            entries.append(_entry(f"{name} (best)", top, metric,
                                  sum(r.get("train_seconds", 0) for r in by_role[role]),
                                  len(by_role[role])))
    searched = _best(by_role["search"], metric)
    verdicts: list[Verdict] = []
    if searched:
        seconds = (sum(s.get("search_seconds") or 0 for s in supernets)
                   + sum(r.get("train_seconds", 0) for r in by_role["search"]))
        best = _entry("search (best)", searched, metric, seconds, len(by_role["search"]))
        verdicts = [verdict(e, best, run_dir) for e in entries]
        entries.append(best)
    return entries, verdicts


def paired_se(baseline: Entry, searched: Entry, run_dir: Path) -> float | None:
    """Standard error of the difference of two test losses from their per-row losses."""
    if not (baseline.row_losses and searched.row_losses and searched.test_rows):
        return None
    try:  # the paths come from the storage: read only inside the run directory
        a = np.load(inside(run_dir, run_dir / baseline.row_losses)).astype(np.float64)
        b = np.load(inside(run_dir, run_dir / searched.row_losses)).astype(np.float64)
    except (OSError, ValueError):  # UnsafeName is a ValueError
        return None
    if a.shape != b.shape or a.size < 2 or baseline.test_rows != searched.test_rows:
        return None
    return float(np.std(a - b, ddof=1) / math.sqrt(searched.test_rows))


def verdict(baseline: Entry, searched: Entry, run_dir: Path) -> Verdict:
    """Test-set margin of the search over one baseline, and whether it beats the noise."""
    if baseline.test is None or searched.test is None:
        return Verdict(baseline.model, None, None, None, None)
    margin = baseline.test - searched.test
    noise = None
    se = paired_se(baseline, searched, run_dir)
    if se is not None:
        noise = NOISE_Z * se
    elif baseline.test_se is not None and searched.test_se is not None:
        noise = NOISE_Z * math.hypot(baseline.test_se, searched.test_se)
    return Verdict(baseline.model, margin, noise, margin > 0,
                   None if noise is None else abs(margin) > noise)


def random_mean(rows: Sequence[dict[str, Any]], metric: str) -> float | None:
    values = [r[f"test_{metric}"] for r in rows
              if r.get("role") == "random" and r.get(f"test_{metric}") is not None]
    return statistics.fmean(values) if values else None


#: the report's name of each black-box baseline, by the role of its rows
BASELINE_NAMES = {"random": "random search", "tpe": "TPE"}


def budget_note(kind: str, info: dict[str, Any]) -> str:
    """How many architectures a black-box baseline trained, and why that many."""
    extra = info.get("extra")
    name = BASELINE_NAMES[kind]
    text = (f"{name[0].upper()}{name[1:]} at equal compute: {info['n_search']} "
            f"architectures, as many as the search trained")
    if extra is None:
        return text + "; the rest was still to come."
    per_arch = info.get("seconds_per_arch") or 0.0
    text += (f", plus {extra} that the supernet's {info['search_seconds']:.0f} s of training "
             f"would have bought at {per_arch:.1f} s per baseline architecture")
    if info.get("extra_wanted", extra) > extra:
        text += (f" ({info['extra_wanted']} wanted; at most {info['n_search'] + extra}, the "
                 f"pool of uniform draws)")
    text += "."
    if kind == "tpe":
        text += (f" TPE (Optuna's multivariate TPESampler) drew its first "
                 f"{info.get('startup', '?')} at random, then modelled the results so far.")
    return text


def as_json(entries: Sequence[Entry], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    return {"models": [asdict(e) for e in entries], "verdicts": [asdict(v) for v in verdicts]}
