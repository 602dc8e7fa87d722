"""System instructions executed from bytes: control and debug registers, descriptor
table registers, the MSW, INVLPG, LAR/LSL/VERR/VERW/ARPL, and the privilege checks
of SDM Vol.3A §5.9. Docstrings name the SDM rule each test checks."""

from __future__ import annotations

import struct

import pytest

from tests.cpu.test_protected import (
    CODE,
    CONFORMING_CS,
    ESPFIX_SS,
    GDT,
    IDT,
    K_CS,
    K_DS,
    LDT,
    LDT_SEL,
    RO_DS,
    TSS_SEL,
    USER_CS,
    USER_DS,
    XONLY_CS,
    fault_of,
    run_code,
    system_cpu,
    wire,
)
from vmi.cpu import CPU, protected

ZF, CF = 0x40, 0x1


@pytest.fixture(autouse=True)
def _wired(monkeypatch: pytest.MonkeyPatch) -> None:
    wire(monkeypatch)


def run(cpu: CPU, code: bytes, steps: int = 1) -> None:
    run_code(cpu, code, steps)


PRIVILEGED = {
    "mov %cr0,%eax": b"\x0f\x20\xc0",
    "mov %eax,%cr0": b"\x0f\x22\xc0",
    "mov %eax,%cr3": b"\x0f\x22\xd8",
    "mov %db7,%eax": b"\x0f\x21\xf8",
    "lgdt (%eax)": b"\x0f\x01\x10",
    "lidt (%eax)": b"\x0f\x01\x18",
    "lldt %ax": b"\x0f\x00\xd0",
    "ltr %ax": b"\x0f\x00\xd8",
    "lmsw %ax": b"\x0f\x01\xf0",
    "clts": b"\x0f\x06",
    "invlpg (%eax)": b"\x0f\x01\x38",
}


@pytest.mark.parametrize("cpl", [1, 3])
@pytest.mark.parametrize("name", sorted(PRIVILEGED))
def test_privileged_instructions_fault_gp0_above_ring0(name, cpl):
    """SDM Vol.3A §5.9 (and reference §5 fact 8): MOV CRn/DRn, LGDT, LIDT, LLDT, LTR,
    LMSW, CLTS and INVLPG at CPL > 0 are #GP(0), with no state change."""
    cpu = system_cpu(cpl=cpl, platform=False)
    cpu.r[0] = 0x1000
    before = (list(cpu.r), list(cpu.cr), list(cpu.gdtr), list(cpu.idtr))
    assert fault_of(lambda: run(cpu, PRIVILEGED[name])) == (13, 0)
    assert (list(cpu.r), list(cpu.cr), list(cpu.gdtr), list(cpu.idtr)) == before
    assert cpu.eip == CODE


def test_unprivileged_stores_work_at_ring3():
    """SDM Vol.3A §5.9 / reference §5 fact 8: SGDT, SIDT, SLDT, STR and SMSW are not
    privileged: a ring-3 program reads the real tables' addresses."""
    cpu = system_cpu(cpl=3, platform=False)
    cpu.r[3] = 0x30000
    run(cpu, b"\x0f\x01\x03")  # sgdt (%ebx)
    assert struct.unpack("<HI", cpu.mem.read_bytes(0x30000, 6)) == (0x1FF, GDT)
    run(cpu, b"\x0f\x01\x0b")  # sidt (%ebx)
    assert struct.unpack("<HI", cpu.mem.read_bytes(0x30000, 6)) == (0x7FF, IDT)
    run(cpu, b"\x0f\x00\xc8")  # str %eax
    assert cpu.r[0] == TSS_SEL
    run(cpu, b"\x0f\x01\xe1")  # smsw %ecx
    assert cpu.r[1] == cpu.cr[0] == 0x11


def test_lgdt_lidt_roundtrip_and_16bit_operand():
    """SDM Vol.2 LGDT/LIDT/SGDT: limit (16 bits) then base (32); with a 16-bit operand
    size only 24 bits of base are loaded, and SGDT stores 24 bits and a zero byte."""
    cpu = system_cpu(platform=False)
    cpu.mem.load(0x30000, struct.pack("<HI", 0x27, 0xC1234567))
    cpu.r[0] = 0x30000
    run(cpu, b"\x0f\x01\x18")  # lidt (%eax)
    assert cpu.idtr == [0xC1234567, 0x27]
    run(cpu, b"\x66\x0f\x01\x18")  # lidtw
    assert cpu.idtr == [0x234567, 0x27]
    cpu.gdtr[:] = [0xC1234567, 0x1FF]
    cpu.r[3] = 0x30010
    run(cpu, b"\x66\x0f\x01\x03")  # sgdtw (%ebx)
    assert cpu.mem.read_bytes(0x30010, 6) == struct.pack("<HI", 0x1FF, 0x234567)
    cpu.mem.load(0x30020, struct.pack("<HI", 0x1FF, GDT))
    cpu.r[0] = 0x30020
    run(cpu, b"\x0f\x01\x10")  # lgdt (%eax)
    assert cpu.gdtr == [GDT, 0x1FF]


def test_lldt_and_sldt():
    """SDM Vol.2 LLDT/SLDT: LLDT loads LDTR from an LDT descriptor in the GDT (a null
    selector makes it unusable); anything else is #GP(selector)."""
    cpu = system_cpu(platform=False)
    cpu.r[0] = LDT_SEL
    run(cpu, b"\x0f\x00\xd0")  # lldt %ax
    assert cpu.ldtr[:3] == [LDT_SEL, LDT, 0x3F]
    run(cpu, b"\x0f\x00\xc3")  # sldt %ebx
    assert cpu.r[3] == LDT_SEL
    cpu.r[0] = K_DS
    assert fault_of(lambda: run(cpu, b"\x0f\x00\xd0")) == (13, K_DS)
    cpu.r[0] = 0
    run(cpu, b"\x0f\x00\xd0")
    assert cpu.ldtr[0] == 0
    assert fault_of(lambda: protected.load_segment(cpu, 3, 0x0C)) == (13, 0x0C)


def test_ltr_marks_the_tss_busy():
    """SDM Vol.2 LTR; Vol.3A §7.2.4: LTR loads TR from an available TSS and marks the
    descriptor busy; a busy TSS is #GP(selector), a null selector #GP(0)."""
    cpu = system_cpu(platform=False)
    cpu.r[0] = TSS_SEL
    run(cpu, b"\x0f\x00\xd8")  # ltr %ax
    assert cpu.tr[0] == TSS_SEL and cpu.mem.read8(GDT + TSS_SEL + 5) & 0xF == 0xB
    assert fault_of(lambda: run(cpu, b"\x0f\x00\xd8")) == (13, TSS_SEL)
    cpu.r[0] = 0
    assert fault_of(lambda: run(cpu, b"\x0f\x00\xd8")) == (13, 0)


def test_lmsw_cannot_clear_pe_and_clts_clears_ts():
    """SDM Vol.2 LMSW: loads PE, MP, EM, TS but cannot clear PE; CLTS clears TS."""
    cpu = system_cpu(platform=False)
    cpu.r[0] = 0x000E  # MP, EM, TS; PE clear
    run(cpu, b"\x0f\x01\xf0")  # lmsw %ax
    assert cpu.cr[0] == 0x1F
    run(cpu, b"\x0f\x06")
    assert cpu.cr[0] == 0x17


def test_mov_cr_rules():
    """SDM Vol.2 MOV CRn; Vol.3A §2.5: PG without PE is #GP(0); setting a reserved CR4
    bit (PAE: this CPU has none) is #GP(0); CR1 is #UD; ET reads as 1."""
    cpu = system_cpu(platform=False)
    cpu.r[0] = 0x80000000
    assert fault_of(lambda: run(cpu, b"\x0f\x22\xc0")) == (13, 0)
    cpu.r[0] = 0x20
    assert fault_of(lambda: run(cpu, b"\x0f\x22\xe0")) == (13, 0)  # mov %eax,%cr4
    assert fault_of(lambda: run(cpu, b"\x0f\x20\xc8")) == (6, None)  # mov %cr1,%eax
    cpu.r[0] = 0x1
    run(cpu, b"\x0f\x22\xc0")
    run(cpu, b"\x0f\x20\xc3")  # mov %cr0,%ebx
    assert cpu.r[3] == 0x11
    cpu.r[0] = 0xDEAD0000
    run(cpu, b"\x0f\x22\xd0")  # mov %eax,%cr2
    run(cpu, b"\x0f\x20\xd1")  # mov %cr2,%ecx
    assert cpu.r[1] == 0xDEAD0000


def test_turning_paging_on_reinstalls_accessors():
    """SDM Vol.3A §2.5, §4.1: setting CR0.PG makes every later access translated; the
    MOV to CR0 re-derives the mode (``cpu.mode_changed``)."""
    cpu = system_cpu(platform=False)
    pd, pt = 0x100000, 0x101000
    cpu.mem.write32(pd, pt | 3)
    for page in range(1024):
        cpu.mem.write32(pt + page * 4, (page << 12) | 3)
    cpu.mem.write32(pt + 0x30 * 4, 0x31000 | 3)  # linear 0x30000 -> physical 0x31000
    cpu.mem.write32(0x31000, 0x5151)
    cpu.r[0] = pd
    run(cpu, b"\x0f\x22\xd8")  # mov %eax,%cr3
    cpu.r[0] = 0x80000011
    run(cpu, b"\x0f\x22\xc0")  # mov %eax,%cr0
    cpu.r[3] = 0x30000
    run(cpu, b"\x8b\x0b")  # mov (%ebx),%ecx
    assert cpu.r[1] == 0x5151


def test_mov_debug_registers():
    """SDM Vol.3A §16.2: DR0-DR3, DR6, DR7 are stored; DR4/DR5 alias DR6/DR7 unless
    CR4.DE = 1, which makes them #UD."""
    cpu = system_cpu(platform=False)
    cpu.r[0] = 0x400
    run(cpu, b"\x0f\x23\xf8")  # mov %eax,%db7
    run(cpu, b"\x0f\x21\xeb")  # mov %db5,%ebx
    assert cpu.r[3] == 0x400 and cpu.dr[7] == 0x400
    cpu.cr[4] = 0x8
    assert fault_of(lambda: run(cpu, b"\x0f\x21\xeb")) == (6, None)


def test_lar_results_and_zf():
    """SDM Vol.2 LAR; Vol.3A §5.10.1: ZF = 1 and the access rights (high dword AND
    00F0FF00H) for a descriptor visible at CPL/RPL; ZF = 0 and the register kept
    for one that is not (DPL < CPL), a null selector, or an interrupt gate. Other
    flags are kept. Bit 22 is the D/B flag (reference §5 fact 9)."""
    cpu = system_cpu(cpl=3, platform=False)
    cpu.eflags = 0x2 | CF
    cpu.r[3] = USER_CS
    run(cpu, b"\x0f\x02\xc3")  # lar %ebx,%eax
    assert cpu.r[0] == 0x00C0FB00 and cpu.eflags & (ZF | CF) == ZF | CF
    cpu.r[0] = 0x1234
    cpu.r[3] = K_DS
    run(cpu, b"\x0f\x02\xc3")
    assert cpu.r[0] == 0x1234 and not cpu.eflags & ZF and cpu.eflags & CF
    cpu.r[3] = ESPFIX_SS
    run(cpu, b"\x0f\x02\xc3")
    assert cpu.eflags & ZF and not cpu.r[0] & 0x00400000, "B = 0: a 16-bit stack"
    cpu.r[3] = 0
    run(cpu, b"\x0f\x02\xc3")
    assert not cpu.eflags & ZF
    cpu.r[3] = CONFORMING_CS  # conforming code: visible at any CPL
    run(cpu, b"\x66\x0f\x02\xc3")  # lar %bx,%ax
    assert cpu.eflags & ZF and cpu.r[0] & 0xFFFF == 0x9F00


def test_lar_of_system_descriptors():
    """SDM Vol.2 LAR, Table 3-55: TSS and LDT descriptors are valid for LAR (at CPL
    0 here); interrupt gates are not."""
    cpu = system_cpu(cpl=0, platform=False)
    cpu.r[3] = TSS_SEL
    run(cpu, b"\x0f\x02\xc3")
    assert cpu.eflags & ZF and cpu.r[0] & 0x0F00 == 0x0900
    cpu.mem.load(GDT + 0xF0, struct.pack("<II", (K_CS << 16), 0x8E00))
    cpu.r[3] = 0xF0
    run(cpu, b"\x0f\x02\xc3")
    assert not cpu.eflags & ZF


def test_lsl_results():
    """SDM Vol.2 LSL: the byte-granular limit (G applied) and ZF = 1; ZF = 0 for a
    descriptor not visible at the CPL."""
    cpu = system_cpu(cpl=3, platform=False)
    cpu.r[3] = USER_DS
    run(cpu, b"\x0f\x03\xc3")  # lsl %ebx,%eax
    assert cpu.r[0] == 0xFFFFFFFF and cpu.eflags & ZF
    cpu.r[3] = ESPFIX_SS
    run(cpu, b"\x0f\x03\xc3")
    assert cpu.r[0] == 0xFFFF and cpu.eflags & ZF
    cpu.r[3] = K_CS
    run(cpu, b"\x0f\x03\xc3")
    assert cpu.r[0] == 0xFFFF and not cpu.eflags & ZF


def test_verr_verw():
    """SDM Vol.2 VERR/VERW: readable (data, or code with R) / writable (data with W)
    from the CPL and RPL; conforming code skips the privilege test; system
    segments and null selectors fail."""
    cases = [  # (cpl, selector, verr, verw)
        (3, USER_DS, True, True), (3, USER_CS, True, False), (3, K_DS, False, False),
        (3, CONFORMING_CS, True, False), (0, XONLY_CS, False, False),
        (0, RO_DS, True, False), (0, TSS_SEL, False, False), (0, 0, False, False),
        (0, USER_DS, True, True), (0, K_DS | 3, False, False),
    ]
    for cpl, selector, readable, writable in cases:
        cpu = system_cpu(cpl=cpl, platform=False)
        cpu.r[0] = selector
        run(cpu, b"\x0f\x00\xe0")  # verr %ax
        assert bool(cpu.eflags & ZF) == readable, (cpl, selector, "verr")
        run(cpu, b"\x0f\x00\xe8")  # verw %ax
        assert bool(cpu.eflags & ZF) == writable, (cpl, selector, "verw")


def test_arpl():
    """SDM Vol.2 ARPL; Vol.3A §5.10.4: raise the destination selector's RPL to the
    source's and set ZF, else clear ZF and leave it."""
    cpu = system_cpu(cpl=0, platform=False)
    cpu.r[3] = 0xFFFF0060
    cpu.r[0] = 0x73
    run(cpu, b"\x63\xc3")  # arpl %ax,%bx
    assert cpu.r[3] == 0xFFFF0063 and cpu.eflags & ZF
    cpu.r[0] = 0x60
    run(cpu, b"\x63\xc3")
    assert cpu.r[3] == 0xFFFF0063 and not cpu.eflags & ZF


def test_protected_only_instructions_are_ud_in_real_mode():
    """SDM Vol.2 LAR, LSL, LLDT, LTR, SLDT, STR, VERR, VERW, ARPL: #UD in real-address
    mode; SYSENTER is #GP(0) there."""
    cpu = system_cpu(platform=False)
    cpu.cr[0] = 0x10
    cpu.mode_changed()
    for code in (b"\x0f\x02\xc3", b"\x0f\x03\xc3", b"\x0f\x00\xd0", b"\x0f\x00\xc0",
                 b"\x0f\x00\xe0", b"\x63\xc3"):
        assert fault_of(lambda code=code: run(cpu, code)) == (6, None), code.hex()
    cpu.msr[0x174] = K_CS
    assert fault_of(lambda: run(cpu, b"\x0f\x34")) == (13, 0)


def test_test_registers_do_not_exist():
    """Pentium and later: MOV to or from TRn is #UD (the decoder or the executor)."""
    cpu = system_cpu(platform=False)
    with pytest.raises(Exception) as info:
        run(cpu, b"\x0f\x24\xf0")  # mov %tr6,%eax
    assert getattr(info.value, "vector", 6) == 6


def test_iret_and_far_jump_instructions_reach_the_system_model():
    """SDM Vol.2 IRET / JMP: the iretd and ljmp instructions of vmi.cpu.ops.far call
    the protected-mode rules in protected mode (here: IRET to ring 3)."""
    cpu = system_cpu(cpl=0, platform=False)
    cpu.r[4] -= 20
    cpu.mem.load(cpu.r[4], struct.pack("<IIIII", 0x1000, USER_CS, 0x202, 0x2F000, USER_DS))
    run(cpu, b"\xcf")  # iret
    assert cpu.cpl == 3 and cpu.eip == 0x1000 and cpu.r[4] == 0x2F000 and cpu.sreg[3] == 0
    cpu = system_cpu(cpl=3, platform=False)
    assert fault_of(lambda: run(cpu, b"\xea\x00\x10\x00\x00\x08\x00")) == (13, K_CS)
