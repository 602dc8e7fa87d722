"""Real-mode segmentation: the ``rd8``..``wr32`` accessors of a real-mode CPU, and the
loads of segment registers and CS:EIP that far transfers make.

Every data access names a segment register and an offset; the processor adds
the segment base from the descriptor cache and checks the offset against the
cached limit (SDM Vol.3A §3.4.3 "Segment Registers", §5.3 "Limit Checking").
``install_accessors(cpu)`` picks the accessor set that fits the mode in force:

* **protected mode** (CR0.PE, virtual-8086 mode included): descriptor rights,
  expand-down segments, paging and the TLB, by ``vmi.cpu.paging.install``.
* **real mode, flat**: every base 0 and limit 4 GiB (caches left so by a return
  from protected mode). No check can fail: the accessors go straight to memory.
* **real mode, segmented**: the normal case; after RESET every limit is 0xFFFF.
  An access of ``n`` bytes at ``offset`` needs ``offset + n - 1 <= limit``;
  otherwise the processor raises #SS(0) when the segment is SS and #GP(0) for
  CS, DS, ES, FS and GS (SDM Vol.3A §20.1.4, the table of real-address mode
  exceptions, and the "Real-Address Mode Exceptions" section of each
  instruction in Vol.2). So a word at offset 0xFFFF faults instead of wrapping
  to offset 0 as on the 8086 (SDM Vol.3 chapter "Architecture Compatibility",
  section "Segment Wraparound"). The linear address ``base + offset`` wraps at
  4 GiB; real mode cannot page (CR0.PG requires PE).

The real-mode accessors read the lists ``cpu.seg_base`` and ``cpu.seg_limit``
at every access, so a real-mode segment load needs no new accessors (only a
change out of the flat case does, and ``load_segment`` makes it).

**Segment loads and far transfers** (``load_segment``, ``far_jump``, and the
far call, return and IRET helpers of ``vmi.cpu.ops.far``) take the real-mode
path in real and virtual-8086 mode: base = selector << 4, limit and attributes
untouched (SDM Vol.3A §20.1.1). In protected mode they call the functions a
descriptor model registers in ``PROTECTED`` (keys ``load``, ``jump``,
``call``, ``return``, ``iret``; signatures in ``PROTECTED``'s comment); until
one is registered they raise #GP with a message saying what is missing.

Differences from the 80286 (the hardware the SingleStepTests suite was
captured on, see docs/sst.md): the 286 raises #GP (13) for a word at SS:FFFF
as well, where the 386 raises #SS (12); and the 286 drives 24 address lines,
which matters only beyond 16 MiB, never in real mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmi.cpu.errors import GP, SS, CPUException

M32 = 0xFFFFFFFF
#: CR0 bits this module looks at.
CR0_PE = 0x1
CR0_PG = 0x80000000
#: EFLAGS.VM: virtual-8086 mode loads segments the real-mode way (SDM Vol.3A §20.2).
EFLAGS_VM = 0x20000

ES, CS, SS_REG, DS, FS, GS = range(6)

#: Descriptor attribute byte (P=1, S=1, type) that RESET and real-mode loads
#: leave in a data segment's cache: present, writable, accessed (SDM Vol.3A §9.1.1).
REAL_DATA_ATTR = 0x93
#: The same for CS: present, execute/read, accessed.
REAL_CODE_ATTR = 0x9B


def _limit_fault(seg: int) -> CPUException:
    """The exception of an access beyond segment ``seg``'s limit: #SS(0) for the stack
    segment, #GP(0) for the others (SDM Vol.3A §5.3; Vol.2 "Real-Address Mode
    Exceptions")."""
    if seg == SS_REG:
        return CPUException(SS, 0, "stack access beyond the SS limit")
    return CPUException(GP, 0, f"access beyond the limit of segment {seg}")


def is_flat(cpu: Any) -> bool:
    """True when no access can fault or be relocated: every base 0, every limit 4 GiB,
    paging off."""
    if cpu.cr[0] & CR0_PG:
        return False
    return not any(cpu.seg_base) and all(limit == M32 for limit in cpu.seg_limit)


def install_accessors(cpu: Any) -> None:
    """Give ``cpu`` the memory accessors for its current mode.

    Protected mode (CR0.PE, including virtual-8086 mode) is the business of
    ``vmi.cpu.paging.install`` (descriptor rights, expand-down segments, paging and
    the TLB). Real mode cannot page (CR0.PG needs PE, SDM Vol.3A §2.5), so it gets
    either the flat accessors (all bases 0 and limits 4 GiB, as after a return
    from protected mode with flat caches) or the segmented ones.
    """
    if cpu.cr[0] & CR0_PE:
        from vmi.cpu import paging

        paging.install(cpu)
    elif is_flat(cpu):
        _install_flat(cpu)
    else:
        _install_segmented(cpu)


def _install_flat(cpu: Any) -> None:
    mem = cpu.mem
    r8, r16, r32 = mem.read8, mem.read16, mem.read32
    w8, w16, w32 = mem.write8, mem.write16, mem.write32
    cpu.rd8 = lambda seg, off: r8(off)
    cpu.rd16 = lambda seg, off: r16(off)
    cpu.rd32 = lambda seg, off: r32(off)
    cpu.wr8 = lambda seg, off, v: w8(off, v)
    cpu.wr16 = lambda seg, off, v: w16(off, v)
    cpu.wr32 = lambda seg, off, v: w32(off, v)
    cpu.rd8.flat = True  # type: ignore[attr-defined]


def _install_segmented(cpu: Any) -> None:
    """Base + offset with the limit check, paging off (real mode). Each accessor is
    one comparison and one addition on top of the flat path, reading the cached
    base and limit lists at each access; the fault is raised before anything is
    written."""
    mem = cpu.mem
    base, limit = cpu.seg_base, cpu.seg_limit
    r8, r16, r32 = mem.read8, mem.read16, mem.read32
    w8, w16, w32 = mem.write8, mem.write16, mem.write32
    fault = _limit_fault

    def rd8(seg: int, off: int) -> int:
        if off > limit[seg]:
            raise fault(seg)
        return r8((base[seg] + off) & M32)

    def rd16(seg: int, off: int) -> int:
        if off + 1 > limit[seg]:
            raise fault(seg)
        return r16((base[seg] + off) & M32)

    def rd32(seg: int, off: int) -> int:
        if off + 3 > limit[seg]:
            raise fault(seg)
        return r32((base[seg] + off) & M32)

    def wr8(seg: int, off: int, v: int) -> None:
        if off > limit[seg]:
            raise fault(seg)
        w8((base[seg] + off) & M32, v)

    def wr16(seg: int, off: int, v: int) -> None:
        if off + 1 > limit[seg]:
            raise fault(seg)
        w16((base[seg] + off) & M32, v)

    def wr32(seg: int, off: int, v: int) -> None:
        if off + 3 > limit[seg]:
            raise fault(seg)
        w32((base[seg] + off) & M32, v)

    cpu.rd8, cpu.rd16, cpu.rd32 = rd8, rd16, rd32
    cpu.wr8, cpu.wr16, cpu.wr32 = wr8, wr16, wr32


# -- segment register loads ----------------------------------------------------------
#: Protected-mode implementations, registered by the descriptor model:
#: ``load(cpu, seg, selector)``, ``jump(cpu, selector, offset)``,
#: ``call(cpu, selector, offset, size, return_ip)`` (``size`` 2 or 4 bytes per
#: pushed item), ``return(cpu, size, release)`` (``release`` = RET imm16) and
#: ``iret(cpu, size)``. Each checks everything before it changes state.
PROTECTED: dict[str, Callable[..., None]] = {}


def real_mode_loads(cpu: Any) -> bool:
    """True when a segment load just shifts the selector into the base: real mode and
    virtual-8086 mode (SDM Vol.3A §20.1.1, §20.2.1)."""
    return not cpu.cr[0] & CR0_PE or bool(cpu.flags & EFLAGS_VM)


def protected(name: str) -> Callable[..., None]:
    """The registered protected-mode function ``name``, or one raising #GP(0) that
    says it is missing."""
    function = PROTECTED.get(name)
    if function is not None:
        return function

    def missing(cpu: Any, *args: Any) -> None:
        raise CPUException(GP, 0, f"protected-mode {name} (descriptor tables) is not "
                           "implemented")

    return missing


def load_segment(cpu: Any, seg: int, selector: int) -> None:
    """Load segment register ``seg`` with ``selector`` as MOV, POP, LDS.. do.

    Real and virtual-8086 mode: the base becomes ``selector << 4``; the limit and
    attributes in the descriptor cache are left as they are (SDM Vol.3A §20.1.1;
    this is why "unreal mode" works). Protected mode: ``PROTECTED["load"]``.

    Loading CS (far transfers do) forgets the decoded code when the base changes:
    the decode cache is keyed by EIP alone. The interrupt shadow of a load of SS
    (SDM Vol.3A §6.8.3) is the caller's: MOV SS and POP SS set ``cpu.shadow``.
    """
    selector &= 0xFFFF
    if not real_mode_loads(cpu):
        protected("load")(cpu, seg, selector)
        return
    cpu.sreg[seg] = selector
    base = selector << 4
    if cpu.seg_base[seg] != base:
        cpu.seg_base[seg] = base
        if seg == CS:
            cpu.code_context_changed()
        if cpu.cr[0] & CR0_PE or getattr(cpu.rd8, "flat", False):
            # virtual-8086 mode: the protected-mode accessors hold copies of the
            # bases; a non-zero base also ends the real-mode flat fast path.
            install_accessors(cpu)


def far_jump(cpu: Any, selector: int, offset: int) -> None:
    """Load CS:EIP for a far JMP (and the far CALL, RET and IRET helpers), after the
    limit check of the new EIP against the cached CS limit (#GP(0), SDM Vol.2 JMP,
    "Real-Address Mode Exceptions"). Protected mode: ``PROTECTED["jump"]``."""
    if not real_mode_loads(cpu):
        protected("jump")(cpu, selector, offset)
        return
    if offset > cpu.seg_limit[CS]:
        raise CPUException(GP, 0, f"far transfer to {offset:#x} beyond the CS limit")
    load_segment(cpu, CS, selector)
    cpu.eip = offset

