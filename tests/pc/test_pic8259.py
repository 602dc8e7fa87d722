"""The 8259A pair: initialization, masks, priorities, EOIs, cascade (8259A datasheet)."""

from __future__ import annotations

from tests.pc.helpers import fields, through_json
from vmi.pc.pic8259 import PicPair


def pair(record=None, master_base=0x08, slave_base=0x70, icw4=0x01):
    """A pair initialized as a BIOS does (the PC's cascade on IR2)."""
    p = PicPair(intr=record.append if record is not None else PicPair().intr)
    for cmd, data, base, icw3 in ((0x20, 0x21, master_base, 0x04),
                                  (0xA0, 0xA1, slave_base, 0x02)):
        p.write_port(cmd, 1, 0x11)  # ICW1: edge, cascade, ICW4 needed
        p.write_port(data, 1, base)  # ICW2
        p.write_port(data, 1, icw3)  # ICW3
        p.write_port(data, 1, icw4)  # ICW4
    return p


def test_init_sequence_sets_the_base_and_clears_the_mask():
    p = PicPair()
    p.write_port(0x21, 1, 0xFF)
    p.write_port(0x20, 1, 0x11)
    assert p.master.imr == 0  # ICW1 clears the IMR
    p.write_port(0x21, 1, 0x48)
    p.write_port(0x21, 1, 0x04)
    p.write_port(0x21, 1, 0x01)
    assert p.master.base == 0x48 and p.master.icw3 == 0x04 and p.master.icw4 == 0x01
    p.write_port(0x21, 1, 0xFB)  # after the ICWs, the data port is OCW1
    assert p.read_port(0x21, 1) == 0xFB and p.master.base == 0x48


def test_single_mode_without_icw4_takes_only_icw2():
    p = PicPair()
    p.write_port(0x20, 1, 0x12)  # ICW1: SNGL, no IC4
    p.write_port(0x21, 1, 0x30)
    p.write_port(0x21, 1, 0x0F)  # already OCW1
    assert p.master.base == 0x30 and p.master.imr == 0x0F


def test_vector_is_base_plus_line_and_enters_service():
    seen = []
    p = pair(seen)
    p.irq(3, True)
    assert seen == [True] and p.pending()
    assert p.acknowledge() == 0x0B
    assert p.master.isr == 1 << 3 and p.master.irr == 0
    assert seen == [True, False]


def test_ocw1_masks_a_line():
    p = pair()
    p.write_port(0x21, 1, 1 << 5)
    p.irq(5, True)
    assert not p.pending()
    p.write_port(0x21, 1, 0)
    assert p.pending() and p.acknowledge() == 0x0D


def test_lower_line_number_has_priority_and_blocks_lower_ones():
    p = pair()
    p.irq(3, True)
    p.irq(1, True)
    assert p.acknowledge() == 0x09
    assert not p.pending()  # IRQ 3 waits behind IRQ 1 in service
    p.irq(0, True)
    assert p.acknowledge() == 0x08  # a higher priority nests
    p.write_port(0x20, 1, 0x20)  # non-specific EOI: the highest in service (0)
    assert p.master.isr == 1 << 1
    p.write_port(0x20, 1, 0x20)
    assert p.acknowledge() == 0x0B


def test_specific_eoi_clears_the_named_line():
    p = pair()
    p.irq(1, True)
    p.irq(4, True)
    p.acknowledge()
    p.write_port(0x20, 1, 0x68)  # OCW3: special mask mode, so IRQ 4 nests
    p.acknowledge()
    assert p.master.isr == 0b10010
    p.write_port(0x20, 1, 0x60 | 4)
    assert p.master.isr == 0b00010


def test_ocw3_selects_irr_or_isr_for_reading():
    p = pair()
    p.write_port(0x21, 1, 0xFF)
    p.irq(6, True)
    assert p.read_port(0x20, 1) == 1 << 6  # IRR after initialization
    p.write_port(0x21, 1, 0)
    p.acknowledge()
    p.write_port(0x20, 1, 0x0B)  # OCW3: read ISR
    assert p.read_port(0x20, 1) == 1 << 6
    p.write_port(0x20, 1, 0x0A)  # OCW3: read IRR
    assert p.read_port(0x20, 1) == 0


def test_slave_cascades_through_ir2():
    p = pair()
    p.irq(9, True)
    assert p.pending() and p.master.irr == 1 << 2
    assert p.acknowledge() == 0x71
    assert p.master.isr == 1 << 2 and p.slave.isr == 1 << 1
    p.irq(12, True)
    p.write_port(0xA0, 1, 0x20)
    p.write_port(0x20, 1, 0x20)
    assert p.acknowledge() == 0x74  # the slave's next request arrives as a new edge


def test_rotate_on_eoi_makes_the_served_line_lowest():
    p = pair()
    p.irq(2 + 1, True)
    p.acknowledge()
    p.write_port(0x20, 1, 0xA0)  # rotate on non-specific EOI
    assert p.master.lowest == 3
    p.irq(1, True)
    p.irq(5, True)
    assert p.acknowledge() == 0x0D  # 4 is now the highest priority, then 5


def test_set_priority_command():
    p = pair()
    p.write_port(0x20, 1, 0xC0 | 5)  # IR5 lowest, IR6 highest
    p.irq(7, True)
    p.irq(0, True)
    assert p.acknowledge() == 0x0F


def test_automatic_eoi_leaves_nothing_in_service():
    p = pair(icw4=0x03)
    p.irq(4, True)
    assert p.acknowledge() == 0x0C
    assert p.master.isr == 0


def test_level_triggered_irr_follows_the_line():
    p = PicPair()
    p.write_port(0x20, 1, 0x1B)  # ICW1: LTIM, SNGL, IC4
    p.write_port(0x21, 1, 0x20)
    p.write_port(0x21, 1, 0x01)
    p.irq(3, True)
    assert p.master.irr == 1 << 3
    p.irq(3, False)
    assert p.master.irr == 0 and not p.pending()


def test_edge_request_is_latched_until_acknowledged():
    p = pair()
    p.irq(3, True)
    p.irq(3, False)
    assert p.pending() and p.acknowledge() == 0x0B


def test_nothing_to_serve_gives_ir7s_vector():
    p = pair()
    assert p.acknowledge() == 0x0F
    assert p.master.isr == 0


def test_poll_command_reads_and_serves_the_highest_request():
    p = pair()
    p.irq(5, True)
    p.write_port(0x20, 1, 0x0C)  # OCW3: poll
    assert p.read_port(0x20, 1) == 0x80 | 5
    assert p.master.isr == 1 << 5


def test_xv6_masks_both_chips():
    seen = []
    p = pair(seen)
    p.write_port(0x21, 1, 0xFF)
    p.write_port(0xA1, 1, 0xFF)
    for line in range(16):
        p.irq(line, True)
    assert seen == [] and not p.pending()


def test_bundled_kernel_eoi_without_initialization():
    """The bundled kernel never initializes the 8259: IRQ 0 is vector 0x20 and
    its EOI (0x20 to port 0x20) ends it."""
    p = PicPair()
    p.irq(0, True)
    assert p.acknowledge() == 0x20
    p.irq(0, False)
    p.irq(0, True)
    assert not p.pending()  # still in service
    p.write_port(0x20, 1, 0x20)
    assert p.master.eois == 1 and p.acknowledge() == 0x20


def test_state_round_trip():
    p = pair()
    p.write_port(0x21, 1, 0x10)
    p.irq(9, True)
    p.acknowledge()
    p.irq(3, True)
    p.write_port(0x20, 1, 0x0B)
    p2 = PicPair()
    p2.set_state(through_json(p.state()))
    assert p2.state() == p.state()
    assert fields(p2.master) == fields(p.master) and fields(p2.slave) == fields(p.slave)
    assert p2.read_port(0x20, 1) == p.read_port(0x20, 1)
    assert p2.acknowledge() == p.acknowledge()
