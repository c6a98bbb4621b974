"""The commands for after (or during) a run: ``dnas show``, ``compare``, ``runs``, ``export``,
``dashboard``.

Thin: the data comes from :mod:`dnas_core.runner.runs` and :mod:`dnas_core.runner.export`,
the tables from :mod:`dnas_cli.runs_view`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dnas_cli.dashboard import dashboard
from dnas_core.config.validate import ConfigError
from dnas_core.plugins.registry import PluginError


def _emit(data: dict[str, Any], as_json: bool, render: Any) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(data)


@click.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_run(run_dir: Path, as_json: bool) -> None:
    """A run at a glance: changed settings, trials, baselines, Pareto front."""
    from dnas_cli.runs_view import print_show
    from dnas_core.runner.runs import RunError, show

    try:
        data = show(run_dir, _registry())
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(data, as_json, print_show)


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare_runs(run_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Several runs' best results, baselines and costs side by side."""
    from dnas_cli.runs_view import print_compare
    from dnas_core.runner.runs import RunError, compare

    try:
        data = compare(list(run_dirs))
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(data, as_json, print_compare)


@click.command("runs")
@click.argument("directory", default="runs", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_run_dirs(directory: Path, as_json: bool) -> None:
    """List the runs in DIRECTORY (default runs/), their state and best result.

    States: running, stopped (trials left, no live worker on this machine: resume with
    dnas search or dnas worker), finished, failed (ended without a report)."""
    from dnas_cli.runs_view import print_runs
    from dnas_core.runner.runs import RunError, list_runs

    try:
        data = list_runs(directory)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    _emit(data, as_json, print_runs)


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--arch", "arch_id", help="Architecture id (default: the searched architecture "
              "with the best validation metric).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The torch.export program to write (.pt2); the .json sidecar and the "
                   ".onnx (when onnx is installed) go next to it.")
@click.option("--no-onnx", is_flag=True, help="Write only the .pt2 program and the sidecar.")
def export_model(run_dir: Path, arch_id: str | None, out: Path, no_onnx: bool) -> None:
    """Export a trained architecture for plain PyTorch (.pt2, and ONNX).

    The .pt2 keeps its example inputs: ep = torch.export.load(FILE);
    ep.module()(*ep.example_inputs[0]) runs with only torch installed."""
    from dnas_core.runner.export import export_run
    from dnas_core.runner.runs import RunError

    try:
        sidecar = export_run(_registry(), run_dir, out, arch_id, onnx=not no_onnx)
    except (RunError, ConfigError, PluginError) as exc:
        raise click.ClickException(str(exc)) from exc
    for note in sidecar["notes"]:
        click.echo(note, err=True)
    click.echo(f"exported {sidecar['arch_id']} to {out} (sidecar {out.with_suffix('.json')})")



def _registry() -> Any:
    from dnas_cli.main import registry

    return registry()


COMMANDS = [show_run, compare_runs, list_run_dirs, export_model, dashboard]
