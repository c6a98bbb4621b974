"""The ``dnas`` command line: a thin click app over the core and the plugins."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from dnas_core.config import ConfigError
from dnas_core.plugins import PluginError, Registry, make_registry

_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = make_registry()
        for name, error in _registry.errors().items():
            click.echo(f"warning: plugin {name!r} not loaded: {error}", err=True)
    return _registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dnas")
def cli() -> None:
    """Differentiable neural architecture search with pluggable domains."""


@cli.command()
@click.option("--plugin", "-p", help="Domain (or plugin) to search, e.g. dlrm.")
@click.option("--config", "-c", "config", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="YAML run settings, merged over the plugin's defaults.")
@click.option("--preset", help="A preset shipped by the plugin, e.g. emb_card.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<plugin>-<time>). An existing one resumes.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set search.temperature_decay=0.2.")
@click.option("--data", "data_path", help="Prepared data directory (sets domain.data.path).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def search(plugin: str | None, config: Path | None, preset: str | None, out: Path | None,
           overrides: tuple[str, ...], data_path: str | None, quiet: bool) -> None:
    """Search, train the sampled architectures, and report."""
    from dnas_core.pipeline import run_pipeline
    from dnas_core.runspec import resolve

    try:
        spec = resolve(registry(), plugin, config=config, preset=preset, overrides=overrides,
                       data_path=data_path)
        run_dir = out or Path("runs") / f"{spec.domain.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        click.echo(f"run directory: {run_dir}", err=True)
        summary = run_pipeline(registry(), spec, run_dir, progress=not quiet)
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(f"report: {run_dir / 'report.md'}", err=True)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """List installed plugins, their versions, hooks and domains."""
    infos = [info.to_dict() for info in registry().plugins.values()]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        click.echo("no plugins installed (they register under the entry-point group 'dnas')")
    for info in infos:
        version = info["version"] or "?"
        status = f"ERROR: {info['error']}" if info["error"] else \
            f"domains: {', '.join(info['domains']) or '-'}"
        click.echo(f"{info['name']} {version} ({info['distribution'] or 'local'}) {status}")
        for hook in info["hooks"]:
            click.echo(f"    {hook}")


def main() -> None:
    try:
        registry().hook.dnas_register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - a plugin's command must not break the CLI
        click.echo(f"warning: a plugin failed to add its commands: {exc!r}", err=True)
    cli(prog_name="dnas")


if __name__ == "__main__":
    sys.exit(main())
