"""Tokens of one statement's operand text (GNU as AT&T lexical rules).

Numbers: ``123``, ``0x1f``, ``0b101``, ``017`` (octal), ``'c`` (a character);
``1b``/``1f`` refer to the previous/next numeric local label ``1:``. A ``%``
directly followed by a register name is a register; otherwise it is the modulo
operator. Columns are 0-based offsets into the statement text.
"""

from __future__ import annotations

from attrs import frozen

from vmi.asm.errors import StatementError

GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
GPR16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
GPR8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")

#: register name -> (kind, number, size in bytes)
REGISTERS: dict[str, tuple[str, int, int]] = {
    **{name: ("gpr", i, 4) for i, name in enumerate(GPR32)},
    **{name: ("gpr", i, 2) for i, name in enumerate(GPR16)},
    **{name: ("gpr", i, 1) for i, name in enumerate(GPR8)},
    **{name: ("seg", i, 2) for i, name in enumerate(SEGMENTS)},
    **{f"cr{i}": ("cr", i, 4) for i in range(8)},
    **{f"dr{i}": ("dr", i, 4) for i in range(8)},
    **{f"db{i}": ("dr", i, 4) for i in range(8)},
    **{f"tr{i}": ("tr", i, 4) for i in range(8)},
    "st": ("st", 0, 10),
}

_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.")
_NAME_CHARS = _NAME_START | frozenset("0123456789$")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_TWO_CHAR_OPS = ("<<", ">>", "&&", "||", "==", "!=", "<>", "<=", ">=")
_ONE_CHAR_OPS = frozenset("+-*/%&|^~!()<>,$:={}[]")
#: Escapes in strings (besides octal ``\\NNN`` and ``\\xHH``); any other character after
#: the backslash stands for itself, as in GNU as (``"\\a"`` is ``a``).
_ESCAPES = {"b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
#: Escapes in a character constant: GNU as's input scrubber knows only these, and any
#: other character after the backslash stands for itself (``'\\0`` is ``'0``, 48).
CHAR_ESCAPES = {"b": 8, "f": 12, "n": 10, "r": 13, "t": 9}
#: Token kinds after which a ``%`` is the modulo operator, not a register prefix.
_VALUE_END = frozenset({"num", "sym", "local", "rparen"})


@frozen
class Token:
    """``kind`` is num, sym, local, reg, str, op, rparen or eof; ``col`` 0-based."""

    kind: str
    value: object
    col: int
    end: int


def is_name_start(ch: str) -> bool:
    return ch in _NAME_START


def scan_name(text: str, i: int) -> int:
    """Index just past the symbol name starting at ``text[i]``."""
    while i < len(text) and text[i] in _NAME_CHARS:
        i += 1
    return i


def decode_escape(text: str, i: int, col: int) -> tuple[int, int]:
    """Decode the escape after the backslash at ``text[i - 1]``: (value, next index)."""
    if i >= len(text):
        raise StatementError("backslash at end of string", col)
    ch = text[i]
    if ch in "01234567":
        j = i
        while j < len(text) and j < i + 3 and text[j] in "01234567":
            j += 1
        return int(text[i:j], 8) & 0xFF, j
    if ch in "xX":
        j = i + 1
        while j < len(text) and text[j] in _HEX:
            j += 1
        if j == i + 1:
            raise StatementError("\\x used with no following hex digits", col)
        return int(text[i + 1 : j], 16) & 0xFF, j
    return _ESCAPES.get(ch, ord(ch)), i + 1


def tokenize(text: str, base_col: int = 0) -> list[Token]:
    """Split ``text`` into tokens; columns are ``base_col`` + offset. Ends with ``eof``."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = base_col + i
        if ch in " \t\r\f\v":
            i += 1
            continue
        if ch in _DIGITS:
            tok, i = _number(text, i, base_col)
            tokens.append(tok)
            continue
        if ch in _NAME_START:
            j = scan_name(text, i)
            tokens.append(Token("sym", text[i:j], col, base_col + j))
            i = j
            continue
        if ch == "%" and i + 1 < n and text[i + 1] in _NAME_START:
            j = scan_name(text, i + 1)
            name = text[i + 1 : j].lower()
            if name in REGISTERS:
                tokens.append(Token("reg", name, col, base_col + j))
                i = j
                continue
            if not tokens or tokens[-1].kind not in _VALUE_END:
                raise StatementError(f"bad register name '%{text[i + 1 : j]}'", col)
        if ch == '"':
            value, i = _string(text, i, base_col)
            tokens.append(Token("str", value, col, base_col + i))
            continue
        if ch == "'":
            if i + 1 >= n:
                raise StatementError("character constant missing its character", col)
            if text[i + 1] == "\\":
                if i + 2 >= n:
                    raise StatementError("backslash at end of character constant", col)
                char, j = CHAR_ESCAPES.get(text[i + 2], ord(text[i + 2])), i + 3
            else:
                char, j = ord(text[i + 1]), i + 2
            if j < n and text[j] == "'":
                j += 1  # tolerate a closing quote: 'a'
            tokens.append(Token("num", char, col, base_col + j))
            i = j
            continue
        two = text[i : i + 2]
        if two in _TWO_CHAR_OPS:
            tokens.append(Token("op", two, col, col + 2))
            i += 2
            continue
        if ch in _ONE_CHAR_OPS:
            kind = "rparen" if ch == ")" else "op"
            tokens.append(Token(kind, ch, col, col + 1))
            i += 1
            continue
        raise StatementError(f"unexpected character {ch!r}", col)
    tokens.append(Token("eof", None, base_col + n, base_col + n))
    return tokens


def _number(text: str, i: int, base_col: int) -> tuple[Token, int]:
    col = base_col + i
    j = i
    while j < len(text) and text[j] in _NAME_CHARS:
        j += 1
    word = text[i:j]
    lower = word.lower()
    try:
        if lower.startswith("0x"):
            if len(word) == 2:
                raise ValueError
            value = int(word[2:], 16)
        elif lower.startswith("0b") and len(word) > 2 and word[2] in "01":
            value = int(word[2:], 2)
        elif lower[-1] in "bf" and word[:-1].isdigit():
            return Token("local", (word[:-1].lstrip("0") or "0", lower[-1]), col,
                         base_col + j), j
        elif word.isdigit():
            value = int(word, 8) if len(word) > 1 and word[0] == "0" else int(word)
        else:
            raise ValueError
    except ValueError:
        raise StatementError(f"invalid number '{word}'", col) from None
    return Token("num", value, col, base_col + j), j


def _string(text: str, i: int, base_col: int) -> tuple[bytes, int]:
    out = bytearray()
    col = base_col + i
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return bytes(out), i + 1
        if ch == "\\":
            value, i = decode_escape(text, i + 1, col)
            out.append(value)
            continue
        out.extend(ch.encode("utf-8"))
        i += 1
    raise StatementError("unterminated string", col)
