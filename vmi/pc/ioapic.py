"""The I/O APIC (Intel 82093AA), memory-mapped at 0xFEC00000.

Modelled after the 82093AA datasheet (order 290566-001):

* 3.0 "Register Description": the indirect access through IOREGSEL (offset
  0x00, the register index) and IOWIN (offset 0x10, the 32-bit window);
  IOAPICID (index 0, ID in bits 27:24), IOAPICVER (index 1: version 0x11,
  maximum redirection entry 23 in bits 23:16), IOAPICARB (index 2, reads the
  ID) and the 24 redirection entries at indexes 0x10-0x3F, two registers each
  (3.2.4: vector, delivery mode, destination mode, delivery status, polarity,
  remote IRR, trigger mode, mask; destination in bits 63:56).
* An input pin raises an interrupt as its entry says: edge-triggered, a rising
  edge on an unmasked pin sends the entry's message once (an edge on a masked
  pin is lost, 3.2.4 "Interrupt Mask"); level-triggered, an asserted unmasked
  pin sends the message and sets remote IRR, which the local APIC's EOI of
  that vector clears (re-sending while the pin is still asserted).

Messages go out through ``deliver(destination, vector, logical, level, mode)``
(:meth:`vmi.pc.lapic.ApicBus.deliver_io` takes exactly that). The polarity
bit is stored but ``set_irq``'s level is the pin's logical assertion, as the
board says it. Not modelled: the APIC serial bus timing, ExtINT (routed as a
fixed message), the delivery status bit (sending completes at once).
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from vmi.pc import mask

IOREGSEL, IOWIN = 0x00, 0x10
REG_ID, REG_VERSION, REG_ARB, REG_TABLE = 0x00, 0x01, 0x02, 0x10
ENTRIES = 24
VERSION_VALUE = (ENTRIES - 1) << 16 | 0x11
MASKED = 1 << 16
LEVEL = 1 << 15
REMOTE_IRR = 1 << 14
LOGICAL = 1 << 11
#: Writable bits of an entry's low word (delivery status and remote IRR are read-only).
LOW_WRITABLE = 0x1AFFF


def _no_deliver(destination: int, vector: int, logical: bool, level: bool,
                mode: int) -> None:
    pass


@define(eq=False)
class IoApic:
    """The IOAPIC (see the module docstring)."""

    BASE = 0xFEC0_0000
    SIZE = 0x1000

    deliver: Callable[[int, int, bool, bool, int], None] = _no_deliver
    apic_id: int = 0
    select: int = 0
    #: Each entry as one 64-bit integer; all masked after reset (datasheet 3.2.4).
    table: list[int] = field(factory=lambda: [MASKED] * ENTRIES)
    #: The pins' present levels (bit n = pin n asserted).
    pins: int = 0
    delivered: int = 0

    def read(self, offset: int, size: int, cpu_index: int = 0) -> int:
        return self.peek(offset, size, cpu_index)

    def peek(self, offset: int, size: int, cpu_index: int = 0) -> int:
        shift = 8 * (offset & 3)
        reg = offset & ~3
        if reg == IOREGSEL:
            value = self.select
        elif reg == IOWIN:
            value = self._register(self.select)
        else:
            value = 0
        return (value >> shift) & mask(size)

    def write(self, offset: int, size: int, value: int, cpu_index: int = 0) -> None:
        value = (value & mask(size)) << (8 * (offset & 3))
        reg = offset & ~3
        if reg == IOREGSEL:
            self.select = value & 0xFF
        elif reg == IOWIN:
            self._set_register(self.select, value & 0xFFFF_FFFF)

    def _register(self, index: int) -> int:
        if index == REG_ID or index == REG_ARB:
            return (self.apic_id & 0xF) << 24
        if index == REG_VERSION:
            return VERSION_VALUE
        entry = index - REG_TABLE
        if 0 <= entry < 2 * ENTRIES:
            return self.table[entry >> 1] >> (32 * (entry & 1)) & 0xFFFF_FFFF
        return 0

    def _set_register(self, index: int, value: int) -> None:
        if index == REG_ID:
            self.apic_id = value >> 24 & 0xF
            return
        entry = index - REG_TABLE
        if not 0 <= entry < 2 * ENTRIES:
            return  # version, arbitration and undefined indexes are read-only
        pin = entry >> 1
        old = self.table[pin]
        if entry & 1:
            self.table[pin] = (old & 0xFFFF_FFFF) | (value & 0xFF00_0000) << 32
        else:
            kept = old & ~0xFFFF_FFFF | old & REMOTE_IRR
            self.table[pin] = kept | (value & LOW_WRITABLE)
            self._level_check(pin)  # unmasking an asserted level pin sends it

    def redirection(self, pin: int) -> dict:
        """Entry ``pin`` decoded (for tests, the debugger and the docs)."""
        e = self.table[pin]
        return {"vector": e & 0xFF, "mode": e >> 8 & 7, "logical": bool(e & LOGICAL),
                "level": bool(e & LEVEL), "masked": bool(e & MASKED),
                "remote_irr": bool(e & REMOTE_IRR), "destination": e >> 56}

    def set_irq(self, pin: int, level: bool) -> None:
        """The board drives input ``pin`` to ``level`` (True = asserted)."""
        if not 0 <= pin < ENTRIES:
            return
        was = self.pins >> pin & 1
        self.pins = self.pins | 1 << pin if level else self.pins & ~(1 << pin)
        entry = self.table[pin]
        if entry & LEVEL:
            self._level_check(pin)
        elif level and not was and not entry & MASKED:
            self._send(pin, entry)

    def irq(self, line: int, level: bool) -> None:
        """The ``irq(line, level)`` shape ISA devices call (ISA IRQ n = pin n)."""
        self.set_irq(line, level)

    def _level_check(self, pin: int) -> None:
        entry = self.table[pin]
        if (entry & LEVEL and self.pins >> pin & 1 and not entry & MASKED
                and not entry & REMOTE_IRR):
            self.table[pin] = entry | REMOTE_IRR
            self._send(pin, entry)

    def _send(self, pin: int, entry: int) -> None:
        self.delivered += 1
        self.deliver(entry >> 56, entry & 0xFF, bool(entry & LOGICAL), bool(entry & LEVEL),
                     entry >> 8 & 7)

    def eoi(self, vector: int) -> None:
        """A local APIC's EOI of a level-triggered ``vector``: clear remote IRR
        on the entries with that vector; a pin still asserted sends again."""
        for pin, entry in enumerate(self.table):
            if entry & REMOTE_IRR and entry & 0xFF == vector:
                self.table[pin] = entry & ~REMOTE_IRR
                self._level_check(pin)

    def state(self) -> dict:
        return {"apic_id": self.apic_id, "select": self.select,
                "table": [f"{e:x}" for e in self.table], "pins": self.pins,
                "delivered": self.delivered}

    def set_state(self, state: dict) -> None:
        self.apic_id = state["apic_id"]
        self.select = state["select"]
        self.table = [int(e, 16) for e in state["table"]]
        self.pins = state["pins"]
        self.delivered = state["delivered"]
