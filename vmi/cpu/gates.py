"""Call gates: far CALL and JMP through a 16- or 32-bit call gate (descriptor types 4
and 12), at the same privilege and, for CALL, into a more privileged ring with a
stack switch and a parameter copy (SDM Vol.3A §5.8.3-§5.8.5; Vol.2 CALL
"CALL-GATE", JMP "CALL-GATE").

A call gate names a code segment and an entry point; the offset of the far
pointer is ignored. Checks, in the order of the Vol.2 pseudo-code:

1. the gate: DPL < CPL or DPL < RPL -> #GP(gate selector); not present ->
   #NP(gate selector) (made by ``protected._check_system_target``);
2. its code segment: null -> #GP(0); beyond the table -> #GP(CS selector); not
   code, or DPL > CPL (CALL) -> #GP(CS selector); for JMP, conforming with DPL >
   CPL or non-conforming with DPL != CPL -> #GP(CS selector); not present ->
   #NP(CS selector);
3. CALL to non-conforming code with DPL < CPL: **more privilege**. The new SS:ESP
   come from the current TSS for ring DPL (beyond the TSS limit -> #TS(TSS
   selector)); SS null -> #TS(0); beyond the table, RPL != DPL, DPL != DPL of
   the code segment or not writable data -> #TS(SS selector); not present ->
   #SS(SS selector); no room for the frame (16 bytes + 4 per parameter through a
   32-bit gate, 8 + 2 per parameter through a 16-bit one) -> #SS(SS selector);
   the entry point beyond the CS limit -> #GP(0). The new stack gets, from high
   to low, the caller's SS and ESP, the gate's count (5 bits) of parameters copied
   from the caller's stack in their order, and the caller's CS and return EIP.
   A 16-bit gate pushes every item as a word and takes a 16-bit entry point.
4. Otherwise **same privilege**: CS:EIP pushed on the current stack (gate-size
   items; #SS(0) when they do not fit), the entry point checked (#GP(0)).

JMP through a call gate never changes privilege (Vol.2 JMP: the target must be
conforming with DPL <= CPL or non-conforming with DPL = CPL). The return, a far
RET to an outer level, is ``protected.far_return``.

Nothing changes before every check has passed; only the new stack below its
pointer may be written before a later fault (as for interrupt delivery).
"""

from __future__ import annotations

from typing import Any

from vmi.cpu import paging, protected
from vmi.cpu.descriptors import (
    SYS_CALL_GATE32,
    SegmentDescriptor,
    cache_of,
    describe,
    fetch_descriptor,
    is_null,
    selector_error,
    tss_stack,
)
from vmi.cpu.errors import GP, NP, SS, TS, CPUException

M32 = 0xFFFFFFFF
CS, SS_REG = 1, 2


def gate_bits(gate: SegmentDescriptor) -> int:
    """32 for a 386 call gate (type 12), 16 for a 286 one (type 4)."""
    return 32 if gate.type == SYS_CALL_GATE32 else 16


def gate_selector(gate: SegmentDescriptor) -> int:
    """The code-segment selector of a call gate (bits 16..31 of the low dword)."""
    return (gate.low >> 16) & 0xFFFF


def gate_offset(gate: SegmentDescriptor) -> int:
    """The entry point of a call gate: offset 15:0 in the low dword, 31:16 in the
    high dword of a 32-bit gate (SDM Vol.3A §5.8.3, Figure 5-8)."""
    low = gate.low & 0xFFFF
    return low | (gate.high & 0xFFFF0000) if gate_bits(gate) == 32 else low


def gate_count(gate: SegmentDescriptor) -> int:
    """The parameter count of a call gate (bits 0..4 of byte 4)."""
    return gate.high & 0x1F


def _gate_code_segment(cpu: Any, gate: SegmentDescriptor, what: str,
                       jump: bool) -> tuple[int, SegmentDescriptor]:
    """Checks of the code segment a call gate names (SDM Vol.2 CALL/JMP "CALL-GATE")."""
    selector = gate_selector(gate)
    if is_null(selector):
        raise CPUException(GP, 0, f"{what} through call gate {gate.selector:#x}: null "
                           "code selector")
    desc = fetch_descriptor(cpu, selector)
    if desc is None:
        raise CPUException(GP, selector_error(selector), f"{what} through call gate "
                           f"{gate.selector:#x}: CS {selector:#x} beyond the table limit")
    cpl = cpu.cpl
    if not desc.is_code:
        raise CPUException(GP, selector_error(selector), f"{what} through call gate "
                           f"{gate.selector:#x} to {describe(desc)}")
    if jump:
        bad = desc.dpl > cpl if desc.conforming else desc.dpl != cpl
    else:
        bad = desc.dpl > cpl
    if bad:
        raise CPUException(GP, selector_error(selector), f"{what} at CPL {cpl} through call "
                           f"gate {gate.selector:#x} to {describe(desc)}")
    if not desc.present:
        raise CPUException(NP, selector_error(selector), f"not present: {describe(desc)}")
    return selector, desc


def jump_through_gate(cpu: Any, gate: SegmentDescriptor) -> None:
    """JMP through a call gate (SDM Vol.2 JMP "CALL-GATE"): the gate's code segment
    at the same privilege (conforming DPL <= CPL, non-conforming DPL = CPL), entry
    point within its limit (#GP(0)); CS.RPL becomes the CPL."""
    selector, desc = _gate_code_segment(cpu, gate, "far jmp", jump=True)
    target = gate_offset(gate)
    if target > desc.limit:
        raise CPUException(GP, 0, f"far jmp through call gate {gate.selector:#x} to "
                           f"{target:#x}, beyond the CS limit {desc.limit:#x}")
    protected._mark_accessed(cpu, desc)
    protected._set_cs(cpu, selector, desc, cpu.cpl)
    cpu.eip = target
    protected.refresh(cpu)


def call_through_gate(cpu: Any, gate: SegmentDescriptor, return_ip: int) -> None:
    """CALL through a call gate (SDM Vol.2 CALL "CALL-GATE", "MORE-PRIVILEGE",
    "SAME-PRIVILEGE"; Vol.3A §5.8.5, Figure 5-13): see the module docstring."""
    selector, desc = _gate_code_segment(cpu, gate, "far call", jump=False)
    bits = gate_bits(gate)
    unit = bits // 8
    target = gate_offset(gate)
    cpl = cpu.cpl
    old_cs, old_ss, old_esp = cpu.sreg[CS], cpu.sreg[SS_REG], cpu.r[4]
    ret = return_ip & (M32 if unit == 4 else 0xFFFF)
    if not desc.conforming and desc.dpl < cpl:
        new_cpl = desc.dpl
        ss, esp = tss_stack(cpu, new_cpl, 0)
        if is_null(ss):
            raise CPUException(TS, 0, f"call gate {gate.selector:#x}: TSS ss{new_cpl} is null")
        ss_desc = fetch_descriptor(cpu, ss)
        if ss_desc is None:
            raise CPUException(TS, selector_error(ss), f"call gate {gate.selector:#x}: TSS "
                               f"ss{new_cpl} {ss:#x} beyond the table limit")
        if ss & 3 != new_cpl or ss_desc.dpl != new_cpl or not ss_desc.writable:
            raise CPUException(TS, selector_error(ss), f"call gate {gate.selector:#x}: TSS "
                               f"ss{new_cpl} {ss:#x} must be writable data with RPL = DPL = "
                               f"{new_cpl}: {describe(ss_desc)}")
        if not ss_desc.present:
            raise CPUException(SS, selector_error(ss), f"not present: {describe(ss_desc)}")
        count = gate_count(gate)
        base, limit, attr = cache_of(ss_desc)
        new_bits = 32 if ss_desc.big else 16
        mask = M32 if new_bits == 32 else 0xFFFF
        total = 4 + count
        offsets = [(esp - unit * (i + 1)) & mask for i in range(total)]
        if not protected.stack_fits(limit, attr, offsets, unit):
            raise CPUException(SS, selector_error(ss), f"call gate {gate.selector:#x}: no "
                               f"room for {unit * total} bytes on the ring-{new_cpl} stack")
        if target > desc.limit:
            raise CPUException(GP, 0, f"call gate {gate.selector:#x} entry point "
                               f"{target:#x} beyond the CS limit {desc.limit:#x}")
        # The parameters, read from the caller's stack (its limit checks, #SS(0)),
        # highest first so that they keep their order on the new stack.
        read = cpu.rd32 if unit == 4 else cpu.rd16
        old_mask = M32 if cpu.stack_bits == 32 else 0xFFFF
        params = [read(SS_REG, (old_esp + unit * i) & old_mask)
                  for i in reversed(range(count))]
        values = [old_ss, old_esp, *params, old_cs, ret]
        if unit == 2:
            values = [v & 0xFFFF for v in values]
        protected._mark_accessed(cpu, desc, ss_desc)
        for off, value in zip(offsets, values, strict=True):
            paging.write_linear(cpu, (base + off) & M32, unit, value, user=False)
        protected._load_cache(cpu, SS_REG, ss, ss_desc)
        cpu.r[4] = ((esp & ~mask) | offsets[-1]) & M32 if new_bits == 16 else offsets[-1]
        protected._set_cs(cpu, selector, desc, new_cpl)
    else:
        slots = protected._stack_offsets(cpu, old_esp, 2, unit, down=True)
        write = cpu.wr32 if unit == 4 else cpu.wr16
        # The stores check the room on the stack first (#SS(0)); they land below
        # ESP, so the #GP(0) of a bad entry point after them changes nothing visible.
        write(SS_REG, slots[0], old_cs)
        write(SS_REG, slots[1], ret)
        if target > desc.limit:
            raise CPUException(GP, 0, f"call gate {gate.selector:#x} entry point "
                               f"{target:#x} beyond the CS limit {desc.limit:#x}")
        protected._mark_accessed(cpu, desc)
        protected._set_esp(cpu, slots[1], cpu.stack_bits)
        protected._set_cs(cpu, selector, desc, cpl)
    cpu.eip = target
    protected.refresh(cpu)
