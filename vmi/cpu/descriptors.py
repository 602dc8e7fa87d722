"""Descriptor tables: segment descriptors, IDT gates and the 32-bit TSS, read as the
processor reads them (SDM Vol.3A §3.4-§3.5, §6.10-§6.11, §7.2).

Everything here reads memory by *linear* address through ``vmi.cpu.paging``
with supervisor privilege: the processor's own accesses to the GDT, LDT, IDT
and TSS are "implicit supervisor-mode accesses" whatever the CPL (SDM Vol.3A
§4.6), so a ring-3 program that loads a segment register still reads the GDT.

The segment cache format (``cpu.seg_attr``, ``cpu.ldtr[3]``, ``cpu.tr[3]``) is
bits 8..23 of the descriptor's high dword shifted right by 8 (type 0-3, S 4,
DPL 5-6, P 7, limit 19:16 in 8-11, AVL 12, D/B 14, G 15), plus one bit of our
own, ``ATTR_UNUSABLE`` (bit 16), set when a null selector was loaded in
protected mode: the "segment unusable" bit of the VMX access-rights format
(SDM Vol.3B §24.4.1, Table 24-2) names exactly that state of the hidden cache.
A cache whose P bit is clear and which is not unusable was never loaded from a
descriptor (``CPU.flat()`` builds such segments); the memory accessors treat it
as a plain base-and-limit segment with read and write rights.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from vmi.cpu.errors import GP, CPUException

M32 = 0xFFFFFFFF

# -- the cached attribute word (SDM Vol.3A §3.4.5, Figure 3-8) ----------------------
ATTR_TYPE = 0xF
ATTR_S = 0x10  # 1 = code or data, 0 = system
ATTR_DPL_SHIFT = 5
ATTR_P = 0x80
ATTR_AVL = 0x1000
ATTR_DB = 0x4000
ATTR_G = 0x8000
#: Our marker for a segment register holding a null selector (see the module docstring).
ATTR_UNUSABLE = 0x10000

# Type bits of code and data segments (SDM Vol.3A §3.4.5.1, Table 3-1).
TYPE_ACCESSED = 0x1
TYPE_WRITABLE = 0x2  # data
TYPE_READABLE = 0x2  # code
TYPE_EXPAND_DOWN = 0x4  # data
TYPE_CONFORMING = 0x4  # code
TYPE_CODE = 0x8

# System descriptor types (SDM Vol.3A §3.5, Table 3-2).
SYS_TSS16_AVAILABLE = 1
SYS_LDT = 2
SYS_TSS16_BUSY = 3
SYS_CALL_GATE16 = 4
SYS_TASK_GATE = 5
SYS_INTERRUPT_GATE16 = 6
SYS_TRAP_GATE16 = 7
SYS_TSS32_AVAILABLE = 9
SYS_TSS32_BUSY = 11
SYS_CALL_GATE32 = 12
SYS_INTERRUPT_GATE32 = 14
SYS_TRAP_GATE32 = 15

#: Cache attributes of the flat segments SYSENTER/SYSEXIT load (SDM Vol.2 SYSENTER,
#: SYSEXIT): base 0, limit 4 GiB (G=1, limit 19:16 = F), 32-bit, present, S=1.
FLAT_CODE_ATTR = {0: 0xCF9B, 3: 0xCFFB}  # execute/read, accessed
FLAT_DATA_ATTR = {0: 0xCF93, 3: 0xCFF3}  # read/write, accessed

# 32-bit TSS field offsets (SDM Vol.3A §7.2.1, Figure 7-2).
TSS32_ESP0, TSS32_SS0 = 4, 8
TSS32_ESP1, TSS32_SS1 = 12, 16
TSS32_ESP2, TSS32_SS2 = 20, 24
TSS32_CR3, TSS32_EIP, TSS32_EFLAGS = 28, 32, 36
TSS32_LDT, TSS32_IOMAP = 96, 102


class UnsupportedSystemFeature(NotImplementedError):
    """A guest asked for a processor feature this model refuses rather than fakes
    (the VMI monitor's own refusals, ``vmi.hypervisor.errors.MonitorRefusal``,
    are a subclass). The
    message names the feature and the selector or vector that asked for it."""


# -- selectors (SDM Vol.3A §3.4.2) ------------------------------------------------
def is_null(selector: int) -> bool:
    """A null selector: index 0 in the GDT (RPL ignored)."""
    return selector & 0xFFFC == 0


def selector_error(selector: int, ext: int = 0) -> int:
    """The error code naming ``selector``: its index and TI with bit 1 (IDT) clear
    and bit 0 = EXT (SDM Vol.3A §6.13, Figure 6-6)."""
    return (selector & 0xFFFC) | (ext & 1)


def idt_error(vector: int, ext: int = 0) -> int:
    """The error code naming IDT entry ``vector``: index, IDT bit 1 set, EXT in bit 0
    (SDM Vol.3A §6.13)."""
    return (vector << 3) | 2 | (ext & 1)


#: The kind of an IDT entry by descriptor type (SDM Vol.3A Table 3-2: 16- and
#: 32-bit interrupt and trap gates, the task gate); every other type is invalid.
GATE_KINDS = {6: "interrupt", 14: "interrupt", 7: "trap", 15: "trap", 5: "task"}


# -- decoded descriptors -----------------------------------------------------------
@frozen
class SegmentDescriptor:
    """One 8-byte GDT/LDT entry, decoded (SDM Vol.3A §3.4.5, Figure 3-8).

    ``limit`` is the byte-granular limit (G applied: ``limit << 12 | 0xFFF``);
    ``attr`` the cache attribute word (see the module docstring); ``address`` the
    linear address of the entry (where the accessed and busy bits are written).
    """

    selector: int
    address: int
    low: int
    high: int

    @property
    def attr(self) -> int:
        return (self.high >> 8) & 0xFFFF

    @property
    def type(self) -> int:
        return (self.high >> 8) & ATTR_TYPE

    @property
    def s(self) -> bool:
        return bool(self.high & (ATTR_S << 8))

    @property
    def dpl(self) -> int:
        return (self.high >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.high & (ATTR_P << 8))

    @property
    def base(self) -> int:
        return ((self.low >> 16) | ((self.high & 0xFF) << 16) | (self.high & 0xFF000000)) & M32

    @property
    def limit(self) -> int:
        raw = (self.low & 0xFFFF) | (self.high & 0xF0000)
        return ((raw << 12) | 0xFFF) if self.high & (ATTR_G << 8) else raw

    @property
    def big(self) -> bool:
        """D/B: 32-bit code (D), 32-bit stack pointer (B), 4 GiB expand-down bound."""
        return bool(self.high & (ATTR_DB << 8))

    # code/data classification (Table 3-1)
    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & TYPE_CODE)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & TYPE_CODE

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & TYPE_CONFORMING)

    @property
    def readable(self) -> bool:
        """Data segments are always readable; code only with R set."""
        return self.is_data or (self.is_code and bool(self.type & TYPE_READABLE))

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & TYPE_WRITABLE)


@frozen
class Gate:
    """An IDT entry (SDM Vol.3A §6.11, Figure 6-2): interrupt, trap or task gate.

    ``bits`` is 32 for the 32-bit gate types (14, 15) and 16 for the 80286 ones
    (6, 7): it sets the size of the frame pushed.
    """

    vector: int
    low: int
    high: int

    @property
    def type(self) -> int:
        return (self.high >> 8) & 0xF

    @property
    def dpl(self) -> int:
        return (self.high >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.high & 0x8000)

    @property
    def selector(self) -> int:
        return (self.low >> 16) & 0xFFFF

    @property
    def offset(self) -> int:
        if self.bits == 16:
            return self.low & 0xFFFF
        return (self.low & 0xFFFF) | (self.high & 0xFFFF0000)

    @property
    def bits(self) -> int:
        return 32 if self.type & 0x8 else 16

    @property
    def kind(self) -> str:
        """"interrupt", "trap", "task" or "invalid" (Table 3-2 types 6/14, 7/15, 5)."""
        return GATE_KINDS.get(self.type, "invalid")


# -- reading the tables --------------------------------------------------------------
def read_linear32(cpu: Any, linear: int) -> int:
    """A supervisor-mode 32-bit read at a linear address (through paging when on)."""
    return paging.read_linear(cpu, linear & M32, 4, user=False)


def table_of(cpu: Any, selector: int) -> tuple[int, int]:
    """(base, limit) of the table ``selector`` indexes: the GDT, or the LDT when
    TI (bit 2) is set (SDM Vol.3A §3.4.2). An unusable LDTR gives limit -1, so
    every LDT selector is beyond it."""
    if selector & 4:
        _sel, base, limit, attr = cpu.ldtr
        if attr & ATTR_UNUSABLE or not attr & ATTR_P:
            return 0, -1
        return base, limit
    return cpu.gdtr[0], cpu.gdtr[1]


def fetch_descriptor(cpu: Any, selector: int) -> SegmentDescriptor | None:
    """The descriptor ``selector`` names, or None when its 8 bytes pass the table
    limit (the caller raises the fault its instruction defines, usually
    #GP(selector): SDM Vol.3A §5.3, "checks ... the index against the limit").
    A null selector is the caller's business too; this reads GDT entry 0 for it.
    """
    base, limit = table_of(cpu, selector)
    offset = selector & 0xFFF8
    if offset + 7 > limit:
        return None
    address = (base + offset) & M32
    low, high = paging.read_linear_pair(cpu, address)
    return SegmentDescriptor(selector & 0xFFFF, address, low, high)


def mark_accessed(cpu: Any, desc: SegmentDescriptor) -> None:
    """Set the accessed bit of a code or data descriptor in memory if clear: the
    processor does so when it loads the selector (SDM Vol.3A §3.4.5.1)."""
    if desc.s and not desc.type & TYPE_ACCESSED:
        paging.write_linear(cpu, (desc.address + 5) & M32, 1, ((desc.high >> 8) & 0xFF) | 1,
                     user=False)


def set_busy(cpu: Any, desc: SegmentDescriptor) -> None:
    """Mark an available TSS descriptor busy (type bit 1) in memory: LTR does
    (SDM Vol.2 LTR; Vol.3A §7.2.2)."""
    paging.write_linear(cpu, (desc.address + 5) & M32, 1, ((desc.high >> 8) & 0xFF) | 2,
                        user=False)


def read_gate(cpu: Any, vector: int) -> Gate | None:
    """IDT entry ``vector``, or None when it lies beyond the IDTR limit (the caller
    raises #GP(vector*8+2+EXT), SDM Vol.3A §6.10)."""
    base, limit = cpu.idtr[0], cpu.idtr[1]
    offset = vector * 8
    if offset + 7 > limit:
        return None
    address = (base + offset) & M32
    return Gate(vector, *paging.read_linear_pair(cpu, address))


def tss_stack(cpu: Any, dpl: int, ext: int) -> tuple[int, int]:
    """(SS, ESP) for privilege level ``dpl`` from the current TSS: ss0/esp0 at
    offsets 8/4, ss1/esp1 at 16/12, ss2/esp2 at 24/20 of a 32-bit TSS; sp at
    2+4n and ss at 4+4n of a 16-bit one (SDM Vol.3A §7.2.1, Figures 7-2 and
    7-11; §6.12.1, Vol.2 INT n "INTER-PRIVILEGE-LEVEL-INTERRUPT"). Beyond the TSS
    limit: #TS(TSS selector + EXT).
    """
    selector, base, limit, attr = cpu.tr
    if attr & ATTR_UNUSABLE or not attr & ATTR_P:
        raise CPUException(10, ext & 1, "no task register loaded (ltr) for a stack switch")
    if attr & 0x8:  # 32-bit TSS (types 9, 11)
        offset = dpl * 8 + 4
        if offset + 7 > limit:
            raise CPUException(10, selector_error(selector, ext),
                               f"ss{dpl}/esp{dpl} beyond the TSS limit {limit:#x}")
        esp, ss = paging.read_linear_pair(cpu, base + offset)
        return ss & 0xFFFF, esp
    offset = dpl * 4 + 2
    if offset + 3 > limit:
        raise CPUException(10, selector_error(selector, ext),
                           f"ss{dpl}/sp{dpl} beyond the 16-bit TSS limit {limit:#x}")
    word = read_linear32(cpu, base + offset)
    return (word >> 16) & 0xFFFF, word & 0xFFFF


def gp(selector: int, detail: str, ext: int = 0) -> CPUException:
    """#GP naming a selector (SDM Vol.3A §6.13)."""
    return CPUException(GP, selector_error(selector, ext), detail)


def cache_of(desc: SegmentDescriptor) -> tuple[int, int, int]:
    """(base, limit, attr) that loading ``desc`` puts in a segment cache (SDM Vol.3A
    §3.4.3: the hidden part of a segment register)."""
    return desc.base, desc.limit, (desc.attr | TYPE_ACCESSED) if desc.s else desc.attr


def describe(desc: SegmentDescriptor) -> str:
    """A one-line human description, for error messages and the debugger."""
    if desc.is_code:
        kind = "conforming code" if desc.conforming else "code"
    elif desc.is_data:
        kind = "expand-down data" if desc.type & TYPE_EXPAND_DOWN else "data"
    else:
        kind = f"system type {desc.type}"
    return (f"{desc.selector:#06x}: {kind} base={desc.base:#x} limit={desc.limit:#x} "
            f"dpl={desc.dpl} {'present' if desc.present else 'not present'}")


# At the end: paging imports this module's constants, so whichever of the two is
# imported first, the other finds what it needs (used only inside functions here).
from vmi.cpu import paging  # noqa: E402
