"""The CMOS RAM and real-time clock (Motorola MC146818A), ports 0x70 and 0x71.

Modelled after the MC146818A datasheet ("Address Map", "Time, Calendar and
Alarm Locations", "Register A-D") and the PC AT's use of the CMOS RAM:

* Port 0x70 selects one of 128 bytes (bits 6:0); bit 7 is the PC's NMI
  disable, kept in :attr:`Cmos.nmi_disabled`. Port 0x71 reads or writes it.
* Bytes 0-9 are the time and date (seconds, alarm seconds, minutes, alarm
  minutes, hours, alarm hours, day of week, day of month, month, year), from
  the injected ``now()`` (seconds since the Unix epoch, UTC: a board derives it
  from the cycle clock, so a run is repeatable), in BCD unless register B's DM
  bit asks for binary, in 24-hour form unless its 24/12 bit is clear (then the
  hour's bit 7 is PM); 0x32 is the century (the PC's convention).
* Register A (0x0A): UIP reads 0 (an update is instantaneous here), the
  divider and rate bits are stored. Register B (0x0B): SET stops the clock's
  update so software can write a new time, which takes effect when SET is
  cleared (a time written while SET is clear takes effect at once). Register
  C (0x0C) reads its flags and clears them (no interrupt source is modelled,
  so they stay 0). Register D (0x0D): VRT, the battery is good.
* Everything else is plain battery-backed RAM: the shutdown status byte 0x0F
  (xv6's lapicstartap writes 0x0A there), the memory sizes the constructor
  fills in (0x15/0x16 base, 0x17/0x18 and 0x30/0x31 extended memory in KiB,
  0x34/0x35 memory above 16 MiB in 64 KiB units), and the rest.

Not modelled: the periodic, alarm and update-ended interrupts (IRQ 8), the
daylight-saving bit, square-wave output. Reading port 0x70 gives 0xFF.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from attrs import define, field

INDEX, DATA = 0x70, 0x71
SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D, SHUTDOWN, CENTURY = 0x0A, 0x0B, 0x0C, 0x0D, 0x0F, 0x32
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY)
B_SET, B_BINARY, B_24H = 0x80, 0x04, 0x02
D_VRT = 0x80
#: 2000-01-01 00:00:00 UTC: the default clock, when a board gives none.
Y2K = 946_684_800


def _y2k() -> float:
    return Y2K


def wall_clock(cycles: Callable[[], int], hz: int, epoch: float = Y2K) -> Callable[[], float]:
    """A ``now()`` for :class:`Cmos` from the machine's cycle counter: ``epoch``
    (seconds since 1970) at cycle 0, ``hz`` cycles a second. A run then reads
    the same times every time, whatever the host's clock says."""
    return lambda: epoch + cycles() / hz


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _unbcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0xF)


def _default_ram() -> bytearray:
    ram = bytearray(128)
    ram[REG_A] = 0x26  # 32.768 kHz time base, 1024 Hz rate
    ram[REG_B] = B_24H
    ram[REG_D] = D_VRT
    return ram


@define(eq=False)
class Cmos:
    """The CMOS RAM and RTC (see the module docstring)."""

    PORTS = (INDEX, DATA)

    now: Callable[[], float] = _y2k
    ram: bytearray = field(factory=_default_ram)
    index: int = 0
    nmi_disabled: bool = False
    #: Seconds added to ``now()``: the guest set the clock.
    offset: int = 0

    @classmethod
    def with_memory(cls, memory: int, **kwargs) -> Cmos:
        """A CMOS whose memory-size bytes describe ``memory`` bytes of RAM."""
        cmos = cls(**kwargs)
        extended = min(max(memory - (1 << 20), 0) // 1024, 0xFFFF)
        above16 = min(max(memory - (16 << 20), 0) // 65536, 0xFFFF)
        for low, value in ((0x15, 640), (0x17, extended), (0x30, extended),
                           (0x34, above16)):
            cmos.ram[low], cmos.ram[low + 1] = value & 0xFF, value >> 8
        return cmos

    # -- time ----------------------------------------------------------------

    def _datetime(self) -> datetime.datetime:
        seconds = int(self.now()) + self.offset
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC)

    def _encode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_BINARY else _unbcd(value)

    def _encode_hour(self, hour: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._encode(hour)
        twelve = hour % 12 or 12
        return self._encode(twelve) | (0x80 if hour >= 12 else 0)

    def _decode_hour(self, value: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._decode(value)
        hour = self._decode(value & 0x7F) % 12
        return hour + 12 if value & 0x80 else hour

    def _time_bytes(self) -> dict[int, int]:
        t = self._datetime()
        return {SECONDS: self._encode(t.second), MINUTES: self._encode(t.minute),
                HOURS: self._encode_hour(t.hour),
                WEEKDAY: self._encode(t.isoweekday() % 7 + 1),  # 1 = Sunday
                DAY: self._encode(t.day), MONTH: self._encode(t.month),
                YEAR: self._encode(t.year % 100), CENTURY: self._encode(t.year // 100)}

    def _set_time(self, ram: bytearray) -> None:
        """Make the clock show the time and date held in ``ram``'s time bytes
        (an impossible date is ignored, as a real RTC would count it oddly)."""
        try:
            year = self._decode(ram[CENTURY]) * 100 + self._decode(ram[YEAR])
            wanted = datetime.datetime(
                year, self._decode(ram[MONTH]), self._decode(ram[DAY]),
                self._decode_hour(ram[HOURS]), self._decode(ram[MINUTES]),
                self._decode(ram[SECONDS]), tzinfo=datetime.UTC)
        except ValueError:
            return
        self.offset = int(wanted.timestamp()) - int(self.now())

    # -- ports ---------------------------------------------------------------

    def peek_register(self, index: int) -> int:
        """Register ``index`` as a read would give it, with no side effect."""
        if index in TIME_REGISTERS and not self.ram[REG_B] & B_SET:
            return self._time_bytes()[index]
        return self.ram[index]

    def read_port(self, port: int, size: int) -> int:
        if port != DATA:
            return 0xFF
        value = self.peek_register(self.index)
        if self.index == REG_C:
            self.ram[REG_C] = 0
        return value

    def write_port(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == INDEX:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & 0x80)
            return
        index = self.index
        if index in (REG_C, REG_D):
            return  # read-only
        if index == REG_A:
            self.ram[REG_A] = value & 0x7F  # UIP is read-only
        elif index == REG_B:
            was_set = self.ram[REG_B] & B_SET
            if value & B_SET and not was_set:
                for reg, byte in self._time_bytes().items():  # freeze the time shown
                    self.ram[reg] = byte
            self.ram[REG_B] = value
            if was_set and not value & B_SET:
                self._set_time(self.ram)
        elif index in TIME_REGISTERS and not self.ram[REG_B] & B_SET:
            ram = bytearray(self.ram)
            for reg, byte in self._time_bytes().items():
                ram[reg] = byte
            ram[index] = value
            self._set_time(ram)
        else:
            self.ram[index] = value

    def state(self) -> dict:
        return {"ram": bytes(self.ram).hex(), "index": self.index,
                "nmi_disabled": self.nmi_disabled, "offset": self.offset}

    def set_state(self, state: dict) -> None:
        self.ram = bytearray.fromhex(state["ram"])
        self.index = state["index"]
        self.nmi_disabled = state["nmi_disabled"]
        self.offset = state["offset"]
