"""Decimal arithmetic adjustments: daa das aaa aas aam aad, and salc.

SDM Vol.2 DAA, DAS, AAA, AAS, AAM, AAD (the algorithms are the SDM's
pseudo-code). Flags the SDM leaves undefined get the values Intel hardware
gives, as the 80C286 of the SingleStepTests suite shows in every one of its
tests of these opcodes (``shared/data/sst-80286-real``, files 27, 2F, 37, 3F,
D4, D5; docs/system-model.md "Where Intel says undefined"): the processor
does each adjustment with its 8-bit adder, and the undefined flags are that
addition's.

* daa/das: OF = the overflow of the 8-bit AL + correction (AL - correction),
  the correction being the 0, 6, 0x60 or 0x66 the instruction applied;
* aaa/aas: SF, ZF, PF, OF = the flags of the 8-bit AL + 6 (AL - 6) when the
  instruction adjusts, of AL + 0 when it does not (so OF = 0 then); CF and AF
  are the defined ones;
* aam: CF = OF = AF = 0 (the flags of a logical operation on the new AL);
* aad: CF and AF of the 8-bit addition AL + AH * imm8 that makes the new AL;
  OF follows no rule found in the captures (neither that addition's overflow
  nor any simple function of its operands): vmi gives 0, as Unicorn does.

Unicorn (QEMU) keeps OF, SF, ZF, PF for aaa/aas, gives OF = 0 for daa/das
and the flags of a logical operation for aad; the differential tests mask
these flags.

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
    # OF of the 8-bit addition (subtraction) of the whole correction to AL.
    overflow = ("corr = (al - old) & 0xFF\nov = (old ^ al) & (corr ^ al) & 0x80" if add else
                "corr = (old - al) & 0xFF\nov = (old ^ corr) & (old ^ al) & 0x80")
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
{overflow}
cpu.lf = (EXPLICIT, 8, out | PARITY[al] | (al & 0x80) | (0 if al else 0x40) | (ov << 4), 0, 0)
"""
    return build(body)


@semantics("aaa", "aas")
def ascii_adjust(insn, cpu):
    """Adjust AX after adding (aaa) or subtracting (aas) two unpacked BCD digits:
    when the low digit of AL exceeds 9 or AF is set, AX +/- 0x106 and CF = AF = 1,
    else CF = AF = 0; then AL keeps only its low digit (SDM Vol.2 AAA, AAS, the
    "AX <- AX + 106H" form of the 80386 and later, where a carry out of AL also
    reaches AH)."""
    add = insn.mnemonic == "aaa"
    op = "+" if add else "-"
    # SF, ZF, PF, OF of the 8-bit AL +/- k (k = 6 or 0), as the hardware's adder gives them
    overflow = ("(al ^ t) & (k ^ t) & 0x80" if add else "(al ^ k) & (al ^ t) & 0x80")
    body = f"""
r = cpu.r
{_OLD_FLAGS}
ax = r[0] & 0xFFFF
al = ax & 0xFF
if (ax & 0x0F) > 9 or f & 0x10:
    ax = (ax {op} 0x106) & 0xFFFF
    k, out = 6, 0x11
else:
    k, out = 0, 0
t = (al {op} k) & 0xFF
out |= PARITY[t] | (t & 0x80) | (0 if t else 0x40) | (({overflow}) << 4)
r[0] = (r[0] & 0xFFFF0000) | (ax & 0xFF0F)
cpu.lf = (EXPLICIT, 8, out, 0, 0)
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
    """AL = (AL + AH * imm8) & 0xFF, AH = 0 (SDM Vol.2 AAD). SF, ZF, PF from the new
    AL; CF and AF of the final 8-bit addition, OF = 0 (see the module docstring)."""
    (imm,) = insn.operands
    body = """
r = cpu.r
old = r[0] & 0xFF
prod = (((r[0] >> 8) & 0xFF) * BASE) & 0xFF
al = (old + prod) & 0xFF
r[0] = (r[0] & 0xFFFF0000) | al
f = PARITY[al] | (al & 0x80) | (0 if al else 0x40) | ((old ^ prod ^ al) & 0x10)
cpu.lf = (EXPLICIT, 8, f | (1 if old + prod > 0xFF else 0), 0, 0)
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
