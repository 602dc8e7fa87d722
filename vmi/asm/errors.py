"""Located diagnostics of the assembler: ``file:line:col: error: message``.

Every error a person can cause in a source file is reported at the place it
happens, with the source line and a caret under the column, the way compilers
and GNU as users expect. The assembler collects the errors of a whole file
(up to ``MAX_ERRORS``) before giving up, so one run shows all of them.
"""

from __future__ import annotations

from attrs import field, frozen

#: Stop collecting after this many errors (the rest are usually consequences).
MAX_ERRORS = 20


@frozen
class Location:
    """A place in a source file: 1-based line and column, and the line's text."""

    filename: str
    line: int
    column: int
    text: str = field(default="", eq=False)

    def at_column(self, column: int) -> Location:
        """The same line at another 1-based column."""
        return Location(self.filename, self.line, max(1, column), self.text)

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.column}"


@frozen
class Diagnostic:
    """One message: ``severity`` is ``error``, ``warning`` or ``note``."""

    severity: str
    message: str
    location: Location
    notes: tuple[Diagnostic, ...] = ()

    def format(self) -> str:
        """The message, the source line and a caret, then any notes the same way."""
        loc = self.location
        lines = [f"{loc}: {self.severity}: {self.message}"]
        if loc.text:
            text = loc.text.rstrip("\n")
            # Keep tabs in the caret line so the caret sits under the column.
            pad = "".join("\t" if ch == "\t" else " " for ch in text[: loc.column - 1])
            lines += [text, pad + "^"]
        lines += [note.format() for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class AsmError(Exception):
    """Assembly failed; ``diagnostics`` holds every located error (and warning) found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class TooManyErrors(Exception):
    """Raised internally when ``MAX_ERRORS`` errors have been collected."""


class StatementError(Exception):
    """An error inside one statement; the assembler adds the location.

    ``column`` is 0-based within the statement text (None: the statement start).
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
