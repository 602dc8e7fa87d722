"""AT&T text of decoded instructions, as GNU objdump -d prints it."""

from __future__ import annotations

from vmi.cpu.operands import (
    SEGMENTS,
    Constant,
    FarPointer,
    Immediate,
    Instruction,
    MemoryOperand,
    Register,
    Relative,
)

_GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_GPR16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
_SUFFIX = {1: "b", 2: "w", 4: "l", 8: "q"}


def format_operand(op, insn: Instruction) -> str:
    if isinstance(op, Register):
        return "%" + op.name
    if isinstance(op, Immediate):
        return f"${op.value:#x}"
    if isinstance(op, Constant):
        return f"${op.value:#x}"
    if isinstance(op, Relative):
        return f"{op.target:x}"
    if isinstance(op, FarPointer):
        return f"$0x{op.selector:x},$0x{op.offset:x}"
    if isinstance(op, MemoryOperand):
        regs = _GPR32 if op.addrsize == 32 else _GPR16
        seg = f"%{SEGMENTS[op.segment]}:" if op.segment_override else ""
        disp = op.disp
        if op.base is None and op.index is None:
            return f"{seg}{disp:#x}"
        top = 1 << (op.addrsize - 1)
        signed = disp - (top << 1) if disp & top else disp
        text = "" if signed == 0 else (f"-{-signed:#x}" if signed < 0 else f"{signed:#x}")
        inner = "" if op.base is None else "%" + regs[op.base]
        if op.index is not None:
            inner += f",%{regs[op.index]}" + (f",{op.scale}" if op.addrsize == 32 else "")
        return f"{seg}{text}({inner})"
    raise TypeError(op)


def format_att(insn: Instruction) -> str:
    """The objdump-style AT&T text: mnemonic (with a size suffix where no register
    operand implies the size), then operands source-first."""
    mnemonic = insn.mnemonic
    needs_suffix = any(isinstance(op, MemoryOperand) for op in insn.operands) and not any(
        isinstance(op, Register) for op in insn.operands
    )
    if needs_suffix:
        sizes = [op.size for op in insn.operands if isinstance(op, MemoryOperand)]
        mnemonic += _SUFFIX.get(sizes[0], "")
    prefixes = [p for p in insn.prefixes if p in ("lock", "rep", "repne")]
    text = " ".join([*prefixes, mnemonic])
    if insn.operands:
        text += " " + ",".join(format_operand(op, insn) for op in reversed(insn.operands))
    return text
