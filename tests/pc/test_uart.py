"""The 16550A's registers, transmit, receive and interrupts (PC16550D section 8)."""

from __future__ import annotations

from tests.pc.helpers import Lines, fields, through_json
from vmi.pc import uart as U
from vmi.pc.uart import Uart16550

COM1 = 0x3F8


def uart():
    out = bytearray()
    lines = Lines()
    return Uart16550(output=out.append, irq=lines), out, lines


def xv6_uartinit(u):
    """uart.c's uartinit, port by port."""
    u.write_port(COM1 + 2, 1, 0)
    u.write_port(COM1 + 3, 1, 0x80)
    u.write_port(COM1 + 0, 1, 115200 // 9600)
    u.write_port(COM1 + 1, 1, 0)
    u.write_port(COM1 + 3, 1, 0x03)
    u.write_port(COM1 + 4, 1, 0)
    u.write_port(COM1 + 1, 1, 0x01)
    assert u.read_port(COM1 + 5, 1) != 0xFF
    u.read_port(COM1 + 2, 1)
    u.read_port(COM1 + 0, 1)


def test_ports():
    assert Uart16550().PORTS == tuple(range(0x3F8, 0x400))
    assert Uart16550(base=0x2F8).PORTS[0] == 0x2F8


def test_xv6_init_then_putc_transmits():
    u, out, lines = uart()
    xv6_uartinit(u)
    for ch in b"xv6...\n":
        assert u.read_port(COM1 + 5, 1) & U.LSR_THRE
        u.write_port(COM1, 1, ch)
    assert bytes(out) == b"xv6...\n"
    assert lines.calls == []  # only receive interrupts are enabled
    assert u.divisor == 12 and u.lcr == 0x03


def test_lsr_after_reset_says_transmitter_empty_and_no_data():
    u, _, _ = uart()
    assert u.read_port(COM1 + 5, 1) == U.LSR_THRE | U.LSR_TEMT


def test_dlab_switches_ports_0_and_1_to_the_divisor():
    u, out, _ = uart()
    u.write_port(COM1 + 3, 1, 0x83)
    u.write_port(COM1 + 0, 1, 0x34)
    u.write_port(COM1 + 1, 1, 0x12)
    assert u.read_port(COM1 + 0, 1) == 0x34 and u.read_port(COM1 + 1, 1) == 0x12
    assert out == b"" and u.ier == 0
    u.write_port(COM1 + 3, 1, 0x03)
    assert u.read_port(COM1 + 1, 1) == 0 and u.divisor == 0x1234
    assert u.read_port(COM1 + 3, 1) == 0x03


def test_scratch_register_holds_a_byte():
    u, _, _ = uart()
    u.write_port(COM1 + 7, 1, 0x5A)
    assert u.read_port(COM1 + 7, 1) == 0x5A


def test_uartgetc_reads_fed_bytes_in_order():
    u, _, _ = uart()
    xv6_uartinit(u)
    assert not u.read_port(COM1 + 5, 1) & U.LSR_DR
    u.feed(b"ls\n")
    got = []
    while u.read_port(COM1 + 5, 1) & U.LSR_DR:
        got.append(u.read_port(COM1, 1))
    assert bytes(got) == b"ls\n"


def test_receive_interrupt_rises_with_data_and_falls_when_read():
    u, _, lines = uart()
    xv6_uartinit(u)
    u.feed(b"ab")
    assert lines.calls == [(4, True)]
    assert u.read_port(COM1 + 2, 1) == U.IIR_RDA
    assert u.read_port(COM1, 1) == ord("a")
    assert lines.level[4]  # 'b' is there: still pending
    assert u.read_port(COM1, 1) == ord("b")
    assert lines.calls == [(4, True), (4, False)]
    assert u.read_port(COM1 + 2, 1) == U.IIR_NONE


def test_no_receive_interrupt_while_ier_disables_it():
    u, _, lines = uart()
    u.feed(b"x")
    assert lines.calls == [] and u.read_port(COM1 + 5, 1) & U.LSR_DR
    u.write_port(COM1 + 1, 1, U.IER_RDA)
    assert lines.calls == [(4, True)]


def test_thr_empty_interrupt_on_enable_and_after_each_byte():
    u, _, lines = uart()
    u.write_port(COM1 + 1, 1, U.IER_THRE)
    assert lines.calls == [(4, True)]
    assert u.read_port(COM1 + 2, 1) == U.IIR_THRE  # reading IIR clears it
    assert lines.calls == [(4, True), (4, False)]
    u.write_port(COM1, 1, ord("A"))
    assert lines.rises(4) == 2


def test_thr_write_while_thre_pending_makes_a_fresh_edge():
    u, _, lines = uart()
    u.write_port(COM1 + 1, 1, U.IER_THRE)
    u.write_port(COM1, 1, ord("A"))
    u.write_port(COM1, 1, ord("B"))
    assert lines.calls == [(4, True), (4, False), (4, True), (4, False), (4, True)]


def test_received_data_outranks_thr_empty():
    u, _, _ = uart()
    u.write_port(COM1 + 1, 1, U.IER_RDA | U.IER_THRE)
    u.feed(b"z")
    assert u.read_port(COM1 + 2, 1) == U.IIR_RDA
    u.read_port(COM1, 1)
    assert u.read_port(COM1 + 2, 1) == U.IIR_THRE


def test_without_fifo_one_byte_waits_in_the_receiver():
    u, _, _ = uart()
    u.feed(b"abc")
    assert list(u.rx) == [ord("a")] and len(u.input) == 2


def test_fifo_mode_iir_bits_trigger_level_and_timeout():
    u, _, _ = uart()
    u.write_port(COM1 + 2, 1, 0x81)  # FIFO on, trigger at 8
    u.write_port(COM1 + 1, 1, U.IER_RDA)
    u.feed(b"abc")
    assert u.read_port(COM1 + 2, 1) == 0xC0 | U.IIR_TIMEOUT
    u.feed(b"defgh")
    assert u.read_port(COM1 + 2, 1) == 0xC0 | U.IIR_RDA
    assert len(u.rx) == 8


def test_fcr_receiver_reset_drops_the_fifo():
    u, _, _ = uart()
    u.write_port(COM1 + 2, 1, 0x01)
    u.feed(b"abc")
    u.write_port(COM1 + 2, 1, 0x03)
    assert not u.read_port(COM1 + 5, 1) & U.LSR_DR


def test_loopback_returns_what_is_sent_and_mirrors_mcr_in_msr():
    u, out, _ = uart()
    u.write_port(COM1 + 4, 1, U.MCR_LOOP | 0x0F)
    u.write_port(COM1, 1, 0x42)
    assert out == b"" and u.read_port(COM1, 1) == 0x42
    assert u.read_port(COM1 + 6, 1) & 0xF0 == 0xF0
    u.write_port(COM1 + 4, 1, U.MCR_LOOP | 0x01)  # DTR -> DSR only
    assert u.read_port(COM1 + 6, 1) & 0xF0 == 0x20


def test_msr_reports_a_connected_terminal():
    u, _, _ = uart()
    assert u.read_port(COM1 + 6, 1) == 0xB0


def test_state_round_trip_keeps_queued_input():
    u, _, _ = uart()
    xv6_uartinit(u)
    u.write_port(COM1 + 7, 1, 9)
    u.feed(b"echo hi\n")
    u.read_port(COM1, 1)
    u2, _, lines2 = uart()
    u2.set_state(through_json(u.state()))
    assert u2.state() == u.state() and fields(u2) == fields(u)
    got = []
    while u2.read_port(COM1 + 5, 1) & U.LSR_DR:
        got.append(u2.read_port(COM1, 1))
    assert bytes(got) == b"cho hi\n"
