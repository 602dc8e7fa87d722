"""Physical memory: numpy owns the bytes, the hot path goes through memoryview + struct.

NumPy scalars never reach the interpreter (NEP 50 makes them raise when mixed
with Python ints), so every read returns a Python ``int``.

Physical addresses past the end of RAM behave as an empty bus: reads return
all ones, writes are dropped (as on a PC with nothing decoding the address),
except the top 64 KiB below 4 GiB, which read the 64 KiB at 0xF0000 as a PC's
BIOS ROM is aliased there: the reset vector 0xFFFFFFF0 executes what was
loaded at 0xFFFF0.

Pages that hold decoded code are marked; a write to a marked page tells every
listener (the CPUs' decoded-instruction caches) so self-modifying code and the
VMI patcher are seen at once. Every write also marks its page dirty
(``dirty``), so a machine restoring the snapshot it last took or restored copies
back only the pages written since (``vmi.machine.Machine.restore``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

PAGE_SHIFT = 12
#: Start of the 64 KiB window below 4 GiB that aliases 0xF0000-0xFFFFF (reads only).
RESET_ALIAS = 0xFFFF0000
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Memory:
    """``size`` bytes of zeroed physical RAM."""

    __slots__ = ("size", "array", "view", "code_pages", "code_listeners", "dirty",
                 "_u16", "_u32", "_p16", "_p32")

    def __init__(self, size: int = 16 << 20) -> None:
        if size <= 0 or size % (1 << PAGE_SHIFT):
            raise ValueError(f"memory size must be a positive multiple of 4096, not {size}")
        self.size = size
        self.array = np.zeros(size, dtype=np.uint8)
        self.view = memoryview(self.array)  # type: ignore[arg-type]
        # one flag per page (plus a guard page for accesses that run off the end)
        self.code_pages = bytearray((size >> PAGE_SHIFT) + 2)
        self.dirty = bytearray((size >> PAGE_SHIFT) + 2)  # written since the last clear
        self.code_listeners: list[Callable[[], None]] = []
        self._u16 = _U16.unpack_from
        self._u32 = _U32.unpack_from
        self._p16 = _U16.pack_into
        self._p32 = _U32.pack_into

    # -- reads -----------------------------------------------------------------
    def read8(self, addr: int) -> int:
        try:
            return self.view[addr]
        except IndexError:
            if RESET_ALIAS <= addr <= 0xFFFFFFFF and self.size >= 0x100000:
                return self.view[addr - RESET_ALIAS + 0xF0000]
            return 0xFF

    def read16(self, addr: int) -> int:
        try:
            return self._u16(self.view, addr)[0]
        except struct.error:
            return self.read8(addr) | self.read8((addr + 1) & 0xFFFFFFFF) << 8

    def read32(self, addr: int) -> int:
        try:
            return self._u32(self.view, addr)[0]
        except struct.error:
            return self.read16(addr) | self.read16((addr + 2) & 0xFFFFFFFF) << 16

    def read_bytes(self, addr: int, length: int) -> bytes:
        if addr + length <= self.size:
            return bytes(self.view[addr : addr + length])
        return bytes(self.read8((addr + i) & 0xFFFFFFFF) for i in range(length))

    # -- writes ----------------------------------------------------------------
    def _touch(self, addr: int, last: int) -> None:
        if addr >= self.size:
            return
        self.mark_dirty(addr, last - addr + 1)
        pages = self.code_pages
        if pages[addr >> PAGE_SHIFT] or pages[last >> PAGE_SHIFT]:
            self.invalidate_code()

    def mark_dirty(self, addr: int, length: int) -> None:
        """Note a write of ``length`` bytes at ``addr`` made without the write methods."""
        first = addr >> PAGE_SHIFT
        last = min(addr + max(length, 1) - 1, self.size - 1) >> PAGE_SHIFT
        self.dirty[first:last + 1] = b"\x01" * (last - first + 1)

    # Each write stores first, then marks its page(s) dirty and tells the code
    # caches if it hit decoded code; a write that runs past the end of RAM is split
    # so the part inside lands (and is tracked) and the rest is dropped.
    def write8(self, addr: int, value: int) -> None:
        try:
            self.view[addr] = value
        except IndexError:
            return
        page = addr >> PAGE_SHIFT
        self.dirty[page] = 1
        if self.code_pages[page]:
            self.invalidate_code()

    def write16(self, addr: int, value: int) -> None:
        try:
            self._p16(self.view, addr, value)
        except struct.error:
            self.write8(addr, value & 0xFF)
            self.write8((addr + 1) & 0xFFFFFFFF, value >> 8)
            return
        page = addr >> PAGE_SHIFT
        self.dirty[page] = 1
        if addr & 0xFFF == 0xFFF:  # into the next page too
            self.dirty[page + 1] = 1
            if self.code_pages[page + 1]:
                self.invalidate_code()
                return
        if self.code_pages[page]:
            self.invalidate_code()

    def write32(self, addr: int, value: int) -> None:
        try:
            self._p32(self.view, addr, value)
        except struct.error:
            self.write16(addr, value & 0xFFFF)
            self.write16((addr + 2) & 0xFFFFFFFF, value >> 16)
            return
        page = addr >> PAGE_SHIFT
        self.dirty[page] = 1
        if addr & 0xFFF > 0xFFC:  # into the next page too
            self.dirty[page + 1] = 1
            if self.code_pages[page + 1]:
                self.invalidate_code()
                return
        if self.code_pages[page]:
            self.invalidate_code()

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Store ``data`` at ``addr`` (a loader's or debugger's write; code caches see it)."""
        if not data:
            return
        self._touch(addr, min(addr + len(data) - 1, self.size - 1))
        end = min(addr + len(data), self.size)
        if addr < end:
            self.view[addr:end] = data[: end - addr]

    load = write_bytes

    # -- decoded-code tracking -------------------------------------------------
    def mark_code(self, addr: int, length: int) -> None:
        """Note that bytes ``addr .. addr+length`` are held decoded by a CPU cache."""
        if addr < self.size:
            self.code_pages[addr >> PAGE_SHIFT] = 1
            self.code_pages[min(addr + length - 1, self.size - 1) >> PAGE_SHIFT] = 1

    def invalidate_code(self) -> None:
        """A write hit decoded code: every cache forgets everything it decoded."""
        self.code_pages[:] = bytes(len(self.code_pages))
        for listener in self.code_listeners:
            listener()
