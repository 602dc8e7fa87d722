"""Segment registers and far transfers: mov to and from a segment register, push and
pop of one, lds/les/lss/lfs/lgs, ljmp, lcall, lret and iret (SDM Vol.2 under each
mnemonic).

Segment loads go through ``vmi.cpu.segmentation.load_segment`` and new CS:EIP
through ``far_jump``; both take the real-mode path (base = selector << 4, SDM
Vol.3A §20.1.1) in real and virtual-8086 mode. The helpers here (``far_call``,
``far_return``, ``interrupt_return``) implement the real-mode rules and, in
protected mode, call what the descriptor model registers in
``vmi.cpu.segmentation.PROTECTED`` (or raise #GP saying it is missing).

Every instruction checks all it can before it changes anything: the stack
slots it will write or read against the SS limit (#SS(0)), the new EIP against
the CS limit (#GP(0)); memory operands are read first. A fault therefore
leaves the state as it was (restartable, SDM Vol.3A §6.5).

A load of SS by MOV or POP sets ``cpu.shadow``: interrupts are not recognised
before the next instruction has run, so a ``mov ss; mov sp`` pair cannot be
split (SDM Vol.3A §6.8.3). LSS needs no shadow (it loads both at once).

IRET in virtual-8086 mode is IOPL-sensitive and belongs to the descriptor model
too (``PROTECTED["iret"]``).
"""

from __future__ import annotations

from typing import Any

from vmi.cpu.access import effective_address, operand_access
from vmi.cpu.errors import GP, SS, CPUException
from vmi.cpu.operands import (
    FarPointer,
    Immediate,
    Instruction,
    MemoryOperand,
    Operand,
    Register,
)
from vmi.cpu.ops import (
    END_BATCH,
    Execute,
    Template,
    build,
    pop_source,
    push_source,
    raise_invalid,
    semantics,
)
from vmi.cpu.ops.move import MOVE_SPECIAL
from vmi.cpu.ops.stack import SEGMENT_STACK
from vmi.cpu.segmentation import CS, SS_REG, far_jump, load_segment, protected, real_mode_loads

M32 = 0xFFFFFFFF
#: EFLAGS bits IRETD may change in real mode, and those it keeps (SDM Vol.2 IRET,
#: REAL-ADDRESS-MODE: "EFLAGS <- (tempEFLAGS AND 257FD5H) OR (EFLAGS AND 1A0000H)").
IRETD_LOADED = 0x257FD5
IRETD_KEPT = 0x1A0000


# -- stack slots ---------------------------------------------------------------------
def _push_slots(cpu: Any, count: int, size: int) -> list[int]:
    """Offsets of ``count`` pushes of ``size`` bytes from the current eSP, checked
    against the SS limit before anything is written (#SS(0))."""
    r4 = cpu.r[4]
    mask = 0xFFFF if cpu.stack_bits == 16 else M32
    sp = r4 & mask
    limit = cpu.seg_limit[2]
    slots = []
    for i in range(1, count + 1):
        off = (sp - i * size) & mask
        if off + size - 1 > limit:
            raise CPUException(SS, 0, "push beyond the SS limit")
        slots.append(off)
    return slots


def _pop_slots(cpu: Any, count: int, size: int) -> list[int]:
    """Offsets of ``count`` pops of ``size`` bytes from eSP (the stack pointer wraps
    at the stack size), checked against the SS limit (#SS(0))."""
    mask = 0xFFFF if cpu.stack_bits == 16 else M32
    sp = cpu.r[4] & mask
    limit = cpu.seg_limit[2]
    slots = []
    for i in range(count):
        off = (sp + i * size) & mask
        if off + size - 1 > limit:
            raise CPUException(SS, 0, "pop beyond the SS limit")
        slots.append(off)
    return slots


def _set_sp(cpu: Any, value: int) -> None:
    if cpu.stack_bits == 16:
        cpu.r[4] = (cpu.r[4] & 0xFFFF0000) | (value & 0xFFFF)
    else:
        cpu.r[4] = value & M32


# -- far transfers ---------------------------------------------------------------------
def far_call(cpu: Any, selector: int, offset: int, size: int, return_ip: int) -> None:
    """CALL ptr16:16/32: push CS and the return EIP (``size`` bytes each; CS
    zero-extended), then load CS:EIP (SDM Vol.2 CALL, REAL-ADDRESS-MODE: "IF stack
    not large enough for a 4/6-byte return address THEN #SS(0); IF tempEIP beyond
    code segment limit THEN #GP(0)")."""
    if not real_mode_loads(cpu):
        protected("call")(cpu, selector, offset, size, return_ip)
        return
    slots = _push_slots(cpu, 2, size)
    if offset > cpu.seg_limit[CS]:
        raise CPUException(GP, 0, f"far call to {offset:#x} beyond the CS limit")
    write = cpu.wr16 if size == 2 else cpu.wr32
    write(2, slots[0], cpu.sreg[CS])
    write(2, slots[1], return_ip)
    _set_sp(cpu, slots[1])
    far_jump(cpu, selector, offset)


def far_return(cpu: Any, size: int, release: int) -> None:
    """RET far [imm16]: pop EIP and CS (``size`` bytes each), release ``release``
    more bytes of arguments, load CS:EIP (SDM Vol.2 RET, REAL-ADDRESS-MODE)."""
    if not real_mode_loads(cpu):
        protected("return")(cpu, size, release)
        return
    slots = _pop_slots(cpu, 2, size)
    read = cpu.rd16 if size == 2 else cpu.rd32
    offset = read(2, slots[0])
    selector = read(2, slots[1]) & 0xFFFF
    far_jump(cpu, selector, offset)  # checks EIP against the CS limit first
    _set_sp(cpu, (cpu.r[4] & (0xFFFF if cpu.stack_bits == 16 else M32)) + 2 * size + release)


def interrupt_return(cpu: Any, size: int) -> None:
    """IRET/IRETD in real mode: pop EIP, CS and FLAGS (or EFLAGS, of which VM, VIF
    and VIP are kept), load CS:EIP (SDM Vol.2 IRET, REAL-ADDRESS-MODE). IOPL and NT
    are loaded: a 386 can set them in real mode (an 80286 cannot, see docs/sst.md)."""
    if cpu.cr[0] & 1:  # protected and virtual-8086 mode
        protected("iret")(cpu, size)
        return
    slots = _pop_slots(cpu, 3, size)
    read = cpu.rd16 if size == 2 else cpu.rd32
    offset = read(2, slots[0])
    selector = read(2, slots[1]) & 0xFFFF
    popped = read(2, slots[2])
    far_jump(cpu, selector, offset)
    if size == 2:
        cpu.eflags = (cpu.eflags & 0xFFFF0000) | popped
    else:
        cpu.eflags = (popped & IRETD_LOADED) | (cpu.eflags & IRETD_KEPT)
    _set_sp(cpu, (cpu.r[4] & (0xFFFF if cpu.stack_bits == 16 else M32)) + 3 * size)


# -- mov to and from segment registers ---------------------------------------------------
def _segment_register(op: Operand) -> int:
    """The number of segment register operand ``op`` (ES 0 .. GS 5)."""
    assert isinstance(op, Register) and op.kind == "seg", op
    return op.index


def mov_segment(insn: Instruction, cpu: Any) -> Template | Execute:
    """``mov %sreg, r/m16`` (8C) and ``mov r/m16, %sreg`` (8E).

    Loading CS is #UD (SDM Vol.2 MOV); loading SS sets the interrupt shadow.
    Storing a selector writes 16 bits to memory; to a 32-bit register (operand
    size 32) it is zero-extended, as P6 and later processors do (the 386 leaves
    the upper half undefined).
    """
    dst, src = insn.operands
    if isinstance(dst, Register) and dst.kind == "seg":
        if dst.index == CS:
            return raise_invalid("mov to CS")
        s = operand_access(src, "s", size=2)
        lines = ["r = cpu.r", *s.setup, f"LOAD(cpu, SEG, {s.read})"]
        if dst.index == SS_REG:  # the shadow ends a machine batch (see ops.END_BATCH)
            lines += ["cpu.shadow = True", END_BATCH]
        return build("\n".join(lines), s.params, LOAD=load_segment, SEG=dst.index)
    if isinstance(dst, Register) and insn.opsize == 32:
        d = operand_access(dst, "d", size=4)
    else:
        d = operand_access(dst, "d", size=2)
    body = "\n".join(["r = cpu.r", *d.setup, d.write("cpu.sreg[SEG]")])
    return build(body, d.params, SEG=_segment_register(src))


MOVE_SPECIAL["seg"] = mov_segment


def push_segment(insn: Instruction, cpu: Any) -> Template | Execute:
    """``push %sreg``: the selector, zero-extended to the operand size (SDM Vol.2 PUSH;
    some later processors write only 16 bits of a 32-bit slot)."""
    (src,) = insn.operands
    size = insn.opsize // 8
    body = "\n".join(["r = cpu.r", push_source("cpu.sreg[SEG]", size, cpu.stack_bits)])
    return build(body, SEG=_segment_register(src))


def pop_segment(insn: Instruction, cpu: Any) -> Template | Execute:
    """``pop %sreg``: read the top of stack, load the segment (which may fault in
    protected mode; eSP is put back then), and keep the slot released (SDM Vol.2
    POP). POP SS sets the interrupt shadow."""
    (dst,) = insn.operands
    index = _segment_register(dst)
    if index == CS:
        return raise_invalid("pop CS")
    size = insn.opsize // 8
    lines = [
        "r = cpu.r", "old = r[4]", pop_source("v", size, cpu.stack_bits),
        "try:", "    LOAD(cpu, SEG, v & 0xFFFF)",
        "except CPUException:", "    r[4] = old", "    raise",
    ]
    if index == SS_REG:
        lines += ["cpu.shadow = True", END_BATCH]
    return build("\n".join(lines), LOAD=load_segment, SEG=index)


SEGMENT_STACK["push"] = push_segment
SEGMENT_STACK["pop"] = pop_segment


# -- far pointers in memory --------------------------------------------------------------
def _far_pointer(op: Operand, opsize: int, slot: str) -> tuple[list[str], dict]:
    """Statements reading the ``m16:16``/``m16:32`` pointer at ``op`` into ``off`` and
    ``sel`` (offset first, selector after it; both reads before any change). The
    selector's offset is not wrapped at 64 KiB: a pointer at FFFEh crosses the limit
    and faults (SDM Vol.2 LES, "Real-Address Mode Exceptions")."""
    assert isinstance(op, MemoryOperand), op
    ea, params = effective_address(op, slot)
    params[f"{slot}_seg"] = op.segment
    width = opsize
    lines = [
        f"a = {ea}",
        f"off = cpu.rd{width}({slot}_seg, a)",
        f"sel = cpu.rd16({slot}_seg, a + {width // 8})",
    ]
    return lines, params


_LOAD_POINTER = {"lds": 3, "les": 0, "lss": 2, "lfs": 4, "lgs": 5}


@semantics(*_LOAD_POINTER)
def load_far_pointer(insn: Instruction, cpu: Any) -> Template | Execute:
    """``lds/les/lss/lfs/lgs r, m16:16/32``: the segment register gets the selector,
    the general register the offset; the segment load comes first because it is the
    one that can fault in protected mode (SDM Vol.2 LDS/LES/LFS/LGS/LSS)."""
    dst, src = insn.operands
    d = operand_access(dst, "d")
    lines, params = _far_pointer(src, insn.opsize, "s")
    body = "\n".join(["r = cpu.r", *lines, "LOAD(cpu, SEG, sel)", d.write("off")])
    return build(body, d.params, params, LOAD=load_segment, SEG=_LOAD_POINTER[insn.mnemonic])


#: After a far JMP or CALL: a task switch (vmi.cpu.tasks) loads the new task's
#: EFLAGS, and one that sets TF or IF leaves a fast batch (as IRET and POPF do).
_NEW_FLAGS = "if cpu.flags & 0x100 or cpu.flags & ~f & 0x200:\n    raise StopBatch()"


@semantics("ljmp")
def ljmp(insn: Instruction, cpu: Any) -> Template | Execute:
    """``ljmp $sel,$off`` (EA) and ``ljmp *m16:16/32`` (FF /5): load CS:EIP (SDM Vol.2
    JMP; far_jump checks EIP against the CS limit), or go through a call gate or
    switch tasks in protected mode."""
    (target,) = insn.operands
    if isinstance(target, FarPointer):
        return build("f = cpu.flags\nFAR(cpu, SEL, OFF)\n" + _NEW_FLAGS, FAR=far_jump,
                     SEL=target.selector, OFF=target.offset)
    lines, params = _far_pointer(target, insn.opsize, "t")
    return build("\n".join(["r = cpu.r", *lines, "f = cpu.flags", "FAR(cpu, sel, off)",
                            _NEW_FLAGS]), params, FAR=far_jump)


@semantics("lcall")
def lcall(insn: Instruction, cpu: Any) -> Template | Execute:
    """``lcall $sel,$off`` (9A) and ``lcall *m16:16/32`` (FF /3): push CS and the
    return EIP, load CS:EIP (SDM Vol.2 CALL)."""
    (target,) = insn.operands
    size = insn.opsize // 8
    ret = insn.next_address & ((1 << insn.opsize) - 1)
    if isinstance(target, FarPointer):
        return build("f = cpu.flags\nCALL(cpu, SEL, OFF, SIZE, RET)\n" + _NEW_FLAGS,
                     CALL=far_call, SEL=target.selector, OFF=target.offset, SIZE=size,
                     RET=ret)
    lines, params = _far_pointer(target, insn.opsize, "t")
    return build("\n".join(["r = cpu.r", *lines, "f = cpu.flags",
                            "CALL(cpu, sel, off, SIZE, RET)", _NEW_FLAGS]), params,
                 CALL=far_call, SIZE=size, RET=ret)


@semantics("lret")
def lret(insn: Instruction, cpu: Any) -> Template | Execute:
    """``lret`` (CB) and ``lret $imm16`` (CA)."""
    release = 0
    if insn.operands:
        (imm,) = insn.operands
        assert isinstance(imm, Immediate), imm
        release = imm.value
    return build("RET(cpu, SIZE, REL)", RET=far_return, SIZE=insn.opsize // 8, REL=release)


@semantics("iret", "iretd")
def iret(insn: Instruction, cpu: Any) -> Template | Execute:
    """``iret`` (16-bit frame) and ``iretd`` (32-bit frame)."""
    # an IRET that sets TF or IF leaves a fast batch (see popf and CPU.run)
    return build("f = cpu.flags\nIRET(cpu, SIZE)\n"
                 "if cpu.flags & 0x100 or cpu.flags & ~f & 0x200:\n    raise StopBatch()",
                 IRET=interrupt_return, SIZE=insn.opsize // 8)

