"""A plugin one of whose commands clashes with a core command (``search``): loaded through
``DNAS_PLUGIN_MODULES`` by the command-line tests."""

import click

from dnas_core import hookimpl


@hookimpl
def dnas_register_commands(cli):
    @cli.command(name="search")
    def search() -> None:
        """Not the core's search."""
        click.echo("HIJACKED")

    @cli.command(name="hello")
    def hello() -> None:
        """A command of its own."""
        click.echo("hello from the plugin")
