"""The virtual interrupt flag: CLI and STI through the ROM, interrupts made pending
while it is clear, and delivered at the STI (and at an IRET that enables it), in the
order and with the frames native hardware gives."""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import Guest
from vmi.hypervisor import layout

KERNEL = """
main:
	STI
	CLI
masked:
	movl $1, step			# the interrupts are raised here, with IF clear
	movl $2, step
	movl $3, step
	STI
after_sti:
	movl $4, step
	GET_CR0
	movl %eax, cr0_seen
	CLI
	hlt

.macro RECORD vector
	pushl %eax
	movl nrec, %eax
	shll $3, %eax
	addl $records, %eax
	movl $\\vector, (%eax)
	pushl %ebx
	movl 8(%esp), %ebx		# the frame's EIP
	movl %ebx, 4(%eax)
	popl %ebx
	incl nrec
	popl %eax
.endm

int_32:
	RECORD 32
	IRET				# enables the virtual IF: 0x21 is taken here
int_33:
	RECORD 33
	IRET

.data
step: .long 0
cr0_seen: .long 0
nrec: .long 0
records: .space 64
"""


def run(monitor: str | None, *, probe: bool = False) -> Guest:
    g = Guest(KERNEL, monitor=monitor)
    g.run_to(g.sym("masked"))
    g.interrupt(0x21)
    g.interrupt(0x20)
    if probe:
        return g
    g.run()
    assert g.stuck
    return g


def records(g: Guest) -> list[tuple[int, int]]:
    base = g.sym("records")
    return [(g.u32(base + 8 * i), g.u32(base + 8 * i + 4)) for i in range(g.var("nrec"))]


def test_pending_while_the_virtual_if_is_clear() -> None:
    g = run("vmi", probe=True)
    for _ in range(5):  # two interrupts taken by the monitor, three stores retire
        g.machine.step()
    vcpu = g.monitor.vcpu(g.cpu)
    assert g.var("nrec") == 0 and g.var("step") == 3
    assert not vcpu.interrupts_enabled
    assert vcpu.pending == 1 << 0x20 | 1 << 0x21
    assert g.machine.memory.read32(vcpu.shared + layout.SHARED_PENDING) == 1
    assert g.cpu.flags & 0x200  # the real IF stays 1
    assert g.monitor.stats.pending_recorded == 2


@pytest.mark.parametrize("monitor", [None, "vmi"])
def test_delivered_at_sti_lowest_first(monitor: str | None) -> None:
    g = run(monitor)
    after_sti = g.sym("after_sti")
    # 0x20 at the end of the STI site; its handler's IRET enables IF and 0x21 is
    # taken at once, on the same frame (natively: the boundary after the iret)
    assert records(g) == [(32, after_sti), (33, after_sti)]
    assert g.var("step") == 4


def test_rom_statistics() -> None:
    g = run("vmi")
    stats = g.monitor.stats
    assert stats.hypercalls == {"init": 1, "sti_pending": 1, "iret_pending": 1}
    assert stats.injected == {"0x20": 1, "0x21": 1}
    assert stats.frames == 1  # the second one was delivered on the IRET's frame
    assert stats.emulated == {"hlt": 1}
    assert stats.exits == {"rom_call": 3, "interrupt": 2, "emulation": 1}
    assert not stats.stale_pending and not g.monitor.vcpu(g.cpu).pending


def test_get_cr0_reads_the_shadow_without_an_exit() -> None:
    g = run("vmi")
    assert g.var("cr0_seen") == 0x80010011 == g.monitor.vcpu(g.cpu).cr0
    assert "mov" not in g.monitor.stats.emulated


def test_unpatched_cli_sti_trap_instead() -> None:
    g = Guest(KERNEL, macros="native", monitor="vmi")
    g.run_to(g.sym("masked"))
    g.interrupt(0x20)
    g.run()
    assert g.monitor.stats.emulated["cli"] == 2 and g.monitor.stats.emulated["sti"] == 2
    assert records(g)[0] == (32, g.sym("after_sti"))
