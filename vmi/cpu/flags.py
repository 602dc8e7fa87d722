"""EFLAGS, with the six arithmetic flags computed lazily.

An instruction that sets the arithmetic flags records what it did instead of
computing them: ``cpu.lf = (family, bits, a, b, full)``. A flag is derived
only when something reads it (a ``jcc``, ``pushf``, a debugger). Measured on
this machine, eager flags cost about 2x (``reference/oracles-and-speed.md`` §4).

Families and what the record holds:

``ADD``      a + b (+ carry in) = full, unmasked: CF = full >> bits
``SUB``      a - b (- borrow) = full, may be negative: CF = full < 0
``LOGIC``    full = result; CF = OF = AF = 0
``INC/DEC``  a +/- 1 = full; ``b`` holds the carry flag from before (kept)
``EXPLICIT`` ``a`` holds the six flags as EFLAGS bits (rotates, multiplies,
             anything that computes its flags outright)
``SHL``      a left shift (shl/sal, shld): ``full`` holds the result with the
             last bit shifted out just above it, so CF = (full >> bits) & 1
             exactly as for ADD; OF = CF xor the result's sign; AF = bit 4
             of the result
``SHR``      a right shift (shr, sar, shrd): ``a`` is the value shifted (sign
             extended for sar, the wide concatenation for shrd), ``b`` the
             count (1..31), full = a >> b; CF = bit ``b - 1`` of ``a``, OF = the
             sign of ``a >> (b - 1)`` xor the result's sign; AF = 1

For every family but EXPLICIT, ZF, SF and PF follow from ``full`` masked to
``bits`` (the inline ``je``/``jne`` of ``ops/control.py`` relies on it). The
SDM (Vol.2 SAL/SAR/SHL/SHR, SHLD, SHRD) defines OF only for a count of 1 and
leaves AF undefined; the shift families reduce to the SDM's formulas where it
defines them. Elsewhere they give what Intel hardware gives: OF as for a count
of 1 from the last one-bit step (as Unicorn does too), and AF = bit 4 of the
result for left shifts, AF = 1 for right shifts, which is what the 80C286 of
the SingleStepTests suite does for SHL/SAL, SHR and SAR of bytes and words at
every count (``shared/data/sst-80286-real``, files C0, C1, D0-D3: every test,
see docs/system-model.md "Where Intel says undefined"). SHLD and SHRD (no 286
counterpart, no capture here) share the families and so the rule.
The other EFLAGS bits (TF, IF, DF, IOPL, NT, RF, VM, AC, ID) live in
``cpu.flags`` and are always exact.
"""

from __future__ import annotations

CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL, NT, RF, VM, AC, VIF, VIP, ID = 0x3000, 0x4000, 0x10000, 0x20000, 0x40000, 0x80000, \
    0x100000, 0x200000
ARITH = CF | PF | AF | ZF | SF | OF
#: Bits an i486-class CPU implements (bit 1 always reads 1).
IMPLEMENTED = ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | ID
FIXED_ONE = 0x2

ADD, SUB, LOGIC, INC, DEC, EXPLICIT = range(6)
SHL, SHR = 6, 7

MASK = {8: 0xFF, 16: 0xFFFF, 32: 0xFFFFFFFF}
SIGN = {8: 0x80, 16: 0x8000, 32: 0x80000000}

#: PARITY[b] is PF for a result whose low byte is b (set on an even count of ones).
PARITY = tuple(PF if bin(b).count("1") % 2 == 0 else 0 for b in range(256))

CLEAN = (EXPLICIT, 32, 0, 0, 0)

LazyFlags = tuple[int, int, int, int, int]


def arith_flags(lf: LazyFlags) -> int:
    """The six arithmetic flags, as EFLAGS bits, for a lazy record."""
    family, bits, a, b, full = lf
    if family == EXPLICIT:
        return a
    res = full & MASK[bits]
    flags = PARITY[res & 0xFF]
    if res == 0:
        flags |= ZF
    if res & SIGN[bits]:
        flags |= SF
    if family == ADD:
        flags |= (full >> bits) & 1
        flags |= (a ^ b ^ res) & AF
        if (a ^ res) & (b ^ res) & SIGN[bits]:
            flags |= OF
    elif family == SUB:
        if full < 0:
            flags |= CF
        flags |= (a ^ b ^ res) & AF
        if (a ^ b) & (a ^ res) & SIGN[bits]:
            flags |= OF
    elif family == INC:
        flags |= b | ((a ^ res) & AF)
        if res == SIGN[bits]:
            flags |= OF
    elif family == DEC:
        flags |= b | ((a ^ res) & AF)
        if a == SIGN[bits]:
            flags |= OF
    elif family == SHL:
        cf = (full >> bits) & 1
        flags |= cf | (res & AF)  # AF = bit 4 of the result (80C286 captures)
        if cf != (res >> (bits - 1)):
            flags |= OF
    elif family == SHR:
        last = a >> (b - 1)  # the value one step before the end: its bit 0 went to CF
        flags |= (last & 1) | AF  # AF = 1 (80C286 captures)
        if (last ^ full) & SIGN[bits]:
            flags |= OF
    return flags


def get_cf(lf: LazyFlags) -> int:
    """CF alone (0 or 1), the flag read most often (adc, sbb, rcl, inc/dec records)."""
    family, bits, a, b, full = lf
    if family == ADD or family == SHL:
        return (full >> bits) & 1
    if family == SUB:
        return 1 if full < 0 else 0
    if family == LOGIC:
        return 0
    if family == EXPLICIT:
        return a & 1
    if family == SHR:
        return (a >> (b - 1)) & 1
    return b  # INC, DEC keep the old CF in b


def cf_source(lf: str = "lf") -> str:
    """An inline expression for CF of the record in variable ``lf`` (no call in the hot path).

    The families are tested by number, most frequent first (ADD, SUB, INC/DEC,
    EXPLICIT), so adc and sbb after an add or cmp pay for one or two compares.
    """
    return (f"((({lf}[4] >> {lf}[1]) & 1) if {lf}[0] == 0 else (1 if {lf}[4] < 0 else 0) "
            f"if {lf}[0] == 1 else {lf}[3] if 3 <= {lf}[0] <= 4 else {lf}[2] & 1 "
            f"if {lf}[0] == 5 else (({lf}[4] >> {lf}[1]) & 1) if {lf}[0] == 6 "
            f"else (({lf}[2] >> ({lf}[3] - 1)) & 1) if {lf}[0] == 7 else 0)")


def get_zf(lf: LazyFlags) -> bool:
    if lf[0] == EXPLICIT:
        return bool(lf[2] & ZF)
    return not (lf[4] & MASK[lf[1]])


def get_sf(lf: LazyFlags) -> bool:
    if lf[0] == EXPLICIT:
        return bool(lf[2] & SF)
    return bool(lf[4] & SIGN[lf[1]])


def get_of(lf: LazyFlags) -> bool:
    if lf[0] == LOGIC:
        return False
    return bool(arith_flags(lf) & OF)


def get_pf(lf: LazyFlags) -> bool:
    if lf[0] == EXPLICIT:
        return bool(lf[2] & PF)
    return bool(PARITY[lf[4] & 0xFF])


def _less(lf: LazyFlags) -> bool:
    """SF != OF: the signed "less" of jl/setl, the heart of l, ge, le and g.

    After a compare (the SUB family, which cmp, sub, sbb and neg record) SF != OF
    exactly when the true, unbounded signed result is negative; that result is
    ``full`` corrected for the signs of ``a`` and ``b``, so no flag is computed.
    """
    if lf[0] == SUB:
        sign = SIGN[lf[1]]
        return lf[4] - ((lf[2] & sign) << 1) + ((lf[3] & sign) << 1) < 0
    flags = lf[2] if lf[0] == EXPLICIT else arith_flags(lf)
    return bool(flags & SF) != bool(flags & OF)


# -- the sixteen conditions of jcc/setcc (SDM Vol.1 Appendix B) ----------------
# Each takes the lazy record and returns a truth value.
def _o(lf): return get_of(lf)
def _no(lf): return not get_of(lf)
def _b(lf): return get_cf(lf) == 1
def _ae(lf): return get_cf(lf) == 0
def _e(lf): return get_zf(lf)
def _ne(lf): return not get_zf(lf)
def _be(lf): return get_cf(lf) == 1 or get_zf(lf)
def _a(lf): return get_cf(lf) == 0 and not get_zf(lf)
def _s(lf): return get_sf(lf)
def _ns(lf): return not get_sf(lf)
def _p(lf): return get_pf(lf)
def _np(lf): return not get_pf(lf)
def _l(lf): return _less(lf)
def _ge(lf): return not _less(lf)
def _le(lf): return get_zf(lf) or _less(lf)
def _g(lf): return not get_zf(lf) and not _less(lf)


#: Condition code (low four opcode bits of jcc/setcc) -> test of the lazy record.
CONDITIONS = (_o, _no, _b, _ae, _e, _ne, _be, _a, _s, _ns, _p, _np, _l, _ge, _le, _g)
#: Condition suffix -> code, as the mnemonics spell them.
CONDITION_CODES = {name: code for code, name in enumerate(
    ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"))}
