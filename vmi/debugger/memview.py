"""What the debugger sees of memory: linear reads and writes that change nothing else.

The processor's own translation (``cpu.linear_to_physical``, ``cpu.fetch``)
has side effects a debugger must not have: a page walk sets the accessed and
dirty bits of the page-table entries and fills the TLB, and a failed walk
loads CR2 (SDM Vol.3A §4.7, §4.8). A debugger that looked at memory that way
would change the machine it is looking at, and reverse execution could no
longer promise that the state after ``reverse-stepi`` equals the state the
machine really had. So the walk here reads the page directory and page
tables itself (two-level paging with optional 4 MiB pages, SDM Vol.3A §4.3)
and writes nothing. Rights are ignored: the debugger sees what a supervisor
would, and may write read-only pages.
"""

from __future__ import annotations

from typing import Any

from vmi.cpu import paging
from vmi.cpu.disasm import Line, disassemble

M32 = 0xFFFFFFFF
#: The longest i386 instruction (SDM Vol.2 §2.1): what one decode may need.
MAX_INSTRUCTION = 15


class Unmapped(Exception):
    """Linear ``address`` has no physical page under the current page tables."""

    def __init__(self, address: int) -> None:
        super().__init__(f"Cannot access memory at address {address:#x}")
        self.address = address


def translate(cpu: Any, linear: int) -> int | None:
    """The physical address of ``linear`` for ``cpu``, or None when it is not mapped.

    Identity while paging is off (CR0.PG clear). Reads the tables only.
    """
    return paging.peek_linear(cpu, linear)


def _pieces(cpu: Any, linear: int, length: int) -> list[tuple[int, int, int]]:
    """(linear, physical, length) runs that stay within one page each; raises
    ``Unmapped`` at the first byte that has no page."""
    runs = []
    done = 0
    while done < length:
        here = (linear + done) & M32
        physical = translate(cpu, here)
        if physical is None:
            raise Unmapped(here)
        size = min(length - done, 0x1000 - (here & 0xFFF))
        runs.append((here, physical, size))
        done += size
    return runs


def read_linear(cpu: Any, linear: int, length: int) -> bytes:
    """``length`` bytes at a linear address through ``cpu``'s page tables."""
    return b"".join(cpu.mem.read_bytes(physical, size)
                    for _linear, physical, size in _pieces(cpu, linear, length))


def read_prefix(cpu: Any, linear: int, length: int) -> bytes:
    """As many of the ``length`` bytes at ``linear`` as are mapped, from the first:
    what a decoder may look at when an instruction ends before an unmapped page."""
    out = b""
    while len(out) < length:
        here = (linear + len(out)) & M32
        physical = translate(cpu, here)
        if physical is None:
            break
        size = min(length - len(out), 0x1000 - (here & 0xFFF))
        out += cpu.mem.read_bytes(physical, size)
    return out


def write_plan(cpu: Any, linear: int, length: int) -> list[tuple[int, int]]:
    """(physical, length) runs that a write of ``length`` bytes at ``linear`` would
    touch; raises ``Unmapped`` first, so a write is all or nothing."""
    return [(physical, size) for _linear, physical, size in _pieces(cpu, linear, length)]


def read_u32(cpu: Any, linear: int) -> int:
    return int.from_bytes(read_linear(cpu, linear, 4), "little")


def code_linear(cpu: Any, eip: int | None = None) -> int:
    """The linear address of ``eip`` (default: the CPU's EIP) in its code segment."""
    return (cpu.seg_base[1] + (cpu.eip if eip is None else eip)) & M32


def disassemble_at(cpu: Any, linear: int, count: int = 1, *,
                   address: int | None = None) -> list[Line]:
    """``count`` instructions decoded from linear ``linear`` in ``cpu``'s code size.

    ``address`` is the address the lines carry (default ``linear``): pass the
    EIP when CS has a non-zero base so branch targets read as EIP values do.

    The lines are ``vmi.cpu.disasm.Line`` items, so undecodable bytes appear as
    objdump shows them (``(bad)``, ``.byte``). Stops early at an unmapped page;
    raises ``Unmapped`` when not even the first byte is mapped.
    """
    data = read_prefix(cpu, linear, count * MAX_INSTRUCTION + 1)
    if not data:
        raise Unmapped(linear)
    lines = []
    for line in disassemble(data, linear if address is None else address,
                            bits=cpu.code_bits):
        lines.append(line)
        if len(lines) == count:
            break
    return lines
