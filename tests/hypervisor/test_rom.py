"""The ROM: header, checksum, call slots and windows, read back through a machine at
the published linear address after Init, and found by the guest's scan."""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import Guest
from vmi.cpu import decode, paging
from vmi.hypervisor import build_rom, layout

PARKED = """
main:
	CLI
	hlt
"""


@pytest.fixture(scope="module")
def guest() -> Guest:
    g = Guest(PARKED, monitor="vmi")
    g.run(1000)
    assert g.cpu.cpl == 1
    return g


def read_linear(g: Guest, address: int, size: int) -> bytes:
    """Bytes at a linear address through the CPU's (shadow) page tables."""
    return bytes(paging.read_linear(g.cpu, address + i, 1) for i in range(size))


def test_image_is_one_page_with_zero_checksum() -> None:
    rom = build_rom()
    assert len(rom.image) == layout.ROM_SIZE == 4096
    assert sum(rom.image) & 0xFF == 0


def test_header_at_the_published_address(guest: Guest) -> None:
    header = read_linear(guest, layout.ROM_LINEAR, 0x2C)
    assert header[0:2] == b"\x55\xaa"
    assert header[2] * 512 == layout.ROM_SIZE
    assert int.from_bytes(header[8:12], "little") == 0x696D5663 == layout.SIGNATURE
    assert header[8:12] == b"cVmi"
    assert (header[0x0C], header[0x0D]) == (layout.API_MINOR, layout.API_MAJOR) == (0, 13)
    assert int.from_bytes(header[0x0E:0x10], "little") == layout.SLOT_COUNT
    assert int.from_bytes(header[0x10:0x14], "little") == layout.ROM_LINEAR
    assert int.from_bytes(header[0x20:0x24], "little") == layout.SHARED_LINEAR
    assert int.from_bytes(header[0x24:0x28], "little") == layout.SHARED_VIF
    assert int.from_bytes(header[0x28:0x2C], "little") == layout.SHARED_PENDING
    license_offset = int.from_bytes(header[0x16:0x18], "little")
    text = read_linear(guest, layout.ROM_LINEAR + license_offset, 19)
    assert text == b"vmi model ROM (MIT)"


def test_whole_rom_visible_and_equal_to_the_image(guest: Guest) -> None:
    rom = build_rom()
    assert read_linear(guest, layout.ROM_LINEAR, layout.ROM_SIZE) == rom.image
    assert guest.machine.memory.read_bytes(layout.ROM_PHYSICAL, layout.ROM_SIZE) == rom.image


def test_scan_finds_exactly_one_rom(guest: Guest) -> None:
    """The 2006 scan (reference §1): 0xC0000-0xE0000 in 2 KiB steps, 0xAA55, 'cVmi' at
    +8, byte sum over length*512 = 0."""
    mem = guest.machine.memory
    found = []
    for address in range(layout.SCAN_START, layout.SCAN_END, layout.SCAN_STEP):
        if mem.read16(address) == 0xAA55 and mem.read32(address + 8) == layout.SIGNATURE:
            length = mem.read8(address + 2) * 512
            if sum(mem.read_bytes(address, length)) & 0xFF == 0:
                found.append(address)
    assert found == [layout.ROM_PHYSICAL]


def disassemble(code: bytes, address: int, count: int) -> list[str]:
    out = []
    for _ in range(count):
        insn = decode(code, address)
        out.append(str(insn))
        code = code[insn.length:]
        address += insn.length
    return out


@pytest.mark.parametrize(("call", "expected"), [
    (layout.CALL_INIT, ["ud2"]),
    (layout.CALL_CPUID, ["cpuid", "ret"]),
    (layout.CALL_WRMSR, ["ud2"]),
    (layout.CALL_RDMSR, ["ud2"]),
    (layout.CALL_GET_CR0, ["mov    %ss:0xffc01008,%eax", "ret"]),
    (layout.CALL_CLTS, ["ud2"]),
    (layout.CALL_ENABLE_INTERRUPTS, ["movl   $0x200,%ss:0xffc01000", "pushf",
                                     "cmpl   $0x0,%ss:0xffc01004"]),
    (layout.CALL_DISABLE_INTERRUPTS, ["movl   $0x0,%ss:0xffc01000", "ret"]),
    (layout.CALL_IRET, ["jmp    0xffc00900"]),
    (layout.CALL_HALT, ["ud2"]),
])
def test_slots_at_rom_plus_32n(guest: Guest, call: int, expected: list[str]) -> None:
    address = layout.slot_address(call)
    assert address == layout.ROM_LINEAR + 32 * call
    code = read_linear(guest, address, 32)
    assert disassemble(code, address, len(expected)) == expected


def test_unimplemented_slots_hold_ud2() -> None:
    rom = build_rom()
    implemented = {4, 5, 6, 7, 24, 34, 35, 36, 37, 38, 39, 40, 42}
    for call in range(layout.CALL_INIT, layout.SLOT_COUNT):
        slot = rom.slot(call)
        if call not in implemented:
            assert slot[:2] == b"\x0f\x0b", call
            assert call * 32 in rom.unimplemented


def test_windows_are_exported_and_inside_the_rom() -> None:
    rom = build_rom()
    s = rom.symbols
    iret, sysexit = rom.iret_window, rom.sysexit_window
    assert (iret.start, iret.end) == (s["vmi_iret_window_start"], s["vmi_iret_window_end"])
    assert (sysexit.start, sysexit.end) == (s["vmi_sysexit_window_start"],
                                            s["vmi_sysexit_window_end"])
    for window in rom.windows:
        assert layout.ROM_LINEAR <= window.start < window.end <= layout.ROM_LINEAR + 4096
    # each window ends right after its iret (CF), which is the last thing in it
    image = rom.image
    assert image[iret.end - 1 - layout.ROM_LINEAR] == 0xCF
    assert image[sysexit.end - 1 - layout.ROM_LINEAR] == 0xCF
    assert s["vmi_iret_insn"] == iret.end - 1
    assert rom.window_at(s["vmi_iret_insn"]) is iret
    assert rom.window_at(iret.start - 1) is None
