"""The kernel paths the explorer sweeps: where each starts and where it ends.

``iret``
    The return of an ``int $0x80`` getpid to user mode: from ``syscall_exit``
    (interrupts off, the work flags sampled) through ``restore_all`` and the
    ``IRET`` hook (native ``iret``, the naive inline store-pop-iret, or the VMI
    ROM's IRET window) to the first user instruction.
``sysexit``
    The return of a ``sysenter`` getpid: from ``sysenter_exit_path`` through the
    ``STI_SYSEXIT`` hook to the vsyscall page's ``SYSENTER_RETURN``.
``iret16``
    The same return for the ``stack16`` program, whose user stack is a 16-bit LDT
    segment: through ``ldt_ss`` and the espfix stack natively, through the ROM's
    IRET and the monitor's espfix under VMI (the seed's deferred case).
``iret-fault``
    A return the processor refuses: the ``badseg`` program (workload
    ``loader.IRET_FAULT_WORKLOAD``) clears the LDT entry its own SS names, and
    the return of that ``modify_ldt`` from ``syscall_exit`` faults on the
    ``IRET`` (#GP(0x0C): natively the kernel's ``iret``, under VMI the ROM's,
    reported at the call site). The exception table sends it to ``iret_exc``,
    which rebuilds the refused frame as the pt_regs of exception 32; the path
    ends at ``do_iret_error``, its handler (or at ``die``, where no table entry
    names the faulting instruction: the ``naive`` macro set's inline IRET).
    Branches run on through the kill (SIGSEGV: the console's report,
    ``do_exit``) to the next task's return to user mode, so the line naming the
    signal is part of what ``transparency`` compares.
``spinlock``
    ``_spin_lock_irqsave(&work_lock)`` in ``vmi_lock_work`` (the seed's
    spin_lock_flags), the critical section and ``_spin_unlock_irqrestore``, to
    the instruction after the unlock's call.

A start predicate is tried at every boundary of CPU 0 from reset; the path
starts at its ``occurrence``-th match (0-based), late enough that the workload
is in its steady state. The return paths' branches start earlier, at the user
instruction that entered the kernel (``from_user``): the steps from there to the
path's first boundary are each branch's lead-in, run and checked but not swept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from vmi.guest.loader import IRET_FAULT_WORKLOAD

GETPID = 20
PAGE_OFFSET = 0xC0000000
ORIG_EAX = 0x24


def _orig_eax(cpu: Any, machine: Any) -> int:
    return machine.memory.read32((cpu.r[4] + ORIG_EAX - PAGE_OFFSET) & 0xFFFFFFFF)


@frozen
class PathSpec:
    """A path: ``starts(symbols, cpu, machine)`` is true at its first boundary;
    ``ender(symbols, cpu, machine)`` makes the predicate of its last one."""

    name: str
    describe: str
    starts: Callable[[dict[str, int], Any, Any], bool]
    ender: Callable[[dict[str, int], Any, Any], Callable[[Any], bool]]
    occurrence: int = 3
    #: Whether a branch starts at the user-mode instruction that entered the kernel
    #: (its lead-in runs to the path's first boundary), so the checker sees the
    #: user state the return must restore (``integrity``) and the frame being built.
    from_user: bool = True
    #: The programs booted for the path (``vmi.guest.loader``): None for the default
    #: workload.
    workload: tuple[str, ...] | None = None


def _syscall_return(label: str) -> Callable[[dict[str, int], Any, Any], bool]:
    def starts(symbols: dict[str, int], cpu: Any, machine: Any) -> bool:
        return (cpu.eip == symbols[label] and cpu.cpl != 3
                and _orig_eax(cpu, machine) == GETPID)
    return starts


OLDSS = 0x38
STACK16_SELECTOR = 0x07  # stack16.S: LDT entry 0, RPL 3


def _syscall_return_16(symbols: dict[str, int], cpu: Any, machine: Any) -> bool:
    """``syscall_exit`` of a getpid whose user stack is the 16-bit LDT segment."""
    if cpu.eip != symbols["syscall_exit"] or cpu.cpl == 3 or _orig_eax(cpu, machine) != GETPID:
        return False
    oldss = machine.memory.read32((cpu.r[4] + OLDSS - PAGE_OFFSET) & 0xFFFFFFFF)
    return oldss & 0xFFFF == STACK16_SELECTOR


MODIFY_LDT = 123
BADSEG_SELECTOR = 0x0F  # badseg.S: LDT entry 1, RPL 3


def _refused_return(symbols: dict[str, int], cpu: Any, machine: Any) -> bool:
    """``syscall_exit`` of the ``modify_ldt`` that cleared the entry the saved SS names."""
    if (cpu.eip != symbols["syscall_exit"] or cpu.cpl == 3
            or _orig_eax(cpu, machine) != MODIFY_LDT):
        return False
    oldss = machine.memory.read32((cpu.r[4] + OLDSS - PAGE_OFFSET) & 0xFFFFFFFF)
    return oldss & 0xFFFF == BADSEG_SELECTOR


def _until_iret_error(symbols: dict[str, int], cpu: Any,
                      machine: Any) -> Callable[[Any], bool]:
    """At ``do_iret_error`` (the fixup made the fault the task's), or at ``die``: a
    kernel whose table names no fixup for the faulting instruction oopses there."""
    ends = {symbols["do_iret_error"], symbols["die"]}
    return lambda c: c.eip in ends and c.cpl != 3


def _until_user(symbols: dict[str, int], cpu: Any, machine: Any) -> Callable[[Any], bool]:
    return lambda c: c.cpl == 3


def _spin_starts(symbols: dict[str, int], cpu: Any, machine: Any) -> bool:
    return cpu.eip == symbols["_spin_lock_irqsave"] and cpu.r[0] == symbols["work_lock"]


def _after_unlock(symbols: dict[str, int], cpu: Any, machine: Any) -> Callable[[Any], bool]:
    unlock, lock = symbols["_spin_unlock_irqrestore"], symbols["work_lock"]
    state: dict[str, int] = {}

    def ended(c: Any) -> bool:
        if "ret" in state:
            return c.eip == state["ret"] and c.cpl != 3
        if c.eip == unlock and c.r[0] == lock:
            state["ret"] = machine.memory.read32((c.r[4] - PAGE_OFFSET) & 0xFFFFFFFF)
        return False
    return ended


PATHS: dict[str, PathSpec] = {
    "iret": PathSpec("iret", "syscall_exit of an int $0x80 getpid",
                     _syscall_return("syscall_exit"), _until_user),
    "sysexit": PathSpec("sysexit", "sysenter_exit_path of a sysenter getpid",
                        _syscall_return("sysenter_exit_path"), _until_user),
    "iret16": PathSpec("iret16", "syscall_exit of an int $0x80 getpid on a 16-bit stack",
                       _syscall_return_16, _until_user),
    "iret-fault": PathSpec("iret-fault", "syscall_exit of a modify_ldt whose return IRET "
                           "faults (badseg)", _refused_return, _until_iret_error, occurrence=0,
                           workload=IRET_FAULT_WORKLOAD),
    "spinlock": PathSpec("spinlock", "_spin_lock_irqsave(&work_lock)",
                         _spin_starts, _after_unlock, occurrence=2, from_user=False),
}
