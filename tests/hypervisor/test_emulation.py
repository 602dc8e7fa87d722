"""Trap-and-emulate: each privileged instruction a ring-1 kernel executes faults #GP and
is done by the monitor on the virtual state. The program is built with the
``native`` macro set (so cli/sti trap too) and its guest-visible results are compared
with the same program run natively at ring 0."""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import PD, TSS2, TSS2_SEL, Guest
from vmi.hypervisor import layout

PRIVILEGED = """
main:
	cli
	sti
	cli
	movl %cr0, %eax
	movl %eax, r_cr0
	orl $8, %eax			# CR0.TS
	movl %eax, %cr0
	movl %cr0, %eax
	movl %eax, r_cr0_ts
	clts
	movl %cr0, %eax
	movl %eax, r_cr0_clts
	lmsw %ax			# PE stays, TS from the operand (clear)
	movl $0x12345000, %eax
	movl %eax, %cr2
	movl %cr2, %ebx
	movl %ebx, r_cr2
	movl %cr3, %eax
	movl %eax, r_cr3
	movl %eax, %cr3			# reload: flushes
	movl %cr4, %eax
	orl $0x10, %eax			# PSE
	movl %eax, %cr4
	movl %cr4, %eax
	movl %eax, r_cr4
	lgdt gdt_pointer
	lidt idt_pointer
	movl $TSS2_SEL, %eax
	ltr %ax
	str %bx
	movl %ebx, r_tr
	xorl %eax, %eax
	lldt %ax
	sldt %bx
	movl %ebx, r_ldt
	movl $0x174, %ecx		# IA32_SYSENTER_CS
	movl $KERNEL_CS, %eax
	xorl %edx, %edx
	wrmsr
	movl $0x176, %ecx		# IA32_SYSENTER_EIP
	movl $0xC0DE, %eax
	wrmsr
	xorl %eax, %eax
	rdmsr
	movl %eax, r_msr
	movl $0x174, %ecx
	rdmsr
	movl %eax, r_msr_cs
	movb $'o', %al
	outb %al, $0xE9
	movb $'k', %al
	movw $0xE9, %dx
	outb %al, (%dx)
	xorl %eax, %eax
	inb $0xE9, %al
	movl %eax, r_in
	invlpg USER_BASE
	movl $0x400, %eax
	movl %eax, %db7
	movl %db7, %ebx
	movl %ebx, r_dr7
	sti
	hlt
after_hlt:
	movl ticks, %eax
	movl %eax, r_ticks
	cli
	hlt

int_32:
	incl ticks
	iret

.data
gdt_pointer: .word 0xFF
	.long GDT_BASE
idt_pointer: .word 0x7FF
	.long IDT_BASE
ticks: .long 0
r_cr0: .long 0
r_cr0_ts: .long 0
r_cr0_clts: .long 0
r_cr2: .long 0
r_cr3: .long 0
r_cr4: .long 0
r_tr: .long 0
r_ldt: .long 0
r_msr: .long 0
r_msr_cs: .long 0
r_in: .long 0
r_dr7: .long 0
r_ticks: .long 0
"""

RESULTS = ("r_cr0", "r_cr0_ts", "r_cr0_clts", "r_cr2", "r_cr3", "r_cr4", "r_tr", "r_ldt",
           "r_msr", "r_msr_cs", "r_in", "r_dr7", "r_ticks")


def run(monitor: str | None) -> Guest:
    g = Guest(PRIVILEGED, macros="native", monitor=monitor)
    g.run(10_000)
    assert g.cpu.halted and g.cpu.flags & 0x200  # waiting in the hlt, interrupts on
    g.interrupt(0x20)
    g.run(10_000)
    assert g.stuck and not g.cpu.flags & 0x200
    return g


@pytest.fixture(scope="module")
def native() -> Guest:
    return run(None)


@pytest.fixture(scope="module")
def virtual() -> Guest:
    return run("vmi")


def test_guest_visible_results_equal_native(native: Guest, virtual: Guest) -> None:
    assert native.cpu.cpl == 0 and virtual.cpu.cpl == 1
    assert {n: hex(native.var(n)) for n in RESULTS} == {n: hex(virtual.var(n)) for n in RESULTS}
    assert native.var("r_cr3") == PD
    assert native.var("r_cr0_ts") & 8 and not native.var("r_cr0_clts") & 8
    assert native.var("r_tr") & 0xFFFF == TSS2_SEL and native.var("r_msr_cs") == 0x60
    assert native.var("r_ticks") == 1
    assert native.machine.console.text == virtual.machine.console.text == "ok"


def test_each_instruction_was_emulated(virtual: Guest) -> None:
    emulated = virtual.monitor.stats.emulated
    assert emulated == {
        "cli": 3, "sti": 2, "mov": 13, "clts": 1, "lmsw": 1, "lgdt": 1, "lidt": 1,
        "ltr": 1, "lldt": 1, "wrmsr": 2, "rdmsr": 2, "out": 2, "in": 1, "invlpg": 1,
        "hlt": 2,
    }
    assert virtual.monitor.stats.exits["emulation"] == sum(emulated.values())


def test_virtual_state_after_the_program(virtual: Guest) -> None:
    vcpu = virtual.monitor.vcpu(virtual.cpu)
    cpu = virtual.cpu
    assert vcpu.cr3 == PD and cpu.cr[3] == vcpu.pd != PD  # the real CR3 is the shadow
    assert vcpu.cr4 & 0x10 and cpu.cr[4] & 0x10  # PSE followed into the real CR4
    assert cpu.cr[0] & 0x10000  # WP forced on
    assert (vcpu.tr_selector, vcpu.tr_base) == (TSS2_SEL, TSS2)
    assert vcpu.sysenter_cs == 0x60 and vcpu.sysenter_eip == 0xC0DE
    assert cpu.msr.get(0x174, 0) == 0  # the real IA32_SYSENTER_CS stays 0
    assert vcpu.sysexit_cs == 0x73 and vcpu.sysexit_ss == 0x7B
    assert cpu.gdtr[0] == layout.SHADOW_GDT_LINEAR and vcpu.gdt_base != cpu.gdtr[0]
    # ltr marked the guest's own TSS2 descriptor busy, as LTR does
    busy = virtual.machine.memory.read8(0x1000 + (TSS2_SEL & ~7) + 5)
    assert busy & 0xF == 0xB
    assert not vcpu.interrupts_enabled and vcpu.halted_cli and not cpu.flags & 0x200


def test_user_sysenter_is_emulated() -> None:
    kernel = """
main:
	SET_SYSENTER sysenter_entry
	ENTER_USER
sysenter_entry:
	pushfl
	popl flags_at_entry
	mov %cs, cs_at_entry
	mov %ss, ss_at_entry
	movl %esp, esp_at_entry
	incl calls
	cmpl $3, calls
	je done
	STI_SYSEXIT
done:
	CLI
	hlt
.data
calls: .long 0
cs_at_entry: .long 0
ss_at_entry: .long 0
esp_at_entry: .long 0
flags_at_entry: .long 0
"""
    user = """
loop:
	movl $back, %edx
	movl %esp, %ecx
	sysenter
back:
	jmp loop
"""
    results = {}
    for mode in (None, "vmi"):
        g = Guest(kernel, user, monitor=mode)
        g.run(10_000)
        assert g.stuck
        results[mode] = g
        assert g.var("calls") == 3
        assert g.var("esp_at_entry") == 0x90000 - 64
    assert results[None].var("cs_at_entry") == 0x60
    assert results["vmi"].var("cs_at_entry") == 0x61
    assert results["vmi"].var("ss_at_entry") == 0x69
    stats = results["vmi"].monitor.stats
    assert stats.emulated["sysenter"] == 3
    assert stats.hypercalls["wrmsr"] == 3
