"""Physical memory: Python ints out, open bus past RAM, the reset alias, and
decoded code forgotten when it is written (self-modifying code)."""

from vmi.cpu import CPU, Memory


def test_reads_are_python_ints_and_little_endian():
    mem = Memory(1 << 16)
    mem.write32(0x100, 0x11223344)
    assert type(mem.read32(0x100)) is int
    assert mem.read_bytes(0x100, 4) == bytes.fromhex("44332211")
    assert mem.read16(0x101) == 0x2233 and mem.read8(0x103) == 0x11


def test_past_ram_is_an_empty_bus():
    mem = Memory(1 << 16)
    assert mem.read8(0x10000) == 0xFF and mem.read32(0xFFFE) == 0xFFFF0000
    mem.write32(0xFFFE, 0xAABBCCDD)  # the part inside RAM lands, the rest is dropped
    assert mem.read16(0xFFFE) == 0xCCDD


def test_top_of_4g_aliases_the_bios_window_for_the_reset_vector():
    mem = Memory(1 << 20)
    mem.load(0xFFFF0, bytes.fromhex("ea5be000f0"))
    assert mem.read_bytes(0xFFFFFFF0, 5) == bytes.fromhex("ea5be000f0")


def test_writing_decoded_code_is_seen_by_the_next_fetch():
    cpu = CPU.flat(Memory(1 << 16))
    # mov $0x41,%al ; then the program overwrites that immediate and jumps back
    cpu.mem.load(0x1000, bytes.fromhex("b041"))
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.regs.al == 0x41 and 0x1000 in cpu.icache
    cpu.mem.write8(0x1001, 0x42)  # a store into a page holding decoded code
    assert not cpu.icache
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.regs.al == 0x42
