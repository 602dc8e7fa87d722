"""The published region is guest-visible but protected: the ROM is read-only, the
shared page is the kernel's only, and the monitor's area above them is out of every
guest segment's reach. A guest write there faults (the fault is the guest's) and
nothing lands."""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import USER_DATA, Guest
from vmi.hypervisor import build_rom, layout

RESUME = USER_DATA + 0x10

KERNEL = """
main:
	movl $1f, RESUME
	movl $0xdeadbeef, ROM_LINEAR + 0x100	# a write to the ROM
1:	movl $2f, RESUME
	movl $0xdeadbeef, MONITOR_LINEAR	# a write to the monitor's area
2:	movl $3f, RESUME
	movl MONITOR_LINEAR + 0x10, %eax	# a read there
3:	movl $0x1234, %ss:VMI_VIF + 0x40	# the shared page is the kernel's
	movl %ss:VMI_VIF + 0x40, %eax
	movl %eax, shared_back
	ENTER_USER

.macro FAULT vector
int_\\vector:
	pushl %eax
	movl nfault, %eax
	shll $4, %eax
	addl $faults, %eax
	movl $\\vector, (%eax)
	pushl %ebx
	movl 8(%esp), %ebx		# the error code
	movl %ebx, 4(%eax)
	movl %cr2, %ebx
	movl %ebx, 8(%eax)
	movl 12(%esp), %ebx		# the faulting EIP
	movl %ebx, 12(%eax)
	popl %ebx
	incl nfault
	movl RESUME, %eax
	movl %eax, 8(%esp)
	popl %eax
	addl $4, %esp
	IRET
.endm
	FAULT 13
	FAULT 14

utrap_128:
	CLI
	hlt

.data
nfault: .long 0
shared_back: .long 0
faults: .space 16 * 8
"""

USER = """
	movl $1f, RESUME
	movl ROM_LINEAR, %eax			# ring 3 reads the ROM
1:	movl $2f, RESUME
	movl $0, VMI_VIF			# ring 3 writes the shared page
2:	int $0x80
"""

DEFINES = {"RESUME": RESUME, "ROM_LINEAR": layout.ROM_LINEAR,
           "MONITOR_LINEAR": layout.MONITOR_LINEAR, "VMI_VIF": layout.VMI_VIF}


@pytest.fixture(scope="module")
def guest() -> Guest:
    g = Guest(KERNEL, USER, monitor="vmi", defines=DEFINES)
    g.run()
    assert g.stuck
    return g


def faults(g: Guest) -> list[tuple[int, ...]]:
    base = g.sym("faults")
    return [tuple(g.words(base + 16 * i, 3)) for i in range(g.var("nfault"))]


def test_each_access_faults_in_the_guest(guest: Guest) -> None:
    assert faults(guest) == [
        (14, 0x3, layout.ROM_LINEAR + 0x100),  # #PF: a write to a read-only page
        (13, 0x0, layout.ROM_LINEAR + 0x100),  # #GP(0): beyond the segment limit
        (13, 0x0, layout.ROM_LINEAR + 0x100),
        (14, 0x5, layout.ROM_LINEAR),  # #PF from ring 3: a supervisor page
        (14, 0x7, layout.VMI_VIF),
    ]


def test_nothing_landed(guest: Guest) -> None:
    mem = guest.machine.memory
    assert mem.read_bytes(layout.ROM_PHYSICAL, layout.ROM_SIZE) == build_rom().image
    vcpu = guest.monitor.vcpu(guest.cpu)
    assert mem.read32(vcpu.gdt) != 0xDEADBEEF
    assert guest.var("shared_back") == 0x1234


def test_segments_end_at_the_shared_page(guest: Guest) -> None:
    cpu = guest.cpu
    for seg in (0, 1, 2, 3):
        assert cpu.seg_limit[seg] == layout.GUEST_LIMIT
