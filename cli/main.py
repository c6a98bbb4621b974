"""The ``dnas`` command line: a thin click app over the core and the plugins."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from dnas_core.config.validate import ConfigError
from dnas_core.plugins.registry import PluginError, Registry, make_registry

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


def pool_options(command):
    """The trial-pool options shared by ``search`` and ``worker``."""
    command = click.option("--devices", default="auto", show_default=True,
                           help="GPU ids (e.g. 0,1), 'auto' for all visible GPUs, or cpu.")(command)
    command = click.option("--jobs-per-device", default=1, show_default=True,
                           type=click.IntRange(min=1),
                           help="Trials run at once on each device.")(command)
    command = click.option("--nproc-per-trial", default=1, show_default=True,
                           type=click.IntRange(min=1),
                           help="Ranks per supernet trial: N > 1 gives a trial N GPUs (or N "
                                "CPU processes) and launches it with torchrun; a plugin "
                                "may shard the supernet across them (dlrm: TorchRec, "
                                "pip install dnas-dlrm[distributed]).")(command)
    command = click.option("--timeout", type=float,
                           help="Seconds after which a trial is killed and failed.")(command)
    command = click.option("--storage", help="Optuna storage URL shared by several workers, "
                           "e.g. postgresql://... or journal:/path/file.log "
                           "(default: sqlite in the run directory).")(command)
    command = click.option("--heartbeat", default=20, show_default=True,
                           type=click.IntRange(min=1),
                           help="Seconds between the heartbeats this worker records for its "
                                "running trials (RDB storages).")(command)
    command = click.option("--grace-period", default=120, show_default=True,
                           type=click.IntRange(min=2),
                           help="Seconds without a heartbeat after which a running trial "
                                "of a dead worker is failed and run again.")(command)
    return command


def watch_options(command):
    """How ``search`` and ``worker`` show progress (on stderr)."""
    command = click.option("--quiet", "-q", is_flag=True,
                           help="No progress output, only the final JSON.")(command)
    command = click.option("--status-every", default=60.0, show_default=True,
                           type=click.FloatRange(min=0.1), metavar="SECONDS",
                           help="Without a terminal: seconds between status lines "
                                "(on a terminal a live view is drawn instead).")(command)
    return command


def _pool(devices: str, jobs_per_device: int, timeout: float | None,
          max_oom_retries: int = 2, heartbeat: int = 20, grace_period: int = 120,
          nproc_per_trial: int = 1) -> Any:
    """The pool's settings; ``--devices`` and the liveness times are checked here, before
    anything runs."""
    from dnas_core.runner.devices import check_available, group_devices, resolve_devices
    from dnas_core.runner.orchestrate import PoolSettings
    from dnas_core.runner.study import Liveness

    try:
        liveness = Liveness(heartbeat, grace_period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--grace-period'") from None

    chosen: list[str] | str = devices if devices in ("auto", "cpu") else devices.split(",")
    if chosen != "auto":
        try:
            check_available(resolve_devices(chosen))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--devices'") from None
    try:
        group_devices(resolve_devices(["cpu"] if chosen == "cpu" else chosen), nproc_per_trial)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--nproc-per-trial'") from None
    return PoolSettings(["cpu"] if chosen == "cpu" else chosen, jobs_per_device, timeout,
                        max_oom_retries, liveness, nproc_per_trial)


@cli.command()
@click.option("--plugin", "-p", help="Domain (or plugin) to search, e.g. dlrm.")
@click.option("--config", "-c", "config", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="YAML run settings, merged over the plugin's defaults.")
@click.option("--preset", help="A preset shipped by the plugin, e.g. emb_card (listed below).")
@click.option("--experiment", "-e", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML experiment: supernet and architecture grids.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<plugin>-<time>). An existing one resumes.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set search.temperature_decay=0.2.")
@click.option("--data", "data_path", help="Prepared data directory (sets domain.data.path).")
@click.option("--baseline", type=click.Choice(["random", "tpe", "random,tpe", "none"]),
              default=None,
              help="Baselines trained next to the search: 'random' (default) trains the "
                   "space's reference model and random architectures at equal compute; "
                   "'tpe' the reference model and Optuna's TPE over the same space at the "
                   "same compute; 'random,tpe' both.")
@click.option("--no-baseline", is_flag=True, help="Same as --baseline none.")
@pool_options
@watch_options
def search(plugin: str | None, config: Path | None, preset: str | None,
           experiment: Path | None, out: Path | None, overrides: tuple[str, ...],
           data_path: str | None, baseline: str | None, no_baseline: bool, devices: str,
           jobs_per_device: int, timeout: float | None, storage: str | None, heartbeat: int,
           grace_period: int, quiet: bool, status_every: float,
           nproc_per_trial: int) -> None:
    """Search supernets, train their sampled architectures, and report.

    Without --experiment this is one supernet and one training run per sampled
    architecture: the smallest experiment, run by the same trial pool. Progress goes to
    stderr: a live view on a terminal, one line per trial event and a status line every
    --status-every seconds otherwise.
    """
    from dnas_cli.live_view import watching
    from dnas_core.runner.experiment import plan_experiment
    from dnas_core.runner.orchestrate import ExperimentFailed, run_experiment

    try:
        plan = plan_experiment(registry(), plugin=plugin, config=config, preset=preset,
                               experiment=experiment, overrides=overrides,
                               data_path=data_path)
        if no_baseline and baseline not in (None, "none"):
            raise ConfigError(f"--no-baseline contradicts --baseline {baseline}")
        if no_baseline or baseline:
            plan.baseline = "none" if no_baseline else baseline  # type: ignore[assignment]
        run_dir = out or Path("runs") / f"{plan.plugin}-{time.strftime('%Y%m%d-%H%M%S')}"
        click.echo(f"run directory: {run_dir}", err=True)
        pool = _pool(devices, jobs_per_device, timeout or plan.trial_timeout,
                     plan.max_oom_retries, heartbeat, grace_period, nproc_per_trial)
        with watching(quiet, status_every) as watcher:
            summary = run_experiment(run_dir, plan, pool, storage, watcher=watcher)
    except (ConfigError, PluginError, ExperimentFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(f"report: {run_dir / 'report.md'}", err=True)
    _exit_for(summary)


#: exit status when the run finished but some trials failed or diverged
EXIT_INCOMPLETE = 3


def _exit_for(summary: dict) -> None:
    """Exit 3 when trials failed or diverged, so scripts notice; the report is written."""
    bad = summary.get("failed_trials", 0) + summary.get("diverged_architectures", 0)
    if bad:
        click.echo(f"warning: {summary.get('failed_trials', 0)} trials failed and "
                   f"{summary.get('diverged_architectures', 0)} architectures diverged; "
                   f"see the report", err=True)
        for failure in summary.get("failed", []):
            click.echo(f"  {failure['trial']}: {failure['error']} (log: {failure['log']} in "
                       f"the run directory)", err=True)
        sys.exit(EXIT_INCOMPLETE)


@cli.command()
@click.option("--plugin", "-p", help="Domain (or plugin) of the architecture, e.g. dlrm.")
@click.option("--arch", "arch_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An architecture file from a run (architectures/<id>.json) or a bare "
                   "spec of the domain's model as JSON.")
@click.option("--config", "-c", "config", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="YAML run settings, merged over the plugin's defaults.")
@click.option("--preset", help="A preset shipped by the plugin (its training settings).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the checkpoint, logs and result.json "
                   "(default: runs/train-<time>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set train.epochs=3.")
@click.option("--data", "data_path", help="Prepared data directory (sets domain.data.path).")
def train(plugin: str | None, arch_path: Path, config: Path | None, preset: str | None,
          out: Path | None, overrides: tuple[str, ...], data_path: str | None) -> None:
    """Train and test one given architecture with the search's training code."""
    from dnas_cli.live_view import step_bar
    from dnas_core.config.runspec import resolve
    from dnas_core.runner.single import train_one

    try:
        spec = resolve(registry(), plugin, config=config, preset=preset,
                       overrides=overrides, data_path=data_path)
        run_dir = out or Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
        click.echo(f"run directory: {run_dir}", err=True)
        with step_bar() as reporter:
            row = train_one(registry(), spec, arch_path, run_dir, reporter=reporter)
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({k: v for k, v in row.items() if k != "history"}, indent=2,
                          sort_keys=True))
    if row["status"] != "ok":
        sys.exit(EXIT_INCOMPLETE)


@cli.command()
@click.argument("target")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where this worker writes its trial files when TARGET is a storage URL.")
@pool_options
@watch_options
def worker(target: str, out: Path | None, devices: str, jobs_per_device: int,
           timeout: float | None, storage: str | None, heartbeat: int,
           grace_period: int, quiet: bool, status_every: float,
           nproc_per_trial: int) -> None:
    """Join an experiment: TARGET is its run directory or its storage URL.

    Several workers (on one machine or many) share the study: each claims waiting trials,
    so none is run twice. Progress on stderr as in ``dnas search`` (the stages count every
    worker's trials; the trials shown are this worker's).
    """
    from dnas_cli.live_view import watching
    from dnas_core.runner.orchestrate import Coordinator, ExperimentFailed
    from dnas_core.runner.preflight import make_run_dir
    from dnas_core.runner.study import Studies, default_storage, is_storage_url

    path = Path(target)
    if path.is_dir():
        run_dir, url = path, storage or default_storage(path)
        if not (path / "study.db").exists() and storage is None:
            raise click.ClickException(f"{path}: no study.db here; pass --storage URL")
    elif not is_storage_url(target):
        raise click.ClickException(f"{target}: no such run directory, and not a storage URL")
    else:
        url = target
        run_dir = out or Path("runs") / f"worker-{time.strftime('%Y%m%d-%H%M%S')}"
    pool = _pool(devices, jobs_per_device, timeout, heartbeat=heartbeat,
                 grace_period=grace_period, nproc_per_trial=nproc_per_trial)
    try:
        studies = Studies(url, liveness=pool.liveness)
        make_run_dir(run_dir)
    except KeyError as exc:
        raise click.ClickException(f"{url}: no dnas experiment in this storage") from exc
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    experiment = studies.experiment
    pool = dataclasses.replace(pool, timeout=timeout or experiment.trial_timeout,
                               max_oom_retries=experiment.max_oom_retries)
    with watching(quiet, status_every) as watcher:
        coordinator = Coordinator(run_dir, studies, pool, watcher)
        coordinator.run()
    try:
        summary = coordinator.report()
    except ExperimentFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    _exit_for(summary)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plugins(as_json: bool) -> None:
    """List installed plugins, their versions, hooks and domains."""
    domains = registry().domains
    infos = [info.to_dict() | {"presets": {d: domains[d].preset_descriptions()
                                           for d in info.domains if d in domains}}
             for info in registry().plugins.values()]
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
        for note in info["notes"]:
            click.echo(f"    warning: {note}")
        for domain, presets in info["presets"].items():
            click.echo(f"  {domain} presets (--preset NAME):" if presets else
                       f"  {domain}: no presets")
            for line in _preset_lines(presets):
                click.echo(line)


def _preset_lines(presets: dict[str, str]) -> list[str]:
    width = max((len(n) for n in presets), default=0)
    return [f"    {name:<{width}}  {text}" for name, text in presets.items()]


def describe_presets(*commands: click.Command) -> None:
    """Each domain's presets in these commands' --help, from the plugins loaded at start."""
    lines = []
    for name, domain in sorted(registry().domains.items()):
        if domain.presets:
            lines += [f"{name} presets:", *_preset_lines(domain.preset_descriptions())]
    if lines:
        for command in commands:
            command.epilog = "\b\n" + "\n".join(lines)


@cli.group("plugin")
def plugin_group() -> None:
    """Create plugins."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Folder to create dnas-NAME/ in.")
def plugin_new(name: str, directory: Path) -> None:
    """Write a minimal working plugin to start from."""
    from dnas_cli.scaffold import ScaffoldError, scaffold_plugin

    try:
        target = scaffold_plugin(name, directory)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {target}; next: pip install -e {target} && dnas plugins")


#: the core's own commands, which no plugin may replace
CORE_COMMANDS = frozenset(cli.commands)


def add_plugin_commands(group: click.Group) -> None:
    """Each plugin adds its commands on its own: one that fails is reported, the others
    still get theirs. A plugin registers into a group of its own, whose commands are then
    copied over: a name already taken (a core command, or another plugin's) is reserved,
    so the clash is reported, noted for ``dnas plugins``, and that command is skipped."""
    for impl in registry().pm.hook.dnas_register_commands.get_hookimpls():
        own = click.Group(name=group.name)
        try:
            impl.function(cli=own)
        except Exception as exc:  # noqa: BLE001 - a plugin's command must not break the CLI
            click.echo(f"warning: plugin {impl.plugin_name!r} failed to add its commands: "
                       f"{exc!r}", err=True)
            continue
        for name, command in own.commands.items():
            if name in group.commands:
                note = (f"command {name!r} not added: the name is taken by "
                        f"{'a core command' if name in CORE_COMMANDS else 'another plugin'}")
                click.echo(f"warning: plugin {impl.plugin_name!r}: {note}", err=True)
                info = registry().plugins.get(impl.plugin_name)
                if info is not None:
                    info.notes.append(note)
                continue
            group.add_command(command, name)


def add_after_run_commands(group: click.Group) -> None:
    from dnas_cli.after_run import COMMANDS

    for command in COMMANDS:
        group.add_command(command)


add_after_run_commands(cli)


def main() -> None:
    add_plugin_commands(cli)
    describe_presets(search, train)
    cli(prog_name="dnas")


if __name__ == "__main__":
    main()
