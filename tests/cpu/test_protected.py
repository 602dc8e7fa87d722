"""The protected-mode system model: segment loads, far transfers, delivery through
the IDT (frames, stack switches, gates, double and triple faults), IRET and
SYSENTER/SYSEXIT. Each test builds its GDT/IDT/TSS in memory with the helpers
below and checks the architectural outcome; its docstring names the SDM rule.

The helpers (``system_cpu``, ``enter``, ``seg_desc``, ``gate_desc``, ...) are
imported by tests/cpu/test_paging.py and tests/cpu/test_system_ops.py too.
"""

from __future__ import annotations

import struct

import pytest

import vmi.cpu.ops.system  # noqa: F401  (registers the system instructions)
from vmi.cpu import CPU, Memory, paging, protected
from vmi.cpu.descriptors import ATTR_UNUSABLE, fetch_descriptor
from vmi.cpu.errors import CPUException
from vmi.cpu.platform import NativePlatform

# -- the standard layout ------------------------------------------------------------------
GDT, IDT, TSS, LDT = 0x1000, 0x2000, 0x3000, 0x3800
KSTACK0, KSTACK1, KSTACK2 = 0x9000, 0xA000, 0xB000  # esp0/esp1/esp2 in the TSS
USTACK = 0x20000
HANDLER = 0x40000  # handler of vector v at HANDLER + 0x10 * v
CODE = 0x50000

K_CS, K_DS = 0x08, 0x10  # ring 0 flat
R1_CS, R1_DS = 0x19, 0x21  # ring 1 flat (selectors with RPL 1)
R1_SMALL = 0x29  # ring 1 data, limit 0xBFFFF
ESPFIX_SS = 0x33  # ring 3, 16-bit (B=0) stack segment at 0x20000, limit 0xFFFF
ABSENT_CS = 0x38  # ring 0 code, not present
TSS_SEL = 0x40
CONFORMING_CS = 0x48  # ring 0 conforming readable code
RO_DS = 0x50  # ring 0 read-only data
EXPDOWN_SS = 0x58  # ring 0 expand-down data, limit 0xFFF, B=1
KERNEL_CS, KERNEL_DS, USER_CS, USER_DS = 0x60, 0x68, 0x73, 0x7B  # the 2.6.16 layout
LDT_SEL = 0x80
XONLY_CS = 0x88  # ring 0 execute-only code
ABSENT_DS = 0x98  # ring 0 data, not present
CALL_GATE = 0xA0
R2_CS, R2_DS = 0xAA, 0xB2  # ring 2 flat
R1_CS16 = 0xB9  # ring 1 16-bit code, limit 0xFFFF


def seg_desc(base: int, limit: int, type_: int, *, s: int = 1, dpl: int = 0, p: int = 1,
             db: int = 1, g: int | None = None) -> bytes:
    """Encode an 8-byte segment descriptor (SDM Vol.3A §3.4.5, Figure 3-8)."""
    if g is None:
        g = 1 if limit > 0xFFFFF else 0
    if g:
        limit >>= 12
    low = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    high = (((base >> 16) & 0xFF) | (type_ << 8) | (s << 12) | (dpl << 13) | (p << 15)
            | (limit & 0xF0000) | (db << 22) | (g << 23) | (base & 0xFF000000))
    return struct.pack("<II", low, high)


def gate_desc(selector: int, offset: int, type_: int = 14, *, dpl: int = 0, p: int = 1) -> bytes:
    """Encode an IDT gate (SDM Vol.3A §6.11, Figure 6-2): 14 interrupt, 15 trap."""
    low = (offset & 0xFFFF) | ((selector & 0xFFFF) << 16)
    high = (offset & 0xFFFF0000) | (p << 15) | (dpl << 13) | (type_ << 8)
    return struct.pack("<II", low, high)


def put_desc(cpu: CPU, selector: int, data: bytes) -> None:
    cpu.mem.load(GDT + (selector & 0xFFF8), data)


def put_gate(cpu: CPU, vector: int, data: bytes) -> None:
    cpu.mem.load(IDT + vector * 8, data)


def wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route ``CPU.linear_to_physical`` (instruction fetch) through paging, as the
    lead is asked to do in vmi/cpu/core.py (see docs/system-model.md); a no-op
    once that is done. ``segmentation.install_accessors`` already calls
    ``paging.install`` when CR0.PE is set."""
    monkeypatch.setattr(CPU, "linear_to_physical",
                        lambda self, linear, *, write=False:
                        paging.linear_to_physical(self, linear, write=write))


@pytest.fixture(autouse=True)
def _wired(monkeypatch: pytest.MonkeyPatch) -> None:
    wire(monkeypatch)


def system_cpu(*, memory: int = 4 << 20, cpl: int = 0, platform: bool = True) -> CPU:
    """A protected-mode CPU with the standard GDT, an IDT whose every vector is a
    DPL 0 interrupt gate to ``HANDLER + 0x10 * v`` in ``K_CS``, a 32-bit TSS
    (esp0/ss0 = KSTACK0/K_DS, esp1/ss1 = KSTACK1/R1_DS, esp2/ss2 = KSTACK2/R2_DS),
    running at ``cpl`` with flat segments of that ring, paging off."""
    cpu = CPU(Memory(memory))
    entries = {
        K_CS: seg_desc(0, 0xFFFFFFFF, 0xB), K_DS: seg_desc(0, 0xFFFFFFFF, 0x3),
        R1_CS: seg_desc(0, 0xFFFFFFFF, 0xB, dpl=1), R1_DS: seg_desc(0, 0xFFFFFFFF, 0x3, dpl=1),
        R1_SMALL: seg_desc(0, 0xBFFFF, 0x3, dpl=1),
        ESPFIX_SS: seg_desc(USTACK, 0xFFFF, 0x3, dpl=3, db=0),
        ABSENT_CS: seg_desc(0, 0xFFFFFFFF, 0xB, p=0),
        TSS_SEL: seg_desc(TSS, 103, 0x9, s=0, db=0),
        CONFORMING_CS: seg_desc(0, 0xFFFFFFFF, 0xF),
        RO_DS: seg_desc(0, 0xFFFFFFFF, 0x0),
        EXPDOWN_SS: seg_desc(0, 0xFFF, 0x7),
        KERNEL_CS: seg_desc(0, 0xFFFFFFFF, 0xB), KERNEL_DS: seg_desc(0, 0xFFFFFFFF, 0x3),
        USER_CS: seg_desc(0, 0xFFFFFFFF, 0xB, dpl=3), USER_DS: seg_desc(0, 0xFFFFFFFF, 0x3, dpl=3),
        LDT_SEL: seg_desc(LDT, 0x3F, 0x2, s=0, db=0),
        XONLY_CS: seg_desc(0, 0xFFFFFFFF, 0x9),
        ABSENT_DS: seg_desc(0, 0xFFFFFFFF, 0x3, p=0),
        CALL_GATE: struct.pack("<II", (K_CS << 16) | 0x1000, 0x0000EC00),
        R2_CS: seg_desc(0, 0xFFFFFFFF, 0xB, dpl=2), R2_DS: seg_desc(0, 0xFFFFFFFF, 0x3, dpl=2),
        R1_CS16: seg_desc(0, 0xFFFF, 0xB, dpl=1, db=0),
    }
    for selector, data in entries.items():
        put_desc(cpu, selector, data)
    for vector in range(256):
        put_gate(cpu, vector, gate_desc(K_CS, HANDLER + 0x10 * vector))
    tss = bytearray(104)
    struct.pack_into("<IIIIII", tss, 4, KSTACK0, K_DS, KSTACK1, R1_DS & ~3, KSTACK2, R2_DS & ~3)
    struct.pack_into("<I", tss, 8 + 8, R1_DS)
    struct.pack_into("<I", tss, 8 + 16, R2_DS)
    cpu.mem.load(TSS, bytes(tss))
    cpu.gdtr[:] = [GDT, 0x1FF]
    cpu.idtr[:] = [IDT, 0x7FF]
    cpu.cr[0] = 0x11  # PE, ET
    cpu.tr[:] = [TSS_SEL, TSS, 103, 0x8B]
    flat = {0: (K_CS, K_DS), 1: (R1_CS, R1_DS), 2: (R2_CS, R2_DS), 3: (USER_CS, USER_DS)}
    code, data = flat[cpl]
    enter(cpu, code, data, data)
    cpu.eip = CODE
    if platform:
        cpu.platform = NativePlatform()
    return cpu


def enter(cpu: CPU, cs: int, ss: int, ds: int | None = None, *, others: int | None = None,
          esp: int | None = None) -> None:
    """Put ``cpu`` at CPL = RPL(cs) with the given segment registers loaded from the
    GDT (no checks: a test's starting state). ``others`` fills ES, FS, GS."""
    cpu.cpl = cs & 3
    regs = {1: cs, 2: ss}
    if ds is not None:
        regs[3] = ds
        regs[0] = regs[4] = regs[5] = ds if others is None else others
    for seg, selector in regs.items():
        if selector & 0xFFFC == 0:
            cpu.sreg[seg], cpu.seg_base[seg], cpu.seg_limit[seg] = selector, 0, 0
            cpu.seg_attr[seg] = ATTR_UNUSABLE
            continue
        desc = fetch_descriptor(cpu, selector)
        assert desc is not None
        cpu.sreg[seg] = selector
        cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = desc.base, desc.limit, \
            desc.attr | 1
    if esp is not None:
        cpu.r[4] = esp
    elif cpu.r[4] == 0:
        cpu.r[4] = {0: KSTACK0 - 0x100, 1: KSTACK1 - 0x100, 2: KSTACK2 - 0x100,
                    3: USTACK + 0x8000}[cs & 3]
    cpu.mode_changed()
    protected.refresh(cpu)


def dwords(cpu: CPU, address: int, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}I", cpu.mem.read_bytes(address, 4 * count)))


def run_code(cpu: CPU, code: bytes, steps: int = 1, at: int = CODE) -> None:
    cpu.mem.load(at, code)
    # CPU._compile_at caches a #UD for undecodable bytes without marking the page as
    # code, so rewriting them would not be seen (reported to the lead).
    cpu.icache.clear()
    cpu.eip = at
    cpu.run(steps)


def handler(vector: int) -> int:
    return HANDLER + 0x10 * vector


# -- delivery ---------------------------------------------------------------------------------
def test_interrupt_gate_clears_if_and_trap_gate_keeps_it():
    """SDM Vol.3A §6.12.1.2: after saving EFLAGS the processor clears TF, VM, RF and
    NT; through an interrupt gate (type 14) it also clears IF, through a trap gate
    (type 15) it does not."""
    cpu = system_cpu()
    put_gate(cpu, 0x20, gate_desc(K_CS, handler(0x20), 14))
    put_gate(cpu, 0x21, gate_desc(K_CS, handler(0x21), 15))
    cpu.eflags = 0x4302 | 0x10000  # NT, IF, TF, RF
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x20)
    assert cpu.eip == handler(0x20) and cpu.eflags & 0x14300 == 0
    assert dwords(cpu, esp - 12, 3) == [CODE, K_CS, 0x14302]
    cpu.eflags = 0x4302 | 0x10000
    cpu.platform.deliver_interrupt(cpu, 0x21)
    assert cpu.eip == handler(0x21) and cpu.eflags & 0x200 and not cpu.eflags & 0x14100


def test_int_n_from_ring3_through_dpl0_gate_is_gp_with_idt_error_code():
    """SDM Vol.3A §6.12.1.1: INT n checks the gate DPL against the CPL; DPL < CPL is
    #GP with the error code naming the IDT entry, vector*8+2 (§6.13, EXT = 0)."""
    cpu = system_cpu(cpl=3)
    cpu.eflags = 0x202
    user_esp = cpu.r[4]
    run_code(cpu, b"\xcd\x80")  # int $0x80 through the default DPL 0 gate
    assert cpu.eip == handler(13) and cpu.cpl == 0
    assert cpu.sreg[1] == K_CS and cpu.sreg[2] == K_DS and cpu.r[4] == KSTACK0 - 24
    # error code, EIP (the int itself: a fault), CS, EFLAGS, ESP, SS
    assert dwords(cpu, KSTACK0 - 24, 6) == [0x80 * 8 + 2, CODE, USER_CS, 0x202, user_esp,
                                            USER_DS]


def test_int_0x80_ring3_to_ring0_frame_byte_for_byte():
    """SDM Vol.3A §6.12.1, Figure 6-4: to an inner level SS:ESP come from the TSS
    (ss0/esp0) and the frame is SS, ESP, EFLAGS, CS, EIP (low to high: EIP CS
    EFLAGS ESP SS), selector slots zero-extended. Linux's 0x80 is a DPL 3 trap gate."""
    cpu = system_cpu(cpl=3)
    put_gate(cpu, 0x80, gate_desc(KERNEL_CS, 0x00100000, 15, dpl=3))
    cpu.eflags = 0x246
    cpu.r[4] = 0x2FFF0
    run_code(cpu, b"\xcd\x80")
    frame = cpu.mem.read_bytes(KSTACK0 - 20, 20)
    assert frame == struct.pack("<IIIII", CODE + 2, USER_CS, 0x246, 0x2FFF0, USER_DS)
    assert cpu.r[4] == KSTACK0 - 20 and cpu.sreg[2] == K_DS and cpu.cpl == 0
    assert cpu.sreg[1] == KERNEL_CS and cpu.eip == 0x00100000
    assert cpu.eflags & 0x200, "a trap gate keeps IF"


def test_ring3_to_ring1_uses_ss1_esp1():
    """SDM Vol.3A §6.12.1 and §7.2.1: a handler in a DPL 1 code segment runs at CPL 1
    on the stack ss1:esp1 of the TSS (the paravirtual kernel's ring)."""
    cpu = system_cpu(cpl=3)
    put_gate(cpu, 0x80, gate_desc(R1_CS & ~3, 0x4321, 15, dpl=3))
    cpu.eflags = 0x202
    user_esp = cpu.r[4]
    run_code(cpu, b"\xcd\x80")
    assert cpu.cpl == 1 and cpu.sreg[1] == R1_CS and cpu.sreg[2] == R1_DS
    assert cpu.eip == 0x4321 and cpu.r[4] == KSTACK1 - 20
    assert dwords(cpu, KSTACK1 - 20, 5) == [CODE + 2, USER_CS, 0x202, user_esp, USER_DS]


def test_same_level_delivery_pushes_three_dwords():
    """SDM Vol.3A §6.12.1: a handler at the current level uses the current stack and
    pushes EFLAGS, CS, EIP only."""
    cpu = system_cpu(cpl=0)
    cpu.eflags = 0x202
    esp = cpu.r[4]
    run_code(cpu, b"\xcd\x30")
    assert cpu.r[4] == esp - 12 and cpu.sreg[2] == K_DS
    assert dwords(cpu, esp - 12, 3) == [CODE + 2, K_CS, 0x202]


def test_ring1_cli_faults_gp0_into_ring0_frame():
    """Reference §5 fact 3 / SDM Vol.2 CLI: at CPL 1 with IOPL 0, cli is #GP(0); the
    fault is delivered to ring 0 with error code 0 and the cli's own EIP (a fault,
    SDM Vol.3A §6.5), the ring-1 SS:ESP saved above it."""
    cpu = system_cpu(cpl=1)
    cpu.eflags = 0x202
    esp = cpu.r[4]
    run_code(cpu, b"\xfa")  # cli
    assert cpu.eip == handler(13) and cpu.cpl == 0
    assert dwords(cpu, KSTACK0 - 24, 6) == [0, CODE, R1_CS, 0x202, esp, R1_DS]
    assert not cpu.eflags & 0x200


def test_error_code_frame_for_a_bad_segment_load():
    """SDM Vol.3A §6.13 and Vol.2 MOV: loading DS with a DPL 0 selector at CPL 3 is
    #GP(selector); the error code is pushed below EIP."""
    cpu = system_cpu(cpl=3)
    run_code(cpu, b"\x8e\xda")  # mov %edx,%ds
    cpu.r[2] = K_DS
    cpu.eip = CODE
    cpu.run(1)
    assert cpu.eip == handler(13)
    assert dwords(cpu, KSTACK0 - 24, 2) == [K_DS, CODE]


def test_software_int_of_an_error_code_vector_pushes_no_error_code():
    """SDM Vol.3A §6.13: an error code is pushed only for exceptions the processor
    raises; INT n with n = 14 pushes none."""
    cpu = system_cpu(cpl=0)
    esp = cpu.r[4]
    run_code(cpu, b"\xcd\x0e")
    assert cpu.eip == handler(14) and cpu.r[4] == esp - 12


def test_not_present_gate_raises_np_with_idt_error_code():
    """SDM Vol.3A §6.15 "Interrupt 11": a not-present gate is #NP with the error code
    naming the IDT entry (IDT bit 1) and EXT = 1 for a hardware event (§6.13)."""
    cpu = system_cpu()
    put_gate(cpu, 0x20, gate_desc(K_CS, handler(0x20), p=0))
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x20)
    assert cpu.eip == handler(11)
    assert dwords(cpu, esp - 16, 4) == [0x20 * 8 + 3, CODE, K_CS, 0x2]


def test_int3_through_not_present_gate_is_serial_np_without_ext():
    """SDM Vol.3A §6.15 Table 6-5: a benign first event (INT3) followed by a
    contributory one (#NP) is handled serially: only the #NP is delivered, as a
    fault of the INT3 instruction (saved EIP = the int3); for a software interrupt
    EXT = 0 (§6.13)."""
    cpu = system_cpu()
    put_gate(cpu, 3, gate_desc(K_CS, handler(3), p=0))
    esp = cpu.r[4]
    run_code(cpu, b"\xcc")
    assert cpu.eip == handler(11)
    assert dwords(cpu, esp - 16, 2) == [3 * 8 + 2, CODE]


def test_contributory_during_contributory_is_double_fault():
    """SDM Vol.3A §6.15 "Interrupt 8", Table 6-5: #GP while delivering #GP (here the
    #GP gate is not present: #NP) gives #DF, error code 0, saved EIP = the original
    faulting instruction."""
    cpu = system_cpu(cpl=0)
    put_gate(cpu, 13, gate_desc(K_CS, handler(13), p=0))
    esp = cpu.r[4]
    cpu.r[2] = 0x1234  # not a valid selector: beyond the GDT limit
    run_code(cpu, b"\x8e\xda")
    assert cpu.eip == handler(8)
    assert dwords(cpu, esp - 16, 4) == [0, CODE, K_CS, 0x2]


def identity_paging(cpu: CPU, pd: int = 0x100000) -> None:
    """Map the first 4 MiB one to one with user, writable 4 KiB pages and turn paging
    on (SDM Vol.3A §4.3)."""
    cpu.mem.write32(pd, (pd + 0x1000) | 7)
    for page in range(1024):
        cpu.mem.write32(pd + 0x1000 + page * 4, (page << 12) | 7)
    cpu.cr[3] = pd
    cpu.cr[0] |= 0x80000000
    cpu.tlb.clear()
    cpu.mode_changed()


def unmap(cpu: CPU, linear: int, pd: int = 0x100000) -> None:
    cpu.mem.write32(pd + 0x1000 + (linear >> 12) * 4, 0)
    cpu.tlb.clear()


def test_page_fault_while_delivering_page_fault_is_double_fault():
    """SDM Vol.3A §6.15 Table 6-5: a #PF while delivering a #PF makes a #DF (error
    code 0, saved EIP the original instruction). Here the #PF handler runs at ring
    1 whose stack page is unmapped; the #DF handler at ring 0 has a good stack.
    CR2 holds the address of the latest page fault (§6.15 "Interrupt 14")."""
    cpu = system_cpu(cpl=3)
    identity_paging(cpu)
    put_gate(cpu, 14, gate_desc(R1_CS & ~3, 0x1000))
    unmap(cpu, KSTACK1 - 4)
    cpu.r[0] = 0x70000
    unmap(cpu, 0x70000)
    user_esp = cpu.r[4]
    run_code(cpu, b"\x8b\x00")  # mov (%eax),%eax
    assert cpu.eip == handler(8) and cpu.cpl == 0
    assert dwords(cpu, KSTACK0 - 24, 6) == [0, CODE, USER_CS, 0x2, user_esp, USER_DS]
    assert cpu.cr[2] == KSTACK1 - 4


def test_page_faults_all_the_way_are_a_triple_fault():
    """SDM Vol.3A §6.15: #PF, then #PF delivering it (#DF), then #PF delivering the
    #DF: shutdown. The report lists the four exceptions; the CPU is halted with
    the state of the first fault."""
    cpu = system_cpu(cpl=3)
    identity_paging(cpu)
    unmap(cpu, KSTACK0 - 4)
    unmap(cpu, 0x70000)
    cpu.r[0] = 0x70000
    with pytest.raises(protected.TripleFault) as info:
        run_code(cpu, b"\x8b\x00")
    assert [(v, c) for v, c, _ in info.value.faults] == [(14, 4), (14, 2), (8, 0), (14, 2)]
    assert cpu.halted and cpu.eip == CODE and cpu.cpl == 3 and cpu.r[0] == 0x70000
    assert "triple fault" in str(info.value) and "#DF" in str(info.value)


def test_triple_fault_report_when_the_idt_is_empty():
    """SDM Vol.3A §6.15: with the IDT limit 0 every delivery is #GP(vector*8+2+EXT);
    two contributory faults make #DF, whose delivery faults again: shutdown. The
    report lists the chain and leaves the state of the first fault."""
    cpu = system_cpu(cpl=0)
    cpu.idtr[1] = 0
    cpu.r[2] = 0x1234
    regs = list(cpu.r)
    with pytest.raises(protected.TripleFault) as info:
        run_code(cpu, b"\x8e\xda")
    faults = info.value.faults
    assert [(v, c) for v, c, _ in faults] == [(13, 0x1234), (13, 13 * 8 + 3), (8, 0),
                                              (13, 8 * 8 + 3)]
    assert cpu.r == regs and cpu.eip == CODE and cpu.halted
    text = str(info.value)
    assert "#GP(0x1234)" in text and "#GP(0x6b)" in text and "#GP(0x43)" in text


def test_tss_ss_fault_error_code():
    """SDM Vol.2 INT n: ss0 with RPL != new CPL is #TS(SS selector + EXT); the
    delivery that follows uses a same-level #TS gate here (CPL 0 handler from ring 0)."""
    cpu = system_cpu(cpl=3)
    cpu.mem.write32(TSS + 8, K_DS | 1)  # RPL 1 for ring 0: invalid
    with pytest.raises(protected.TripleFault) as info:
        cpu.platform.deliver_interrupt(cpu, 0x20)
    assert [(v, c) for v, c, _ in info.value.faults][:2] == [(0x20, None), (10, K_DS | 1)]


def test_external_interrupt_wakes_a_halted_cpu():
    """SDM Vol.2 HLT: an interrupt resumes a halted processor; the frame's EIP is the
    instruction after the HLT."""
    cpu = system_cpu(cpl=0)
    cpu.eflags = 0x202
    run_code(cpu, b"\xf4")
    assert cpu.halted
    cpu.platform.deliver_interrupt(cpu, 0x20)
    assert not cpu.halted and cpu.eip == handler(0x20)
    assert dwords(cpu, cpu.r[4], 1) == [CODE + 1]


def test_conforming_handler_runs_at_current_level():
    """SDM Vol.3A §6.12.1.1: a conforming code segment handler runs at the CPL of the
    interrupted program: no stack switch, CS RPL = CPL."""
    cpu = system_cpu(cpl=3)
    put_gate(cpu, 0x81, gate_desc(CONFORMING_CS, 0x1000, 15, dpl=3))
    esp = cpu.r[4]
    run_code(cpu, b"\xcd\x81")
    assert cpu.cpl == 3 and cpu.sreg[1] == CONFORMING_CS | 3 and cpu.r[4] == esp - 12


def test_task_gate_to_the_busy_current_tss_is_gp_with_ext():
    """SDM Vol.2 INT n "TASK-GATE": a task gate naming a busy TSS is #GP(TSS selector,
    EXT); an external interrupt's fault is delivered serially (tests/cpu/
    test_task_switch.py has the switches themselves)."""
    cpu = system_cpu()
    cpu.mem.write8(GDT + TSS_SEL + 5, 0x8B)  # the current TSS, busy as LTR leaves it
    put_gate(cpu, 0x22, struct.pack("<II", TSS_SEL << 16, 0x8500))
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x22)
    assert cpu.eip == handler(13) and dwords(cpu, esp - 16, 1) == [TSS_SEL | 1]


def test_16bit_interrupt_gate_pushes_words():
    """SDM Vol.3A §6.12.1 / Vol.2 INT n: a 16-bit gate (type 6) pushes FLAGS, CS, IP
    as words."""
    cpu = system_cpu()
    put_gate(cpu, 0x23, gate_desc(K_CS, 0x1234, 6))
    cpu.eflags = 0x202
    esp = cpu.r[4]
    cpu.platform.deliver_interrupt(cpu, 0x23)
    assert cpu.r[4] == esp - 6 and cpu.eip == 0x1234
    assert struct.unpack("<HHH", cpu.mem.read_bytes(esp - 6, 6)) == (CODE & 0xFFFF, K_CS,
                                                                     0x202)


# -- IRET -------------------------------------------------------------------------------------
def push_frame(cpu: CPU, *values: int, size: int = 4) -> None:
    """Push a frame given in memory order, lowest address first (EIP, CS, EFLAGS...)."""
    fmt = "<" + ("I" if size == 4 else "H") * len(values)
    cpu.r[4] -= size * len(values)
    cpu.mem.load(cpu.r[4], struct.pack(fmt, *values))


def test_iret_same_level_pops_12_bytes():
    """SDM Vol.2 IRET, RETURN-TO-SAME-PRIVILEGE-LEVEL: pops EIP, CS, EFLAGS."""
    cpu = system_cpu(cpl=0)
    esp = cpu.r[4]
    push_frame(cpu, 0x1234, K_CS, 0x8D7)
    protected.iret(cpu, 32)
    assert cpu.eip == 0x1234 and cpu.r[4] == esp and cpu.eflags == 0x8D7


def test_iret_16bit_pops_6_bytes():
    """SDM Vol.2 IRET: a 16-bit IRET pops IP, CS, FLAGS as words and keeps
    EFLAGS[31:16]."""
    cpu = system_cpu(cpl=0)
    cpu.eflags = 0x40002  # AC
    esp = cpu.r[4]
    push_frame(cpu, 0x5678, K_CS, 0x0283, size=2)
    protected.iret(cpu, 16)
    assert cpu.eip == 0x5678 and cpu.r[4] == esp and cpu.eflags == 0x40283


def test_iret_to_ring3_switches_stack_and_nulls_kernel_data_segments():
    """SDM Vol.2 IRET, RETURN-TO-OUTER-PRIVILEGE-LEVEL; Vol.3A §5.8.6: pops ESP and
    SS too; DS/ES/FS/GS holding data (or non-conforming code) with DPL < the new
    CPL are nulled; user segments and conforming code are kept."""
    cpu = system_cpu(cpl=0)
    enter(cpu, K_CS, K_DS, KERNEL_DS)
    cpu.sreg[0], cpu.seg_attr[0] = USER_DS, fetch_descriptor(cpu, USER_DS).attr
    cpu.sreg[4], cpu.seg_attr[4] = CONFORMING_CS, fetch_descriptor(cpu, CONFORMING_CS).attr
    push_frame(cpu, 0x8048000, USER_CS, 0x202, 0x2FF00, USER_DS)
    kernel_esp = cpu.r[4]
    protected.iret(cpu, 32)
    assert cpu.cpl == 3 and cpu.sreg[1] == USER_CS and cpu.sreg[2] == USER_DS
    assert cpu.r[4] == 0x2FF00 and cpu.eip == 0x8048000 and kernel_esp
    assert cpu.sreg[3] == 0 and cpu.seg_attr[3] & ATTR_UNUSABLE  # DS was kernel data
    assert cpu.sreg[5] == 0  # GS was kernel data
    assert cpu.sreg[0] == USER_DS and cpu.sreg[4] == CONFORMING_CS
    with pytest.raises(CPUException) as info:
        cpu.rd32(3, 0x1000)  # DS is null now
    assert (info.value.vector, info.value.error_code) == (13, 0)


def test_iret_to_16bit_stack_keeps_esp_high_word():
    """Reference §4 (espfix) / SDM Vol.2 IRET: returning to an SS with B = 0 loads
    only SP; ESP[31:16] keeps the kernel's value."""
    cpu = system_cpu(cpl=0)
    cpu.r[4] = 0x000CFF00  # kernel ESP: high word 0x000C
    push_frame(cpu, 0x1000, USER_CS, 0x202, 0x12345678, ESPFIX_SS)
    protected.iret(cpu, 32)
    assert cpu.sreg[2] == ESPFIX_SS and cpu.stack_bits == 16
    assert cpu.r[4] == 0x000C5678, f"{cpu.r[4]:#x}"


def test_iret_at_cpl1_with_iopl0_does_not_change_if():
    """The seed's heart (reference §5 fact 4; SDM Vol.2 IRET): IF is loaded only if
    CPL <= IOPL. A ring-1 kernel with IOPL 0 cannot enable or disable interrupts
    with IRET: the flag is kept silently, no fault; IOPL is kept too."""
    cpu = system_cpu(cpl=1)
    cpu.eflags = 0x002  # IF = 0
    push_frame(cpu, 0x1000, USER_CS, 0x3202, 0x2FF00, USER_DS)  # image IF = 1, IOPL 3
    protected.iret(cpu, 32)
    assert cpu.cpl == 3 and not cpu.eflags & 0x200 and cpu.eflags & 0x3000 == 0
    cpu = system_cpu(cpl=1)
    cpu.eflags = 0x202  # IF = 1
    push_frame(cpu, 0x1000, R1_CS, 0x002)  # same level, image IF = 0
    protected.iret(cpu, 32)
    assert cpu.eflags & 0x200


def test_iret_at_cpl0_loads_if_and_iopl():
    """SDM Vol.2 IRET: at CPL 0 IF and IOPL come from the image."""
    cpu = system_cpu(cpl=0)
    push_frame(cpu, 0x1000, USER_CS, 0x3202, 0x2FF00, USER_DS)
    protected.iret(cpu, 32)
    assert cpu.eflags & 0x3200 == 0x3200


def test_iret_with_iopl_equal_cpl_loads_if_not_iopl():
    """SDM Vol.2 IRET: 0 < CPL <= IOPL loads IF but not IOPL."""
    cpu = system_cpu(cpl=1)
    cpu.eflags = 0x1002  # IOPL 1, IF 0
    push_frame(cpu, 0x1000, R1_CS, 0x3202)
    protected.iret(cpu, 32)
    assert cpu.eflags & 0x3200 == 0x1200


def test_iret_checks():
    """SDM Vol.2 IRET "Protected Mode Exceptions": CS RPL < CPL -> #GP(selector); SS
    RPL != CS RPL -> #GP(SS selector); CS not present -> #NP(selector); EIP beyond
    the CS limit -> #GP(0); nothing changes on a fault."""
    cases = [
        ((0x1000, K_CS, 0x2), 1, 13, K_CS),
        ((0x1000, USER_CS, 0x2, 0x2FF00, USER_DS & ~3), 0, 13, USER_DS & ~3),
        ((0x1000, ABSENT_CS, 0x2), 0, 11, ABSENT_CS),
        ((0x10000, R1_CS16, 0x2), 1, 13, 0),
    ]
    for frame, cpl, vector, code in cases:
        cpu = system_cpu(cpl=cpl, platform=False)
        push_frame(cpu, *frame)
        before = (list(cpu.r), cpu.eip, list(cpu.sreg), cpu.eflags)
        with pytest.raises(CPUException) as info:
            protected.iret(cpu, 32)
        assert (info.value.vector, info.value.error_code) == (vector, code), frame
        assert (list(cpu.r), cpu.eip, list(cpu.sreg), cpu.eflags) == before


def test_iret_with_nt_checks_the_back_link_then_refuses_the_task_switch():
    """SDM Vol.2 IRET "TASK-RETURN": NT = 1 returns to the task named by the back
    link of the current TSS; a link that is not a busy TSS is #TS(link), one whose
    limit is below 0x67 #TS(link) too (Vol.3A §7.2.2)."""
    cpu = system_cpu(platform=False)
    cpu.eflags = 0x4002
    cpu.mem.write16(TSS, K_DS)  # back link: a data segment
    assert fault_of(lambda: protected.iret(cpu, 32)) == (10, K_DS)
    put_desc(cpu, 0xC8, seg_desc(0x3200, 0x20, 0xB, s=0, db=0))  # a busy, too short TSS
    cpu.mem.write16(TSS, 0xC8)
    assert fault_of(lambda: protected.iret(cpu, 32)) == (10, 0xC8)


# -- segment loads ------------------------------------------------------------------------------
def fault_of(call) -> tuple[int, int | None]:
    with pytest.raises(CPUException) as info:
        call()
    return info.value.vector, info.value.error_code


def test_ss_load_rules():
    """SDM Vol.3A §5.4.1 and §5.7 / Vol.2 MOV: null SS -> #GP(0); RPL != CPL, DPL !=
    CPL or not writable data -> #GP(selector); not present -> #SS(selector)."""
    cpu = system_cpu(cpl=0, platform=False)
    load = protected.load_segment
    assert fault_of(lambda: load(cpu, 2, 0)) == (13, 0)
    assert fault_of(lambda: load(cpu, 2, 3)) == (13, 0)
    assert fault_of(lambda: load(cpu, 2, K_DS | 1)) == (13, K_DS)
    assert fault_of(lambda: load(cpu, 2, USER_DS)) == (13, USER_DS & ~3)
    assert fault_of(lambda: load(cpu, 2, RO_DS)) == (13, RO_DS)
    assert fault_of(lambda: load(cpu, 2, ABSENT_DS)) == (12, ABSENT_DS)
    assert fault_of(lambda: load(cpu, 2, 0xFFF8)) == (13, 0xFFF8)
    load(cpu, 2, KERNEL_DS)
    assert cpu.sreg[2] == KERNEL_DS


def test_data_segment_load_rules():
    """SDM Vol.3A §5.6 / Vol.2 MOV: a null selector loads (unusable); the segment
    must be data or readable code, with max(CPL, RPL) <= DPL unless conforming;
    not present -> #NP(selector). The accessed bit is set in the descriptor."""
    cpu = system_cpu(cpl=3, platform=False)
    load = protected.load_segment
    load(cpu, 3, 0)
    assert cpu.sreg[3] == 0 and cpu.seg_attr[3] & ATTR_UNUSABLE
    assert fault_of(lambda: cpu.rd8(3, 0)) == (13, 0)
    assert fault_of(lambda: load(cpu, 3, KERNEL_DS)) == (13, KERNEL_DS)
    load(cpu, 3, CONFORMING_CS)  # readable conforming code: allowed at any CPL
    assert fault_of(lambda: load(cpu, 3, TSS_SEL)) == (13, TSS_SEL)
    cpu = system_cpu(cpl=0, platform=False)
    assert fault_of(lambda: load(cpu, 3, XONLY_CS)) == (13, XONLY_CS)
    assert fault_of(lambda: load(cpu, 3, ABSENT_DS)) == (11, ABSENT_DS)
    assert not cpu.mem.read8(GDT + (RO_DS & ~7) + 5) & 1
    load(cpu, 4, RO_DS)
    assert cpu.mem.read8(GDT + (RO_DS & ~7) + 5) & 1, "accessed bit set"


def test_ldt_selector():
    """SDM Vol.3A §3.4.2, §3.5.1: TI = 1 selects the LDT; with no LDT loaded every
    such selector is beyond the limit (#GP(selector))."""
    cpu = system_cpu(cpl=0, platform=False)
    cpu.mem.load(LDT + 8, seg_desc(0x1000, 0xFFF, 0x3))
    assert fault_of(lambda: protected.load_segment(cpu, 3, 0x0C)) == (13, 0x0C)
    cpu.ldtr[:] = [LDT_SEL, LDT, 0x3F, 0x82]
    protected.load_segment(cpu, 3, 0x0C)
    assert cpu.seg_base[3] == 0x1000 and cpu.seg_limit[3] == 0xFFF


# -- far transfers ------------------------------------------------------------------------------
def test_far_jump_rules():
    """SDM Vol.3A §5.8.1-§5.8.2 / Vol.2 JMP: non-conforming code needs DPL = CPL and
    RPL <= CPL; conforming code needs DPL <= CPL and keeps the CPL; CS.RPL becomes
    the CPL; a target beyond the limit is #GP(0); JMP through a call gate to a more
    privileged non-conforming segment is #GP(CS selector) (it never changes CPL)."""
    cpu = system_cpu(cpl=3, platform=False)
    assert fault_of(lambda: protected.far_jump(cpu, KERNEL_CS, 0)) == (13, KERNEL_CS)
    assert fault_of(lambda: protected.far_jump(cpu, 0, 0)) == (13, 0)
    protected.far_jump(cpu, CONFORMING_CS, 0x1234)
    assert cpu.cpl == 3 and cpu.sreg[1] == CONFORMING_CS | 3 and cpu.eip == 0x1234
    cpu = system_cpu(cpl=1, platform=False)
    assert fault_of(lambda: protected.far_jump(cpu, R1_CS16, 0x10000)) == (13, 0)
    protected.far_jump(cpu, R1_CS16, 0x100)
    assert cpu.code_bits == 16 and cpu.sreg[1] == R1_CS16
    assert fault_of(lambda: protected.far_jump(cpu, ABSENT_CS, 0)) == (13, ABSENT_CS)
    assert fault_of(lambda: protected.far_jump(cpu, CALL_GATE, 0)) == (13, K_CS)


def test_gates_and_tss_targets_are_checked_first():
    """SDM Vol.2 JMP/CALL, RET, IRET: a call gate or TSS named by JMP/CALL is checked
    (DPL < CPL or RPL -> #GP(selector), not present -> #NP(selector), busy TSS ->
    #GP(selector)) before the transfer through it; a system
    descriptor popped by RET or IRET is simply not code: #GP(selector)."""
    cpu = system_cpu(cpl=3, platform=False)
    assert fault_of(lambda: protected.far_jump(cpu, TSS_SEL, 0)) == (13, TSS_SEL)  # DPL 0
    put_desc(cpu, 0xD8, struct.pack("<II", (K_CS << 16), 0x00006C00))  # call gate, P = 0
    assert fault_of(lambda: protected.far_jump(cpu, 0xDB, 0)) == (11, 0xD8)
    cpu = system_cpu(cpl=0, platform=False)
    cpu.mem.write8(GDT + TSS_SEL + 5, 0x8B)  # busy
    assert fault_of(lambda: protected.far_call(cpu, TSS_SEL, 0, 32)) == (13, TSS_SEL)
    push_frame(cpu, 0x1000, CALL_GATE, 0x2)
    assert fault_of(lambda: protected.iret(cpu, 32)) == (13, CALL_GATE)


def test_far_call_and_return_same_level():
    """SDM Vol.2 CALL/RET far: CALL pushes CS then EIP; RET pops them back, plus the
    immediate byte count."""
    cpu = system_cpu(cpl=0, platform=False)
    esp = cpu.r[4]
    cpu.eip = 0x7777
    protected.far_call(cpu, KERNEL_CS, 0x4444, 32)
    assert cpu.sreg[1] == KERNEL_CS and cpu.eip == 0x4444 and cpu.r[4] == esp - 8
    assert dwords(cpu, esp - 8, 2) == [0x7777, K_CS]
    protected.far_return(cpu, 32, 4)
    assert cpu.sreg[1] == K_CS and cpu.eip == 0x7777 and cpu.r[4] == esp + 4


def test_far_return_to_outer_level():
    """SDM Vol.3A §5.8.6 / Vol.2 RET: RPL(CS) > CPL returns outward: pops ESP and SS
    after releasing the immediate count, releases it again on the new stack,
    nulls inner data segments."""
    cpu = system_cpu(cpl=0, platform=False)
    push_frame(cpu, 0x1000, USER_CS, 0xBBBB, 0xAAAA, 0x2F000, USER_DS)
    protected.far_return(cpu, 32, 8)
    assert cpu.cpl == 3 and cpu.sreg[2] == USER_DS and cpu.r[4] == 0x2F008
    assert cpu.sreg[3] == 0 and cpu.eip == 0x1000


# -- SYSENTER / SYSEXIT ---------------------------------------------------------------------------
def test_sysenter_and_sysexit():
    """SDM Vol.3A §5.8.7 / reference §5 fact 7: SYSENTER loads CS = SYSENTER_CS,
    SS = CS + 8, ESP/EIP from MSRs 0x175/0x176, CPL 0, clears IF and VM; SYSEXIT
    loads CS = (MSR + 16) | 3, SS = (MSR + 24) | 3, EIP = EDX, ESP = ECX and keeps
    EFLAGS."""
    cpu = system_cpu(cpl=3)
    cpu.msr.update({0x174: KERNEL_CS, 0x175: 0xC0300000, 0x176: 0xC0100000})
    cpu.eflags = 0x246
    run_code(cpu, b"\x0f\x34")
    assert (cpu.sreg[1], cpu.sreg[2], cpu.cpl) == (KERNEL_CS, KERNEL_DS, 0)
    assert cpu.r[4] == 0xC0300000 and cpu.eip == 0xC0100000
    assert not cpu.eflags & 0x200 and cpu.eflags & 0xFFF == 0x046
    cpu.r[2], cpu.r[1] = 0xFFFFE410, 0xBFFFF000
    cpu.eflags = 0x246
    run_code(cpu, b"\x0f\x35")
    assert (cpu.sreg[1], cpu.sreg[2], cpu.cpl) == (USER_CS, USER_DS, 3)
    assert cpu.eip == 0xFFFFE410 and cpu.r[4] == 0xBFFFF000 and cpu.eflags == 0x246
    assert cpu.code_bits == 32 and cpu.stack_bits == 32


def test_sysenter_and_sysexit_faults():
    """SDM Vol.2 SYSENTER/SYSEXIT: #GP(0) when IA32_SYSENTER_CS is 0; SYSEXIT at
    CPL > 0 is #GP(0)."""
    cpu = system_cpu(cpl=3, platform=False)
    assert fault_of(lambda: run_code(cpu, b"\x0f\x34")) == (13, 0)
    cpu.msr[0x174] = KERNEL_CS
    assert fault_of(lambda: run_code(cpu, b"\x0f\x35")) == (13, 0)
    cpu = system_cpu(cpl=0, platform=False)
    assert fault_of(lambda: run_code(cpu, b"\x0f\x35")) == (13, 0)


# -- segment limits and rights through the accessors ---------------------------------------------
def test_ring1_guest_cannot_touch_memory_above_its_segment_limit():
    """SDM Vol.3A §5.3: an access past a data segment's limit is #GP(0) — how a
    hypervisor keeps a ring-1 guest below its own memory with segment limits."""
    cpu = system_cpu(cpl=1)
    enter(cpu, R1_CS, R1_DS, R1_SMALL)
    cpu.platform = None
    cpu.wr32(3, 0xBFFFC, 0x11223344)
    assert cpu.rd32(3, 0xBFFFC) == 0x11223344
    assert fault_of(lambda: cpu.rd32(3, 0xBFFFD)) == (13, 0)
    assert fault_of(lambda: cpu.wr8(3, 0xC0000, 1)) == (13, 0)
    assert cpu.rd8(2, 0xC0000) == 0  # SS is flat


def test_stack_limit_fault_is_ss():
    """SDM Vol.3A §5.3: a limit violation through SS is #SS(0); expand-down segments
    accept only offsets above the limit (§3.4.5.1)."""
    cpu = system_cpu(cpl=0, platform=False)
    enter(cpu, K_CS, EXPDOWN_SS, K_DS, esp=0x8000)
    assert fault_of(lambda: cpu.rd32(2, 0xFFE)) == (12, 0)
    cpu.wr32(2, 0x1000, 5)
    assert cpu.rd32(2, 0x1000) == 5


def test_write_rights():
    """SDM Vol.3A §5.4: writing a read-only data segment or (through a CS override) a
    code segment is #GP(0); reading execute-only code is #GP(0)."""
    cpu = system_cpu(cpl=0, platform=False)
    enter(cpu, K_CS, K_DS, RO_DS)
    assert cpu.rd32(3, 0x100) == 0
    assert fault_of(lambda: cpu.wr32(3, 0x100, 1)) == (13, 0)
    assert fault_of(lambda: cpu.wr8(1, 0x100, 1)) == (13, 0)
    cpu.rd8(1, 0x100)  # readable code
    enter(cpu, XONLY_CS, K_DS, K_DS)
    assert fault_of(lambda: cpu.rd8(1, 0x100)) == (13, 0)


# -- virtual-8086 mode --------------------------------------------------------------------------
def enter_v86(cpu: CPU, *, iopl: int = 0, cs: int = 0x2000, ip: int = 0x100) -> None:
    """IRETD at CPL 0 with VM = 1 in the image (SDM Vol.2 IRET,
    RETURN-TO-VIRTUAL-8086-MODE): 9 dwords EIP CS EFLAGS ESP SS ES DS FS GS."""
    push_frame(cpu, ip, cs, 0x20202 | iopl << 12, 0xFFF0, 0x3000, 0x1111, 0x2222, 0x3333,
               0x4444)
    protected.iret(cpu, 32)


def test_iret_to_v86_loads_real_mode_style_segments():
    """SDM Vol.2 IRET RETURN-TO-VIRTUAL-8086-MODE; Vol.3A §20.2.5: every segment gets
    base = selector << 4, limit 0xFFFF; CPL 3; 16-bit code and stack; ESP popped."""
    cpu = system_cpu(cpl=0, platform=False)
    enter_v86(cpu)
    assert cpu.flags & 0x20000 and cpu.cpl == 3 and cpu.eip == 0x100
    assert cpu.sreg == [0x1111, 0x2000, 0x3000, 0x2222, 0x3333, 0x4444]
    assert cpu.seg_base == [0x11110, 0x20000, 0x30000, 0x22220, 0x33330, 0x44440]
    assert cpu.r[4] == 0xFFF0 and cpu.code_bits == 16 and cpu.stack_bits == 16
    cpu.mem.load(0x20100, b"\xa3\x10\x00")  # mov %ax,0x10 (16-bit code: DS:0x10)
    cpu.r[0] = 0xBEEF
    cpu.icache.clear()
    cpu.run(1)
    assert cpu.mem.read16(0x22230) == 0xBEEF


def test_interrupt_from_v86_saves_and_nulls_data_segments():
    """SDM Vol.2 INT n INTERRUPT-FROM-VIRTUAL-8086-MODE; Vol.3A §20.3.1.1: the handler
    (ring-0 code) runs on ss0:esp0 with GS, FS, DS, ES, SS, ESP, EFLAGS, CS, EIP
    pushed (low to high: EIP CS EFLAGS ESP SS ES DS FS GS), VM cleared and the four
    data segment registers null."""
    cpu = system_cpu(cpl=0)
    enter_v86(cpu)
    cpu.platform.deliver_interrupt(cpu, 0x20)
    assert cpu.cpl == 0 and not cpu.flags & 0x20000 and cpu.eip == handler(0x20)
    assert dwords(cpu, KSTACK0 - 36, 9) == [0x100, 0x2000, 0x20202, 0xFFF0, 0x3000,
                                            0x1111, 0x2222, 0x3333, 0x4444]
    assert cpu.sreg[0] == cpu.sreg[3] == cpu.sreg[4] == cpu.sreg[5] == 0
    assert cpu.code_bits == 32 and cpu.stack_bits == 32


def test_v86_iret_and_int_are_iopl_sensitive():
    """SDM Vol.3A §20.2.7: in virtual-8086 mode IRET and INT n fault #GP(0) when IOPL
    < 3 (the trap to the monitor, with EIP on the instruction); with IOPL 3 IRET is
    a real-mode style return that keeps VM and IOPL."""
    cpu = system_cpu(cpl=0)
    enter_v86(cpu, iopl=0)
    cpu.mem.load(0x20100, b"\xcd\x21")  # int $0x21
    cpu.icache.clear()
    cpu.run(1)
    assert cpu.eip == handler(13) and dwords(cpu, KSTACK0 - 40, 2) == [0, 0x100]
    cpu = system_cpu(cpl=0, platform=False)
    enter_v86(cpu, iopl=3)
    cpu.mem.load(0x3FFF0, struct.pack("<HHH", 0x200, 0x2100, 0x0046))
    cpu.mem.load(0x20100, b"\xcf")  # iretw
    cpu.icache.clear()
    cpu.run(1)
    assert cpu.eip == 0x200 and cpu.sreg[1] == 0x2100 and cpu.seg_base[1] == 0x21000
    assert cpu.eflags == 0x23046 and cpu.r[4] == 0xFFF6
    cpu = system_cpu(cpl=0, platform=False)
    enter_v86(cpu, iopl=2)
    assert fault_of(lambda: protected.iret(cpu, 16)) == (13, 0)


# -- platforms ---------------------------------------------------------------------------------
def test_native_platform_uses_the_ivt_in_real_mode_and_the_idt_in_protected_mode():
    """SDM Vol.3A §20.1.4 (real mode: IVT) and §6.10 (protected mode: IDT): the native
    platform picks the table from CR0.PE."""
    from vmi.cpu import realmode

    cpu = CPU(Memory(1 << 20))
    realmode.reset(cpu)
    cpu.platform = NativePlatform()
    cpu.mem.write32(0x21 * 4, 0x12340010)  # vector 0x21 -> 1234:0010
    cpu.r[4] = 0x100
    cpu.platform.deliver_interrupt(cpu, 0x21)
    assert (cpu.sreg[1], cpu.eip) == (0x1234, 0x0010)
    events = []
    cpu = system_cpu()
    cpu.platform = protected.ProtectedModePlatform(trace=lambda v, kind: events.append(kind))
    cpu.platform.deliver_interrupt(cpu, 0x20)
    cpu.platform.deliver_exception(cpu, CPUException(13, 0))
    assert cpu.eip == handler(13) and events == ["interrupt", "exception"]
