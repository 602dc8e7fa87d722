"""PC device models: one module per device, each a small state machine.

In the shape of QEMU's ``hw/`` tree (see DESIGN.md, "A machine is a board"):
every device here is a standalone class that knows nothing of the CPU or the
memory layer. A board wires them:

* **Port devices** (``pic8259``, ``uart``, ``ide``, ``cga``'s CRTC, ``kbc``,
  ``cmos``) answer ``read_port(port, size)`` and ``write_port(port, size,
  value)``, the protocol of :class:`vmi.devices.PortDevice`; each lists the
  ports it claims in a ``PORTS`` tuple for ``PortBus.attach``.
* **MMIO devices** (``lapic``, ``ioapic``, ``cga``'s text memory) answer
  ``read(offset, size, cpu_index)``, ``write(offset, size, value, cpu_index)``
  and the side-effect-free ``peek(offset, size, cpu_index)`` (for the debugger
  and the race invariants), at the window ``BASE``/``SIZE`` given as class
  constants. ``offset`` is relative to ``BASE``.
* **Interrupt outputs** are injected callables: an ISA device calls
  ``irq(line, level)`` when its interrupt request line changes level (the board
  routes it to the IOAPIC and/or the 8259 pair); the IOAPIC calls
  ``deliver(destination, vector, logical, level)`` and local APICs send IPIs
  through an :class:`vmi.pc.lapic.ApicBus`.
* **Time** comes from an injected ``clock()`` returning the machine's cycle
  count; a device that wants attention at a future cycle says so through
  ``next_event()`` (None when it does not), so a machine can run batched up to
  that cycle and then call the device's ``poll()``.
* **Snapshots**: ``state()`` returns a JSON-able dict and ``set_state(state)``
  restores it; injected callables are wiring, not state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: ``irq(line, level)``: an ISA interrupt request line changed level.
IrqLine = Callable[[int, bool], None]


def no_irq(line: int, level: bool) -> None:
    """The default ``irq`` of an unwired device: the line goes nowhere."""


class MmioDevice(Protocol):
    """A device behind a physical-address window (``BASE``, ``SIZE``)."""

    BASE: int
    SIZE: int

    def read(self, offset: int, size: int, cpu_index: int) -> int: ...
    def write(self, offset: int, size: int, value: int, cpu_index: int) -> None: ...
    def peek(self, offset: int, size: int, cpu_index: int) -> int: ...


def mask(size: int) -> int:
    """All ones in ``size`` bytes."""
    return (1 << (size * 8)) - 1
