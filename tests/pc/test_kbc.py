"""The keyboard controller: status, scancodes with IRQ 1, commands, the A20 gates."""

from __future__ import annotations

from tests.pc.helpers import Lines, fields, through_json
from vmi.pc import kbc as K
from vmi.pc.kbc import KeyboardController


def kbc(**kwargs):
    lines = Lines()
    gate: list[bool] = []
    resets: list[int] = []
    k = KeyboardController(irq=lines, a20=gate.append, reset=lambda: resets.append(1),
                           **kwargs)
    return k, lines, gate, resets


def wait_not_busy(k):
    """bootasm.S's seta20 loops: wait until the input buffer is empty."""
    while k.read_port(K.STATUS, 1) & K.IBF:
        pass


def test_xv6_bootasm_enables_a20_through_the_output_port():
    k, _, gate, resets = kbc()
    assert not k.a20_enabled
    wait_not_busy(k)
    k.write_port(K.COMMAND, 1, 0xD1)
    wait_not_busy(k)
    k.write_port(K.DATA, 1, 0xDF)
    assert gate == [True] and k.a20_enabled and resets == []


def test_output_port_reads_back_with_the_a20_bit():
    k, _, gate, _ = kbc()
    k.write_port(K.COMMAND, 1, 0xD1)
    k.write_port(K.DATA, 1, 0x03)
    k.write_port(K.COMMAND, 1, 0xD0)
    assert k.read_port(K.DATA, 1) & 0x03 == 0x03
    k.write_port(K.COMMAND, 1, 0xD1)
    k.write_port(K.DATA, 1, 0x01)
    assert gate == [True, False]


def test_port_92_fast_a20_and_reset():
    k, _, gate, resets = kbc()
    k.write_port(K.PORT_A, 1, 0x02)
    assert gate == [True] and k.read_port(K.PORT_A, 1) & 0x02
    k.write_port(K.PORT_A, 1, 0x00)
    assert gate == [True, False]
    k.write_port(K.PORT_A, 1, 0x01)
    assert resets == [1]


def test_a20_is_on_while_either_gate_is():
    k, _, gate, _ = kbc()
    k.write_port(K.PORT_A, 1, 0x02)
    k.write_port(K.COMMAND, 1, 0xDF)
    k.write_port(K.PORT_A, 1, 0x00)
    assert gate == [True] and k.a20_enabled
    k.write_port(K.COMMAND, 1, 0xDD)
    assert gate == [True, False]


def test_a20_may_start_on_without_a_callback():
    k, _, gate, _ = kbc(output_port=0x03)
    assert k.a20_enabled and gate == []


def test_output_port_reset_bit_resets_the_system():
    k, _, _, resets = kbc()
    k.write_port(K.COMMAND, 1, 0xD1)
    k.write_port(K.DATA, 1, 0x02)
    assert resets == [1]
    k.write_port(K.COMMAND, 1, 0xFE)
    assert resets == [1, 1]


def test_status_after_reset():
    k, _, _, _ = kbc()
    assert k.read_port(K.STATUS, 1) == K.SYSTEM | K.UNLOCKED
    k.write_port(K.COMMAND, 1, 0xAE)
    assert k.read_port(K.STATUS, 1) & K.CMD


def test_scancodes_arrive_one_at_a_time_with_irq1():
    k, lines, _, _ = kbc()
    k.feed(bytes([0x1E, 0x9E]))  # 'a' pressed, released
    assert k.read_port(K.STATUS, 1) & K.OBF
    assert lines.calls == [(1, True)]
    assert k.read_port(K.DATA, 1) == 0x1E
    assert lines.calls == [(1, True), (1, False), (1, True)]  # a fresh edge for the next
    assert k.read_port(K.DATA, 1) == 0x9E
    assert not k.read_port(K.STATUS, 1) & K.OBF
    assert not lines.level[1]


def test_command_byte_int_bit_gates_irq1():
    k, lines, _, _ = kbc()
    k.write_port(K.COMMAND, 1, 0x60)
    k.write_port(K.DATA, 1, 0x44)  # interrupts off
    k.feed(b"\x10")
    assert lines.calls == [] and k.read_port(K.STATUS, 1) & K.OBF
    k.write_port(K.COMMAND, 1, 0x20)
    assert k.read_port(K.DATA, 1) == 0x10  # the scancode was already in the buffer
    assert k.read_port(K.DATA, 1) == 0x44


def test_disabled_keyboard_holds_its_scancodes():
    k, _, _, _ = kbc()
    k.write_port(K.COMMAND, 1, 0xAD)
    k.feed(b"\x1C")
    assert not k.read_port(K.STATUS, 1) & K.OBF
    k.write_port(K.COMMAND, 1, 0xAE)
    assert k.read_port(K.DATA, 1) == 0x1C


def test_controller_self_tests():
    k, _, _, _ = kbc()
    k.write_port(K.COMMAND, 1, 0xAA)
    assert k.read_port(K.DATA, 1) == 0x55
    k.write_port(K.COMMAND, 1, 0xAB)
    assert k.read_port(K.DATA, 1) == 0x00


def test_keyboard_commands_are_acknowledged():
    k, _, _, _ = kbc()
    k.write_port(K.DATA, 1, 0xFF)  # reset
    assert [k.read_port(K.DATA, 1) for _ in range(2)] == [K.ACK, 0xAA]
    k.write_port(K.DATA, 1, 0xED)  # LEDs, then their byte
    k.write_port(K.DATA, 1, 0x07)
    assert [k.read_port(K.DATA, 1) for _ in range(2)] == [K.ACK, K.ACK]
    k.write_port(K.DATA, 1, 0xF2)
    assert [k.read_port(K.DATA, 1) for _ in range(3)] == [K.ACK, 0xAB, 0x83]
    k.write_port(K.DATA, 1, 0xEE)
    assert k.read_port(K.DATA, 1) == 0xEE


def test_replies_go_before_queued_scancodes():
    k, _, _, _ = kbc()
    k.write_port(K.COMMAND, 1, 0xAD)
    k.feed(b"\x02")
    k.write_port(K.COMMAND, 1, 0xAA)
    k.write_port(K.COMMAND, 1, 0xAE)
    assert [k.read_port(K.DATA, 1) for _ in range(2)] == [0x55, 0x02]


def test_state_round_trip():
    k, _, _, _ = kbc()
    k.write_port(K.COMMAND, 1, 0xD1)
    k.write_port(K.DATA, 1, 0x03)
    k.feed(b"\x1E\x9E\x30")
    k.read_port(K.DATA, 1)
    k.write_port(K.COMMAND, 1, 0x60)  # awaiting its parameter
    k2, _, gate2, _ = kbc()
    k2.set_state(through_json(k.state()))
    assert k2.state() == k.state() and gate2 == [] and fields(k2) == fields(k)
    k.write_port(K.DATA, 1, 0x45)
    k2.write_port(K.DATA, 1, 0x45)
    assert [k2.read_port(K.DATA, 1) for _ in range(2)] == \
        [k.read_port(K.DATA, 1) for _ in range(2)]
