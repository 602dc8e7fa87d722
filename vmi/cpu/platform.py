"""The platform seam: who delivers a CPU's exceptions and interrupts.

The CPU knows nothing of hypervisors (DESIGN.md, "Dependency direction"): when an
instruction raises an exception, or the machine takes an external interrupt,
the CPU hands the event to ``cpu.platform``. ``NativePlatform`` does what the
hardware does: through the IDT in protected mode (``vmi.cpu.protected``) and
through the interrupt vector table in real mode (``vmi.cpu.realmode``). The VMI
monitor is another platform, which intercepts instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from attrs import define, field

from vmi.cpu.errors import CPUException

CR0_PE = 0x1
EFLAGS_VM = 0x20000


class Platform(Protocol):
    """What a CPU and a machine call to deliver events."""

    def deliver_exception(self, cpu: Any, exc: CPUException) -> None:
        """Deliver ``exc``, raised by the instruction at ``cpu.eip`` (a fault: EIP is
        on the instruction) or just before it (a trap: EIP is after it). An event
        that cannot be delivered ends in an exception the machine reports."""

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        """Deliver external interrupt ``vector`` at an instruction boundary."""


@define
class NativePlatform:
    """Bare hardware: protected-mode events go through the guest's IDT (SDM Vol.3A
    §6.12), real-mode events through its IVT (§20.1.4). Virtual-8086 mode is not
    modelled and is refused by the protected-mode delivery.

    ``trace``, when given, is called with ``(vector, kind)`` for each event handed
    to the platform (kind "exception" or "interrupt").
    """

    trace: Callable[[int, str], None] | None = None
    _real_mode: Any = field(default=None, init=False, repr=False)

    def deliver_exception(self, cpu: Any, exc: CPUException) -> None:
        if self.trace is not None:
            self.trace(exc.vector, "exception")
        if cpu.cr[0] & CR0_PE:
            from vmi.cpu import protected

            protected.deliver(cpu, exc.vector, exc.error_code,
                              software=protected.is_software(exc))
        else:
            self._real_mode_platform().deliver_exception(cpu, exc)

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        if self.trace is not None:
            self.trace(vector, "interrupt")
        cpu.halted = False
        if cpu.cr[0] & CR0_PE:
            from vmi.cpu import protected

            protected.deliver(cpu, vector, None, external=True)
        else:
            self._real_mode_platform().deliver_interrupt(cpu, vector)

    def _real_mode_platform(self) -> Any:
        """The real-mode delivery of ``vmi.cpu.realmode`` (imported on first use)."""
        if self._real_mode is None:
            try:
                from vmi.cpu import realmode
            except ImportError as error:
                raise RuntimeError("real-mode event delivery needs vmi.cpu.realmode, "
                                   f"which cannot be imported: {error}") from error
            platform_class = getattr(realmode, "RealModePlatform", None)
            if platform_class is None:
                raise RuntimeError("vmi.cpu.realmode has no RealModePlatform: real-mode "
                                   "delivery through the IVT is not available yet")
            self._real_mode = platform_class()
        return self._real_mode
