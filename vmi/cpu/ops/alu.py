"""Integer arithmetic and logic: add, or, adc, sbb, and, sub, xor, cmp, test,
inc, dec, neg, not (SDM Vol.2; flags per Vol.1 Appendix A)."""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.flags import cf_source
from vmi.cpu.ops import build, semantics

# mnemonic -> (how ``full`` is computed from a and b, lazy family, writes result?)
_BINARY = {
    "add": ("a + b", "ADD", True),
    "adc": (f"a + b + {cf_source()}", "ADD", True),
    "sub": ("a - b", "SUB", True),
    "sbb": (f"a - b - {cf_source()}", "SUB", True),
    "cmp": ("a - b", "SUB", False),
    "and": ("a & b", "LOGIC", True),
    "or": ("a | b", "LOGIC", True),
    "xor": ("a ^ b", "LOGIC", True),
    "test": ("a & b", "LOGIC", False),
}


@semantics(*_BINARY)
def binary(insn, cpu):
    """``dst OP= src`` with the flags recorded lazily."""
    expr, family, writes = _BINARY[insn.mnemonic]
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    mask = (1 << d.bits) - 1
    if family == "LOGIC":
        record = f"cpu.lf = (LOGIC, {d.bits}, 0, 0, full)"
    else:
        record = f"cpu.lf = ({family}, {d.bits}, a, b, full)"
    result = "full" if family == "LOGIC" else f"(full & {mask:#x})"
    lines = ["r = cpu.r", "lf = cpu.lf" if "lf[" in expr else "", *d.setup, *s.setup,
             f"a = {d.read}", f"b = {s.read}", f"full = {expr}"]
    if writes:
        lines.append(d.write(result))
    lines.append(record)
    return build("\n".join(lines), d.params, s.params)


@semantics("inc", "dec")
def inc_dec(insn, cpu):
    """inc/dec keep CF (SDM Vol.2 INC, DEC); the old CF rides in the lazy record."""
    (dst,) = insn.operands
    d = operand_access(dst, "d")
    sign, family = ("+", "INC") if insn.mnemonic == "inc" else ("-", "DEC")
    body = "\n".join([
        "r = cpu.r", "lf = cpu.lf", *d.setup, f"a = {d.read}", f"full = a {sign} 1",
        d.write(f"(full & {(1 << d.bits) - 1:#x})"),
        f"cpu.lf = ({family}, {d.bits}, a, {cf_source()}, full)",
    ])
    return build(body, d.params)


@semantics("neg")
def neg(insn, cpu):
    """neg = 0 - x: CF set unless x was 0 (SDM Vol.2 NEG)."""
    (dst,) = insn.operands
    d = operand_access(dst, "d")
    body = "\n".join([
        "r = cpu.r", *d.setup, f"b = {d.read}", "full = -b",
        d.write(f"(full & {(1 << d.bits) - 1:#x})"),
        f"cpu.lf = (SUB, {d.bits}, 0, b, full)",
    ])
    return build(body, d.params)


@semantics("not")
def not_(insn, cpu):
    """Ones' complement; no flags change."""
    (dst,) = insn.operands
    d = operand_access(dst, "d")
    body = "\n".join(["r = cpu.r", *d.setup, d.write(f"({d.read} ^ {(1 << d.bits) - 1:#x})")])
    return build(body, d.params)
