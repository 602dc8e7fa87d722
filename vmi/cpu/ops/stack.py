"""Stack operations: push, pop, pusha/pushad, popa/popad, pushf/pushfd,
popf/popfd, enter, leave (SDM Vol.2 under each mnemonic; Vol.1 §6.2).

The stack is SS:eSP; ``cpu.stack_bits`` (SS.B) says whether ESP or SP moves
and is baked into the compiled body. The operand size says how many bytes
move. Every body writes or reads all its stack memory before it changes ESP
or any other register, so a fault leaves the state as it was (restartable,
SDM Vol.3A §6.5).
"""

from __future__ import annotations

from vmi.cpu import flags as fl
from vmi.cpu.access import operand_access
from vmi.cpu.operands import Register
from vmi.cpu.ops import build, pop_source, push_source, raise_invalid, semantics
from vmi.cpu.paging import probe_write

#: Segment-register push/pop factories, registered by the system model.
SEGMENT_STACK: dict = {}

_MASK = {2: 0xFFFF, 4: 0xFFFFFFFF}


def _stack_mask(cpu) -> int:
    return 0xFFFFFFFF if cpu.stack_bits == 32 else 0xFFFF


def _set_esp(value: str, cpu) -> str:
    """Statement storing ``value`` (already masked to the stack size) in eSP."""
    if cpu.stack_bits == 32:
        return f"r[4] = {value}"
    return f"r[4] = (r[4] & 0xFFFF0000) | {value}"


@semantics("push")
def push(insn, cpu):
    """Push a register, memory operand or immediate.

    ``push %esp`` stores the value ESP had before the instruction, and a memory
    operand addressed through ESP uses that value too (SDM Vol.2 PUSH): the
    operand is read before ESP moves.
    """
    (src,) = insn.operands
    if isinstance(src, Register) and src.kind == "seg":
        special = SEGMENT_STACK.get("push")
        return special(insn, cpu) if special else raise_invalid("push sreg not implemented")
    size = insn.opsize // 8
    s = operand_access(src, "s", size=size)
    body = "\n".join(["r = cpu.r", *s.setup, f"v = {s.read}",
                      push_source("v", size, cpu.stack_bits)])
    return build(body, s.params)


@semantics("pop")
def pop(insn, cpu):
    """Pop into a register or memory.

    ``pop %esp`` leaves ESP holding the popped value (the increment happens
    first, then the load overwrites it). A memory destination addressed through
    ESP uses ESP as it is *after* the increment (SDM Vol.2 POP), so the address
    is computed after it; should the store fault, ESP goes back.
    """
    (dst,) = insn.operands
    if isinstance(dst, Register) and dst.kind == "seg":
        special = SEGMENT_STACK.get("pop")
        return special(insn, cpu) if special else raise_invalid("pop sreg not implemented")
    size = insn.opsize // 8
    d = operand_access(dst, "d", size=size)
    if not d.is_memory:
        body = "\n".join(["r = cpu.r", pop_source("v", size, cpu.stack_bits), d.write("v")])
        return build(body, d.params)
    body = "\n".join([
        "r = cpu.r", "old = r[4]", pop_source("v", size, cpu.stack_bits),
        "try:", *("    " + line for line in [*d.setup, d.write("v")]),
        "except CPUException:", "    r[4] = old", "    raise",
    ])
    return build(body, d.params)


_ORDER = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


@semantics("pusha", "pushad")
def pusha(insn, cpu):
    """Push EAX ECX EDX EBX, the original ESP, EBP ESI EDI (or their low words)."""
    size = insn.opsize // 8
    smask = _stack_mask(cpu)
    lines = ["r = cpu.r", f"sp = r[4] & {smask:#x}"]
    for i in range(8):
        value = f"r[{i}]" if size == 4 else f"r[{i}] & 0xFFFF"
        lines.append(f"cpu.wr{size * 8}(2, (sp - {size * (i + 1)}) & {smask:#x}, {value})")
    lines.append(_set_esp(f"(sp - {size * 8}) & {smask:#x}", cpu))
    return build("\n".join(lines))


@semantics("popa", "popad")
def popa(insn, cpu):
    """Pop EDI ESI EBP, skip the saved ESP, pop EBX EDX ECX EAX (SDM Vol.2 POPA)."""
    size = insn.opsize // 8
    smask = _stack_mask(cpu)
    lines = ["r = cpu.r", f"sp = r[4] & {smask:#x}"]
    slots = [7, 6, 5, None, 3, 2, 1, 0]
    for k, reg in enumerate(slots):
        if reg is not None:
            lines.append(f"v{reg} = cpu.rd{size * 8}(2, (sp + {size * k}) & {smask:#x})")
    for reg in (7, 6, 5, 3, 2, 1, 0):
        if size == 4:
            lines.append(f"r[{reg}] = v{reg}")
        else:
            lines.append(f"r[{reg}] = (r[{reg}] & 0xFFFF0000) | v{reg}")
    lines.append(_set_esp(f"(sp + {size * 8}) & {smask:#x}", cpu))
    return build("\n".join(lines))


# EFLAGS bits popf may change, by privilege (SDM Vol.2 POPF, Table "Effect of
# POPF on EFLAGS"): VM and RF never change (the SDM clears RF at CPL 0; RF is
# not modelled, so it is kept); IOPL only at CPL 0 (or in real mode); IF only
# when CPL <= IOPL.
_POPF_ALL = fl.IMPLEMENTED & ~(fl.VM | fl.RF)
_POPF_NO_IOPL = _POPF_ALL & ~fl.IOPL
_POPF_NO_IF = _POPF_NO_IOPL & ~fl.IF
_VM86_IOPL_CHECK = """
if f & 0x20000 and f & 0x3000 != 0x3000:
    raise CPUException(13, 0)
"""


@semantics("pushf", "pushfd")
def pushf(insn, cpu):
    """Push EFLAGS (or FLAGS). VM and RF are cleared in the pushed image (SDM Vol.2
    PUSHF); virtual-8086 mode with IOPL < 3 faults #GP(0) (no VME)."""
    size = insn.opsize // 8
    image = f"(f | arith_flags(cpu.lf) | 2) & {0xFCFFFF if size == 4 else 0xFFFF:#x}"
    body = "\n".join(["r = cpu.r", "f = cpu.flags", _VM86_IOPL_CHECK.strip(),
                      f"v = {image}", push_source("v", size, cpu.stack_bits)])
    return build(body)


@semantics("popf", "popfd")
def popf(insn, cpu):
    """Pop EFLAGS (or FLAGS), changing only the bits the privilege level allows.

    In real mode and at CPL 0 every implemented bit but VM and RF; at
    0 < CPL <= IOPL also not IOPL; at CPL > IOPL neither IOPL nor IF, silently
    (no fault: the trap Linux's paravirt ops exist to avoid). In virtual-8086
    mode IOPL must be 3 (else #GP(0)) and IOPL is kept. A 16-bit popf changes
    only the low word (SDM Vol.2 POPF).
    """
    size = insn.opsize // 8
    low = 0xFFFF if size == 2 else 0xFFFFFFFF
    body = "\n".join([
        "r = cpu.r", "f = cpu.flags", _VM86_IOPL_CHECK.strip(),
        pop_source("v", size, cpu.stack_bits),
        "if not cpu.cr[0] & 1 or cpu.cpl == 0 and not f & 0x20000:",
        f"    m = {_POPF_ALL & low:#x}",
        "elif cpu.cpl <= (f >> 12) & 3:",
        f"    m = {_POPF_NO_IOPL & low:#x}",
        "else:",
        f"    m = {_POPF_NO_IF & low:#x}",
        f"cpu.flags = (f & ~m) | (v & m & {~fl.ARITH & 0xFFFFFFFF:#x}) | 2",
        f"cpu.lf = (EXPLICIT, 32, v & {fl.ARITH:#x}, 0, 0)",
        # setting TF must leave a fast batch: single-stepping starts after the
        # next instruction (SDM Vol.3A §17.3.1.4), which CPU.run handles; so must
        # setting IF: an interrupt pending meanwhile is now taken (Machine.run)
        "if cpu.flags & 0x100 or cpu.flags & ~f & 0x200:",
        "    raise StopBatch()",
    ])
    return build(body)


@semantics("enter")
def enter(insn, cpu):
    """Make a stack frame: push eBP, copy ``level - 1`` frame pointers of the
    enclosing frame, push the new frame pointer, point eBP at it and reserve
    ``size`` bytes (SDM Vol.2 ENTER; the level is taken modulo 32).

    * The stack size (SS.B) picks eSP and the width of the frame-pointer reads at
      [SS:eBP - i*n]; the operand size picks n (2 or 4 bytes per pointer) and
      whether BP or EBP receives the frame pointer, as the SDM says. (QEMU, and
      so Unicorn, writes all of EBP with a 32-bit stack and a 16-bit operand
      size; the differential tests allow for that.)
    * **FrameTemp** is eSP after the first push. With a 32-bit operand size on a
      16-bit stack it is the whole ESP (ESP[31:16] and the new SP), which EBP
      receives and the frame-pointer push stores: the Intel386 Programmer's
      Reference Manual's ``frame-ptr := eSP`` as Bochs reads it (cpu/stack32.cc,
      ENTER32_IwIb: ``frame_ptr32 = ESP``). Later SDM editions write
      ``FrameTemp <- SP`` for a 16-bit stack and MAME's i386 core zero-extends
      SP: the sources disagree, and no hardware capture covers the case (the
      SingleStepTests 80386 suite runs with 16-bit stacks but zero ESP[31:16]
      rarely matters there); vmi follows the 386 manual and Bochs.
    * **Nothing changes on a fault.** The processor ends ENTER with a write
      check of the final stack pointer (Bochs: "ENTER finishes with memory
      write check on the final stack pointer", a read-modify-write probe of
      ``n`` bytes at SS:eSP). vmi probes every store and then the final
      pointer, in the order the hardware touches them, before it writes
      anything (``paging.probe_write``), so a #SS or #PF leaves registers and
      memory as they were and the instruction restarts cleanly (SDM Vol.3A
      §6.5). Only accessed and dirty flags a successful probe set remain, as
      they would on hardware.
    """
    alloc_op, level_op = insn.operands
    alloc, level = alloc_op.value, level_op.value % 32
    size = insn.opsize // 8
    bits = size * 8
    smask = _stack_mask(cpu)
    vmask = _MASK[size]
    if size == 4 and cpu.stack_bits == 16:
        frame = "(r[4] & 0xFFFF0000) | sp"  # the whole ESP after the push
    else:
        frame = "sp"
    lines = ["r = cpu.r", "ebp = r[5]", f"sp = (r[4] - {size}) & {smask:#x}",
             f"PROBE(cpu, 2, sp, {size})", f"frame = {frame}"]
    if level:
        lines += [
            "copies = []",
            f"for i in range(1, {level}):",
            f"    copies.append(cpu.rd{bits}(2, (ebp - {size} * i) & {smask:#x}))",
            f"    sp = (sp - {size}) & {smask:#x}",
            f"    PROBE(cpu, 2, sp, {size})",
            f"sp = (sp - {size}) & {smask:#x}",
            f"PROBE(cpu, 2, sp, {size})",
        ]
    lines += [f"final = (sp - {alloc}) & {smask:#x}", f"PROBE(cpu, 2, final, {size})",
              # every check passed: now the stores, then the registers
              f"t = (r[4] - {size}) & {smask:#x}", f"cpu.wr{bits}(2, t, ebp & {vmask:#x})"]
    if level:
        lines += ["for v in copies:", f"    t = (t - {size}) & {smask:#x}",
                  f"    cpu.wr{bits}(2, t, v)", f"t = (t - {size}) & {smask:#x}",
                  f"cpu.wr{bits}(2, t, frame & {vmask:#x})"]
    lines.append("r[5] = frame" if size == 4 else "r[5] = (ebp & 0xFFFF0000) | (frame & 0xFFFF)")
    lines.append(_set_esp("final", cpu))
    return build("\n".join(lines), PROBE=probe_write)


@semantics("leave")
def leave(insn, cpu):
    """eSP = eBP, then pop eBP (SDM Vol.2 LEAVE); the load comes first so a
    fault leaves ESP unchanged."""
    size = insn.opsize // 8
    smask = _stack_mask(cpu)
    store = "r[5] = v" if size == 4 else "r[5] = (r[5] & 0xFFFF0000) | v"
    body = "\n".join([
        "r = cpu.r", f"sp = r[5] & {smask:#x}", f"v = cpu.rd{size * 8}(2, sp)",
        _set_esp(f"(sp + {size}) & {smask:#x}", cpu), store,
    ])
    return build(body)
