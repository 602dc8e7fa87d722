"""The seed's deferred case: an IRET that lands on (or runs on) a 16-bit stack segment.
Natively it works and loads only SP, keeping ESP[31:16] (the espfix problem, reference
§4). Under the monitor the ROM's IRET detects it (LAR of the frame's SS and of the
current SS: bit 22, B). Landing on one from the flat kernel stack, the monitor does the
return itself with the user's whole ESP (its espfix). Running on one (VMI calls need a
flat SS) it refuses: a report, a count, and #GP(SS) in the guest at the IRET site,
where the kernel's exception table applies. Never silent corruption."""

from __future__ import annotations

from tests.hypervisor.kit import KSEG16, KSEG16_BASE, KSTACK, Guest

KERNEL = """
main:
	cmpl $1, on_16bit_stack
	jne 1f
	movl %cs, %eax			# kernel RPL: 0 natively, 1 under the monitor
	andl $3, %eax
	orl $KSEG16, %eax
	movl $0x1000, %esp
	mov %ax, %ss			# a 16-bit kernel stack (espfix-like)
1:	pushl $SEG16 | 3		# the user's 16-bit stack segment (B = 0)
	pushl $0xABCD0100		# its ESP: only SP = 0x0100 is meaningful
	pushl $0x202
	pushl $USER_CS
	pushl $USER_BASE
	movl $0x5A5A5A5A, %eax
iret_site:
	IRET

int_13:
	movl %eax, eax_at_gp
	popl gp_error
	popl gp_eip
	popl gp_cs
	movl %cs, %eax			# back to the flat kernel stack before any ROM call:
	andl $3, %eax			# VMI calls need a flat SS (reference §1)
	orl $KERNEL_DS, %eax
	mov %ax, %ss
	movl $KSTACK - 256, %esp
	CLI
	hlt

utrap_128:
	movl 12(%esp), %eax		# the user's ESP as the return left it
	movl %eax, user_esp
	CLI
	hlt

.data
on_16bit_stack: .long 0
eax_at_gp: .long 0
gp_error: .long 0
gp_eip: .long 0
gp_cs: .long 0
user_esp: .long 0
"""

USER = """
	movl %esp, %ebx
	int $0x80
"""


def run(monitor: str | None, *, kernel_16bit: bool = False) -> Guest:
    g = Guest(KERNEL, USER, monitor=monitor)
    if kernel_16bit:
        g.machine.memory.write32(g.sym("on_16bit_stack"), 1)
    g.run()
    assert g.stuck
    return g


def test_natively_the_return_keeps_the_kernel_esp_high_word() -> None:
    g = run(None)
    assert g.var("gp_eip") == 0  # no fault
    # int $0x80 from a 16-bit stack pushes ESP whole: SP from the frame, the high
    # word left over from the kernel's ESP after the pops (the espfix leak, §4)
    assert g.var("user_esp") == (KSTACK & 0xFFFF0000) | 0x0100


def test_landing_on_a_16bit_stack_gets_the_monitors_espfix() -> None:
    g = run("vmi")
    stats = g.monitor.stats
    assert stats.iret16_espfix == 1 and stats.iret16_refused == 0
    assert g.var("gp_eip") == 0  # no fault
    # the user's whole ESP, not the kernel's high word: what native ldt_ss achieves
    assert g.var("user_esp") == 0xABCD0100
    assert stats.injected.get("#GP", 0) == 0


def test_running_on_a_16bit_stack_is_refused_under_the_monitor() -> None:
    g = run("vmi", kernel_16bit=True)
    stats = g.monitor.stats
    assert stats.iret16_refused == 1 and stats.iret16_espfix == 0
    assert g.var("user_esp") == 0  # the user never ran
    assert g.var("gp_eip") == g.sym("iret_site")  # #GP at the site, not in the ROM
    assert g.var("gp_cs") == 0x61
    assert g.var("eax_at_gp") == 0x5A5A5A5A  # registers as at the site
    selector = KSEG16 | 1
    assert g.var("gp_error") == selector & 0xFFFC
    assert len(stats.reports) == 2
    assert "running on the 16-bit stack segment" in stats.reports[1]
    assert f"{selector:#06x}" in stats.reports[1]
    assert stats.injected == {"#GP": 1}
    # the #GP frame went onto the 16-bit stack, by SP, under the frame
    frame = KSEG16_BASE + 0x1000 - 20 - 16
    assert g.words(frame, 3) == [selector & 0xFFFC, g.sym("iret_site"), 0x61]


def test_natively_a_16bit_kernel_stack_returns_too() -> None:
    g = run(None, kernel_16bit=True)
    assert g.var("gp_eip") == 0 and g.var("user_esp") & 0xFFFF == 0x0100
