"""Expressions: parsing with GNU as precedence, and evaluation to linear values.

GNU as ranks operators differently from C (``expr.c``, ``op_rank``): unary
``- ~ !`` bind tightest, then ``* / % << >>``, then ``| & ^ !`` (``a ! b`` is
``a | ~b``), then ``+ -``, then comparisons (true is -1), then ``&&``, then
``||``; all left-associative. Arithmetic is on signed 64-bit values.

A value is a ``Lin``: a constant plus integer multiples of unknown bases
(a label's fragment while parsing, a section while laying out). A difference
of two labels in the same fragment is therefore a constant while parsing, as
in GNU as, and anything that is not linear is ``None`` (not known yet).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from attrs import frozen

from vmi.asm.errors import StatementError
from vmi.asm.lexer import Token

_MASK64 = (1 << 64) - 1


def wrap64(value: int) -> int:
    """``value`` as a signed 64-bit integer (GNU as ``offsetT`` arithmetic)."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


@frozen
class Lin:
    """``const + sum(coeff * base)``; constant when ``terms`` is empty."""

    const: int
    terms: tuple[tuple[Hashable, int], ...] = ()

    @property
    def is_const(self) -> bool:
        return not self.terms

    def add(self, other: Lin, sign: int = 1) -> Lin:
        merged: dict[Hashable, int] = dict(self.terms)
        for key, coeff in other.terms:
            merged[key] = merged.get(key, 0) + sign * coeff
        terms = tuple((k, c) for k, c in merged.items() if c)
        return Lin(wrap64(self.const + sign * other.const), terms)

    def scale(self, factor: int) -> Lin:
        return Lin(wrap64(self.const * factor),
                   tuple((k, c * factor) for k, c in self.terms if c * factor))


@frozen
class Num:
    value: int
    col: int


@frozen
class Leaf:
    """A symbol reference (named, numeric local, or ``.``); ``symbol`` is the
    assembler's symbol object, bound when the expression was parsed."""

    symbol: object
    col: int
    delta: int = 0


@frozen
class Unary:
    op: str
    operand: Expr
    col: int


@frozen
class Binary:
    op: str
    left: Expr
    right: Expr
    col: int


Expr = Num | Leaf | Unary | Binary

_RANK = {
    "*": 8, "/": 8, "%": 8, "<<": 8, ">>": 8,
    "|": 7, "!": 7, "^": 7, "&": 7,
    "+": 5, "-": 5,
    "==": 4, "!=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
    "&&": 3, "||": 2,
}


class LeafFactory:
    """What the parser calls to turn names into ``Leaf`` s (supplied by the assembler)."""

    def symbol(self, name: str, col: int) -> Expr:  # pragma: no cover - interface
        raise NotImplementedError

    def local(self, digits: str, direction: str, col: int) -> Expr:  # pragma: no cover
        raise NotImplementedError

    def dot(self, col: int) -> Expr:  # pragma: no cover - interface
        raise NotImplementedError

    def known(self, expr: Expr) -> int | None:
        """The value of ``expr`` if it is a constant now."""
        value = evaluate(expr, lambda leaf: None)
        return value.const if value is not None and value.is_const else None


def parse_expression(tokens: Sequence[Token], pos: int, leaves: LeafFactory,
                     min_rank: int = 0) -> tuple[Expr, int]:
    """Parse an expression starting at ``tokens[pos]``: (expression, next position)."""
    left, pos = _primary(tokens, pos, leaves)
    while True:
        tok = tokens[pos]
        if tok.kind != "op" or tok.value not in _RANK:
            return left, pos
        rank = _RANK[tok.value]  # type: ignore[index]
        if rank <= min_rank:
            return left, pos
        right, pos = parse_expression(tokens, pos + 1, leaves, rank)
        left = Binary(tok.value, left, right, tok.col)  # type: ignore[arg-type]


def _primary(tokens: Sequence[Token], pos: int, leaves: LeafFactory) -> tuple[Expr, int]:
    tok = tokens[pos]
    if tok.kind == "num":
        return Num(tok.value, tok.col), pos + 1  # type: ignore[arg-type]
    if tok.kind == "sym":
        name = tok.value
        if name == ".":
            return leaves.dot(tok.col), pos + 1
        return leaves.symbol(name, tok.col), pos + 1  # type: ignore[arg-type]
    if tok.kind == "local":
        assert isinstance(tok.value, tuple)
        return leaves.local(str(tok.value[0]), str(tok.value[1]), tok.col), pos + 1
    if tok.kind == "op" and tok.value in ("-", "+", "~", "!"):
        operand, pos = _primary(tokens, pos + 1, leaves)
        if tok.value == "+":
            return operand, pos
        return Unary(tok.value, operand, tok.col), pos  # type: ignore[arg-type]
    if tok.kind == "op" and tok.value == "(":
        inner, pos = parse_expression(tokens, pos + 1, leaves)
        if tokens[pos].kind != "rparen":
            raise StatementError("missing ')'", tokens[pos].col)
        return inner, pos + 1
    if tok.kind == "reg":
        raise StatementError(f"register '%{tok.value}' not allowed in an expression", tok.col)
    if tok.kind == "eof":
        raise StatementError("expected an expression", tok.col)
    if tok.kind == "str":
        raise StatementError("a string is not a number", tok.col)
    raise StatementError(f"unexpected '{tok.value}' in expression", tok.col)


Resolver = Callable[[Leaf], "Lin | None"]


def evaluate(node: Expr, resolve: Resolver) -> Lin | None:
    """The value of ``node``; ``resolve`` gives each symbol's value (None: unknown).

    Returns None when a needed value is unknown or the result is not linear.
    Raises ``StatementError`` for a division by zero.
    """
    if isinstance(node, Num):
        return Lin(wrap64(node.value))
    if isinstance(node, Leaf):
        value = resolve(node)
        if value is None or not node.delta:
            return value
        return value.add(Lin(node.delta))
    if isinstance(node, Unary):
        inner = evaluate(node.operand, resolve)
        if inner is None:
            return None
        if node.op == "-":
            return inner.scale(-1)
        if not inner.is_const:
            return None
        if node.op == "~":
            return Lin(wrap64(~inner.const))
        return Lin(0 if inner.const else 1)  # "!"
    left = evaluate(node.left, resolve)
    if left is None:
        return None
    right = evaluate(node.right, resolve)
    if right is None:
        return None
    op = node.op
    if op == "+":
        return left.add(right)
    if op == "-":
        return left.add(right, -1)
    if op == "*":
        if left.is_const:
            return right.scale(left.const)
        if right.is_const:
            return left.scale(right.const)
        return None
    if op in ("==", "!=", "<>") and left.terms == right.terms:
        equal = left.const == right.const
        return Lin(-1 if equal == (op == "==") else 0)
    if not (left.is_const and right.is_const):
        return None
    return Lin(_binary(op, left.const, right.const, node.col))


def _binary(op: str, a: int, b: int, col: int) -> int:
    if op in ("/", "%"):
        if b == 0:
            raise StatementError("division by zero", col)
        quotient = abs(a) // abs(b)
        if (a < 0) != (b < 0):
            quotient = -quotient
        return wrap64(quotient if op == "/" else a - quotient * b)
    if op == "<<":
        return wrap64(a << b) if 0 <= b < 64 else 0
    if op == ">>":  # arithmetic, as GNU as does it: ~0 >> 28 is still ~0
        return a >> b if 0 <= b < 64 else (-1 if a < 0 else 0)
    if op == "|":
        return wrap64(a | b)
    if op == "!":
        return wrap64(a | ~b)
    if op == "^":
        return wrap64(a ^ b)
    if op == "&":
        return wrap64(a & b)
    if op == "&&":
        return 1 if a and b else 0
    if op == "||":
        return 1 if a or b else 0
    result = {"==": a == b, "!=": a != b, "<>": a != b, "<": a < b, "<=": a <= b,
              ">": a > b, ">=": a >= b}[op]
    return -1 if result else 0
