"""The PC's firmware: what a BIOS leaves in memory before it jumps to the boot sector.

A PC board calls :func:`install` once, on a zeroed physical memory, before its
CPUs leave RESET. There is no BIOS code to interpret: Python writes the tables
a BIOS would have built, and a reset stub of a few instructions does the one
thing that must happen on the CPU (registers, then the jump to the boot
sector). What it writes, and where the facts come from:

**Physical memory below 1 MiB** (the IBM PC/AT BIOS conventions; Ralf Brown's
Interrupt List, "Format of BIOS Data Segment at segment 40h"):

====================  ========================================================
0x00000-0x003FF       the real-mode interrupt vector table: all 256 vectors
                      point at F000:FF53, an ``iret`` (the dummy interrupt
                      handler of the IBM PC/AT BIOS lives at that address),
                      so a stray ``int n`` or interrupt before the guest
                      installs its own table returns instead of running zeros
                      (like IBM's, it sends no EOI: an 8259 interrupt taken
                      there stays in service; the stub runs with IF clear)
0x00400-0x004FF       the BIOS data area (:data:`BDA_*`, below)
0x07C00-0x07DFF       the boot sector, checked for 512 bytes ending 55 AA
0x9FC00-0x9FFFF       the extended BIOS data area (EBDA, 1 KiB, segment 9FC0):
                      byte 0 its size in KiB, the MP floating pointer at 9FC10,
                      the MP configuration table at 9FC20
0xFE05B               the reset stub (F000:E05B, the IBM PC/AT's POST entry)
0xFFF53               ``iret`` (the IVT's target)
0xFFFF0               ``jmp far F000:E05B`` (the reset vector: a CPU leaving
                      RESET fetches at 0xFFFFFFF0, which the memory aliases
                      to 0xFFFF0; SDM Vol.3A §9.1.4)
0xFFFFE               the model byte 0xFC (a PC/AT)
====================  ========================================================

The BIOS data area holds the COM1 base 0x3F8 at 0x400 (COM2-4 and the printer
ports absent), the equipment word at 0x410 (80x25 colour display, one serial
port, no diskette), the base memory in KiB at 0x413 (640 less the EBDA, 639),
the EBDA segment at 0x40E, the display mode 3 (80x25 colour text) at 0x449, 80
columns at 0x44A, the CRTC port 0x3D4 at 0x463 and the number of hard disks at
0x475. xv6's ``mpsearch`` (mp.c) reads 0x40E and, when that is 0, 0x413.

**The MP tables** (Intel MultiProcessor Specification 1.4, May 1997, order
242016-006, chapter 4):

* the MP floating pointer structure (§4.1, Table 4-1): "_MP_", the physical
  address of the configuration table, length 1 (paragraphs), spec revision 4,
  a checksum making the 16 bytes sum to 0, feature byte 1 = 0 (a configuration
  table is present, no default configuration) and feature byte 2 = 0 (no IMCR:
  the PIC/APIC choice is virtual-wire mode, §3.6.2.2). §4 allows it in the
  first KiB of the EBDA, the last KiB of base memory, or F0000-FFFFF; this
  firmware puts it in the EBDA, the place a guest (xv6's ``mpsearch``, Linux)
  searches first;
* the configuration table (§4.2, Table 4-2): "PCMP", spec revision 4, OEM ID
  "VMI", product ID "VMI PC", the local APIC at 0xFEE00000, no OEM or extended
  table, and its entries (§4.3, Table 4-3) in the order the spec lists their
  types: one processor entry per CPU (Table 4-4: APIC ID = the CPU's index,
  version 0x14 as the local APIC model reports, enabled, BP set on CPU 0 only,
  the signature and feature flags of CPUID leaf 1, see
  :mod:`vmi.cpu.ops.misc`), one ISA bus entry (id 0, "ISA   "), one I/O APIC
  entry (Table 4-6: the id given, version 0x11, enabled, 0xFEC00000), an I/O
  interrupt entry per ISA IRQ 0-15 (Table 4-7: INT, flags 0 "conforms to the
  bus", IRQ n to I/O APIC pin ``irq_pins[n]``, identity by default, which is
  how the board wires an ISA line to the IOAPIC) and two local interrupt
  entries (Table 4-8: ExtINT on LINTIN0 and NMI on LINTIN1 of every local
  APIC, destination 0xFF), the virtual-wire wiring of §5.1.

The IOAPIC ID in the table must equal what the IOAPIC's ID register reads (xv6's
``ioapicinit`` warns "id isn't equal to ioapicid; not a MP" otherwise). APIC IDs
must be unique (§4.3.1, and the APIC bus arbitrates by ID), so the default is
``ioapic_id = cpus``, the first ID after the CPUs': a board builds its
:class:`vmi.pc.ioapic.IoApic` with ``apic_id=firmware.ioapic_id``. The IOAPIC's ID
is four bits wide, so a machine has at most 15 CPUs.

**The boot processor** leaves RESET at F000:FFF0 (SDM Vol.3A §9.1.4), jumps to
the stub, which runs ``cli; cld; ss = ds = es = 0; sp = 0x7C00; dl = 0x80``
(the BIOS's boot drive number: the first hard disk) and ``jmp far 0000:7C00``.
That is the state the boot sector expects (xv6's bootasm.S: "The BIOS loads this
code ... and starts executing in real mode with %cs=0 %ip=7c00").

**Application processors** do not run the stub: after RESET an AP waits for an
INIT IPI and then a STARTUP IPI (SDM Vol.3A §8.4.3 "MP initialization protocol
algorithm", MP spec Appendix B.4). The board keeps them in that wait-for-SIPI
state; a STARTUP IPI with vector ``v`` starts the AP in real mode at
``startup_state(v)`` = CS ``v << 8``, IP 0, i.e. physical ``v << 12`` (SDM
Vol.3A §8.4.4.1, MP spec B.4.2). xv6's ``startothers`` copies entryother.S to
0x7000 and sends vector 7.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from vmi.cpu.ops.misc import CPUID_LEAVES
from vmi.pc import ioapic as ioapic_model
from vmi.pc import lapic as lapic_model


class FirmwareError(ValueError):
    """The firmware cannot be installed as asked (a bad boot sector, a CPU count the
    tables cannot describe): one line naming what is wrong."""


# -- where things go ------------------------------------------------------------------
#: Where the BIOS loads the boot sector and jumps (CS:IP = 0000:7C00).
BOOT_ADDRESS = 0x7C00
BOOT_SECTOR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"
#: The boot drive number in DL: 0x80 is the first hard disk.
BOOT_DRIVE = 0x80

BDA = 0x400
BDA_COM1 = 0x400          # word: I/O base of COM1 (0x402-0x406: COM2-COM4)
BDA_EBDA_SEGMENT = 0x40E  # word: segment of the extended BIOS data area
BDA_EQUIPMENT = 0x410     # word: the equipment list (INT 11h)
BDA_BASE_MEMORY = 0x413   # word: base memory in KiB (INT 12h)
BDA_VIDEO_MODE = 0x449    # byte: the current video mode
BDA_COLUMNS = 0x44A       # word: columns on the screen
BDA_CRTC_PORT = 0x463     # word: the CRTC's index port (0x3D4 colour, 0x3B4 mono)
BDA_HARD_DISKS = 0x475    # byte: number of hard disks
COM1_PORT = 0x3F8
#: Equipment word: bits 5-4 = 10b (80x25 colour), bits 11-9 = 1 serial port.
EQUIPMENT = (0b10 << 4) | (1 << 9)

#: The EBDA: 1 KiB at the top of the 640 KiB of base memory.
EBDA_KIB = 1
EBDA_SEGMENT = (640 - EBDA_KIB) * 1024 >> 4
EBDA_ADDRESS = EBDA_SEGMENT << 4
MP_POINTER_ADDRESS = EBDA_ADDRESS + 0x10
MP_TABLE_ADDRESS = EBDA_ADDRESS + 0x20

ROM_SEGMENT = 0xF000
ROM_ADDRESS = ROM_SEGMENT << 4
#: F000:E05B, where the IBM PC/AT's reset vector jumps (its POST entry).
STUB_OFFSET = 0xE05B
#: F000:FF53, the IBM PC/AT BIOS's dummy interrupt handler (an ``iret``).
IRET_OFFSET = 0xFF53
RESET_OFFSET = 0xFFF0
MODEL_OFFSET = 0xFFFE
MODEL_AT = 0xFC

# -- the MP specification's numbers -------------------------------------------------
LOCAL_APIC_ADDRESS = 0xFEE0_0000
IOAPIC_ADDRESS = 0xFEC0_0000
MP_SPEC_REV = 4
OEM_ID = b"VMI"
PRODUCT_ID = b"VMI PC"
PROCESSOR, BUS, IOAPIC, IO_INTERRUPT, LOCAL_INTERRUPT = range(5)
ENTRY_SIZES = {PROCESSOR: 20, BUS: 8, IOAPIC: 8, IO_INTERRUPT: 8, LOCAL_INTERRUPT: 8}
CPU_ENABLED, CPU_BSP = 0x01, 0x02
INT, NMI, SMI, EXTINT = range(4)
ISA_BUS_ID = 0
#: The local APIC destination "every local APIC" of a local interrupt entry.
ALL_LOCAL_APICS = 0xFF
#: ISA IRQ n drives IOAPIC pin n: the board wires ISA line n to IOAPIC input n.
IDENTITY_PINS = tuple(range(16))

MAX_CPUS = 15

_HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")   # Table 4-2, 44 bytes
_POINTER = struct.Struct("<4sIBBBBB3s")          # Table 4-1, 16 bytes
_PROCESSOR = struct.Struct("<BBBBII8s")          # Table 4-4, 20 bytes
_BUS = struct.Struct("<BB6s")                    # Table 4-5
_IOAPIC = struct.Struct("<BBBBI")                # Table 4-6
_INTERRUPT = struct.Struct("<BBHBBBB")           # Tables 4-7 and 4-8

# -- the code ---------------------------------------------------------------------------
#: The reset stub at F000:E05B (16-bit code).
STUB = bytes([
    0xFA,                    # cli
    0xFC,                    # cld
    0x31, 0xC0,              # xor ax, ax
    0x8E, 0xD0,              # mov ss, ax    (holds interrupts for one instruction)
    0xBC, 0x00, 0x7C,        # mov sp, 0x7C00
    0x8E, 0xD8,              # mov ds, ax
    0x8E, 0xC0,              # mov es, ax
    0xB2, BOOT_DRIVE,        # mov dl, 0x80
    0xEA, 0x00, 0x7C, 0x00, 0x00,  # jmp far 0000:7C00
])
#: At F000:FFF0: ``jmp far F000:E05B``.
RESET_JUMP = bytes([0xEA, STUB_OFFSET & 0xFF, STUB_OFFSET >> 8,
                    ROM_SEGMENT & 0xFF, ROM_SEGMENT >> 8])
IRET = b"\xcf"


@frozen
class Firmware:
    """What :func:`install` put where: for the board (``ioapic_id`` must be its
    IOAPIC's ID), the debugger and the tests."""

    cpus: int
    ioapic_id: int
    memory_size: int
    #: Base memory the BDA reports, in KiB (640 less the EBDA).
    base_memory_kib: int
    ebda_address: int
    mp_pointer: int
    mp_table: int
    mp_table_length: int
    #: Where the reset vector jumps, and where the boot sector is.
    stub_address: int
    boot_address: int

    @property
    def extended_memory_kib(self) -> int:
        """Memory above 1 MiB in KiB (what CMOS bytes 0x17/0x18 say)."""
        return max(self.memory_size - (1 << 20), 0) >> 10


def check_boot_sector(boot_sector: bytes, source: str = "disk 0") -> bytes:
    """``boot_sector`` if a BIOS would boot it: 512 bytes ending 55 AA (the
    signature an IBM PC/AT-compatible BIOS checks before jumping to 0000:7C00).
    Otherwise a :class:`FirmwareError` naming ``source`` and what is wrong."""
    data = bytes(boot_sector)
    if len(data) != BOOT_SECTOR_SIZE:
        raise FirmwareError(f"{source}: the boot sector is {len(data)} bytes, "
                            f"not {BOOT_SECTOR_SIZE}")
    if data[510:] != BOOT_SIGNATURE:
        raise FirmwareError(f"{source}: no boot signature 0x55AA at byte 510 "
                            f"(found {data[510]:02X} {data[511]:02X})")
    return data


def install(memory: Any, *, cpus: int, memory_size: int | None = None,
            boot_sector: bytes, ioapic_id: int | None = None,
            irq_pins: Sequence[int] = IDENTITY_PINS, hard_disks: int = 1,
            source: str = "disk 0") -> Firmware:
    """Write the firmware's tables and code into ``memory`` (a
    :class:`vmi.cpu.memory.Memory`, at least 1 MiB) for a PC with ``cpus`` CPUs
    and boot it from ``boot_sector`` (see the module docstring for the layout).

    ``memory_size`` is the RAM the machine reports (default ``memory.size``; 1
    MiB at least, as the stub lives at 0xFE05B). ``ioapic_id`` is the IOAPIC's
    ID (default ``cpus``, the first after the CPUs'). ``irq_pins[n]`` is the
    IOAPIC pin ISA IRQ n drives. ``source`` names the boot sector's origin in
    errors. Raises :class:`FirmwareError` on a boot sector a BIOS would refuse
    or on a configuration the MP tables cannot describe.
    """
    sector = check_boot_sector(boot_sector, source)
    if memory_size is None:
        memory_size = memory.size
    if not (1 << 20) <= memory_size <= memory.size:
        raise FirmwareError(f"memory size {memory_size:#x}: the firmware needs at least "
                            f"1 MiB and at most the {memory.size:#x} bytes of RAM")
    if not 1 <= cpus <= MAX_CPUS:
        raise FirmwareError(f"{cpus} CPUs: the MP tables describe 1 to {MAX_CPUS} "
                            "(APIC IDs are unique and the IOAPIC's is 4 bits)")
    if ioapic_id is None:
        ioapic_id = cpus
    if not 0 <= ioapic_id <= 15:
        raise FirmwareError(f"IOAPIC ID {ioapic_id}: the IOAPIC's ID is 4 bits (0-15)")
    if ioapic_id < cpus:
        raise FirmwareError(f"IOAPIC ID {ioapic_id} is CPU {ioapic_id}'s APIC ID; "
                            "APIC IDs must be unique (use one >= the CPU count)")
    if len(irq_pins) != 16 or not all(0 <= pin < ioapic_model.ENTRIES for pin in irq_pins):
        raise FirmwareError(f"irq_pins {tuple(irq_pins)}: need 16 IOAPIC pins, each "
                            f"0-{ioapic_model.ENTRIES - 1}")
    if not 0 <= hard_disks <= 0xFF:
        raise FirmwareError(f"{hard_disks} hard disks: the BIOS data area counts 0-255")

    table = mp_table(cpus=cpus, ioapic_id=ioapic_id, irq_pins=irq_pins)
    _write_low_memory(memory, hard_disks)
    memory.write_bytes(MP_TABLE_ADDRESS, table)
    memory.write_bytes(MP_POINTER_ADDRESS, mp_pointer(MP_TABLE_ADDRESS))
    memory.write_bytes(ROM_ADDRESS + STUB_OFFSET, STUB)
    memory.write_bytes(ROM_ADDRESS + IRET_OFFSET, IRET)
    memory.write_bytes(ROM_ADDRESS + RESET_OFFSET, RESET_JUMP)
    memory.write8(ROM_ADDRESS + MODEL_OFFSET, MODEL_AT)
    memory.write_bytes(BOOT_ADDRESS, sector)
    return Firmware(
        cpus=cpus, ioapic_id=ioapic_id, memory_size=memory_size,
        base_memory_kib=640 - EBDA_KIB, ebda_address=EBDA_ADDRESS,
        mp_pointer=MP_POINTER_ADDRESS, mp_table=MP_TABLE_ADDRESS,
        mp_table_length=len(table), stub_address=ROM_ADDRESS + STUB_OFFSET,
        boot_address=BOOT_ADDRESS)


def _write_low_memory(memory: Any, hard_disks: int) -> None:
    """The interrupt vector table, the BIOS data area and the EBDA's size byte."""
    vector = (ROM_SEGMENT << 16 | IRET_OFFSET).to_bytes(4, "little")  # IP, then CS
    memory.write_bytes(0, vector * 256)
    memory.write_bytes(BDA, bytes(0x100))
    memory.write16(BDA_COM1, COM1_PORT)
    memory.write16(BDA_EBDA_SEGMENT, EBDA_SEGMENT)
    memory.write16(BDA_EQUIPMENT, EQUIPMENT)
    memory.write16(BDA_BASE_MEMORY, 640 - EBDA_KIB)
    memory.write8(BDA_VIDEO_MODE, 3)
    memory.write16(BDA_COLUMNS, 80)
    memory.write16(BDA_CRTC_PORT, 0x3D4)
    memory.write8(BDA_HARD_DISKS, hard_disks)
    memory.write_bytes(EBDA_ADDRESS, bytes(EBDA_KIB * 1024))
    memory.write8(EBDA_ADDRESS, EBDA_KIB)


def _checksummed(data: bytes, at: int) -> bytes:
    """``data`` with byte ``at`` set so that all its bytes sum to 0 modulo 256."""
    out = bytearray(data)
    out[at] = 0
    out[at] = -sum(out) & 0xFF
    return bytes(out)


def mp_pointer(table_address: int) -> bytes:
    """The 16-byte MP floating pointer structure (MP spec Table 4-1) for a
    configuration table at ``table_address``."""
    raw = _POINTER.pack(b"_MP_", table_address, 1, MP_SPEC_REV, 0, 0, 0, bytes(3))
    return _checksummed(raw, 10)


def mp_table(*, cpus: int, ioapic_id: int,
             irq_pins: Sequence[int] = IDENTITY_PINS) -> bytes:
    """The MP configuration table (MP spec Table 4-2 and the entries of §4.3)."""
    signature, _, _, features = CPUID_LEAVES[1]
    apic_version = lapic_model.VERSION_VALUE & 0xFF
    entries = [_PROCESSOR.pack(PROCESSOR, cpu, apic_version,
                               CPU_ENABLED | (CPU_BSP if cpu == 0 else 0),
                               signature, features, bytes(8))
               for cpu in range(cpus)]
    entries.append(_BUS.pack(BUS, ISA_BUS_ID, b"ISA   "))
    entries.append(_IOAPIC.pack(IOAPIC, ioapic_id, ioapic_model.VERSION_VALUE & 0xFF,
                                1, IOAPIC_ADDRESS))
    entries += [_INTERRUPT.pack(IO_INTERRUPT, INT, 0, ISA_BUS_ID, irq, ioapic_id, pin)
                for irq, pin in enumerate(irq_pins)]
    entries.append(_INTERRUPT.pack(LOCAL_INTERRUPT, EXTINT, 0, ISA_BUS_ID, 0,
                                   ALL_LOCAL_APICS, 0))
    entries.append(_INTERRUPT.pack(LOCAL_INTERRUPT, NMI, 0, ISA_BUS_ID, 0,
                                   ALL_LOCAL_APICS, 1))
    body = b"".join(entries)
    header = _HEADER.pack(b"PCMP", _HEADER.size + len(body), MP_SPEC_REV, 0,
                          OEM_ID.ljust(8), PRODUCT_ID.ljust(12), 0, 0, len(entries),
                          LOCAL_APIC_ADDRESS, 0, 0, 0)
    return _checksummed(header + body, 7)


def startup_state(vector: int) -> tuple[int, int]:
    """The real-mode CS and IP at which a STARTUP IPI with ``vector`` starts an
    application processor: CS = ``vector << 8`` (base ``vector << 12``), IP = 0
    (SDM Vol.3A §8.4.4.1 "Typical BSP Initialization Sequence", MP spec B.4.2).
    Vectors A0h-BFh are reserved by Intel; this gives what the formula says."""
    if not 0 <= vector <= 0xFF:
        raise ValueError(f"STARTUP vector {vector:#x} is not a byte")
    return vector << 8, 0


# -- reading the tables back, as a guest does ---------------------------------------------
def _sum(memory: Any, address: int, length: int) -> int:
    return sum(memory.read_bytes(address, length)) & 0xFF


def find_mp_pointer(memory: Any) -> int | None:
    """The address of the MP floating pointer structure, searched as xv6's
    ``mpsearch`` (mp.c) does, which follows MP spec §4: the first KiB of the EBDA
    if the BDA's word at 0x40E is not 0, otherwise the last KiB of base memory
    (BDA word 0x413, in KiB), then F0000-FFFFF; on 16-byte boundaries, a match
    being "_MP_" whose 16 bytes sum to 0. None if there is none."""
    ebda = memory.read16(BDA_EBDA_SEGMENT) << 4
    if ebda:
        regions = [(ebda, 1024)]
    else:
        regions = [(memory.read16(BDA_BASE_MEMORY) * 1024 - 1024, 1024)]
    regions.append((0xF0000, 0x10000))
    for start, length in regions:
        for address in range(start, start + length, 16):
            if (memory.read_bytes(address, 4) == b"_MP_"
                    and _sum(memory, address, 16) == 0):
                return address
    return None


def describe_mp(memory: Any) -> dict[str, Any]:
    """The MP tables a guest finds in ``memory``, checked as xv6's ``mpconfig``
    and ``mpinit`` check them (a pointer with a non-zero table address, "PCMP",
    revision 1 or 4, a zero checksum over the table's length, known entry
    types). Raises :class:`FirmwareError` naming the first thing wrong."""
    pointer = find_mp_pointer(memory)
    if pointer is None:
        raise FirmwareError("MP tables: no MP floating pointer structure ('_MP_' with "
                            "a zero checksum) in the EBDA, base memory or F0000-FFFFF")
    (_, table, _, spec_rev, _, config_type, feature2,
     _) = _POINTER.unpack(memory.read_bytes(pointer, 16))
    if table == 0:
        raise FirmwareError(f"MP tables: the pointer at {pointer:#x} names no "
                            f"configuration table (default configuration {config_type})")
    raw = memory.read_bytes(table, _HEADER.size)
    (signature, length, version, _, oem, product, _, _, count, lapic,
     _, _, _) = _HEADER.unpack(raw)
    if signature != b"PCMP":
        raise FirmwareError(f"MP tables: no 'PCMP' at {table:#x}")
    if version not in (1, 4):
        raise FirmwareError(f"MP tables: configuration table revision {version}, "
                            "not 1 or 4")
    if _sum(memory, table, length) != 0:
        raise FirmwareError(f"MP tables: the configuration table at {table:#x} "
                            f"({length} bytes) does not sum to 0")
    out: dict[str, Any] = {
        "pointer": pointer, "spec_rev": spec_rev, "imcr": bool(feature2 & 0x80),
        "table": table, "length": length, "version": version, "entries": count,
        "oem": oem.decode("ascii", "replace").rstrip(),
        "product": product.decode("ascii", "replace").rstrip(),
        "lapic_address": lapic, "processors": [], "buses": [], "ioapics": [],
        "interrupts": [], "local_interrupts": [],
    }
    address, end = table + _HEADER.size, table + length
    while address < end:
        kind = memory.read8(address)
        if kind not in ENTRY_SIZES:
            raise FirmwareError(f"MP tables: unknown entry type {kind} at {address:#x}")
        data = memory.read_bytes(address, ENTRY_SIZES[kind])
        if kind == PROCESSOR:
            _, apic_id, apic_version, flags, cpu_signature, features, _ = \
                _PROCESSOR.unpack(data)
            out["processors"].append({
                "apic_id": apic_id, "version": apic_version,
                "enabled": bool(flags & CPU_ENABLED), "bsp": bool(flags & CPU_BSP),
                "signature": cpu_signature, "features": features})
        elif kind == BUS:
            _, bus_id, bus_type = _BUS.unpack(data)
            out["buses"].append({"id": bus_id, "type": bus_type.decode("ascii").rstrip()})
        elif kind == IOAPIC:
            _, apic_id, apic_version, flags, base = _IOAPIC.unpack(data)
            out["ioapics"].append({"id": apic_id, "version": apic_version,
                                   "enabled": bool(flags & 1), "address": base})
        else:
            _, int_type, flags, bus_id, irq, dest, pin = _INTERRUPT.unpack(data)
            key = "interrupts" if kind == IO_INTERRUPT else "local_interrupts"
            out[key].append({"type": int_type, "flags": flags, "bus": bus_id,
                             "irq": irq, "destination": dest, "pin": pin})
        address += ENTRY_SIZES[kind]
    return out
