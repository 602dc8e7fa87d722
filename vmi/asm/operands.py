"""AT&T operands: ``%reg``, ``$imm``, ``seg:disp(base,index,scale)`` and ``*`` indirection.

The parsed operands are syntax only; which instruction form they fit is the
encoder's business. A memory operand written as a bare expression (``label``)
is also what a branch target looks like, so jumps accept it as their target.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from vmi.asm.errors import StatementError
from vmi.asm.expr import Expr, LeafFactory, parse_expression
from vmi.asm.lexer import REGISTERS, Token


@frozen
class Reg:
    """A register: ``kind`` gpr, seg, cr, dr, tr or st; ``number``; ``size`` in bytes."""

    kind: str
    number: int
    size: int
    name: str

    @classmethod
    def named(cls, name: str) -> Reg:
        kind, number, size = REGISTERS[name]
        return cls(kind, number, size, name)


@frozen
class RegOperand:
    reg: Reg
    col: int
    indirect: bool = False


@frozen
class MemOperand:
    """``segment:disp(base,index,scale)``; absent parts are None (scale 1 if absent)."""

    segment: Reg | None
    disp: Expr | None
    base: Reg | None
    index: Reg | None
    scale: int
    col: int
    indirect: bool = False

    @property
    def bare(self) -> bool:
        """Only a displacement: ``label`` or ``0x1234`` (a branch target or moffs)."""
        return self.base is None and self.index is None

    @property
    def address_size(self) -> int | None:
        """16 or 32 from the registers used, None when no register says."""
        for reg in (self.base, self.index):
            if reg is not None:
                return reg.size * 8
        return None


@frozen
class ImmOperand:
    expr: Expr
    col: int


Operand = RegOperand | MemOperand | ImmOperand


def split_operands(tokens: Sequence[Token]) -> list[list[Token]]:
    """Split at top-level commas; each part gets its own ``eof`` token."""
    parts: list[list[Token]] = []
    current: list[Token] = []
    depth = 0
    for tok in tokens:
        if tok.kind == "eof":
            break
        if tok.kind == "op" and tok.value == "(":
            depth += 1
        elif tok.kind == "rparen":
            depth -= 1
        if tok.kind == "op" and tok.value == "," and depth == 0:
            if not current:
                raise StatementError("missing operand", tok.col)
            parts.append(current + [Token("eof", None, tok.col, tok.col)])
            current = []
            continue
        current.append(tok)
    end = tokens[-1].col if tokens else 0
    if current:
        parts.append(current + [Token("eof", None, end, end)])
    elif parts:
        raise StatementError("missing operand after ','", end)
    return parts


def parse_operand(tokens: Sequence[Token], leaves: LeafFactory) -> Operand:
    """Parse one operand (its tokens end with ``eof``)."""
    pos = 0
    col = tokens[0].col
    indirect = False
    if _is_op(tokens[0], "*"):
        indirect = True
        pos = 1
    tok = tokens[pos]
    if _is_op(tok, "$"):
        if indirect:
            raise StatementError("immediate operand cannot be indirect", tok.col)
        expr, pos = parse_expression(tokens, pos + 1, leaves)
        _expect_end(tokens, pos)
        return ImmOperand(expr, col)
    if tok.kind == "reg":
        reg = Reg.named(tok.value)  # type: ignore[arg-type]
        nxt = tokens[pos + 1]
        if nxt.kind == "eof":
            return RegOperand(reg, col, indirect)
        if reg.kind == "st" and _is_op(nxt, "("):
            index_tok = tokens[pos + 2]
            if (index_tok.kind != "num" or not 0 <= index_tok.value < 8  # type: ignore[operator]
                    or tokens[pos + 3].kind != "rparen"):
                raise StatementError("bad x87 register: expected %st(0) .. %st(7)", tok.col)
            _expect_end(tokens, pos + 4)
            return RegOperand(Reg("st", index_tok.value, 10, f"st({index_tok.value})"),  # type: ignore[arg-type]
                              col, indirect)
        if _is_op(nxt, ":"):
            if reg.kind != "seg":
                raise StatementError(f"'%{reg.name}' is not a segment register", tok.col)
            return _memory(tokens, pos + 2, leaves, reg, col, indirect)
        raise StatementError(f"junk after register '%{reg.name}'", nxt.col)
    return _memory(tokens, pos, leaves, None, col, indirect)


def _memory(tokens: Sequence[Token], pos: int, leaves: LeafFactory, segment: Reg | None,
            col: int, indirect: bool) -> MemOperand:
    disp: Expr | None = None
    tok = tokens[pos]
    if tok.kind == "eof":
        raise StatementError("missing memory operand after segment", tok.col)
    if not (_is_op(tok, "(") and _starts_base_index(tokens, pos + 1)):
        disp, pos = parse_expression(tokens, pos, leaves)
    base = index = None
    scale = 1
    if _is_op(tokens[pos], "("):
        base, index, scale, pos = _base_index(tokens, pos + 1, leaves)
    _expect_end(tokens, pos)
    return MemOperand(segment, disp, base, index, scale, col, indirect)


def _starts_base_index(tokens: Sequence[Token], pos: int) -> bool:
    tok = tokens[pos]
    return tok.kind == "reg" or _is_op(tok, ",")


def _base_index(tokens: Sequence[Token], pos: int,
                leaves: LeafFactory) -> tuple[Reg | None, Reg | None, int, int]:
    base = index = None
    scale = 1
    tok = tokens[pos]
    if tok.kind == "reg":
        base = _address_register(tok)
        pos += 1
    if _is_op(tokens[pos], ","):
        tok = tokens[pos + 1]
        if tok.kind != "reg":
            raise StatementError("expected an index register after ','", tok.col)
        index = _address_register(tok)
        pos += 2
        if _is_op(tokens[pos], ","):
            scale_tok = tokens[pos + 1]
            expr, pos = parse_expression(tokens, pos + 1, leaves)
            value = leaves.known(expr)
            if value not in (1, 2, 4, 8):
                raise StatementError("scale factor must be 1, 2, 4 or 8", scale_tok.col)
            scale = value  # type: ignore[assignment]
    if tokens[pos].kind != "rparen":
        raise StatementError("expected ')' to close the base/index part", tokens[pos].col)
    return base, index, scale, pos + 1


def _address_register(tok: Token) -> Reg:
    reg = Reg.named(tok.value)  # type: ignore[arg-type]
    if reg.kind != "gpr" or reg.size == 1:
        raise StatementError(f"'%{reg.name}' cannot be used in an address", tok.col)
    return reg


def _is_op(tok: Token, value: str) -> bool:
    return tok.kind == "op" and tok.value == value


def _expect_end(tokens: Sequence[Token], pos: int) -> None:
    if tokens[pos].kind != "eof":
        raise StatementError(f"junk '{_show(tokens[pos])}' after operand", tokens[pos].col)


def _show(tok: Token) -> str:
    if tok.kind == "reg":
        return f"%{tok.value}"
    if tok.kind == "str":
        return '"..."'
    return str(tok.value)
