"""The IOAPIC's indirect registers, redirection table and pins (82093AA)."""

from __future__ import annotations

from tests.pc.helpers import fields, through_json
from vmi.pc import ioapic as IO
from vmi.pc.ioapic import IoApic
from vmi.pc.lapic import ApicBus, LocalApic


class Messages:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def __call__(self, destination, vector, logical, level, mode):
        self.sent.append((destination, vector, logical, level, mode))


def reg_write(io, index, value):
    io.write(IO.IOREGSEL, 4, index)
    io.write(IO.IOWIN, 4, value)


def reg_read(io, index):
    io.write(IO.IOREGSEL, 4, index)
    return io.read(IO.IOWIN, 4)


def test_window_constants():
    assert (IoApic.BASE, IoApic.SIZE) == (0xFEC0_0000, 0x1000)


def test_ioregsel_reads_back():
    io = IoApic()
    io.write(IO.IOREGSEL, 4, 0x12)
    assert io.read(IO.IOREGSEL, 4) == 0x12


def test_id_register_holds_bits_27_24():
    io = IoApic(apic_id=2)
    assert reg_read(io, IO.REG_ID) == 2 << 24
    reg_write(io, IO.REG_ID, 0xFF00_0000)
    assert reg_read(io, IO.REG_ID) == 0xF << 24
    assert reg_read(io, IO.REG_ARB) == 0xF << 24


def test_version_says_24_entries():
    io = IoApic()
    assert reg_read(io, IO.REG_VERSION) == 0x0017_0011
    assert (reg_read(io, IO.REG_VERSION) >> 16) & 0xFF == 23  # xv6's maxintr
    reg_write(io, IO.REG_VERSION, 0)
    assert reg_read(io, IO.REG_VERSION) == 0x0017_0011


def test_entries_are_masked_after_reset():
    io = IoApic()
    for pin in range(24):
        assert reg_read(io, 0x10 + 2 * pin) == IO.MASKED
        assert reg_read(io, 0x11 + 2 * pin) == 0


def test_entry_fields_and_read_only_bits():
    io = IoApic()
    reg_write(io, 0x10 + 2 * 5, 0xFFFF_FFFF)
    assert reg_read(io, 0x10 + 2 * 5) == IO.LOW_WRITABLE  # no delivery status, remote IRR
    reg_write(io, 0x11 + 2 * 5, 0xFFFF_FFFF)
    assert reg_read(io, 0x11 + 2 * 5) == 0xFF00_0000
    entry = io.redirection(5)
    assert entry["vector"] == 0xFF and entry["destination"] == 0xFF
    assert entry["masked"] and entry["level"] and entry["logical"]


def test_rising_edge_on_an_unmasked_pin_sends_its_message_once():
    sent = Messages()
    io = IoApic(deliver=sent)
    reg_write(io, 0x10 + 2 * 14, 32 + 14)  # xv6's ioapicenable(IRQ_IDE, 1)
    reg_write(io, 0x11 + 2 * 14, 1 << 24)
    io.set_irq(14, True)
    io.set_irq(14, True)  # still high: no new edge
    assert sent.sent == [(1, 46, False, False, 0)]
    io.set_irq(14, False)
    io.set_irq(14, True)
    assert len(sent.sent) == 2


def test_edge_on_a_masked_pin_is_lost():
    sent = Messages()
    io = IoApic(deliver=sent)
    reg_write(io, 0x10 + 2 * 4, IO.MASKED | 36)
    io.set_irq(4, True)
    reg_write(io, 0x10 + 2 * 4, 36)  # unmasking does not replay the edge
    assert sent.sent == []


def test_level_pin_sets_remote_irr_until_eoi_then_resends():
    sent = Messages()
    io = IoApic(deliver=sent)
    reg_write(io, 0x10 + 2 * 9, IO.LEVEL | 0x49)
    io.set_irq(9, True)
    assert sent.sent == [(0, 0x49, False, True, 0)]
    assert io.redirection(9)["remote_irr"]
    io.set_irq(9, True)
    assert len(sent.sent) == 1  # remote IRR holds it off
    io.eoi(0x49)
    assert len(sent.sent) == 2  # still asserted: sent again
    io.set_irq(9, False)
    io.eoi(0x49)
    assert len(sent.sent) == 2 and not io.redirection(9)["remote_irr"]


def test_unmasking_an_asserted_level_pin_sends_it():
    sent = Messages()
    io = IoApic(deliver=sent)
    reg_write(io, 0x10 + 2 * 10, IO.MASKED | IO.LEVEL | 0x4A)
    io.set_irq(10, True)
    assert sent.sent == []
    reg_write(io, 0x10 + 2 * 10, IO.LEVEL | 0x4A)
    assert len(sent.sent) == 1


def test_through_the_apic_bus_to_the_destination_cpu():
    bus = ApicBus()
    apics = [bus.attach(LocalApic(apic_id=i)) for i in range(2)]
    io = IoApic(deliver=bus.deliver_io)
    bus.eoi = io.eoi
    reg_write(io, 0x10 + 2 * 1, 33)
    reg_write(io, 0x11 + 2 * 1, 1 << 24)
    io.irq(1, True)
    assert apics[1].irr == 1 << 33 and apics[0].irr == 0


def test_level_eoi_round_trip_through_the_local_apic():
    bus = ApicBus()
    apic = bus.attach(LocalApic(apic_id=0))
    apic.write(0xF0, 4, 0x1FF)
    io = IoApic(deliver=bus.deliver_io)
    bus.eoi = io.eoi
    reg_write(io, 0x10 + 2 * 11, IO.LEVEL | 0x4B)
    io.set_irq(11, True)
    assert apic.acknowledge() == 0x4B
    io.set_irq(11, False)
    apic.write(0xB0, 4, 0)  # EOI: a level vector, so the IOAPIC hears it
    assert not io.redirection(11)["remote_irr"]


def test_undefined_registers_and_offsets_read_zero():
    io = IoApic()
    assert reg_read(io, 0x03) == 0 and reg_read(io, 0x40) == 0
    assert io.read(0x20, 4) == 0


def test_byte_access_to_the_window():
    io = IoApic(apic_id=5)
    io.write(IO.IOREGSEL, 1, IO.REG_ID)
    assert io.read(IO.IOWIN + 3, 1) == 5


def test_state_round_trip():
    io = IoApic(apic_id=1)
    reg_write(io, 0x10 + 2 * 3, IO.LEVEL | 0x43)
    reg_write(io, 0x11 + 2 * 3, 0x0200_0000)
    io.set_irq(3, True)
    io.write(IO.IOREGSEL, 4, 0x17)
    io2 = IoApic()
    io2.set_state(through_json(io.state()))
    assert io2.state() == io.state() and fields(io2) == fields(io)
    assert io2.redirection(3) == io.redirection(3)
    assert io2.peek(IO.IOWIN, 4) == io.peek(IO.IOWIN, 4)
