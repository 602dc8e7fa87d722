"""What the monitor shows the real processor in place of the guest's own structures:
the shadow GDT, the shadow page directory, and the page table of the top 4 MiB.

**Shadow GDT** (one per CPU, at ``SHADOW_GDT_LINEAR``): a copy of the guest's GDT
in which every code or data descriptor of DPL 0 becomes DPL 1, because the guest
kernel runs at ring 1 and a ring-1 CS or SS must have DPL 1 (SDM Vol.3A §5.6,
§5.8.1), and in which every expand-up code or data segment is truncated to end at
``GUEST_LIMIT``, so that no guest segment reaches the monitor's area above the
shared page (SDM Vol.3A §5.3 limit checking). The selectors do not change: the
guest's ``__KERNEL_CS`` 0x60 is loaded as 0x61 (RPL 1), the guest kernel sees
``%cs & 3 == 1`` and, being RPL-agnostic (reference §1, "[RFC, PATCH 11/24] i386
Vmi segment changes"), works with it. The guest's own GDT stays as it wrote it;
``lgdt`` traps at ring 1 (SDM Vol.3A §5.9) and the monitor rebuilds the shadow.

**Shadow page directory** (one per CPU): entries 0-1022 copied from the guest's
page directory, entry 1023 pointing at the monitor's page table of the top
4 MiB, which maps the ROM (read-only), this CPU's shared page and this CPU's
shadow GDT at the same linear addresses on every CPU. Copying the directory
behaves like the paging-structure caches of SDM Vol.3A §4.10: it is refreshed
on every CR3 load and INVLPG (both trap at ring 1) and, for an entry the guest
made present since, on the page fault it causes (a "hidden" fault the guest
never sees). Page tables themselves are the guest's, shared, not copied.
"""

from __future__ import annotations

from typing import Any

from vmi.cpu import paging
from vmi.hypervisor import layout

M32 = 0xFFFFFFFF
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PDE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
CR4_PSE = 0x10


# -- descriptors ------------------------------------------------------------------------
def shadow_descriptor(low: int, high: int, limit_end: int = layout.GUEST_LIMIT) -> tuple[int, int]:
    """The shadow of one GDT entry (see the module docstring): code and data segments
    of DPL 0 get DPL 1; expand-up code and data segments that reach above
    ``limit_end`` are truncated to end there (a granular limit is rounded down to a
    whole page). Call gates (types 4 and 12) are copied not present: their target is
    the guest's code, whose privilege the real processor does not see, so a far
    CALL or JMP through one faults to the monitor (#NP(gate selector), after the
    gate's own DPL checks), which performs it (``VMIMonitor._try_call_gate``).
    Other system descriptors (TSS, LDT, task gates) and expand-down data segments
    are copied unchanged."""
    s = high & 0x1000
    if not s:
        if (high >> 8) & 0xF in (4, 12):
            high &= ~0x8000  # P = 0
        return low, high
    if (high >> 13) & 3 == 0:
        high |= 1 << 13  # DPL 0 -> 1
    expand_down = not high & 0x800 and high & 0x400  # data with E set
    if expand_down:
        return low, high
    base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
    raw = (low & 0xFFFF) | (high & 0xF0000)
    granular = bool(high & 0x800000)
    limit = (raw << 12) | 0xFFF if granular else raw
    if base + limit <= limit_end:
        return low, high
    new_limit = max(limit_end - base, 0)
    raw = (new_limit >> 12) if granular else min(new_limit, 0xFFFFF)
    if granular and ((raw << 12) | 0xFFF) + base > limit_end:
        raw = max(raw - 1, 0)
    low = (low & 0xFFFF0000) | (raw & 0xFFFF)
    high = (high & ~0xF0000) | (raw & 0xF0000)
    return low & M32, high & M32


def build_shadow_gdt(mem: Any, read_linear: Any, base: int, limit: int,
                     gdt_physical: int) -> bool:
    """Write the shadow of the guest GDT at linear ``base`` (``limit`` as in GDTR),
    read with ``read_linear(address) -> u32``, into the page at ``gdt_physical``.
    Entries past the limit are zeroed. Code and data descriptors are shadowed with
    the accessed bit already set, so the processor never writes the shadow when it
    loads them (SDM Vol.3A §3.4.5.1) and a rebuild compares equal. Returns True when
    the shadow changed."""
    if limit > 0xFFF:
        from vmi.hypervisor.errors import MonitorRefusal

        raise MonitorRefusal(f"the guest GDT limit {limit:#x} is larger than the one page "
                             "the monitor keeps for its shadow")
    out = bytearray(0x1000)
    for i in range((limit + 1) // 8):
        low = read_linear(base + 8 * i)
        high = read_linear(base + 8 * i + 4)
        low, high = shadow_descriptor(low, high)
        if high & 0x1000:
            high |= 0x100  # accessed
        out[8 * i:8 * i + 8] = low.to_bytes(4, "little") + high.to_bytes(4, "little")
    if mem.read_bytes(gdt_physical, 0x1000) == bytes(out):
        return False
    mem.write_bytes(gdt_physical, bytes(out))
    return True


# -- paging -----------------------------------------------------------------------------
def walk(mem: Any, cr3: int, cr4: int, linear: int) -> int | None:
    """The physical address of ``linear`` through the page directory at ``cr3``,
    or None when it is not mapped; nothing is written and no rights are checked:
    the monitor's own view (``vmi.cpu.paging.peek``)."""
    return paging.peek(mem, cr3, cr4, linear)


def init_top_table(mem: Any, cpu: int) -> None:
    """The page table of the top 4 MiB for CPU ``cpu``: the ROM read-only, the
    shared page and the shadow GDT writable, all supervisor (ring 3 cannot touch
    them; SDM Vol.3A §4.6); everything else not present."""
    table = layout.cpu_page(cpu, layout.PAGE_PT)
    mem.write_bytes(table, bytes(0x1000))
    rom_index = (layout.ROM_LINEAR >> 12) & 0x3FF
    mem.write32(table + 4 * rom_index, layout.ROM_PHYSICAL | PTE_P)
    mem.write32(table + 4 * (rom_index + 1),
                layout.cpu_page(cpu, layout.PAGE_SHARED) | PTE_P | PTE_RW)
    mem.write32(table + 4 * (rom_index + 2),
                layout.cpu_page(cpu, layout.PAGE_GDT) | PTE_P | PTE_RW)


def top_pde(cpu: int) -> int:
    """The shadow page-directory entry 1023 of CPU ``cpu``."""
    return layout.cpu_page(cpu, layout.PAGE_PT) | PTE_P | PTE_RW


def sync_directory(mem: Any, guest_cr3: int, cpu: int) -> None:
    """Copy guest page-directory entries 0-1022 into CPU ``cpu``'s shadow directory
    and point entry 1023 at the monitor's table (a CR3 load)."""
    shadow = layout.cpu_page(cpu, layout.PAGE_PD)
    source = guest_cr3 & 0xFFFFF000
    if source + 0x1000 <= mem.size:
        mem.array[shadow:shadow + 4092] = mem.array[source:source + 4092]
        mem.mark_dirty(shadow, 4092)
    else:
        for i in range(1023):
            mem.write32(shadow + 4 * i, mem.read32(source + 4 * i))
    mem.write32(shadow + 4092, top_pde(cpu))


def sync_entry(mem: Any, guest_cr3: int, cpu: int, index: int) -> bool:
    """Refresh shadow directory entry ``index`` from the guest's; True when the
    translation it gives changed (the accessed and dirty flags do not count)."""
    if index == layout.MONITOR_PDE:
        return False
    shadow = layout.cpu_page(cpu, layout.PAGE_PD) + 4 * index
    guest = mem.read32((guest_cr3 & 0xFFFFF000) + 4 * index)
    current = mem.read32(shadow)
    if (guest | PTE_A | PTE_D) == (current | PTE_A | PTE_D):
        return False
    mem.write32(shadow, guest)
    return True
