"""Injection: the frames the monitor builds on the guest kernel stack are the native
frames, byte for byte, but for the RPL of a kernel CS (0x60 natively, 0x61 at ring 1).

The same program runs natively at ring 0 and under the monitor at ring 1; every
handler records the vector, the ESP at entry and the six dwords above it."""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import KSTACK, USER_DATA, Guest

RESUME = USER_DATA + 0x10
FLAG = USER_DATA + 0x14

KERNEL = """
main:
	ENTER_USER

# record(vector): vector, ESP at the handler's entry, the six dwords there
record:
	pushl %eax
	pushl %ecx
	pushl %esi
	pushl %edi
	movl nrec, %edi
	shll $5, %edi
	addl $records, %edi
	movl 20(%esp), %eax
	movl %eax, (%edi)
	leal 24(%esp), %esi
	movl %esi, 4(%edi)
	addl $8, %edi
	movl $6, %ecx
	cld
	rep movsl
	incl nrec
	popl %edi
	popl %esi
	popl %ecx
	popl %eax
	ret

.macro RESUME_AT_FLAG
	pushl %eax
	movl RESUME, %eax
	movl %eax, 4(%esp)
	popl %eax
.endm

utrap_128:				# int $0x80: EAX 1 = continue, 2 = kernel events, 99 = end
	pushl $128
	call record
	addl $4, %esp
	cmpl $99, %eax
	je finish
	cmpl $2, %eax
	je kernel_events
	IRET
kernel_events:
	STI
kspin:
	cmpl $0, FLAG
	je kspin
	movl $1f, RESUME
	ud2				# #UD in the kernel
1:	movl $2f, RESUME
	movl 0x500000, %eax		# #PF in the kernel: page directory entry 1 is empty
2:	CLI
	IRET
finish:
	CLI
	hlt

utrap_3:
	pushl $3
	call record
	addl $4, %esp
	IRET
int_6:
	pushl $6
	call record
	addl $4, %esp
	RESUME_AT_FLAG
	IRET
int_13:
	pushl $13
	call record
	addl $8, %esp			# vector, error code
	RESUME_AT_FLAG
	IRET
int_14:
	pushl $14
	call record
	addl $8, %esp
	pushl %eax
	movl %cr2, %eax
	movl %eax, last_cr2
	popl %eax
	RESUME_AT_FLAG
	IRET
int_32:
	pushl $32
	call record
	addl $4, %esp
	movl $1, FLAG
	IRET
trap_64:				# DPL 0: int $0x40 from user is #GP(0x202)
	IRET

.data
nrec: .long 0
last_cr2: .long 0
records: .space 32 * 16
"""

USER = """
	movl $1, %eax
	int $0x80			# a system call
	movl $1f, RESUME
	movl 0x3FF000, %eax		# #PF: a supervisor page
1:	movl $2f, RESUME
	cli				# #GP(0): IOPL 0
2:	int3				# #BP through a DPL-3 gate
	movl $3f, RESUME
	int $0x40			# #GP(0x202): a DPL-0 gate
3:
uspin:
	cmpl $0, FLAG
	je uspin			# an external interrupt arrives here
	movl $0, FLAG
	movl $2, %eax
	int $0x80			# the kernel takes an interrupt, #UD and #PF
	movl $99, %eax
	int $0x80
"""

#: (vector, error code?) of the records in order, and whether the event was in user mode.
EVENTS = [(128, False, True), (14, True, True), (13, True, True), (3, False, True),
          (13, True, True), (32, False, True), (128, False, True), (32, False, False),
          (6, False, False), (14, True, False), (128, False, True)]


def run(monitor: str | None) -> Guest:
    g = Guest(KERNEL, USER, monitor=monitor, defines={"RESUME": RESUME, "FLAG": FLAG})
    g.run_to(g.sym("uspin"))
    g.interrupt(0x20)
    g.run_to(g.sym("kspin"))
    g.interrupt(0x20)
    g.run()
    assert g.stuck
    return g


def records(g: Guest) -> list[list[int]]:
    base = g.sym("records")
    return [g.words(base + 32 * i, 8) for i in range(g.var("nrec"))]


@pytest.fixture(scope="module")
def frames() -> tuple[list[list[int]], list[list[int]], Guest, Guest]:
    native, virtual = run(None), run("vmi")
    return records(native), records(virtual), native, virtual


def test_every_event_recorded(frames: tuple) -> None:
    native, virtual, _n, _v = frames
    assert [r[0] for r in native] == [e[0] for e in EVENTS]
    assert [r[0] for r in virtual] == [e[0] for e in EVENTS]


def test_frames_equal_modulo_the_rpl(frames: tuple) -> None:
    native, virtual, _n, _v = frames
    for (vector, error, user), n, v in zip(EVENTS, native, virtual, strict=True):
        size = (5 if user else 3) + (1 if error else 0)
        n_frame, v_frame = n[2:2 + size], v[2:2 + size]
        cs = 2 if error else 1
        assert n[1] == v[1], f"vector {vector}: frame at {n[1]:#x} natively, {v[1]:#x}"
        if user:
            assert n_frame == v_frame, f"vector {vector}: {n_frame} != {v_frame}"
            assert n_frame[cs] == 0x73 and n_frame[cs + 3] == 0x7B
            assert n[1] == KSTACK - 4 * size
        else:
            assert n_frame[cs] == 0x60 and v_frame[cs] == 0x61
            v_frame[cs] = 0x60
            assert n_frame == v_frame, f"vector {vector}: {n_frame} != {v_frame}"


def test_error_codes_and_flags(frames: tuple) -> None:
    native, virtual, n_guest, v_guest = frames
    errors = [r[2] for r, e in zip(virtual, EVENTS, strict=True) if e[1]]
    assert errors == [0x5, 0x0, 0x202, 0x0]  # #PF U|P, #GP(0), #GP(IDT 0x40), #PF kernel
    assert v_guest.var("last_cr2") == n_guest.var("last_cr2") == 0x500000
    for r, (vector, error, _user) in zip(virtual, EVENTS, strict=True):
        eflags = r[2 + (2 if error else 1) + 1]
        assert eflags & 0x200, f"vector {vector}: the virtual IF was on"


def test_injection_statistics(frames: tuple) -> None:
    _n, _v, _ng, g = frames
    stats = g.monitor.stats
    assert stats.injected == {"0x80": 3, "#PF": 2, "#GP": 2, "#BP": 1, "0x20": 2, "#UD": 1}
    assert stats.frames == 11
    assert stats.exits["interrupt"] == 2
    assert stats.exits["trap"] == 9
