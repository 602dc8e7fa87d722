"""The VMI ROM: ``rom.S`` assembled by ``vmi.asm`` at the published address, padded to
its declared length, with the option-ROM checksum (the byte sum of the whole ROM is
0, as the 2006 spec's scan checks: reference §1 "ROM discovery/header").

``build_rom()`` returns a ``Rom`` (cached: the source never changes at run time)
holding the image, every symbol, the hypercall addresses the monitor recognises,
and the two windows of the IRET race.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from attrs import field, frozen

from vmi.asm.imagecache import assemble_cached
from vmi.hypervisor import layout

#: Hypercall labels of rom.S -> the name the monitor dispatches on.
HYPERCALLS = {
    "hc_init": "init",
    "hc_wrmsr": "wrmsr",
    "hc_rdmsr": "rdmsr",
    "hc_clts": "clts",
    "hc_sti_pending": "sti_pending",
    "hc_halt": "halt",
    "hc_iret_pending": "iret_pending",
    "hc_iret16": "iret16",
    "hc_sysexit_pending": "sysexit_pending",
}


@frozen
class Window:
    """One region of the ROM in which the IRET race can happen: ``start <= eip <
    end`` (linear addresses)."""

    name: str
    start: int
    end: int

    def __contains__(self, eip: object) -> bool:
        return isinstance(eip, int) and self.start <= eip < self.end


@frozen
class Rom:
    """The assembled ROM. ``image`` is ``layout.ROM_SIZE`` bytes; ``symbols`` are
    linear addresses at ``layout.ROM_LINEAR``; ``hypercalls`` maps the ROM offset of
    each hypercall ``ud2`` to its name (see ``HYPERCALLS``); unimplemented call slots
    are recognised by their slot offset (``unimplemented``)."""

    image: bytes
    symbols: dict[str, int]
    hypercalls: dict[int, str]
    unimplemented: frozenset[int]
    iret_window: Window
    sysexit_window: Window
    #: The assembled ``vmi.asm.Program`` (read back from the image cache when warm).
    program: Any = field(repr=False, eq=False)

    @property
    def listing(self) -> str:
        """The assembler's listing of rom.S (made on first use: a program read from
        the image cache assembles the source again to make it)."""
        return self.program.format_listing()

    @property
    def windows(self) -> tuple[Window, Window]:
        return (self.iret_window, self.sysexit_window)

    def window_at(self, eip: int) -> Window | None:
        """The window holding linear ``eip``, or None."""
        for window in (self.iret_window, self.sysexit_window):
            if window.start <= eip < window.end:
                return window
        return None

    def slot(self, call: int) -> bytes:
        """The 32 bytes of call slot ``call``."""
        offset = call * layout.SLOT_SIZE
        return self.image[offset:offset + layout.SLOT_SIZE]


def rom_defines() -> dict[str, int]:
    """The constants rom.S is assembled with (all from ``layout``)."""
    names = ("ROM_LINEAR", "ROM_SIZE", "SHARED_LINEAR", "SHARED_VIF", "SHARED_PENDING",
             "SHARED_CR0", "SHARED_SYSEXIT_CS", "SHARED_SYSEXIT_SS", "SLOT_SIZE",
             "SLOT_COUNT", "API_MAJOR", "API_MINOR", "SIGNATURE", "CALL_INIT",
             "CALL_CPUID", "CALL_WRMSR", "CALL_RDMSR", "CALL_GET_CR0", "CALL_CLTS",
             "CALL_ENABLE_INTERRUPTS", "CALL_DISABLE_INTERRUPTS",
             "CALL_GET_INTERRUPT_MASK", "CALL_SET_INTERRUPT_MASK", "CALL_IRET",
             "CALL_SYSEXIT", "CALL_HALT")
    return {name: getattr(layout, name) for name in names}


def rom_source() -> tuple[str, str]:
    """The text of rom.S and its path."""
    resource = resources.files("vmi.hypervisor").joinpath("rom.S")
    return resource.read_text(encoding="utf-8"), str(resource)


@functools.cache
def build_rom() -> Rom:
    """Assemble rom.S, check its layout and seal the checksum."""
    text, path = rom_source()
    program = assemble_cached(text, macros=None, base=layout.ROM_LINEAR, filename=path,
                              defines=rom_defines())
    image = bytearray(program.image)
    if len(image) != layout.ROM_SIZE:
        raise AssertionError(f"rom.S produced {len(image)} bytes, not {layout.ROM_SIZE}")
    image[-1] = (-sum(image[:-1])) & 0xFF
    symbols = dict(program.symbols)
    hypercalls = {symbols[label] - layout.ROM_LINEAR: name for label, name in HYPERCALLS.items()}
    unimplemented = frozenset(
        call * layout.SLOT_SIZE for call in range(layout.SLOT_COUNT)
        if call >= layout.CALL_INIT and image[call * layout.SLOT_SIZE:
                                               call * layout.SLOT_SIZE + 2] == b"\x0f\x0b"
        and call * layout.SLOT_SIZE not in hypercalls)
    iret = Window("iret", symbols["vmi_iret_window_start"], symbols["vmi_iret_window_end"])
    sysexit = Window("sysexit", symbols["vmi_sysexit_window_start"],
                     symbols["vmi_sysexit_window_end"])
    if symbols["rom_code_end"] > layout.ROM_LINEAR + layout.ROM_SIZE - 1:
        raise AssertionError("rom.S code runs into the checksum byte")
    return Rom(bytes(image), symbols, hypercalls, unimplemented, iret, sysexit, program)
