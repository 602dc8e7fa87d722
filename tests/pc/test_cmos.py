"""CMOS RAM and the RTC (MC146818A): index, time in BCD and binary, status registers."""

from __future__ import annotations

import calendar

from tests.pc.helpers import fields, through_json
from vmi.pc import cmos as R
from vmi.pc.cmos import Cmos

#: 2026-12-07 21:45:09 UTC, a Monday.
WHEN = calendar.timegm((2026, 12, 7, 21, 45, 9))


class WallClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def read(cmos, index):
    cmos.write_port(R.INDEX, 1, index)
    return cmos.read_port(R.DATA, 1)


def write(cmos, index, value):
    cmos.write_port(R.INDEX, 1, index)
    cmos.write_port(R.DATA, 1, value)


def test_time_registers_in_bcd():
    c = Cmos(now=WallClock(WHEN))
    got = [read(c, i) for i in (R.SECONDS, R.MINUTES, R.HOURS, R.WEEKDAY, R.DAY, R.MONTH,
                                R.YEAR, R.CENTURY)]
    assert got == [0x09, 0x45, 0x21, 0x02, 0x07, 0x12, 0x26, 0x20]


def test_time_follows_the_injected_clock():
    clock = WallClock(WHEN)
    c = Cmos(now=clock)
    clock.now += 61
    assert (read(c, R.MINUTES), read(c, R.SECONDS)) == (0x46, 0x10)


def test_binary_and_twelve_hour_formats():
    c = Cmos(now=WallClock(WHEN))
    write(c, R.REG_B, R.B_BINARY)  # binary, 12-hour
    assert read(c, R.MINUTES) == 45
    assert read(c, R.HOURS) == 0x80 | 9  # 9 PM
    write(c, R.REG_B, 0)  # BCD, 12-hour
    assert read(c, R.HOURS) == 0x80 | 0x09


def test_xv6_cmostime_reads_a_consistent_date():
    """lapic.c's cmostime: status B for the format, then the time while UIP is 0."""
    c = Cmos(now=WallClock(WHEN))
    bcd = (read(c, R.REG_B) & (1 << 2)) == 0
    assert bcd and not read(c, R.REG_A) & 0x80
    year = read(c, R.YEAR)
    assert (year >> 4) * 10 + (year & 0xF) + 2000 == 2026


def test_register_a_keeps_its_rate_but_not_uip():
    c = Cmos()
    assert read(c, R.REG_A) == 0x26
    write(c, R.REG_A, 0xA6)
    assert read(c, R.REG_A) == 0x26


def test_register_c_clears_on_read_and_d_reports_a_good_battery():
    c = Cmos()
    c.ram[R.REG_C] = 0x90
    assert read(c, R.REG_C) == 0x90 and read(c, R.REG_C) == 0
    assert read(c, R.REG_D) == R.D_VRT
    write(c, R.REG_D, 0)
    assert read(c, R.REG_D) == R.D_VRT


def test_index_bit_7_is_the_nmi_mask():
    c = Cmos()
    c.write_port(R.INDEX, 1, 0x80 | R.SHUTDOWN)
    assert c.nmi_disabled and c.index == R.SHUTDOWN
    c.write_port(R.INDEX, 1, R.SHUTDOWN)
    assert not c.nmi_disabled
    assert c.read_port(R.INDEX, 1) == 0xFF


def test_shutdown_code_is_plain_ram():
    c = Cmos()
    write(c, R.SHUTDOWN, 0x0A)  # xv6's lapicstartap
    assert read(c, R.SHUTDOWN) == 0x0A and c.ram[R.SHUTDOWN] == 0x0A
    write(c, 0x7F, 0x5A)
    assert read(c, 0x7F) == 0x5A


def test_setting_the_clock_with_the_set_bit():
    clock = WallClock(WHEN)
    c = Cmos(now=clock)
    write(c, R.REG_B, R.B_SET | R.B_24H)
    clock.now += 100  # the clock is stopped: the frozen time shows
    assert read(c, R.SECONDS) == 0x09
    write(c, R.HOURS, 0x08)
    write(c, R.MINUTES, 0x30)
    write(c, R.SECONDS, 0x00)
    write(c, R.REG_B, R.B_24H)
    assert [read(c, i) for i in (R.HOURS, R.MINUTES, R.SECONDS, R.DAY)] == \
        [0x08, 0x30, 0x00, 0x07]
    clock.now += 5
    assert read(c, R.SECONDS) == 0x05


def test_a_time_write_without_set_takes_effect_at_once():
    c = Cmos(now=WallClock(WHEN))
    write(c, R.YEAR, 0x99)
    assert read(c, R.YEAR) == 0x99 and read(c, R.CENTURY) == 0x20 and read(c, R.MONTH) == 0x12


def test_memory_size_bytes():
    c = Cmos.with_memory(224 << 20)
    assert read(c, 0x15) | read(c, 0x16) << 8 == 640
    assert read(c, 0x17) | read(c, 0x18) << 8 == 0xFFFF  # capped: 223 MiB does not fit
    assert read(c, 0x34) | read(c, 0x35) << 8 == (224 - 16) * 16
    small = Cmos.with_memory(8 << 20)
    assert read(small, 0x30) | read(small, 0x31) << 8 == 7 * 1024


def test_wall_clock_from_the_cycle_counter():
    cycles = [0]
    c = Cmos(now=R.wall_clock(lambda: cycles[0], hz=1000, epoch=WHEN))
    assert read(c, R.SECONDS) == 0x09
    cycles[0] = 2999
    assert read(c, R.SECONDS) == 0x11
    cycles[0] = 3000
    assert read(c, R.SECONDS) == 0x12


def test_default_clock_is_repeatable():
    assert read(Cmos(), R.YEAR) == 0x00 and read(Cmos(), R.CENTURY) == 0x20


def test_state_round_trip():
    clock = WallClock(WHEN)
    c = Cmos(now=clock)
    write(c, R.SHUTDOWN, 0x0A)
    write(c, R.MINUTES, 0x10)
    c.write_port(R.INDEX, 1, 0x80 | R.HOURS)
    c2 = Cmos(now=clock)
    c2.set_state(through_json(c.state()))
    assert c2.state() == c.state() and fields(c2) == fields(c)
    assert c2.read_port(R.DATA, 1) == c.read_port(R.DATA, 1)
    assert [read(c2, i) for i in range(14)] == [read(c, i) for i in range(14)]
