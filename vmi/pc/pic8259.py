"""The two cascaded 8259A programmable interrupt controllers of a PC.

Modelled after the Intel 8259A datasheet (order 231468), "Programming the
8259A":

* Initialization: ICW1 (command port, bit 4 set) starts it: the IMR and ISR
  clear, IR7 gets the lowest priority, the special mask mode ends and the next
  read of the command port gives the IRR; ICW2 sets the vector base (bits
  7:3); ICW3 follows unless ICW1 said single (SNGL); ICW4 follows if ICW1 asked
  for it (IC4), its AEOI bit giving automatic end of interrupt.
* OCW1 (data port) is the interrupt mask register, and reads back.
* OCW2 (command port, bits 4:3 = 00): non-specific and specific EOI, with and
  without rotation, set priority, rotate in AEOI mode.
* OCW3 (command port, bits 4:3 = 01): read IRR or ISR on the next command-port
  read, poll command, special mask mode.
* Edge-triggered inputs set the IRR on a rising edge, latched until the
  acknowledge (the datasheet wants the line held high until then; QEMU's
  i8259 latches, and so does this); level-triggered (ICW1 LTIM) follow the
  line. The slave's INT drives the master's IR2 (the PC's cascade); an
  interrupt acknowledge returns the vector (base + line) and puts the line in
  service.

The pair's output, the master's INT pin, goes to ``intr(level)``; the CPU (or
a board) takes a vector with :meth:`PicPair.acknowledge`. xv6 masks both chips
(OCW1 0xFF) and uses the APICs; the bundled kernel only writes a non-specific
EOI (0x20) to port 0x20, which this model accepts before any initialization
too, with the vector bases the constructor gives (0x20 and 0x28, as Linux
programs them). Not modelled: MCS-80 mode, buffered mode, special fully nested
mode, the 8259's timing.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

MASTER_PORTS = (0x20, 0x21)
SLAVE_PORTS = (0xA0, 0xA1)
CASCADE = 2


def _no_intr(level: bool) -> None:
    pass


@define(eq=False)
class Pic8259:
    """One 8259A."""

    base: int = 0x20
    imr: int = 0
    irr: int = 0
    isr: int = 0
    #: The input lines' present levels (for edge detection and level mode).
    lines: int = 0
    #: The line with the lowest priority (7 until a rotation).
    lowest: int = 7
    #: Where an initialization sequence is: 0 = done, else the ICW expected next.
    init_step: int = 0
    icw1: int = 0
    icw3: int = 0
    icw4: int = 0
    auto_eoi: bool = False
    rotate_on_aeoi: bool = False
    special_mask: bool = False
    read_isr: bool = False
    poll: bool = False
    eois: int = 0

    def _priority_order(self) -> list[int]:
        """Lines from highest priority to lowest."""
        first = (self.lowest + 1) & 7
        return [(first + i) & 7 for i in range(8)]

    def _highest(self, bits: int) -> int | None:
        for line in self._priority_order():
            if bits >> line & 1:
                return line
        return None

    def pending_line(self) -> int | None:
        """The line an acknowledge would serve: the highest-priority requested,
        unmasked line above every line in service (in special mask mode, only
        a line's own in-service bit blocks it)."""
        requests = self.irr & ~self.imr
        for line in self._priority_order():
            if self.isr >> line & 1 and not self.special_mask:
                return None
            if requests >> line & 1 and not self.isr >> line & 1:
                return line
        return None

    def set_line(self, line: int, level: bool) -> None:
        bit = 1 << line
        rising = level and not self.lines & bit
        self.lines = self.lines | bit if level else self.lines & ~bit
        if self.icw1 & 8:  # LTIM: level-triggered
            self.irr = self.irr | bit if level else self.irr & ~bit
        elif rising:
            self.irr |= bit  # latched until acknowledged, as QEMU's i8259 does

    def ack(self) -> int:
        """The acknowledge cycle: the served line leaves the IRR and enters the
        ISR (unless automatic EOI); the vector's low 3 bits are the line. With
        nothing to serve, the chip answers IR7's vector (a spurious interrupt,
        ISR untouched)."""
        line = self.pending_line()
        if line is None:
            return self.base | 7
        bit = 1 << line
        if not self.icw1 & 8:
            self.irr &= ~bit
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.lowest = line
        else:
            self.isr |= bit
        return self.base | line

    def read_port(self, port: int, size: int) -> int:
        if port & 1:
            return self.imr
        if self.poll:  # the poll command: the next read is the poll word
            self.poll = False
            line = self.pending_line()
            if line is None:
                return 0
            self.ack()
            return 0x80 | line
        return self.isr if self.read_isr else self.irr

    def write_port(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port & 1:
            self._data(value)
        elif value & 0x10:
            self._icw1(value)
        elif value & 0x08:
            self._ocw3(value)
        else:
            self._ocw2(value)

    def _icw1(self, value: int) -> None:
        self.icw1 = value
        self.imr = self.isr = 0
        self.lowest = 7
        self.special_mask = self.read_isr = self.poll = False
        self.auto_eoi = self.rotate_on_aeoi = False
        self.icw4 = 0
        if not value & 8:
            self.irr &= self.lines  # edge mode: only lines still high may request
        self.init_step = 2

    def _data(self, value: int) -> None:
        step = self.init_step
        if step == 2:
            self.base = value & 0xF8
            self.init_step = 0 if self.icw1 & 2 else 3  # SNGL: no ICW3
            if self.init_step == 0 and self.icw1 & 1:
                self.init_step = 4
        elif step == 3:
            self.icw3 = value
            self.init_step = 4 if self.icw1 & 1 else 0
        elif step == 4:
            self.icw4 = value
            self.auto_eoi = bool(value & 2)
            self.init_step = 0
        else:
            self.imr = value  # OCW1

    def _ocw2(self, value: int) -> None:
        command = value >> 5
        level = value & 7
        if command in (1, 5):  # non-specific EOI (5: and rotate)
            line = self._highest(self.isr)
            if line is not None:
                self.isr &= ~(1 << line)
                if command == 5:
                    self.lowest = line
            self.eois += 1
        elif command in (3, 7):  # specific EOI (7: and rotate)
            self.isr &= ~(1 << level)
            if command == 7:
                self.lowest = level
            self.eois += 1
        elif command == 6:  # set priority: ``level`` becomes the lowest
            self.lowest = level
        elif command in (0, 4):  # rotate in automatic EOI mode: clear / set
            self.rotate_on_aeoi = command == 4
        # command 2 is a no-op

    def _ocw3(self, value: int) -> None:
        if value & 0x40:
            self.special_mask = bool(value & 0x20)
        if value & 0x04:
            self.poll = True
        if value & 0x02:
            self.read_isr = bool(value & 0x01)

    def state(self) -> dict:
        return {name: getattr(self, name) for name in _CHIP_STATE}

    def set_state(self, state: dict) -> None:
        for name in _CHIP_STATE:
            setattr(self, name, state[name])


_CHIP_STATE = ("base", "imr", "irr", "isr", "lines", "lowest", "init_step", "icw1", "icw3",
               "icw4", "auto_eoi", "rotate_on_aeoi", "special_mask", "read_isr", "poll",
               "eois")


@define(eq=False)
class PicPair:
    """The PC's master (ports 0x20/0x21, IRQ 0-7) and slave (0xA0/0xA1, IRQ
    8-15, cascaded on the master's IR2). ``intr(level)`` follows the master's
    INT output."""

    PORTS = MASTER_PORTS + SLAVE_PORTS

    intr: Callable[[bool], None] = _no_intr
    master: Pic8259 = field(factory=lambda: Pic8259(base=0x20))
    slave: Pic8259 = field(factory=lambda: Pic8259(base=0x28))
    output: bool = False

    def irq(self, line: int, level: bool) -> None:
        """ISA IRQ ``line`` (0-15) changes level."""
        if line >= 8:
            self.slave.set_line(line - 8, level)
        elif line != CASCADE:
            self.master.set_line(line, level)
        self._update()

    def _update(self) -> None:
        self.master.set_line(CASCADE, self.slave.pending_line() is not None)
        out = self.master.pending_line() is not None
        if out != self.output:
            self.output = out
            self.intr(out)

    def pending(self) -> bool:
        """The INT line to the CPU is raised."""
        return self.output

    def peek_vector(self) -> int:
        """The vector an acknowledge would give now, with no side effect."""
        line = self.master.pending_line()
        if line == CASCADE:
            slave = self.slave.pending_line()
            return self.slave.base | (7 if slave is None else slave)
        return self.master.base | (7 if line is None else line)

    def acknowledge(self) -> int:
        """The CPU's INTA cycle: the vector to take (IR7's or IR15's vector if
        the request went away, the 8259's spurious interrupt)."""
        line = self.master.pending_line()
        if line == CASCADE:
            self.master.ack()
            vector = self.slave.ack()
        else:
            vector = self.master.ack()
        self._update()
        return vector

    def read_port(self, port: int, size: int) -> int:
        chip = self.slave if port & 0x80 else self.master
        value = chip.read_port(port, size)
        self._update()
        return value

    def write_port(self, port: int, size: int, value: int) -> None:
        chip = self.slave if port & 0x80 else self.master
        chip.write_port(port, size, value)
        self._update()

    def state(self) -> dict:
        return {"master": self.master.state(), "slave": self.slave.state(),
                "output": self.output}

    def set_state(self, state: dict) -> None:
        self.master.set_state(state["master"])
        self.slave.set_state(state["slave"])
        self.output = state["output"]
