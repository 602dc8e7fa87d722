"""Stack operations on general registers, memory and immediates: push, pop."""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.operands import Register
from vmi.cpu.ops import build, pop_source, push_source, raise_invalid, semantics

#: Segment-register push/pop factories, registered by the system model.
SEGMENT_STACK: dict = {}


@semantics("push")
def push(insn, cpu):
    (src,) = insn.operands
    if isinstance(src, Register) and src.kind == "seg":
        special = SEGMENT_STACK.get("push")
        return special(insn, cpu) if special else raise_invalid("push sreg not implemented")
    size = insn.opsize // 8
    s = operand_access(src, "s", size=size)
    # push %esp pushes the value ESP had before the instruction (SDM Vol.2 PUSH).
    body = "\n".join(["r = cpu.r", *s.setup, f"v = {s.read}",
                      push_source("v", size, cpu.stack_bits)])
    return build(body, s.params)


@semantics("pop")
def pop(insn, cpu):
    (dst,) = insn.operands
    if isinstance(dst, Register) and dst.kind == "seg":
        special = SEGMENT_STACK.get("pop")
        return special(insn, cpu) if special else raise_invalid("pop sreg not implemented")
    size = insn.opsize // 8
    d = operand_access(dst, "d", size=size)
    # pop to memory addressed through ESP uses ESP as it is after the pop
    # (SDM Vol.2 POP), so the address is computed after the increment.
    body = "\n".join(["r = cpu.r", pop_source("v", size, cpu.stack_bits), *d.setup,
                      d.write("v")])
    return build(body, d.params)
