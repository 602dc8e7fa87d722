"""String instructions: movs, cmps, scas, lods, stos, ins, outs, with the rep,
repe and repne prefixes (SDM Vol.2 under each mnemonic and REP/REPE/REPNE).

The source is DS:eSI (the segment may be overridden), the destination ES:eDI
(never overridden). The address size picks SI/DI/CX or ESI/EDI/ECX; the
16-bit forms wrap within 64 KiB and keep the registers' upper halves. Each
step adds the operand size to the index registers, or subtracts it when DF
is set.

**One iteration per step.** A repeated instruction performs one iteration,
decrements the count and, while it is not finished, puts EIP back on the
instruction (prefixes included). So the run loop retires one iteration per
step and interrupts arrive between iterations with EIP on the instruction,
as on hardware (SDM Vol.2 REP: "the processor ... allows interrupts to be
serviced between iterations"). A count of zero does nothing. repe/repne
also stop when ZF after a compare is 0/1. One exception, invisible from
outside: inside a machine batch, where no event can arrive, a long upward
``rep stos`` fills the rest of the batch's room in bulk (``bulk_stos``), each
iteration still counted as an instruction with its cycles, and the batch ends
after it; the result is exactly that of stepping (tests/cpu/test_bulk_string.py).
F2 on a non-comparing string instruction repeats it as F3 does; with both F2
and F3 the last one counts (``Instruction.rep``; Bochs does the same, Unicorn
lets F2 win).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vmi.cpu.errors import CPUException
from vmi.cpu.flags import MASK
from vmi.cpu.iobitmap import IO_CHECK_SOURCE, require_io_map
from vmi.cpu.operands import MemoryOperand
from vmi.cpu.ops import END_BATCH, build, instruction_cycles, semantics

_ACC_STORE = {
    1: "r[0] = (r[0] & 0xFFFFFF00) | v",
    2: "r[0] = (r[0] & 0xFFFF0000) | v",
    4: "r[0] = v",
}
_ACC_READ = {1: "(r[0] & 0xFF)", 2: "(r[0] & 0xFFFF)", 4: "r[0]"}


def _index(reg: int, addrsize: int) -> tuple[str, Callable[[str], str]]:
    """(read, update-statement maker) for eSI/eDI at the address size."""
    if addrsize == 32:
        return f"r[{reg}]", lambda v: f"r[{reg}] = ({v}) & 0xFFFFFFFF"
    return (f"(r[{reg}] & 0xFFFF)",
            lambda v: f"r[{reg}] = (r[{reg}] & 0xFFFF0000) | (({v}) & 0xFFFF)")


@semantics("movs", "cmps", "scas", "lods", "stos", "ins", "outs")
def string(insn, cpu):
    """Compile one (possibly repeated) string instruction."""
    mnemonic = insn.mnemonic
    memory = [op for op in insn.operands if isinstance(op, MemoryOperand)]
    size = memory[0].size
    bits = size * 8
    source_segment = next((op.segment for op in memory if op.base == 6), 3)
    addr16 = insn.addrsize == 16
    si, set_si = _index(6, insn.addrsize)
    di, set_di = _index(7, insn.addrsize)
    rd, wr = f"cpu.rd{bits}", f"cpu.wr{bits}"

    lines = ["r = cpu.r"]
    rep = insn.rep
    if rep:
        lines += [f"c = r[1]{' & 0xFFFF' if addr16 else ''}", "if not c:", "    return"]
    if mnemonic in ("ins", "outs"):
        lines.append(IO_CHECK_SOURCE.format(port="r[2] & 0xFFFF", size=size).strip())
    lines.append(f"d = -{size} if cpu.flags & 0x400 else {size}")

    compares = False
    if mnemonic == "movs":
        lines += [f"s = {si}", f"t = {di}", f"{wr}(0, t, {rd}(SEG, s))",
                  set_si("s + d"), set_di("t + d")]
    elif mnemonic == "cmps":
        compares = True
        lines += [f"s = {si}", f"t = {di}", f"a = {rd}(SEG, s)", f"b = {rd}(0, t)",
                  "full = a - b", set_si("s + d"), set_di("t + d"),
                  f"cpu.lf = (SUB, {bits}, a, b, full)"]
    elif mnemonic == "scas":
        compares = True
        lines += [f"t = {di}", f"a = {_ACC_READ[size]}", f"b = {rd}(0, t)", "full = a - b",
                  set_di("t + d"), f"cpu.lf = (SUB, {bits}, a, b, full)"]
    elif mnemonic == "lods":
        lines += [f"s = {si}", f"v = {rd}(SEG, s)", _ACC_STORE[size], set_si("s + d")]
    elif mnemonic == "stos":
        lines += [f"t = {di}", f"{wr}(0, t, {_ACC_READ[size]})", set_di("t + d")]
    elif mnemonic == "ins":
        # The port is read, then the memory written (and a fault there would
        # re-read the port on restart, as on hardware).
        ones = MASK[bits]
        lines += [f"t = {di}", "io = cpu.io",
                  f"v = {ones:#x} if io is None else io.read(r[2] & 0xFFFF, {size}) & {ones:#x}",
                  f"{wr}(0, t, v)", set_di("t + d")]
    else:  # outs
        lines += [f"s = {si}", f"v = {rd}(SEG, s)", "io = cpu.io", "if io is not None:",
                  f"    io.write(r[2] & 0xFFFF, {size}, v)", set_si("s + d")]

    if rep:
        lines += ["c -= 1", "r[1] = (r[1] & 0xFFFF0000) | c" if addr16 else "r[1] = c"]
        if compares:
            # repe continues while ZF = 1 (equal), repne while ZF = 0.
            zf_test = "not full & ONES" if rep == "rep" else "full & ONES"
            lines += [f"if c and {zf_test}:", "    cpu.eip = HERE"]
        else:
            lines += ["if c:", "    cpu.eip = HERE"]
            if mnemonic == "stos" and not addr16:
                lines += _BULK_STOS.format(cycles=instruction_cycles(insn)).splitlines()
    if mnemonic == "outs":
        lines.append(END_BATCH)
    return build("\n".join(lines), SEG=source_segment, HERE=insn.address, ONES=MASK[bits],
                 NEXT=insn.next_address, BULK=bulk_stos, SIZE=size, MIN=BULK_MIN,
                 REQUIRE_IO_MAP=require_io_map)


#: A ``rep stos`` with more than this many iterations left fills memory in bulk
#: inside a machine batch (``bulk_stos``); shorter ones are not worth a batch.
BULK_MIN = 64

# After the first iteration of a long ``rep stos`` (upward, 32-bit addresses), the
# rest of the batch's room is filled in bulk. Only as the first instruction of a
# ``_run_fast`` call (its cycles are still ``rep_start``): then ``rep_room`` - 1 more
# boundaries may pass; otherwise the batch ends here and the next call starts
# with this instruction. Iterations done in bulk are whole instructions (their
# cycles added, counted in ``rep_extra``) and end the batch, so the run loop
# counts them; events are impossible inside a batch, so nothing could have been
# delivered between them.
_BULK_STOS = """
if c > MIN and d > 0 and cpu.rep_room > 1:
    if cpu.cycles != cpu.rep_start:
        raise StopBatch()
    k = min(c, cpu.rep_room - 1, (cpu.rep_limit - cpu.cycles - 1) // {cycles})
    n = BULK(cpu, k, SIZE) if k > 0 else 0
    if n:
        cpu.cycles += n * {cycles}
        cpu.rep_extra += n
        if not r[1]:
            cpu.eip = NEXT
        raise StopBatch()
"""


def bulk_stos(cpu: Any, count: int, size: int) -> int:
    """Up to ``count`` iterations of ``rep stos`` (EDI upward, ECX down) at once;
    returns how many were done. Per page: the first element goes through the
    processor's own write (segment and page checks, TLB, accessed/dirty bits,
    dirty-page and decoded-code tracking; a fault stops the bulk before it, and
    that iteration runs again as an ordinary step), the rest of the page, when ES
    covers it and it is RAM, as one numpy fill."""
    r = cpu.r
    mem = cpu.mem
    write = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
    value = r[0] & (0xFFFFFFFF if size == 4 else (1 << (8 * size)) - 1)
    pattern = value.to_bytes(size, "little")
    limit = cpu.seg_limit[0]
    plain = not cpu.seg_attr[0] & 0x04  # an expand-up data segment
    done = 0
    while done < count:
        t = r[7]
        try:
            write(0, t, value)
        except CPUException:
            break
        t = (t + size) & 0xFFFFFFFF
        r[7] = t
        r[1] = (r[1] - 1) & 0xFFFFFFFF
        done += 1
        linear = (cpu.seg_base[0] + t) & 0xFFFFFFFF
        rest = min(count - done, (0x1000 - (linear & 0xFFF)) // size)
        if rest <= 0 or not plain or t + rest * size - 1 > limit:
            continue
        physical = cpu.linear_to_physical(linear, write=True)
        end = physical + rest * size
        if end > mem.size or mem.code_pages[physical >> 12]:
            continue
        mem.array[physical:end] = np.frombuffer(pattern * rest, dtype=np.uint8)
        mem.dirty[physical >> 12] = 1
        r[7] = (t + rest * size) & 0xFFFFFFFF
        r[1] = (r[1] - rest) & 0xFFFFFFFF
        done += rest
    return done
