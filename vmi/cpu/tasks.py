"""Hardware task switching (SDM Vol.3A chapter 7, "Task Management"; Vol.2 JMP, CALL,
IRET "TASK-RETURN", INT n "TASK-GATE").

A task switch is started by JMP or CALL naming a TSS descriptor or a task gate
(``far_transfer_to_task``), by an interrupt or exception whose IDT entry is a
task gate (``deliver_through_task_gate``), or by IRET with EFLAGS.NT = 1, which
returns to the task named by the current TSS's previous-task link
(``task_return``). ``switch_tasks`` does the switch itself, the steps of §7.3:

1. (the caller) the privilege, presence and busy checks of the TSS descriptor or
   task gate;
2. the new TSS limit: at least 0x67 for a 32-bit TSS (types 9/11), 0x2B for a
   16-bit one (types 1/3), else #TS(new TSS); the current TSS must hold the
   state it saves (limit 0x5F / 0x29), else #TS(current TSS);
3. the new task's image is read and every page the switch writes is probed
   (a #PF here still belongs to the old task);
4. the state of the current task (EIP, EFLAGS, general and segment registers) is
   saved in the current TSS; IRET saves EFLAGS with NT = 0;
5. busy bits and nesting (Table 7-2): JMP and IRET clear the old TSS's busy bit,
   JMP, CALL and interrupts set the new one's (IRET finds it set); CALL and
   interrupts write the old TR selector in the new TSS's link field and set NT
   in the new task's EFLAGS;
6. **commit**: TR is loaded (busy), CR0.TS is set, CR3 is loaded from a 32-bit TSS
   when paging is on, EFLAGS, EIP and the general registers from the TSS, the
   segment selectors without their descriptors; the local breakpoint enables of
   DR7 (L0-L3, LE) are cleared (§17.2.4);
7. LDTR and the segment registers are loaded with their checks, in the new task:
   LDTR (TI set, beyond the GDT, not an LDT, or not present: #TS(LDT)), SS,
   DS, ES, FS, GS, then CS (the order Bochs uses; Table 7-1 notes the order is
   model specific). A fault there is raised in the new task's context: its
   saved EIP is the new task's, and the instruction that switched has retired
   (the exception carries ``trap = True`` and ``new_task = True``).
8. The new EIP against the CS limit (#GP(0); #GP(EXT) for an interrupt), the
   error code of an exception delivered through a task gate pushed on the new
   task's stack (dword through a 32-bit TSS, word through a 16-bit one; #SS(EXT)
   when it does not fit), and, when the new 32-bit TSS has its T bit set, a
   debug trap (#DB with DR6.BT) before the new task's first instruction.

A task switch to a 16-bit TSS loads EIP and EFLAGS from 16-bit fields (the upper
halves become 0) and the general registers as ``0xFFFF0000 | word`` (§7.6: "the
upper 16 bits of the registers are modified and not maintained"; Bochs and QEMU
agree on this value); FS, GS and CR3 are not in a 16-bit TSS (FS and GS become
null, CR3 is kept). A 32-bit EFLAGS image with VM = 1 enters virtual-8086 mode
(segments loaded the real-mode way, CPL 3).
"""

from __future__ import annotations

from typing import Any

from vmi.cpu import flags as fl
from vmi.cpu import paging, protected
from vmi.cpu.descriptors import (
    ATTR_UNUSABLE,
    SYS_LDT,
    SYS_TSS16_AVAILABLE,
    SYS_TSS16_BUSY,
    SYS_TSS32_AVAILABLE,
    SYS_TSS32_BUSY,
    SegmentDescriptor,
    cache_of,
    describe,
    fetch_descriptor,
    is_null,
    selector_error,
    set_busy,
)
from vmi.cpu.errors import DB, GP, NP, SS, TS, CPUException

M32 = 0xFFFFFFFF
ES, CS, SS_REG, DS, FS, GS = range(6)

#: What started a task switch (SDM Vol.3A Table 7-2 tells them apart).
JMP, CALL, IRET, INTERRUPT = "jmp", "call", "iret", "interrupt"

#: 32-bit TSS fields (SDM Vol.3A §7.2.1, Figure 7-2).
TSS32_LINK, TSS32_CR3, TSS32_EIP, TSS32_EFLAGS = 0x00, 0x1C, 0x20, 0x24
TSS32_REGS, TSS32_SEGS, TSS32_LDT, TSS32_TRAP = 0x28, 0x48, 0x60, 0x64
#: 16-bit TSS fields (SDM Vol.3A §7.6, Figure 7-10): IP, FLAGS, AX..DI, ES CS SS DS, LDT.
TSS16_IP, TSS16_FLAGS, TSS16_REGS, TSS16_SEGS, TSS16_LDT = 0x0E, 0x10, 0x12, 0x22, 0x2A
#: Smallest limits a new TSS may have (§7.2.2: "greater than or equal to 67H"; 2BH
#: for a 16-bit TSS, Table 7-1 "44 (for 16-bit TSS)").
MIN_LIMIT = {32: 0x67, 16: 0x2B}
#: The last byte the processor writes when it saves a task's state.
SAVE_END = {32: 0x5F, 16: 0x29}
#: DR7 local breakpoint enables L0-L3 and LE, cleared by a task switch (§17.2.4).
DR7_LOCAL = 0x155
#: DR6.BT: the debug trap came from the TSS T flag (§17.2.3).
DR6_BT = 0x8000
CR0_TS, CR0_PG = 0x8, 0x80000000


def is_tss(desc: SegmentDescriptor) -> bool:
    """A 16- or 32-bit TSS descriptor, available or busy (Table 3-2 types 1, 3, 9, 11)."""
    return not desc.s and desc.type in (SYS_TSS16_AVAILABLE, SYS_TSS16_BUSY,
                                        SYS_TSS32_AVAILABLE, SYS_TSS32_BUSY)


def is_busy(desc: SegmentDescriptor) -> bool:
    return is_tss(desc) and bool(desc.type & 2)


def _tss_bits(attr_type: int) -> int:
    return 32 if attr_type & 8 else 16


def _new_task_fault(exc: CPUException) -> CPUException:
    """Mark a fault raised after the commit point: it belongs to the new task (its
    EIP is the new task's; the switching instruction has retired)."""
    exc.trap = True  # type: ignore[attr-defined]
    exc.new_task = True  # type: ignore[attr-defined]
    return exc


# -- entry points ---------------------------------------------------------------------------
def far_transfer_to_task(cpu: Any, selector: int, desc: SegmentDescriptor, source: str) -> None:
    """JMP or CALL (``source``) to a TSS descriptor or a task gate whose DPL, RPL and
    presence ``protected._check_system_target`` has checked (SDM Vol.2 JMP/CALL
    "TASK-GATE", "TASK-STATE-SEGMENT"). A task gate's TSS selector must be a GDT
    selector within its limit naming an available, present TSS (#GP(TSS selector),
    #NP(TSS selector)); a TSS named directly must be in the GDT too (#GP)."""
    what = f"far {source}"
    if desc.type == 5:  # a task gate
        tss_selector = (desc.low >> 16) & 0xFFFF
        tss = _gdt_tss(cpu, tss_selector, 0, GP, f"{what} through task gate {selector:#x}")
        if is_busy(tss):
            raise CPUException(GP, selector_error(tss_selector), f"{what} through task gate "
                               f"{selector:#x} to a busy TSS: {describe(tss)}")
        if not tss.present:
            raise CPUException(NP, selector_error(tss_selector), f"not present: {describe(tss)}")
        selector, desc = tss_selector, tss
    elif selector & 4:
        raise CPUException(GP, selector_error(selector), f"{what} to a TSS in the LDT")
    switch_tasks(cpu, selector, desc, source, 0)


def _gdt_tss(cpu: Any, selector: int, ext: int, vector: int, what: str) -> SegmentDescriptor:
    """The TSS descriptor a task gate or back link names: TI set, beyond the GDT limit
    or not a TSS -> ``vector``(selector + EXT)."""
    desc = None if selector & 4 else fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(vector, selector_error(selector, ext), f"{what}: TSS selector "
                           f"{selector:#x} is not a GDT selector within the limit")
    if not is_tss(desc):
        raise CPUException(vector, selector_error(selector, ext),
                           f"{what}: {describe(desc)} is not a TSS")
    return desc


def deliver_through_task_gate(cpu: Any, vector: int, tss_selector: int,
                              error_code: int | None, ext: int) -> None:
    """An interrupt or exception whose IDT entry is a task gate (SDM Vol.2 INT n
    "TASK-GATE"; Vol.3A §6.11.1, §7.3): the TSS selector must be a GDT selector
    within its limit naming an available TSS (#GP(TSS selector, EXT)) that is
    present (#NP(TSS selector, EXT)); the switch nests (link, NT, busy), and
    ``error_code`` (None when the event pushes none) goes on the new task's stack.
    The gate's own checks (DPL for INT n, present) are the caller's."""
    what = f"vector {vector:#x} through a task gate"
    tss = _gdt_tss(cpu, tss_selector, ext, GP, what)
    if is_busy(tss):
        raise CPUException(GP, selector_error(tss_selector, ext),
                           f"{what} to a busy TSS: {describe(tss)}")
    if not tss.present:
        raise CPUException(NP, selector_error(tss_selector, ext), f"not present: {describe(tss)}")
    switch_tasks(cpu, tss_selector, tss, INTERRUPT, ext, error_code=error_code)


def task_return(cpu: Any) -> None:
    """IRET with EFLAGS.NT = 1 (SDM Vol.2 IRET "TASK-RETURN"; §7.3): the previous-task
    link at offset 0 of the current TSS must be a GDT selector within the limit
    naming a busy TSS (#TS(link)) that is present (#NP(link)); then the switch,
    which clears the current task's busy bit and saves its EFLAGS with NT = 0."""
    link = paging.read_linear(cpu, cpu.tr[1], 2, user=False)
    desc = _gdt_tss(cpu, link, 0, TS, "IRET with NT=1, previous-task link")
    if not is_busy(desc):
        raise CPUException(TS, selector_error(link), "IRET with NT=1: previous-task link "
                           f"does not name a busy TSS: {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(link), f"not present: {describe(desc)}")
    switch_tasks(cpu, link, desc, IRET, 0)


# -- the switch -------------------------------------------------------------------------------
def _read_image(cpu: Any, base: int, bits: int) -> dict[str, Any]:
    """The new task's state from its TSS (supervisor reads; may #PF)."""
    def rd(offset: int, size: int) -> int:
        return paging.read_linear(cpu, (base + offset) & M32, size, user=False)

    if bits == 32:
        return {
            "cr3": rd(TSS32_CR3, 4), "eip": rd(TSS32_EIP, 4), "eflags": rd(TSS32_EFLAGS, 4),
            "regs": [rd(TSS32_REGS + 4 * i, 4) for i in range(8)],
            "segs": [rd(TSS32_SEGS + 4 * i, 2) for i in range(6)],
            "ldt": rd(TSS32_LDT, 2), "trap": rd(TSS32_TRAP, 2) & 1,
        }
    return {
        "cr3": None, "eip": rd(TSS16_IP, 2), "eflags": rd(TSS16_FLAGS, 2),
        "regs": [0xFFFF0000 | rd(TSS16_REGS + 2 * i, 2) for i in range(8)],
        "segs": [rd(TSS16_SEGS + 2 * i, 2) for i in range(4)] + [0, 0],
        "ldt": rd(TSS16_LDT, 2), "trap": 0,
    }


def _probe_write(cpu: Any, linear: int, size: int) -> None:
    """Raise the #PF a supervisor write of ``size`` bytes at ``linear`` would raise,
    writing nothing (every write of the switch is probed before the first one)."""
    if cpu.cr[0] & CR0_PG:
        paging.translate(cpu, linear & M32, True, False)
        paging.translate(cpu, (linear + size - 1) & M32, True, False)


def _save_state(cpu: Any, base: int, bits: int, eflags: int) -> None:
    """Store the current task's EIP, EFLAGS, general and segment registers in its TSS
    (§7.3 step 7; §7.6 for the 16-bit format)."""
    def wr(offset: int, size: int, value: int) -> None:
        paging.write_linear(cpu, (base + offset) & M32, size, value & ((1 << 8 * size) - 1),
                            user=False)

    if bits == 32:
        wr(TSS32_EIP, 4, cpu.eip)
        wr(TSS32_EFLAGS, 4, eflags)
        for i in range(8):
            wr(TSS32_REGS + 4 * i, 4, cpu.r[i])
        for i in range(6):
            wr(TSS32_SEGS + 4 * i, 2, cpu.sreg[i])
    else:
        wr(TSS16_IP, 2, cpu.eip)
        wr(TSS16_FLAGS, 2, eflags)
        for i in range(8):
            wr(TSS16_REGS + 2 * i, 2, cpu.r[i])
        for i in range(4):
            wr(TSS16_SEGS + 2 * i, 2, cpu.sreg[i])


def switch_tasks(cpu: Any, selector: int, desc: SegmentDescriptor, source: str, ext: int,
                 *, error_code: int | None = None) -> None:
    """Switch from the current task to the one of TSS descriptor ``desc`` (GDT
    ``selector``), started by ``source`` (JMP, CALL, IRET or INTERRUPT); ``ext`` is
    the EXT bit of the error codes of faults it raises. See the module docstring
    for the steps and their faults."""
    new_bits = _tss_bits(desc.type)
    if desc.limit < MIN_LIMIT[new_bits]:
        raise CPUException(TS, selector_error(selector, ext), f"new TSS {selector:#x} limit "
                           f"{desc.limit:#x} below {MIN_LIMIT[new_bits]:#x}")
    old_selector, old_base, old_limit, old_attr = cpu.tr
    old_bits = _tss_bits(old_attr)
    if old_attr & ATTR_UNUSABLE or old_limit < SAVE_END[old_bits]:
        raise CPUException(TS, selector_error(old_selector, ext), f"current TSS "
                           f"{old_selector:#x} (limit {old_limit:#x}) cannot hold the "
                           "state of the task it leaves")
    image = _read_image(cpu, desc.base, new_bits)
    old_desc = None if old_selector & 4 else fetch_descriptor(cpu, old_selector)
    nesting = source in (CALL, INTERRUPT)
    # Probe every write first: a #PF before the commit point belongs to the old task.
    save_start = TSS32_EIP if old_bits == 32 else TSS16_IP
    _probe_write(cpu, old_base + save_start, SAVE_END[old_bits] + 1 - save_start)
    if nesting:
        _probe_write(cpu, desc.base, 2)
    if source in (JMP, IRET) and old_desc is not None and is_tss(old_desc):
        _probe_write(cpu, old_desc.address + 5, 1)
    if source != IRET:
        _probe_write(cpu, desc.address + 5, 1)

    # Save the old task (§7.3 step 7), then the busy bits and the link (Table 7-2).
    old_eflags = cpu.eflags
    if source == IRET:
        old_eflags &= ~fl.NT
    _save_state(cpu, old_base, old_bits, old_eflags)
    if source in (JMP, IRET) and old_desc is not None and is_tss(old_desc):
        paging.write_linear(cpu, (old_desc.address + 5) & M32, 1,
                            ((old_desc.high >> 8) & 0xFF) & ~2, user=False)
    new_eflags = image["eflags"]
    if nesting:
        paging.write_linear(cpu, desc.base, 2, old_selector, user=False)
        new_eflags |= fl.NT
    if source != IRET:
        set_busy(cpu, desc)

    # Commit point: from here on the new task is current (§7.3 steps 8-10).
    base, limit, attr = cache_of(desc)
    cpu.tr[:] = [selector & 0xFFFF, base, limit, attr | 2]
    cpu.cr[0] |= CR0_TS
    if image["cr3"] is not None and cpu.cr[0] & CR0_PG:
        cpu.cr[3] = image["cr3"] & 0xFFFFF018
        paging.flush_tlb(cpu)
    cpu.dr[7] &= ~DR7_LOCAL
    cpu.eflags = new_eflags
    for i, value in enumerate(image["regs"]):
        cpu.r[i] = value & M32
    cpu.eip = image["eip"] & M32
    segs = image["segs"]
    v86 = bool(cpu.flags & fl.VM)
    for seg in (ES, DS, FS, GS):  # unusable until their checks pass (step 7 below)
        protected._null_cache(cpu, seg, segs[seg])
    cpu.sreg[CS], cpu.sreg[SS_REG] = segs[CS], segs[SS_REG]
    cpu.cpl = 3 if v86 else segs[CS] & 3
    cpu.shadow = False
    try:
        _load_ldt(cpu, image["ldt"], ext)
        if v86:
            for seg in range(6):
                protected._v86_segment(cpu, seg, segs[seg])
        else:
            _load_task_segments(cpu, segs, ext)
        protected.refresh(cpu)
        if cpu.eip > cpu.seg_limit[CS]:
            raise CPUException(GP, ext if source == INTERRUPT else 0,
                               f"new task's EIP {cpu.eip:#x} beyond the CS limit "
                               f"{cpu.seg_limit[CS]:#x}")
        if error_code is not None:
            _push_error_code(cpu, error_code, new_bits, ext)
    except CPUException as exc:
        raise _new_task_fault(exc) from None
    finally:
        # CR3, the CS base, EFLAGS.VM and the segment caches may all have changed.
        protected.refresh(cpu)
        cpu.code_context_changed()
    if image["trap"]:
        cpu.dr[6] |= DR6_BT
        trap = _new_task_fault(CPUException(DB, None, f"debug trap: the T flag of TSS "
                                            f"{selector:#x} is set"))
        trap.task_trap = True  # type: ignore[attr-defined]  # a new event, not a nested fault
        raise trap


def _load_ldt(cpu: Any, selector: int, ext: int) -> None:
    """LDTR from the new TSS (Table 7-1): a null selector leaves it unusable; TI set,
    beyond the GDT, not an LDT descriptor or not present -> #TS(LDT selector)."""
    if is_null(selector) and not selector & 4:
        cpu.ldtr[:] = [selector, 0, 0, ATTR_UNUSABLE]
        return
    cpu.ldtr[:] = [selector, 0, 0, ATTR_UNUSABLE]  # invalid until the checks pass
    desc = None if selector & 4 else fetch_descriptor(cpu, selector)
    if desc is None or desc.s or desc.type != SYS_LDT or not desc.present:
        detail = "not a GDT selector within the limit" if desc is None else describe(desc)
        raise CPUException(TS, selector_error(selector, ext),
                           f"new task's LDT selector {selector:#x}: {detail}")
    base, limit, attr = cache_of(desc)
    cpu.ldtr[:] = [selector, base, limit, attr]


def _load_task_segments(cpu: Any, segs: list[int], ext: int) -> None:
    """Load SS, DS, ES, FS, GS and CS of the new task with the checks of Table 7-1
    (#TS(selector) for a bad selector or descriptor, #SS for a not-present stack,
    #NP for the others), at the CPL of the new CS selector's RPL."""
    cpl = cpu.cpl
    ss = segs[SS_REG]
    desc = None if is_null(ss) else fetch_descriptor(cpu, ss)
    if desc is None or ss & 3 != cpl or not desc.writable or desc.dpl != cpl:
        raise CPUException(TS, selector_error(ss, ext), f"new task's SS {ss:#x} must be "
                           f"writable data with RPL = DPL = CPL {cpl}"
                           + (f": {describe(desc)}" if desc is not None else ""))
    if not desc.present:
        raise CPUException(SS, selector_error(ss, ext), f"not present: {describe(desc)}")
    protected._mark_accessed(cpu, desc)
    protected._load_cache(cpu, SS_REG, ss, desc)
    for seg in (DS, ES, FS, GS):
        selector = segs[seg]
        if is_null(selector):
            continue
        desc = fetch_descriptor(cpu, selector)
        if desc is None or not desc.readable or (not desc.conforming and (
                desc.dpl < cpl or desc.dpl < selector & 3)):
            name = protected.SEGMENT_NAMES[seg]
            raise CPUException(TS, selector_error(selector, ext), f"new task's {name} "
                               f"{selector:#x}: "
                               + ("beyond the table" if desc is None else describe(desc)))
        if not desc.present:
            raise CPUException(NP, selector_error(selector, ext), f"not present: {describe(desc)}")
        protected._mark_accessed(cpu, desc)
        protected._load_cache(cpu, seg, selector, desc)
    cs = segs[CS]
    desc = None if is_null(cs) else fetch_descriptor(cpu, cs)
    if desc is None or not desc.is_code or (
            desc.dpl > cs & 3 if desc.conforming else desc.dpl != cs & 3):
        raise CPUException(TS, selector_error(cs, ext), f"new task's CS {cs:#x}: "
                           + ("null or beyond the table" if desc is None else describe(desc)))
    if not desc.present:
        raise CPUException(NP, selector_error(cs, ext), f"not present: {describe(desc)}")
    protected._mark_accessed(cpu, desc)
    protected._load_cache(cpu, CS, cs, desc)


def _push_error_code(cpu: Any, error_code: int, bits: int, ext: int) -> None:
    """Push an exception's error code on the new task's stack: a dword through a
    32-bit TSS, a word through a 16-bit one (SDM Vol.2 INT n "TASK-GATE": #SS(EXT)
    when it does not fit)."""
    unit = bits // 8
    mask = M32 if cpu.stack_bits == 32 else 0xFFFF
    slot = (cpu.r[4] - unit) & mask
    if not protected.stack_fits(cpu.seg_limit[SS_REG], cpu.seg_attr[SS_REG], [slot], unit):
        raise CPUException(SS, ext, "no room for the error code on the new task's stack")
    paging.write_linear(cpu, (cpu.seg_base[SS_REG] + slot) & M32, unit,
                        error_code & ((1 << bits) - 1), user=cpu.cpl == 3)
    protected._set_esp(cpu, slot, cpu.stack_bits)
