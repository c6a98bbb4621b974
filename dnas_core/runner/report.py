"""The experiment report: the paper's Tables III-VI, a Pareto plot and the heatmaps.

Statistics are over each trained architecture's best validation epoch, as in the paper.
The test set is shown only for the two architectures Table VI selects per search space:
the lowest validation loss, and the most efficient (lowest cost, with the training
configuration that did best on validation).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost and loss (both minimised)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(path: Path, rows: Sequence[dict[str, Any]], primary: str,
                units: dict[str, str]) -> Path:
    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_space: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_space[row["search_space"]].append(row)
    for space, group in sorted(by_space.items()):
        points = [(r["cost"], r[primary]) for r in group]
        ax.scatter(*zip(*points), alpha=0.5, label=space)
        front = sorted(points[i] for i in pareto_front(points))
        ax.plot(*zip(*front), marker="o", linewidth=1.5)
    unit = units.get("cost", "")
    ax.set_xlabel(f"cost ({unit})" if unit else "cost")
    ax.set_ylabel(primary.replace("_", " "))
    ax.set_xscale("log")
    ax.set_title("Validation loss against cost (Pareto front joined)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _stats(values: Sequence[float]) -> list[float]:
    return [min(values), statistics.fmean(values), statistics.median(values), max(values)]


def write_report(run_dir: Path, title: str, rows: Sequence[dict[str, Any]], primary: str,
                 units: dict[str, str], heatmaps: Sequence[Path]) -> Path:
    """Write ``report.md`` (and ``pareto.png``) into the run directory."""
    metric = primary.removeprefix("val_")
    lines = [f"# {title}", "", f"{len(rows)} trained architectures; ranked by {primary}.", ""]
    by_space: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_space[row["search_space"]].append(row)
    has_cal = all("val_calibration" in r for r in rows)
    for space, group in sorted(by_space.items()):
        header = ["statistic", f"validation {metric}"]
        columns = [[r[primary] for r in group]]
        if has_cal:
            header.append("validation calibration distance from 1")
            columns.append([abs(r["val_calibration"] - 1) for r in group])
        header.append(f"cost ({units.get('cost', '?')})")
        columns.append([r["cost"] for r in group])
        stats = [_stats(c) for c in columns]
        table_rows = [[name] + [s[i] for s in stats]
                      for i, name in enumerate(["Min", "Mean", "Median", "Max"])]
        lines += [f"## Statistics for {space} ({len(group)} architectures)", ""]
        lines += _table(header, table_rows) + [""]

    lines += ["## Test results of the selected architectures", ""]
    test_keys = sorted({k for r in rows for k in r if k.startswith("test_")})
    selected = []
    for space, group in sorted(by_space.items()):
        lowest = min(group, key=lambda r: r[primary])
        cheapest = min(r["cost"] for r in group)
        efficient = min((r for r in group if r["cost"] == cheapest), key=lambda r: r[primary])
        for label, row in ((f"{space} lowest loss", lowest),
                           (f"{space} most efficient", efficient)):
            selected.append([label, row["arch_id"]] + [row.get(k) for k in test_keys]
                            + [row["cost"]])
    lines += _table(["architecture", "arch_id"] + [k.replace("_", " ") for k in test_keys]
                    + [f"cost ({units.get('cost', '?')})"], selected) + [""]

    if rows:
        pareto_plot(run_dir / "pareto.png", rows, primary, units)
        lines += ["## Validation loss against cost", "", "![Pareto front](pareto.png)", ""]

    lines += ["## All trained architectures", ""]
    cost_names = sorted({k for r in rows for k in r.get("costs", {})})
    val_keys = sorted({k for r in rows for k in r if k.startswith("val_")})
    header = (["arch_id", "hyperparameters"] + val_keys
              + [f"{c} ({units.get(c, '?')})" for c in cost_names] + ["params", "train_seconds"])
    body = [[f"[{r['arch_id']}](architectures/{r['arch_id']}.json)",
             ", ".join(f"{k}={v}" for k, v in sorted(r.get("hyperparameters", {}).items())) or "-"]
            + [r.get(k) for k in val_keys] + [r.get("costs", {}).get(c) for c in cost_names]
            + [r.get("params"), r.get("train_seconds")]
            for r in sorted(rows, key=lambda r: r[primary])]
    lines += _table(header, body) + [""]

    if heatmaps:
        lines += ["## Architecture distributions (softmax of theta)", ""]
        lines += [f"![{p.parent.parent.name}: {p.stem}]({p.relative_to(run_dir)})"
                  for p in heatmaps]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
