"""The 8042 keyboard controller (ports 0x60 and 0x64, IRQ 1), its output port's
A20 gate, and the chipset's fast A20 gate at port 0x92.

Modelled after the IBM PC AT Technical Reference ("Keyboard Controller":
status register, commands, output port) and, for port 0x92, the "System
Control Port A" of PS/2 and later chipsets (bit 1 the A20 gate, bit 0 a fast
reset):

* 0x64 read: the status register (bit 0 output buffer full, bit 1 input buffer
  full: always 0, commands are taken at once; bit 2 the system flag; bit 3
  "the last write was a command"; bit 4 the keyboard not inhibited).
* 0x64 write: controller commands: 0x20/0x60 read/write the command byte,
  0xAA self test (0x55), 0xAB interface test (0x00), 0xAD/0xAE disable/enable
  the keyboard, 0xA7/0xA8 the auxiliary port (stored), 0xC0 read the input
  port, 0xD0/0xD1 read/write the output port (bit 0 reset: writing 0 resets
  the system; bit 1 the A20 gate), 0xDD/0xDF A20 off/on, 0xFE (and every 0xF0-
  0xFF with bit 0 clear) pulse the reset line.
* 0x60 read: the output buffer (a controller reply, else the next scancode
  from the keyboard's queue); the data's arrival raises IRQ 1 when the command
  byte's bit 0 allows it, and the read lowers it. 0x60 write: the parameter of
  a pending controller command, else a byte for the keyboard, which answers
  ACK (0xFA), to reset (0xFF) ACK and 0xAA, to echo (0xEE) 0xEE, to identify
  (0xF2) ACK 0xAB 0x83, and takes the parameter of 0xED, 0xF0, 0xF3.

Scancodes are queued as given (:meth:`KeyboardController.feed`): set 1, as
the controller's translation delivers them and xv6's kbd.c reads them. A20 is
on while either gate (output port bit 1, port 0x92 bit 1) is on, and
``a20(enabled)`` is told each change; ``reset()`` is told of a reset request.
Not modelled: the auxiliary (mouse) device, scancode translation, typematic
repeat, the controller's timing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field

from vmi.pc import IrqLine, no_irq

DATA, STATUS, COMMAND, PORT_A = 0x60, 0x64, 0x64, 0x92
OBF, IBF, SYSTEM, CMD, UNLOCKED = 0x01, 0x02, 0x04, 0x08, 0x10
CB_INT, CB_SYSTEM, CB_DISABLE_KBD, CB_TRANSLATE = 0x01, 0x04, 0x10, 0x40
OUT_RESET, OUT_A20 = 0x01, 0x02
ACK = 0xFA
#: Controller commands whose parameter is the next byte written to 0x60.
WITH_PARAMETER = frozenset([0x60, 0xD1, 0xD2, 0xD3, 0xD4])
#: Keyboard commands that take a parameter byte.
KEYBOARD_WITH_PARAMETER = frozenset([0xED, 0xF0, 0xF3])


def _no_a20(enabled: bool) -> None:
    pass


def _no_reset() -> None:
    pass


@define(eq=False)
class KeyboardController:
    """The controller, the keyboard behind it, and port 0x92 (module docstring)."""

    PORTS = (DATA, STATUS, PORT_A)

    irq: IrqLine = no_irq
    a20: Callable[[bool], None] = _no_a20
    reset: Callable[[], None] = _no_reset
    line: int = 1
    command_byte: int = CB_TRANSLATE | CB_SYSTEM | CB_INT
    output_port: int = OUT_RESET
    port_a: int = 0
    #: The byte in the output buffer, or None when empty.
    out: int | None = None
    #: Controller replies waiting for the output buffer (they go before scancodes).
    replies: deque[int] = field(factory=deque)
    scancodes: deque[int] = field(factory=deque)
    #: The controller command waiting for its parameter at 0x60 (0 = none).
    awaiting: int = 0
    #: A keyboard command waiting for its parameter (0 = none).
    keyboard_awaiting: int = 0
    last_was_command: bool = False
    irq_level: bool = False
    a20_enabled: bool = False
    resets: int = 0

    def __attrs_post_init__(self) -> None:
        # A board may start with A20 on (output_port=0x03): the state agrees,
        # and no change is announced for it.
        self.a20_enabled = bool((self.output_port | self.port_a) & OUT_A20)

    # -- input ---------------------------------------------------------------

    def feed(self, scancodes: bytes) -> None:
        """Keys pressed and released: set-1 scancodes for the guest to read."""
        self.scancodes.extend(scancodes)
        self._refill()

    def _refill(self) -> None:
        """Move the next waiting byte into an empty output buffer."""
        if self.out is None:
            if self.replies:
                self.out = self.replies.popleft()
            elif self.scancodes and not self.command_byte & CB_DISABLE_KBD:
                self.out = self.scancodes.popleft()
        self._update()

    def _update(self) -> None:
        level = self.out is not None and bool(self.command_byte & CB_INT)
        if level != self.irq_level:
            self.irq_level = level
            self.irq(self.line, level)

    def _reply(self, *data: int) -> None:
        self.replies.extend(data)
        self._refill()

    # -- A20 and reset -------------------------------------------------------

    def _a20_update(self) -> None:
        enabled = bool((self.output_port | self.port_a) & OUT_A20)
        if enabled != self.a20_enabled:
            self.a20_enabled = enabled
            self.a20(enabled)

    def _reset(self) -> None:
        self.resets += 1
        self.reset()

    # -- ports ---------------------------------------------------------------

    def peek_port(self, port: int) -> int:
        """The value a read would give, with no side effect."""
        if port == STATUS:
            status = SYSTEM if self.command_byte & CB_SYSTEM else 0
            return (status | UNLOCKED | (OBF if self.out is not None else 0)
                    | (CMD if self.last_was_command else 0))
        if port == DATA:
            return self.out if self.out is not None else 0
        if port == PORT_A:
            return self.port_a & ~1 | (OUT_A20 if self.a20_enabled else 0)
        return 0xFF

    def read_port(self, port: int, size: int) -> int:
        value = self.peek_port(port)
        if port == DATA and self.out is not None:
            self.out = None
            self._update()  # the line drops, then rises again for the next byte
            self._refill()
        return value

    def write_port(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == PORT_A:
            self.port_a = value & ~1
            self._a20_update()
            if value & 1:
                self._reset()  # fast reset
        elif port == COMMAND:
            self.last_was_command = True
            self._command(value)
        elif port == DATA:
            self.last_was_command = False
            self._data(value)

    def _command(self, command: int) -> None:
        self.awaiting = 0
        if command in WITH_PARAMETER:
            self.awaiting = command
        elif command == 0x20:
            self._reply(self.command_byte)
        elif command == 0xAA:
            self._reply(0x55)
        elif command == 0xAB:
            self._reply(0x00)
        elif command == 0xAD:
            self.command_byte |= CB_DISABLE_KBD
        elif command == 0xAE:
            self.command_byte &= ~CB_DISABLE_KBD
            self._refill()
        elif command == 0xA7:
            self.command_byte |= 0x20
        elif command == 0xA8:
            self.command_byte &= ~0x20
        elif command == 0xC0:
            self._reply(0xBF)  # input port: keyboard not inhibited, colour display
        elif command == 0xD0:
            irq_bits = 0x10 if self.out is not None else 0
            self._reply(self.output_port & ~0x30 | irq_bits)
        elif command == 0xDD:
            self.output_port &= ~OUT_A20
            self._a20_update()
        elif command == 0xDF:
            self.output_port |= OUT_A20
            self._a20_update()
        elif command >= 0xF0 and not command & 1:
            self._reset()  # pulse the output port's reset line
        # other commands: accepted, no effect

    def _data(self, value: int) -> None:
        command, self.awaiting = self.awaiting, 0
        if command == 0x60:
            self.command_byte = value
            self._refill()
            self._update()
        elif command == 0xD1:
            self.output_port = value
            self._a20_update()
            if not value & OUT_RESET:
                self._reset()
        elif command == 0xD2:
            self._reply(value)  # as if from the keyboard
        elif command in (0xD3, 0xD4):
            pass  # the auxiliary device is not modelled
        else:
            self._keyboard(value)

    def _keyboard(self, value: int) -> None:
        if self.keyboard_awaiting:
            self.keyboard_awaiting = 0
            self._reply(ACK)
        elif value == 0xFF:
            self.scancodes.clear()
            self._reply(ACK, 0xAA)
        elif value == 0xEE:
            self._reply(0xEE)
        elif value == 0xF2:
            self._reply(ACK, 0xAB, 0x83)
        elif value in KEYBOARD_WITH_PARAMETER:
            self.keyboard_awaiting = value
            self._reply(ACK)
        else:
            self._reply(ACK)

    def state(self) -> dict:
        out = {name: getattr(self, name) for name in _STATE}
        out["replies"] = list(self.replies)
        out["scancodes"] = bytes(self.scancodes).hex()
        return out

    def set_state(self, state: dict) -> None:
        for name in _STATE:
            setattr(self, name, state[name])
        self.replies = deque(state["replies"])
        self.scancodes = deque(bytes.fromhex(state["scancodes"]))


_STATE = ("command_byte", "output_port", "port_a", "out", "awaiting", "keyboard_awaiting",
          "last_was_command", "irq_level", "a20_enabled", "resets")
