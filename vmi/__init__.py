"""vmi: a pure-Python, cycle-stepped i386 interpreter with a model of the VMI
paravirtual hypervisor interface, for studying the IRET race.

``import vmi`` stays light: numpy, attrs and the CPU package only.
"""

from vmi.cpu import CPU, CPUException, InvalidOpcode, Memory, TruncatedInstruction, decode

__version__ = "0.1.0"
__all__ = ["CPU", "CPUException", "InvalidOpcode", "Memory", "TruncatedInstruction", "decode"]
