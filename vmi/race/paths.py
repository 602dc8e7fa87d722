"""The kernel paths the explorer sweeps: where each starts and where it ends.

``iret``
    The return of an ``int $0x80`` getpid to user mode: from ``syscall_exit``
    (interrupts off, the work flags sampled) through ``restore_all`` and the
    ``IRET`` hook (native ``iret``, the naive inline store-pop-iret, or the VMI
    ROM's IRET window) to the first user instruction.
``sysexit``
    The return of a ``sysenter`` getpid: from ``sysenter_exit_path`` through the
    ``STI_SYSEXIT`` hook to the vsyscall page's ``SYSENTER_RETURN``.
``spinlock``
    ``_spin_lock_irqsave(&work_lock)`` in ``vmi_lock_work`` (the seed's
    spin_lock_flags), the critical section and ``_spin_unlock_irqrestore``, to
    the instruction after the unlock's call.

A start predicate is tried at every boundary of CPU 0 from reset; the path
starts at its ``occurrence``-th match (0-based), late enough that the workload
is in its steady state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

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


def _syscall_return(label: str) -> Callable[[dict[str, int], Any, Any], bool]:
    def starts(symbols: dict[str, int], cpu: Any, machine: Any) -> bool:
        return (cpu.eip == symbols[label] and cpu.cpl != 3
                and _orig_eax(cpu, machine) == GETPID)
    return starts


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
    "spinlock": PathSpec("spinlock", "_spin_lock_irqsave(&work_lock)",
                         _spin_starts, _after_unlock, occurrence=2),
}
