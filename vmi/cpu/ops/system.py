"""System instructions: mov to and from control, debug and test registers, the
descriptor-table registers (lgdt lidt lldt ltr sgdt sidt sldt str), the machine
status word (smsw lmsw clts), invlpg, the pointer-validation instructions (lar
lsl verr verw arpl) and sysenter/sysexit (SDM Vol.2 under each mnemonic; Vol.3A
§2.5 control registers, §5.9 privileged instructions, §5.10 pointer validation).

**Privilege** (SDM Vol.3A §5.9): LGDT, LIDT, LLDT, LTR, LMSW, CLTS, INVLPG, MOV
to or from CRn and DRn, and SYSEXIT fault #GP(0) when CPL > 0. In real mode the
CPL is 0. SGDT, SIDT, SLDT, STR and SMSW are not privileged: a deprivileged
kernel can read the real tables' addresses (reference §5 fact 8).

**Real mode**: LLDT, LTR, SLDT, STR, LAR, LSL, VERR, VERW and ARPL are not
recognised in real-address or virtual-8086 mode (#UD); SYSENTER and SYSEXIT
fault #GP(0) there.

**Mode changes**: a CR0 write that changes PE, PG or WP, any CR3 write and a CR4
write that changes PSE or PGE flush the TLB and call ``cpu.mode_changed()``
(which forgets decoded code and reinstalls the memory accessors); INVLPG drops
one page from the TLB and forgets decoded code (its bytes may now be other ones).

The test registers (MOV TRn, 0F 24/0F 26) existed on the 386 and 486 only; this
model, like every processor since the Pentium, raises #UD for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmi.cpu import paging, protected
from vmi.cpu.access import effective_address, operand_access
from vmi.cpu.descriptors import (
    ATTR_UNUSABLE,
    SYS_LDT,
    SYS_TSS16_AVAILABLE,
    SYS_TSS32_AVAILABLE,
    SegmentDescriptor,
    cache_of,
    describe,
    fetch_descriptor,
    is_null,
    selector_error,
    set_busy,
)
from vmi.cpu.errors import GP, NP, UD, CPUException
from vmi.cpu.operands import MemoryOperand, Register
from vmi.cpu.ops import build, semantics
from vmi.cpu.ops.move import MOVE_SPECIAL

M32 = 0xFFFFFFFF

# CR0 bits (SDM Vol.3A §2.5, Figure 2-6).
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 0x10000, 0x40000, 0x20000000, 0x40000000, 0x80000000
CR0_DEFINED = CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | \
    CR0_NW | CR0_CD | CR0_PG
#: CR0 bits whose change alters translation or the mode (reinstall accessors, flush TLB).
CR0_MODE_BITS = CR0_PE | CR0_PG | CR0_WP
# CR4 bits this processor accepts (SDM Vol.3A §2.5, Figure 2-7): VME, PVI, TSD, DE, PSE,
# MCE, PGE, PCE. PAE (bit 5) and the SSE bits are reserved here (no PAE, no SSE in
# CPUID), so setting them faults #GP(0) (Vol.2 MOV CRn). VME, PVI, MCE, PGE and PCE
# are stored and have no other effect in this model.
CR4_DE, CR4_PSE, CR4_PGE = 0x8, 0x10, 0x80
CR4_DEFINED = 0x1 | 0x2 | 0x4 | CR4_DE | CR4_PSE | 0x40 | CR4_PGE | 0x100
CR4_MODE_BITS = CR4_PSE | CR4_PGE | 0x20

#: Source raising #GP(0) at CPL > 0 (real mode has CPL 0; v86 mode CPL 3).
PRIVILEGED = "if cpu.cpl:\n    raise CPUException(13, 0, 'privileged instruction at CPL > 0')"
#: Source raising #UD outside protected mode (or in virtual-8086 mode).
PROTECTED_ONLY = ("if not cpu.cr[0] & 1 or cpu.flags & 0x20000:\n"
                  "    raise CPUException(6, None, 'not recognised in real or v86 mode')")


def _zf_source(test: str) -> str:
    """Statements setting ZF to ``test`` and keeping the other arithmetic flags."""
    return ("f = arith_flags(cpu.lf)\n"
            f"cpu.lf = (EXPLICIT, 32, (f | 0x40) if {test} else (f & ~0x40), 0, 0)")


# -- control registers ---------------------------------------------------------------------
def write_cr(cpu: Any, index: int, value: int) -> None:
    """MOV CRn, r32 (SDM Vol.2 MOV—Move to/from Control Registers; Vol.3A §2.5).

    CR0: PG without PE, or NW without CD, is #GP(0); ET is hardwired to 1 (i486
    and later); undefined bits are ignored. CR2 is stored. CR3 is stored (page
    directory base, PWT, PCD) and flushes the TLB. CR4: reserved bits (PAE
    included: this processor has none) are #GP(0). CR1 and CR5-CR7 are #UD.
    """
    value &= M32
    cr = cpu.cr
    if index == 0:
        value = checked_cr0(value)
        changed = cr[0] ^ value
        cr[0] = value
        if changed & CR0_MODE_BITS:
            paging.flush_tlb(cpu)
            cpu.mode_changed()
    elif index == 2:
        cr[2] = value
    elif index == 3:
        cr[3] = value & 0xFFFFF018
        paging.flush_tlb(cpu)
        cpu.mode_changed()
    elif index == 4:
        if value & ~CR4_DEFINED:
            raise CPUException(GP, 0, f"reserved CR4 bits {value & ~CR4_DEFINED:#x} "
                               "(this processor has no PAE or SSE)")
        changed = cr[4] ^ value
        cr[4] = value
        if changed & CR4_MODE_BITS:
            paging.flush_tlb(cpu)
            cpu.mode_changed()
    else:
        raise CPUException(UD, None, f"there is no CR{index}")


def checked_cr0(value: int) -> int:
    """The CR0 that MOV CR0 stores for ``value``: undefined bits dropped, ET set
    (i486 and later); PG without PE, or NW without CD, is #GP(0). Shared with the VMI
    monitor, which emulates the write on a guest's virtual CR0."""
    value = (value & CR0_DEFINED) | CR0_ET
    if value & CR0_PG and not value & CR0_PE:
        raise CPUException(GP, 0, "CR0.PG set with CR0.PE clear")
    if value & CR0_NW and not value & CR0_CD:
        raise CPUException(GP, 0, "CR0.NW set with CR0.CD clear")
    return value


def read_cr(cpu: Any, index: int) -> int:
    """MOV r32, CRn; CR1 and CR5-CR7 are #UD."""
    if index in (1, 5, 6, 7) or index >= len(cpu.cr):
        raise CPUException(UD, None, f"there is no CR{index}")
    return cpu.cr[index] & M32


def _special_operands(insn: Any, kind: str) -> tuple[bool, int, int]:
    """(to_special, special index, general register index) of a MOV CRn/DRn/TRn."""
    dst, src = insn.operands
    if isinstance(dst, Register) and dst.kind == kind:
        return True, dst.index, src.index
    return False, src.index, dst.index


def mov_cr(insn: Any, cpu: Any) -> Any:
    """MOV to or from a control register: privileged (#GP(0) at CPL > 0)."""
    to_cr, index, gpr = _special_operands(insn, "cr")
    if to_cr:
        body = f"{PRIVILEGED}\nWRITE(cpu, N, cpu.r[G])"
        return build(body, WRITE=write_cr, N=index, G=gpr)
    body = f"{PRIVILEGED}\ncpu.r[G] = READ(cpu, N)"
    return build(body, READ=read_cr, N=index, G=gpr)


def _dr_index(cpu: Any, index: int) -> int:
    """DR4/DR5 alias DR6/DR7 unless CR4.DE is set, which makes them #UD (SDM Vol.3A
    §16.2.2 "Debug Registers DR4 and DR5")."""
    if index in (4, 5):
        if cpu.cr[4] & CR4_DE:
            raise CPUException(UD, None, f"DR{index} with CR4.DE set")
        return index + 2
    return index


def write_dr(cpu: Any, index: int, value: int) -> None:
    """MOV DRn, r32: stored only; breakpoints are not modelled."""
    cpu.dr[_dr_index(cpu, index)] = value & M32


def read_dr(cpu: Any, index: int) -> int:
    return cpu.dr[_dr_index(cpu, index)] & M32


def mov_dr(insn: Any, cpu: Any) -> Any:
    """MOV to or from a debug register: privileged (#GP(0) at CPL > 0)."""
    to_dr, index, gpr = _special_operands(insn, "dr")
    if to_dr:
        return build(f"{PRIVILEGED}\nWRITE(cpu, N, cpu.r[G])", WRITE=write_dr, N=index, G=gpr)
    return build(f"{PRIVILEGED}\ncpu.r[G] = READ(cpu, N)", READ=read_dr, N=index, G=gpr)


def mov_tr(insn: Any, cpu: Any) -> Any:
    """MOV to or from a test register: #UD on every processor since the Pentium."""
    return build("raise CPUException(6, None, 'test registers (mov %trN) do not exist')")


MOVE_SPECIAL["cr"] = mov_cr
MOVE_SPECIAL["dr"] = mov_dr
MOVE_SPECIAL["tr"] = mov_tr


# -- descriptor-table registers ---------------------------------------------------------
def _pseudo_descriptor(insn: Any) -> tuple[str, dict[str, Any]]:
    """Setup source computing ``a`` (limit offset) and ``b`` (base offset) of the
    6-byte operand of LGDT/LIDT/SGDT/SIDT, and its params."""
    (op,) = insn.operands
    ea, params = effective_address(op, "m")
    mask = M32 if op.addrsize == 32 else 0xFFFF
    params["SEG"] = op.segment
    return f"a = {ea}\nb = (a + 2) & {mask:#x}", params


@semantics("lgdt", "lidt")
def lgdt_lidt(insn: Any, cpu: Any) -> Any:
    """Load GDTR/IDTR from a 16-bit limit and a 32-bit base in memory; with a 16-bit
    operand size only 24 bits of the base are used (SDM Vol.2 LGDT/LIDT). Privileged."""
    setup, params = _pseudo_descriptor(insn)
    target = "gdtr" if insn.mnemonic == "lgdt" else "idtr"
    base_mask = M32 if insn.opsize == 32 else 0xFFFFFF
    body = "\n".join([PRIVILEGED, "r = cpu.r", setup, "limit = cpu.rd16(SEG, a)",
                      f"base = cpu.rd32(SEG, b) & {base_mask:#x}",
                      f"cpu.{target}[0] = base", f"cpu.{target}[1] = limit"])
    return build(body, params)


@semantics("sgdt", "sidt")
def sgdt_sidt(insn: Any, cpu: Any) -> Any:
    """Store GDTR/IDTR as limit then base; a 16-bit operand size stores 24 bits of
    base and a zero byte (SDM Vol.2 SGDT/SIDT). Not privileged."""
    setup, params = _pseudo_descriptor(insn)
    source = "gdtr" if insn.mnemonic == "sgdt" else "idtr"
    base_mask = M32 if insn.opsize == 32 else 0xFFFFFF
    body = "\n".join(["r = cpu.r", setup, f"t = cpu.{source}",
                      "cpu.wr16(SEG, a, t[1] & 0xFFFF)",
                      f"cpu.wr32(SEG, b, t[0] & {base_mask:#x})"])
    return build(body, params)


#: Reads the GDT descriptor of a selector (None beyond the limit): ``fetch_descriptor``
#: natively, the guest's own GDT in the VMI monitor.
DescriptorLookup = Callable[[int], SegmentDescriptor | None]


def ldt_descriptor(selector: int, lookup: DescriptorLookup) -> SegmentDescriptor:
    """The descriptor LLDT loads for a non-null ``selector`` (SDM Vol.2 LLDT; Vol.3A
    §3.5.1), read with ``lookup``: TI set, beyond the GDT limit, or not an LDT
    descriptor -> #GP(selector); not present -> #NP(selector)."""
    if selector & 4:
        raise CPUException(GP, selector_error(selector), "LLDT selector points into the LDT")
    desc = lookup(selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector), "LLDT selector beyond the GDT limit")
    if desc.s or desc.type != SYS_LDT:
        raise CPUException(GP, selector_error(selector), f"LLDT of {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def tss_descriptor(selector: int, lookup: DescriptorLookup) -> SegmentDescriptor:
    """The descriptor LTR loads for ``selector`` (SDM Vol.2 LTR; Vol.3A §7.2.4), read
    with ``lookup``: null -> #GP(0); TI set, beyond the GDT limit, or not an
    available TSS (16- or 32-bit) -> #GP(selector); not present -> #NP(selector)."""
    if is_null(selector):
        raise CPUException(GP, 0, "LTR with a null selector")
    if selector & 4:
        raise CPUException(GP, selector_error(selector), "LTR selector points into the LDT")
    desc = lookup(selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector), "LTR selector beyond the GDT limit")
    if desc.s or desc.type not in (SYS_TSS16_AVAILABLE, SYS_TSS32_AVAILABLE):
        raise CPUException(GP, selector_error(selector),
                           f"LTR needs an available TSS: {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def load_ldt(cpu: Any, selector: int) -> None:
    """LLDT (SDM Vol.2 LLDT; Vol.3A §3.5.1): a null selector leaves LDTR unusable;
    else the checks of ``ldt_descriptor`` on the GDT, and LDTR caches the descriptor."""
    selector &= 0xFFFF
    if is_null(selector):
        cpu.ldtr[:] = [selector, 0, 0, ATTR_UNUSABLE]
        return
    desc = ldt_descriptor(selector, lambda s: fetch_descriptor(cpu, s))
    base, limit, attr = cache_of(desc)
    cpu.ldtr[:] = [selector, base, limit, attr]


def load_tr(cpu: Any, selector: int) -> None:
    """LTR (SDM Vol.2 LTR; Vol.3A §7.2.4): the checks of ``tss_descriptor`` on the
    GDT; the descriptor is marked busy in memory and in the cache."""
    selector &= 0xFFFF
    desc = tss_descriptor(selector, lambda s: fetch_descriptor(cpu, s))
    set_busy(cpu, desc)
    base, limit, attr = cache_of(desc)
    cpu.tr[:] = [selector, base, limit, attr | 0x2]


@semantics("lldt", "ltr")
def lldt_ltr(insn: Any, cpu: Any) -> Any:
    """Load LDTR or TR from a 16-bit selector operand (#UD outside protected mode,
    #GP(0) at CPL > 0)."""
    (src,) = insn.operands
    s = operand_access(src, "s", size=2)
    load = load_ldt if insn.mnemonic == "lldt" else load_tr
    body = "\n".join([PROTECTED_ONLY, PRIVILEGED, "r = cpu.r", *s.setup,
                      f"LOAD(cpu, {s.read})"])
    return build(body, s.params, LOAD=load)


def _store_selector_access(insn: Any) -> Any:
    """The destination of SLDT/STR/SMSW: a register at the operand size (the upper
    half zero-filled, as P6 and later do), or a 16-bit memory word."""
    (dst,) = insn.operands
    if isinstance(dst, MemoryOperand):
        return operand_access(dst, "d", size=2)
    return operand_access(dst, "d", size=insn.opsize // 8)


@semantics("sldt", "str")
def sldt_str(insn: Any, cpu: Any) -> Any:
    """Store the LDTR or TR selector (SDM Vol.2 SLDT, STR); not privileged."""
    d = _store_selector_access(insn)
    which = "ldtr" if insn.mnemonic == "sldt" else "tr"
    body = "\n".join([PROTECTED_ONLY, "r = cpu.r", *d.setup,
                      d.write(f"(cpu.{which}[0] & 0xFFFF)")])
    return build(body, d.params)


# -- machine status word ---------------------------------------------------------------------
@semantics("smsw")
def smsw(insn: Any, cpu: Any) -> Any:
    """Store the machine status word: CR0's low 16 bits to memory or a 16-bit
    register; all of CR0 to a 32-bit register (SDM Vol.2 SMSW leaves the high half
    undefined; P6 and later, and QEMU, store CR0). Not privileged."""
    d = _store_selector_access(insn)
    value = "cpu.cr[0]" if d.bits == 32 else "(cpu.cr[0] & 0xFFFF)"
    return build("\n".join(["r = cpu.r", *d.setup, d.write(value)]), d.params)


def load_msw(cpu: Any, value: int) -> None:
    """LMSW: load PE, MP, EM, TS from the operand; PE can be set, not cleared (SDM
    Vol.2 LMSW)."""
    old = cpu.cr[0]
    new = (old & ~0xE) | (value & 0xE) | ((old | value) & CR0_PE)
    cpu.cr[0] = new
    if (old ^ new) & CR0_PE:
        paging.flush_tlb(cpu)
        cpu.mode_changed()


@semantics("lmsw")
def lmsw(insn: Any, cpu: Any) -> Any:
    (src,) = insn.operands
    s = operand_access(src, "s", size=2)
    body = "\n".join([PRIVILEGED, "r = cpu.r", *s.setup, f"LOAD(cpu, {s.read})"])
    return build(body, s.params, LOAD=load_msw)


@semantics("clts")
def clts(insn: Any, cpu: Any) -> Any:
    """Clear CR0.TS (SDM Vol.2 CLTS). Privileged."""
    return build(f"{PRIVILEGED}\ncpu.cr[0] &= ~{CR0_TS}")


@semantics("invlpg")
def invlpg(insn: Any, cpu: Any) -> Any:
    """Invalidate the TLB entries of the page holding the operand's linear address
    (segment base + effective address; no access is made, so no fault but #GP(0)
    at CPL > 0) (SDM Vol.2 INVLPG; Vol.3A §4.10.4.1)."""
    (op,) = insn.operands
    ea, params = effective_address(op, "m")
    body = "\n".join([PRIVILEGED, "r = cpu.r", f"a = {ea}",
                      "INVALIDATE(cpu, (cpu.seg_base[SEG] + a) & 0xFFFFFFFF)",
                      "cpu.forget_code()"])
    return build(body, params, SEG=op.segment, INVALIDATE=paging.invalidate_page)


# -- pointer validation (SDM Vol.3A §5.10; Vol.2 LAR, LSL, VERR, VERW, ARPL) -----------------
#: System descriptor types LAR accepts (Vol.2 LAR, Table 3-55): TSSs, LDT, call and
#: task gates; not interrupt or trap gates.
LAR_SYSTEM_TYPES = frozenset({1, 2, 3, 4, 5, 9, 11, 12})
#: System descriptor types LSL accepts: TSSs and the LDT (they have a limit).
LSL_SYSTEM_TYPES = frozenset({1, 2, 3, 9, 11})


def _visible(cpu: Any, selector: int, system_types: frozenset[int]) -> Any:
    """The descriptor LAR/LSL may report, or None (then ZF = 0): non-null, within
    its table, of an accepted kind, and (unless conforming code) with DPL >= CPL
    and DPL >= RPL (SDM Vol.2 LAR "Operation")."""
    if is_null(selector):
        return None
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        return None
    if not desc.s and desc.type not in system_types:
        return None
    if not desc.conforming and (desc.dpl < cpu.cpl or desc.dpl < selector & 3):
        return None
    return desc


def load_access_rights(cpu: Any, selector: int) -> int | None:
    """LAR: the descriptor's high dword masked to the access-rights bits 0x00F0FF00
    (type, S, DPL, P, AVL, D/B, G; Vol.2 LAR leaves bits 16-19 undefined and
    QEMU stores 0 there), or None for ZF = 0."""
    desc = _visible(cpu, selector & 0xFFFF, LAR_SYSTEM_TYPES)
    return None if desc is None else desc.high & 0x00F0FF00


def load_segment_limit(cpu: Any, selector: int) -> int | None:
    """LSL: the byte-granular limit (G applied), or None for ZF = 0."""
    desc = _visible(cpu, selector & 0xFFFF, LSL_SYSTEM_TYPES)
    return None if desc is None else desc.limit


def verify(cpu: Any, selector: int, write: bool) -> bool:
    """VERR/VERW: whether the segment is readable (code with R, or data) or writable
    (data with W) from CPL and RPL; conforming code skips the privilege test
    (SDM Vol.2 VERR/VERW). System descriptors and null selectors fail."""
    selector &= 0xFFFF
    if is_null(selector):
        return False
    desc = fetch_descriptor(cpu, selector)
    if desc is None or not desc.s:
        return False
    if not desc.conforming and (desc.dpl < cpu.cpl or desc.dpl < selector & 3):
        return False
    return desc.writable if write else desc.readable


@semantics("lar", "lsl")
def lar_lsl(insn: Any, cpu: Any) -> Any:
    """LAR/LSL r, r/m16: ZF = 1 and the register written for a visible descriptor,
    ZF = 0 and the register unchanged otherwise."""
    dst, src = insn.operands
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=2)
    fetch = load_access_rights if insn.mnemonic == "lar" else load_segment_limit
    mask = M32 if d.bits == 32 else 0xFFFF
    body = "\n".join([PROTECTED_ONLY, "r = cpu.r", *s.setup, *d.setup,
                      f"v = FETCH(cpu, {s.read})", "if v is not None:",
                      "    " + d.write(f"(v & {mask:#x})"), _zf_source("v is not None")])
    return build(body, d.params, s.params, FETCH=fetch)


@semantics("verr", "verw")
def verr_verw(insn: Any, cpu: Any) -> Any:
    (src,) = insn.operands
    s = operand_access(src, "s", size=2)
    write = insn.mnemonic == "verw"
    body = "\n".join([PROTECTED_ONLY, "r = cpu.r", *s.setup,
                      f"ok = VERIFY(cpu, {s.read}, {write})", _zf_source("ok")])
    return build(body, s.params, VERIFY=verify)


@semantics("arpl")
def arpl(insn: Any, cpu: Any) -> Any:
    """ARPL r/m16, r16: if the destination's RPL is below the source's, raise it to
    the source's and set ZF, else clear ZF (SDM Vol.2 ARPL; Vol.3A §5.10.4)."""
    dst, src = insn.operands
    d = operand_access(dst, "d", size=2)
    s = operand_access(src, "s", size=2)
    body = "\n".join([
        PROTECTED_ONLY, "r = cpu.r", *d.setup, *s.setup, f"a = {d.read}", f"b = {s.read}",
        "raise_rpl = (a & 3) < (b & 3)", "if raise_rpl:",
        "    " + d.write("((a & 0xFFFC) | (b & 3))"), _zf_source("raise_rpl"),
    ])
    return build(body, d.params, s.params)


# -- fast system calls -------------------------------------------------------------------------
@semantics("sysenter")
def sysenter(insn: Any, cpu: Any) -> Any:
    """SYSENTER (SDM Vol.3A §5.8.7): see ``vmi.cpu.protected.sysenter``."""
    return build("ENTER(cpu)", ENTER=protected.sysenter)


@semantics("sysexit")
def sysexit(insn: Any, cpu: Any) -> Any:
    """SYSEXIT (SDM Vol.3A §5.8.7): see ``vmi.cpu.protected.sysexit``."""
    return build("EXIT(cpu)", EXIT=protected.sysexit)

