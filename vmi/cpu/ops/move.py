"""Data movement: mov, lea, movzx, movsx, xchg, cmpxchg, xadd, bswap, cbw/cwde,
cwd/cdq, xlat, lahf, sahf (SDM Vol.2 under each mnemonic).

None of these changes EFLAGS except cmpxchg (flags of ``cmp``), xadd (flags
of ``add``) and sahf. Every body does its memory reads and writes before it
touches a register, so a fault leaves the architectural state as it was
(SDM Vol.3A §6.5: faults are restartable).
"""

from __future__ import annotations

from vmi.cpu.access import effective_address, operand_access
from vmi.cpu.flags import MASK
from vmi.cpu.operands import Register
from vmi.cpu.ops import build, raise_invalid, semantics

_SEGMENT_PREFIXES = ("es", "cs", "ss", "ds", "fs", "gs")


@semantics("mov")
def mov(insn, cpu):
    """mov between general registers, memory and immediates, including the
    ``moffs`` forms A0-A3 (the decoder gives those a displacement-only memory
    operand in DS or the override segment).

    Segment, control, debug and test register forms belong to the system model,
    which registers them through ``MOVE_SPECIAL``.
    """
    dst, src = insn.operands
    for op in (dst, src):
        if isinstance(op, Register) and op.kind != "gpr":
            special = MOVE_SPECIAL.get(op.kind)
            if special is None:
                return raise_invalid(f"mov to/from {op.kind} registers is not implemented")
            return special(insn, cpu)
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    body = "\n".join(["r = cpu.r", *s.setup, *d.setup, d.write(s.read)])
    return build(body, d.params, s.params)


#: kind of the non-general register ("seg", "cr", "dr", "tr") -> mov factory.
MOVE_SPECIAL: dict = {}


@semantics("lea")
def lea(insn, cpu):
    """Load the effective address: the offset computed at the address size,
    then truncated or zero-extended to the operand size (SDM Vol.2 LEA, Table 3-54)."""
    dst, src = insn.operands
    d = operand_access(dst, "d")
    ea, params = effective_address(src, "s")
    value = f"({ea}) & 0xFFFF" if d.bits == 16 else ea
    return build("\n".join(["r = cpu.r", d.write(value)]), d.params, params)


@semantics("movzx", "movsx")
def movzx_movsx(insn, cpu):
    """Move a byte or word, zero- or sign-extended to the operand size
    (SDM Vol.2 MOVZX, MOVSX). The source width comes from the form (Eb/Ew)."""
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s")
    value = f"({s.read})"
    if insn.mnemonic == "movsx":
        sign = 1 << (s.bits - 1)
        value = f"(({value} ^ {sign:#x}) - {sign:#x}) & {MASK[d.bits]:#x}"
    body = "\n".join(["r = cpu.r", *s.setup, *d.setup, f"v = {value}", d.write("v")])
    return build(body, d.params, s.params)


@semantics("xchg")
def xchg(insn, cpu):
    """Exchange two operands (86/87 r/m with reg, 91-97 reg with eAX).

    With a memory operand the exchange is always locked on hardware (SDM
    Vol.2 XCHG); one CPU step is atomic here anyway. The memory operand is
    the first one, so it is written (and may fault) before the register.
    """
    first, second = insn.operands
    a = operand_access(first, "a")
    b = operand_access(second, "b", size=a.bits // 8)
    body = "\n".join([
        "r = cpu.r", *a.setup, *b.setup, f"x = {a.read}", f"y = {b.read}",
        a.write("y"), b.write("x"),
    ])
    return build(body, a.params, b.params)


@semantics("cmpxchg")
def cmpxchg(insn, cpu):
    """Compare the accumulator with the destination (flags as ``cmp acc, dst``);
    equal: dst = src; different: acc = dst.

    A memory destination is written in both cases, with its own value when the
    comparison fails, as the processor does so the locked cycle always ends
    in a write (SDM Vol.2 CMPXCHG). That write comes before the accumulator
    changes, so a fault on it leaves every register as it was.
    """
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s")
    acc = operand_access(Register("gpr", 0, d.bits // 8), "c")
    lines = ["r = cpu.r", *d.setup, f"a = {acc.read}", f"b = {d.read}", "full = a - b",
             "if full == 0:", "    " + d.write(s.read), "else:"]
    if d.is_memory:
        lines.append("    " + d.write("b"))
    lines.append("    " + acc.write("b"))
    lines.append(f"cpu.lf = (SUB, {d.bits}, a, b, full)")
    return build("\n".join(lines), d.params, s.params, acc.params)


@semantics("xadd")
def xadd(insn, cpu):
    """Exchange and add: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP, flags of
    ``add`` (SDM Vol.2 XADD).

    With two registers the SDM's order matters when both are the same one
    (the sum wins); with memory the memory write goes first so it can fault
    before the register changes.
    """
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s")
    store_sum = d.write(f"(full & {MASK[d.bits]:#x})")
    store_old = s.write("a")
    writes = [store_sum, store_old] if d.is_memory else [store_old, store_sum]
    body = "\n".join([
        "r = cpu.r", *d.setup, f"a = {d.read}", f"b = {s.read}", "full = a + b", *writes,
        f"cpu.lf = (ADD, {d.bits}, a, b, full)",
    ])
    return build(body, d.params, s.params)


@semantics("bswap")
def bswap(insn, cpu):
    """Reverse the bytes of a 32-bit register (SDM Vol.2 BSWAP).

    With a 16-bit operand size the result is undefined; this model does what
    Unicorn (and current Intel processors) do: the low word becomes zero and
    the upper word is kept.
    """
    (reg,) = insn.operands
    if insn.opsize == 16:
        return build("r = cpu.r\nr[R] = r[R] & 0xFFFF0000", R=reg.index)
    body = """
r = cpu.r
v = r[R]
r[R] = ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)
"""
    return build(body, R=reg.index)


@semantics("cbw", "cwde")
def cbw_cwde(insn, cpu):
    """Sign-extend AL into AX (cbw) or AX into EAX (cwde)."""
    if insn.mnemonic == "cbw":
        body = "r = cpu.r\nr[0] = (r[0] & 0xFFFF0000) | ((((r[0] & 0xFF) ^ 0x80) - 0x80) & 0xFFFF)"
    else:
        body = "r = cpu.r\nr[0] = (((r[0] & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF"
    return build(body)


@semantics("cwd", "cdq")
def cwd_cdq(insn, cpu):
    """Fill DX (cwd) or EDX (cdq) with the sign of AX or EAX."""
    if insn.mnemonic == "cwd":
        body = ("r = cpu.r\n"
                "r[2] = (r[2] & 0xFFFF0000) | (0xFFFF if r[0] & 0x8000 else 0)")
    else:
        body = "r = cpu.r\nr[2] = 0xFFFFFFFF if r[0] & 0x80000000 else 0"
    return build(body)


def segment_of(insn, default: int = 3) -> int:
    """The segment an implicit DS operand uses: the last segment-override
    prefix, else ``default`` (SDM Vol.2 §2.1.1: the last prefix of a group wins)."""
    segment = default
    for name in insn.prefixes:
        if name in _SEGMENT_PREFIXES:
            segment = _SEGMENT_PREFIXES.index(name)
    return segment


@semantics("xlat")
def xlat(insn, cpu):
    """AL = [seg:eBX + zero-extended AL], seg DS unless overridden; the sum is
    taken at the address size (BX at 16 bits), SDM Vol.2 XLAT."""
    mask = MASK[insn.addrsize]
    body = f"""
r = cpu.r
v = cpu.rd8(SEG, (r[3] + (r[0] & 0xFF)) & {mask:#x})
r[0] = (r[0] & 0xFFFFFF00) | v
"""
    return build(body, SEG=segment_of(insn))


@semantics("lahf")
def lahf(insn, cpu):
    """AH = SF:ZF:0:AF:0:PF:1:CF (SDM Vol.2 LAHF)."""
    body = "r = cpu.r\nr[0] = (r[0] & 0xFFFF00FF) | (((arith_flags(cpu.lf) & 0xD5) | 2) << 8)"
    return build(body)


@semantics("sahf")
def sahf(insn, cpu):
    """SF ZF AF PF CF = bits 7 6 4 2 0 of AH; OF is kept (SDM Vol.2 SAHF)."""
    body = ("cpu.lf = (EXPLICIT, 32, (arith_flags(cpu.lf) & 0x800) | ((cpu.r[0] >> 8) & 0xD5),"
            " 0, 0)")
    return build(body)
