"""Decimal arithmetic adjustments: daa das aaa aas aam aad, and salc.

SDM Vol.2 DAA, DAS, AAA, AAS, AAM, AAD (the algorithms are the SDM's
pseudo-code). Flags the SDM leaves undefined get the values Unicorn (QEMU)
gives, so a differential test can hold them to it:

* daa/das: OF = 0;
* aaa/aas: OF, SF, ZF, PF keep their values;
* aam/aad: the flags of a logical operation on the new AL (CF = OF = AF = 0).

``salc`` (D6, undocumented until the SDM listed it as reserved) sets AL to
0xFF when CF is set and to 0 otherwise, changing no flags.
"""

from __future__ import annotations

from vmi.cpu.errors import DE
from vmi.cpu.flags import cf_source
from vmi.cpu.ops import build, semantics

_OLD_FLAGS = "lf = cpu.lf\nf = lf[2] if lf[0] == EXPLICIT else arith_flags(lf)"


@semantics("daa", "das")
def decimal_adjust(insn, cpu):
    """Adjust AL after adding (daa) or subtracting (das) two packed BCD bytes.

    The low digit is corrected first (by 6, setting AF, when it exceeds 9 or AF
    was set), then the high digit (by 0x60, setting CF, when the original AL
    exceeded 0x99 or CF was set). For das the borrow of the first correction
    also sets CF (SDM Vol.2 DAS); for daa the second step decides CF alone.
    """
    add = insn.mnemonic == "daa"
    op = "+" if add else "-"
    # daa: with AL <= 0x99 and CF clear the +6 cannot carry, so CF is the second step's.
    first_cf = "0" if add else "cf | (1 if old < 6 else 0)"
    body = f"""
r = cpu.r
{_OLD_FLAGS}
cf = f & 1
old = al = r[0] & 0xFF
out = 0
if (al & 0x0F) > 9 or f & 0x10:
    al = (al {op} 6) & 0xFF
    out = 0x10 | ({first_cf})
if old > 0x99 or cf:
    al = (al {op} 0x60) & 0xFF
    out |= 1
r[0] = (r[0] & 0xFFFFFF00) | al
cpu.lf = (EXPLICIT, 8, out | PARITY[al] | (al & 0x80) | (0 if al else 0x40), 0, 0)
"""
    return build(body)


@semantics("aaa", "aas")
def ascii_adjust(insn, cpu):
    """Adjust AX after adding (aaa) or subtracting (aas) two unpacked BCD digits:
    when the low digit of AL exceeds 9 or AF is set, AX +/- 0x106 and CF = AF = 1,
    else CF = AF = 0; then AL keeps only its low digit (SDM Vol.2 AAA, AAS, the
    "AX <- AX + 106H" form of the 80386 and later, where a carry out of AL also
    reaches AH)."""
    op = "+" if insn.mnemonic == "aaa" else "-"
    body = f"""
r = cpu.r
{_OLD_FLAGS}
ax = r[0] & 0xFFFF
if (ax & 0x0F) > 9 or f & 0x10:
    ax = (ax {op} 0x106) & 0xFFFF
    f |= 0x11
else:
    f &= ~0x11
r[0] = (r[0] & 0xFFFF0000) | (ax & 0xFF0F)
cpu.lf = (EXPLICIT, 8, f, 0, 0)
"""
    return build(body)


@semantics("aam")
def aam(insn, cpu):
    """AH = AL / imm8, AL = AL mod imm8 (imm8 is 10 in the documented encoding);
    #DE when imm8 is 0 (SDM Vol.2 AAM). SF, ZF, PF from the new AL."""
    (imm,) = insn.operands
    base = imm.value & 0xFF
    if base == 0:
        return build("raise CPUException(DE, None, 'aam with a zero base')", DE=DE)
    body = """
r = cpu.r
al = r[0] & 0xFF
q, al = divmod(al, BASE)
r[0] = (r[0] & 0xFFFF0000) | (q << 8) | al
cpu.lf = (LOGIC, 8, 0, 0, al)
"""
    return build(body, BASE=base)


@semantics("aad")
def aad(insn, cpu):
    """AL = (AL + AH * imm8) & 0xFF, AH = 0 (SDM Vol.2 AAD). SF, ZF, PF from the new AL."""
    (imm,) = insn.operands
    body = """
r = cpu.r
al = ((r[0] & 0xFF) + ((r[0] >> 8) & 0xFF) * BASE) & 0xFF
r[0] = (r[0] & 0xFFFF0000) | al
cpu.lf = (LOGIC, 8, 0, 0, al)
"""
    return build(body, BASE=imm.value & 0xFF)


@semantics("salc")
def salc(insn, cpu):
    """AL = 0xFF if CF else 0 (set AL from carry); flags unchanged."""
    body = f"""
r = cpu.r
lf = cpu.lf
r[0] = (r[0] & 0xFFFFFF00) | (0xFF if {cf_source()} else 0)
"""
    return build(body)
