"""One module per CLI command; each defines a click command named ``command``.

Shared here: ``UserError`` (one line, exit status 1, no traceback) and
``parse_int``.
"""

from __future__ import annotations

import click


class UserError(click.ClickException):  # noqa: N818 (click's naming)
    """An error caused by the user's input: printed as one line, exit status 1."""


def parse_int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None
