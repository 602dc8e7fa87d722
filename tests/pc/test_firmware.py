"""The PC firmware (``vmi.pc.firmware``): the tables a guest finds and the reset stub
it runs.

The MP tables are read back by ``xv6_mpinit`` below, a transliteration of xv6's
mpsearch/mpconfig/mpinit (mp.c) over the C layouts of mp.h, so the tests check what
the guest sees rather than the offsets the firmware wrote at. The reset stub is
executed from RESET on a ``vmi.machine.Machine``.
"""

from __future__ import annotations

import pytest

from vmi.asm import assemble
from vmi.cpu import CPU, Memory
from vmi.cpu import segmentation as seg
from vmi.cpu.ops.misc import CPUID_LEAVES
from vmi.cpu.realmode import reset
from vmi.machine import Machine
from vmi.pc import firmware as fw
from vmi.pc import ioapic as io_model
from vmi.pc import lapic as lapic_model
from vmi.pc.firmware import FirmwareError

CS, SS, DS, ES = 1, 2, 3, 0
IF, DF = 0x200, 0x400
SECTOR = bytes(510) + b"\x55\xaa"


def installed(cpus: int = 1, **kwargs) -> tuple[Memory, fw.Firmware]:
    memory = Memory(2 << 20)
    return memory, fw.install(memory, cpus=cpus, boot_sector=SECTOR, **kwargs)


# -- xv6's view of the MP tables (mp.c, mp.h) ---------------------------------------------
def xv6_sum(memory: Memory, address: int, length: int) -> int:
    return sum(memory.read8(address + i) for i in range(length)) & 0xFF


def xv6_mpsearch1(memory: Memory, start: int, length: int) -> int | None:
    for p in range(start, start + length, 16):       # sizeof(struct mp) == 16
        if memory.read_bytes(p, 4) == b"_MP_" and xv6_sum(memory, p, 16) == 0:
            return p
    return None


def xv6_mpsearch(memory: Memory) -> int | None:
    bda = 0x400
    p = ((memory.read8(bda + 0x0F) << 8) | memory.read8(bda + 0x0E)) << 4
    if p:
        mp = xv6_mpsearch1(memory, p, 1024)
        if mp is not None:
            return mp
    else:
        p = ((memory.read8(bda + 0x14) << 8) | memory.read8(bda + 0x13)) * 1024
        mp = xv6_mpsearch1(memory, p - 1024, 1024)
        if mp is not None:
            return mp
    return xv6_mpsearch1(memory, 0xF0000, 0x10000)


def xv6_mpconfig(memory: Memory) -> tuple[int, int] | None:
    """(mp, conf) as mpconfig finds them, or None where it returns 0."""
    mp = xv6_mpsearch(memory)
    if mp is None or memory.read32(mp + 4) == 0:     # mp->physaddr
        return None
    conf = memory.read32(mp + 4)
    if memory.read_bytes(conf, 4) != b"PCMP":
        return None
    if memory.read8(conf + 6) not in (1, 4):         # conf->version
        return None
    if xv6_sum(memory, conf, memory.read16(conf + 4)) != 0:   # conf->length
        return None
    return mp, conf


def xv6_mpinit(memory: Memory) -> dict:
    """What mpinit leaves in ncpu, cpus[].apicid, ioapicid, lapic and ismp; panics
    ("Expect to run on an SMP") become assertion failures."""
    found = xv6_mpconfig(memory)
    assert found is not None, "panic: Expect to run on an SMP"
    mp, conf = found
    apicids, ioapicid, ismp = [], None, True
    p, e = conf + 44, conf + memory.read16(conf + 4)  # sizeof(struct mpconf) == 44
    while p < e:
        kind = memory.read8(p)
        if kind == 0:
            apicids.append(memory.read8(p + 1))
            p += 20
        elif kind == 2:
            ioapicid = memory.read8(p + 1)
            p += 8
        elif kind in (1, 3, 4):
            p += 8
        else:
            ismp = False
            break
    return {"mp": mp, "conf": conf, "apicids": apicids, "ioapicid": ioapicid,
            "ismp": ismp, "lapic": memory.read32(conf + 36), "imcrp": memory.read8(mp + 12)}


# -- the MP tables ------------------------------------------------------------------------
@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_xv6_finds_one_processor_entry_per_cpu(cpus):
    """MP spec §4.3.1: one processor entry per CPU; xv6 takes their APIC IDs."""
    memory, firmware = installed(cpus)
    seen = xv6_mpinit(memory)
    assert seen["ismp"] and seen["apicids"] == list(range(cpus))
    assert seen["lapic"] == 0xFEE0_0000 and seen["imcrp"] == 0
    assert seen["ioapicid"] == firmware.ioapic_id == cpus


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_processor_entries_flags_signature_and_features(cpus):
    """MP spec Table 4-4: EN on every CPU, BP on CPU 0 only; the signature and
    feature flags are those CPUID leaf 1 reports; the version is the local APIC's."""
    memory, _ = installed(cpus)
    procs = fw.describe_mp(memory)["processors"]
    assert [p["bsp"] for p in procs] == [True] + [False] * (cpus - 1)
    assert all(p["enabled"] for p in procs)
    eax, _, _, edx = CPUID_LEAVES[1]
    assert {(p["signature"], p["features"]) for p in procs} == {(eax, edx)}
    assert {p["version"] for p in procs} == {lapic_model.LocalApic().read(0x30, 4) & 0xFF}


def test_checksums_are_zero_and_the_pointer_says_rev_4_with_a_table():
    """MP spec Tables 4-1 and 4-2: both structures sum to 0; feature byte 1 = 0
    means "a configuration table is present"."""
    memory, _ = installed(2)
    seen = xv6_mpinit(memory)
    mp, conf = seen["mp"], seen["conf"]
    assert xv6_sum(memory, mp, 16) == 0 and memory.read8(mp + 8) == 1   # 1 paragraph
    assert memory.read8(mp + 9) == 4 and memory.read8(mp + 11) == 0
    assert xv6_sum(memory, conf, memory.read16(conf + 4)) == 0
    assert memory.read8(conf + 6) == 4
    # the entry count field counts what the walk found
    described = fw.describe_mp(memory)
    assert described["entries"] == sum(len(described[k]) for k in (
        "processors", "buses", "ioapics", "interrupts", "local_interrupts"))
    assert (described["oem"], described["product"]) == ("VMI", "VMI PC")


def test_the_pointer_is_in_the_first_kib_of_the_ebda():
    """MP spec §4: the first place searched, the EBDA named by BDA word 0x40E."""
    memory, firmware = installed()
    ebda = memory.read16(0x40E) << 4
    assert ebda <= xv6_mpinit(memory)["mp"] < ebda + 1024
    assert firmware.mp_pointer == xv6_mpinit(memory)["mp"]


def test_ioapic_entry_carries_the_id_the_ioapic_reads():
    """xv6's ioapicinit compares the IOAPIC's ID register with the table's id."""
    memory, firmware = installed(2, ioapic_id=9)
    assert xv6_mpinit(memory)["ioapicid"] == 9
    ioapic = io_model.IoApic(apic_id=firmware.ioapic_id)
    ioapic.write(io_model.IOREGSEL, 4, io_model.REG_ID)
    register_id = ioapic.read(io_model.IOWIN, 4) >> 24
    ioapic.write(io_model.IOREGSEL, 4, io_model.REG_VERSION)
    version = ioapic.read(io_model.IOWIN, 4) & 0xFF
    [entry] = fw.describe_mp(memory)["ioapics"]
    assert entry == {"id": register_id, "version": version, "enabled": True,
                     "address": io_model.IoApic.BASE}
    assert version == 0x11


def test_isa_interrupts_identity_mapped_to_the_ioapic():
    """MP spec Table 4-7: ISA IRQ n -> IOAPIC pin n, "conforms to the bus"."""
    memory, firmware = installed(2)
    described = fw.describe_mp(memory)
    assert described["buses"] == [{"id": 0, "type": "ISA"}]
    assert [(i["irq"], i["pin"]) for i in described["interrupts"]] == [(n, n) for n in range(16)]
    assert {(i["type"], i["flags"], i["bus"], i["destination"])
            for i in described["interrupts"]} == {(fw.INT, 0, 0, firmware.ioapic_id)}


def test_isa_interrupt_pins_can_be_rerouted():
    """The timer's IRQ 0 on pin 2, as many boards wire it."""
    pins = (2, 1, 0) + tuple(range(3, 16))
    memory, _ = installed(1, irq_pins=pins)
    assert [i["pin"] for i in fw.describe_mp(memory)["interrupts"]] == list(pins)


def test_local_interrupts_extint_on_lint0_nmi_on_lint1():
    """MP spec Table 4-8 and §5.1 (virtual wire): every local APIC's LINTIN0 is
    the 8259's INTR (ExtINT), LINTIN1 the NMI."""
    memory, _ = installed(2)
    assert [(i["type"], i["destination"], i["pin"])
            for i in fw.describe_mp(memory)["local_interrupts"]] == [
        (fw.EXTINT, 0xFF, 0), (fw.NMI, 0xFF, 1)]


def test_bios_data_area():
    """IBM PC BDA: COM1 at 0x400, EBDA segment 0x40E, base memory (KiB) 0x413,
    and the EBDA's first byte is its size in KiB."""
    memory, firmware = installed(memory_size=2 << 20)
    assert memory.read16(0x400) == 0x3F8 and memory.read16(0x402) == 0
    ebda_segment, base_kib = memory.read16(0x40E), memory.read16(0x413)
    assert base_kib == 640 - memory.read8(ebda_segment << 4) == 639
    assert (ebda_segment << 4) == base_kib * 1024 == firmware.ebda_address
    assert memory.read16(0x410) & 0x30 == 0x20 and memory.read16(0x410) >> 9 & 7 == 1
    assert memory.read16(0x463) == 0x3D4 and memory.read8(0x475) == 1
    assert firmware.extended_memory_kib == 1024


def test_without_an_ebda_xv6_would_search_the_last_kib_of_base_memory():
    """The search helper follows xv6 when BDA word 0x40E is 0 (the firmware itself
    always sets it, so the pointer is then out of sight, as on such a machine)."""
    memory, _ = installed()
    memory.write16(0x40E, 0)
    assert fw.find_mp_pointer(memory) is None and xv6_mpsearch(memory) is None
    memory.write16(0x413, 640)                        # the EBDA becomes base memory
    assert fw.find_mp_pointer(memory) == xv6_mpsearch(memory) == fw.MP_POINTER_ADDRESS


def test_damaged_tables_are_not_found():
    """A byte changed in either structure breaks its checksum: xv6 panics and
    describe_mp names the fault."""
    memory, firmware = installed(2)
    memory.write8(firmware.mp_table + 50, memory.read8(firmware.mp_table + 50) ^ 1)
    assert xv6_mpconfig(memory) is None
    with pytest.raises(FirmwareError, match="does not sum to 0"):
        fw.describe_mp(memory)
    memory, firmware = installed(2)
    memory.write8(firmware.mp_pointer + 4, memory.read8(firmware.mp_pointer + 4) ^ 1)
    assert xv6_mpsearch(memory) is None
    with pytest.raises(FirmwareError, match="no MP floating pointer"):
        fw.describe_mp(memory)


def test_table_length_matches_the_result_and_the_entry_sizes():
    memory, firmware = installed(4)
    assert memory.read16(firmware.mp_table + 4) == firmware.mp_table_length == (
        44 + 4 * 20 + 8 + 8 + 16 * 8 + 2 * 8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cpus": 0}, "0 CPUs: the MP tables describe 1 to 15"),
    ({"cpus": 16}, "16 CPUs"),
    ({"cpus": 4, "ioapic_id": 3}, "IOAPIC ID 3 is CPU 3's APIC ID"),
    ({"cpus": 1, "ioapic_id": 16}, "IOAPIC ID 16: the IOAPIC's ID is 4 bits"),
    ({"cpus": 1, "irq_pins": (0,) * 15}, "need 16 IOAPIC pins"),
    ({"cpus": 1, "irq_pins": (24,) * 16}, "need 16 IOAPIC pins"),
    ({"cpus": 1, "hard_disks": 256}, "256 hard disks: the BIOS data area counts 0-255"),
    ({"cpus": 1, "memory_size": 640 << 10}, "at least 1 MiB"),
    ({"cpus": 1, "memory_size": 4 << 20}, "at most"),
])
def test_configurations_the_tables_cannot_describe(kwargs, message):
    with pytest.raises(FirmwareError, match=message):
        fw.install(Memory(2 << 20), boot_sector=SECTOR, **kwargs)


# -- the boot sector ----------------------------------------------------------------------
@pytest.mark.parametrize(("sector", "message"), [
    (SECTOR[:511], "disk 0: the boot sector is 511 bytes, not 512"),
    (SECTOR + b"\0", "disk 0: the boot sector is 513 bytes, not 512"),
    (b"", "disk 0: the boot sector is 0 bytes, not 512"),
    (bytes(512), "disk 0: no boot signature 0x55AA at byte 510 (found 00 00)"),
    (bytes(510) + b"\xaa\x55", "disk 0: no boot signature 0x55AA at byte 510 (found AA 55)"),
])
def test_bad_boot_sectors_are_refused_in_one_line_before_anything_is_written(sector, message):
    memory = Memory(2 << 20)
    with pytest.raises(FirmwareError) as caught:
        fw.install(memory, cpus=1, boot_sector=sector)
    assert str(caught.value) == message and isinstance(caught.value, ValueError)
    assert not any(memory.read_bytes(0, 0x100000))


def test_boot_sector_error_names_its_source():
    with pytest.raises(FirmwareError, match=r"^disk 1: no boot signature"):
        fw.install(Memory(2 << 20), cpus=1, boot_sector=bytes(512), source="disk 1")


def test_boot_sector_is_loaded_at_7c00():
    sector = bytes(range(256)) * 2
    sector = sector[:510] + b"\x55\xaa"
    memory = Memory(2 << 20)
    fw.install(memory, cpus=1, boot_sector=sector)
    assert memory.read_bytes(0x7C00, 512) == sector


# -- the reset stub, executed ---------------------------------------------------------------
#: Records DL, SP, SS, DS, ES and FLAGS at entry, makes a stray BIOS call (int $0x10,
#: which the IVT sends to an iret), then marks that it came back and halts.
BOOT_CODE = """
.code16
    movb %dl, 0x500
    movw %sp, 0x502
    movw %ss, 0x504
    movw %ds, 0x506
    movw %es, 0x508
    pushfw
    popw 0x50a
    int $0x10
    movb $0x99, 0x50c
    hlt
"""


def boot_sector(source: str) -> bytes:
    code = assemble(source, macros=None, base=0x7C00).image
    return code.ljust(510, b"\0") + b"\x55\xaa"


def booted_machine(cpus: int = 1) -> Machine:
    machine = Machine(cpus=cpus, memory_size=1 << 20)
    fw.install(machine.memory, cpus=cpus, boot_sector=boot_sector(BOOT_CODE))
    return machine


def test_reset_stub_reaches_the_boot_sector_with_the_bios_state():
    """SDM Vol.3A §9.1.4: the first fetch is at F000:FFF0; the stub hands over at
    0000:7C00 with DL = 0x80, SS:SP = 0000:7C00, DS = ES = 0, IF and DF clear
    (even when the CPU arrives with them set, as after a warm start)."""
    machine = booted_machine()
    cpu = machine.cpus[0]
    cpu.eflags |= IF | DF
    cpu.regs.edx = 0
    path = []
    for _ in range(40):
        path.append((cpu.sreg[CS], cpu.eip))
        if path[-1] == (0, 0x7C00):
            break
        machine.step()
    assert path[:2] == [(0xF000, 0xFFF0), (0xF000, fw.STUB_OFFSET)]
    assert path[-1] == (0, 0x7C00) and len(path) == 2 + 9
    assert (cpu.regs.dl, cpu.regs.sp, cpu.sreg[SS], cpu.sreg[DS], cpu.sreg[ES]) == (
        0x80, 0x7C00, 0, 0, 0)
    assert cpu.eflags & (IF | DF) == 0


def test_boot_sector_runs_and_a_stray_interrupt_returns():
    """The boot code runs from reset: what it stored is what the stub set up; its
    int $0x10 went through the IVT to an iret and came back."""
    machine = booted_machine()
    machine.run(300)
    memory, cpu = machine.memory, machine.cpus[0]
    assert cpu.halted
    assert memory.read8(0x500) == 0x80
    assert [memory.read16(a) for a in (0x502, 0x504, 0x506, 0x508)] == [0x7C00, 0, 0, 0]
    assert memory.read16(0x50A) & (IF | DF) == 0
    assert memory.read8(0x50C) == 0x99
    assert cpu.regs.sp == 0x7C00          # int's frame popped by the iret


def test_every_vector_points_at_an_iret():
    memory, _ = installed()
    targets = {(memory.read16(4 * v + 2) << 4) + memory.read16(4 * v) for v in range(256)}
    assert len(targets) == 1 and memory.read8(targets.pop()) == 0xCF   # iret


def test_hand_assembled_code_matches_the_assembler():
    """The stub's bytes are the instructions its comments name."""
    stub = assemble("""
.code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ss
    movw $0x7c00, %sp
    movw %ax, %ds
    movw %ax, %es
    movb $0x80, %dl
    ljmp $0, $0x7c00
""", macros=None).image
    assert fw.STUB == stub
    assert fw.RESET_JUMP == assemble(".code16\nljmp $0xf000, $0xe05b\n", macros=None).image


def test_only_the_bsp_runs_the_stub_with_two_cpus_installed():
    """The tables for two CPUs do not change what CPU 0 runs; an AP's start is
    the board's (startup_state)."""
    machine = booted_machine(cpus=2)
    machine.set_interleaving([0])
    machine.run(300)
    assert machine.memory.read8(0x50C) == 0x99


# -- application processors -------------------------------------------------------------------
def test_startup_state():
    """SDM Vol.3A §8.4.4.1: a STARTUP IPI's vector v starts the AP at CS = v << 8, IP 0."""
    assert fw.startup_state(7) == (0x0700, 0)
    assert fw.startup_state(0xFF) == (0xFF00, 0)
    assert fw.startup_state(0) == (0, 0)
    for bad in (-1, 0x100):
        with pytest.raises(ValueError, match="not a byte"):
            fw.startup_state(bad)


def test_an_ap_started_at_startup_state_runs_the_page_of_its_vector():
    """xv6's startothers copies entryother to 0x7000 and sends vector 7."""
    cpu = CPU(Memory(1 << 20), index=1)
    reset(cpu)
    cpu.mem.load(0x7000, assemble(".code16\nmovw $0x1234, %ax\nhlt\n", macros=None).image)
    cs, ip = fw.startup_state(7)
    seg.load_segment(cpu, CS, cs)
    cpu.eip = ip
    cpu.run(1)
    assert cpu.regs.ax == 0x1234 and (cpu.seg_base[CS] + cpu.eip) == 0x7003
