"""The IRET race and the three window policies.

A kernel returns to user space through the patched IRET (after int $0x80) and the
patched STI_SYSEXIT (after sysenter); its exit paths check a work flag with the
virtual IF clear, as entry.S checks TIF_NEED_RESCHED. The timer handler raises the
work; returning to user space it goes through the exit path (which does the work),
returning to the kernel it irets straight back (resume_kernel without preemption).
The user program counts every return on which it finds the work still pending
(``MISSED``): natively that never happens, because IRET and STI;SYSEXIT change IF
and the stack atomically (the seed; reference §5 facts 1, 4).

An interrupt is raised while the guest's EIP is at a chosen instruction of a window:

* ``none``: after the store that sets the virtual IF, the interrupt is injected on
  the half-returned kernel stack (a nested frame whose CS is the kernel's and EIP is
  in the ROM); its work is not done before the return: MISSED = 1. Before that
  store it is made pending and stays so while the user runs (``stale_pending``).
* ``defer``: the monitor runs the guest to the end of the window and delivers at the
  first boundary after it, in user mode: the exit path does the work.
* ``fixup``: the interrupt is delivered on the frame the window was returning
  through, in place; the exit path runs again and does the work.
"""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import KSTACK, SYSENTER_STACK, USER_DATA, Guest
from vmi.hypervisor import build_rom

WORK, MISSED, ITER = USER_DATA, USER_DATA + 4, USER_DATA + 8

KERNEL = """
# The exit paths' work check (entry.S's TIF_NEED_RESCHED loop): with the virtual IF
# clear, do the work until none is pending.
.macro DO_WORK
	CLI
1:	cmpl $0, WORK
	je 2f
	movl $0, WORK
	incl work_done
	jmp 1b
2:
.endm

main:
	SET_SYSENTER sysenter_entry
	ENTER_USER

utrap_128:
	incl syscalls
	cmpl $99, %eax
	je finish
exit_path:
	DO_WORK
	IRET

sysenter_entry:
	incl sysenters
	DO_WORK
	STI_SYSEXIT

int_32:
	pushl %eax
	movl $1, WORK
	incl ticks
	movl 4(%esp), %eax
	movl %eax, tick_eip
	movl 8(%esp), %eax
	movl %eax, tick_cs
	movl %esp, tick_esp
	andl $3, %eax
	cmpl $3, %eax
	popl %eax
	je exit_path			# back to user space: through the work check
	IRET				# back to the kernel: straight back

finish:
	CLI
	hlt

.data
syscalls: .long 0
sysenters: .long 0
work_done: .long 0
ticks: .long 0
tick_eip: .long 0
tick_cs: .long 0
tick_esp: .long 0
"""

USER = """
loop:
	movl $1, %eax
	int $0x80
after_int:
	cmpl $0, WORK
	je 1f
	incl MISSED
1:	movl $back, %edx
	movl %esp, %ecx
	sysenter
back:
	cmpl $0, WORK
	je 2f
	incl MISSED
2:	incl ITER
	cmpl $3, ITER
	jne loop
	movl $99, %eax
	int $0x80
"""

DEFINES = {"WORK": WORK, "MISSED": MISSED, "ITER": ITER}
ROM = build_rom().symbols


def run(policy: str | None, point: str | None, count: int = 2) -> Guest:
    """Raise the timer when EIP reaches ``point`` (a ROM symbol) the ``count``-th time
    (the second round trip; the first happens before Init is long done)."""
    g = Guest(KERNEL, USER, monitor=None if policy is None else "vmi",
              policy=policy or "defer", defines=DEFINES)
    if point is not None:
        g.run_to(ROM[point], count=count)
        g.interrupt(0x20)
    g.run()
    assert g.stuck, "the program did not finish"
    assert g.var("syscalls") == 4 and g.var("sysenters") == 3 and g.u32(ITER) == 3
    return g


@pytest.mark.parametrize("policy", [None, "defer", "fixup", "none"])
def test_without_an_interrupt_every_policy_runs_like_native(policy: str | None) -> None:
    g = run(policy, None)
    assert g.u32(MISSED) == 0 and g.var("ticks") == 0


def test_natively_the_work_is_never_missed() -> None:
    g = Guest(KERNEL, USER, monitor=None, defines=DEFINES)
    g.run_to(g.sym("after_int"), count=2)
    g.interrupt(0x20)
    g.run()
    assert g.u32(MISSED) == 0 and g.var("ticks") == 1 and g.var("work_done") == 1


# -- the IRET window ---------------------------------------------------------------------
@pytest.mark.parametrize("point", ["vmi_iret_pop", "vmi_iret_drop", "vmi_iret_insn"])
def test_none_after_the_store_nests_and_misses_the_work(point: str) -> None:
    g = run("none", point)
    assert g.var("tick_cs") == 0x61 and g.var("tick_eip") == ROM[point]  # in the ROM
    assert g.u32(MISSED) == 1  # returned to user with the work pending
    stats = g.monitor.stats
    assert stats.nested_in_window == 1 and not stats.deferred and not stats.fixups
    # the nested frame sits below the half-popped user frame
    assert g.var("tick_esp") < KSTACK - 20 - 12


@pytest.mark.parametrize("point", ["vmi_iret_pop", "vmi_iret_insn", "vmi_iret_store"])
@pytest.mark.parametrize("policy", ["defer", "fixup"])
def test_defer_and_fixup_deliver_on_the_user_frame(policy: str, point: str) -> None:
    g = run(policy, point)
    assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("after_int")
    assert g.u32(MISSED) == 0 and g.var("work_done") == 1
    # the handler's frame is the user frame at the top of the kernel stack
    assert g.var("tick_esp") == KSTACK - 20 - 4
    stats = g.monitor.stats
    assert stats.nested_in_window == 0 and stats.stale_pending == 0
    assert (stats.deferred, stats.fixups) == ((1, 0) if policy == "defer" else (0, 1))


def test_none_before_the_store_leaves_the_event_pending() -> None:
    g = run("none", "vmi_iret_store")
    stats = g.monitor.stats
    assert stats.stale_pending >= 1  # the user ran with the event pending
    # taken only on the next way out of the kernel (the SYSEXIT's pending check)
    assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("back")


def test_pending_check_at_the_window_start_takes_the_event_on_the_frame() -> None:
    """An interrupt that arrives before the ROM tests PENDING is seen by the test, and
    delivered on the IRET's frame by the hypercall (``fixup`` does it at once)."""
    for policy in ("defer", "fixup", "none"):
        g = run(policy, "vmi_iret_window_start")
        assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("after_int")
        assert g.u32(MISSED) == 0
        stats = g.monitor.stats
        assert (stats.hypercalls["iret_pending"], stats.fixups) == (
            (0, 1) if policy == "fixup" else (1, 0))


# -- the SYSEXIT window -------------------------------------------------------------------
def test_sysexit_none_nests_and_misses_the_work() -> None:
    g = run("none", "vmi_sysexit_insn")
    assert g.var("tick_cs") == 0x61 and g.var("tick_eip") == ROM["vmi_sysexit_insn"]
    assert g.u32(MISSED) == 1
    assert g.monitor.stats.nested_in_window == 1


@pytest.mark.parametrize("point", ["vmi_sysexit_store", "vmi_sysexit_insn"])
def test_sysexit_defer_delivers_in_user_mode(point: str) -> None:
    g = run("defer", point)
    assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("back")
    assert g.u32(MISSED) == 0 and g.var("work_done") == 1
    assert g.var("tick_esp") == KSTACK - 20 - 4  # a native delivery from ring 3


@pytest.mark.parametrize("point", ["vmi_sysexit_store", "vmi_sysexit_insn"])
def test_sysexit_fixup_delivers_on_the_rom_built_frame(point: str) -> None:
    g = run("fixup", point)
    assert g.var("tick_cs") == 0x73 and g.var("tick_eip") == g.sym("back")
    assert g.u32(MISSED) == 0 and g.var("work_done") == 1
    # in place: the frame the ROM built under its return address on the sysenter stack
    assert g.var("tick_esp") == SYSENTER_STACK - 4 - 20 - 4
    assert g.monitor.stats.fixups == 1


def test_sysexit_none_before_the_store_leaves_the_event_pending() -> None:
    g = run("none", "vmi_sysexit_store")
    assert g.monitor.stats.stale_pending >= 1
    assert g.var("tick_eip") != g.sym("back")  # not taken at the return
