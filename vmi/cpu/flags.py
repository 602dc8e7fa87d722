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

For every family but EXPLICIT, ZF, SF and PF follow from ``full`` masked to
``bits``. The other EFLAGS bits (TF, IF, DF, IOPL, NT, RF, VM, AC, ID) live in
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

MASK = {8: 0xFF, 16: 0xFFFF, 32: 0xFFFFFFFF}
SIGN = {8: 0x80, 16: 0x8000, 32: 0x80000000}

#: PARITY[b] is PF for a result whose low byte is b (set on an even count of ones).
PARITY = tuple(PF if bin(b).count("1") % 2 == 0 else 0 for b in range(256))

CLEAN = (EXPLICIT, 32, 0, 0, 0)


def arith_flags(lf: tuple[int, int, int, int, int]) -> int:
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
    return flags


def get_cf(lf: tuple[int, int, int, int, int]) -> int:
    """CF alone (0 or 1), the flag read most often (adc, sbb, rcl, inc/dec records)."""
    family, bits, a, b, full = lf
    if family == ADD:
        return (full >> bits) & 1
    if family == SUB:
        return 1 if full < 0 else 0
    if family == LOGIC:
        return 0
    if family == EXPLICIT:
        return a & 1
    return b  # INC, DEC keep the old CF in b


def cf_source(lf: str = "lf") -> str:
    """An inline expression for CF of the record in variable ``lf`` (no call in the hot path)."""
    return (f"((({lf}[4] >> {lf}[1]) & 1) if {lf}[0] == 0 else (1 if {lf}[4] < 0 else 0) "
            f"if {lf}[0] == 1 else {lf}[3] if 3 <= {lf}[0] <= 4 else {lf}[2] & 1 "
            f"if {lf}[0] == 5 else 0)")


def get_zf(lf: tuple[int, int, int, int, int]) -> bool:
    if lf[0] == EXPLICIT:
        return bool(lf[2] & ZF)
    return not (lf[4] & MASK[lf[1]])


def get_sf(lf: tuple[int, int, int, int, int]) -> bool:
    if lf[0] == EXPLICIT:
        return bool(lf[2] & SF)
    return bool(lf[4] & SIGN[lf[1]])


def get_of(lf: tuple[int, int, int, int, int]) -> bool:
    if lf[0] == LOGIC:
        return False
    return bool(arith_flags(lf) & OF)


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
def _p(lf): return bool(arith_flags(lf) & PF)
def _np(lf): return not arith_flags(lf) & PF
def _l(lf): return get_sf(lf) != get_of(lf)
def _ge(lf): return get_sf(lf) == get_of(lf)
def _le(lf): return get_zf(lf) or get_sf(lf) != get_of(lf)
def _g(lf): return not get_zf(lf) and get_sf(lf) == get_of(lf)


#: Condition code (low four opcode bits of jcc/setcc) -> test of the lazy record.
CONDITIONS = (_o, _no, _b, _ae, _e, _ne, _be, _a, _s, _ns, _p, _np, _l, _ge, _le, _g)
#: Condition suffix -> code, as the mnemonics spell them.
CONDITION_CODES = {name: code for code, name in enumerate(
    ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"))}
