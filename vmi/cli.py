"""The ``vmi`` command line: ``python -m vmi COMMAND``.

Every error a person can cause ends in one line naming the place and the
cause and exit status 1 (2 for bad usage), never a Python traceback.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
