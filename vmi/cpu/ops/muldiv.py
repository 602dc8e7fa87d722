"""Multiply and divide: mul, imul (one-, two- and three-operand forms), div, idiv.

SDM Vol.2 MUL, IMUL, DIV, IDIV. The one-operand forms work on the
accumulator: AL/AX/EAX times the operand into AX, DX:AX or EDX:EAX; AX, DX:AX
or EDX:EAX divided by the operand into quotient AL/AX/EAX and remainder
AH/DX/EDX.

Flags. Multiplies set CF = OF = "the upper half is significant" (for imul:
the product does not fit, sign-extended, in the destination); SF, ZF, AF and
PF are undefined in the SDM. vmi gives what Intel hardware gives: SF, ZF and
PF of the **upper half** of the product (AH, DX, EDX; for the two- and
three-operand IMUL the bits of the full product above the destination) and
AF = 1. That is what the 80C286 of the SingleStepTests suite does in every
test of MUL and IMUL r/m8, r/m16 (F6.4, F6.5, F7.4, F7.5) and IMUL r16, r/m16,
imm (69, 6B) (``shared/data/sst-80286-real``; docs/system-model.md "Where
Intel says undefined"); the 32-bit forms and the 386's two-operand IMUL get
the same rule (no capture covers them). Unicorn (QEMU) gives SF, ZF, PF of
the low half and AF = 0 instead; the differential tests mask these flags.
Divides leave all six flags undefined; they keep their values, as in Unicorn
(the 80C286 changes them in a way not modelled here).

Faults. A zero divisor and a quotient that does not fit in the destination
both raise #DE (vector 0, a fault: nothing is written). idiv accepts the most
negative quotient (-128, -32768, -2**31) as every processor since the 80286
does; the 8086 faulted on it.
"""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.errors import DE
from vmi.cpu.operands import Register
from vmi.cpu.ops import build, semantics


def _flags_record(bits: int, product: str, overflow: str) -> str:
    """Statement recording the flags of multiply ``product`` (the full, possibly
    negative, product): CF = OF = ``overflow``; SF, ZF and PF of the half above
    the destination's width and AF = 1 (see the module docstring)."""
    sf = "(hi & 0x80)" if bits == 8 else f"((hi >> {bits - 8}) & 0x80)"
    return (f"hi = ({product} >> {bits}) & {(1 << bits) - 1:#x}\n"
            f"cpu.lf = (EXPLICIT, {bits}, PARITY[hi & 0xFF] | (0 if hi else 0x40) | {sf} | 0x10"
            f" | (0x801 if {overflow} else 0), 0, 0)")


# Writing a double-width result to AX, DX:AX or EDX:EAX.
_STORE_PRODUCT = {
    8: "r[0] = (r[0] & 0xFFFF0000) | (p & 0xFFFF)",
    16: "r[0] = (r[0] & 0xFFFF0000) | (p & 0xFFFF)\n"
        "r[2] = (r[2] & 0xFFFF0000) | ((p >> 16) & 0xFFFF)",
    32: "r[0] = p & 0xFFFFFFFF\nr[2] = (p >> 32) & 0xFFFFFFFF",
}
# Reading the accumulator operand of the one-operand forms.
_ACC = {8: "(r[0] & 0xFF)", 16: "(r[0] & 0xFFFF)", 32: "r[0]"}


@semantics("mul")
def mul(insn, cpu):
    """Unsigned multiply of the accumulator; CF = OF = upper half non-zero."""
    (src,) = insn.operands
    s = operand_access(src, "s")
    bits = s.bits
    body = "\n".join([
        "r = cpu.r", *s.setup, f"p = {_ACC[bits]} * {s.read}", _STORE_PRODUCT[bits],
        _flags_record(bits, "p", f"p >> {bits}"),
    ])
    return build(body, s.params)


def _signed(expr: str, bits: int) -> str:
    sign = 1 << (bits - 1)
    return f"(({expr} ^ {sign:#x}) - {sign:#x})"


@semantics("imul")
def imul(insn, cpu):
    """Signed multiply. One operand: the accumulator, double-width result. Two
    or three operands: ``dst = dst * src`` or ``dst = src * imm``, truncated to
    the destination (SDM Vol.2 IMUL). CF = OF = the product does not fit."""
    ops = insn.operands
    if len(ops) == 1:
        s = operand_access(ops[0], "s")
        bits = s.bits
        sign = 1 << (bits - 1)
        body = "\n".join([
            "r = cpu.r", *s.setup,
            f"p = {_signed(_ACC[bits], bits)} * {_signed(s.read, bits)}",
            _STORE_PRODUCT[bits],
            _flags_record(bits, "p", f"not {-sign} <= p < {sign}"),
        ])
        return build(body, s.params)
    dst = ops[0]
    assert isinstance(dst, Register)
    d = operand_access(dst, "d")
    bits = d.bits
    s = operand_access(ops[1], "s", size=bits // 8)
    other = d.read if len(ops) == 2 else operand_access(ops[2], "i", size=bits // 8).read
    params = [d.params, s.params]
    if len(ops) == 3:
        params.append(operand_access(ops[2], "i", size=bits // 8).params)
    sign = 1 << (bits - 1)
    mask = (1 << bits) - 1
    body = "\n".join([
        "r = cpu.r", *s.setup, f"p = {_signed(s.read, bits)} * {_signed(other, bits)}",
        d.write(f"(p & {mask:#x})"),
        _flags_record(bits, "p", f"not {-sign} <= p < {sign}"),
    ])
    return build(body, *params)


# Reading the dividend and writing quotient and remainder of div/idiv.
_DIVIDEND = {
    8: "(r[0] & 0xFFFF)",
    16: "(((r[2] & 0xFFFF) << 16) | (r[0] & 0xFFFF))",
    32: "((r[2] << 32) | r[0])",
}
_STORE_QUOTIENT = {
    8: "r[0] = (r[0] & 0xFFFF0000) | ((m & 0xFF) << 8) | (q & 0xFF)",
    16: "r[0] = (r[0] & 0xFFFF0000) | (q & 0xFFFF)\nr[2] = (r[2] & 0xFFFF0000) | (m & 0xFFFF)",
    32: "r[0] = q & 0xFFFFFFFF\nr[2] = m & 0xFFFFFFFF",
}


@semantics("div")
def div(insn, cpu):
    """Unsigned divide; #DE on a zero divisor or a quotient wider than the destination."""
    (src,) = insn.operands
    s = operand_access(src, "s")
    bits = s.bits
    body = "\n".join([
        "r = cpu.r", *s.setup, f"b = {s.read}",
        "if not b:",
        "    raise CPUException(DE, None, 'divide by zero')",
        f"q, m = divmod({_DIVIDEND[bits]}, b)",
        f"if q > {(1 << bits) - 1:#x}:",
        "    raise CPUException(DE, None, 'quotient overflow')",
        _STORE_QUOTIENT[bits],
    ])
    return build(body, s.params, DE=DE)


@semantics("idiv")
def idiv(insn, cpu):
    """Signed divide, quotient rounded toward zero and remainder with the sign of
    the dividend (SDM Vol.2 IDIV); #DE on a zero divisor or a quotient outside
    [-2**(n-1), 2**(n-1) - 1]."""
    (src,) = insn.operands
    s = operand_access(src, "s")
    bits = s.bits
    sign = 1 << (bits - 1)
    body = "\n".join([
        "r = cpu.r", *s.setup, f"b = {_signed(s.read, bits)}",
        "if not b:",
        "    raise CPUException(DE, None, 'divide by zero')",
        f"n = {_signed(_DIVIDEND[bits], 2 * bits)}",
        "q = abs(n) // abs(b)",
        "if (n < 0) != (b < 0):",
        "    q = -q",
        f"if not {-sign} <= q < {sign}:",
        "    raise CPUException(DE, None, 'quotient overflow')",
        "m = n - q * b",
        _STORE_QUOTIENT[bits],
    ])
    return build(body, s.params, DE=DE)
