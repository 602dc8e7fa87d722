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

from attrs import field, frozen

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


#: Deepest nesting of parentheses and unary operators in one expression. The
#: parser and the evaluator use explicit stacks (no Python recursion), so this
#: limit is about hostile input, not about the interpreter's stack.
MAX_EXPR_DEPTH = 1000


def parse_expression(tokens: Sequence[Token], pos: int, leaves: LeafFactory) -> tuple[Expr, int]:
    """Parse an expression starting at ``tokens[pos]``: (expression, next position).

    Operator precedence parsing with explicit operand and operator stacks, so
    that neither ``((((...))))`` nor ``- - - ... 1`` nor ``1+1+...+1`` can
    exhaust Python's recursion limit; nesting deeper than ``MAX_EXPR_DEPTH``
    is a located error.
    """
    operands: list[Expr] = []
    # Pending operators: ("u", token) unary, ("(", token) open parenthesis,
    # ("b", token) binary with its rank.
    operators: list[tuple[str, Token, int]] = []
    depth = 0  # open parentheses + pending unary operators
    open_parens = 0
    while True:
        # An operand: any unary operators and parentheses, then a primary.
        tok = tokens[pos]
        if tok.kind == "op" and tok.value in ("-", "+", "~", "!", "("):
            if depth >= MAX_EXPR_DEPTH:
                raise StatementError(f"expression nested more than {MAX_EXPR_DEPTH} deep "
                                     f"(the limit of parentheses and unary operators)", tok.col)
            if tok.value == "(":
                operators.append(("(", tok, 0))
                open_parens += 1
                depth += 1
            elif tok.value != "+":  # unary plus changes nothing
                operators.append(("u", tok, 0))
                depth += 1
            pos += 1
            continue
        operands.append(_primary(tok, leaves))
        pos += 1
        while True:
            # Unary operators bind tightest: apply those right before the operand.
            while operators and operators[-1][0] == "u":
                _, op_tok, _ = operators.pop()
                depth -= 1
                operands[-1] = Unary(op_tok.value, operands[-1], op_tok.col)  # type: ignore[arg-type]
            tok = tokens[pos]
            if tok.kind == "rparen" and open_parens:
                _reduce(operands, operators, 0)
                operators.pop()  # the "("
                open_parens -= 1
                depth -= 1
                pos += 1
                continue
            break
        if tok.kind == "op" and tok.value in _RANK:
            rank = _RANK[tok.value]  # type: ignore[index]
            _reduce(operands, operators, rank)
            operators.append(("b", tok, rank))
            pos += 1
            continue
        if open_parens:
            raise StatementError("missing ')'", tok.col)
        _reduce(operands, operators, 0)
        return operands[0], pos


def _reduce(operands: list[Expr], operators: list[tuple[str, Token, int]], rank: int) -> None:
    """Apply pending binary operators of rank >= ``rank`` (all are left-associative),
    stopping at an open parenthesis."""
    while operators and operators[-1][0] == "b" and operators[-1][2] >= rank:
        _, tok, _ = operators.pop()
        right = operands.pop()
        operands[-1] = Binary(tok.value, operands[-1], right, tok.col)  # type: ignore[arg-type]


def _primary(tok: Token, leaves: LeafFactory) -> Expr:
    if tok.kind == "num":
        return Num(tok.value, tok.col)  # type: ignore[arg-type]
    if tok.kind == "sym":
        name = tok.value
        if name == ".":
            return leaves.dot(tok.col)
        return leaves.symbol(name, tok.col)  # type: ignore[arg-type]
    if tok.kind == "local":
        assert isinstance(tok.value, tuple)
        return leaves.local(str(tok.value[0]), str(tok.value[1]), tok.col)
    if tok.kind == "reg":
        raise StatementError(f"register '%{tok.value}' not allowed in an expression", tok.col)
    if tok.kind == "eof":
        raise StatementError("expected an expression", tok.col)
    if tok.kind == "str":
        raise StatementError("a string is not a number", tok.col)
    raise StatementError(f"unexpected '{tok.value}' in expression", tok.col)


@frozen
class Deferred:
    """What a resolver returns for a symbol defined by an expression: evaluate
    ``expr`` in its place. ``key`` identifies the symbol, to catch a symbol
    defined in terms of itself; ``name`` is for that message. ``done``, if
    given, receives the value (so the resolver can remember it: a chain of
    symbols defined by one another is then evaluated once, not once per use)."""

    expr: Expr
    name: str
    key: object = field(eq=False)
    done: Callable[[Lin | None], None] | None = field(default=None, eq=False)


Resolver = Callable[[Leaf], "Lin | Deferred | None"]

# Work items of ``evaluate``'s stack besides expressions.
_LEFT_DONE, _RIGHT_DONE, _UNARY_DONE, _SYMBOL_DONE = range(4)


def evaluate(node: Expr, resolve: Resolver) -> Lin | None:
    """The value of ``node``; ``resolve`` gives each symbol's value (None: unknown),
    or a ``Deferred`` expression to evaluate in its place.

    Returns None when a needed value is unknown or the result is not linear
    (as soon as one operand is unknown the other is not looked at). Raises
    ``StatementError`` for a division by zero or a symbol defined in terms of
    itself. Iterative, so that neither a deep expression nor a long chain of
    symbols defined by one another can exhaust Python's recursion limit.
    """
    work: list[object] = [node]
    values: list[Lin | None] = []
    expanding: set[int] = set()  # ids of the symbols being evaluated
    while work:
        item = work.pop()
        kind = type(item)
        if kind is Num:
            values.append(Lin(wrap64(item.value)))  # type: ignore[union-attr]
        elif kind is Leaf:
            value = resolve(item)  # type: ignore[arg-type]
            if isinstance(value, Deferred):
                key = id(value.key)
                if key in expanding:
                    raise StatementError(f"symbol '{value.name}' is defined in terms of itself")
                expanding.add(key)
                work.append((_SYMBOL_DONE, item, key, value.done))
                work.append(value.expr)
            elif value is None or not item.delta:  # type: ignore[union-attr]
                values.append(value)
            else:
                values.append(value.add(Lin(item.delta)))  # type: ignore[union-attr]
        elif kind is Unary:
            work.append((_UNARY_DONE, item))
            work.append(item.operand)  # type: ignore[union-attr]
        elif kind is Binary:
            work.append((_LEFT_DONE, item))
            work.append(item.left)  # type: ignore[union-attr]
        else:
            step, expr, *rest = item  # type: ignore[misc]
            if step == _LEFT_DONE:
                if values[-1] is not None:  # else the result is None: skip the right side
                    work.append((_RIGHT_DONE, expr))
                    work.append(expr.right)
            elif step == _RIGHT_DONE:
                right = values.pop()
                left = values.pop()
                values.append(None if right is None else _apply(expr, left, right))
            elif step == _UNARY_DONE:
                values.append(_unary(expr.op, values.pop()))
            else:  # _SYMBOL_DONE
                expanding.discard(rest[0])
                value = values[-1]
                if rest[1] is not None:
                    rest[1](value)
                if value is not None and expr.delta:
                    values[-1] = value.add(Lin(expr.delta))
    return values[0]


def _unary(op: str, inner: Lin | None) -> Lin | None:
    if inner is None:
        return None
    if op == "-":
        return inner.scale(-1)
    if not inner.is_const:
        return None
    if op == "~":
        return Lin(wrap64(~inner.const))
    return Lin(0 if inner.const else 1)  # "!"


def _apply(node: Binary, left: Lin, right: Lin) -> Lin | None:
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
