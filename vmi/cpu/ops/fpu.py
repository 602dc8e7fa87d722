"""x87 escape instructions (D8-DF) on a machine without a floating-point unit.

vmi models no FPU registers. What the processor does before it would hand an
ESC instruction to a coprocessor is modelled exactly, because a kernel's
lazy-FPU path depends on it (SDM Vol.3A §2.5 CR0.EM/TS, §6.15 "Interrupt 7"):

* CR0.EM = 1 or CR0.TS = 1: #NM (device not available), a fault; this is how
  Linux's ``device_not_available`` runs.
* otherwise the instruction completes without effect, but a memory operand is
  still fetched, so its segment-limit and paging faults happen (as an ESC does
  on a 286/386 with no coprocessor attached, which the SingleStepTests 80286
  data shows: the 286 ran D8 forms as no-ops that raised #GP at offset FFFF).

``fwait`` is in ``vmi.cpu.ops.misc`` (#NM only when CR0.MP and CR0.TS are set).
"""

from __future__ import annotations

from vmi.cpu import x87
from vmi.cpu.access import effective_address
from vmi.cpu.operands import MemoryOperand
from vmi.cpu.ops import build, semantics

CR0_EM, CR0_TS = 0x4, 0x8


def escape(insn, cpu):
    """#NM when CR0.EM or CR0.TS is set; else only the operand fetch (no FPU is modelled)."""
    lines = [f"if cpu.cr[0] & {CR0_EM | CR0_TS:#x}:",
             "    raise CPUException(7, None, 'device not available (CR0.EM/TS)')"]
    params = {}
    memory = [op for op in insn.operands if isinstance(op, MemoryOperand)]
    if memory and memory[0].size:
        ea, params = effective_address(memory[0], "m")
        params["m_seg"] = memory[0].segment
        lines += ["r = cpu.r", f"a = {ea}", "cpu.rd8(m_seg, a)",
                  f"cpu.rd8(m_seg, a + {memory[0].size - 1})"]
    return build("\n".join(lines), params)


semantics(*sorted({name for form in x87.FORMS for name in form.mnemonic.split("/")}))(escape)
