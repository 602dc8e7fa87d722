"""vmi: a pure-Python, cycle-stepped i386 interpreter with a model of the VMI
paravirtual hypervisor interface, for studying the IRET race.

``import vmi`` is light: the processor's names below (``vmi.CPU``, ``vmi.decode``,
...) are imported from ``vmi.cpu`` on first use (PEP 562), so a command that does
not run the processor (``vmi --help``, ``vmi cache``) never loads numpy.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["CPU", "CPUException", "InvalidOpcode", "Memory", "TruncatedInstruction", "decode"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vmi import cpu

        return getattr(cpu, name)
    raise AttributeError(f"module 'vmi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
