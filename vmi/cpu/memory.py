"""Physical memory: numpy owns the bytes, the hot path goes through memoryview + struct.

NumPy scalars never reach the interpreter (NEP 50 makes them raise when mixed
with Python ints), so every read returns a Python ``int``.

Physical addresses past the end of RAM behave as an empty bus: reads return
all ones, writes are dropped (as on a PC with nothing decoding the address),
except the top 64 KiB below 4 GiB, which read the 64 KiB at 0xF0000 as a PC's
BIOS ROM is aliased there: the reset vector 0xFFFFFFF0 executes what was
loaded at 0xFFFF0 (and so does 0xFFEFFFF0, where the fetch lands while the A20
gate is closed: a chipset decodes the BIOS in the top 2 MiB).

Device windows (MMIO) live above the end of RAM, where the PC puts them (the
local APIC at 0xFEE00000, the IOAPIC at 0xFEC00000): ``map_device`` adds one,
and only an access that has already missed RAM looks for it, so the RAM fast
path is the same ``memoryview`` access with or without devices. The device is
told which CPU accesses it (``cpu_index``, set by the machine before it runs a
CPU: each CPU sees its own local APIC at one address). ``peek`` and
``read_bytes`` (the debugger's and the race invariants' reads) ask the device's
side-effect-free ``peek`` instead.

The A20 gate (``set_a20``): while it is off, physical address bit 20 is forced
to 0, so addresses wrap at 1 MiB as on an 8086 (the PC's keyboard controller
and port 0x92 drive it). The masking variant is another class with the same
layout, swapped in while the gate is off, so the gate costs nothing while it
is on; whoever holds bound read/write methods (a CPU's accessors) must take
them again when it changes (``vmi.pc.board`` does).

Pages that hold decoded code are marked; a write to a marked page tells every
listener (the CPUs' decoded-instruction caches) so self-modifying code and the
VMI patcher are seen at once. Every write also marks its page dirty
(``dirty``), so a machine restoring the snapshot it last took or restored copies
back only the pages written since (``vmi.machine.Machine.restore``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

PAGE_SHIFT = 12
#: Start of the 64 KiB window below 4 GiB that aliases 0xF0000-0xFFFFF (reads only).
RESET_ALIAS = 0xFFFF0000
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Memory:
    """``size`` bytes of zeroed physical RAM."""

    __slots__ = ("size", "array", "view", "code_pages", "code_listeners", "dirty",
                 "_u16", "_u32", "_p16", "_p32", "mmio", "cpu_index")

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
        #: Device windows above RAM: (first address, end, device), sorted.
        self.mmio: tuple[tuple[int, int, Any], ...] = ()
        #: The CPU whose accesses are being made (the machine sets it).
        self.cpu_index = 0

    # -- device windows --------------------------------------------------------
    def map_device(self, base: int, size: int, device: Any) -> None:
        """Put ``device`` (``read(offset, size, cpu)``, ``write(offset, size, value,
        cpu)``, ``peek(offset, size, cpu)``) at physical ``base .. base+size``,
        which must lie above RAM and overlap no other window."""
        end = base + size
        if base < self.size or end > 1 << 32 or size <= 0:
            raise ValueError(f"a device window {base:#x}+{size:#x} must lie between the "
                             f"end of RAM ({self.size:#x}) and 4 GiB")
        for first, last, _ in self.mmio:
            if base < last and first < end:
                raise ValueError(f"device windows {base:#x} and {first:#x} overlap")
        self.mmio = tuple(sorted((*self.mmio, (base, end, device)), key=lambda w: w[0]))

    def _window(self, addr: int, size: int) -> tuple[Any, int] | None:
        """The device whose window holds ``addr .. addr+size`` whole, and the offset."""
        for first, end, device in self.mmio:
            if first <= addr and addr + size <= end:
                return device, addr - first
        return None

    def _bus_read(self, addr: int, size: int) -> int:
        """A read that missed RAM: a device window, the BIOS alias, or the empty bus."""
        hit = self._window(addr, size)
        if hit is not None:
            return hit[0].read(hit[1], size, self.cpu_index)
        if size == 1:
            # the BIOS ROM below 4 GiB; with bit 20 masked off (the A20 gate closed,
            # as at a reset vector fetch) 0xFFEFxxxx, which a chipset decodes as ROM too
            if addr | 0x100000 >= RESET_ALIAS and addr <= 0xFFFFFFFF \
                    and self.size >= 0x100000:
                return self.view[(addr & 0xFFFF) + 0xF0000]
            return 0xFF
        half = size // 2  # split: each half finds its own place
        return (self._bus_read(addr, half)
                | self._bus_read((addr + half) & 0xFFFFFFFF, half) << (8 * half))

    def _bus_write(self, addr: int, size: int, value: int) -> bool:
        """A write that missed RAM, to a device window; False when none holds it."""
        hit = self._window(addr, size)
        if hit is None:
            return False
        hit[0].write(hit[1], size, value, self.cpu_index)
        return True

    def peek(self, addr: int, size: int = 1) -> int:
        """``size`` bytes at ``addr`` read with no side effect on any device."""
        addr &= 0xFFFFFFFF
        if addr + size <= self.size:
            return int.from_bytes(self.view[addr:addr + size], "little")
        hit = self._window(addr, size)
        if hit is not None:
            return hit[0].peek(hit[1], size, self.cpu_index)
        if size == 1:
            return self._bus_read(addr, 1)  # the alias or the empty bus: no device
        return sum(self.peek(addr + i, 1) << (8 * i) for i in range(size))

    # -- reads -----------------------------------------------------------------
    def read8(self, addr: int) -> int:
        try:
            return self.view[addr]
        except IndexError:
            return self._bus_read(addr, 1)

    def read16(self, addr: int) -> int:
        try:
            return self._u16(self.view, addr)[0]
        except struct.error:
            if addr >= self.size:
                return self._bus_read(addr, 2)
            return self.read8(addr) | self.read8((addr + 1) & 0xFFFFFFFF) << 8

    def read32(self, addr: int) -> int:
        try:
            return self._u32(self.view, addr)[0]
        except struct.error:
            if addr >= self.size:
                return self._bus_read(addr, 4)
            return self.read16(addr) | self.read16((addr + 2) & 0xFFFFFFFF) << 16

    def read_bytes(self, addr: int, length: int) -> bytes:
        """``length`` bytes from ``addr``; device windows are peeked (no side effect)."""
        if addr + length <= self.size:
            return bytes(self.view[addr : addr + length])
        return bytes(self.peek((addr + i) & 0xFFFFFFFF) for i in range(length))

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
            self._bus_write(addr, 1, value)
            return
        page = addr >> PAGE_SHIFT
        self.dirty[page] = 1
        if self.code_pages[page]:
            self.invalidate_code()

    def write16(self, addr: int, value: int) -> None:
        try:
            self._p16(self.view, addr, value)
        except struct.error:
            if addr >= self.size and self._bus_write(addr, 2, value):
                return
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
            if addr >= self.size and self._bus_write(addr, 4, value):
                return
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

    # -- the A20 gate ----------------------------------------------------------
    @property
    def a20(self) -> bool:
        """Whether physical address bit 20 passes (the gate is on)."""
        return type(self) is not A20MaskedMemory

    def set_a20(self, enabled: bool) -> None:
        """Open or close the A20 gate (see the module docstring). Bound methods taken
        before keep the old behaviour: take them again."""
        self.__class__ = Memory if enabled else A20MaskedMemory


_NOT_A20 = 0xFFFFFFFF & ~(1 << 20)


class A20MaskedMemory(Memory):
    """``Memory`` while the A20 gate is off: every physical address has bit 20
    cleared, so 0x100000-0x10FFEF read and write 0x0-0xFFEF (the 8086 wrap)."""

    __slots__ = ()

    def read8(self, addr: int) -> int:
        return Memory.read8(self, addr & _NOT_A20)

    def read16(self, addr: int) -> int:
        if addr & 0xFFFFF == 0xFFFFF:  # the two bytes straddle the wrap
            return self.read8(addr) | self.read8(addr + 1) << 8
        return Memory.read16(self, addr & _NOT_A20)

    def read32(self, addr: int) -> int:
        if addr & 0xFFFFF > 0xFFFFC:
            return self.read16(addr) | self.read16(addr + 2) << 16
        return Memory.read32(self, addr & _NOT_A20)

    def read_bytes(self, addr: int, length: int) -> bytes:
        return bytes(Memory.read_bytes(self, (addr + i) & _NOT_A20, 1)[0]
                     for i in range(length))

    def peek(self, addr: int, size: int = 1) -> int:
        return sum(Memory.peek(self, (addr + i) & _NOT_A20) << (8 * i) for i in range(size))

    def write8(self, addr: int, value: int) -> None:
        Memory.write8(self, addr & _NOT_A20, value)

    def write16(self, addr: int, value: int) -> None:
        if addr & 0xFFFFF == 0xFFFFF:
            self.write8(addr, value & 0xFF)
            self.write8(addr + 1, value >> 8)
            return
        Memory.write16(self, addr & _NOT_A20, value)

    def write32(self, addr: int, value: int) -> None:
        if addr & 0xFFFFF > 0xFFFFC:
            self.write16(addr, value & 0xFFFF)
            self.write16(addr + 2, value >> 16)
            return
        Memory.write32(self, addr & _NOT_A20, value)

    def write_bytes(self, addr: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            Memory.write_bytes(self, (addr + i) & _NOT_A20, bytes([byte]))

    load = write_bytes
