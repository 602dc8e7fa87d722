"""The local APIC's registers, timer, priorities and IPIs (SDM Vol. 3A ch. 10)."""

from __future__ import annotations

import pytest

from tests.pc.helpers import Clock, fields, through_json
from vmi.pc import lapic as L
from vmi.pc.lapic import ApicBus, LocalApic


def machine(cpus=2, clock=None):
    """A bus with ``cpus`` APICs (IDs 0..n-1) and the board's callbacks recorded."""
    clock = clock or Clock()
    events = []
    bus = ApicBus(init=lambda i: events.append(("init", i)),
                  startup=lambda i, a: events.append(("startup", i, a)),
                  eoi=lambda v: events.append(("eoi", v)))
    for i in range(cpus):
        bus.attach(LocalApic(apic_id=i, clock=clock))
    return bus, clock, events


def enabled(apic):
    apic.write(L.SVR, 4, L.SVR_ENABLE | 0xFF)
    return apic


def test_id_reads_in_bits_31_24_and_is_writable():
    a = LocalApic(apic_id=3)
    assert a.read(L.ID, 4) == 3 << 24
    a.write(L.ID, 4, 7 << 24)
    assert a.read(L.ID, 4) == 7 << 24


def test_version_reports_six_lvt_entries():
    # xv6's lapicinit masks PCINT only when max LVT >= 4
    a = LocalApic()
    assert a.read(L.VERSION, 4) == 0x0005_0014
    a.write(L.VERSION, 4, 0)
    assert a.read(L.VERSION, 4) == 0x0005_0014


def test_byte_read_takes_its_byte_of_the_register():
    a = LocalApic(apic_id=0x12)
    assert a.read(L.ID + 3, 1) == 0x12
    assert a.read(L.VERSION + 2, 2) == 0x0005


def test_reset_state_masks_lvt_and_disables_the_apic():
    a = LocalApic()
    assert a.read(L.SVR, 4) == 0xFF
    for lvt in L.LVT_OFFSETS:
        assert a.read(lvt, 4) == L.LVT_MASKED
    assert a.read(L.DFR, 4) == 0xFFFF_FFFF


def test_software_disabled_apic_keeps_lvt_masked():
    a = LocalApic()
    a.write(L.LVT_TIMER, 4, 0x20)
    assert a.read(L.LVT_TIMER, 4) == L.LVT_MASKED | 0x20
    enabled(a).write(L.LVT_TIMER, 4, 0x20)
    assert a.read(L.LVT_TIMER, 4) == 0x20
    a.write(L.SVR, 4, 0xFF)  # disabling masks every entry again
    assert a.read(L.LVT_TIMER, 4) & L.LVT_MASKED


def test_software_disabled_apic_still_accepts_fixed_interrupts():
    a = LocalApic()  # SVR 0xFF after reset: disabled
    a.accept(0x40)
    assert a.irr == 1 << 0x40 and a.pending_vector() == 0x40


def test_lvt_read_only_bits_ignore_writes():
    a = enabled(LocalApic())
    a.write(L.LVT_LINT0, 4, 0xFFFF_FFFF)
    assert a.read(L.LVT_LINT0, 4) == 0x1A7FF  # delivery status, remote IRR stay 0
    a.write(L.LVT_ERROR, 4, 0xFFFF_FFFF)
    assert a.read(L.LVT_ERROR, 4) == 0x100FF


def test_tpr_holds_a_byte():
    a = LocalApic()
    a.write(L.TPR, 4, 0x1234)
    assert a.read(L.TPR, 4) == 0x34


def test_ppr_is_tpr_or_the_in_service_class():
    a = enabled(LocalApic())
    a.write(L.TPR, 4, 0x35)
    assert a.read(L.PPR, 4) == 0x35
    a.accept(0x61)
    assert a.acknowledge() == 0x61
    assert a.read(L.PPR, 4) == 0x60
    a.write(L.TPR, 4, 0x72)
    assert a.read(L.PPR, 4) == 0x72


def test_highest_vector_is_taken_first_and_lower_classes_wait_for_eoi():
    a = enabled(LocalApic())
    a.accept(0x31)
    a.accept(0x40)
    assert a.acknowledge() == 0x40
    assert a.isr == 1 << 0x40 and a.irr == 1 << 0x31
    assert a.pending_vector() is None  # class 3 below class 4 in service
    a.write(L.EOI, 4, 0)
    assert a.isr == 0
    assert a.pending_vector() == 0x31


def test_same_class_waits_for_eoi_too():
    a = enabled(LocalApic())
    a.accept(0x40)
    a.acknowledge()
    a.accept(0x4F)  # same class as the one in service: not above it
    assert a.pending_vector() is None


def test_tpr_blocks_vectors_at_or_below_its_class():
    a = enabled(LocalApic())
    a.accept(0x40)
    a.write(L.TPR, 4, 0x40)
    assert a.pending_vector() is None
    a.write(L.TPR, 4, 0x3F)
    assert a.pending_vector() == 0x40


def test_nothing_deliverable_gives_the_spurious_vector_without_service():
    a = enabled(LocalApic())
    a.write(L.SVR, 4, L.SVR_ENABLE | 0x3F)
    assert a.acknowledge() == 0x3F
    assert a.isr == 0


def test_irr_isr_tmr_registers_show_their_bits():
    a = enabled(LocalApic())
    a.accept(0x45, level=True)  # 0x45 = 69: register 2, bit 5
    assert a.read(L.IRR + 0x20, 4) == 1 << 5
    assert a.read(L.TMR + 0x20, 4) == 1 << 5
    assert a.read(L.IRR + 0x10, 4) == 0
    a.acknowledge()
    assert a.read(L.ISR + 0x20, 4) == 1 << 5
    assert a.read(L.IRR + 0x20, 4) == 0


def test_eoi_of_a_level_vector_is_broadcast_to_the_ioapic():
    bus, _, events = machine(1)
    a = enabled(bus.apics[0])
    a.accept(0x41, level=True)
    a.accept(0x42)
    a.acknowledge()  # 0x42, edge
    a.write(L.EOI, 4, 0)
    assert events == []
    a.acknowledge()  # 0x41, level
    a.write(L.EOI, 4, 0)
    assert events == [("eoi", 0x41)]


def test_esr_shows_errors_only_after_a_write():
    a = enabled(LocalApic())
    a.write(L.ICR_LOW, 4, 0x05)  # fixed IPI with illegal vector 5
    assert a.read(L.ESR, 4) == 0
    a.write(L.ESR, 4, 0)
    assert a.read(L.ESR, 4) == L.ESR_SEND_ILLEGAL_VECTOR
    a.write(L.ESR, 4, 0)  # a second write: nothing new since the first
    assert a.read(L.ESR, 4) == 0


def test_illegal_received_vector_is_an_error_not_an_interrupt():
    a = enabled(LocalApic())
    a.accept(0x0E)
    assert a.irr == 0
    a.write(L.ESR, 4, 0)
    assert a.read(L.ESR, 4) == L.ESR_RECEIVE_ILLEGAL_VECTOR


def test_reserved_register_read_is_an_illegal_register_address_error():
    a = enabled(LocalApic())
    assert a.read(0x40, 4) == 0
    a.write(L.ESR, 4, 0)
    assert a.read(L.ESR, 4) == L.ESR_ILLEGAL_REGISTER


def test_unmasked_error_lvt_interrupts_with_its_vector():
    a = enabled(LocalApic())
    a.write(L.LVT_ERROR, 4, 0x33)
    a.accept(0x01)
    assert a.irr == 1 << 0x33


def test_peek_has_no_side_effect():
    clock = Clock()
    a = enabled(LocalApic(clock=clock))
    a.write(L.LVT_TIMER, 4, 0x30)
    a.write(L.TIMER_DIVIDE, 4, 0xB)
    a.write(L.TIMER_INITIAL, 4, 10)
    clock.now = 50
    assert a.peek(L.TIMER_CURRENT, 4, 0) == 0
    assert a.peek(0x40, 4, 0) == 0  # reserved: no error latched by a peek
    assert a.irr == 0 and a.esr_pending == 0
    assert a.read(L.TIMER_CURRENT, 4) == 0
    assert a.irr == 1 << 0x30


# -- the timer ---------------------------------------------------------------

def timer(clock, mode=0, vector=0x30, initial=100, divide=0xB):
    a = enabled(LocalApic(clock=clock))
    a.write(L.TIMER_DIVIDE, 4, divide)
    a.write(L.LVT_TIMER, 4, mode | vector)
    a.write(L.TIMER_INITIAL, 4, initial)
    return a


@pytest.mark.parametrize("config, div", [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16),
                                         (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)])
def test_divide_configuration(config, div):
    assert L.divisor(config) == div
    clock = Clock(1000)
    a = timer(clock, initial=10, divide=config)
    assert a.next_event() == 1000 + 10 * div
    clock.now = 1000 + 3 * div
    assert a.read(L.TIMER_CURRENT, 4) == 7
    assert a.read(L.TIMER_DIVIDE, 4) == config


def test_one_shot_fires_at_its_cycle_once():
    clock = Clock(1000)
    a = timer(clock, initial=100)
    assert a.next_event() == 1100
    clock.now = 1099
    a.poll()
    assert a.irr == 0 and a.read(L.TIMER_CURRENT, 4) == 1
    clock.now = 1100
    a.poll()
    assert a.irr == 1 << 0x30
    assert a.next_event() is None
    assert a.read(L.TIMER_CURRENT, 4) == 0
    a.acknowledge()
    a.write(L.EOI, 4, 0)
    clock.now = 5000
    a.poll()
    assert a.irr == 0 and a.timer_expiries == 1


def test_periodic_timer_rearms_every_period():
    clock = Clock(1000)
    a = timer(clock, mode=L.TIMER_PERIODIC, initial=100)
    clock.now = 1100
    a.poll()
    assert a.irr == 1 << 0x30
    assert a.next_event() == 1200
    assert a.read(L.TIMER_CURRENT, 4) == 100  # reloaded
    a.acknowledge()
    a.write(L.EOI, 4, 0)
    clock.now = 1350  # a late poll: missed periods coalesce, the phase is kept
    a.poll()
    assert a.irr == 1 << 0x30
    assert a.next_event() == 1400
    assert a.read(L.TIMER_CURRENT, 4) == 50


def test_masked_timer_counts_but_never_interrupts():
    clock = Clock()
    a = timer(clock, mode=L.LVT_MASKED, initial=10)
    assert a.next_event() is None
    clock.now = 10
    a.poll()
    assert a.irr == 0
    a.write(L.LVT_TIMER, 4, 0x30)  # unmasked after the expiry: nothing delivered
    assert a.irr == 0 and a.read(L.TIMER_CURRENT, 4) == 0


def test_initial_count_zero_stops_the_timer():
    clock = Clock()
    a = timer(clock, mode=L.TIMER_PERIODIC, initial=10)
    a.write(L.TIMER_INITIAL, 4, 0)
    assert a.next_event() is None
    clock.now = 100
    a.poll()
    assert a.irr == 0


def test_divider_change_goes_on_from_the_current_count():
    clock = Clock()
    a = timer(clock, initial=100)  # divide by 1
    clock.now = 40
    a.write(L.TIMER_DIVIDE, 4, 0x0)  # now by 2: 60 counts left, 120 cycles
    assert a.read(L.TIMER_CURRENT, 4) == 60
    assert a.next_event() == 160


def test_xv6_lapicinit_sequence():
    """lapic.c's lapicinit, register by register: the timer runs periodically
    at 10,000,000 counts and the INIT level de-assert resets nobody."""
    bus, clock, events = machine(2)
    a = bus.apics[0]
    a.write(L.SVR, 4, L.SVR_ENABLE | 63)
    a.write(L.TIMER_DIVIDE, 4, 0xB)
    a.write(L.LVT_TIMER, 4, L.TIMER_PERIODIC | 32)
    a.write(L.TIMER_INITIAL, 4, 10_000_000)
    a.write(L.LVT_LINT0, 4, L.LVT_MASKED)
    a.write(L.LVT_LINT1, 4, L.LVT_MASKED)
    assert (a.read(L.VERSION, 4) >> 16) & 0xFF >= 4
    a.write(L.LVT_PERF, 4, L.LVT_MASKED)
    a.write(L.LVT_ERROR, 4, 51)
    a.write(L.ESR, 4, 0)
    a.write(L.ESR, 4, 0)
    a.write(L.EOI, 4, 0)
    a.write(L.ICR_HIGH, 4, 0)
    a.write(L.ICR_LOW, 4, 0x80000 | 0x500 | 0x8000)  # BCAST | INIT | LEVEL
    assert not a.read(L.ICR_LOW, 4) & L.DELIVERY_STATUS
    a.write(L.TPR, 4, 0)
    assert events == [] and bus.deasserts == 1
    assert a.next_event() == 10_000_000
    assert a.read(L.SVR, 4) == 0x13F


# -- IPIs --------------------------------------------------------------------

def test_fixed_ipi_to_a_physical_id():
    bus, _, _ = machine(3)
    a0, a1, a2 = (enabled(a) for a in bus.apics)
    a0.write(L.ICR_HIGH, 4, 2 << 24)
    a0.write(L.ICR_LOW, 4, 0x50)
    assert a2.irr == 1 << 0x50 and a1.irr == 0 and a0.irr == 0
    assert a0.read(L.ICR_HIGH, 4) == 2 << 24


def test_icr_reads_back_with_delivery_status_idle():
    bus, _, _ = machine(2)
    a = bus.apics[0]
    a.write(L.ICR_LOW, 4, 0xFFFF_FFFF & ~0x700)  # fixed, every other bit set
    assert a.read(L.ICR_LOW, 4) == L.ICR_WRITABLE & ~0x700
    assert not a.read(L.ICR_LOW, 4) & L.DELIVERY_STATUS


@pytest.mark.parametrize("shorthand, receivers", [(1, {0}), (2, {0, 1, 2}), (3, {1, 2})])
def test_shorthands(shorthand, receivers):
    bus, _, _ = machine(3)
    bus.apics[0].write(L.ICR_HIGH, 4, 1 << 24)  # ignored with a shorthand
    bus.apics[0].write(L.ICR_LOW, 4, shorthand << 18 | 0x61)
    assert {i for i, a in enumerate(bus.apics) if a.irr == 1 << 0x61} == receivers


def test_physical_broadcast_id_reaches_everyone():
    bus, _, _ = machine(3)
    bus.apics[1].write(L.ICR_HIGH, 4, 0xFF << 24)
    bus.apics[1].write(L.ICR_LOW, 4, 0x62)
    assert all(a.irr == 1 << 0x62 for a in bus.apics)


def test_logical_flat_destination_matches_ldr_bits():
    bus, _, _ = machine(3)
    for i, a in enumerate(bus.apics):
        a.write(L.LDR, 4, (1 << i) << 24)
    bus.apics[0].write(L.ICR_HIGH, 4, 0b110 << 24)
    bus.apics[0].write(L.ICR_LOW, 4, 1 << 11 | 0x70)
    assert [a.irr == 1 << 0x70 for a in bus.apics] == [False, True, True]


def test_lowest_priority_goes_to_the_lowest_tpr():
    bus, _, _ = machine(3)
    bus.apics[0].write(L.TPR, 4, 0x20)
    bus.apics[1].write(L.TPR, 4, 0x10)
    bus.apics[2].write(L.TPR, 4, 0x30)
    bus.apics[0].write(L.ICR_LOW, 4, 2 << 18 | 0x100 | 0x71)
    assert [a.irr != 0 for a in bus.apics] == [False, True, False]


def test_init_resets_the_target_and_tells_the_board():
    bus, _, events = machine(2)
    a1 = enabled(bus.apics[1])
    a1.write(L.TPR, 4, 0x44)
    a1.accept(0x80)
    a0 = bus.apics[0]
    a0.write(L.ICR_HIGH, 4, 1 << 24)
    a0.write(L.ICR_LOW, 4, 0x500 | 0x8000 | 0x4000)  # INIT | LEVEL | ASSERT
    assert events == [("init", 1)]
    assert a1.read(L.TPR, 4) == 0 and a1.irr == 0 and a1.read(L.SVR, 4) == 0xFF
    assert a1.read(L.ID, 4) == 1 << 24  # the ID survives INIT
    a0.write(L.ICR_LOW, 4, 0x500 | 0x8000)  # de-assert: nothing
    assert events == [("init", 1)]


def test_startup_reports_the_vector_page():
    bus, _, events = machine(2)
    a0 = bus.apics[0]
    a0.write(L.ICR_HIGH, 4, 1 << 24)
    a0.write(L.ICR_LOW, 4, 0x600 | 0x07)  # STARTUP, xv6's entryother at 0x7000
    assert events == [("startup", 1, 0x7000)]
    assert bus.apics[1].irr == 0


def test_window_shows_each_cpu_its_own_apic():
    bus, _, _ = machine(2)
    assert bus.read(L.ID, 4, 0) == 0
    assert bus.read(L.ID, 4, 1) == 1 << 24
    bus.write(L.TPR, 4, 0x20, 1)
    assert bus.peek(L.TPR, 4, 1) == 0x20 and bus.peek(L.TPR, 4, 0) == 0
    assert (ApicBus.BASE, ApicBus.SIZE) == (0xFEE0_0000, 0x1000)


def test_bus_next_event_is_the_earliest_timer():
    clock = Clock()
    bus, _, _ = machine(2, clock)
    for a, initial in zip(bus.apics, (300, 200), strict=True):
        enabled(a)
        a.write(L.TIMER_DIVIDE, 4, 0xB)
        a.write(L.LVT_TIMER, 4, 0x30)
        a.write(L.TIMER_INITIAL, 4, initial)
    assert bus.next_event() == 200
    clock.now = 200
    bus.poll()
    assert bus.apics[1].irr and not bus.apics[0].irr
    assert bus.next_event() == 300


def test_state_round_trip():
    clock = Clock(500)
    bus, _, _ = machine(2, clock)
    a = timer(clock, mode=L.TIMER_PERIODIC, initial=100, divide=0x0)
    bus.apics[0] = a
    a.bus = bus
    a.accept(0x90, level=True)
    a.accept(0x41)
    a.acknowledge()
    a.write(L.TPR, 4, 0x20)
    a.write(L.ESR, 4, 0)
    clock.now = 570
    saved = through_json(bus.state())
    bus2, _, _ = machine(2, clock)
    bus2.set_state(saved)
    b = bus2.apics[0]
    for reg in (L.TPR, L.PPR, L.SVR, L.LVT_TIMER, L.TIMER_INITIAL, L.TIMER_CURRENT,
                L.TIMER_DIVIDE, L.ISR + 0x40, L.TMR + 0x40, L.IRR + 0x20):
        assert b.peek(reg, 4, 0) == a.peek(reg, 4, 0), hex(reg)
    assert b.next_event() == a.next_event() == 700
    assert b.state() == a.state()
    assert {k: v for k, v in fields(b).items() if k != "bus"} == \
        {k: v for k, v in fields(a).items() if k != "bus"}
    with pytest.raises(ValueError, match="2 local APICs, this machine 1"):
        machine(1)[0].set_state(saved)
