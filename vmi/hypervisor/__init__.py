"""The VMI hypervisor model: a monitor (a platform of ``vmi.machine``) that runs a
guest kernel deprivileged at ring 1 behind a VMI ROM published at one fixed linear
address, with the IRET race window confined to that ROM and handled by a policy.
See docs/hypervisor.md.

``boot(machine, programs, policy=, mode=)`` attaches a ``VMIMonitor`` to a machine;
``layout`` holds every address and offset the guest needs; ``build_rom()`` the ROM.
"""

from vmi.hypervisor import layout
from vmi.hypervisor.errors import MonitorRefusal
from vmi.hypervisor.monitor import (
    EXIT_COSTS,
    FIXUP_COST,
    FRAME_COST,
    MODES,
    POLICIES,
    MonitorStats,
    VMIMonitor,
    boot,
)
from vmi.hypervisor.rom import Rom, Window, build_rom

__all__ = [
    "EXIT_COSTS", "FIXUP_COST", "FRAME_COST", "MODES", "POLICIES", "MonitorRefusal",
    "MonitorStats", "Rom", "VMIMonitor", "Window", "boot", "build_rom", "layout",
]
