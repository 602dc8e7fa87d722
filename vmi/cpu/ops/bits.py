"""Bit instructions: bt bts btr btc, bsf bsr, and the conditional ones that
test EFLAGS like jcc: the sixteen setcc and the sixteen cmovcc.

SDM Vol.2 BT, BTS, BTR, BTC, BSF, BSR, SETcc, CMOVcc.
"""

from __future__ import annotations

from vmi.cpu.access import effective_address, operand_access
from vmi.cpu.flags import CONDITION_CODES, CONDITIONS, LOGIC, cf_source
from vmi.cpu.operands import Immediate, MemoryOperand
from vmi.cpu.ops import build, semantics

# How bt* changes the bit it tested: (source of the new value of the operand, writes?).
_BIT_OP = {
    "bt": (None, False),
    "bts": ("v | (1 << bit)", True),
    "btr": ("v & ~(1 << bit)", True),
    "btc": ("v ^ (1 << bit)", True),
}


@semantics(*_BIT_OP)
def bit_test(insn, cpu):
    """Copy the selected bit of the operand into CF, then set, clear or
    complement it (bts, btr, btc).

    The bit offset of an immediate, and of a register when the operand is a
    register, is taken modulo the operand width. With a memory operand and a
    register offset the offset is a signed integer that can reach any bit from
    -2**31 to 2**31 - 1 relative to the addressed operand (SDM Vol.2 BT,
    "bit string" addressing; Vol.1 §3.4.1.1): the processor reads the
    operand-sized word at ``address + (offset >> 5) * 4`` (``>> 4, * 2`` for
    16-bit operands; the shift is arithmetic) and tests bit ``offset & 31``
    (``& 15``) of it. The address wraps at the address size.

    CF is the only flag with a defined result; ZF is unaffected and OF, SF, AF,
    PF are undefined (the SDM). We leave all but CF as they were, which is the
    80386's behaviour for ZF and what Unicorn does with the others.
    """
    dst, off = insn.operands
    new, writes = _BIT_OP[insn.mnemonic]
    bits = insn.opsize
    flags = ["lf = cpu.lf", "f = lf[2] if lf[0] == EXPLICIT else arith_flags(lf)",
             f"cpu.lf = (EXPLICIT, {bits}, (f & 0xFFFFFFFE) | ((v >> bit) & 1), 0, 0)"]
    if isinstance(dst, MemoryOperand) and not isinstance(off, Immediate):
        o = operand_access(off, "o")
        ea, params = effective_address(dst, "d")
        sign = 1 << (bits - 1)
        shift, scale = (5, 4) if bits == 32 else (4, 2)
        amask = 0xFFFFFFFF if dst.addrsize == 32 else 0xFFFF
        lines = [
            "r = cpu.r", f"n = ({o.read} ^ {sign:#x}) - {sign:#x}",
            f"d_a = (({ea}) + ((n >> {shift}) * {scale})) & {amask:#x}",
            f"bit = n & {bits - 1}", f"v = cpu.rd{bits}(d_seg, d_a)",
        ]
        if writes:
            lines.append(f"cpu.wr{bits}(d_seg, d_a, {new})")
        return build("\n".join(lines + flags), params, o.params, d_seg=dst.segment)
    d = operand_access(dst, "d")
    o = operand_access(off, "o", size=bits // 8)
    if isinstance(off, Immediate):
        bit_source = str(off.value & (bits - 1))
        oparams = {}
    else:
        bit_source = f"{o.read} & {bits - 1}"
        oparams = o.params
    lines = ["r = cpu.r", *d.setup, f"bit = {bit_source}", f"v = {d.read}"]
    if writes:
        lines.append(d.write(f"({new})"))
    return build("\n".join(lines + flags), d.params, oparams)


@semantics("bsf", "bsr")
def bit_scan(insn, cpu):
    """Index of the lowest (bsf) or highest (bsr) set bit of the source.

    A zero source sets ZF and leaves the destination unchanged (the SDM says
    "undefined"; every Intel and AMD processor, and Unicorn, keep it). CF, OF,
    SF, AF and PF are undefined; we give what Unicorn gives, the flags of a
    logical operation on the source (CF = OF = AF = 0, SF and PF of the
    source), so the record is a lazy ``LOGIC`` of the source, whose ZF is
    exactly "the source was zero".
    """
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    index = "(v & -v).bit_length() - 1" if insn.mnemonic == "bsf" else "v.bit_length() - 1"
    body = "\n".join([
        "r = cpu.r", *s.setup, f"v = {s.read}", "if v:",
        "    " + d.write(f"({index})"),
        f"cpu.lf = ({LOGIC}, {d.bits}, 0, 0, v)",
    ])
    return build(body, d.params, s.params)


def _condition_source(code: int) -> str | None:
    """An inline truth expression over ``lf`` for the cheap conditions, else None."""
    if code in (2, 3):  # b / ae: CF
        return f"{cf_source()}" if code == 2 else f"not {cf_source()}"
    if code in (4, 5):  # e / ne: ZF
        zf = "((lf[2] & 0x40) if lf[0] == EXPLICIT else not (lf[4] & MASK[lf[1]]))"
        return zf if code == 4 else f"not {zf}"
    return None


@semantics(*("set" + cc for cc in CONDITION_CODES))
def setcc(insn, cpu):
    """Store 1 in the byte operand when the condition holds, else 0 (SDM Vol.2 SETcc,
    conditions per Vol.1 Appendix B); no flags change."""
    (dst,) = insn.operands
    d = operand_access(dst, "d", size=1)
    code = CONDITION_CODES[insn.mnemonic[3:]]
    test = _condition_source(code)
    if test is None:
        body = "\n".join(["r = cpu.r", *d.setup, d.write("(1 if COND(cpu.lf) else 0)")])
        return build(body, d.params, COND=CONDITIONS[code])
    body = "\n".join(["r = cpu.r", "lf = cpu.lf", *d.setup, d.write(f"(1 if {test} else 0)")])
    return build(body, d.params)


@semantics(*("cmov" + cc for cc in CONDITION_CODES))
def cmovcc(insn, cpu):
    """Move the source into the destination register when the condition holds
    (SDM Vol.2 CMOVcc, conditions per Vol.1 Appendix B); no flags change.

    The source is read whatever the condition: a memory source is fetched, and
    its #GP, #SS or #PF taken, even when nothing is moved (SDM Vol.2 CMOVcc,
    Operation: ``temp <- SRC`` comes first). When the condition is false the
    destination keeps its value, all 32 bits of it; only in 64-bit mode does a
    32-bit CMOVcc clear the upper half of the register regardless, which a
    32-bit processor has no counterpart of.
    """
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    code = CONDITION_CODES[insn.mnemonic[4:]]
    test = _condition_source(code)
    read = ["r = cpu.r", *s.setup, f"v = {s.read}"]
    if test is None:
        body = "\n".join([*read, "if COND(cpu.lf):", "    " + d.write("v")])
        return build(body, d.params, s.params, COND=CONDITIONS[code])
    body = "\n".join([*read, "lf = cpu.lf", f"if {test}:", "    " + d.write("v")])
    return build(body, d.params, s.params)
