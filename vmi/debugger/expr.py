"""Address expressions as gdb users type them: ``$esp+8``, ``loop+2``, ``*($esp+4)``.

A small recursive-descent evaluator over 32-bit unsigned arithmetic:

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "%") unary)*
    unary   := ("-" | "~" | "*") unary | primary
    primary := NUMBER | "$" NAME | SYMBOL | "(" expr ")"

Numbers are decimal or ``0x`` hexadecimal; ``$name`` is a register (``$pc``,
``$sp`` and ``$fp`` are gdb's names for EIP, ESP and EBP); a bare name is a
symbol of the loaded program; unary ``*`` reads the 32-bit word at an address.
The evaluator knows nothing of the machine: the caller passes lookups.
"""

from __future__ import annotations

import re
from collections.abc import Callable

M32 = 0xFFFFFFFF
#: Longer expressions are refused (and the recursion depth stays far from Python's limit).
MAX_TOKENS = 200

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)|(\$[A-Za-z_][A-Za-z0-9_]*)"
                    r"|([A-Za-z_.][A-Za-z0-9_.$@]*)|(.))")


class ExprError(Exception):
    """An expression that cannot be evaluated; the message says why, in one line."""


class _Parser:
    def __init__(self, text: str, register: Callable[[str], int | None],
                 symbol: Callable[[str], int | None],
                 read_word: Callable[[int], int] | None) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:  # only trailing blanks are left
                break
            position = match.end()
            number, register_name, name, other = match.groups()
            if number is not None:
                self.tokens.append(("num", number))
            elif register_name is not None:
                self.tokens.append(("reg", register_name[1:]))
            elif name is not None:
                self.tokens.append(("sym", name))
            elif other is not None and not other.isspace():
                self.tokens.append(("op", other))
        self.position = 0
        self.register = register
        self.symbol = symbol
        self.read_word = read_word

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExprError("expression ends too soon")
        self.position += 1
        return token

    def expr(self) -> int:
        value = self.term()
        while (token := self.peek()) is not None and token in (("op", "+"), ("op", "-")):
            self.position += 1
            right = self.term()
            value = value + right if token[1] == "+" else value - right
        return value & M32

    def term(self) -> int:
        value = self.unary()
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in "*/%":
            self.position += 1
            right = self.unary()
            if token[1] == "*":
                value *= right
            elif right == 0:
                raise ExprError("division by zero")
            elif token[1] == "/":
                value //= right
            else:
                value %= right
        return value & M32

    def unary(self) -> int:
        token = self.peek()
        if token == ("op", "-"):
            self.position += 1
            return -self.unary() & M32
        if token == ("op", "~"):
            self.position += 1
            return ~self.unary() & M32
        if token == ("op", "*"):
            self.position += 1
            address = self.unary()
            if self.read_word is None:
                raise ExprError("cannot read memory here")
            return self.read_word(address) & M32
        return self.primary()

    def primary(self) -> int:
        kind, text = self.take()
        if kind == "num":
            value = int(text, 16) if text[:2].lower() == "0x" else int(text)
            if value > M32:  # a literal never wraps silently
                raise ExprError(f"{text} is out of range: a value is 32 bits "
                                f"(0..{M32:#x})")
            return value
        if kind == "reg":
            value = self.register(text.lower())
            if value is None:
                raise ExprError(f"no register named ${text}")
            return value
        if kind == "sym":
            value = self.symbol(text)
            if value is None:
                raise ExprError(f'No symbol "{text}" in current context.')
            return value
        if text == "(":
            value = self.expr()
            if self.take() != ("op", ")"):
                raise ExprError("missing ')'")
            return value
        raise ExprError(f"unexpected {text!r} in expression")


def evaluate(text: str, *, register: Callable[[str], int | None],
             symbol: Callable[[str], int | None],
             read_word: Callable[[int], int] | None = None) -> int:
    """The 32-bit value of ``text``; raises ``ExprError`` for anything it cannot read."""
    parser = _Parser(text, register, symbol, read_word)
    if not parser.tokens:
        raise ExprError("an expression is needed")
    if len(parser.tokens) > MAX_TOKENS:
        raise ExprError(f"expression too long (more than {MAX_TOKENS} tokens)")
    value = parser.expr()
    leftover = parser.peek()
    if leftover is not None:
        raise ExprError(f"unexpected {leftover[1]!r} in expression {text.strip()!r}")
    return value
