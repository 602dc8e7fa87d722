"""Source text handling: comments, physical lines and statements.

GNU as (i386 ELF) comments are ``#`` to the end of the line, ``/`` as the first
non-blank character of a line, and C ``/* ... */`` comments that may span lines.
Statements are separated by newlines and ``;``. Comments are replaced by spaces
(never removed) so that every column still points into the original line.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Line:
    """One physical line: its number, the original text and the comment-free text."""

    number: int
    text: str
    clean: str


def clean_lines(text: str) -> tuple[list[Line], list[tuple[int, int, str]]]:
    """Split ``text`` into ``Line`` s with comments blanked out.

    Returns the lines and the errors found (1-based line, 1-based column, message):
    an unterminated string or ``/*`` comment.
    """
    originals = text.split("\n")
    if originals and originals[-1] == "":
        originals.pop()
    errors: list[tuple[int, int, str]] = []
    cleaned: list[str] = []
    in_block: tuple[int, int] | None = None  # where an open /* started
    for number, line in enumerate(originals, 1):
        out: list[str] = []
        i, n = 0, len(line)
        first_nonblank = True
        while i < n:
            ch = line[i]
            if in_block is not None:
                if line.startswith("*/", i):
                    out.append("  ")
                    i += 2
                    in_block = None
                else:
                    out.append("\t" if ch == "\t" else " ")
                    i += 1
                continue
            if ch == "/" and line.startswith("/*", i):
                in_block = (number, i + 1)
                out.append("  ")
                i += 2
                continue
            if ch == "#" or (ch == "/" and first_nonblank):
                out.append("".join("\t" if c == "\t" else " " for c in line[i:]))
                break
            if ch not in " \t":
                first_nonblank = False
            if ch == '"':
                end = _string_end(line, i)
                if end is None:
                    errors.append((number, i + 1, "unterminated string"))
                    out.append(line[i:])
                    break
                out.append(line[i:end])
                i = end
                continue
            if ch == "'":
                end = min(n, i + (3 if line.startswith("\\", i + 1) else 2))
                out.append(line[i:end])
                i = end
                continue
            out.append(ch)
            i += 1
        cleaned.append("".join(out))
    if in_block is not None:
        errors.append((in_block[0], in_block[1], "unterminated /* comment"))
    lines = [Line(k + 1, original, clean) for k, (original, clean)
             in enumerate(zip(originals, cleaned, strict=True))]
    return lines, errors


def _string_end(text: str, start: int) -> int | None:
    """Index just past the string literal that opens at ``text[start] == '"'``."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return None


def split_statements(clean: str) -> list[tuple[int, str]]:
    """Split a comment-free line at ``;`` outside strings: (0-based column, text) pairs."""
    parts: list[tuple[int, str]] = []
    start = 0
    i, n = 0, len(clean)
    while i < n:
        ch = clean[i]
        if ch == '"':
            end = _string_end(clean, i)
            i = n if end is None else end
            continue
        if ch == "'":
            i += 3 if clean.startswith("\\", i + 1) else 2
            continue
        if ch == ";":
            parts.append((start, clean[start:i]))
            start = i + 1
        i += 1
    parts.append((start, clean[start:]))
    return parts
