"""Hardware task switching (vmi/cpu/tasks.py): JMP and CALL to a TSS or task gate,
task gates in the IDT for INT n, exceptions (with their error code) and external
interrupts, IRET with NT = 1 through the back link, 32- and 16-bit TSSs, the busy
bits, NT and the link of Table 7-2, CR0.TS, CR3 and LDTR, the segment checks made
in the new task, the #TS checks, and the T flag's debug trap (SDM Vol.3A chapter
7; Vol.2 JMP, CALL, IRET, INT n). Each test's docstring names its rule; the
tables are those of tests/cpu/test_protected.py."""

from __future__ import annotations

import struct

import pytest

from tests.cpu.test_protected import (
    ABSENT_CS,
    ABSENT_DS,
    CODE,
    GDT,
    IDT,
    K_CS,
    K_DS,
    KSTACK0,
    LDT,
    LDT_SEL,
    R1_CS,
    R1_DS,
    RO_DS,
    TSS,
    TSS_SEL,
    USER_CS,
    USER_DS,
    XONLY_CS,
    dwords,
    fault_of,
    handler,
    put_desc,
    put_gate,
    run_code,
    seg_desc,
    system_cpu,
)
from vmi.cpu import paging, protected
from vmi.cpu.errors import CPUException

TSS_B, TSS_B_SEL = 0x3400, 0x110  # the second task (32-bit TSS)
TSS_C, TSS_C_SEL = 0x3600, 0x118  # a 16-bit (286) TSS
TASK_GATE = 0x120  # a GDT task gate to TSS_B
TSS_D, TSS_D_SEL = 0x3700, 0x128  # a third task (the double-fault task)
TASK_CODE = 0x61000
TASK_STACK = 0x68000
REGS_B = [0xB0000000 + 0x111 * i for i in range(8)]


def tss32(cpu, base: int, *, eip: int = TASK_CODE, esp: int = TASK_STACK, cs: int = K_CS,
          ss: int = K_DS, ds: int = K_DS, others: int = K_DS, eflags: int = 0x2,
          cr3: int = 0, ldt: int = 0, trap: int = 0) -> None:
    """Write a 32-bit TSS (SDM Vol.3A §7.2.1, Figure 7-2) whose general registers are
    ``REGS_B`` with ESP = ``esp``; its ss0/esp0 are the system TSS's."""
    data = bytearray(0x68)
    struct.pack_into("<II", data, 4, KSTACK0, K_DS)
    struct.pack_into("<III", data, 0x1C, cr3, eip, eflags)
    regs = list(REGS_B)
    regs[4] = esp
    struct.pack_into("<8I", data, 0x28, *regs)
    struct.pack_into("<6I", data, 0x48, others, cs, ss, ds, others, others)
    struct.pack_into("<II", data, 0x60, ldt, trap | (0x68 << 16))
    cpu.mem.load(base, bytes(data))


def tss_desc(base: int, limit: int = 0x67, *, bits: int = 32, busy: bool = False,
             dpl: int = 0, p: int = 1) -> bytes:
    """A TSS descriptor (SDM Vol.3A §7.2.2): type 9/11 (32-bit) or 1/3 (16-bit)."""
    type_ = (9 if bits == 32 else 1) | (2 if busy else 0)
    return seg_desc(base, limit, type_, s=0, dpl=dpl, p=p, db=0)


def task_gate(tss_selector: int, *, dpl: int = 0, p: int = 1) -> bytes:
    """A task gate (SDM Vol.3A §7.2.5, Figure 7-6): type 5."""
    return struct.pack("<II", (tss_selector & 0xFFFF) << 16, (p << 15) | (dpl << 13) | 0x500)


def type_of(cpu, selector: int) -> int:
    """The type field of GDT entry ``selector`` in memory (busy = bit 1)."""
    return cpu.mem.read8(GDT + (selector & ~7) + 5) & 0xF


def task_cpu(*, platform: bool = False, cpl: int = 0):
    """The standard system CPU whose current task is TSS_SEL (busy, as LTR leaves
    it), with a second task TSS_B (available) and a GDT task gate to it."""
    cpu = system_cpu(platform=platform, cpl=cpl)
    cpu.mem.write8(GDT + TSS_SEL + 5, 0x8B)
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B))
    put_desc(cpu, TASK_GATE, task_gate(TSS_B_SEL, dpl=3))
    tss32(cpu, TSS_B)
    cpu.r[:] = [0xA0000000 + 0x111 * i for i in range(8)]
    cpu.r[4] = KSTACK0 - 0x100 if cpl == 0 else 0x2F000
    return cpu


def state(cpu) -> tuple:
    return (list(cpu.r), cpu.eip, list(cpu.sreg), cpu.cpl, cpu.eflags, list(cpu.tr),
            cpu.cr[0], cpu.cr[3], list(cpu.ldtr))


def saved_task(cpu, base: int) -> dict:
    """The state saved in a 32-bit TSS."""
    values = dwords(cpu, base, 26)
    return {"link": values[0] & 0xFFFF, "eip": values[8], "eflags": values[9],
            "regs": values[10:18], "segs": [v & 0xFFFF for v in values[18:24]]}


# -- JMP and CALL ------------------------------------------------------------------------------
def test_jmp_to_a_tss_switches_without_nesting():
    """SDM Vol.3A §7.3 and Table 7-2 (JMP): the old task's EIP, EFLAGS, general and
    segment registers are saved in its TSS; its busy bit is cleared and the new
    one's set; no link is written and NT is as in the new TSS; TR, the registers
    and the segments come from the new TSS; CR0.TS is set."""
    cpu = task_cpu()
    old_regs = list(cpu.r)
    cpu.eflags = 0x246
    cpu.eip = 0x5005
    protected.far_jump(cpu, TSS_B_SEL, 0xFFFF)
    assert cpu.tr[0] == TSS_B_SEL and cpu.tr[1] == TSS_B and cpu.tr[3] & 0xF == 0xB
    assert cpu.eip == TASK_CODE and cpu.r == [*REGS_B[:4], TASK_STACK, *REGS_B[5:]]
    assert cpu.eflags == 0x2 and cpu.cr[0] & 0x8, "EFLAGS from the TSS, CR0.TS set"
    assert cpu.sreg == [K_DS, K_CS, K_DS, K_DS, K_DS, K_DS] and cpu.cpl == 0
    old = saved_task(cpu, TSS)
    assert old["eip"] == 0x5005 and old["eflags"] == 0x246 and old["regs"] == old_regs
    assert old["segs"] == [K_DS, K_CS, K_DS, K_DS, K_DS, K_DS]
    assert type_of(cpu, TSS_SEL) == 0x9 and type_of(cpu, TSS_B_SEL) == 0xB
    assert saved_task(cpu, TSS_B)["link"] == 0


def test_call_to_a_tss_nests():
    """SDM Vol.3A Table 7-2 (CALL): the old task stays busy, the new one becomes
    busy, the new TSS's link gets the old TR selector and the new task runs with
    NT = 1 (§7.4)."""
    cpu = task_cpu()
    protected.far_call(cpu, TSS_B_SEL, 0, 32, 0x7007)
    assert cpu.tr[0] == TSS_B_SEL and cpu.eflags & 0x4000
    assert saved_task(cpu, TSS_B)["link"] == TSS_SEL and saved_task(cpu, TSS)["eip"] == 0x7007
    assert type_of(cpu, TSS_SEL) == 0xB and type_of(cpu, TSS_B_SEL) == 0xB


def test_jmp_through_a_task_gate():
    """SDM Vol.2 JMP "TASK-GATE": the gate's DPL is checked against CPL and RPL, then
    the switch goes to the TSS the gate names (no nesting)."""
    cpu = task_cpu(cpl=3)
    protected.far_jump(cpu, TASK_GATE | 3, 0)
    assert cpu.tr[0] == TSS_B_SEL and cpu.cpl == 0 and not cpu.eflags & 0x4000
    assert type_of(cpu, TSS_SEL) == 0x9


def test_call_task_and_iret_back_round_trip():
    """SDM Vol.3A §7.3, §7.4: task A calls task B through a task gate (``lcall``); B
    changes EAX and returns with IRET (NT = 1: back through the link). A resumes
    after its CALL with every register as before; B's TSS holds B's state after
    its IRET (EIP past it, EFLAGS with NT cleared); B is no longer busy, A still is."""
    cpu = task_cpu(platform=True)
    tss32(cpu, TSS_B, eflags=0x202)
    cpu.mem.load(TASK_CODE, bytes.fromhex("b834120000" "cf"))  # mov $0x1234,%eax; iret
    cpu.eflags = 0x8C3  # OF, SF, CF, ... (flags of A that must come back)
    before_regs = list(cpu.r)
    program = bytes.fromhex("9a00000000") + struct.pack("<H", TASK_GATE)
    run_code(cpu, program, steps=1)
    assert cpu.tr[0] == TSS_B_SEL and cpu.eip == TASK_CODE and cpu.eflags == 0x4202
    cpu.run(2)
    assert cpu.tr[0] == TSS_SEL and cpu.eip == CODE + len(program)
    assert cpu.r == before_regs and cpu.eflags == 0x8C3
    assert cpu.sreg == [K_DS, K_CS, K_DS, K_DS, K_DS, K_DS] and cpu.cpl == 0
    b = saved_task(cpu, TSS_B)
    assert b["eip"] == TASK_CODE + 6 and b["eflags"] == 0x202 and b["link"] == TSS_SEL
    assert b["regs"] == [0x1234, *REGS_B[1:4], TASK_STACK, *REGS_B[5:]]
    assert type_of(cpu, TSS_B_SEL) == 0x9 and type_of(cpu, TSS_SEL) == 0xB


def test_iret_task_return_clears_the_old_busy_bit_and_saves_nt_clear():
    """SDM Vol.3A Table 7-2 (IRET): the old task's busy bit is cleared and its saved
    EFLAGS has NT = 0; the new (returned-to) task must already be busy and stays so;
    nothing is written to its link."""
    cpu = task_cpu()
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B, busy=True))
    cpu.mem.write16(TSS, TSS_B_SEL)  # A's link: B
    cpu.eflags = 0x4002
    protected.iret(cpu, 32)
    assert cpu.tr[0] == TSS_B_SEL and saved_task(cpu, TSS)["eflags"] == 0x2
    assert type_of(cpu, TSS_SEL) == 0x9 and type_of(cpu, TSS_B_SEL) == 0xB


# -- through the IDT ----------------------------------------------------------------------------
def test_exception_through_a_task_gate_pushes_its_error_code_on_the_new_stack():
    """SDM Vol.2 INT n "TASK-GATE"; Vol.3A §6.11.1, §6.13: a #GP whose IDT entry is a
    task gate switches tasks with nesting (link, NT, busy); the old task saves the
    faulting instruction's EIP; the error code goes on the new task's stack."""
    cpu = task_cpu(platform=True)
    put_gate(cpu, 13, task_gate(TSS_B_SEL))
    cpu.r[0] = 0x7F8
    run_code(cpu, bytes.fromhex("8ed8"))  # mov %eax,%ds: selector beyond the GDT
    assert cpu.tr[0] == TSS_B_SEL and cpu.eip == TASK_CODE and cpu.eflags & 0x4000
    assert cpu.r[4] == TASK_STACK - 4 and dwords(cpu, TASK_STACK - 4, 1) == [0x7F8]
    old = saved_task(cpu, TSS)
    assert old["eip"] == CODE and old["regs"][0] == 0x7F8
    assert saved_task(cpu, TSS_B)["link"] == TSS_SEL and type_of(cpu, TSS_SEL) == 0xB


def test_int_n_through_a_task_gate_and_its_dpl():
    """SDM Vol.2 INT n "TASK-GATE": INT n checks the task gate's DPL against the CPL
    (#GP(vector*8+2) otherwise); it pushes no error code; the old task resumes
    after the INT."""
    cpu = task_cpu(platform=True)
    put_gate(cpu, 0x40, task_gate(TSS_B_SEL, dpl=0))
    run_code(cpu, bytes.fromhex("cd40"))
    assert cpu.tr[0] == TSS_B_SEL and cpu.r[4] == TASK_STACK
    assert saved_task(cpu, TSS)["eip"] == CODE + 2
    cpu = task_cpu(platform=True, cpl=3)
    put_gate(cpu, 0x40, task_gate(TSS_B_SEL, dpl=0))
    run_code(cpu, bytes.fromhex("cd40"))
    assert cpu.tr[0] == TSS_SEL and cpu.eip == handler(13)
    assert dwords(cpu, KSTACK0 - 24, 2) == [0x40 * 8 + 2, CODE]


def test_external_interrupt_through_a_task_gate_faults_with_ext():
    """SDM Vol.3A §6.13: a fault while an external interrupt is delivered through a
    task gate carries EXT = 1: a task gate naming a TSS whose limit is below 0x67
    is #TS(TSS selector + 1); a task gate naming a busy TSS is #GP(TSS selector + 1)."""
    cpu = task_cpu(platform=True)
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B, limit=0x50))
    put_gate(cpu, 0x30, task_gate(TSS_B_SEL))
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x30)
    assert cpu.eip == handler(10) and dwords(cpu, esp - 16, 1) == [TSS_B_SEL | 1]
    cpu = task_cpu(platform=True)
    put_gate(cpu, 0x30, task_gate(TSS_SEL))
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x30)
    assert cpu.eip == handler(13) and dwords(cpu, esp - 16, 1) == [TSS_SEL | 1]


def test_double_fault_through_a_task_gate_runs_on_its_own_stack():
    """SDM Vol.3A §6.15 "Interrupt 8", §7.3 (Linux 2.6's doublefault.c): a #DF whose
    IDT entry is a task gate runs its handler in its own task, on the stack of its
    TSS, with error code 0 pushed there and the faulting task in its link; the
    faulting task's state is saved in its TSS."""
    cpu = task_cpu(platform=True)
    put_desc(cpu, TSS_D_SEL, tss_desc(TSS_D))
    tss32(cpu, TSS_D, eip=0x62000, esp=0x6C000)
    put_gate(cpu, 8, task_gate(TSS_D_SEL))
    put_gate(cpu, 13, struct.pack("<II", 0, 0))  # #GP's gate not present: #NP -> #DF
    cpu.r[0] = 0x7F8
    run_code(cpu, bytes.fromhex("8ed8"))
    assert cpu.tr[0] == TSS_D_SEL and cpu.eip == 0x62000
    assert cpu.r[4] == 0x6C000 - 4 and dwords(cpu, 0x6C000 - 4, 1) == [0]
    assert saved_task(cpu, TSS_D)["link"] == TSS_SEL and saved_task(cpu, TSS)["eip"] == CODE


# -- formats, CR3, LDTR --------------------------------------------------------------------------
def test_16bit_tss():
    """SDM Vol.3A §7.6, Figure 7-10: a 286 TSS holds IP, FLAGS, AX..DI, ES CS SS DS and
    the LDT selector as words; loading it sets the upper halves of the general
    registers to FFFFh ("modified and not maintained"), FS and GS null, keeps CR3;
    saving into it writes words. Its limit must be at least 2Bh (#TS)."""
    cpu = task_cpu()
    data = bytearray(0x2C)
    struct.pack_into("<HH", data, 0x0E, 0x1234, 0x0202)
    struct.pack_into("<8H", data, 0x12, *range(0x10, 0x18))
    struct.pack_into("<4HH", data, 0x22, K_DS, K_CS, K_DS, K_DS, 0)
    cpu.mem.load(TSS_C, bytes(data))
    put_desc(cpu, TSS_C_SEL, tss_desc(TSS_C, 0x2A, bits=16))
    before = state(cpu)
    assert fault_of(lambda: protected.far_jump(cpu, TSS_C_SEL, 0)) == (10, TSS_C_SEL)
    assert state(cpu) == before
    put_desc(cpu, TSS_C_SEL, tss_desc(TSS_C, 0x2B, bits=16))
    cpu.cr[3] = 0x5000
    protected.far_call(cpu, TSS_C_SEL, 0, 32, 0x4444)
    assert cpu.eip == 0x1234 and cpu.eflags == 0x4202 and cpu.cr[3] == 0x5000
    assert cpu.r == [0xFFFF0000 | v for v in range(0x10, 0x18)]
    assert cpu.sreg[4] == cpu.sreg[5] == 0 and cpu.sreg[1] == K_CS
    assert type_of(cpu, TSS_C_SEL) == 0x3 and cpu.mem.read16(TSS_C) == TSS_SEL
    cpu.r[0] = 0xFFFF5678
    cpu.eip = 0x1240
    protected.iret(cpu, 32)  # NT = 1: back to TSS_SEL, saving into the 16-bit TSS
    assert cpu.tr[0] == TSS_SEL and cpu.eip == 0x4444
    assert struct.unpack_from("<HHH", cpu.mem.read_bytes(TSS_C + 0x0E, 6)) == (0x1240, 0x0202,
                                                                                0x5678)


def test_cr3_and_ldtr_come_from_the_new_tss():
    """SDM Vol.3A §7.3 step 8, §7.2.1: with paging on, a 32-bit TSS's CR3 field is
    loaded (the TLB flushed); the LDT selector is loaded into LDTR, whose descriptor
    must be an LDT in the GDT."""
    cpu = task_cpu()
    for pd in (0x70000, 0x71000):  # two identity maps with one 4 MiB page
        cpu.mem.write32(pd, 0x83)
    cpu.cr[4] |= 0x10
    cpu.cr[3] = 0x70000
    cpu.cr[0] |= 0x80000000
    cpu.mode_changed()
    tss32(cpu, TSS_B, cr3=0x71000, ldt=LDT_SEL)
    protected.far_jump(cpu, TSS_B_SEL, 0)
    assert cpu.cr[3] == 0x71000 and cpu.ldtr[:3] == [LDT_SEL, LDT, 0x3F]
    assert paging.linear_to_physical(cpu, 0x1234) == 0x1234


def test_ldt_selector_checks_are_ts_in_the_new_task():
    """SDM Vol.3A Table 7-1: the new task's LDT selector must be a GDT selector of a
    present LDT descriptor, else #TS(LDT selector) raised after the commit point:
    TR already names the new task, whose EIP the fault saves."""
    for ldt in (LDT_SEL | 4, K_DS, 0x7F8):
        cpu = task_cpu()
        tss32(cpu, TSS_B, ldt=ldt)
        with pytest.raises(CPUException) as info:
            protected.far_jump(cpu, TSS_B_SEL, 0)
        assert (info.value.vector, info.value.error_code) == (10, ldt & ~3)
        assert getattr(info.value, "new_task", False) and cpu.tr[0] == TSS_B_SEL
        assert cpu.eip == TASK_CODE


@pytest.mark.parametrize(("fields", "expected"), [
    ({"ss": 0}, (10, 0)),  # SS null
    ({"ss": K_DS | 1}, (10, K_DS)),  # SS RPL != CPL
    ({"ss": R1_DS & ~3}, (10, R1_DS & ~3)),  # SS DPL != CPL
    ({"ss": RO_DS}, (10, RO_DS)),  # SS not writable
    ({"ss": ABSENT_DS}, (12, ABSENT_DS)),  # SS not present: #SS
    ({"ds": XONLY_CS}, (10, XONLY_CS)),  # DS not readable
    ({"cs": R1_CS, "ss": R1_DS, "ds": K_DS}, (10, K_DS)),  # DS DPL < CPL
    ({"ds": ABSENT_DS}, (11, ABSENT_DS)),  # DS not present: #NP
    ({"cs": K_DS}, (10, K_DS)),  # CS not code
    ({"cs": USER_CS}, (10, K_DS)),  # CPL 3 with a ring-0 SS: SS fails first
    ({"cs": K_CS | 3, "ss": USER_DS, "ds": USER_DS, "others": USER_DS},
     (10, K_CS)),  # CS DPL != RPL
    ({"cs": ABSENT_CS}, (11, ABSENT_CS)),  # CS not present: #NP
    ({"eip": 0x10000, "cs": 0xB9, "ss": R1_DS, "ds": R1_DS, "others": R1_DS}, (13, 0)),
])
def test_segment_checks_after_the_switch(fields, expected):
    """SDM Vol.3A Table 7-1, §7.3: the new task's SS (#TS, #SS when not present),
    DS/ES/FS/GS (#TS unless readable with DPL >= CPL and RPL, #NP when not present)
    and CS (#TS unless code with the right DPL, #NP when not present) are checked
    in the new task's context (CPL = RPL of the new CS); then the EIP against the
    CS limit (#GP(0))."""
    cpu = task_cpu()
    tss32(cpu, TSS_B, **fields)
    with pytest.raises(CPUException) as info:
        protected.far_jump(cpu, TSS_B_SEL, 0)
    assert (info.value.vector, info.value.error_code) == expected
    assert cpu.tr[0] == TSS_B_SEL and getattr(info.value, "new_task", False)


def test_fault_in_the_new_task_is_delivered_with_its_eip():
    """SDM Vol.3A §7.3: "exceptions that occur after the commit point are handled in
    the context of the new task": a ``ljmp`` to a task whose DS is not present
    ends in the #NP handler with the new task's EIP in the frame."""
    cpu = task_cpu(platform=True)
    tss32(cpu, TSS_B, ds=ABSENT_DS, esp=0x67000)
    run_code(cpu, bytes.fromhex("ea00000000") + struct.pack("<H", TSS_B_SEL))
    assert cpu.eip == handler(11) and cpu.tr[0] == TSS_B_SEL
    assert dwords(cpu, 0x67000 - 16, 2) == [ABSENT_DS, TASK_CODE]


# -- checks before the switch ----------------------------------------------------------------------
def pre_fault(cpu, call) -> tuple:
    before = state(cpu)
    result = fault_of(call)
    assert state(cpu) == before
    return result


def test_checks_of_the_tss_and_task_gate_before_the_switch():
    """SDM Vol.2 JMP/CALL "TASK-GATE", "TASK-STATE-SEGMENT"; Vol.3A Table 7-1: TSS or
    gate DPL < CPL or RPL -> #GP(selector); busy TSS -> #GP(TSS selector); not
    present -> #NP; a TSS in the LDT or a task gate's TSS selector with TI set ->
    #GP(TSS selector); new TSS limit < 67h -> #TS(TSS selector). Nothing changes."""
    cpu = task_cpu(cpl=3)
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TSS_B_SEL, 0)) == (13, TSS_B_SEL)
    cpu = task_cpu()
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TSS_B_SEL | 3, 0)) == (13, TSS_B_SEL)
    put_desc(cpu, TASK_GATE, task_gate(TSS_B_SEL, dpl=0))
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TASK_GATE | 1, 0)) == (13, TASK_GATE)
    put_desc(cpu, TASK_GATE, task_gate(TSS_B_SEL, p=0))
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TASK_GATE, 0)) == (11, TASK_GATE)
    put_desc(cpu, TASK_GATE, task_gate(TSS_SEL))  # busy
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TASK_GATE, 0)) == (13, TSS_SEL)
    put_desc(cpu, TASK_GATE, task_gate(LDT_SEL | 4))
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TASK_GATE, 0)) == (13, LDT_SEL | 4)
    put_desc(cpu, TASK_GATE, task_gate(TSS_B_SEL))
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B, p=0))
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TASK_GATE, 0)) == (11, TSS_B_SEL)
    assert pre_fault(cpu, lambda: protected.far_call(cpu, TSS_B_SEL, 0, 32)) == (11, TSS_B_SEL)
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B, limit=0x66))
    assert pre_fault(cpu, lambda: protected.far_call(cpu, TSS_B_SEL, 0, 32)) == (10, TSS_B_SEL)
    cpu.mem.load(LDT + 8, tss_desc(TSS_B))
    cpu.ldtr[:] = [LDT_SEL, LDT, 0x3F, 0x82]
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, 0x0C, 0)) == (13, 0x0C)


def test_iret_back_link_checks():
    """SDM Vol.2 IRET "TASK-RETURN": the link must be a GDT selector (#TS(link)) of a
    busy TSS (#TS(link)) that is present (#NP(link))."""
    cpu = task_cpu()
    cpu.eflags = 0x4002
    cpu.mem.write16(TSS, TSS_B_SEL)  # available, not busy
    assert pre_fault(cpu, lambda: protected.iret(cpu, 32)) == (10, TSS_B_SEL)
    cpu.mem.write16(TSS, TSS_B_SEL | 4)
    assert pre_fault(cpu, lambda: protected.iret(cpu, 32)) == (10, TSS_B_SEL | 4)
    put_desc(cpu, TSS_B_SEL, tss_desc(TSS_B, busy=True, p=0))
    cpu.mem.write16(TSS, TSS_B_SEL)
    assert pre_fault(cpu, lambda: protected.iret(cpu, 32)) == (11, TSS_B_SEL)


def test_current_tss_too_small_to_save_the_task_is_ts():
    """SDM Vol.3A §7.3 step 7 (Bochs makes the same check): the current TSS must hold
    the state saved in it (up to offset 5Fh), else #TS(current TSS selector)."""
    cpu = task_cpu()
    cpu.tr[2] = 0x40
    assert pre_fault(cpu, lambda: protected.far_jump(cpu, TSS_B_SEL, 0)) == (10, TSS_SEL)


# -- debug ----------------------------------------------------------------------------------
def test_t_flag_raises_a_debug_trap_in_the_new_task():
    """SDM Vol.3A §7.2.1 (T flag), §17.2.3, §17.3.1.5: a switch to a task whose TSS
    has T = 1 raises #DB (DR6.BT set) before the new task's first instruction: the
    #DB frame holds the new task's EIP."""
    cpu = task_cpu(platform=True)
    tss32(cpu, TSS_B, trap=1, esp=0x67000)
    run_code(cpu, bytes.fromhex("ea00000000") + struct.pack("<H", TSS_B_SEL))
    assert cpu.eip == handler(1) and cpu.tr[0] == TSS_B_SEL and cpu.dr[6] & 0x8000
    assert dwords(cpu, 0x67000 - 12, 2) == [TASK_CODE, K_CS]


def test_t_flag_of_a_double_fault_task_is_a_debug_trap_not_a_triple_fault():
    """SDM Vol.3A §17.3.1.5, §6.15: the #DB of a T flag follows a completed switch (the
    #DF was delivered), so it is a new event in the new task, not an exception
    raised while delivering the #DF (which would shut the processor down)."""
    cpu = task_cpu(platform=True)
    put_desc(cpu, TSS_D_SEL, tss_desc(TSS_D))
    tss32(cpu, TSS_D, eip=0x62000, esp=0x6C000, trap=1)
    put_gate(cpu, 8, task_gate(TSS_D_SEL))
    put_gate(cpu, 13, struct.pack("<II", 0, 0))
    cpu.r[0] = 0x7F8
    run_code(cpu, bytes.fromhex("8ed8"))
    assert cpu.tr[0] == TSS_D_SEL and cpu.eip == handler(1)
    assert dwords(cpu, 0x6C000 - 16, 4) == [0x62000, K_CS, 0x4002, 0]  # NT: nested


def test_task_switch_clears_the_local_breakpoint_enables():
    """SDM Vol.3A §17.2.4: L0-L3 (and LE) of DR7 are cleared on a task switch; the
    global enables stay."""
    cpu = task_cpu()
    cpu.dr[7] = 0x3FF
    protected.far_jump(cpu, TSS_B_SEL, 0)
    assert cpu.dr[7] == 0x3FF & ~0x155


def test_idt_task_gate_index_for_reference():
    """The IDT layout the tests use: IDT entries are at IDT + 8 * vector (a guard
    that put_gate writes where read_gate reads)."""
    cpu = task_cpu()
    put_gate(cpu, 0x41, task_gate(TSS_B_SEL))
    assert cpu.mem.read32(IDT + 0x41 * 8 + 4) & 0x1F00 == 0x500
    assert protected.read_gate(cpu, 0x41).kind == "task"
