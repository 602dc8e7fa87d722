"""The CGA text display: video memory at 0xB8000 and the 6845 CRTC's ports.

Modelled after the IBM Color/Graphics Monitor Adapter technical reference
(80x25 alphanumeric mode: each cell two bytes, the character then its
attribute, row after row from 0xB8000) and the Motorola MC6845 CRTC
datasheet (the index register at 0x3D4 selects one of 18 registers read or
written at 0x3D5; R12/R13 the start address, R14/R15 the cursor address).

The text memory is an MMIO window of 32 KiB (0xB8000-0xBFFFF; a real CGA
has 16 KiB there, mirrored; here it is 32 KiB of plain memory) with
``read``/``write``/``peek``; :meth:`Cga.text` renders the 80x25 screen from
the start address as code page 437 text. The status port 0x3DA toggles its
retrace bits on every read, so a loop waiting for retrace ends.
Not modelled: graphics modes, the mode and colour select registers (0x3D8,
0x3D9 are accepted and stored), blinking, light pen.
"""

from __future__ import annotations

from attrs import define, field

from vmi.pc import mask

COLUMNS, ROWS = 80, 25
INDEX, DATA, MODE, COLOUR, STATUS = 0x3D4, 0x3D5, 0x3D8, 0x3D9, 0x3DA
START_HIGH, START_LOW, CURSOR_HIGH, CURSOR_LOW = 12, 13, 14, 15
#: Registers the MC6845 lets software read back (R12-R17); the rest read 0.
READABLE = frozenset(range(12, 18))


@define(eq=False)
class Cga:
    """The adapter (see the module docstring)."""

    BASE = 0xB8000
    SIZE = 0x8000
    PORTS = (INDEX, DATA, MODE, COLOUR, STATUS)

    memory: bytearray = field(factory=lambda: bytearray(0x8000))
    index: int = 0
    registers: list[int] = field(factory=lambda: [0] * 18)
    mode: int = 0
    colour: int = 0
    status: int = 0

    # -- text memory (MMIO) --------------------------------------------------

    def read(self, offset: int, size: int, cpu_index: int = 0) -> int:
        return self.peek(offset, size, cpu_index)

    def peek(self, offset: int, size: int, cpu_index: int = 0) -> int:
        return int.from_bytes(self.memory[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int, cpu_index: int = 0) -> None:
        self.memory[offset:offset + size] = (value & mask(size)).to_bytes(size, "little")

    # -- CRTC ports ----------------------------------------------------------

    def read_port(self, port: int, size: int) -> int:
        if port == INDEX:
            return self.index
        if port == DATA:
            return self.registers[self.index] if self.index in READABLE else 0
        if port == STATUS:
            self.status ^= 0x09  # display enable and vertical retrace, alternating
            return self.status
        if port == MODE:
            return self.mode
        if port == COLOUR:
            return self.colour
        return 0xFF

    def write_port(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == INDEX:
            self.index = value & 0x1F
        elif port == DATA and self.index < len(self.registers):
            # R12 and R14 are 6 bits wide (a 14-bit address); the rest a byte
            self.registers[self.index] = value & 0x3F if self.index in (12, 14) else value
        elif port == MODE:
            self.mode = value
        elif port == COLOUR:
            self.colour = value

    # -- what is on the screen ----------------------------------------------

    @property
    def cursor(self) -> int:
        """The cursor's cell (row * 80 + column), from R14/R15."""
        return self.registers[CURSOR_HIGH] << 8 | self.registers[CURSOR_LOW]

    @property
    def start(self) -> int:
        return self.registers[START_HIGH] << 8 | self.registers[START_LOW]

    def cell(self, row: int, column: int) -> tuple[str, int]:
        """The character and attribute at (row, column) of the screen."""
        offset = 2 * ((self.start + row * COLUMNS + column) % (self.SIZE // 2))
        return bytes([self.memory[offset]]).decode("cp437"), self.memory[offset + 1]

    def text(self) -> str:
        """The 25 rows, trailing blanks (and NULs) dropped from each."""
        rows = []
        for row in range(ROWS):
            chars = "".join(self.cell(row, c)[0] for c in range(COLUMNS))
            rows.append(chars.replace("\0", " ").rstrip())
        return "\n".join(rows)

    def state(self) -> dict:
        return {"memory": bytes(self.memory).hex(), "index": self.index,
                "registers": list(self.registers), "mode": self.mode,
                "colour": self.colour, "status": self.status}

    def set_state(self, state: dict) -> None:
        self.memory = bytearray.fromhex(state["memory"])
        self.index = state["index"]
        self.registers = list(state["registers"])
        self.mode = state["mode"]
        self.colour = state["colour"]
        self.status = state["status"]
