"""Macro and ``.irp`` arguments, split the way GNU as 2.40 splits them.

GNU as reads an argument list in two steps, and both decide where one
argument ends:

1. its input scrubber (``app.c``) has already rewritten the line: blanks are
   dropped, except one blank between two *symbol characters* (letters,
   digits, ``$._``, and on i386 also ``*%-([{}``) or before a quote or a
   backslash; a character constant ``'c`` becomes its decimal value. So
   ``end - start`` keeps its blanks (``-`` is a symbol character on i386) and
   ``1 + 2`` becomes ``1+2``;
2. ``get_any_string`` (``macro.c``) then ends an argument at a comma, or at a
   blank outside ``(...)``/``[...]``; an argument that starts with ``"`` is a
   string whose quotes are removed; ``name=value`` is a keyword argument.

Hence ``PRINT msg, msg_end - msg`` passes four arguments (``msg``,
``msg_end``, ``-``, ``msg``), and ``M x -y`` passes two. ``split`` and
``bind`` reproduce both steps; columns refer to the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmi.asm.errors import StatementError
from vmi.asm.lexer import CHAR_ESCAPES

#: Characters the scrubber keeps a blank between (symbol characters and the i386
#: ``extra_symbol_chars``); characters from 0x80 up count too.
SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789$._"
                         "*%-([{}")
_BLANKS = " \t\r"
#: Characters that end a keyword name (``ISSEP`` in macro.c).
_SEPARATORS = frozenset(' \t,";)(')


def _symbol(ch: str) -> bool:
    return ch in SYMBOL_CHARS or ord(ch) >= 0x80


def scrub(text: str) -> tuple[str, list[int]]:
    """The operand text ``text`` as GNU as's scrubber passes it on, and for each
    character of the result the index in ``text`` it comes from."""
    out: list[str] = []
    where: list[int] = []
    # 3: after an operator (blanks vanish); 9: after a symbol character;
    # 10: blanks after a symbol character (kept if another symbol character follows).
    state, blank = 3, 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _BLANKS:
            if state == 9:
                state, blank = 10, i
            i += 1
            continue
        if ch == '"':
            if state == 10:
                out.append(" ")
                where.append(blank)
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.extend(text[i:j])
            where.extend(range(i, j))
            state, i = 9, j  # a blank after the closing quote stays before a symbol
            continue
        if ch == "'":
            if state == 10:
                out.append(" ")
                where.append(blank)
                state = 3
            if i + 1 >= n:
                value, j = 0, i + 1
            elif text[i + 1] == "\\" and i + 2 < n:
                value, j = CHAR_ESCAPES.get(text[i + 2], ord(text[i + 2])), i + 3
            else:
                value, j = ord(text[i + 1]), i + 2
            if j < n and text[j] == "'":
                j += 1  # 'x' is 'x
            digits = str(value)
            out.extend(digits)
            where.extend([i] * len(digits))
            if len(digits) > 1:
                state = 3
            i = j
            continue
        if _symbol(ch):
            if state == 10:
                out.append(" ")
                where.append(blank)
            state = 9
        else:
            if state == 10 and ch == "\\":
                out.append(" ")
                where.append(blank)
            if state in (9, 10):
                state = 3
        out.append(ch)
        where.append(i)
        i += 1
    return "".join(out), where


def _skip_blanks(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _skip_comma(s: str, i: int) -> int:
    """``sb_skip_comma``: blanks, at most one comma, blanks."""
    i = _skip_blanks(s, i)
    if i < len(s) and s[i] == ",":
        i += 1
    return _skip_blanks(s, i)


def _string(s: str, i: int) -> tuple[str, int]:
    """``getstring``: a quoted argument without its quotes (``""`` is one quote)."""
    out = []
    n = len(s)
    i += 1
    escaped = False
    while i < n:
        escaped = not escaped if s[i - 1] == "\\" else False
        if not escaped and s[i] == '"':
            i += 1
            if i >= n or s[i] != '"':
                break
        out.append(s[i])
        i += 1
    return "".join(out), i


def _any(s: str, i: int) -> tuple[str, int]:
    """``get_any_string``: one argument from ``s[i]``."""
    n = len(s)
    if i >= n:
        return "", i
    if n > i + 2 and s[i + 1] == "'" and s[i] in "bBqQhHdD":  # MRI-style h'1F
        j = i
        while j < n and s[j] not in _SEPARATORS:
            j += 1
        return s[i:j], j
    if s[i] == '"':
        return _string(s, i)
    out = []
    brackets: list[str] = []
    while i < n and (brackets or s[i] not in " \t") and s[i] != ",":
        ch = s[i]
        if ch in "\"'":
            end = s.find(ch, i + 1)
            if end < 0:
                out.append(s[i:])
                return "".join(out), n
            out.append(s[i:end + 1])
            i = end + 1
            continue
        if ch in "([":
            brackets.append(ch)
        elif ch == ")" and brackets and brackets[-1] == "(":
            brackets.pop()
        elif ch == "]" and brackets and brackets[-1] == "[":
            brackets.pop()
        out.append(ch)
        i += 1
    return "".join(out), i


@dataclass(frozen=True)
class Argument:
    """One argument: ``keyword`` is the parameter named by ``name=value`` (None for a
    positional one); ``column`` is its offset in the original text."""

    value: str
    column: int
    keyword: str | None = None
    rest: str = ""  # the scrubbed text from this argument on (for a vararg parameter)


def split(text: str, keywords: bool = True) -> list[Argument]:
    """The arguments of ``text`` (scrubbed first), in order."""
    s, where = scrub(text)

    def column(k: int) -> int:
        return where[k] if k < len(where) else len(text)

    args: list[Argument] = []
    i = _skip_blanks(s, 0)
    while i < len(s):
        scan = i
        while scan < len(s) and s[scan] not in _SEPARATORS and s[scan] != "=":
            scan += 1
        if keywords and scan < len(s) and s[scan] == "=":
            name = s[i:scan]
            value, j = _any(s, scan + 1)
            args.append(Argument(value, column(i), name, s[scan + 1:]))
        else:
            value, j = _any(s, i)
            args.append(Argument(value, column(i), None, s[i:]))
        i = _skip_comma(s, j)
    return args


def irp_values(text: str) -> list[str]:
    """The values of a ``.irp`` list (the text after the parameter name)."""
    s, _where = scrub(text)
    values = []
    i = _skip_comma(s, 0)
    while i < len(s):
        value, j = _any(s, i)
        values.append(value)
        i = _skip_comma(s, j)
    return values


def bind(name: str, params: list[tuple[str, str | None, bool, bool]], text: str,
         col: int) -> dict[str, str]:
    """The values of macro ``name``'s parameters (name, default, required, vararg) for
    the argument text ``text`` at statement column ``col``, as GNU as binds them.
    Raises ``StatementError`` where GNU as reports an error."""
    names = [p[0] for p in params]
    values: dict[str, str] = {}
    position = 0
    keyword_seen = False
    for arg in split(text):
        if arg.keyword is not None:
            keyword_seen = True
            keyword = arg.keyword
            if not keyword or not keyword.replace(".", "_").replace("$", "_").isidentifier():
                raise StatementError(f"bad keyword argument '{keyword}='", col + arg.column)
            if keyword not in names:
                raise StatementError(f"parameter named '{keyword}' does not exist for macro "
                                     f"'{name}'", col + arg.column)
            values[keyword] = arg.value
            continue
        if keyword_seen:
            raise StatementError("can't mix positional and keyword arguments", col + arg.column)
        if position >= len(params):
            raise StatementError(f"too many positional arguments for macro '{name}'",
                                 col + arg.column)
        pname, _default, _required, vararg = params[position]
        if vararg:
            values[pname] = arg.rest.rstrip()
            position = len(params)
            break
        values[pname] = arg.value
        position += 1
    for pname, default, required, _vararg in params:
        if values.get(pname, "") == "":
            if required:
                raise StatementError(f"missing value for required parameter '{pname}' of "
                                     f"macro '{name}'", col)
            values[pname] = default if default is not None else ""
    return values
