"""Faithful write cycles and page walks: a shift or rotate of memory by a count that
masks to 0 is still a read-modify-write (vmi/cpu/ops/shift.py, the comment above
``_assemble``, gives the evidence: Bochs' ``read_RMW_virtual_*``, the 80C286 bus
captures), and a faulting page walk sets the accessed flag of the directory entry it
used (SDM Vol.3A §4.8; Shanley, *The Unabridged Pentium 4*, ch. 12)."""

from __future__ import annotations

import pytest

from tests.cpu.test_paging import PD, paged_cpu, pte, set_pte
from tests.cpu.test_protected import K_CS, K_DS, RO_DS, enter, system_cpu
from vmi.cpu import CPU
from vmi.cpu.errors import CPUException

PAGE = 0x30000


def run(cpu: CPU, code: bytes) -> None:
    cpu.mem.load(0x50000, code)
    cpu.icache.clear()
    cpu.eip = 0x50000
    cpu.run(1)


def fault(cpu: CPU, code: bytes) -> tuple[int, int | None]:
    with pytest.raises(CPUException) as info:
        run(cpu, code)
    assert cpu.eip == 0x50000
    return info.value.vector, info.value.error_code


@pytest.mark.parametrize("code", [
    b"\xd3\x25\x00\x00\x03\x00",  # shll %cl,0x30000 (CL = 0x20: masks to 0)
    b"\xc1\x05\x00\x00\x03\x00\x40",  # roll $0x40,0x30000
    b"\xd2\x15\x00\x00\x03\x00",  # rclb %cl,0x30000
    b"\x0f\xa5\x05\x00\x00\x03\x00",  # shld %cl,%eax,0x30000
])
def test_zero_count_on_a_read_only_page_is_a_write_page_fault(code):
    """Shift/rotate with count & 31 = 0 on memory: the operand is accessed for
    writing (Bochs read_RMW_virtual_*), so a user access to a read-only page raises
    #PF with P, W/R and U/S set (SDM Vol.3A §4.7), CR2 the operand's address, and
    nothing else changes."""
    cpu = paged_cpu(cpl=3)
    set_pte(cpu, PAGE, PAGE | 0x5)  # present, user, read-only
    cpu.mem.write32(PAGE, 0x81234567)
    cpu.r[1] = 0x20
    flags = cpu.eflags
    assert fault(cpu, code) == (14, 0x7)
    assert cpu.cr[2] == PAGE and cpu.mem.read32(PAGE) == 0x81234567
    assert cpu.eflags == flags


def test_zero_count_sets_the_dirty_flag_and_stores_the_same_value():
    """Shift with count & 31 = 0 on a writable page: the write-intent access sets the
    PTE's dirty flag (SDM Vol.3A §4.8), the operand and the flags keep their values."""
    cpu = paged_cpu(cpl=0)
    cpu.mem.write32(PAGE, 0x81234567)
    cpu.r[1] = 0x40
    flags = cpu.eflags
    run(cpu, b"\xd3\x2d\x00\x00\x03\x00")  # shrl %cl,0x30000
    assert pte(cpu, PAGE) & 0x60 == 0x60
    assert cpu.mem.read32(PAGE) == 0x81234567 and cpu.eflags == flags
    cpu = paged_cpu(cpl=0)
    run(cpu, b"\xc1\x2d\x00\x00\x03\x00\x00")  # shrl $0,0x30000: the immediate form
    assert pte(cpu, PAGE) & 0x60 == 0x60


def test_zero_count_on_a_read_only_segment_is_gp0():
    """The write check of the read-modify-write includes the segment's (SDM Vol.3A
    §5.4: writing a read-only data segment is #GP(0)); 86Box's 386 cores make it
    (SEG_CHECK_WRITE) before they look at the count."""
    cpu = system_cpu(cpl=0, platform=False)
    enter(cpu, K_CS, K_DS, RO_DS)
    cpu.mem.write32(PAGE, 5)
    cpu.r[1] = 0
    assert fault(cpu, b"\xd3\x25\x00\x00\x03\x00") == (13, 0)
    assert cpu.mem.read32(PAGE) == 5


def test_register_count_zero_touches_nothing():
    """A register operand with count & 31 = 0: no memory access at all, no flag."""
    cpu = paged_cpu(cpl=0)
    cpu.r[0], cpu.r[1] = 0x8000_0001, 0x20
    flags = cpu.eflags
    run(cpu, b"\xd3\xe0")  # shl %cl,%eax
    assert cpu.r[0] == 0x8000_0001 and cpu.eflags == flags


#: A second page table, for linear 4 MiB .. 8 MiB (PDE 1): the walks below use a
#: directory entry nothing else (code, stack) goes through.
PT1, HIGH = 0x102000, 0x400000


def high_table(cpu: CPU, pte_value: int) -> None:
    cpu.mem.write32(PD + 4, PT1 | 0x7)  # present, user, writable; A clear
    cpu.mem.write32(PT1, pte_value)
    cpu.tlb.clear()


def test_walk_to_an_absent_pte_sets_the_directory_entry_accessed_flag():
    """SDM Vol.3A §4.8 ("whenever the processor uses a paging-structure entry as part
    of linear-address translation, it sets the accessed flag"): the directory entry
    was used to reach the page table, so its A flag is set although the walk ends in
    #PF; the absent PTE is left as it was."""
    cpu = paged_cpu(cpl=0)
    high_table(cpu, 0xABC & ~1)
    assert fault(cpu, b"\xa1\x00\x00\x40\x00") == (14, 0x0)  # mov 0x400000,%eax
    assert cpu.mem.read32(PD + 4) == PT1 | 0x27
    assert cpu.mem.read32(PT1) == 0xABC & ~1


def test_rights_fault_sets_the_pde_accessed_flag_but_not_the_pte():
    """Shanley, The Unabridged Pentium 4, ch. 12 "Page Faults": on a not-present or
    rights page fault "the A and D bits are affected in the PDE, but not in the PTE.
    The PTE's A and D bits are only affected if the page access succeeds"."""
    cpu = paged_cpu(cpl=3)
    high_table(cpu, 0x200000 | 0x1)  # present, supervisor
    assert fault(cpu, b"\xa1\x00\x00\x40\x00") == (14, 0x5)
    assert cpu.mem.read32(PD + 4) == PT1 | 0x27
    assert cpu.mem.read32(PT1) == 0x200000 | 0x1
    cpu = paged_cpu(cpl=3)
    high_table(cpu, 0x200000 | 0x5)  # present, user, read-only: a user write faults
    assert fault(cpu, b"\xa3\x00\x00\x40\x00") == (14, 0x7)  # mov %eax,0x400000
    assert cpu.mem.read32(PD + 4) == PT1 | 0x27
    assert cpu.mem.read32(PT1) == 0x200000 | 0x5


def test_absent_directory_entry_changes_nothing():
    """A walk that stops at an absent PDE used no entry: nothing is written."""
    cpu = paged_cpu(cpl=0)
    cpu.mem.write32(PD + 4, 0x12344FF0)  # PDE 1 (linear 4 MiB up): P clear
    assert fault(cpu, b"\xa1\x00\x00\x40\x00") == (14, 0x0)
    assert cpu.mem.read32(PD + 4) == 0x12344FF0
