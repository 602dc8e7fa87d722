"""The virtual processor state the monitor keeps for each CPU, held in memory.

The architectural state the guest believes it has (CR0-CR4, GDTR, IDTR, TR, LDTR,
the SYSENTER MSRs, pending events) lives in the CPU's private page and the guest
sees part of it in the shared page (``layout``): so a machine snapshot, which copies
memory and the real CPU state, also carries the virtual state, and nothing the
monitor knows can drift from a restored machine. ``VirtualCPU`` reads and writes
those fields by name.
"""

from __future__ import annotations

from typing import Any

from vmi.hypervisor import layout

EFLAGS_IF = 0x200


def _private(offset: int) -> property:
    def get(self: VirtualCPU) -> int:
        return int(self.mem.read32(self.private + offset))

    def put(self: VirtualCPU, value: int) -> None:
        self.mem.write32(self.private + offset, value & 0xFFFFFFFF)

    return property(get, put)


def _shared(offset: int) -> property:
    def get(self: VirtualCPU) -> int:
        return int(self.mem.read32(self.shared + offset))

    def put(self: VirtualCPU, value: int) -> None:
        self.mem.write32(self.shared + offset, value & 0xFFFFFFFF)

    return property(get, put)


class VirtualCPU:
    """The monitor's view of CPU ``index``'s virtual state (see the module docstring)."""

    active = _private(layout.PRIV_ACTIVE)
    cr0 = _private(layout.PRIV_CR0)
    cr2 = _private(layout.PRIV_CR2)
    cr3 = _private(layout.PRIV_CR3)
    cr4 = _private(layout.PRIV_CR4)
    gdt_base = _private(layout.PRIV_GDT_BASE)
    gdt_limit = _private(layout.PRIV_GDT_LIMIT)
    idt_base = _private(layout.PRIV_IDT_BASE)
    idt_limit = _private(layout.PRIV_IDT_LIMIT)
    tr_selector = _private(layout.PRIV_TR_SELECTOR)
    tr_base = _private(layout.PRIV_TR_BASE)
    tr_limit = _private(layout.PRIV_TR_LIMIT)
    ldt_selector = _private(layout.PRIV_LDT_SELECTOR)
    ldt_base = _private(layout.PRIV_LDT_BASE)
    ldt_limit = _private(layout.PRIV_LDT_LIMIT)
    sysenter_cs = _private(layout.PRIV_SYSENTER_CS)
    sysenter_esp = _private(layout.PRIV_SYSENTER_ESP)
    sysenter_eip = _private(layout.PRIV_SYSENTER_EIP)
    halted_cli = _private(layout.PRIV_HALTED_CLI)

    vif = _shared(layout.SHARED_VIF)
    pending_flag = _shared(layout.SHARED_PENDING)
    shared_cr0 = _shared(layout.SHARED_CR0)
    shared_cr2 = _shared(layout.SHARED_CR2)
    shared_cr3 = _shared(layout.SHARED_CR3)
    shared_cr4 = _shared(layout.SHARED_CR4)
    sysexit_cs = _shared(layout.SHARED_SYSEXIT_CS)
    sysexit_ss = _shared(layout.SHARED_SYSEXIT_SS)
    shared_cpu = _shared(layout.SHARED_CPU)

    def __init__(self, mem: Any, index: int) -> None:
        self.mem = mem
        self.index = index
        self.shared = layout.cpu_page(index, layout.PAGE_SHARED)
        self.private = layout.cpu_page(index, layout.PAGE_PRIVATE)
        self.pd = layout.cpu_page(index, layout.PAGE_PD)
        self.gdt = layout.cpu_page(index, layout.PAGE_GDT)

    # -- the virtual interrupt flag ---------------------------------------------------
    @property
    def interrupts_enabled(self) -> bool:
        """The guest's IF: the virtual IF word holds 0x200 when set (any other bits
        are the guest's own business and ignored)."""
        return bool(self.mem.read32(self.shared + layout.SHARED_VIF) & EFLAGS_IF)

    # -- pending events (256 bits in the private page, a flag in the shared page) ------
    @property
    def pending(self) -> int:
        """The pending vectors as a bit mask (bit v = vector v)."""
        raw = self.mem.read_bytes(self.private + layout.PRIV_PENDING, 32)
        return int.from_bytes(raw, "little")

    def _set_pending(self, mask: int) -> None:
        self.mem.write_bytes(self.private + layout.PRIV_PENDING, mask.to_bytes(32, "little"))
        self.pending_flag = 1 if mask else 0

    def add_pending(self, vector: int) -> bool:
        """Record ``vector`` as pending; False if it already was (it coalesces, as an
        edge on a PIC does)."""
        mask = self.pending
        if mask >> vector & 1:
            return False
        self._set_pending(mask | 1 << vector)
        return True

    def take_pending(self) -> int | None:
        """Remove and return the lowest pending vector (the PIC's priority), or None."""
        mask = self.pending
        if not mask:
            return None
        vector = (mask & -mask).bit_length() - 1
        self._set_pending(mask & ~(1 << vector))
        return vector

    # -- the virtual CR0 is shown in the shared page for GetCR0 -------------------------
    def set_cr0(self, value: int) -> None:
        self.cr0 = value
        self.shared_cr0 = value

    def set_sysenter_cs(self, value: int) -> None:
        """The virtual IA32_SYSENTER_CS and the selectors SYSEXIT derives from it
        (SDM Vol.3A §5.8.7), which the ROM's SYSEXIT pushes."""
        self.sysenter_cs = value
        self.sysexit_cs = ((value + 16) | 3) & 0xFFFF
        self.sysexit_ss = ((value + 24) | 3) & 0xFFFF
