"""The ``vmi`` command line: ``python -m vmi COMMAND``.

Every error a person can cause ends in one line naming the place and the
cause, never a Python traceback. Exit statuses (docs/cli.md): 0 success, 1 a
failure the command reports, 2 bad usage, 130 interrupted (Ctrl-C; click's own
"Aborted!" would say 1, which a script could not tell from a failed check).
"""

from __future__ import annotations

from typing import Any

import click

from vmi.commands import EXIT_INTERRUPTED


class _Group(click.Group):
    """The command group, with Ctrl-C turned into one line and exit status 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            name = f"vmi {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "vmi"
            click.echo(f"{name}: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vmi")
def main() -> None:
    """vmi: an i386 interpreter and VMI hypervisor model for studying the IRET race."""


def _add_command_modules() -> None:
    """Add the click command named ``command`` of every module in ``vmi.commands``.

    Each command module imports what it needs inside its function, so
    ``python -m vmi --help`` stays fast.
    """
    import importlib
    import pkgutil

    import vmi.commands

    for info in sorted(pkgutil.iter_modules(vmi.commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"vmi.commands.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            main.add_command(command)


_add_command_modules()

__all__ = ["main"]
