"""The experiment report: the baselines, the paper's Tables III-VI, a Pareto plot and the
heatmaps.

The first table answers whether the search beat the baselines a user would run first
(:mod:`dnas_core.runner.comparison`); then how far theta moved from uniform.

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

from dnas_core.runner.comparison import Entry, Verdict


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
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


Units = dict[str, dict[str, str]]  # search space -> cost name ("cost": the ranking's) -> unit


def cost_unit(units: Units, space: str, name: str = "cost") -> str:
    return units.get(space, {}).get(name, "?")


def pareto_plot(path: Path, rows: Sequence[dict[str, Any]], primary: str,
                units: Units) -> Path:
    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_space: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_space[row["search_space"]].append(row)
    for space, group in sorted(by_space.items()):
        points = [(r["cost"], r[primary]) for r in group]
        ax.scatter(*zip(*points), alpha=0.5, label=f"{space} ({cost_unit(units, space)})")
        front = sorted(points[i] for i in pareto_front(points))
        ax.plot(*zip(*front), marker="o", linewidth=1.5)
    shown = {cost_unit(units, space) for space in by_space}
    ax.set_xlabel(f"cost ({shown.pop()})" if len(shown) == 1 else "cost (unit of each space)")
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


def _sign(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def comparison_lines(space: str, entries: Sequence[Entry], verdicts: Sequence[Verdict],
                     metric: str, units: Units, notes: Sequence[str]) -> list[str]:
    """The first table: each baseline, the search's best, and whether the search won."""
    by_model = {v.baseline: v for v in verdicts}
    header = ["model", "arch_id", f"val {metric}", f"test {metric} (± SE)", "test auc",
              f"search better by (test {metric})", "beyond noise (2 SE)", "params",
              f"cost ({cost_unit(units, space)})", "compute (s)"]
    body = []
    for e in entries:
        v = by_model.get(e.model)
        test = "-" if e.test is None else (f"{e.test:.4f}" if e.test_se is None
                                           else f"{e.test:.4f} ± {e.test_se:.4f}")
        noise = "-" if v is None or v.beyond_noise is None else \
            ("yes" if v.beyond_noise else f"no (noise {v.noise:.4f})")
        label = e.model if e.count == 1 else f"{e.model} of {e.count}"
        body.append([label, e.arch_id or "-", e.val, test, e.test_auc,
                     _sign(v.margin) if v else "-", noise, e.params, e.cost,
                     f"{e.seconds:.0f}"])
    lines = [f"## Did the search beat the baselines? ({space})", ""]
    lines += _table(header, body) + [""]
    lost = [v.baseline for v in verdicts if v.margin is not None and v.margin < 0]
    tied = [v.baseline for v in verdicts if v.margin == 0]  # the very same architecture
    if lost:
        lines += [f"**The search's best architecture is worse on test {metric} than: "
                  f"{', '.join(lost)}.** Assess the space (random search) and the training "
                  f"settings before trusting this search.", ""]
    elif tied:
        lines += [f"The search's best architecture ties {', '.join(tied)} (the same test "
                  f"{metric}) and beats the other baselines.", ""]
    elif verdicts:
        lines += [f"The search's best architecture beats every baseline on test {metric}.",
                  ""]
    for note in notes:
        lines += [note, ""]
    return lines


def entropy_lines(entropies: dict[str, dict[str, list[float]]]) -> list[str]:
    """How far each supernet's theta moved from uniform: a flat search is visible here."""
    lines = ["## How far the search moved from uniform", "",
             "Entropy of softmax(theta) divided by the uniform distribution's, per decision "
             "(1.0: theta never moved; 0: one option certain); a decision of several "
             "choices (one per feature, one per node) gives their mean and minimum.", ""]
    body = []
    for trial, per_decision in sorted(entropies.items()):
        for name, values in sorted(per_decision.items()):
            if values:
                body.append([trial, name, len(values), statistics.fmean(values), min(values)])
    return lines + _table(["supernet", "decision", "choices in it", "mean entropy", "min entropy"],
                          body) + [""]


def diverged_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Diverged architectures (not ranked)", "",
             f"{len(rows)} architectures diverged on every attempt (each retried at smaller "
             f"learning rates); they are in no table above and on no plot.", ""]
    body = [[r["arch_id"], r.get("role", "search"),
             "; ".join(f"LR x{a['lr_scale']:g}: {a['reason']}" for a in r["failed_attempts"])]
            for r in rows]
    return lines + _table(["arch_id", "role", "attempts"], body) + [""]


def _unit_of(units: Units, name: str) -> str:
    """A named cost model's unit (the same in every space that has it)."""
    return next((u[name] for u in units.values() if name in u), "?")


def failed_lines(failed: Sequence[dict[str, str]]) -> list[str]:
    """The trials that failed for good, so a partial grid is not mistaken for a whole one."""
    lines = ["## Failed trials (not in any table above)", "",
             f"{len(failed)} trials failed for good; what they would have added is missing "
             f"above.", ""]
    body = [[f["trial"], f["error"].replace("|", "\\|"), f"[{f['log']}]({f['log']})"]
            for f in failed]
    return lines + _table(["trial", "error", "log"], body) + [""]


def write_report(run_dir: Path, title: str, rows: Sequence[dict[str, Any]], primary: str,
                 units: Units, heatmaps: Sequence[Path], *,
                 comparisons: dict[str, tuple[list[Entry], list[Verdict], list[str]]]
                 | None = None,
                 entropies: dict[str, dict[str, list[float]]] | None = None,
                 diverged: Sequence[dict[str, Any]] = (),
                 failed: Sequence[dict[str, str]] = ()) -> Path:
    """Write ``report.md`` (and ``pareto.png``) into the run directory: the baselines
    first, then the searched architectures (``rows``, the only ones ranked and plotted)."""
    metric = primary.removeprefix("val_")
    lines = [f"# {title}", "", f"{len(rows)} trained architectures; ranked by {primary}.", ""]
    if failed:
        lines += [f"**{len(failed)} trials failed**: see [Failed trials](#failed-trials-not-in-"
                  f"any-table-above) at the end.", ""]
    for space, (entries, verdicts, notes) in sorted((comparisons or {}).items()):
        lines += comparison_lines(space, entries, verdicts, metric, units, notes)
    if entropies:
        lines += entropy_lines(entropies)
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
        header.append(f"cost ({cost_unit(units, space)})")
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
                            + [row["cost"], cost_unit(units, space)])
    lines += _table(["architecture", "arch_id"] + [k.replace("_", " ") for k in test_keys]
                    + ["cost", "cost unit"], selected) + [""]

    if rows:
        pareto_plot(run_dir / "pareto.png", rows, primary, units)
        lines += ["## Validation loss against cost", "", "![Pareto front](pareto.png)", ""]

    lines += ["## All trained architectures", ""]
    cost_names = sorted({k for r in rows for k in r.get("costs", {})})
    val_keys = sorted({k for r in rows for k in r if k.startswith("val_")})
    header = (["arch_id", "hyperparameters"] + val_keys
              + [f"{c} ({_unit_of(units, c)})" for c in cost_names]
              + ["params", "train_seconds"])
    body = [[f"[{r['arch_id']}](architectures/{r['arch_id']}.json)",
             ", ".join(f"{k}={v}" for k, v in sorted(r.get("hyperparameters", {}).items())) or "-"]
            + [r.get(k) for k in val_keys] + [r.get("costs", {}).get(c) for c in cost_names]
            + [r.get("params"), r.get("train_seconds")]
            for r in sorted(rows, key=lambda r: r[primary])]
    lines += _table(header, body) + [""]

    if diverged:
        lines += diverged_lines(diverged)
    if failed:
        lines += failed_lines(failed)

    if heatmaps:
        lines += ["## Architecture distributions (softmax of theta)", ""]
        lines += [f"![{p.parent.parent.name}: {p.stem}]({p.relative_to(run_dir)})"
                  for p in heatmaps]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
