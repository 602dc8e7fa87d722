"""The I/O permission bit map of the 32-bit TSS (SDM Vol.1 §18.5.2 "I/O Permission
Bit Map" (§19.5.2 in later editions); Vol.3A §7.2.1 "Task-State Segment (TSS)";
§20.2.8.1 "I/O-Port-Mapped I/O" for virtual-8086 mode; Intel386 Programmer's
Reference Manual §8.3.2).

IN, OUT, INS and OUTS consult the map in protected mode when CPL > IOPL, and in
virtual-8086 mode always (there the I/O instructions are not IOPL-sensitive:
only the map decides). The rules, in the order the processor applies them:

1. TR must hold a 32-bit TSS (type 9, or 11 once busy); a 16-bit TSS has no map,
   so every such access faults.
2. The TSS limit must reach the map base, the word at offset 0x66 (so >= 0x67).
3. The map base is a byte offset into the TSS; port ``p`` is bit ``p & 7`` of the
   byte at ``base + p // 8``. The processor always reads **two** bytes there
   (an access of 2 or 4 bytes may need bits from the next byte, and the map's
   last byte is followed by the 0xFF byte the SDM asks for), so both bytes must
   lie within the TSS limit: bytes past the limit count as set.
4. Every bit of the ``size`` ports the access touches (1, 2 or 4 consecutive
   ports) must be clear, else #GP(0).

Bochs' ``BX_CPU_C::allow_io`` (iodev.cc) applies the same checks in the same order
(32-bit TSS, limit >= 103, ``io_base + port/8 >= limit`` fails, then a word read);
a map base at or beyond the limit simply fails rule 3 for every port.

The reads are the processor's own: supervisor accesses to the linear addresses
of the TSS (SDM Vol.3A §4.6), so they may page-fault like any TSS access.
"""

from __future__ import annotations

from typing import Any

from vmi.cpu.errors import GP, CPUException
from vmi.cpu.paging import read_linear

#: Offset of the I/O map base word in a 32-bit TSS (SDM Vol.3A Figure 7-2).
IO_MAP_BASE_OFFSET = 0x66
#: TSS types that have a map: 32-bit TSS, available (9) and busy (11).
TSS32_TYPES = (0x9, 0xB)
VM = 0x20000


def io_checked(cpu: Any) -> bool:
    """Whether an I/O instruction must consult the map now: protected mode with
    CPL > IOPL, or virtual-8086 mode (SDM Vol.1 §18.5.2, Vol.3A §20.2.8.1)."""
    if not cpu.cr[0] & 1:
        return False
    return bool(cpu.flags & VM) or cpu.cpl > (cpu.flags >> 12) & 3


def io_denied(cpu: Any, port: int, size: int) -> str | None:
    """Why the TSS in TR forbids an access of ``size`` bytes at ``port``, or None when
    its map allows it. Reads the TSS (may raise #PF); see the module docstring."""
    _selector, base, limit, attr = cpu.tr
    if attr & 0xF not in TSS32_TYPES:
        return "TR holds no 32-bit TSS, so there is no I/O permission map"
    return map_denied(cpu, base, limit, port, size)


def map_denied(cpu: Any, base: int, limit: int, port: int, size: int) -> str | None:
    """Rules 2-4 of the module docstring for a 32-bit TSS at linear ``base`` with
    byte-granular ``limit``: why the map forbids the access, or None."""
    if limit < IO_MAP_BASE_OFFSET + 1:
        return f"the TSS limit {limit:#x} does not reach the I/O map base at 0x66"
    map_base = read_linear(cpu, base + IO_MAP_BASE_OFFSET, 2)
    offset = map_base + (port >> 3)
    if offset + 1 > limit:
        return (f"port {port:#x} lies beyond the TSS limit {limit:#x} "
                f"(map base {map_base:#x})")
    bits = read_linear(cpu, base + offset, 2)
    if (bits >> (port & 7)) & ((1 << size) - 1):
        return f"the I/O permission map forbids port {port:#x} (size {size})"
    return None


def require_io_map(cpu: Any, port: int, size: int) -> None:
    """Raise #GP(0) unless the TSS map allows ``size`` bytes at ``port``; called
    only when ``io_checked`` (the compiled I/O instructions test that inline).

    A platform that owns the real task state (a hypervisor whose guest runs
    deprivileged) may answer instead of the TSS in TR: ``cpu.platform.io_map_denied
    (cpu, port, size)`` returns the reason or None, as ``io_denied`` does."""
    hook = getattr(cpu.platform, "io_map_denied", None)
    port &= 0xFFFF
    why = io_denied(cpu, port, size) if hook is None else hook(cpu, port, size)
    if why is not None:
        raise CPUException(GP, 0, why)


def check_io(cpu: Any, port: int, size: int) -> None:
    """Raise #GP(0) unless the current privilege or the TSS map allows ``size`` bytes
    at ``port`` (what IN, OUT, INS and OUTS do before touching the port)."""
    if io_checked(cpu):
        require_io_map(cpu, port, size)


#: Source of the same test for compiled instructions: ``{port}`` and ``{size}``
#: are filled in; ``REQUIRE_IO_MAP`` is ``require_io_map``.
IO_CHECK_SOURCE = """
if cpu.cr[0] & 1 and (cpu.flags & 0x20000 or cpu.cpl > (cpu.flags >> 12) & 3):
    REQUIRE_IO_MAP(cpu, {port}, {size})
"""
