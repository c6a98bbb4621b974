"""Terminal tables for ``dnas show``, ``dnas compare`` and ``dnas runs`` (rich).

Only a rendering of the dictionaries of :mod:`dnas_core.runner.runs`; ``--json`` prints
those dictionaries as they are.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e4:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _console() -> Console:
    """The terminal's width on a terminal; wide enough for the tables in a pipe or file."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*(Text(_fmt(c)) for c in row))  # values are never markup
    return table


def _metric(data: dict[str, Any]) -> tuple[str, str]:
    primary = data["primary_metric"]
    return primary, "test_" + primary.removeprefix("val_")


def _best_cells(best: dict[str, Any] | None, primary: str, test: str) -> list[Any]:
    if best is None:
        return ["-"] * 4
    return [best["arch_id"], best.get(primary), best.get(test), best.get("cost")]


def _verdict(v: dict[str, Any]) -> str:
    if v.get("margin") is None:
        return "-"
    word = "better" if v["beats"] else "worse"
    noise = "" if v.get("beyond_noise") is None else \
        (", beyond noise" if v["beyond_noise"] else ", within noise")
    return f"{word} by {abs(v['margin']):.4f}{noise}"


def print_show(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    exp = data["experiment"]
    primary, test = _metric(data)
    console.print(f"[bold]{escape(data['run_dir'])}[/bold]: {data['state']}; plugin "
                  f"{exp['plugin']}" + (f", preset {exp['preset']}" if exp.get("preset") else "")
                  + (f", data {escape(exp['data_path'])}" if exp.get("data_path") else ""))
    changed = data["changed_settings"]
    if changed is None:
        console.print(Text("settings given: " + (_fmt(exp.get("set")) if exp.get("set")
                                                 else "none")
                           + " (the plugin is not installed here: no comparison with defaults)"))
    else:
        console.print(_table("Settings that differ from the defaults",
                             ["setting", "default", "this run"],
                             [[c["key"], c["default"], c["value"]] for c in changed]))
    grids = {k: v for k, v in exp.get("grids", {}).items() if v}
    for stage, grid in grids.items():
        console.print(Text(f"{stage} grid: {_fmt(grid)}"))
    console.print(_table("Trials", ["stage", "states"],
                         [[name, ", ".join(f"{s.lower()} {n}" for s, n in states.items())]
                          for name, states in data["trials"].items()]))
    for fail in data["failed"]:
        last = (fail["error"] or "").strip().splitlines()[-1:] or ["?"]
        console.print(f"[red]failed[/red] {fail['stage']} trial {fail['trial']}: "
                      f"{escape(last[0])}", highlight=False)
    for space, info in data["baselines"].items():
        verdicts = {v["baseline"]: v for v in info.get("verdicts", [])}
        console.print(_table(
            f"Baselines against the best searched architecture: {space}",
            ["model", "arch", primary, test, "test se", "cost", "params", "search"],
            [[m["model"], m["arch_id"], m["val"], m["test"], m["test_se"], m["cost"],
              m["params"], _verdict(verdicts[m["model"]]) if m["model"] in verdicts else ""]
             for m in info.get("models", [])]))
    if not data["baselines"] and data["best"]:
        console.print(_table("Best architecture so far", ["arch", primary, test, "cost"],
                             [_best_cells(data["best"], primary, test)]))
    console.print(_table(f"Pareto front: cost against {primary}",
                         ["space", "arch", "cost", primary, test, "params"],
                         [[p["search_space"], p["arch_id"], p["cost"], p.get(primary),
                           p.get(test), p["params"]] for p in data["pareto"]]))


def print_compare(data: dict[str, Any], console: Console | None = None) -> None:
    """One column per run, so the numbers of several runs read across."""
    console = console or _console()
    runs = data["runs"]
    table = Table(title="Runs side by side", title_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(escape(run["name"]))

    def line(label: str, values: list[Any]) -> None:
        table.add_row(label, *(Text(_fmt(v)) for v in values))

    line("state", [r["state"] for r in runs])
    line("plugin / preset", [f"{r['plugin']} / {r['preset'] or '-'}" for r in runs])
    line("spaces", [", ".join(r["spaces"]) for r in runs])
    line("architectures trained", [r["trained"] for r in runs])
    bests = [r["best"] or {} for r in runs]
    line("best architecture", [b.get("arch_id") for b in bests])
    metrics = [_metric(r) for r in runs]
    line("validation (primary)", [b.get(m[0]) for m, b in zip(metrics, bests)])
    line("test", [b.get(m[1]) for m, b in zip(metrics, bests)])
    line("test se", [b.get(m[1] + "_se") for m, b in zip(metrics, bests)])
    line("test auc", [b.get("test_auc") for b in bests])
    line("cost", [b.get("cost") for b in bests])
    line("params", [b.get("params") for b in bests])
    for name in sorted({n for b in bests for n in b.get("costs", {})}):
        line(f"cost: {name}", [b.get("costs", {}).get(name) for b in bests])
    baselines = sorted({(s, n) for r in runs for s, v in r["verdicts"].items() for n in v})
    for space, name in baselines:
        line(f"vs {name} ({space})",
             [_verdict(r["verdicts"].get(space, {}).get(name, {})) for r in runs])
    console.print(table)


def print_runs(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    if not data["runs"]:
        console.print(Text(f"no run directories in {data['directory']}"))
        return
    rows = []
    for r in data["runs"]:
        if r["state"] == "unreadable":
            rows.append([r["name"], r["state"], r["error"], "", "", "", "", "", ""])
            continue
        trials = ", ".join(f"{t['done']}/{t['total']}" for t in r["trials"].values())
        primary, test = _metric(r)
        rows.append([r["name"], r["state"], r["plugin"], r["preset"], trials,
                     *_best_cells(r["best"], primary, test)])
    console.print(_table(f"Runs in {escape(data['directory'])}",
                         ["run", "state", "plugin", "preset", "trials (supernets, archs)",
                          "best", "validation", "test", "cost"], rows))
