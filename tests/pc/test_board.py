"""The PC board (``vmi.pc.board``): devices where a PC has them, reached by real
instructions from a boot sector the firmware enters, and the behaviours xv6 does
not exercise (the A20 wrap, the UART's receive interrupt through the IOAPIC, an
IDE write read back, the local APIC's one-shot timer, INIT/STARTUP), plus the
memory layer's device windows and snapshots of the devices."""

from __future__ import annotations

import pytest

from vmi.asm import assemble
from vmi.cpu import Memory
from vmi.pc import lapic as apic
from vmi.pc.board import PcMachine
from vmi.pc.session import boot_pc


def boot_sector(source: str) -> bytes:
    """``source`` (16-bit AT&T) assembled at 0x7C00, padded, with the 0x55AA mark."""
    code = assemble(".code16\n" + source, base=0x7C00).image
    assert len(code) <= 510
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def disk_file(tmp_path, sector: bytes, sectors: int = 64, name: str = "disk.img"):
    path = tmp_path / name
    path.write_bytes(sector + bytes(512 * (sectors - 1)))
    return path


def boot(tmp_path, source: str, **options):
    session = boot_pc([disk_file(tmp_path, boot_sector(source))], **options)
    return session, session.machine


# -- the memory layer's device windows -----------------------------------------------

class Probe:
    """A device that counts its reads and answers with its offset."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int, int]] = []
        self.writes: list[tuple[int, int, int, int]] = []

    def read(self, offset, size, cpu):
        self.reads.append((offset, size, cpu))
        return offset & ((1 << 8 * size) - 1)

    def write(self, offset, size, value, cpu):
        self.writes.append((offset, size, value, cpu))

    def peek(self, offset, size, cpu):
        return 0x5A


def test_a_window_above_ram_gets_whole_accesses_with_the_cpu_index():
    memory = Memory(1 << 20)
    probe = Probe()
    memory.map_device(0xFEE00000, 0x1000, probe)
    memory.cpu_index = 1
    assert memory.read32(0xFEE00020) == 0x20
    memory.write32(0xFEE000B0, 7)
    memory.write16(0xFEE00010, 0xBEEF)
    assert probe.reads == [(0x20, 4, 1)]
    assert probe.writes == [(0xB0, 4, 7, 1), (0x10, 2, 0xBEEF, 1)]
    assert memory.read8(0xFEE01000) == 0xFF  # past the window: the empty bus


def test_peeks_and_read_bytes_have_no_side_effect_on_a_device():
    memory = Memory(1 << 20)
    probe = Probe()
    memory.map_device(0xFEC00000, 0x1000, probe)
    assert memory.peek(0xFEC00010, 4) == 0x5A
    assert memory.read_bytes(0xFEC00010, 2) == b"\x5a\x5a"
    assert probe.reads == []


def test_windows_must_lie_above_ram_and_not_overlap():
    memory = Memory(1 << 20)
    with pytest.raises(ValueError, match="between the end of RAM"):
        memory.map_device(0x80000, 0x1000, Probe())
    memory.map_device(0xFEC00000, 0x1000, Probe())
    with pytest.raises(ValueError, match="overlap"):
        memory.map_device(0xFEC00800, 0x1000, Probe())


def test_ram_accesses_never_reach_a_device():
    memory = Memory(1 << 20)
    probe = Probe()
    memory.map_device(0xFEE00000, 0x1000, probe)
    memory.write32(0x1000, 0x12345678)
    assert memory.read32(0x1000) == 0x12345678
    assert probe.reads == probe.writes == []


# -- A20 ------------------------------------------------------------------------------

A20_PROBE = """
    xorw %ax, %ax
    movw %ax, %ds
    movw $0xFFFF, %ax
    movw %ax, %es
    movb $0x11, 0x600
    movb %es:0x610, %al      # FFFF:0610 = 0x100600: wraps to 0x600 while A20 is off
    movb %al, 0x700
    movb $0x22, %es:0x610    # the write wraps too
    inb $0x92, %al           # the chipset's fast A20 gate (port 0x92, bit 1)
    orb $2, %al
    outb %al, $0x92
    movb $0x33, %es:0x610    # now at 0x100600
    movb %es:0x610, %al
    movb %al, 0x701
    hlt
"""


def test_a20_off_wraps_at_1mib_and_port_92_opens_it(tmp_path):
    session, machine = boot(tmp_path, A20_PROBE, memory_size=4 << 20)
    assert not machine.memory.a20  # off at reset: the boot sector must open it
    session.run(steps=200)
    memory = machine.memory
    assert memory.read8(0x700) == 0x11  # the wrapped read saw 0x600
    assert memory.read8(0x600) == 0x22  # the wrapped write landed there
    assert memory.a20
    assert memory.read8(0x100600) == 0x33 and memory.read8(0x701) == 0x33
    assert memory.read8(0x600) == 0x22  # the write with A20 on did not wrap


# -- interrupts: UART receive through the IOAPIC and the local APIC ------------------

def _enable_apic(machine: PcMachine, cpu: int = 0) -> None:
    machine.memory.cpu_index = cpu
    machine.memory.write32(apic.ApicBus.BASE + apic.SVR, apic.SVR_ENABLE | 0xFF)


def _route(machine: PcMachine, pin: int, vector: int, cpu: int = 0) -> None:
    """Program IOAPIC redirection entry ``pin`` as xv6's ioapicenable does."""
    memory = machine.memory
    memory.write32(0xFEC00000, 0x10 + 2 * pin)
    memory.write32(0xFEC00010, vector)
    memory.write32(0xFEC00000, 0x10 + 2 * pin + 1)
    memory.write32(0xFEC00010, cpu << 24)


def test_a_received_byte_interrupts_cpu0_through_the_ioapic(tmp_path):
    session, machine = boot(tmp_path, "hlt", memory_size=4 << 20)
    _enable_apic(machine)
    _route(machine, 4, 0x24)
    ports = machine.ports
    ports.write(0x3F9, 1, 1)  # IER: received data available
    assert machine.pic.next_vector(0) is None
    session.type(b"k")
    assert machine.pic.next_vector(0) == 0x24
    machine.pic.acknowledge(0, 0x24)
    assert ports.read(0x3F8, 1) == ord("k")
    machine.memory.write32(apic.ApicBus.BASE + apic.EOI, 0)
    assert machine.pic.next_vector(0) is None
    assert machine.apics.apics[0].isr == 0


def test_an_interrupt_routed_to_cpu1_is_not_offered_to_cpu0(tmp_path):
    session, machine = boot(tmp_path, "hlt", memory_size=4 << 20, cpus=2)
    for cpu in (0, 1):
        _enable_apic(machine, cpu)
    _route(machine, 4, 0x24, cpu=1)
    machine.ports.write(0x3F9, 1, 1)
    session.type(b"k")
    assert machine.pic.next_vector(0) is None
    assert machine.pic.next_vector(1) == 0x24


def test_each_cpu_reads_its_own_apic_id(tmp_path):
    _, machine = boot(tmp_path, "hlt", memory_size=4 << 20, cpus=2)
    for cpu in (0, 1):
        machine.memory.cpu_index = cpu
        assert machine.memory.read32(apic.ApicBus.BASE + apic.ID) >> 24 == cpu


# -- the local APIC's one-shot timer, taken by a halted CPU ---------------------------

def test_the_apic_one_shot_timer_wakes_a_halted_cpu_once(tmp_path):
    handler = assemble(".code16\nincw 0x500\niret\n", base=0x7E00).image
    session, machine = boot(tmp_path, "sti\n1: hlt\njmp 1b\n", memory_size=4 << 20)
    machine.memory.write_bytes(0x7E00, handler)
    machine.memory.write16(0x40 * 4, 0x7E00)
    machine.memory.write16(0x40 * 4 + 2, 0)
    _enable_apic(machine)
    base = apic.ApicBus.BASE
    machine.memory.write32(base + apic.TIMER_DIVIDE, 0xB)  # divide by 1
    machine.memory.write32(base + apic.LVT_TIMER, 0x40)  # one-shot, vector 0x40
    start = machine.cpus[0].cycles
    machine.memory.write32(base + apic.TIMER_INITIAL, 50_000)
    session.run(steps=400)
    assert machine.memory.read16(0x500) == 1  # once: a one-shot timer does not re-arm
    assert machine.cpus[0].cycles >= start + 50_000
    assert machine.apics.apics[0].timer_expiries == 1


# -- IDE: a write read back, and the image file untouched ----------------------------

IDE_WRITE_READ = """
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw $0x1F6, %dx
    movb $0xE0, %al          # LBA, drive 0
    outb %al, %dx
    movw $0x1F2, %dx
    movb $1, %al
    outb %al, %dx            # one sector
    movw $0x1F3, %dx
    movb $5, %al
    outb %al, %dx            # LBA 5
    incw %dx
    xorb %al, %al
    outb %al, %dx
    incw %dx
    outb %al, %dx
    movw $0x1F7, %dx
    movb $0x30, %al          # WRITE SECTORS
    outb %al, %dx
    movw $0x600, %si
    movw $128, %cx
    movw $0x1F0, %dx
    cld
    rep outsl                # 512 bytes from 0x600
    movw $0x1F7, %dx
    movb $0x20, %al          # READ SECTORS (same LBA, count)
    outb %al, %dx
    movw $0x800, %di
    movw $128, %cx
    movw $0x1F0, %dx
    rep insl                 # back into 0x800
    hlt
"""


def test_ide_write_then_read_back_leaves_the_image_file_as_it_was(tmp_path):
    session, machine = boot(tmp_path, IDE_WRITE_READ, memory_size=4 << 20)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(512))
    machine.memory.write_bytes(0x600, pattern)
    image = (tmp_path / "disk.img").read_bytes()
    session.run(steps=300)
    assert machine.memory.read_bytes(0x800, 512) == pattern
    disk = machine.ide.disks[0]
    assert disk.writes == 1 and disk.peek(5 * 512, 512) == pattern
    assert (tmp_path / "disk.img").read_bytes() == image  # copy-on-write


def test_write_disks_keeps_the_guest_writes_in_the_file(tmp_path):
    path = disk_file(tmp_path, boot_sector(IDE_WRITE_READ))
    session = boot_pc([path], memory_size=4 << 20, write_disks=True)
    pattern = bytes(range(256)) * 2
    session.machine.memory.write_bytes(0x600, pattern)
    session.run(steps=300)
    assert session.flush_disks() == 1
    assert path.read_bytes()[5 * 512:6 * 512] == pattern


# -- application processors: INIT, STARTUP ---------------------------------------------

def test_init_and_startup_start_an_ap_in_real_mode_at_the_vectors_page(tmp_path):
    session, machine = boot(tmp_path, "hlt", memory_size=4 << 20, cpus=2)
    ap_code = assemble(".code16\nmovw %cs, %ax\nmovw %ax, %ds\nmovb $0x77, 0x100\nhlt\n",
                       base=0).image
    machine.memory.write_bytes(0x9000, ap_code)
    assert machine.waiting == [False, True]
    session.run(steps=500)
    assert machine.cpus[1].instructions == 0  # it waits: nothing ran
    machine.memory.cpu_index = 0
    icr = apic.ApicBus.BASE + apic.ICR_LOW
    machine.memory.write32(apic.ApicBus.BASE + apic.ICR_HIGH, 1 << 24)
    machine.memory.write32(icr, 0x500)  # INIT
    machine.memory.write32(apic.ApicBus.BASE + apic.ICR_HIGH, 1 << 24)
    machine.memory.write32(icr, 0x600 | 0x09)  # STARTUP, vector 9: page 0x9000
    assert machine.waiting == [False, False]
    assert machine.cpus[1].sreg[1] == 0x900 and machine.cpus[1].eip == 0
    session.run(steps=500)
    assert machine.memory.read8(0x9100) == 0x77
    machine.memory.write32(icr, 0x600 | 0x0A)  # a second STARTUP is ignored
    assert machine.cpus[1].sreg[1] == 0x900


# -- snapshots carry the devices --------------------------------------------------------

def test_snapshot_restore_and_files_carry_the_devices(tmp_path):
    session, machine = boot(tmp_path, "hlt", memory_size=4 << 20)
    _enable_apic(machine)
    _route(machine, 4, 0x24)
    machine.ports.write(0x3F9, 1, 1)
    snap = machine.snapshot()
    before = machine.pic.state()
    session.type(b"xy")
    _route(machine, 4, 0x30)
    machine.ports.write(0x3D4, 1, 14)
    assert machine.pic.state() != before
    machine.restore(snap)
    assert machine.pic.state() == before
    session.type(b"z")
    after_typing = machine.pic.state()
    machine.save(tmp_path / "pc.snap")
    machine.restore(snap)
    machine.load(tmp_path / "pc.snap")
    assert machine.pic.state() == after_typing


SPIN_AND_WAKE = """
    xorw %ax, %ax
    movw %ax, %ds
    movl $0x1000, %ecx
1:  incw 0x500              # the BSP counts while the AP counts elsewhere
    loop 1b
    hlt
"""


def test_two_cpu_runs_in_quanta_are_deterministic(tmp_path):
    """The same PC, program and calls give the same trace, with both CPUs running
    in quanta (the AP started by INIT/STARTUP partway)."""
    ap_code = assemble(".code16\nxorw %ax, %ax\nmovw %ax, %ds\n1: incw 0x600\njmp 1b\n",
                       base=0).image
    digests, counts = [], []
    for _ in range(2):
        session, machine = boot(tmp_path, SPIN_AND_WAKE, memory_size=4 << 20, cpus=2)
        machine.memory.write_bytes(0x9000, ap_code)
        machine.start_trace()
        machine.run(3_000)
        machine.memory.cpu_index = 0
        machine.memory.write32(apic.ApicBus.BASE + apic.ICR_HIGH, 1 << 24)
        machine.memory.write32(apic.ApicBus.BASE + apic.ICR_LOW, 0x500)
        machine.memory.write32(apic.ApicBus.BASE + apic.ICR_LOW, 0x609)
        machine.run(20_000)
        digests.append(machine.trace_digest())
        counts.append((machine.memory.read16(0x500), machine.memory.read16(0x600)))
    assert digests[0] == digests[1]
    assert counts[0] == counts[1] and counts[0][1] > 0  # the AP ran, the same amount
