"""Data movement between registers, memory and immediates: mov, lea."""

from __future__ import annotations

from vmi.cpu.access import effective_address, operand_access
from vmi.cpu.operands import Register
from vmi.cpu.ops import build, raise_invalid, semantics


@semantics("mov")
def mov(insn, cpu):
    """mov between general registers, memory and immediates.

    Segment, control, debug and test register forms belong to the system model,
    which registers them through ``MOVE_SPECIAL``.
    """
    dst, src = insn.operands
    for op in (dst, src):
        if isinstance(op, Register) and op.kind != "gpr":
            special = MOVE_SPECIAL.get(op.kind)
            if special is None:
                return raise_invalid(f"mov to/from {op.kind} registers is not implemented")
            return special(insn, cpu)
    d = operand_access(dst, "d")
    s = operand_access(src, "s", size=d.bits // 8)
    body = "\n".join(["r = cpu.r", *s.setup, *d.setup, d.write(s.read)])
    return build(body, d.params, s.params)


#: kind of the non-general register ("seg", "cr", "dr", "tr") -> mov factory.
MOVE_SPECIAL: dict = {}


@semantics("lea")
def lea(insn, cpu):
    """Load the effective address (offset only, truncated to the operand size)."""
    dst, src = insn.operands
    d = operand_access(dst, "d")
    ea, params = effective_address(src, "s")
    mask = (1 << d.bits) - 1
    value = f"({ea}) & {mask:#x}" if d.bits == 16 else ea
    return build("\n".join(["r = cpu.r", d.write(value)]), d.params, params)
