"""Near control transfers: jmp, jcc, call, ret, loop, loope, loopne, jcxz/jecxz
(SDM Vol.2 under each mnemonic; Vol.1 §6.3).

Targets of relative forms are resolved by the decoder and already masked to
the operand size, so with a 16-bit operand size EIP's upper half becomes zero
(SDM Vol.2 JMP: "EIP <- tempEIP AND 0000FFFFH"). An indirect target is read
at the operand size, which zero-extends it the same way. The run loop has
set ``cpu.eip`` to the next instruction before a body runs; a taken branch
overwrites it. Segment-limit checks on the target belong to the segmentation
model (a flat CS cannot fail them).
"""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.flags import CONDITION_CODES, CONDITIONS, MASK
from vmi.cpu.operands import Relative
from vmi.cpu.ops import build, pop_source, push_source, semantics

_JCC = ["j" + cc for cc in CONDITION_CODES]
_ZF = CONDITIONS[CONDITION_CODES["e"]]


@semantics(*_JCC)
def jcc(insn, cpu):
    """Jump if the condition holds; je/jne test ZF inline (the common loop exits)."""
    (target,) = insn.operands
    code = CONDITION_CODES[insn.mnemonic[1:]]
    if code in (4, 5):
        test = "not (lf[4] & MASK[lf[1]])" if code == 4 else "lf[4] & MASK[lf[1]]"
        etest = "lf[2] & 0x40" if code == 4 else "not lf[2] & 0x40"
        body = f"""
lf = cpu.lf
if lf[0] == EXPLICIT:
    if {etest}:
        cpu.eip = T
elif {test}:
    cpu.eip = T
"""
        return build(body, T=target.target)
    return build("if COND(cpu.lf):\n    cpu.eip = T", T=target.target, COND=CONDITIONS[code])


def _target(insn, slot):
    """Source and params of a near branch target (relative or r/m indirect)."""
    (op,) = insn.operands
    if isinstance(op, Relative):
        return [], "T", {"T": op.target}
    acc = operand_access(op, slot, size=insn.opsize // 8)
    return acc.setup, acc.read, acc.params


@semantics("jmp")
def jmp(insn, cpu):
    """Near jump, relative or through a register or memory."""
    setup, target, params = _target(insn, "t")
    return build("\n".join(["r = cpu.r", *setup, f"cpu.eip = {target}"]), params)


@semantics("call")
def call(insn, cpu):
    """Push the return address (IP only with a 16-bit operand size), then jump.

    An indirect target is read first, with ESP as it was before the call
    (``call *(%esp)`` jumps to what was on top of the stack); the push faults
    before EIP changes.
    """
    size = insn.opsize // 8
    setup, target, params = _target(insn, "t")
    body = "\n".join([
        "r = cpu.r", *setup, f"dest = {target}",
        push_source("RET", size, cpu.stack_bits), "cpu.eip = dest",
    ])
    return build(body, params, RET=insn.next_address & MASK[insn.opsize])


@semantics("ret")
def ret(insn, cpu):
    """Pop EIP (IP, zero-extended, with a 16-bit operand size) and release
    ``imm16`` more bytes of arguments at the stack size."""
    size = insn.opsize // 8
    lines = ["r = cpu.r", pop_source("dest", size, cpu.stack_bits)]
    if insn.operands:
        extra = insn.operands[0].value
        if cpu.stack_bits == 32:
            lines.append(f"r[4] = (r[4] + {extra}) & 0xFFFFFFFF")
        else:
            lines.append(f"r[4] = (r[4] & 0xFFFF0000) | ((r[4] + {extra}) & 0xFFFF)")
    lines.append("cpu.eip = dest")
    return build("\n".join(lines))


@semantics("loop", "loope", "loopne")
def loop(insn, cpu):
    """Decrement the count register, then jump if it is not zero (and, for
    loope/loopne, if ZF is 1/0). The address size picks CX or ECX (SDM Vol.2
    LOOP/LOOPcc); no flag changes."""
    (target,) = insn.operands
    if insn.addrsize == 32:
        lines = ["r = cpu.r", "c = (r[1] - 1) & 0xFFFFFFFF", "r[1] = c"]
    else:
        lines = ["r = cpu.r", "c = (r[1] - 1) & 0xFFFF", "r[1] = (r[1] & 0xFFFF0000) | c"]
    test = {"loop": "c", "loope": "c and ZF(cpu.lf)", "loopne": "c and not ZF(cpu.lf)"}
    lines += [f"if {test[insn.mnemonic]}:", "    cpu.eip = T"]
    return build("\n".join(lines), T=target.target, ZF=_ZF)


@semantics("jcxz", "jecxz")
def jcxz(insn, cpu):
    """Jump if CX (16-bit address size) or ECX (32-bit) is zero (SDM Vol.2 Jcc).

    The decoder names the form by operand size, but the address size decides
    which register is tested, so both names share this factory.
    """
    (target,) = insn.operands
    count = "cpu.r[1]" if insn.addrsize == 32 else "cpu.r[1] & 0xFFFF"
    return build(f"if not {count}:\n    cpu.eip = T", T=target.target)
