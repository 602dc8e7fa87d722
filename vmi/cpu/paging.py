"""Protected-mode memory: segmentation checks, two-level paging, the TLB, and the
``rd8``..``wr32`` accessors a CPU uses while CR0.PE is set.

**Segmentation** (SDM Vol.3A §5.3 "Limit Checking", §5.4 "Type Checking",
§5.4.1 "Null Segment Selector Checking"). An access of ``n`` bytes at ``offset``
in an expand-up segment needs ``offset + n - 1 <= limit``; in an expand-down
data segment the valid offsets are ``limit + 1 .. 0xFFFF`` (or ``0xFFFFFFFF``
when B is set). Reading an execute-only code segment, writing a code segment or
a read-only data segment, and any access through a segment register holding a
null selector fault. The fault is #SS(0) for SS-relative accesses and #GP(0)
for the others.

**Paging** (SDM Vol.3A §4.3 "32-Bit Paging"): CR3 -> page directory (1024 PDEs)
-> page table (1024 PTEs) -> 4 KiB page; with CR4.PSE a PDE with PS (bit 7)
set maps a 4 MiB page directly. Rights (§4.6 "Access Rights"): a user-mode
access (CPL 3) needs U/S = 1 in both levels; a user write needs R/W = 1 in both;
a supervisor write needs R/W = 1 in both only when CR0.WP = 1. The accessed
flag is set in every entry used by a translation that succeeds and the dirty
flag in the last one on a write (§4.8); a walk that faults after using a
directory entry to reach its page table still sets that entry's accessed flag
(``_used_directory_entry``), the page-table entry keeps its flags. A violation
raises #PF with CR2 = the linear address and the error code P (bit 0: 0 = not present, 1 = rights),
W/R (bit 1: write) and U/S (bit 2: CPL 3) (§4.7, Figure 4-12).

**The TLB** (§4.10) is ``cpu.tlb``, a dict with one entry per (4 KiB linear
page, kind of access) that has been translated: the key is ``page | kind << 20``
with kind 0 supervisor read, 1 supervisor write, 2 user read, 3 user write, and
the value the physical page base. An entry exists only for an access the
translation allows, and a write entry only once the dirty flag is set, so an
accessor needs one dict lookup and no rights test. A CR3 write flushes the
whole TLB, INVLPG one page (§4.10.4.1); as on hardware, a page-table change
without either is not seen while the entry lives.

**Speed.** ``protected_accessors(cpu)`` generates the six accessors for the
mode in force (paging on or off, CPL 3 or not, which segments are flat) from
source templates, compiled once per shape. A segment that is flat for an
access (base 0, limit 4 GiB, expand-up, the right) costs at most one integer
comparison of the segment number (``seg >= 4`` when FS and GS are null, say);
with paging off and every segment flat the accessors are the same one-line
lambdas as the flat CPU's. Anything else goes through the checked variant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vmi.cpu.codegen import maker
from vmi.cpu.descriptors import (
    ATTR_DB,
    ATTR_P,
    ATTR_S,
    ATTR_UNUSABLE,
    TYPE_CODE,
    TYPE_EXPAND_DOWN,
    TYPE_READABLE,
    TYPE_WRITABLE,
)
from vmi.cpu.errors import GP, PF, SS, CPUException

M32 = 0xFFFFFFFF
CR0_PE, CR0_WP, CR0_PG = 0x1, 0x10000, 0x80000000
CR4_PSE = 0x10

# Paging-structure entry bits (SDM Vol.3A §4.3, Tables 4-4 to 4-6).
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PDE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
# #PF error code bits (SDM Vol.3A §4.7).
PF_P, PF_W, PF_U = 0x1, 0x2, 0x4

#: TLB key offsets of the four kinds of access (see the module docstring).
KIND_SUPERVISOR_READ, KIND_SUPERVISOR_WRITE, KIND_USER_READ, KIND_USER_WRITE = (
    0, 1 << 20, 2 << 20, 3 << 20)
#: Present in ``cpu.tlb`` once a 4 MiB page was cached: INVLPG then flushes all.
LARGE_PAGE_MARK = -1


# -- translation ----------------------------------------------------------------------
def page_fault(cpu: Any, linear: int, code: int, detail: str) -> CPUException:
    """A #PF for ``linear``; CR2 receives the address now, as the processor loads it
    when it detects the fault (SDM Vol.3A §4.7, §6.15 "Interrupt 14")."""
    cpu.cr[2] = linear & M32
    return CPUException(PF, code, f"{detail} at linear {linear:#010x}")


def walk(cpu: Any, linear: int, write: bool, user: bool) -> int:
    """Translate ``linear`` through the page tables for one access, set the accessed
    and dirty flags, fill the TLB and return the physical page base (SDM Vol.3A
    §4.3, §4.6, §4.8). Raises #PF (CR2 set) when the access is not allowed."""
    mem = cpu.mem
    code = (PF_W if write else 0) | (PF_U if user else 0)
    pde_addr = (cpu.cr[3] & 0xFFFFF000) | ((linear >> 20) & 0xFFC)
    pde = mem.read32(pde_addr)
    if not pde & PTE_P:
        raise page_fault(cpu, linear, code, "page directory entry not present")
    large = bool(pde & PDE_PS and cpu.cr[4] & CR4_PSE)
    if large:
        rights = pde
        frame = (pde & 0xFFC00000) | (linear & 0x3FF000)
    else:
        pte_addr = (pde & 0xFFFFF000) | ((linear >> 10) & 0xFFC)
        pte = mem.read32(pte_addr)
        if not pte & PTE_P:
            _used_directory_entry(mem, pde_addr, pde)
            raise page_fault(cpu, linear, code, "page table entry not present")
        rights = pde & pte
        frame = pte & 0xFFFFF000
    wp = cpu.cr[0] & CR0_WP
    if user and not rights & PTE_US:
        if not large:
            _used_directory_entry(mem, pde_addr, pde)
        raise page_fault(cpu, linear, code | PF_P, "user access to a supervisor page")
    if write and not rights & PTE_RW and (user or wp):
        if not large:
            _used_directory_entry(mem, pde_addr, pde)
        raise page_fault(cpu, linear, code | PF_P, "write to a read-only page")
    # Accessed in every entry used, dirty in the one that maps the page (§4.8).
    if large:
        new = pde | PTE_A | (PTE_D if write else 0)
        if new != pde:
            mem.write32(pde_addr, new)
        dirty = new & PTE_D
    else:
        if not pde & PTE_A:
            mem.write32(pde_addr, pde | PTE_A)
        new = pte | PTE_A | (PTE_D if write else 0)
        if new != pte:
            mem.write32(pte_addr, new)
        dirty = new & PTE_D
    page = linear >> 12
    tlb = cpu.tlb
    tlb[page | KIND_SUPERVISOR_READ] = frame
    if rights & PTE_US:
        tlb[page | KIND_USER_READ] = frame
    if dirty:
        if rights & PTE_RW or not wp:
            tlb[page | KIND_SUPERVISOR_WRITE] = frame
        if rights & PTE_US and rights & PTE_RW:
            tlb[page | KIND_USER_WRITE] = frame
    if large:
        tlb[LARGE_PAGE_MARK] = 1
    return frame


def _used_directory_entry(mem: Any, pde_addr: int, pde: int) -> None:
    """Set the accessed flag of a page-directory entry that a walk used to find its
    page table, when the walk then ends in #PF (the PTE not present, or the rights
    of the two levels refusing the access).

    SDM Vol.3A §4.8: "Whenever the processor uses a paging-structure entry as part
    of linear-address translation, it sets the accessed flag in that entry"; a
    directory entry pointing to a page table is used as soon as the walk reads the
    table through it. What happens on a faulting walk is spelled out by Shanley,
    *The Unabridged Pentium 4* (ch. 12, "Page Faults"): "If the Page Fault occurs
    due to a page not present or a page privilege access violation ..., the A and
    D bits are affected in the PDE, but not in the PTE. The PTE's A and D bits are
    only affected if the page access succeeds." So the PTE (and a 4 MiB page's
    PDE, which maps the page) keeps its flags. (Bochs sets no flag on a faulting
    walk.)"""
    if not pde & PTE_A:
        mem.write32(pde_addr, pde | PTE_A)


def peek(mem: Any, cr3: int, cr4: int, linear: int) -> int | None:
    """The physical address of ``linear`` through the page directory at ``cr3``, or
    None when it is not mapped. Unlike ``walk``, nothing is written (no accessed or
    dirty flags, no TLB entry) and no rights are checked: an observer's view, for
    monitors, debuggers and cache validation."""
    linear &= M32
    pde = mem.read32((cr3 & 0xFFFFF000) | ((linear >> 20) & 0xFFC))
    if not pde & PTE_P:
        return None
    if pde & PDE_PS and cr4 & CR4_PSE:
        return (pde & 0xFFC00000) | (linear & 0x3FFFFF)
    pte = mem.read32((pde & 0xFFFFF000) | ((linear >> 10) & 0xFFC))
    if not pte & PTE_P:
        return None
    return (pte & 0xFFFFF000) | (linear & 0xFFF)


def peek_linear(cpu: Any, linear: int) -> int | None:
    """``peek`` through ``cpu``'s own page tables: the physical address of ``linear``,
    identity while paging is off, None when it is not mapped; nothing written."""
    linear &= M32
    if not cpu.cr[0] & CR0_PG:
        return linear
    return peek(cpu.mem, cpu.cr[3], cpu.cr[4], linear)


def translate(cpu: Any, linear: int, write: bool = False, user: bool = False) -> int:
    """The physical address of one byte access at ``linear`` (paging assumed on)."""
    kind = (KIND_USER_READ if user else 0) | (KIND_SUPERVISOR_WRITE if write else 0)
    frame = cpu.tlb.get((linear >> 12) | kind)
    if frame is None:
        frame = walk(cpu, linear, write, user)
    return frame | (linear & 0xFFF)


def linear_to_physical(cpu: Any, linear: int, *, write: bool = False) -> int:
    """Translate a linear address for the CPU's own use (instruction fetch, the
    real-mode IVT): identity while CR0.PG is clear, else a CPL-3 access is a
    user access (SDM Vol.3A §4.6). This is what ``CPU.linear_to_physical`` calls."""
    linear &= M32
    if not cpu.cr[0] & CR0_PG:
        return linear
    return translate(cpu, linear, write, cpu.cpl == 3)


def fetch_code(cpu: Any, linear: int, length: int = 15) -> tuple[bytes, CPUException | None]:
    """Up to ``length`` instruction bytes at ``linear``, translated page by page.

    Returns the bytes and, when the bytes stop short at a page that cannot be
    fetched, the #PF that page raises: the decoder should raise it only if the
    instruction really needs bytes from that page (an instruction that ends
    before the boundary must not fault). A fault on the first byte is raised.
    """
    linear &= M32
    if not cpu.cr[0] & CR0_PG:
        return cpu.mem.read_bytes(linear, length), None
    first = min(length, 0x1000 - (linear & 0xFFF))
    user = cpu.cpl == 3
    data = cpu.mem.read_bytes(translate(cpu, linear, False, user), first)
    if first == length:
        return data, None
    nxt = (linear + first) & M32
    try:
        phys = translate(cpu, nxt, False, user)
    except CPUException as fault:
        cpu.cr[2] = nxt  # rewritten only if the fault is really raised
        return data, fault
    return data + cpu.mem.read_bytes(phys, length - first), None


def flush_tlb(cpu: Any) -> None:
    """Forget every translation (a CR3 write, a CR0.PG/WP or CR4.PSE change:
    SDM Vol.3A §4.10.4.1)."""
    cpu.tlb.clear()


def invalidate_page(cpu: Any, linear: int) -> None:
    """INVLPG: forget the translations of the page holding ``linear`` (SDM Vol.2
    INVLPG; Vol.3A §4.10.4.1). A 4 MiB page is cached as 1024 small entries, so
    once one exists the whole TLB goes (flushing more is always allowed)."""
    tlb = cpu.tlb
    if LARGE_PAGE_MARK in tlb:
        tlb.clear()
        return
    page = (linear & M32) >> 12
    for kind in (KIND_SUPERVISOR_READ, KIND_SUPERVISOR_WRITE, KIND_USER_READ, KIND_USER_WRITE):
        tlb.pop(page | kind, None)


# -- linear accesses (the processor's own, and the slow path) --------------------------
def read_linear(cpu: Any, linear: int, size: int, *, user: bool = False) -> int:
    """Read ``size`` bytes (little-endian) at a linear address with the given
    privilege, splitting an access that crosses a page (paging may be off)."""
    mem = cpu.mem
    linear &= M32
    if (linear & 0xFFF) + size <= 0x1000 or not cpu.cr[0] & CR0_PG:
        physical = translate(cpu, linear, False, user) if cpu.cr[0] & CR0_PG else linear
        if size == 4:
            return mem.read32(physical)
        return mem.read16(physical) if size == 2 else mem.read8(physical)
    value = 0
    for i in range(size):
        value |= mem.read8(translate(cpu, (linear + i) & M32, False, user)) << (8 * i)
    return value


def write_linear(cpu: Any, linear: int, size: int, value: int, *, user: bool = False) -> None:
    """Write ``size`` bytes at a linear address with the given privilege. Both pages
    of a page-crossing write are translated (and may fault) before a byte is
    stored."""
    mem = cpu.mem
    linear &= M32
    if (linear & 0xFFF) + size <= 0x1000 or not cpu.cr[0] & CR0_PG:
        physical = translate(cpu, linear, True, user) if cpu.cr[0] & CR0_PG else linear
        if size == 4:
            mem.write32(physical, value)
        elif size == 2:
            mem.write16(physical, value)
        else:
            mem.write8(physical, value)
        return
    physical = [translate(cpu, (linear + i) & M32, True, user) for i in range(size)]
    for i, phys in enumerate(physical):
        mem.write8(phys, (value >> (8 * i)) & 0xFF)


def read_linear_pair(cpu: Any, linear: int, *, user: bool = False) -> tuple[int, int]:
    """The dwords at ``linear`` and ``linear + 4`` (a descriptor, a gate, a TSS
    stack pointer): one translation when both lie in one page."""
    linear &= M32
    if linear & 0xFFF > 0xFF8:
        return (read_linear(cpu, linear, 4, user=user),
                read_linear(cpu, linear + 4, 4, user=user))
    physical = translate(cpu, linear, False, user) if cpu.cr[0] & CR0_PG else linear
    mem = cpu.mem
    return mem.read32(physical), mem.read32(physical + 4)


def probe_write(cpu: Any, seg: int, offset: int, size: int) -> None:
    """Check that ``size`` bytes at ``seg:offset`` could be written, raising exactly
    the fault the write would (segment checks, then #PF with W/R = 1), without
    storing anything: what an instruction that must fault before it changes memory
    does first (ENTER's probe of its final stack pointer, SDM Vol.2 ENTER).

    A successful probe sets the accessed and dirty flags as the write would (the
    hardware's probe is itself a write-intent access). With paging off, reading and
    writing back the same value through the CPU's accessors raises the same
    segment faults (the stack segment, the only one probed, is writable data,
    whose read and write bounds are equal) and nothing else."""
    if not cpu.cr[0] & CR0_PG:
        rd = {1: cpu.rd8, 2: cpu.rd16, 4: cpu.rd32}[size]
        wr = {1: cpu.wr8, 2: cpu.wr16, 4: cpu.wr32}[size]
        wr(seg, offset, rd(seg, offset))
        return
    if not offset_allowed(cpu.seg_limit[seg], cpu.seg_attr[seg], offset, size, True):
        raise segment_fault(seg)
    linear = (cpu.seg_base[seg] + offset) & M32
    user = cpu.cpl == 3
    translate(cpu, linear, True, user)
    last = (linear + size - 1) & M32
    if last >> 12 != linear >> 12:
        translate(cpu, last, True, user)


# -- segment checks --------------------------------------------------------------------
def segment_bounds(limit: int, attr: int, size: int, write: bool) -> tuple[int, int]:
    """(lowest, highest) offset at which an access of ``size`` bytes is allowed in a
    segment with this cached limit and attributes; (0, -1) when none is (SDM
    Vol.3A §5.3, §5.4, §5.4.1). See the descriptors module for the cache format."""
    if attr & ATTR_UNUSABLE:
        return 0, -1
    lowest = 0
    upper = limit
    if attr & ATTR_P and attr & ATTR_S:  # a code or data descriptor was loaded
        if attr & TYPE_CODE:
            if write or not attr & TYPE_READABLE:
                return 0, -1
        else:
            if write and not attr & TYPE_WRITABLE:
                return 0, -1
            if attr & TYPE_EXPAND_DOWN:
                lowest = (limit + 1) & M32
                upper = M32 if attr & ATTR_DB else 0xFFFF
    elif attr & ATTR_P:  # a system descriptor in a data register: never usable
        return 0, -1
    highest = upper - size + 1
    if highest < lowest:
        return 0, -1
    return lowest, highest


def offset_allowed(limit: int, attr: int, offset: int, size: int, write: bool) -> bool:
    """Whether an access of ``size`` bytes at ``offset`` passes the segment checks."""
    lowest, highest = segment_bounds(limit, attr, size, write)
    return lowest <= offset <= highest


def segment_fault(seg: int) -> CPUException:
    """#SS(0) for a stack-segment access, #GP(0) otherwise (SDM Vol.3A §5.3; Vol.2
    "Protected Mode Exceptions" of every instruction with a memory operand)."""
    if seg == 2:
        return CPUException(SS, 0, "stack access outside the SS segment")
    name = ("ES", "CS", "SS", "DS", "FS", "GS")[seg]
    return CPUException(GP, 0, f"access outside the {name} segment (limit, type or null)")


# -- accessor generation -----------------------------------------------------------------
def _maker(source: str) -> Callable[..., Callable[..., Any]]:
    return maker(source, "make", "<vmi.cpu.paging>", {})


def _guard(segments: frozenset[int]) -> str:
    """A cheap test of ``seg`` that is true exactly for ``segments`` (0..5)."""
    if not segments:
        return ""
    if len(segments) == 1:
        return f"seg == {next(iter(segments))}"
    top = frozenset(range(min(segments), 6))
    if segments == top:
        return f"seg >= {min(segments)}"
    return "seg in GUARD"


@functools.cache
def _accessor_source(write: bool, size: int, *, checked: bool, expand_down: bool,
                     paging: bool, kind: int, guard: str) -> str:
    """Source of ``make(...)`` returning one accessor (see ``protected_accessors``);
    a pure function of its arguments, so each text is built once."""
    name = f"{'wr' if write else 'rd'}{size * 8}"
    args = "seg, off, v" if write else "seg, off"
    lines = []
    if guard:
        lines += [f"if {guard}:", f"    return checked({args})"]
    if checked:
        test = "off < lo[seg] or off > hi[seg]" if expand_down else "off > hi[seg]"
        lines += [f"if {test}:", "    raise fault(seg)",
                  "lin = (base[seg] + off) & 0xFFFFFFFF"]
    lin = "lin" if checked else "off"
    if paging:
        cross = f" or ({lin} & 0xFFF) > {0x1000 - size:#x}" if size > 1 else ""
        key = f"({lin} >> 12) | {kind:#x}" if kind else f"{lin} >> 12"
        lines += [f"p = tlb_get({key})", f"if p is None{cross}:",
                  f"    return slow({lin}{', v' if write else ''})",
                  f"return access(p | ({lin} & 0xFFF){', v' if write else ''})"]
    else:
        lines.append(f"return access({lin}{', v' if write else ''})")
    body = "\n".join("        " + line for line in lines)
    return (f"def make(access, slow, checked, lo, hi, base, fault, tlb_get, GUARD):\n"
            f"    def {name}({args}):\n{body}\n"
            f"    return {name}\n")


def protected_accessors(cpu: Any) -> tuple[Callable[..., Any], ...]:
    """The six memory accessors ``(rd8, rd16, rd32, wr8, wr16, wr32)`` for a CPU in
    protected mode, built for its current segment caches, CPL, CR0.PG/WP and
    CR4.PSE. Whoever changes any of those installs a new set (``install``).

    Signatures: ``rdN(seg, offset) -> int`` and ``wrN(seg, offset, value)``;
    ``seg`` is the segment register number (ES 0, CS 1, SS 2, DS 3, FS 4, GS 5).
    """
    mem = cpu.mem
    paging = bool(cpu.cr[0] & CR0_PG)
    user = cpu.cpl == 3
    base = list(cpu.seg_base)
    limits, attrs = cpu.seg_limit, cpu.seg_attr
    tlb_get = cpu.tlb.get
    accessors: list[Callable[..., Any]] = []
    for write in (False, True):
        kind = (KIND_USER_READ if user else 0) | (KIND_SUPERVISOR_WRITE if write else 0)
        for size in (1, 2, 4):
            bounds = [segment_bounds(limits[s], attrs[s], size, write) for s in range(6)]
            lo = [b[0] for b in bounds]
            hi = [b[1] for b in bounds]
            expand_down = any(lo)
            access = _raw_access(mem, size, write)
            slow = _slow_access(cpu, size, write, user)
            checked_src = _accessor_source(write, size, checked=True, expand_down=expand_down,
                                           paging=paging, kind=kind, guard="")
            checked = _maker(checked_src)(access, slow, None, lo, hi, base, segment_fault,
                                          tlb_get, None)
            nonflat = frozenset(
                s for s in range(6)
                if base[s] or lo[s] or limits[s] != M32 or hi[s] < 0
            )
            if len(nonflat) == 6:
                accessors.append(checked)
                continue
            guard = _guard(nonflat)
            fast_src = _accessor_source(write, size, checked=False, expand_down=False,
                                        paging=paging, kind=kind, guard=guard)
            accessors.append(_maker(fast_src)(access, slow, checked, lo, hi, base,
                                              segment_fault, tlb_get, nonflat))
    return tuple(accessors)


def _raw_access(mem: Any, size: int, write: bool) -> Callable[..., Any]:
    if write:
        return {1: mem.write8, 2: mem.write16, 4: mem.write32}[size]
    return {1: mem.read8, 2: mem.read16, 4: mem.read32}[size]


def _slow_access(cpu: Any, size: int, write: bool, user: bool) -> Callable[..., Any]:
    """The TLB-miss / page-crossing path of one accessor."""
    if write:
        def slow_write(linear: int, value: int) -> None:
            write_linear(cpu, linear, size, value, user=user)
        return slow_write

    def slow_read(linear: int) -> int:
        return read_linear(cpu, linear, size, user=user)
    return slow_read


def _mode_key(cpu: Any) -> tuple[Any, ...]:
    return (cpu.cr[0] & (CR0_PG | CR0_WP | CR0_PE), cpu.cr[4] & CR4_PSE, cpu.cpl,
            tuple(cpu.seg_base), tuple(cpu.seg_limit), tuple(cpu.seg_attr), id(cpu.tlb))


def install(cpu: Any) -> None:
    """Give a protected-mode CPU the accessors for its current state, unless it
    already has them (segment loads that change nothing cost one comparison).
    Each set is kept per CPU by its mode key (``cpu.accessor_cache``), so moving
    between the kernel's and a user program's segments reuses the sets built
    before: they close over the CPU's TLB and the key's values only."""
    key = _mode_key(cpu)
    if getattr(getattr(cpu, "rd8", None), "mode_key", None) == key:
        return
    cache = cpu.accessor_cache
    made = cache.get(key)
    if made is None:
        if len(cache) >= 32:  # contexts come and go: start over
            cache.clear()
        made = cache[key] = protected_accessors(cpu)
    rd8, rd16, rd32, wr8, wr16, wr32 = made
    cpu.rd8, cpu.rd16, cpu.rd32 = rd8, rd16, rd32
    cpu.wr8, cpu.wr16, cpu.wr32 = wr8, wr16, wr32
    try:
        rd8.mode_key = key  # type: ignore[attr-defined]
    except AttributeError:  # a bound method (never here, but be safe)
        pass
