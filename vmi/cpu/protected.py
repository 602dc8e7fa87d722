"""The protected-mode system model: segment loads, control transfers between code
segments, interrupt and exception delivery through the IDT, IRET, and
SYSENTER/SYSEXIT (SDM Vol.3A chapters 5 and 6; Vol.2 under each instruction).

Every operation here follows the same discipline: read and check everything
(descriptors, the TSS, the frame on the stack), raise the fault the SDM names
if something is wrong, write whatever memory it writes (a frame), and only
then change registers, segment caches, CPL and EFLAGS. A fault therefore
leaves the architectural state as it was (SDM Vol.3A §6.5: faults are
restartable); a fault in the middle of building a frame may leave bytes below
the stack pointer, which nothing can observe.

Entry points (all take the ``CPU`` first):

* ``load_segment(cpu, seg, selector)``: MOV/POP/LDS.. to DS, ES, FS, GS, SS.
* ``far_jump(cpu, selector, offset)``, ``far_call(cpu, selector, offset, opsize)``,
  ``far_return(cpu, opsize, release)``: JMP/CALL/RET far between code segments;
  JMP and CALL through call gates (``vmi.cpu.gates``) and to TSSs and task gates
  (``vmi.cpu.tasks``).
* ``iret(cpu, opsize)``: IRET/IRETD.
* ``deliver(cpu, vector, error_code, software=..., external=...)``: an
  interrupt or exception through the IDT, with the double- and triple-fault
  rules.
* ``sysenter(cpu)``, ``sysexit(cpu)``.
* ``ProtectedModePlatform``: a platform delivering through ``deliver``.

Virtual-8086 mode is entered by IRETD at CPL 0 and left by interrupts and
exceptions (to ring 0, with the v86 data segments saved and nulled); IRET inside
it is IOPL-sensitive. Task switches (far JMP/CALL to a TSS or task gate, task
gates in the IDT, IRET with NT = 1) are ``vmi.cpu.tasks``; faults they raise after
their commit point carry ``new_task = True`` (they belong to the new task, whose
EIP they save).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define

from vmi.cpu import flags as fl
from vmi.cpu import paging, segmentation
from vmi.cpu.descriptors import (
    ATTR_DB,
    ATTR_P,
    ATTR_S,
    ATTR_UNUSABLE,
    FLAT_CODE_ATTR,
    FLAT_DATA_ATTR,
    TYPE_CODE,
    TYPE_CONFORMING,
    SegmentDescriptor,
    UnsupportedSystemFeature,
    cache_of,
    describe,
    fetch_descriptor,
    idt_error,
    is_null,
    mark_accessed,
    read_gate,
    selector_error,
    tss_stack,
)
from vmi.cpu.errors import DF, GP, NP, PF, SS, TS, VECTOR_NAMES, CPUException, ProcessorShutdown

M32 = 0xFFFFFFFF
ES, CS, SS_REG, DS, FS, GS = range(6)
SEGMENT_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")

#: Exceptions that push an error code (SDM Vol.3A §6.13; Table 6-1): #DF (always 0),
#: #TS, #NP, #SS, #GP, #PF, #AC (always 0).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
#: Contributory exceptions for the double-fault rule (SDM Vol.3A §6.15, Table 6-4).
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})

MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176


class TripleFault(ProcessorShutdown):
    """The processor shut down: an exception occurred while it was delivering a
    double fault (SDM Vol.3A §6.15, "Interrupt 8", Table 6-5: "If another
    contributory or page fault exception occurs while attempting to call the
    double-fault handler, the processor enters shutdown mode"). A PC answers with
    a reset; the machine should stop with ``str(exc)`` as the reason.

    ``faults`` lists the exceptions of the chain in the order they arose, the
    #DF included, as ``(vector, error_code, detail)``; the CPU is left halted
    with EIP and the registers as they were before the first event.
    """

    def __init__(self, cpu: Any, faults: list[tuple[int, int | None, str]]) -> None:
        self.cpu_index = getattr(cpu, "index", 0)
        self.faults = list(faults)
        where = f"{cpu.sreg[1]:04x}:{cpu.eip:08x}"
        story = "; ".join(f"{i + 1}. {_event_text(*fault)}" for i, fault in enumerate(faults))
        super().__init__(f"triple fault on CPU{self.cpu_index} at {where} (each event "
                         f"raised while delivering the one before): {story}; the processor "
                         "shuts down (SDM Vol.3A §6.15)")


def _event_text(vector: int, error_code: int | None, detail: str) -> str:
    name = VECTOR_NAMES.get(vector, f"vector {vector:#x}")
    text = name + ("" if error_code is None else f"({error_code:#x})")
    return f"{text} {detail}" if detail else text


# -- segment caches ---------------------------------------------------------------------
def _dpl(attr: int) -> int:
    return (attr >> 5) & 3


def _set_cache(cpu: Any, seg: int, selector: int, base: int, limit: int, attr: int) -> None:
    cpu.sreg[seg] = selector & 0xFFFF
    cpu.seg_base[seg] = base & M32
    cpu.seg_limit[seg] = limit & M32
    cpu.seg_attr[seg] = attr


def _load_cache(cpu: Any, seg: int, selector: int, desc: SegmentDescriptor) -> None:
    """Fill a segment register from a descriptor (SDM Vol.3A §3.4.3). The accessed
    bit in memory is the caller's to set, with ``_mark_accessed``, before it changes
    any register: that write can page-fault."""
    base, limit, attr = cache_of(desc)
    _set_cache(cpu, seg, selector, base, limit, attr)


def _mark_accessed(cpu: Any, *descs: SegmentDescriptor) -> None:
    """Set the accessed bit of each descriptor about to be loaded (SDM Vol.3A
    §3.4.5.1), first of all changes, since the write may fault (#PF)."""
    for desc in descs:
        mark_accessed(cpu, desc)


def _null_cache(cpu: Any, seg: int, selector: int) -> None:
    """A null selector in DS/ES/FS/GS: loadable, unusable (SDM Vol.3A §5.4.1)."""
    _set_cache(cpu, seg, selector, 0, 0, ATTR_UNUSABLE)


def refresh(cpu: Any) -> None:
    """Re-derive what depends on CS, SS and CPL after they changed: ``code_bits``
    from CS.D and ``stack_bits`` from SS.B (SDM Vol.3A §3.4.5: the D/B flag),
    forgetting decoded code when either or the CS base changed (the decode cache is
    keyed by EIP and bakes those in), then the memory accessors."""
    attr_cs, attr_ss = cpu.seg_attr[CS], cpu.seg_attr[SS_REG]
    code_bits = 32 if attr_cs & ATTR_DB or not attr_cs & ATTR_P else 16
    stack_bits = 32 if attr_ss & ATTR_DB or not attr_ss & ATTR_P else 16
    if code_bits != cpu.code_bits or stack_bits != cpu.stack_bits:
        cpu.code_bits = code_bits
        cpu.stack_bits = stack_bits
        cpu.code_context_changed()
    paging.install(cpu)


def _set_cs(cpu: Any, selector: int, desc: SegmentDescriptor, cpl: int) -> None:
    """Load CS (RPL forced to the new CPL) and the CPL; forget decoded code if the
    CS base moves (SDM Vol.3A §5.8.1: "the RPL of CS is set to the CPL")."""
    old_base = cpu.seg_base[CS]
    _load_cache(cpu, CS, (selector & 0xFFFC) | cpl, desc)
    cpu.cpl = cpl
    if cpu.seg_base[CS] != old_base:
        cpu.code_context_changed()


# -- segment register loads -----------------------------------------------------------
def check_data_segment(cpu: Any, seg: int, selector: int) -> SegmentDescriptor | None:
    """Every check of loading ``selector`` into data segment register ``seg`` (not
    CS) in protected mode; returns the descriptor to load, or None for a null
    selector in DS/ES/FS/GS. Raises the fault otherwise (SDM Vol.2 MOV "Protected
    Mode Exceptions"; Vol.3A §5.4.1 null selectors, §5.6 data segments, §5.7 SS):

    * SS: null -> #GP(0); beyond the table, RPL != CPL, not a writable data
      segment, or DPL != CPL -> #GP(selector); not present -> #SS(selector).
    * DS/ES/FS/GS: null -> loads (unusable); beyond the table, not data or
      readable code -> #GP(selector); data or non-conforming code with
      RPL > DPL or CPL > DPL -> #GP(selector); not present -> #NP(selector).
    """
    selector &= 0xFFFF
    cpl = cpu.cpl
    if seg == SS_REG:
        if is_null(selector):
            raise CPUException(GP, 0, "null selector loaded into SS")
        desc = fetch_descriptor(cpu, selector)
        if desc is None:
            raise CPUException(GP, selector_error(selector), f"SS selector {selector:#x} "
                               "beyond the descriptor table limit")
        if selector & 3 != cpl or not desc.writable or desc.dpl != cpl:
            raise CPUException(GP, selector_error(selector), "SS needs a writable data "
                               f"segment with RPL = DPL = CPL {cpl}: {describe(desc)}")
        if not desc.present:
            raise CPUException(SS, selector_error(selector), f"not present: {describe(desc)}")
        return desc
    if is_null(selector):
        return None
    desc = fetch_descriptor(cpu, selector)
    name = SEGMENT_NAMES[seg]
    if desc is None:
        raise CPUException(GP, selector_error(selector), f"{name} selector {selector:#x} "
                           "beyond the descriptor table limit")
    if not desc.readable:
        raise CPUException(GP, selector_error(selector),
                           f"{name} needs data or readable code: {describe(desc)}")
    if not desc.conforming and (selector & 3 > desc.dpl or cpl > desc.dpl):
        raise CPUException(GP, selector_error(selector), f"{name} load at CPL {cpl}, "
                           f"RPL {selector & 3} of a DPL {desc.dpl} segment")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def load_segment(cpu: Any, seg: int, selector: int) -> None:
    """Load DS, ES, FS, GS or SS in protected mode with all the checks of
    ``check_data_segment``. CS is loaded only by control transfers (far_jump,
    far_call, far_return, iret, deliver, sysenter, sysexit). Loading SS does not
    set the MOV-SS interrupt shadow here: the instruction does that (§6.8.3)."""
    if seg == CS:
        raise ValueError("CS is loaded by control transfers, not load_segment")
    desc = check_data_segment(cpu, seg, selector)
    if desc is None:
        _null_cache(cpu, seg, selector)
    else:
        _mark_accessed(cpu, desc)
        _load_cache(cpu, seg, selector, desc)
    refresh(cpu)


# -- far transfers (SDM Vol.3A §5.8; Vol.2 JMP, CALL, RET) ------------------------------
#: The system descriptors a far JMP or CALL may name (SDM Vol.3A Table 3-2).
_SYSTEM_TARGETS = {4: "a 16-bit call gate", 12: "a call gate", 5: "a task gate",
                   1: "a 16-bit TSS", 9: "a TSS"}


def _check_system_target(cpu: Any, selector: int, desc: SegmentDescriptor, what: str) -> bool:
    """A far JMP or CALL that names a system descriptor (SDM Vol.2 JMP/CALL "CALL-GATE",
    "TASK-GATE", "TASK-STATE-SEGMENT"; Vol.3A §5.8.3, §7.3): a busy TSS is
    #GP(selector); a call gate, task gate or available TSS whose DPL is below the
    CPL or the RPL is #GP(selector), a not-present one #NP(selector). Returns True
    for one that passed (the caller transfers through it: ``vmi.cpu.gates``,
    ``vmi.cpu.tasks``), False for a code or data segment. Other system types are
    left to the caller's "not a code segment" #GP."""
    if desc.s:
        return False
    if desc.type in (3, 11):
        raise CPUException(GP, selector_error(selector), f"{what} to a busy TSS: "
                           f"{describe(desc)}")
    if desc.type not in _SYSTEM_TARGETS:
        return False
    if desc.dpl < cpu.cpl or desc.dpl < selector & 3:
        raise CPUException(GP, selector_error(selector), f"{what} at CPL {cpu.cpl} "
                           f"with RPL {selector & 3} through {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return True


def _target_descriptor(cpu: Any, selector: int, what: str) -> SegmentDescriptor:
    """The descriptor a far JMP or CALL names: null -> #GP(0); beyond the table ->
    #GP(selector) (SDM Vol.2 JMP/CALL)."""
    if is_null(selector):
        raise CPUException(GP, 0, f"{what} to a null selector")
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector),
                           f"{what}: selector {selector:#x} beyond the table limit")
    return desc


def _check_code(cpu: Any, selector: int, desc: SegmentDescriptor, what: str) -> SegmentDescriptor:
    """The checks of a far JMP or CALL straight to a code segment (SDM Vol.3A §5.8.1,
    §5.8.2): not code -> #GP(selector); conforming with DPL > CPL, or
    non-conforming with RPL > CPL or DPL != CPL -> #GP(selector); not present ->
    #NP(selector)."""
    cpl = cpu.cpl
    if not desc.is_code:
        raise CPUException(GP, selector_error(selector), f"{what} to {describe(desc)}")
    if desc.conforming:
        if desc.dpl > cpl:
            raise CPUException(GP, selector_error(selector),
                               f"{what} at CPL {cpl} to conforming {describe(desc)}")
    elif selector & 3 > cpl or desc.dpl != cpl:
        raise CPUException(GP, selector_error(selector), f"{what} at CPL {cpl} "
                           f"with RPL {selector & 3} to {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def check_code_target(cpu: Any, selector: int, what: str) -> SegmentDescriptor:
    """The checks of a far JMP or CALL to a code segment (``_target_descriptor``, then
    ``_check_code``); a gate or TSS target, once its own checks pass, is refused
    here: callers that transfer through them use ``far_jump``/``far_call``."""
    selector &= 0xFFFF
    desc = _target_descriptor(cpu, selector, what)
    if _check_system_target(cpu, selector, desc, what):
        raise UnsupportedSystemFeature(f"{what} through {_SYSTEM_TARGETS[desc.type]} "
                                       f"({describe(desc)}) is not a code segment")
    return _check_code(cpu, selector, desc, what)


def far_jump(cpu: Any, selector: int, offset: int) -> None:
    """JMP ptr16:32 / m16:32 in protected mode: to a code segment, the checks of
    ``_check_code`` and the new EIP against the new limit (#GP(0)); CS is loaded with
    RPL = CPL (Vol.2 JMP). Through a call gate (``gates.jump_through_gate``, never a
    privilege change) or to a TSS or task gate (a task switch without nesting,
    ``tasks.far_transfer_to_task``) once their checks pass."""
    selector &= 0xFFFF
    desc = _target_descriptor(cpu, selector, "far jmp")
    if _check_system_target(cpu, selector, desc, "far jmp"):
        if desc.type in (4, 12):
            gates.jump_through_gate(cpu, desc)
        else:
            tasks.far_transfer_to_task(cpu, selector, desc, tasks.JMP)
        return
    _check_code(cpu, selector, desc, "far jmp")
    if offset > desc.limit:
        raise CPUException(GP, 0, f"far jmp to {offset:#x} beyond the CS limit {desc.limit:#x}")
    _mark_accessed(cpu, desc)
    _set_cs(cpu, selector, desc, cpu.cpl)
    cpu.eip = offset & M32
    refresh(cpu)


def _stack_offsets(cpu: Any, start: int, count: int, unit: int, down: bool) -> list[int]:
    """Offsets of ``count`` stack slots of ``unit`` bytes from eSP ``start``."""
    mask = M32 if cpu.stack_bits == 32 else 0xFFFF
    step = -unit if down else unit
    first = (start - unit) if down else start
    return [(first + i * step) & mask for i in range(count)]


def _set_esp(cpu: Any, value: int, stack_bits: int) -> None:
    """ESP for a B=1 stack; only SP for a B=0 stack, ESP[31:16] kept (SDM Vol.2 POP/RET:
    "StackAddressSize = 16": SP is the stack pointer)."""
    if stack_bits == 32:
        cpu.r[4] = value & M32
    else:
        cpu.r[4] = (cpu.r[4] & 0xFFFF0000) | (value & 0xFFFF)


def far_call(cpu: Any, selector: int, offset: int, opsize: int,
             return_ip: int | None = None) -> None:
    """CALL ptr16:32 / m16:32 (SDM Vol.3A §5.8.2; Vol.2 CALL). To a code segment of
    the same privilege: the checks of ``_check_code``, the new EIP against the new
    limit (#GP(0)), then push CS and the return EIP (``return_ip``, by default
    ``cpu.eip``, which the run loop has set to the next instruction) as
    ``opsize``-bit slots (CS zero-extended) on the current stack, then load CS:EIP.
    Through a call gate (``gates.call_through_gate``: same level or inward with a
    stack switch) or to a TSS or task gate (a nesting task switch,
    ``tasks.far_transfer_to_task``) once their checks pass."""
    selector &= 0xFFFF
    desc = _target_descriptor(cpu, selector, "far call")
    if _check_system_target(cpu, selector, desc, "far call"):
        if desc.type in (4, 12):
            gates.call_through_gate(cpu, desc, cpu.eip if return_ip is None else return_ip)
        else:
            if return_ip is not None:
                cpu.eip = return_ip & M32  # the old task resumes after the CALL
            tasks.far_transfer_to_task(cpu, selector, desc, tasks.CALL)
        return
    _check_code(cpu, selector, desc, "far call")
    unit = opsize // 8
    if offset > desc.limit:
        raise CPUException(GP, 0, f"far call to {offset:#x} beyond the CS limit")
    slots = _stack_offsets(cpu, cpu.r[4], 2, unit, down=True)
    write = cpu.wr32 if unit == 4 else cpu.wr16
    ret = (cpu.eip if return_ip is None else return_ip) & (M32 if unit == 4 else 0xFFFF)
    _mark_accessed(cpu, desc)
    write(SS_REG, slots[0], cpu.sreg[CS])
    write(SS_REG, slots[1], ret)
    _set_esp(cpu, slots[1], cpu.stack_bits)
    _set_cs(cpu, selector, desc, cpu.cpl)
    cpu.eip = offset & M32
    refresh(cpu)


def _check_return_cs(cpu: Any, selector: int, what: str) -> SegmentDescriptor:
    """Checks of the CS popped by RET far and IRET (SDM Vol.2 RET, IRET
    "PROTECTED-MODE-RETURN"): null -> #GP(0); beyond the table or not code ->
    #GP(selector); RPL < CPL -> #GP(selector); conforming with DPL > RPL, or
    non-conforming with DPL != RPL -> #GP(selector); not present -> #NP(selector)."""
    if is_null(selector):
        raise CPUException(GP, 0, f"{what} to a null CS")
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector),
                           f"{what}: CS {selector:#x} beyond the table limit")
    rpl = selector & 3
    if not desc.is_code:
        raise CPUException(GP, selector_error(selector), f"{what} to {describe(desc)}")
    if rpl < cpu.cpl:
        raise CPUException(GP, selector_error(selector),
                           f"{what} to RPL {rpl}, more privileged than CPL {cpu.cpl}")
    if desc.conforming and desc.dpl > rpl or not desc.conforming and desc.dpl != rpl:
        raise CPUException(GP, selector_error(selector),
                           f"{what} with RPL {rpl} to {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def _check_return_ss(cpu: Any, selector: int, rpl: int, what: str) -> SegmentDescriptor:
    """Checks of the SS popped by a return to an outer level (SDM Vol.2 IRET
    "RETURN-TO-OUTER-PRIVILEGE-LEVEL", RET): null -> #GP(0); beyond the table,
    RPL != RPL(CS), not writable data, or DPL != RPL(CS) -> #GP(selector); not
    present -> #SS(selector)."""
    if is_null(selector):
        raise CPUException(GP, 0, f"{what} to a null SS")
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector),
                           f"{what}: SS {selector:#x} beyond the table limit")
    if selector & 3 != rpl or not desc.writable or desc.dpl != rpl:
        raise CPUException(GP, selector_error(selector), f"{what}: SS {selector:#x} must be "
                           f"writable data with RPL = DPL = {rpl}: {describe(desc)}")
    if not desc.present:
        raise CPUException(SS, selector_error(selector), f"not present: {describe(desc)}")
    return desc


def _null_outer_segments(cpu: Any, new_cpl: int) -> None:
    """After a return to an outer level, DS/ES/FS/GS holding data or non-conforming
    code with DPL < the new CPL become null, so the outer level cannot use
    inner-level segments (SDM Vol.2 IRET and RET, "RETURN-TO-OUTER-PRIVILEGE-LEVEL";
    Vol.3A §5.8.6)."""
    for seg in (ES, FS, GS, DS):
        attr = cpu.seg_attr[seg]
        if attr & ATTR_UNUSABLE or not attr & ATTR_P or not attr & ATTR_S:
            continue
        conforming_code = attr & TYPE_CODE and attr & TYPE_CONFORMING
        if not conforming_code and _dpl(attr) < new_cpl:
            _null_cache(cpu, seg, 0)


def far_return(cpu: Any, opsize: int, release: int = 0) -> None:
    """RET far (``lret [$imm16]``) in protected mode (SDM Vol.2 RET; Vol.3A §5.8.6):
    pops EIP and CS; same level releases ``release`` more bytes; to an outer level
    (RPL(CS) > CPL) also pops ESP and SS after releasing the bytes, checks SS,
    releases the bytes again on the outer stack and nulls inner data segments."""
    unit = opsize // 8
    read = cpu.rd32 if unit == 4 else cpu.rd16
    slots = _stack_offsets(cpu, cpu.r[4], 4, unit, down=False)
    new_eip = read(SS_REG, slots[0])
    new_cs = read(SS_REG, slots[1]) & 0xFFFF
    desc = _check_return_cs(cpu, new_cs, "far ret")
    rpl = new_cs & 3
    if rpl > cpu.cpl:
        mask = M32 if cpu.stack_bits == 32 else 0xFFFF
        outer = [(s + release) & mask for s in slots[2:]]
        new_esp = read(SS_REG, outer[0])
        new_ss = read(SS_REG, outer[1]) & 0xFFFF
        ss_desc = _check_return_ss(cpu, new_ss, rpl, "far ret")
        if new_eip > desc.limit:
            raise CPUException(GP, 0, f"far ret to {new_eip:#x} beyond the CS limit")
        _mark_accessed(cpu, desc, ss_desc)
        _set_cs(cpu, new_cs, desc, rpl)
        _load_cache(cpu, SS_REG, new_ss, ss_desc)
        _set_esp(cpu, new_esp + release, 32 if ss_desc.big else 16)
        _null_outer_segments(cpu, rpl)
    else:
        if new_eip > desc.limit:
            raise CPUException(GP, 0, f"far ret to {new_eip:#x} beyond the CS limit")
        _mark_accessed(cpu, desc)
        _set_cs(cpu, new_cs, desc, cpu.cpl)
        _set_esp(cpu, cpu.r[4] + 2 * unit + release, cpu.stack_bits)
    cpu.eip = new_eip
    refresh(cpu)


# -- IRET (SDM Vol.2 IRET/IRETD, "PROTECTED-MODE" branches) ----------------------------
#: EFLAGS bits IRET always loads (Vol.2 IRET: CF PF AF ZF SF TF DF OF NT).
_IRET_ALWAYS = fl.ARITH | fl.TF | fl.DF | fl.NT
#: Loaded by a 32-bit IRET only: RF, AC, ID.
_IRET_32 = fl.RF | fl.AC | fl.ID


def iret_flags_mask(cpl: int, iopl: int, opsize: int) -> int:
    """The EFLAGS bits an IRET executed at ``cpl`` with the current ``iopl`` takes from
    the popped image (SDM Vol.2 IRET; reference §5 fact 4): the arithmetic flags,
    TF, DF and NT always; RF, AC and ID with a 32-bit operand; IF only if CPL <=
    IOPL; IOPL (and VIF/VIP, not modelled) only at CPL 0. At CPL 1 with IOPL 0, IF
    is kept silently: the heart of the IRET race this project studies."""
    mask = _IRET_ALWAYS | (_IRET_32 if opsize == 32 else 0)
    if cpl <= iopl:
        mask |= fl.IF
    if cpl == 0:
        mask |= fl.IOPL
    if opsize == 16:
        mask &= 0xFFFF
    return mask & fl.IMPLEMENTED


#: Cache attributes of every segment register in virtual-8086 mode: present, DPL 3,
#: read/write accessed data, 16-bit (SDM Vol.3A §20.1.1: real-mode style loads; the
#: VMX guest-state rules for v86 mode, Vol.3B §26.3.1.2, fix these values).
V86_ATTR = 0xF3
_V86_IRET_KEPT = fl.VM | fl.IOPL  # (and VIP, VIF: not modelled)


def _v86_segment(cpu: Any, seg: int, selector: int) -> None:
    selector &= 0xFFFF
    _set_cache(cpu, seg, selector, selector << 4, 0xFFFF, V86_ATTR)


def v86_iret(cpu: Any, opsize: int) -> None:
    """IRET in virtual-8086 mode (SDM Vol.2 IRET, "IF VM = 1"; Vol.3A §20.2.7, IRET is
    IOPL-sensitive): with IOPL 3 a real-mode style return (pop EIP, CS, EFLAGS;
    CS base = selector << 4; VM and IOPL unchanged); with IOPL < 3 #GP(0), the trap
    to the virtual-8086 monitor. The new IP must be within 0xFFFF (#GP(0))."""
    if (cpu.flags >> 12) & 3 != 3:
        raise CPUException(GP, 0, "IRET in virtual-8086 mode with IOPL < 3")
    unit = opsize // 8
    read = cpu.rd32 if unit == 4 else cpu.rd16
    slots = _stack_offsets(cpu, cpu.r[4], 3, unit, down=False)
    new_eip = read(SS_REG, slots[0])
    new_cs = read(SS_REG, slots[1]) & 0xFFFF
    image = read(SS_REG, slots[2])
    if new_eip > 0xFFFF:
        raise CPUException(GP, 0, f"IRET to {new_eip:#x}, beyond a v86 CS limit")
    current = cpu.eflags
    loaded = (fl.IMPLEMENTED & ~_V86_IRET_KEPT) & (M32 if unit == 4 else 0xFFFF)
    new_flags = (current & ~loaded) | (image & loaded)
    cpu.flags = (new_flags & ~fl.ARITH) | fl.FIXED_ONE
    cpu.lf = (fl.EXPLICIT, 32, new_flags & fl.ARITH, 0, 0)
    old_base = cpu.seg_base[CS]
    _v86_segment(cpu, CS, new_cs)
    if cpu.seg_base[CS] != old_base:
        cpu.code_context_changed()
    _set_esp(cpu, cpu.r[4] + 3 * unit, cpu.stack_bits)
    cpu.eip = new_eip
    refresh(cpu)


def return_to_v86(cpu: Any) -> None:
    """IRETD at CPL 0 with VM = 1 in the EFLAGS image (SDM Vol.2 IRET,
    "RETURN-TO-VIRTUAL-8086-MODE"; Vol.3A §20.2.5): pops EIP, CS, EFLAGS, ESP, SS,
    ES, DS, FS, GS (36 bytes, checked first), loads every segment the real-mode way
    (base = selector << 4, limit 0xFFFF), takes the whole EFLAGS image and sets CPL
    3. No descriptor is read. The new IP must be within 0xFFFF (#GP(0))."""
    slots = _stack_offsets(cpu, cpu.r[4], 9, 4, down=False)
    values = [cpu.rd32(SS_REG, off) for off in slots]
    new_eip, new_cs, image, new_esp, new_ss, es, ds, fs, gs = values
    if new_eip > 0xFFFF:
        raise CPUException(GP, 0, f"IRET to v86 at {new_eip:#x}, beyond the CS limit")
    cpu.eflags = image & fl.IMPLEMENTED
    for seg, selector in ((CS, new_cs), (SS_REG, new_ss), (ES, es), (DS, ds), (FS, fs),
                          (GS, gs)):
        _v86_segment(cpu, seg, selector)
    cpu.cpl = 3
    cpu.r[4] = new_esp & M32
    cpu.eip = new_eip
    cpu.code_context_changed()
    refresh(cpu)


def iret(cpu: Any, opsize: int) -> None:
    """IRET (``opsize`` 16) or IRETD (32) in protected mode.

    Pops EIP, CS, EFLAGS (12 bytes, or 6 for a 16-bit IRET); when RPL(CS) > CPL
    it returns to an outer level and also pops ESP and SS, checks SS, switches
    stacks, and nulls DS/ES/FS/GS holding segments the outer level may not use.
    An outer return to a 16-bit stack segment (B=0) loads only SP: ESP[31:16]
    keeps the value the inner level left (the espfix problem, reference §4).
    Nothing is delivered between this instruction and the next, and there is no
    interrupt shadow after it (reference §5 fact 4).

    NT = 1 is a task return to the previous-task link (``tasks.task_return``).
    In virtual-8086 mode see ``v86_iret``; a CPL-0 IRETD
    whose EFLAGS image has VM = 1 enters that mode (``return_to_v86``).
    """
    flags = cpu.flags
    if flags & fl.VM:
        v86_iret(cpu, opsize)
        return
    if flags & fl.NT:
        tasks.task_return(cpu)
        return
    unit = opsize // 8
    read = cpu.rd32 if unit == 4 else cpu.rd16
    slots = _stack_offsets(cpu, cpu.r[4], 5, unit, down=False)
    new_eip = read(SS_REG, slots[0])
    new_cs = read(SS_REG, slots[1]) & 0xFFFF
    image = read(SS_REG, slots[2])
    cpl = cpu.cpl
    if opsize == 32 and image & fl.VM and cpl == 0:
        return_to_v86(cpu)
        return
    desc = _check_return_cs(cpu, new_cs, "iret")
    rpl = new_cs & 3
    outer = rpl > cpl
    if outer:
        new_esp = read(SS_REG, slots[3])
        new_ss = read(SS_REG, slots[4]) & 0xFFFF
        ss_desc = _check_return_ss(cpu, new_ss, rpl, "iret")
    if new_eip > desc.limit:
        raise CPUException(GP, 0, f"iret to {new_eip:#x} beyond the CS limit {desc.limit:#x}")
    _mark_accessed(cpu, desc, *([ss_desc] if outer else []))
    # Commit. The flag rules use the CPL and IOPL in force before the return.
    mask = iret_flags_mask(cpl, (flags >> 12) & 3, opsize)
    current = cpu.eflags
    new_flags = (current & ~mask) | (image & mask)
    cpu.flags = (new_flags & ~fl.ARITH) | fl.FIXED_ONE
    cpu.lf = (fl.EXPLICIT, 32, new_flags & fl.ARITH, 0, 0)
    if outer:
        _set_cs(cpu, new_cs, desc, rpl)
        # ESP as the inner level leaves it after the five pops; then a B=0 outer SS
        # takes only SP, so ESP[31:16] keeps the inner value (reference §4, espfix).
        _set_esp(cpu, cpu.r[4] + 5 * unit, cpu.stack_bits)
        _load_cache(cpu, SS_REG, new_ss, ss_desc)
        _set_esp(cpu, new_esp, 32 if ss_desc.big else 16)
        _null_outer_segments(cpu, rpl)
    else:
        _set_cs(cpu, new_cs, desc, cpl)
        _set_esp(cpu, cpu.r[4] + 3 * unit, cpu.stack_bits)
    cpu.eip = new_eip & (M32 if opsize == 32 else 0xFFFF)
    refresh(cpu)


# -- delivery through the IDT (SDM Vol.3A §6.10-§6.13; Vol.2 INT n) ---------------------
def stack_fits(limit: int, attr: int, offsets: list[int], size: int) -> bool:
    """Whether a ``size``-byte write fits the stack segment at every offset (the
    frame of an event delivery: here and in the VMI monitor's injection)."""
    lowest, highest = paging.segment_bounds(limit, attr, size, True)
    return all(lowest <= off <= highest for off in offsets)


def current_stack(cpu: Any) -> tuple[int, int, int, int, int]:
    """The stack an event delivered without a stack switch pushes its frame on: the
    SS cache (base, limit, attributes), its width in bits and ESP. Shared with the
    VMI monitor's injection."""
    return (cpu.seg_base[SS_REG], cpu.seg_limit[SS_REG], cpu.seg_attr[SS_REG],
            cpu.stack_bits, cpu.r[4])


def frame_tail(cpu: Any, image: int, vector: int, software: bool,
               error_code: int | None) -> list[int]:
    """What every delivery pushes, in push order, after the outer SS:ESP of a stack
    switch (SDM Vol.3A §6.12.1, Figure 6-4): the EFLAGS ``image``, CS, EIP, then the
    error code when ``vector`` has one (§6.13) and the event is not INT n. Shared
    with the VMI monitor's injection."""
    values = [image, cpu.sreg[CS], cpu.eip]
    if not software and vector in ERROR_CODE_VECTORS:
        values.append(error_code or 0)
    return values


def _deliver_once(cpu: Any, vector: int, error_code: int | None, software: bool,
                  ext: int) -> None:
    """One attempt to enter the handler of ``vector``; raises the fault that stops it
    before changing any register (memory below the new stack pointer may be written).
    """
    v86 = bool(cpu.flags & fl.VM)
    if v86 and software and (cpu.flags >> 12) & 3 != 3 and \
            software_mnemonic(cpu) not in ("int3", "into"):
        # INT n is IOPL-sensitive in virtual-8086 mode (Vol.3A §20.2.7; no VME).
        raise CPUException(GP, 0, "INT n in virtual-8086 mode with IOPL < 3")
    gate = read_gate(cpu, vector)
    if gate is None:
        raise CPUException(GP, idt_error(vector, ext),
                           f"vector {vector:#x} beyond the IDT limit {cpu.idtr[1]:#x}")
    if gate.kind == "invalid":
        raise CPUException(GP, idt_error(vector, ext),
                           f"IDT entry {vector:#x} has type {gate.type}, not a gate")
    cpl = cpu.cpl
    if gate.kind == "task":
        # Vol.2 INT n "TASK-GATE"; Vol.3A §6.11.1: the gate DPL (INT n only) and P,
        # then a nesting task switch; the error code goes on the new task's stack.
        if software and gate.dpl < cpl:
            raise CPUException(GP, idt_error(vector, 0),
                               f"int {vector:#x} at CPL {cpl} through a DPL {gate.dpl} task gate")
        if not gate.present:
            raise CPUException(NP, idt_error(vector, ext), f"IDT entry {vector:#x} not present")
        pushed = (error_code or 0) if not software and vector in ERROR_CODE_VECTORS else None
        cpu.shadow = False
        cpu.halted = False
        tasks.deliver_through_task_gate(cpu, vector, gate.selector, pushed, ext)
        return
    # The gate DPL protects INT n, INT3 and INTO only (§6.12.1.1).
    if software and gate.dpl < cpl:
        raise CPUException(GP, idt_error(vector, 0),
                           f"int {vector:#x} at CPL {cpl} through a DPL {gate.dpl} gate")
    if not gate.present:
        raise CPUException(NP, idt_error(vector, ext), f"IDT entry {vector:#x} not present")
    selector = gate.selector
    if is_null(selector):
        raise CPUException(GP, ext, f"IDT entry {vector:#x} names a null code selector")
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector, ext),
                           f"handler CS {selector:#x} beyond the descriptor table limit")
    if not desc.is_code or desc.dpl > cpl:
        raise CPUException(GP, selector_error(selector, ext),
                           f"handler CS at CPL {cpl}: {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector, ext), f"not present: {describe(desc)}")
    if v86:
        # INTERRUPT-FROM-VIRTUAL-8086-MODE (Vol.2 INT n; Vol.3A §20.3.1.1): the
        # handler must be non-conforming ring-0 code.
        if desc.conforming or desc.dpl != 0:
            raise CPUException(GP, selector_error(selector, ext), "handler of an event from "
                               f"virtual-8086 mode must be ring-0 code: {describe(desc)}")
        new_cpl = 0
        inner = True
    elif not desc.conforming and desc.dpl < cpl:
        new_cpl = desc.dpl
        inner = True
    else:
        new_cpl = cpl  # conforming, or DPL = CPL (DPL > CPL was refused above)
        inner = False
    unit = gate.bits // 8
    values = []  # pushed in this order, each ``unit`` bytes
    ss_desc: SegmentDescriptor | None = None
    if inner:
        ss, esp = tss_stack(cpu, new_cpl, ext)
        if is_null(ss):
            raise CPUException(TS, ext, f"TSS ss{new_cpl} is null")
        ss_desc = fetch_descriptor(cpu, ss)
        if ss_desc is None or ss & 3 != new_cpl:
            raise CPUException(TS, selector_error(ss, ext),
                               f"TSS ss{new_cpl} {ss:#x}: beyond the table or RPL != {new_cpl}")
        if ss_desc.dpl != new_cpl or not ss_desc.writable:
            raise CPUException(TS, selector_error(ss, ext),
                               f"TSS ss{new_cpl} must be writable data with DPL {new_cpl}: "
                               f"{describe(ss_desc)}")
        if not ss_desc.present:
            raise CPUException(SS, selector_error(ss, ext), f"not present: {describe(ss_desc)}")
        stack_base, stack_limit, stack_attr = cache_of(ss_desc)
        stack_bits = 32 if ss_desc.big else 16
        start = esp
        if v86:  # the v86 data segments go on the stack first, then are nulled
            values += [cpu.sreg[GS], cpu.sreg[FS], cpu.sreg[DS], cpu.sreg[ES]]
        values += [cpu.sreg[SS_REG], cpu.r[4]]
        stack_error = selector_error(ss, ext)
    else:
        stack_base, stack_limit, stack_attr, stack_bits, start = current_stack(cpu)
        stack_error = ext
    values += frame_tail(cpu, cpu.eflags, vector, software, error_code)
    if unit == 2:
        values = [v & 0xFFFF for v in values]
    mask = M32 if stack_bits == 32 else 0xFFFF
    offsets = [(start - unit * (i + 1)) & mask for i in range(len(values))]
    if not stack_fits(stack_limit, stack_attr, offsets, unit):
        raise CPUException(SS, stack_error, f"no room for the {unit * len(values)}-byte frame "
                           f"of vector {vector:#x} on the {'new' if inner else 'current'} stack")
    target = gate.offset
    if target > desc.limit:
        raise CPUException(GP, ext, f"handler EIP {target:#x} beyond the CS limit")
    _mark_accessed(cpu, desc, *([ss_desc] if ss_desc is not None else []))
    user = new_cpl == 3
    for off, value in zip(offsets, values, strict=True):
        paging.write_linear(cpu, (stack_base + off) & M32, unit, value, user=user)
    # Commit (§6.12.1: CS:EIP from the gate, SS:ESP switched, flags cleared).
    if inner:
        assert ss_desc is not None
        _load_cache(cpu, SS_REG, ss, ss_desc)
        # A 16-bit new stack moves SP only; ESP[31:16] comes from the TSS value.
        cpu.r[4] = ((esp & ~mask) | offsets[-1]) if stack_bits == 16 else offsets[-1]
    else:
        _set_esp(cpu, offsets[-1], stack_bits)
    if v86:
        for seg in (ES, DS, FS, GS):
            _null_cache(cpu, seg, 0)
        cpu.code_context_changed()
    _set_cs(cpu, selector, desc, new_cpl)
    cpu.eip = target
    # §6.12.1.2: TF, VM, RF, NT cleared after the image is saved; an interrupt gate
    # also clears IF, a trap gate leaves it.
    cleared = fl.TF | fl.VM | fl.RF | fl.NT | (fl.IF if gate.kind == "interrupt" else 0)
    cpu.flags &= ~cleared
    cpu.shadow = False
    cpu.halted = False
    refresh(cpu)


def escalate(cpu: Any, chain: list, vector: int, benign: bool, software: bool,
             nested: CPUException) -> tuple[int, int | None, bool]:
    """An exception ``nested`` arose while delivering ``vector``: record it in
    ``chain`` and return what to deliver next, the nested exception or a double
    fault (SDM Vol.3A §6.15, Table 6-5), or raise ``TripleFault`` when the event
    being delivered was already a #DF. A fault raised by INT n itself (gate DPL,
    not-present gate, ...) is reported on the INT instruction (§6.5, §6.12.1.1).
    Shared by native delivery and the VMI monitor's injection."""
    chain.append((nested.vector, nested.error_code, nested.detail))
    if software and not getattr(nested, "new_task", False):
        start = software_instruction_start(cpu)
        if start is not None:
            cpu.eip = start
    if vector == DF:
        cpu.halted = True
        raise TripleFault(cpu, chain) from None
    if _makes_double_fault(vector, benign, nested.vector):
        chain.append((DF, 0, "(the two exceptions above make a double fault)"))
        return DF, 0, False
    return nested.vector, nested.error_code, _benign(nested.vector)


def _benign(vector: int) -> bool:
    """An exception that is neither contributory nor #PF nor #DF (SDM Vol.3A §6.15,
    Table 6-4): benign for the double-fault rules."""
    return vector not in CONTRIBUTORY and vector not in (PF, DF)


def open_chain(vector: int, error_code: int | None, software: bool,
               external: bool) -> tuple[list[tuple[int, int | None, str]], bool]:
    """The double-fault bookkeeping a delivery of ``vector`` starts with: the chain
    ``escalate`` records nested exceptions in (``TripleFault`` reports it), opened
    by the event itself, and whether that event is benign (an interrupt, INT n, or
    a benign exception). Shared by native delivery and the VMI monitor's injection."""
    chain: list[tuple[int, int | None, str]] = [
        (vector, error_code, "(interrupt)" if external else "(int n)" if software else "")]
    return chain, external or software or _benign(vector)


def _makes_double_fault(first: int, first_benign: bool, second: int) -> bool:
    """SDM Vol.3A §6.15, Table 6-5: contributory then contributory, or #PF then
    contributory or #PF, make a #DF; everything else is handled serially (the
    second exception is delivered instead of the first)."""
    if first_benign:
        return False
    if first in CONTRIBUTORY:
        return second in CONTRIBUTORY
    if first == PF:
        return second in CONTRIBUTORY or second == PF
    return False


def deliver(cpu: Any, vector: int, error_code: int | None = None, *,
            software: bool = False, external: bool = False) -> None:
    """Deliver an interrupt or exception through the IDT (SDM Vol.3A §6.12; Vol.2
    INT n), resolving faults raised on the way by the double-fault rules.

    ``software`` marks INT n, INT3 and INTO: the gate DPL is checked against the
    CPL (#GP(vector*8+2)) and no error code is pushed, whatever the vector.
    ``external`` marks a hardware interrupt (benign for the double-fault table).
    Error codes of faults raised while delivering anything but a software
    interrupt carry EXT = 1 (§6.13). An exception while delivering #DF raises
    ``TripleFault`` and leaves the CPU halted.

    EIP must already be what the frame saves: the faulting instruction for a
    fault, the next one for a trap or interrupt (the run loop arranges it).
    """
    chain, benign = open_chain(vector, error_code, software, external)
    ext = 0 if software else 1
    while True:
        try:
            _deliver_once(cpu, vector, error_code, software, ext)
            return
        except CPUException as nested:
            if getattr(nested, "task_trap", False):
                # The T flag of the TSS a task gate switched to: the event was
                # delivered; the debug trap is a new one in the new task (§17.3.1.5).
                deliver(cpu, nested.vector, None)
                return
            vector, error_code, benign = escalate(cpu, chain, vector, benign, software, nested)
            software = False
            ext = 1


_SOFTWARE_INTERRUPTS = frozenset({"int", "int3", "into"})


def _software_instruction(cpu: Any) -> tuple[int, str] | None:
    """(address, mnemonic) of the INT n / INT3 / INTO that just trapped, found in the
    decoded-instruction cache: the entry within 15 bytes before EIP whose next
    instruction is EIP. None if it is not there."""
    eip = cpu.eip
    icache = cpu.icache
    for length in range(1, 16):
        entry = icache.get((eip - length) & M32)
        if entry is not None and entry[1] == eip:
            mnemonic = getattr(entry[0], "mnemonic", None)
            if mnemonic in _SOFTWARE_INTERRUPTS:
                return (eip - length) & M32, mnemonic
    return None


def software_instruction_start(cpu: Any) -> int | None:
    """The address of the software interrupt instruction that just trapped (then a
    fault it raised is reported on it), or None when unknown (EIP stays after it)."""
    found = _software_instruction(cpu)
    return None if found is None else found[0]


def software_mnemonic(cpu: Any) -> str:
    """"int", "int3" or "into" for the software interrupt that just trapped ("int"
    when the cache does not tell)."""
    found = _software_instruction(cpu)
    return "int" if found is None else found[1]


# -- SYSENTER / SYSEXIT (SDM Vol.3A §5.8.7; Vol.2 SYSENTER, SYSEXIT) -------------------
def sysenter(cpu: Any) -> None:
    """Fast system call: #GP(0) when CR0.PE = 0 or IA32_SYSENTER_CS[15:2] = 0;
    else clear VM, IF and RF, load CS = SYSENTER_CS & 0xFFFC and SS = CS + 8 with
    fixed flat ring-0 caches (not read from the GDT), CPL 0, ESP = SYSENTER_ESP,
    EIP = SYSENTER_EIP. Nothing is saved (reference §5 fact 7)."""
    msr = cpu.msr
    cs = msr.get(MSR_SYSENTER_CS, 0) & 0xFFFF
    if not cpu.cr[0] & 1:
        raise CPUException(GP, 0, "sysenter in real mode")
    if cs & 0xFFFC == 0:
        raise CPUException(GP, 0, "sysenter with IA32_SYSENTER_CS = 0")
    cpu.flags &= ~(fl.VM | fl.IF | fl.RF)
    old_base = cpu.seg_base[CS]
    _set_cache(cpu, CS, cs & 0xFFFC, 0, M32, FLAT_CODE_ATTR[0])
    _set_cache(cpu, SS_REG, (cs & 0xFFFC) + 8, 0, M32, FLAT_DATA_ATTR[0])
    cpu.cpl = 0
    if old_base:
        cpu.code_context_changed()
    cpu.r[4] = msr.get(MSR_SYSENTER_ESP, 0) & M32
    cpu.eip = msr.get(MSR_SYSENTER_EIP, 0) & M32
    refresh(cpu)


def sysexit(cpu: Any) -> None:
    """Fast return to ring 3: #GP(0) unless CR0.PE = 1, CPL = 0 and
    IA32_SYSENTER_CS[15:2] != 0; CS = (SYSENTER_CS + 16) | 3 and SS =
    (SYSENTER_CS + 24) | 3 with fixed flat ring-3 caches, CPL 3, EIP = EDX,
    ESP = ECX. EFLAGS is not changed, which is why Linux writes ``sti; sysexit``
    and relies on the STI shadow (reference §5 facts 1, 7)."""
    cs = cpu.msr.get(MSR_SYSENTER_CS, 0) & 0xFFFF
    if not cpu.cr[0] & 1 or cpu.cpl != 0:
        raise CPUException(GP, 0, f"sysexit at CPL {cpu.cpl}")
    if cs & 0xFFFC == 0:
        raise CPUException(GP, 0, "sysexit with IA32_SYSENTER_CS = 0")
    old_base = cpu.seg_base[CS]
    _set_cache(cpu, CS, ((cs + 16) | 3) & 0xFFFF, 0, M32, FLAT_CODE_ATTR[3])
    _set_cache(cpu, SS_REG, ((cs + 24) | 3) & 0xFFFF, 0, M32, FLAT_DATA_ATTR[3])
    cpu.cpl = 3
    if old_base:
        cpu.code_context_changed()
    cpu.eip = cpu.r[2]
    cpu.r[4] = cpu.r[1]
    refresh(cpu)


# -- the platform -----------------------------------------------------------------------
@define
class ProtectedModePlatform:
    """Delivers a protected-mode CPU's exceptions and interrupts through its IDT, as
    the hardware does. ``trace``, when given, is called with ``(vector, kind)``
    for each event handed to it (kind "exception" or "interrupt")."""

    trace: Callable[[int, str], None] | None = None

    def deliver_exception(self, cpu: Any, exc: CPUException) -> None:
        """A fault or trap raised by an instruction. INT n, INT3 and INTO carry
        ``software = True`` (vmi.cpu.ops.misc sets it)."""
        if self.trace is not None:
            self.trace(exc.vector, "exception")
        deliver(cpu, exc.vector, exc.error_code, software=is_software(exc))

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        """An external interrupt between instructions; wakes a halted CPU."""
        if self.trace is not None:
            self.trace(vector, "interrupt")
        cpu.halted = False
        deliver(cpu, vector, None, external=True)


def is_software(exc: CPUException) -> bool:
    """Whether ``exc`` came from INT n, INT3 or INTO (the gate-DPL-checked kind)."""
    return bool(getattr(exc, "software", False))


# -- registration with the segmentation seam ---------------------------------------------
def _call_bytes(cpu: Any, selector: int, offset: int, size: int, return_ip: int) -> None:
    far_call(cpu, selector, offset, size * 8, return_ip)


def _return_bytes(cpu: Any, size: int, release: int) -> None:
    far_return(cpu, size * 8, release)


def _iret_bytes(cpu: Any, size: int) -> None:
    iret(cpu, size * 8)


#: ``vmi.cpu.segmentation`` and ``vmi.cpu.ops.far`` call these in protected mode (their
#: sizes are in bytes per stack slot, ours in bits).
# The gate and task modules use this one's helpers: imported once it is complete.
from vmi.cpu import gates, tasks  # noqa: E402

segmentation.PROTECTED.update({
    "load": load_segment, "jump": far_jump, "call": _call_bytes,
    "return": _return_bytes, "iret": _iret_bytes,
})
