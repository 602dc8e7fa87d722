"""The machine's devices: port bus, interval timer, interrupt controller, console.

They are deliberately small and documented, in the spirit of a PC:

* ``PortBus`` routes ``in``/``out`` to devices by port number; an unclaimed
  port reads as all ones and ignores writes, like an empty ISA bus.
* ``IntervalTimer`` models channel 0 of an 8253/8254 PIT in rate-generator mode:
  the guest writes a control byte to port 0x43 and a 16-bit divisor, low byte
  then high byte, to port 0x40. Each CPU gets a timer interrupt (IRQ 0) every
  ``divisor * cycles_per_tick`` of its own cycles: one programmed rate drives a
  per-CPU tick, as a local timer would, so every CPU is preempted.
* ``InterruptController`` keeps, per CPU, the set of pending vectors (IRQ n is
  vector ``base + n``, base 0x20 as Linux programs the 8259) and hands the
  lowest pending vector to the CPU when it can take it. Raising a vector that
  is still pending coalesces with it, as an edge on a real PIC does; the
  controller counts both so that "every interrupt raised is handled once"
  can be checked. A write to port 0x20 is an end-of-interrupt (accepted,
  counted).
* ``Console`` collects what the guest writes to port 0xE9 (the Bochs/QEMU
  debug port).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

PIT_HZ = 1_193_182
#: The modelled CPU clock: an i486DX-33.
CPU_HZ = 33_000_000


class PortDevice(Protocol):
    def read_port(self, port: int, size: int) -> int: ...
    def write_port(self, port: int, size: int, value: int) -> None: ...


class PortBus:
    """Routes port I/O (``cpu.io``) to the device that claims each port."""

    def __init__(self) -> None:
        self._devices: dict[int, PortDevice] = {}

    def attach(self, device: PortDevice, *ports: int) -> None:
        for port in ports:
            if port in self._devices:
                raise ValueError(f"port {port:#x} is claimed twice")
            self._devices[port] = device

    def read(self, port: int, size: int) -> int:
        device = self._devices.get(port)
        if device is None:
            return (1 << (size * 8)) - 1
        return device.read_port(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        device = self._devices.get(port)
        if device is not None:
            device.write_port(port, size, value)


class InterruptController:
    """Pending external interrupts per CPU (see the module docstring)."""

    def __init__(self, cpus: int, base: int = 0x20) -> None:
        self.base = base
        self.pending = [0] * cpus  # bit v set = vector v pending
        self.raised = [0] * cpus
        self.coalesced = [0] * cpus
        self.delivered = [0] * cpus
        self.eoi = 0

    def raise_vector(self, cpu: int, vector: int) -> None:
        bit = 1 << vector
        if self.pending[cpu] & bit:
            self.coalesced[cpu] += 1
        self.pending[cpu] |= bit
        self.raised[cpu] += 1

    def raise_irq(self, irq: int, cpu: int) -> None:
        self.raise_vector(cpu, self.base + irq)

    def next_vector(self, cpu: int) -> int | None:
        """The vector the CPU would take now (lowest pending), or None."""
        mask = self.pending[cpu]
        return (mask & -mask).bit_length() - 1 if mask else None

    def acknowledge(self, cpu: int, vector: int) -> None:
        """The CPU took ``vector``: it is no longer pending."""
        self.pending[cpu] &= ~(1 << vector)
        self.delivered[cpu] += 1

    def read_port(self, port: int, size: int) -> int:
        return 0

    def write_port(self, port: int, size: int, value: int) -> None:
        if value & 0x20:  # non-specific EOI command (OCW2)
            self.eoi += 1

    def state(self) -> dict:
        return {"pending": list(self.pending), "raised": list(self.raised),
                "coalesced": list(self.coalesced), "delivered": list(self.delivered),
                "eoi": self.eoi, "base": self.base}

    def set_state(self, state: dict) -> None:
        self.pending = list(state["pending"])
        self.raised = list(state["raised"])
        self.coalesced = list(state["coalesced"])
        self.delivered = list(state["delivered"])
        self.eoi = state["eoi"]
        self.base = state["base"]


class IntervalTimer:
    """PIT channel 0 (see the module docstring). Off until the guest programs it."""

    def __init__(self, cpus: int, cycles_per_tick: int = round(CPU_HZ / PIT_HZ),
                 clock: Callable[[int], int] | None = None) -> None:
        """``clock(i)`` reads CPU ``i``'s cycle counter, so that programming the
        timer arms every CPU's first deadline one period from its own "now"."""
        self.cycles_per_tick = cycles_per_tick
        self.clock = clock
        self.divisor = 0  # 0 = not programmed
        self.period = 0  # in CPU cycles
        self.deadline = [0] * cpus
        self.ticks = [0] * cpus
        self._low: int | None = None

    def read_port(self, port: int, size: int) -> int:
        return 0xFF

    def write_port(self, port: int, size: int, value: int) -> None:
        if port == 0x43:
            self._low = None  # a control word restarts the LSB/MSB sequence
        elif port == 0x40:
            if size > 1:  # a 16/32-bit out writes the whole divisor at once
                self._program(value & 0xFFFF)
            elif self._low is None:
                self._low = value & 0xFF
            else:
                self._program(self._low | (value & 0xFF) << 8)
                self._low = None

    def _program(self, divisor: int) -> None:
        self.divisor = divisor or 0x10000  # 0 means 65536 on an 8254
        self.period = self.divisor * self.cycles_per_tick
        now = self.clock or (lambda _cpu: 0)
        self.deadline = [now(i) + self.period for i in range(len(self.deadline))]

    def due(self, cpu: int, now: int) -> bool:
        """True (and re-armed) when CPU ``cpu``'s timer expired at cycle ``now``."""
        deadline = self.deadline[cpu]
        if not self.period or now < deadline:
            return False
        self.deadline[cpu] = deadline + self.period * (1 + (now - deadline) // self.period)
        self.ticks[cpu] += 1
        return True

    def state(self) -> dict:
        return {"divisor": self.divisor, "period": self.period, "deadline": list(self.deadline),
                "ticks": list(self.ticks), "low": self._low,
                "cycles_per_tick": self.cycles_per_tick}

    def set_state(self, state: dict) -> None:
        self.divisor = state["divisor"]
        self.period = state["period"]
        self.deadline = list(state["deadline"])
        self.ticks = list(state["ticks"])
        self._low = state["low"]
        self.cycles_per_tick = state["cycles_per_tick"]


class Console:
    """Bytes the guest writes to port 0xE9."""

    def __init__(self) -> None:
        self.output = bytearray()

    def read_port(self, port: int, size: int) -> int:
        return 0xE9  # Bochs answers its own port number: "the port exists"

    def write_port(self, port: int, size: int, value: int) -> None:
        self.output += (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little")

    @property
    def text(self) -> str:
        return self.output.decode("latin-1")

    def state(self) -> dict:
        return {"output": self.output.hex()}

    def set_state(self, state: dict) -> None:
        self.output = bytearray.fromhex(state["output"])
