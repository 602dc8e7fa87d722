"""Shifts and rotates: rol ror rcl rcr shl sal shr sar, and the double shifts shld shrd.

The count rules are the 80386's (SDM Vol.2 "RCL/RCR/ROL/ROR", "SAL/SAR/SHL/SHR",
"SHLD", "SHRD"; Vol.3 §22 on the 8086 difference):

* the count (CL or imm8) is masked to five bits; a masked count of 0 changes
  neither the operand nor any flag; a memory operand is still read and
  checked for writing as the read-modify-write it is (#GP on a read-only
  segment, #PF on a read-only page, the dirty flag set; nothing stored: see
  the comment above ``_assemble`` for the evidence);
* rcl/rcr rotate through CF over 9 or 17 bits for byte and word operands, so
  they rotate by the masked count mod 9 or mod 17 (rcl al by 9 leaves AL and
  CF alone, though OF is still recomputed);
* rol/ror of bytes and words rotate by the count mod the width, but the flags
  are updated whenever the masked count is not 0;
* shl/shr/sar of bytes and words by 8..31 simply shift everything out.

OF is defined by the SDM only for a count of 1 and AF is undefined for every
shift. For the other counts we give what Intel hardware gives, which is the
count-1 formula applied to the final result (checked against the 80C286 of
the SingleStepTests suite, ``tests/sst``): OF = CF xor the result's sign for
shl, rol and rcl; the xor of the result's two top bits for ror and rcr; the
sign change over the last one-bit step for shr and sar (so 0 for counts above
1). AF = 0. Unicorn (QEMU) agrees except for rcl and rcr, where it takes the
sign change of the whole operand. A double shift of a word by 17..31
(undefined in the SDM) shifts the 48-bit concatenation dest:src:dest, as
Intel processors do and as Unicorn models.

Shifts record their flags lazily (families ``SHL`` and ``SHR`` of
``vmi.cpu.flags``); rotates change only CF and OF, so they merge into the
previous flags and store an ``EXPLICIT`` record.
"""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.flags import SHL, SHR, cf_source
from vmi.cpu.operands import Constant, Immediate
from vmi.cpu.ops import Template, build, semantics
from vmi.cpu.paging import probe_write

_OLD_FLAGS = "lf = cpu.lf\nf = lf[2] if lf[0] == EXPLICIT else arith_flags(lf)"


def _count(op) -> tuple[int | None, str]:
    """The shift count masked to five bits: (value, "") when fixed at decode time,
    else (None, source of an expression reading CL)."""
    if isinstance(op, (Constant, Immediate)):
        return op.value & 0x1F, ""
    return None, "(r[1] & 0x1F)"


# What a shift or rotate of a memory operand by a count that masks to 0 does
# besides reading it (the evidence for ``_assemble``'s check):
#
# * No Intel document says. The SDM (Vol.2 SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR)
#   says only that a count of 0 affects no flags; the Intel386 Programmer's
#   Reference Manual is silent on the bus cycles.
# * The 80C286 of the SingleStepTests suite (``shared/data/sst-80286-real``,
#   the CYCL chunks of every C0, C1, D2, D3 file): of its tests with a memory
#   operand that raised no exception, the 132 whose count & 31 = 0 show the
#   read and **no write bus cycle**, the 2316 others all write. The 286 has no
#   paging, so this says nothing about page rights or the dirty flag.
# * Bochs (cpu/shift8.cc and friends) reads such an operand with
#   ``read_RMW_virtual_*``, a write-intent access: a read-only page (or a
#   read-only segment) faults as a write would and the walk sets the dirty
#   flag, but no data is stored when the count is 0. 86Box's 386 cores check
#   the segment for writing (``SEG_CHECK_WRITE``) before any count test.
#
# vmi does what Bochs does (the brief of issue 18 asks for the write-side
# effects): after the read, ``paging.probe_write`` applies the segment write
# check and, with paging, translates for writing (#PF with W/R = 1 on a
# read-only page, the dirty flag set), and stores nothing, consistent with the
# 80C286's missing bus write. The evidence for the 80386 itself is indirect.
def _assemble(insn, body: list[str], const: int | None, expr: str, *params) -> Template:
    """Wrap ``body`` (which uses ``c``) in the count test: nothing happens for a count
    of 0, except that a memory operand still gets the write check of its
    read-modify-write cycle (see the comment above)."""
    d = params[0]
    lines = ["r = cpu.r", *d.setup, f"a = {d.read}"]
    check = f"PROBE(cpu, d_seg, d_a, {d.bits // 8})" if d.is_memory else ""
    if const is None:
        lines.append(f"c = {expr}")
        lines.append("if c:")
        lines.extend("    " + line for stmt in body for line in stmt.split("\n"))
        if check:
            lines += ["else:", "    " + check]
    elif const:
        lines.append(f"c = {const}")
        lines.extend(body)
    elif check:
        lines.append(check)
    plist = [p.params for p in params]
    return build("\n".join(lines), *plist, PROBE=probe_write)


@semantics("shl", "sal", "shr", "sar")
def shift(insn, cpu):
    """Logical and arithmetic shifts, flags recorded lazily (SDM Vol.2 SAL/SAR/SHL/SHR)."""
    dst, count = insn.operands
    d = operand_access(dst, "d")
    bits = d.bits
    mask = (1 << bits) - 1
    const, expr = _count(count)
    if insn.mnemonic in ("shl", "sal"):
        if const == 1:  # the common shl-by-one: a plain doubling, recorded as SHL
            body = ["full = a << 1", d.write(f"(full & {mask:#x})"),
                    f"cpu.lf = ({SHL}, {bits}, a, 1, full)"]
            return build("\n".join(["r = cpu.r", *d.setup, f"a = {d.read}", *body]), d.params)
        body = ["full = a << c", d.write(f"(full & {mask:#x})"),
                f"cpu.lf = ({SHL}, {bits}, a, c, full)"]
    elif insn.mnemonic == "shr":
        body = ["full = a >> c", d.write("full"), f"cpu.lf = ({SHR}, {bits}, a, c, full)"]
    else:  # sar: shift the sign-extended value; the record keeps it for CF
        sign = 1 << (bits - 1)
        body = [f"a = (a ^ {sign:#x}) - {sign:#x}", "full = a >> c",
                d.write(f"(full & {mask:#x})"), f"cpu.lf = ({SHR}, {bits}, a, c, full)"]
    return _assemble(insn, body, const, expr, d)


@semantics("rol", "ror")
def rotate(insn, cpu):
    """rol/ror: rotate by the count mod the width; CF and OF change, the other
    flags keep their values (SDM Vol.2 RCL/RCR/ROL/ROR, "Flags Affected")."""
    dst, count = insn.operands
    d = operand_access(dst, "d")
    bits = d.bits
    mask = (1 << bits) - 1
    const, expr = _count(count)
    top = bits - 1
    if insn.mnemonic == "rol":
        # CF = the bit rotated into bit 0; OF = CF xor the new sign bit.
        n = "c" if bits == 32 else f"(c & {bits - 1})"
        body = [f"n = {n}", f"res = ((a << n) | (a >> ({bits} - n))) & {mask:#x}",
                _OLD_FLAGS, d.write("res"),
                "cf = res & 1",
                f"cpu.lf = (EXPLICIT, {bits}, (f & 0xFFFFF7FE) | cf | "
                f"(((res >> {top}) ^ cf) << 11), 0, 0)"]
    else:
        # CF = the bit rotated into the sign; OF = xor of the two top bits of the result.
        n = "c" if bits == 32 else f"(c & {bits - 1})"
        body = [f"n = {n}", f"res = ((a >> n) | (a << ({bits} - n))) & {mask:#x}",
                _OLD_FLAGS, d.write("res"),
                f"cf = res >> {top}",
                f"cpu.lf = (EXPLICIT, {bits}, (f & 0xFFFFF7FE) | cf | "
                f"((cf ^ ((res >> {top - 1}) & 1)) << 11), 0, 0)"]
    return _assemble(insn, body, const, expr, d)


@semantics("rcl", "rcr")
def rotate_through_carry(insn, cpu):
    """rcl/rcr rotate the ``bits + 1``-bit value CF:dest (SDM Vol.2 RCL/RCR).

    OF is the SDM's count-1 formula applied to the result for every count:
    MSB(result) xor the new CF for rcl, the xor of the two top bits of the
    result for rcr (for a count of 1 both equal the SDM's "MSB(DEST) xor CF"),
    which is what the 80C286 does (``tests/sst``).

    The rotation is by the masked count mod 9 or 17 for bytes and words, but,
    as for rol and ror, OF is recomputed whenever the masked count is not 0:
    ``rcl al, 9`` leaves AL and CF as they were and sets OF = MSB(AL) xor CF,
    as the 80C286 does (the SDM ties the flags to ``COUNT & COUNTMASK``, not
    to the reduced count; Unicorn leaves OF alone there).
    """
    dst, count = insn.operands
    d = operand_access(dst, "d")
    bits = d.bits
    mask = (1 << bits) - 1
    wide = (1 << (bits + 1)) - 1
    const, expr = _count(count)
    top = bits - 1
    x = f"(({cf_source()}) << {bits}) | a"
    n = "c" if bits == 32 else f"c % {bits + 1}"
    if insn.mnemonic == "rcl":
        rotated = f"((x << n) | (x >> ({bits + 1} - n))) & {wide:#x}"
        overflow = f"((res >> {top}) ^ cf)"
    else:
        rotated = f"((x >> n) | (x << ({bits + 1} - n))) & {wide:#x}"
        overflow = f"(((res >> {top}) ^ (res >> {top - 1})) & 1)"
    body = [_OLD_FLAGS, f"x = {x}", f"n = {n}", f"y = {rotated}", f"res = y & {mask:#x}",
            d.write("res"), f"cf = y >> {bits}",
            f"cpu.lf = (EXPLICIT, {bits}, (f & 0xFFFFF7FE) | cf | ({overflow} << 11), 0, 0)"]
    return _assemble(insn, body, const, expr, d)


@semantics("shld", "shrd")
def double_shift(insn, cpu):
    """shld/shrd shift dest, filling from src (SDM Vol.2 SHLD, SHRD).

    Both work on a wide concatenation: dest:src for 32-bit operands and
    dest:src:dest for 16-bit ones (so counts of 17..31 behave as on Intel
    hardware and in Unicorn). shld records an ``SHL`` whose ``full`` is the
    concatenation shifted and brought back down, with the last bit out of
    dest just above the result; shrd records an ``SHR`` of the concatenation.
    """
    dst, src, count = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    bits = d.bits
    mask = (1 << bits) - 1
    const, expr = _count(count)
    if insn.mnemonic == "shld":
        x = "(a << 32) | b" if bits == 32 else "(a << 32) | (b << 16) | a"
        body = [f"b = {s.read}", f"full = (({x}) << c) >> 32", d.write(f"(full & {mask:#x})"),
                f"cpu.lf = ({SHL}, {bits}, a, c, full)"]
    else:
        x = "(b << 32) | a" if bits == 32 else "(a << 32) | (b << 16) | a"
        body = [f"b = {s.read}", f"x = {x}", "full = x >> c", d.write(f"(full & {mask:#x})"),
                f"cpu.lf = ({SHR}, {bits}, x, c, full)"]
    return _assemble(insn, body, const, expr, d, s)
