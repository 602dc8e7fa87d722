"""One module per CLI command; each defines a click command named ``command``.

Shared here: ``UserError`` (one line, exit status 1, no traceback),
``UsageLine`` (one line, exit status 2: bad usage), ``parse_int`` and
``check_output`` (an output option's path, checked before the work starts).
docs/cli.md lists the exit statuses: 0 success, 1 a failure the command reports,
2 bad usage, 130 interrupted (Ctrl-C; ``vmi.cli``).
"""

from __future__ import annotations

import click

#: Exit status of bad usage (click's own usage errors use it too).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class UserError(click.ClickException):  # noqa: N818 (click's naming)
    """An error caused by the user's input: printed as one line, exit status 1."""


class UsageLine(UserError):
    """Bad usage (an option's value that cannot work), said in one line with exit
    status 2, like click's usage errors but without the usage banner."""

    exit_code = EXIT_USAGE


def parse_int(text: str, what: str) -> int:
    """``text`` as an integer (``0x`` hex, ``0o``, ``0b`` allowed); a ``UsageLine``
    naming ``what`` if it is not one."""
    try:
        return int(text, 0)
    except ValueError:
        raise UsageLine(f"{what}: {text!r} is not a number") from None


def check_output(path: str | None, option: str) -> None:
    """Refuse (``UsageLine``, exit 2) an output path that cannot be written, before
    any work is done: its directory must exist and be writable (it is never
    created) and the path must not be a directory."""
    from vmi.files import unwritable

    if path is None:
        return
    why = unwritable(path)
    if why is not None:
        raise UsageLine(f"{option} {path}: {why}")
