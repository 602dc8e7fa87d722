"""Two-level paging, the TLB and the protected-mode memory accessors (segment checks
plus translation). Docstrings name the SDM Vol.3A rule each test checks."""

from __future__ import annotations

import struct

import pytest

from tests.cpu.test_protected import (
    CODE,
    K_CS,
    K_DS,
    KSTACK0,
    USER_CS,
    USER_DS,
    dwords,
    enter,
    fault_of,
    handler,
    put_desc,
    run_code,
    seg_desc,
    system_cpu,
    wire,
)
from vmi.cpu import CPU, paging, protected
from vmi.cpu.descriptors import ATTR_UNUSABLE
from vmi.cpu.ops.system import write_cr

PD = 0x100000
PT = 0x101000  # maps linear 0 .. 4 MiB


@pytest.fixture(autouse=True)
def _wired(monkeypatch: pytest.MonkeyPatch) -> None:
    wire(monkeypatch)


def paged_cpu(*, cpl: int = 0, platform: bool = False, wp: bool = False) -> CPU:
    """A system CPU with the first 4 MiB identity-mapped by user, writable 4 KiB
    pages (A and D clear) and paging on."""
    cpu = system_cpu(cpl=cpl, platform=platform)
    cpu.mem.write32(PD, PT | 7)
    for page in range(1024):
        cpu.mem.write32(PT + page * 4, (page << 12) | 7)
    write_cr(cpu, 3, PD)
    write_cr(cpu, 0, cpu.cr[0] | 0x80000000 | (0x10000 if wp else 0))
    return cpu


def set_pte(cpu: CPU, linear: int, value: int) -> None:
    cpu.mem.write32(PT + (linear >> 12) * 4, value)


def pte(cpu: CPU, linear: int) -> int:
    return cpu.mem.read32(PT + (linear >> 12) * 4)


def test_not_present_error_codes_and_cr2():
    """SDM Vol.3A §4.7: a not-present page gives #PF with P = 0, W/R = 1 for a
    write, U/S = 1 at CPL 3, and CR2 = the linear address."""
    cpu = paged_cpu()
    set_pte(cpu, 0x300000, 0)
    assert fault_of(lambda: cpu.rd32(3, 0x300010)) == (14, 0)
    assert cpu.cr[2] == 0x300010
    assert fault_of(lambda: cpu.wr8(3, 0x300020, 1)) == (14, 2)
    assert cpu.cr[2] == 0x300020
    enter(cpu, USER_CS, USER_DS, USER_DS)
    assert fault_of(lambda: cpu.rd16(3, 0x300030)) == (14, 4)
    assert fault_of(lambda: cpu.wr32(3, 0x300040, 1)) == (14, 6)
    assert cpu.cr[2] == 0x300040


def test_not_present_page_directory_entry():
    """SDM Vol.3A §4.3: a PDE with P = 0 faults the same way (no page table read)."""
    cpu = paged_cpu()
    cpu.mem.write32(PD + 4, 0)  # linear 4 MiB .. 8 MiB
    assert fault_of(lambda: cpu.rd8(3, 0x400000)) == (14, 0)
    assert cpu.cr[2] == 0x400000


def test_user_access_to_supervisor_page():
    """SDM Vol.3A §4.6: a user-mode access needs U/S = 1 at both levels; a violation
    is #PF with P = 1. A supervisor access to the page, cached in the TLB, does not
    let the user in."""
    cpu = paged_cpu()
    set_pte(cpu, 0x300000, 0x300000 | 3)  # supervisor, writable
    assert cpu.rd32(3, 0x300000) == 0  # CPL 0 may
    enter(cpu, USER_CS, USER_DS, USER_DS)
    assert fault_of(lambda: cpu.rd32(3, 0x300000)) == (14, 5)
    assert fault_of(lambda: cpu.wr32(3, 0x300000, 1)) == (14, 7)
    cpu.mem.write32(PD, PT | 3)  # the PDE's U/S = 0 too
    cpu.tlb.clear()
    assert fault_of(lambda: cpu.rd32(3, 0x1000)) == (14, 5)


def test_write_protect():
    """SDM Vol.3A §4.6: a user write needs R/W = 1; a supervisor write to a read-only
    page succeeds when CR0.WP = 0 and is #PF(P | W) when CR0.WP = 1."""
    cpu = paged_cpu()
    set_pte(cpu, 0x300000, 0x300000 | 5)  # user, read-only
    cpu.wr32(3, 0x300000, 0x1234)
    assert cpu.mem.read32(0x300000) == 0x1234
    write_cr(cpu, 0, cpu.cr[0] | 0x10000)  # WP
    assert fault_of(lambda: cpu.wr32(3, 0x300004, 1)) == (14, 3)
    assert cpu.rd32(3, 0x300000) == 0x1234
    enter(cpu, USER_CS, USER_DS, USER_DS)
    assert fault_of(lambda: cpu.wr8(3, 0x300000, 1)) == (14, 7)


def test_accessed_and_dirty_bits():
    """SDM Vol.3A §4.8: a translation sets A in the PDE and the PTE; a write sets D in
    the PTE, also when an earlier read had already cached the page."""
    cpu = paged_cpu()
    assert not cpu.mem.read32(PD) & 0x20 and not pte(cpu, 0x5000) & 0x60
    cpu.rd32(3, 0x5000)
    assert cpu.mem.read32(PD) & 0x20 and pte(cpu, 0x5000) & 0x60 == 0x20
    cpu.wr32(3, 0x5004, 7)
    assert pte(cpu, 0x5000) & 0x60 == 0x60
    assert not cpu.mem.read32(PD) & 0x40, "D lives in the PTE only"


def test_cr3_write_and_invlpg_flush_the_tlb():
    """SDM Vol.3A §4.10.4.1: a MOV to CR3 invalidates every TLB entry and INVLPG the
    entries of one page, so a changed PTE takes effect after either."""
    cpu = paged_cpu()
    cpu.mem.write32(0x6000, 0x6666)
    cpu.mem.write32(0x7000, 0x7777)
    assert cpu.rd32(3, 0x6000) == 0x6666
    set_pte(cpu, 0x6000, 0x7000 | 7)
    cpu.r[0] = PD
    run_code(cpu, b"\x0f\x22\xd8")  # mov %eax,%cr3
    assert cpu.rd32(3, 0x6000) == 0x7777
    set_pte(cpu, 0x6000, 0x6000 | 7)
    cpu.r[0] = 0x6000
    run_code(cpu, b"\x0f\x01\x38")  # invlpg (%eax)
    assert cpu.rd32(3, 0x6000) == 0x6666


def test_large_pages_with_pse():
    """SDM Vol.3A §4.3, Table 4-4: with CR4.PSE = 1 a PDE with PS = 1 maps a 4 MiB
    page (bits 31:22 of the frame); A and D are set in that PDE. INVLPG of any
    address inside it drops it."""
    cpu = paged_cpu()
    cpu.mem.write32(PD + 4, 0x00000000 | 0x87)  # linear 4 MiB -> physical 0, 4 MiB page
    write_cr(cpu, 4, 0x10)
    cpu.mem.write32(0x1234, 0xCAFE)
    assert cpu.rd32(3, 0x401234) == 0xCAFE
    cpu.wr32(3, 0x401238, 1)
    assert cpu.mem.read32(PD + 4) & 0x60 == 0x60
    cpu.mem.write32(PD + 4, 0)
    paging.invalidate_page(cpu, 0x7FFFFF)
    assert fault_of(lambda: cpu.rd32(3, 0x401234)) == (14, 0)


def test_page_crossing_access():
    """SDM Vol.3A §4.3: an access that spans two pages translates each; a write
    faults before storing anything when the second page is absent."""
    cpu = paged_cpu()
    set_pte(cpu, 0x10000, 0x20000 | 7)
    set_pte(cpu, 0x11000, 0x30000 | 7)
    cpu.wr32(3, 0x10FFE, 0x44332211)
    assert cpu.mem.read16(0x20FFE) == 0x2211 and cpu.mem.read16(0x30000) == 0x4433
    assert cpu.rd32(3, 0x10FFE) == 0x44332211
    set_pte(cpu, 0x11000, 0)
    cpu.tlb.clear()
    assert fault_of(lambda: cpu.wr32(3, 0x10FFE, 0xFFFFFFFF)) == (14, 2)
    assert cpu.cr[2] == 0x11000 and cpu.mem.read16(0x20FFE) == 0x2211


def test_instruction_fetch_is_translated():
    """SDM Vol.3A §4.3: instruction fetches are translated like data reads; the
    linear page 0x8000_0000 here maps physical CODE."""
    cpu = paged_cpu()
    cpu.mem.write32(PD + (0x80000000 >> 22) * 4, PT | 7)
    cpu.mem.load(CODE, b"\xb8\x78\x56\x34\x12")  # mov $0x12345678,%eax
    cpu.eip = 0x80000000 | CODE
    cpu.run(1)
    assert cpu.r[0] == 0x12345678 and cpu.eip == 0x80000000 | (CODE + 5)


def test_page_fault_delivered_from_ring3():
    """SDM Vol.3A §6.15 "Interrupt 14": the #PF frame carries the error code; CR2 the
    address; EIP the faulting instruction."""
    cpu = paged_cpu(cpl=3, platform=True)
    set_pte(cpu, 0x300000, 0x300000 | 5)  # user read-only
    cpu.r[0] = 0x300008
    run_code(cpu, b"\x89\x00")  # mov %eax,(%eax)
    assert cpu.eip == handler(14) and cpu.cr[2] == 0x300008
    assert dwords(cpu, KSTACK0 - 24, 3) == [7, CODE, USER_CS]


def test_segment_base_and_paging_combine():
    """SDM Vol.3A §3.1, §4.1: segmentation gives the linear address (base + offset,
    checked against the limit), paging translates it."""
    cpu = paged_cpu()
    put_desc(cpu, 0xC0, seg_desc(0x10000, 0xFFF, 0x3))
    protected.load_segment(cpu, 0, 0xC0)
    set_pte(cpu, 0x10000, 0x20000 | 7)
    cpu.wr32(0, 0x10, 0xABCD)
    assert cpu.mem.read32(0x20010) == 0xABCD
    assert fault_of(lambda: cpu.rd32(0, 0xFFE)) == (13, 0)


def test_expand_down_16bit_upper_bound():
    """SDM Vol.3A §3.4.5.1: an expand-down segment with B = 0 spans limit+1 .. 0xFFFF."""
    cpu = system_cpu(platform=False)
    put_desc(cpu, 0xC0, seg_desc(0, 0x0FFF, 0x7, db=0))
    protected.load_segment(cpu, 0, 0xC0)
    cpu.wr16(0, 0xFFFE, 0x55)
    assert fault_of(lambda: cpu.rd32(0, 0xFFFE)) == (13, 0)
    assert fault_of(lambda: cpu.rd8(0, 0x0FFF)) == (13, 0)


def test_fast_paths():
    """Speed: with paging off and flat segments the accessors carry no segment test;
    a null FS/GS (the usual user state) adds one comparison, not the checked path."""
    cpu = system_cpu(platform=False)
    assert "checked" not in cpu.rd32.__code__.co_freevars
    # writes keep one test, seg == 1: CS holds a (non-writable) code segment
    assert "checked" in cpu.wr32.__code__.co_freevars
    assert fault_of(lambda: cpu.wr32(1, 0x100, 1)) == (13, 0)
    cpu.sreg[4] = cpu.sreg[5] = 0
    cpu.seg_attr[4] = cpu.seg_attr[5] = ATTR_UNUSABLE
    cpu.seg_limit[4] = cpu.seg_limit[5] = 0
    paging.install(cpu)
    assert "checked" in cpu.rd32.__code__.co_freevars
    assert cpu.rd32(3, 0x100) == 0
    assert fault_of(lambda: cpu.rd32(5, 0x100)) == (13, 0)
    flat = CPU.flat()
    flat_rd = paging.protected_accessors(flat)[2]
    assert flat_rd.__code__.co_freevars == ("access",)


def test_descriptor_reads_are_supervisor_accesses():
    """SDM Vol.3A §4.6: the processor's own GDT/IDT/TSS accesses are supervisor-mode
    accesses even at CPL 3, so a GDT on a supervisor page works for ring 3."""
    cpu = paged_cpu(cpl=3)
    set_pte(cpu, 0x1000, 0x1000 | 3)  # the GDT page: supervisor
    protected.load_segment(cpu, 3, USER_DS)
    assert cpu.sreg[3] == USER_DS
    assert fault_of(lambda: protected.load_segment(cpu, 3, K_DS)) == (13, K_DS)


def test_frame_written_through_paging():
    """SDM Vol.3A §6.12.1: the inner stack frame is written with supervisor rights to
    the linear address SS.base + ESP (here the stack page maps elsewhere)."""
    cpu = paged_cpu(cpl=3, platform=True)
    set_pte(cpu, KSTACK0 - 4, 0x200000 | 3)
    # vector 0x81: a DPL 3 interrupt gate to K_CS:0x1000
    cpu.mem.load(0x2000 + 0x81 * 8, struct.pack("<II", (K_CS << 16) | 0x1000, 0x0000EF00))
    run_code(cpu, b"\xcd\x81")
    assert cpu.eip == 0x1000 and cpu.sreg[2] == K_DS
    assert cpu.mem.read32(0x200000 + ((KSTACK0 - 20) & 0xFFF)) == CODE + 2


def test_accessed_bit_write_faults_before_any_change():
    """SDM Vol.3A §3.4.5.1 and §4.6: loading a descriptor whose accessed bit is clear
    writes the GDT; on a read-only page with CR0.WP = 1 that write is a #PF
    (supervisor, write, protection: 3) and the far jump changes nothing."""
    cpu = paged_cpu(wp=True)
    put_desc(cpu, 0xC0, seg_desc(0, 0xFFFFFFFF, 0xA))  # code, accessed bit clear
    set_pte(cpu, 0x1000, 0x1000 | 1)  # the GDT page: supervisor, read-only
    before = (list(cpu.sreg), cpu.eip, cpu.cpl)
    assert fault_of(lambda: protected.far_jump(cpu, 0xC0, 0x100)) == (14, 3)
    assert (list(cpu.sreg), cpu.eip, cpu.cpl) == before and cpu.cr[2] == 0x10C5
