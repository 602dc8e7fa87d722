"""Where the VMI monitor puts things: the published linear region, the physical pages
behind it, the shared page the guest reads and writes, and the monitor's private
per-CPU state. One source of truth for the ROM source (``rom.S`` receives these as
``defines``), the monitor, the guest builder and the tests. docs/hypervisor.md
draws the same maps.

**Linear** (the same in every guest address space, page-directory entry 1023, which
the guest must leave to the monitor: the 2.6.21 header's ``virtual_top``, reference
§1 "reserve_top_address(-virtual_top)"):

====================  ==========================================================
0xFFC00000-0xFFC00FFF  the ROM: header + 32-byte call slots + bodies (read-only)
0xFFC01000-0xFFC01FFF  this CPU's shared page: virtual IF, pending, shadow CRs
0xFFC02000-0xFFFFFFFF  the monitor's own area (this CPU's shadow GDT first); no
                       guest segment reaches it (limits end at ``GUEST_LIMIT``)
====================  ==========================================================

**Physical**: the ROM image sits in the PC option-ROM hole at 0xC0000, where the
guest finds it by scanning 0xC0000-0xDFFFF in 2 KiB steps for 0xAA55 and "cVmi"
(reference §1, as Linux 2006 and 2.6.21 did). The monitor's pages follow it in the
same hole (0xC1000-0xEFFFF), which a PC guest treats as reserved: the monitor's
global page, then five pages per CPU (shared, private, shadow page directory,
the page table of the top 4 MiB, shadow GDT).
"""

from __future__ import annotations

# -- the published linear region -----------------------------------------------------
ROM_LINEAR = 0xFFC00000
ROM_SIZE = 0x1000
SHARED_LINEAR = 0xFFC01000
#: The monitor's own area: the first page holds this CPU's shadow GDT.
MONITOR_LINEAR = 0xFFC02000
SHADOW_GDT_LINEAR = MONITOR_LINEAR
#: Every guest code and data segment is truncated to end here (shadow descriptors):
#: the ROM and the shared page are inside, the monitor's area is not.
GUEST_LIMIT = SHARED_LINEAR + 0xFFF
#: The page-directory entry the monitor owns in every guest address space.
MONITOR_PDE = ROM_LINEAR >> 22

# -- the physical pages ----------------------------------------------------------------
ROM_PHYSICAL = 0xC0000
#: Where the guest's scan looks (reference §1: 0xC0000-0xE0000, step 2048).
SCAN_START, SCAN_END, SCAN_STEP = 0xC0000, 0xE0000, 0x800
GLOBAL_PHYSICAL = 0xC1000
PER_CPU_PHYSICAL = 0xC2000
PER_CPU_PAGES = 5
PAGE_SHARED, PAGE_PRIVATE, PAGE_PD, PAGE_PT, PAGE_GDT = range(PER_CPU_PAGES)
MONITOR_PHYSICAL_END = 0xF0000  # the boot ROM's 64 KiB begin here
MAX_CPUS = (MONITOR_PHYSICAL_END - PER_CPU_PHYSICAL) // (PER_CPU_PAGES * 0x1000)


def cpu_page(cpu: int, page: int) -> int:
    """Physical address of per-CPU page ``page`` (``PAGE_SHARED`` ...) of CPU ``cpu``."""
    if not 0 <= cpu < MAX_CPUS:
        raise ValueError(f"the monitor has room for {MAX_CPUS} CPUs, not CPU {cpu}")
    return PER_CPU_PHYSICAL + (cpu * PER_CPU_PAGES + page) * 0x1000


# -- the shared page (guest-visible, guest-writable; offsets from SHARED_LINEAR) ------
#: The virtual interrupt flag: 0 (disabled) or 0x200 (EFLAGS.IF, enabled). The
#: naive macro set's ``VMI_VIF``.
SHARED_VIF = 0x00
#: Non-zero while an event waits for the guest (the monitor writes it, the ROM reads
#: it before enabling the virtual IF). The naive macro set's ``VMI_PENDING``.
SHARED_PENDING = 0x04
#: The guest's view of CR0 (the GET_CR0 call reads it without an exit).
SHARED_CR0 = 0x08
SHARED_CR2 = 0x0C
SHARED_CR3 = 0x10
SHARED_CR4 = 0x14
#: (IA32_SYSENTER_CS + 16) | 3 and (IA32_SYSENTER_CS + 24) | 3 of the virtual MSR:
#: the CS and SS that SYSEXIT would load (SDM Vol.3A §5.8.7), for the ROM's SYSEXIT.
SHARED_SYSEXIT_CS = 0x18
SHARED_SYSEXIT_SS = 0x1C
#: This CPU's index (for the guest's curiosity; the monitor never trusts it).
SHARED_CPU = 0x20

VMI_VIF = SHARED_LINEAR + SHARED_VIF
VMI_PENDING = SHARED_LINEAR + SHARED_PENDING

# -- the private page (monitor only; physical, never mapped for the guest) ------------
# The virtual processor state lives in memory so that a machine snapshot carries it.
PRIV_ACTIVE = 0x00  # 1 once the CPU runs deprivileged under the monitor
PRIV_CR0, PRIV_CR2, PRIV_CR3, PRIV_CR4 = 0x04, 0x08, 0x0C, 0x10
PRIV_GDT_BASE, PRIV_GDT_LIMIT = 0x14, 0x18
PRIV_IDT_BASE, PRIV_IDT_LIMIT = 0x1C, 0x20
PRIV_TR_SELECTOR, PRIV_TR_BASE, PRIV_TR_LIMIT = 0x24, 0x28, 0x2C
PRIV_LDT_SELECTOR, PRIV_LDT_BASE, PRIV_LDT_LIMIT = 0x30, 0x34, 0x38
PRIV_SYSENTER_CS, PRIV_SYSENTER_ESP, PRIV_SYSENTER_EIP = 0x3C, 0x40, 0x44
#: 1 while the virtual CPU is halted with the virtual IF clear (``cli; hlt``): the
#: monitor then clears the real IF too, so the machine sees a stuck CPU.
PRIV_HALTED_CLI = 0x48
#: 256 bits: the vectors waiting for the guest.
PRIV_PENDING = 0x80

# -- the global page ------------------------------------------------------------------
GLOBAL_PATCHED = 0x00  # 1 once the images were patched (at the first Init)
GLOBAL_PATCHED_SITES = 0x04

# -- the VMI API 13 call numbers (March 2006; reference §1) ----------------------------
CALL_INIT = 4
CALL_CPUID = 5
CALL_WRMSR = 6
CALL_RDMSR = 7
CALL_GET_CR0 = 24
CALL_CLTS = 34
CALL_ENABLE_INTERRUPTS = 35
CALL_DISABLE_INTERRUPTS = 36
CALL_GET_INTERRUPT_MASK = 37
CALL_SET_INTERRUPT_MASK = 38
CALL_IRET = 39
CALL_SYSEXIT = 40
CALL_HALT = 42
CALL_SET_IOPL_MASK = 71
SLOT_SIZE = 32
SLOT_COUNT = 72  # 0 .. CALL_SET_IOPL_MASK
API_MAJOR, API_MINOR = 13, 0
SIGNATURE = 0x696D5663  # "cVmi" at ROM+8
ROM_MAGIC = 0xAA55


def slot_address(call: int) -> int:
    """The linear address of VMI call ``call``: ROM + 32 * N (reference §1)."""
    return ROM_LINEAR + SLOT_SIZE * call


#: The ``defines`` a guest built with the ``naive`` macro set needs.
NAIVE_DEFINES = {"VMI_VIF": VMI_VIF, "VMI_PENDING": VMI_PENDING}
