"""Near control transfers: jmp, jcc, call, ret (SDM Vol.2; Vol.1 §6.3)."""

from __future__ import annotations

from vmi.cpu.access import operand_access
from vmi.cpu.flags import CONDITION_CODES
from vmi.cpu.operands import Relative
from vmi.cpu.ops import build, pop_source, push_source, semantics

_JCC = ["j" + cc for cc in CONDITION_CODES]


@semantics(*_JCC)
def jcc(insn, cpu):
    """Jump if the condition holds; je/jne test ZF inline (the common loop exits)."""
    (target,) = insn.operands
    code = CONDITION_CODES[insn.mnemonic[1:]]
    if code in (4, 5):
        test = "not (lf[4] & MASK)" if code == 4 else "lf[4] & MASK"
        etest = "lf[2] & 0x40" if code == 4 else "not lf[2] & 0x40"
        body = f"""
lf = cpu.lf
if lf[0] == EXPLICIT:
    if {etest}:
        cpu.eip = T
elif {test.replace('MASK', 'MASKS[lf[1]]')}:
    cpu.eip = T
"""
        return build(body, T=target.target, MASKS={8: 0xFF, 16: 0xFFFF, 32: 0xFFFFFFFF})
    return build("if COND(cpu.lf):\n    cpu.eip = T", T=target.target,
                 COND=_condition(code))


def _condition(code):
    from vmi.cpu.flags import CONDITIONS

    return CONDITIONS[code]


def _target(insn, slot):
    """Source and params of a near branch target (relative or r/m indirect)."""
    (op,) = insn.operands
    if isinstance(op, Relative):
        return [], "T", {"T": op.target}
    acc = operand_access(op, slot)
    return acc.setup, acc.read, acc.params


@semantics("jmp")
def jmp(insn, cpu):
    setup, target, params = _target(insn, "t")
    return build("\n".join(["r = cpu.r", *setup, f"cpu.eip = {target}"]), params)


@semantics("call")
def call(insn, cpu):
    """Push the return address, then jump (the push faults before EIP changes)."""
    size = insn.opsize // 8
    setup, target, params = _target(insn, "t")
    body = "\n".join([
        "r = cpu.r", *setup, f"dest = {target}",
        push_source("RET", size, cpu.stack_bits), "cpu.eip = dest",
    ])
    return build(body, params, RET=insn.next_address & ((1 << insn.opsize) - 1))


@semantics("ret")
def ret(insn, cpu):
    """Pop EIP (and release ``imm16`` more bytes of arguments)."""
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
