"""CGA text memory and the CRTC's registers (IBM CGA reference, MC6845)."""

from __future__ import annotations

from tests.pc.helpers import fields, through_json
from vmi.pc import cga as C
from vmi.pc.cga import Cga


def xv6_cgaputc(cga, c):
    """console.c's cgaputc for printable characters and newline."""
    cga.write_port(C.INDEX, 1, 14)
    pos = cga.read_port(C.DATA, 1) << 8
    cga.write_port(C.INDEX, 1, 15)
    pos |= cga.read_port(C.DATA, 1)
    if c == "\n":
        pos += 80 - pos % 80
    else:
        cga.write(2 * pos, 2, ord(c) | 0x0700)
        pos += 1
    cga.write_port(C.INDEX, 1, 14)
    cga.write_port(C.DATA, 1, pos >> 8)
    cga.write_port(C.INDEX, 1, 15)
    cga.write_port(C.DATA, 1, pos)
    cga.write(2 * pos, 2, ord(" ") | 0x0700)


def test_window_constants():
    assert (Cga.BASE, Cga.SIZE) == (0xB8000, 0x8000)


def test_text_memory_reads_back_in_every_size():
    cga = Cga()
    cga.write(0x10, 4, 0x0741_0742)
    assert cga.read(0x10, 2) == 0x0742 and cga.read(0x12, 1) == 0x41
    assert cga.peek(0x10, 4, 0) == 0x0741_0742
    cga.write(0x11, 1, 0x1F)
    assert cga.read(0x10, 4) == 0x0741_1F42


def test_text_renders_rows_from_cells():
    cga = Cga()
    for i, ch in enumerate(b"$ ls"):
        cga.write(2 * (80 + i), 2, ch | 0x0700)
    assert cga.text().splitlines()[:2] == ["", "$ ls"]
    assert len(cga.text().split("\n")) == 25
    assert cga.cell(1, 0) == ("$", 0x07)


def test_text_is_code_page_437():
    cga = Cga()
    cga.write(0, 1, 0xB0)  # light shade
    assert cga.text().startswith("\u2591")


def test_cursor_registers_14_and_15_read_back():
    cga = Cga()
    for ch in "hi\nxv6":
        xv6_cgaputc(cga, ch)
    assert cga.cursor == 83
    assert cga.text().splitlines()[:2] == ["hi", "xv6"]


def test_cursor_high_register_is_six_bits():
    cga = Cga()
    cga.write_port(C.INDEX, 1, 14)
    cga.write_port(C.DATA, 1, 0xFF)
    assert cga.read_port(C.DATA, 1) == 0x3F


def test_index_register_reads_back_and_write_only_registers_read_zero():
    cga = Cga()
    cga.write_port(C.INDEX, 1, 1)
    cga.write_port(C.DATA, 1, 80)  # horizontal displayed: write-only on a 6845
    assert cga.read_port(C.INDEX, 1) == 1
    assert cga.read_port(C.DATA, 1) == 0 and cga.registers[1] == 80


def test_start_address_scrolls_the_rendered_screen():
    cga = Cga()
    cga.write(2 * 80, 2, ord("B") | 0x0700)
    cga.write_port(C.INDEX, 1, 13)
    cga.write_port(C.DATA, 1, 80)
    assert cga.text().startswith("B")


def test_status_port_alternates_retrace():
    cga = Cga()
    first, second = cga.read_port(C.STATUS, 1), cga.read_port(C.STATUS, 1)
    assert first & 0x08 != second & 0x08


def test_state_round_trip():
    cga = Cga()
    for ch in "$ echo hi\n":
        xv6_cgaputc(cga, ch)
    cga.write_port(C.INDEX, 1, 15)
    cga2 = Cga()
    cga2.set_state(through_json(cga.state()))
    assert cga2.text() == cga.text() and cga2.cursor == cga.cursor
    assert fields(cga2) == fields(cga)
    assert cga2.read_port(C.DATA, 1) == cga.read_port(C.DATA, 1)
