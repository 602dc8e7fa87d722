"""ENTER (SDM Vol.2 ENTER, "Operation"; Intel386 Programmer's Reference Manual,
ENTER): the frame pointer, the display copies, and the probe of the final stack
pointer that makes a faulting ENTER change nothing. Each test names its rule."""

from __future__ import annotations

import pytest

from tests.cpu.test_paging import paged_cpu, set_pte
from tests.cpu.test_protected import EXPDOWN_SS, K_CS, K_DS, enter, system_cpu
from vmi.cpu import CPU, Memory
from vmi.cpu.errors import CPUException


def flat(code: bytes, **regs: int) -> CPU:
    cpu = CPU.flat(Memory(1 << 20))
    cpu.mem.load(0x1000, code)
    cpu.eip = 0x1000
    for name, value in regs.items():
        setattr(cpu.regs, name, value)
    return cpu


def snapshot(cpu: CPU, low: int, high: int) -> tuple:
    return list(cpu.r), cpu.mem.read_bytes(low, high - low)


def test_level_0_pushes_ebp_points_ebp_at_it_and_reserves():
    """SDM Vol.2 ENTER: nesting level 0 is push EBP; EBP = FrameTemp; ESP -= size."""
    cpu = flat(b"\xc8\x10\x00\x00", esp=0x8000, ebp=0xAABBCCDD)  # enter $16,$0
    cpu.step()
    assert cpu.mem.read32(0x7FFC) == 0xAABBCCDD
    assert cpu.regs.ebp == 0x7FFC and cpu.regs.esp == 0x7FFC - 16


def test_nesting_level_copies_the_enclosing_frame_pointers():
    """SDM Vol.2 ENTER: for level L > 0, L - 1 frame pointers are copied from
    [EBP - 4], [EBP - 8], ... and then FrameTemp itself is pushed."""
    cpu = flat(b"\xc8\x08\x00\x03", esp=0x8000, ebp=0x9000)  # enter $8,$3
    cpu.mem.write32(0x9000 - 4, 0x11111111)
    cpu.mem.write32(0x9000 - 8, 0x22222222)
    cpu.step()
    frame = 0x7FFC
    assert [cpu.mem.read32(frame - 4 * i) for i in range(4)] == [
        0x9000, 0x11111111, 0x22222222, frame]
    assert cpu.regs.ebp == frame and cpu.regs.esp == frame - 12 - 8


def test_level_is_taken_modulo_32():
    """SDM Vol.2 ENTER: NestingLevel <- NestingLevel MOD 32 (level 33 acts as 1)."""
    cpu = flat(b"\xc8\x00\x00\x21", esp=0x8000, ebp=0x9000)
    cpu.step()
    assert cpu.mem.read32(0x7FF8) == 0x7FFC and cpu.regs.esp == 0x7FF8


def test_32bit_operand_on_a_16bit_stack_frame_pointer_is_the_whole_esp():
    """SDM Vol.2 ENTER (FrameTemp), Intel386 PRM ENTER (``frame-ptr := eSP``), Bochs
    ENTER32_IwIb (``frame_ptr32 = ESP``): with a 32-bit operand size on a 16-bit
    stack, FrameTemp is the whole ESP after the push; EBP gets it and the frame
    pointer push (level > 0) stores it. SP alone moves."""
    cpu = flat(b"\x66\xc8\x04\x00\x01", esp=0x12340010, ebp=0x5678)
    cpu.code_bits = cpu.stack_bits = 16
    cpu.mode_changed()
    cpu.step()
    assert cpu.regs.ebp == 0x1234000C
    assert cpu.mem.read32(0x0C) == 0x5678 and cpu.mem.read32(0x08) == 0x1234000C
    assert cpu.regs.esp == 0x12340004


def test_16bit_operand_writes_bp_only():
    """SDM Vol.2 ENTER: with a 16-bit operand size only BP receives FrameTemp (EBP's
    upper half is kept) and 2-byte frame pointers are pushed."""
    cpu = flat(b"\x66\xc8\x00\x00\x00", esp=0x8000, ebp=0xABCD1234)
    cpu.step()
    assert cpu.mem.read16(0x7FFE) == 0x1234
    assert cpu.regs.ebp == 0xABCD7FFE and cpu.regs.esp == 0x7FFE


def test_final_stack_pointer_outside_the_segment_is_ss_fault_with_nothing_changed():
    """SDM Vol.2 ENTER, Protected Mode Exceptions: #SS(0) "if the new value of the SP
    or ESP register is outside the stack segment limit"; Bochs ends ENTER with a write
    check of the final stack pointer. The check comes before any store: registers and
    memory are unchanged (SDM Vol.3A §6.5, faults are restartable)."""
    cpu = system_cpu(cpl=0, platform=False)
    enter(cpu, K_CS, EXPDOWN_SS, K_DS, esp=0x1010)  # valid offsets 0x1000 and up
    cpu.r[5] = 0x2000
    cpu.mem.load(0x50000, b"\xc8\x20\x00\x02")  # enter $0x20,$2
    cpu.eip = 0x50000
    before = snapshot(cpu, 0xF00, 0x1010)
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert (info.value.vector, info.value.error_code) == (12, 0)
    assert snapshot(cpu, 0xF00, 0x1010) == before and cpu.eip == 0x50000


def test_final_stack_pointer_on_an_absent_page_is_a_write_page_fault_with_nothing_changed():
    """SDM Vol.2 ENTER, #PF(fault-code) "if a page fault occurs": the probe of the final
    stack pointer is a write (error code W/R = 1, CR2 its address), raised before the
    push of EBP lands on the page above, which is present; nothing changes."""
    cpu = paged_cpu(cpl=0)
    enter(cpu, K_CS, K_DS, K_DS, esp=0x31008)
    set_pte(cpu, 0x30000, 0)  # the page below is absent
    cpu.r[5] = 0x31100
    cpu.mem.load(0x50000, b"\xc8\x10\x00\x00")  # enter $16,$0: final ESP 0x30FF4
    cpu.eip = 0x50000
    before = snapshot(cpu, 0x31000, 0x31010)
    with pytest.raises(CPUException) as info:
        cpu.run(1)
    assert (info.value.vector, info.value.error_code) == (14, 0x2)
    assert cpu.cr[2] == 0x30FF4
    assert snapshot(cpu, 0x31000, 0x31010) == before and cpu.eip == 0x50000
