"""Call gates (vmi/cpu/gates.py) and the far RET that returns through them: far CALL
and JMP through 16- and 32-bit call gates at the same and at a more privileged
level, the parameter copy, the far RET to an outer level, and every fault of the
SDM pseudo-code with its error code (SDM Vol.3A §5.8.3-§5.8.6; Vol.2 CALL, JMP,
RET). Each test's docstring names its rule; the tables are those of
tests/cpu/test_protected.py."""

from __future__ import annotations

import struct

import pytest

from tests.cpu.test_protected import (
    ABSENT_CS,
    CODE,
    CONFORMING_CS,
    K_CS,
    K_DS,
    KSTACK0,
    KSTACK1,
    R1_CS,
    R1_CS16,
    R1_DS,
    RO_DS,
    TSS,
    TSS_SEL,
    USER_CS,
    USER_DS,
    USTACK,
    dwords,
    enter,
    fault_of,
    put_desc,
    run_code,
    seg_desc,
    system_cpu,
)
from vmi.cpu import protected

GATE = 0x100  # the gate each test writes
SMALL_SS = 0x108  # ring 0 data, limit 0xFFF
ENTRY = 0x60000  # the gate's entry point


def call_gate(selector: int, offset: int, *, bits: int = 32, dpl: int = 3, p: int = 1,
              count: int = 0) -> bytes:
    """Encode a call gate (SDM Vol.3A §5.8.3, Figure 5-8): type 12 (32-bit) or 4."""
    low = (offset & 0xFFFF) | ((selector & 0xFFFF) << 16)
    high = ((offset & 0xFFFF0000) if bits == 32 else 0) | (p << 15) | (dpl << 13) | \
        ((12 if bits == 32 else 4) << 8) | (count & 0x1F)
    return struct.pack("<II", low, high)


def user_cpu(*, platform: bool = False):
    cpu = system_cpu(cpl=3, platform=platform)
    cpu.r[4] = USTACK + 0x8000
    return cpu


def snapshot(cpu) -> tuple:
    return (list(cpu.r), cpu.eip, list(cpu.sreg), cpu.cpl, cpu.eflags)


def push(cpu, *values: int, size: int = 4) -> None:
    """Push ``values`` in order (the last ends on top)."""
    for value in values:
        cpu.r[4] -= size
        cpu.mem.load(cpu.r[4], value.to_bytes(size, "little"))


# -- transfers -------------------------------------------------------------------------------
def test_inward_call_through_32bit_gate_copies_parameters():
    """SDM Vol.3A §5.8.5, Figure 5-13 / Vol.2 CALL "MORE-PRIVILEGE": ring 3 calls a
    ring-0 segment through a DPL 3 gate with count 3: SS:ESP from the TSS's
    ss0:esp0; the new stack holds (low to high) EIP, CS, the three parameters in
    their order, the caller's ESP and SS; CPL 0, CS.RPL 0, EIP = the gate's."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, count=3))
    push(cpu, 0x333, 0x222, 0x111)  # 0x111 on top: parameter 0
    esp = cpu.r[4]
    cpu.eip = 0x7777
    protected.far_call(cpu, GATE | 3, 0xDEAD, 32)
    assert (cpu.cpl, cpu.sreg[1], cpu.sreg[2], cpu.eip) == (0, K_CS, K_DS, ENTRY)
    assert cpu.r[4] == KSTACK0 - 28
    assert dwords(cpu, KSTACK0 - 28, 7) == [0x7777, USER_CS, 0x111, 0x222, 0x333, esp, USER_DS]


def test_inward_call_through_16bit_gate_pushes_words():
    """SDM Vol.2 CALL "MORE-PRIVILEGE", CallGateSize = 16: every item is a word
    (SS, SP, the count of parameter words, CS, IP) and the entry point is the
    gate's 16-bit offset; the new stack needs 8 + 2 * count bytes."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, 0x12345, bits=16, count=2))
    push(cpu, 0xBBBB, 0xAAAA, size=2)
    esp = cpu.r[4]
    cpu.eip = 0x4321
    protected.far_call(cpu, GATE, 0, 16)
    assert (cpu.cpl, cpu.eip, cpu.r[4]) == (0, 0x2345, KSTACK0 - 12)
    assert struct.unpack("<6H", cpu.mem.read_bytes(KSTACK0 - 12, 12)) == (
        0x4321, USER_CS, 0xAAAA, 0xBBBB, esp & 0xFFFF, USER_DS)


def test_inward_call_to_ring1_uses_ss1_esp1():
    """SDM Vol.2 CALL "MORE-PRIVILEGE": the TSS stack is the one of the target
    code segment's DPL (ss1:esp1 for a ring-1 segment, §7.2.1)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(R1_CS, 0x1000))
    protected.far_call(cpu, GATE, 0, 32)
    assert (cpu.cpl, cpu.sreg[1], cpu.sreg[2], cpu.r[4]) == (1, R1_CS, R1_DS, KSTACK1 - 16)


def test_same_level_call_through_gate_pushes_only_the_return_address():
    """SDM Vol.2 CALL "SAME-PRIVILEGE" (call gate): a gate to a segment of the
    current level pushes CS:EIP on the current stack; no stack switch, no
    parameter copy (the count is ignored), CPL unchanged."""
    cpu = system_cpu(cpl=0, platform=False)
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, dpl=0, count=4))
    esp = cpu.r[4]
    cpu.eip = 0x5555
    protected.far_call(cpu, GATE, 0, 32)
    assert (cpu.cpl, cpu.eip, cpu.r[4], cpu.sreg[2]) == (0, ENTRY, esp - 8, K_DS)
    assert dwords(cpu, esp - 8, 2) == [0x5555, K_CS]


def test_call_through_gate_to_conforming_code_keeps_the_cpl():
    """SDM Vol.3A §5.8.5 / Vol.2 CALL: a conforming target runs at the caller's CPL
    (no stack switch); CS.RPL becomes the CPL."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(CONFORMING_CS, ENTRY))
    esp = cpu.r[4]
    protected.far_call(cpu, GATE, 0, 32)
    assert (cpu.cpl, cpu.sreg[1], cpu.r[4], cpu.sreg[2]) == (3, CONFORMING_CS | 3, esp - 8,
                                                              USER_DS)


def test_jump_through_gate_keeps_the_privilege():
    """SDM Vol.2 JMP "CALL-GATE": the gate's code segment must be non-conforming with
    DPL = CPL or conforming with DPL <= CPL (#GP(CS selector) otherwise: JMP never
    changes privilege); nothing is pushed; a 16-bit gate gives a 16-bit EIP."""
    cpu = system_cpu(cpl=0, platform=False)
    put_desc(cpu, GATE, call_gate(K_CS, 0xABCD1234, bits=16, dpl=0))
    esp = cpu.r[4]
    protected.far_jump(cpu, GATE, 0)
    assert (cpu.eip, cpu.r[4], cpu.sreg[1], cpu.cpl) == (0x1234, esp, K_CS, 0)
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY))
    before = snapshot(cpu)
    assert fault_of(lambda: protected.far_jump(cpu, GATE, 0)) == (13, K_CS)
    assert snapshot(cpu) == before
    put_desc(cpu, GATE, call_gate(CONFORMING_CS, ENTRY))
    protected.far_jump(cpu, GATE, 0)
    assert (cpu.cpl, cpu.sreg[1], cpu.eip) == (3, CONFORMING_CS | 3, ENTRY)


# -- far RET to an outer level ---------------------------------------------------------------------
def test_far_ret_outward_releases_parameters_on_both_stacks_and_nulls_segments():
    """SDM Vol.2 RET "RETURN-TO-OUTER-PRIVILEGE-LEVEL" / Vol.3A §5.8.6: after an
    inward call with 2 parameters, ``lret $8`` pops EIP and CS, skips 8 bytes, pops
    ESP and SS, and skips 8 bytes on the outer stack too; DS/ES/FS/GS holding data
    or non-conforming code with DPL < the new CPL are nulled, the others kept."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, count=2))
    push(cpu, 0x22, 0x11)
    esp = cpu.r[4]
    cpu.eip = 0x9000
    protected.far_call(cpu, GATE, 0, 32)
    protected.load_segment(cpu, 3, K_DS)  # DS: ring-0 data -> nulled
    protected.load_segment(cpu, 0, USER_DS)  # ES: ring-3 data -> kept
    protected.load_segment(cpu, 4, CONFORMING_CS)  # FS: conforming code -> kept
    protected.load_segment(cpu, 5, R1_DS)  # GS: ring-1 data -> nulled
    protected.far_return(cpu, 32, 8)
    assert (cpu.cpl, cpu.sreg[1], cpu.sreg[2], cpu.eip) == (3, USER_CS, USER_DS, 0x9000)
    assert cpu.r[4] == esp + 8
    assert (cpu.sreg[3], cpu.sreg[0], cpu.sreg[4], cpu.sreg[5]) == (0, USER_DS, CONFORMING_CS, 0)
    assert fault_of(lambda: cpu.rd8(3, 0)) == (13, 0), "a nulled DS is unusable"


def test_16bit_far_ret_outward_after_a_16bit_gate():
    """SDM Vol.2 RET with a 16-bit operand: IP, CS, then (after the release) SP and SS
    are words; the release applies to both stacks. (Only SP is saved through a
    16-bit gate, so the caller's stack lies below 64 KiB here.)"""
    cpu = user_cpu()
    cpu.r[4] = 0xF000
    put_desc(cpu, GATE, call_gate(K_CS, 0x2000, bits=16, count=1))
    push(cpu, 0x7777, size=2)
    esp = cpu.r[4]
    cpu.eip = 0x1234
    protected.far_call(cpu, GATE, 0, 16)
    protected.far_return(cpu, 16, 2)
    assert (cpu.cpl, cpu.eip, cpu.sreg[2], cpu.r[4]) == (3, 0x1234, USER_DS, esp + 2)


def test_ring3_program_calls_a_ring0_gate_and_returns():
    """A real transition (SDM Vol.3A §5.8.5-§5.8.6): a ring-3 program pushes two
    arguments and executes ``lcall $gate,$0``; the ring-0 routine adds its copied
    arguments and returns with ``lret $8``; the program continues at ring 3 with
    its stack balanced and the sum in EBX."""
    cpu = user_cpu(platform=True)
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, count=2))
    # ring 0: mov 8(%esp),%eax; add 12(%esp),%eax; lret $8
    cpu.mem.load(ENTRY, bytes.fromhex("8b442408" "0344240c" "ca0800"))
    # ring 3: push $0x11; push $0x22; lcall $GATE|3,$0; mov %eax,%ebx
    program = bytes.fromhex("6a11" "6a22" "9a00000000") + struct.pack("<H", GATE | 3) + \
        bytes.fromhex("89c3")
    esp = cpu.r[4]
    run_code(cpu, program, steps=3)
    assert (cpu.cpl, cpu.eip, cpu.sreg[2]) == (0, ENTRY, K_DS)
    cpu.run(4)
    assert cpu.cpl == 3 and cpu.sreg[1] == USER_CS and cpu.sreg[2] == USER_DS
    assert cpu.r[3] == 0x33 and cpu.r[4] == esp and cpu.eip == CODE + len(program)


# -- faults ----------------------------------------------------------------------------------------
def gate_fault(cpu, selector: int = GATE | 3, *, jump: bool = False) -> tuple:
    """The (vector, error code) of a far CALL (or JMP) through ``selector``; the
    registers must be unchanged afterwards (SDM Vol.3A §6.5: restartable)."""
    before = snapshot(cpu)
    if jump:
        result = fault_of(lambda: protected.far_jump(cpu, selector, 0))
    else:
        result = fault_of(lambda: protected.far_call(cpu, selector, 0, 32))
    assert snapshot(cpu) == before
    return result


def test_gate_dpl_below_cpl_is_gp_gate_selector():
    """SDM Vol.2 CALL "CALL-GATE": call gate DPL < CPL -> #GP(call gate selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, dpl=0))
    assert gate_fault(cpu) == (13, GATE)
    assert gate_fault(cpu, jump=True) == (13, GATE)


def test_gate_rpl_above_dpl_is_gp_gate_selector():
    """SDM Vol.2 CALL "CALL-GATE": RPL > call gate DPL -> #GP(call gate selector)."""
    cpu = system_cpu(cpl=0, platform=False)
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, dpl=2))
    assert gate_fault(cpu, GATE | 3) == (13, GATE)


def test_gate_not_present_is_np_gate_selector():
    """SDM Vol.2 CALL "CALL-GATE": gate not present -> #NP(call gate selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, p=0))
    assert gate_fault(cpu) == (11, GATE)


def test_gate_null_code_selector_is_gp0():
    """SDM Vol.2 CALL "CALL-GATE": the gate's code-segment selector null -> #GP(0)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(0, ENTRY))
    assert gate_fault(cpu) == (13, 0)


def test_gate_code_selector_beyond_the_table_is_gp_selector():
    """SDM Vol.2 CALL "CALL-GATE": code selector beyond the table -> #GP(selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(0x7F8, ENTRY))
    assert gate_fault(cpu) == (13, 0x7F8)


def test_gate_to_data_or_outer_code_is_gp_selector():
    """SDM Vol.2 CALL "CALL-GATE": not a code segment, or code DPL > CPL ->
    #GP(code segment selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_DS, ENTRY))
    assert gate_fault(cpu) == (13, K_DS)
    cpu = system_cpu(cpl=0, platform=False)
    put_desc(cpu, GATE, call_gate(USER_CS, ENTRY))
    assert gate_fault(cpu) == (13, USER_CS & ~3)


def test_gate_code_segment_not_present_is_np_selector():
    """SDM Vol.2 CALL "CALL-GATE": code segment not present -> #NP(selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(ABSENT_CS, ENTRY))
    assert gate_fault(cpu) == (11, ABSENT_CS)


def test_tss_stack_beyond_the_tss_limit_is_ts_tss_selector():
    """SDM Vol.2 CALL "MORE-PRIVILEGE": ss/esp for the new level beyond the current
    TSS's limit -> #TS(current TSS selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY))
    cpu.tr[2] = 8  # the cached limit: esp0/ss0 at 4..11 no longer fit
    assert gate_fault(cpu) == (10, TSS_SEL)


@pytest.mark.parametrize(("ss0", "expected"), [
    (0, (10, 0)),  # null -> #TS(0)
    (0x7F8, (10, 0x7F8)),  # beyond the GDT
    (K_DS | 1, (10, K_DS)),  # RPL != DPL of the code segment
    (R1_DS & ~3, (10, R1_DS & ~3)),  # DPL 1 for a ring-0 code segment
    (RO_DS, (10, RO_DS)),  # not writable
    (0x98, (12, 0x98)),  # ABSENT_DS: not present -> #SS(SS selector)
])
def test_new_stack_segment_checks(ss0, expected):
    """SDM Vol.2 CALL "MORE-PRIVILEGE": the TSS's SS null -> #TS(0); beyond the
    table, RPL or DPL != the code segment's DPL, or not writable data ->
    #TS(SS selector); not present -> #SS(SS selector)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY))
    cpu.mem.write16(TSS + 8, ss0)
    assert gate_fault(cpu) == expected


def test_no_room_on_the_new_stack_is_ss_selector():
    """SDM Vol.2 CALL "MORE-PRIVILEGE": the new stack must hold 16 bytes plus the
    parameters (32-bit gate) -> #SS(SS selector) otherwise."""
    cpu = user_cpu()
    put_desc(cpu, SMALL_SS, seg_desc(0, 0xFFF, 0x3))
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, count=2))
    cpu.mem.write16(TSS + 8, SMALL_SS)
    cpu.mem.write32(TSS + 4, 20)  # 16 + 8 bytes needed
    assert gate_fault(cpu) == (12, SMALL_SS)
    cpu.mem.write32(TSS + 4, 24)
    protected.far_call(cpu, GATE | 3, 0, 32)
    assert cpu.r[4] == 0 and cpu.sreg[2] == SMALL_SS


def test_entry_point_beyond_the_code_limit_is_gp0():
    """SDM Vol.2 CALL "MORE-PRIVILEGE" and "SAME-PRIVILEGE": the gate's instruction
    pointer beyond the code segment limit -> #GP(0)."""
    cpu = user_cpu()
    put_desc(cpu, GATE, call_gate(R1_CS16, 0x10000))
    assert gate_fault(cpu) == (13, 0)
    cpu = system_cpu(cpl=1, platform=False)
    put_desc(cpu, GATE, call_gate(R1_CS16, 0x10000))
    assert gate_fault(cpu) == (13, 0)
    assert gate_fault(cpu, jump=True) == (13, 0)


def test_no_room_for_the_return_address_at_the_same_level_is_ss0():
    """SDM Vol.2 CALL "SAME-PRIVILEGE": no room on the current stack -> #SS(0)."""
    cpu = system_cpu(cpl=0, platform=False)
    put_desc(cpu, SMALL_SS, seg_desc(0, 0xFFF, 0x3))
    enter(cpu, K_CS, SMALL_SS, K_DS, esp=0x1002)
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, dpl=0))
    assert gate_fault(cpu, GATE) == (12, 0)


def test_gate_faults_inside_a_program_report_the_lcall():
    """SDM Vol.3A §6.5: a fault of the far CALL is reported on it: the #GP frame
    holds the lcall's own EIP and the gate selector as error code."""
    cpu = user_cpu(platform=True)
    put_desc(cpu, GATE, call_gate(K_CS, ENTRY, dpl=0))
    run_code(cpu, bytes.fromhex("9a00000000") + struct.pack("<H", GATE | 3))
    assert cpu.cpl == 0 and dwords(cpu, KSTACK0 - 24, 2) == [GATE, CODE]
