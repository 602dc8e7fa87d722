"""The i386 processor: decoding, disassembly and execution.

``vmi.cpu`` knows nothing of hypervisors; it reports events it cannot deliver
to a platform object (see ``vmi.cpu.core``).
"""

from vmi.cpu.core import CPU, Registers
from vmi.cpu.decoder import decode
from vmi.cpu.errors import CPUException, DecodeError, InvalidOpcode, TruncatedInstruction
from vmi.cpu.memory import Memory
from vmi.cpu.operands import (
    Constant,
    FarPointer,
    Immediate,
    Instruction,
    MemoryOperand,
    Register,
    Relative,
)

__all__ = [
    "CPU", "Registers", "decode", "CPUException", "DecodeError", "InvalidOpcode",
    "TruncatedInstruction", "Memory", "Constant", "FarPointer", "Immediate", "Instruction",
    "MemoryOperand", "Register", "Relative",
]

# The semantics (vmi.cpu.ops imports core, so core cannot import it at its top)
# load with the package rather than at a processor's first instruction.
from vmi.cpu import ops as _ops  # noqa: E402,F401
