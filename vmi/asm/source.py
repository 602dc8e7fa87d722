"""Source text handling: comments, physical lines and statements.

GNU as (i386 ELF) comments are ``#`` to the end of the line, ``/`` as the first
non-blank character of a line, and C ``/* ... */`` comments that may span lines.
Statements are separated by newlines and ``;``. Comments are replaced by spaces
(never removed) so that every column still points into the original line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from attrs import frozen


@frozen
class Line:
    """One physical line: its number, the original text and the comment-free text."""

    number: int
    text: str
    clean: str


class FileLines(Sequence[Line]):
    """The lines of a file as ``Line`` s, each made when it is asked for: the
    assembler looks at most lines of a large source only as their clean text
    (``cleans``), and a million ``Line`` objects cost more than the lines."""

    __slots__ = ("texts", "cleans")

    def __init__(self, texts: list[str], cleans: list[str]) -> None:
        self.texts = texts
        self.cleans = cleans

    def __len__(self) -> int:
        return len(self.cleans)

    def __getitem__(self, index: int) -> Line:  # type: ignore[override]
        if index < 0:
            index += len(self.cleans)
        return Line(index + 1, self.texts[index], self.cleans[index])


def clean_lines(text: str) -> tuple[FileLines, list[tuple[int, int, str]]]:
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
    special = _SPECIAL.search
    for number, line in enumerate(originals, 1):
        if in_block is None and special(line) is None:
            cleaned.append(line)  # no comment, string or character constant: as it is
            continue
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
    return FileLines(originals, cleaned), errors


#: Characters that may start a comment, a string or a character constant.
_SPECIAL = re.compile(r"[#/\"']")


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
    if ";" not in clean:
        return [(0, clean)]
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


class RefusedFile(Exception):
    """A file that ``.include``, ``.incbin`` or ``vmi asm`` will not read; the
    message says why (it is not a regular file, or it is too large)."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike[str], *, skip: int = 0,
                      count: int | None = None, limit: int | None = None,
                      what: str = "file") -> bytes:
    """The bytes ``skip`` ... ``skip + count`` (to the end if ``count`` is None) of
    the regular file ``path``, read with one seek and a bounded read.

    Devices, FIFOs, sockets and directories are refused before anything is read
    (``/dev/zero`` or ``/dev/urandom`` would never end, a FIFO would block), as
    are files larger than ``limit`` bytes (``what`` names the limit in the
    message) and ranges outside the file. Raises ``RefusedFile`` with the
    reason, or ``OSError`` when the file cannot be opened or read.
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise RefusedFile(f"is {_kind(before.st_mode)}, not a regular file")
    # O_NONBLOCK: should the name be swapped for a FIFO after the check, opening
    # it does not wait for a writer; fstat then sees what was really opened.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f"is {_kind(info.st_mode)}, not a regular file")
        size = info.st_size
        if limit is not None and size > limit:
            raise RefusedFile(f"is {size} bytes, more than the {what} limit of "
                              f"{_bytes(limit)}")
        if skip < 0 or skip > size or count is not None and not 0 <= count <= size - skip:
            raise RefusedFile(f"range is outside the {size}-byte file")
        want = size - skip if count is None else count
        handle.seek(skip)
        chunks = []
        while want > 0:
            chunk = handle.read(min(want, 1 << 20))
            if not chunk:
                break  # the file shrank: take what is there
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks)


def _bytes(count: int) -> str:
    """``count`` bytes in MiB when it is a whole number of them."""
    return f"{count >> 20} MiB" if count % (1 << 20) == 0 else f"{count} bytes"
