"""The 16550A UART (COM1 at 0x3F8-0x3FF, IRQ 4).

Modelled after the National Semiconductor PC16550D datasheet, section 8
("Registers") and its register summary table:

* 0: RBR (read) / THR (write), or the divisor latch low byte when LCR.DLAB=1;
  1: IER, or the divisor latch high byte when DLAB=1; 2: IIR (read) / FCR
  (write); 3: LCR; 4: MCR; 5: LSR; 6: MSR; 7: SCR.
* Transmission is instantaneous: a byte written to the THR goes to
  ``output(byte)`` at once, so LSR.THRE and LSR.TEMT always read 1 (xv6's
  uartputc polls THRE) and the THR-empty interrupt (IER bit 1) is raised again
  after every write, cleared by the write or by reading IIR while it is the
  reason shown (Table IV, "Interrupt Control Functions").
* Reception: bytes given to :meth:`Uart16550.feed` wait in an input queue (the
  line: the typist, never lost) and move into the receiver (one byte holding
  register, or the 16-byte FIFO when FCR bit 0 enables it) as room appears.
  LSR.DR says data is there; the received-data interrupt (IER bit 0) is raised
  while it is (with the FIFO on: at or above the trigger level, or the
  character-timeout indication, IIR 0xC, below it).
* Interrupt priority in IIR (Table IV): line status (none modelled), received
  data or timeout, THR empty, modem status. The IRQ output is ``irq(4,
  level)``, following "an interrupt is pending" (QEMU's behaviour: MCR.OUT2 does
  not gate it, which xv6 relies on: it leaves MCR 0).
* Loopback (MCR bit 4): transmitted bytes come back to the receiver, and MSR's
  upper bits reflect MCR's outputs (the MCR's loop bit).

Not modelled: baud-rate timing (the divisor is stored), parity/framing/overrun
and break errors (LSR bits 1-4 stay 0), the transmitter FIFO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field

from vmi.pc import IrqLine, no_irq

COM1 = 0x3F8
RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
THR = DLL = RBR
FCR = IIR
DLM = IER
LCR_DLAB = 0x80
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
IER_RDA, IER_THRE, IER_RLS, IER_MSI = 1, 2, 4, 8
IIR_NONE, IIR_MSI, IIR_THRE, IIR_RDA, IIR_RLS, IIR_TIMEOUT = 1, 0, 2, 4, 6, 0xC
MCR_LOOP = 0x10
FIFO_SIZE = 16
TRIGGER_LEVELS = (1, 4, 8, 14)


def _discard(byte: int) -> None:
    pass


@define(eq=False)
class Uart16550:
    """One 16550A (see the module docstring)."""

    output: Callable[[int], None] = _discard
    irq: IrqLine = no_irq
    base: int = COM1
    line: int = 4
    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    scr: int = 0
    fcr: int = 0
    divisor: int = 0
    #: The line's delta bits (MSR bits 3:0), set when a modem input changes.
    msr_delta: int = 0
    #: THR-empty interrupt pending (raised by an empty THR, cleared by a THR
    #: write or an IIR read showing it).
    thre_pending: bool = False
    rx: deque[int] = field(factory=deque)
    input: deque[int] = field(factory=deque)
    irq_level: bool = False
    transmitted: int = 0
    received: int = 0

    @property
    def PORTS(self) -> tuple[int, ...]:
        """The eight ports from ``base`` (a property: COM2 is the same model at 0x2F8)."""
        return tuple(range(self.base, self.base + 8))

    # -- the line side -------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes arrive on the line (typed at the terminal, or ``--input``)."""
        self.input.extend(data)
        self._fill()
        self._update()

    def _capacity(self) -> int:
        return FIFO_SIZE if self.fcr & 1 else 1

    def _fill(self) -> None:
        while self.input and len(self.rx) < self._capacity():
            self.rx.append(self.input.popleft())

    # -- registers -----------------------------------------------------------

    def _reason(self) -> int:
        """IIR bits 3:0: the highest-priority pending interrupt (Table IV)."""
        if self.ier & IER_RDA and self.rx:
            if self.fcr & 1 and len(self.rx) < TRIGGER_LEVELS[self.fcr >> 6]:
                return IIR_TIMEOUT
            return IIR_RDA
        if self.ier & IER_THRE and self.thre_pending:
            return IIR_THRE
        if self.ier & IER_MSI and self.msr_delta:
            return IIR_MSI
        return IIR_NONE

    def _update(self) -> None:
        level = self._reason() != IIR_NONE
        if level != self.irq_level:
            self.irq_level = level
            self.irq(self.line, level)

    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:  # DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
            m = self.mcr
            high = (m & 1) << 5 | (m & 2) << 3 | (m & 4) << 4 | (m & 8) << 4
        else:
            high = 0xB0  # a connected terminal: CTS, DSR, DCD (as QEMU reports)
        return high | self.msr_delta

    def peek_port(self, port: int) -> int:
        """The value a read would give, with no side effect."""
        reg = port - self.base
        if reg == RBR:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            return self.rx[0] if self.rx else 0
        if reg == IER:
            return self.divisor >> 8 if self.lcr & LCR_DLAB else self.ier
        if reg == IIR:
            return self._reason() | (0xC0 if self.fcr & 1 else 0)
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)
        if reg == MSR:
            return self._msr()
        return self.scr

    def read_port(self, port: int, size: int) -> int:
        value = self.peek_port(port)
        reg = port - self.base
        if reg == RBR and not self.lcr & LCR_DLAB and self.rx:
            self.rx.popleft()
            self.received += 1
            self._fill()
        elif reg == IIR and value & 0xF == IIR_THRE:
            self.thre_pending = False
        elif reg == MSR:
            self.msr_delta = 0
        self._update()
        return value

    def write_port(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        reg = port - self.base
        dlab = self.lcr & LCR_DLAB
        if reg == THR and dlab:
            self.divisor = self.divisor & 0xFF00 | value
        elif reg == THR:
            # The write clears a THR-empty interrupt and the byte's departure
            # raises it again: the line drops in between, a fresh edge for the IOAPIC.
            self.thre_pending = False
            self._update()
            self.transmitted += 1
            if self.mcr & MCR_LOOP:
                self.input.append(value)
                self._fill()
            else:
                self.output(value)
            self.thre_pending = True  # sent at once: the THR is empty again
        elif reg == IER and dlab:
            self.divisor = self.divisor & 0xFF | value << 8
        elif reg == IER:
            if value & IER_THRE and not self.ier & IER_THRE:
                self.thre_pending = True  # enabling it with the THR empty interrupts
            self.ier = value & 0x0F
        elif reg == FCR:
            self._fcr(value)
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            self.mcr = value & 0x1F
        elif reg == SCR:
            self.scr = value
        self._update()

    def _fcr(self, value: int) -> None:
        if (value ^ self.fcr) & 1:
            self.rx.clear()  # switching FIFO mode on or off resets the FIFOs
        elif value & 2:
            self.rx.clear()  # receiver FIFO reset
        self.fcr = value & 0xC1
        self._fill()

    def state(self) -> dict:
        out = {name: getattr(self, name) for name in _STATE}
        out["rx"] = bytes(self.rx).hex()
        out["input"] = bytes(self.input).hex()
        return out

    def set_state(self, state: dict) -> None:
        for name in _STATE:
            setattr(self, name, state[name])
        self.rx = deque(bytes.fromhex(state["rx"]))
        self.input = deque(bytes.fromhex(state["input"]))


_STATE = ("ier", "lcr", "mcr", "scr", "fcr", "divisor", "msr_delta", "thre_pending",
          "irq_level", "transmitted", "received")
