"""Text views of processor state for the debugger: registers, segments, tables, frames.

Every function here reads the CPU and memory without changing them (tables
and stacks are read through ``memview``) and returns lines of text; the
engine decides when to show them. Layouts follow what gdb and Bochs users
know: ``info registers`` as gdb prints it, descriptor tables decoded with
``vmi.cpu.descriptors``, and the Linux 2.6.16 ``pt_regs`` names on a stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmi.cpu.descriptors import (
    ATTR_DB,
    ATTR_G,
    ATTR_P,
    ATTR_S,
    ATTR_UNUSABLE,
    TYPE_CODE,
    Gate,
    SegmentDescriptor,
    describe,
)
from vmi.cpu.operands import GPR32, SEGMENTS
from vmi.debugger.memview import Unmapped, read_linear, read_u32

M32 = 0xFFFFFFFF
Symbolize = Callable[[int], str]

#: EFLAGS bits by name, in bit order (SDM Vol.1 §3.4.3, Figure 3-8).
EFLAGS_BITS = (
    (0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"), (10, "DF"),
    (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"), (20, "VIP"),
    (21, "ID"),
)

#: Linux 2.6.16 ``struct pt_regs`` as arch/i386/kernel/entry.S names its offsets.
PT_REGS = ("EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX", "DS", "ES", "ORIG_EAX", "EIP",
           "CS", "EFLAGS", "OLDESP", "OLDSS")
PT_REGS_CS = 0x2C
PT_REGS_EFLAGS = 0x30

#: Model-specific registers the machine knows by name (SDM Vol.4, Table 2-2).
MSR_NAMES = {
    0x10: "IA32_TIME_STAMP_COUNTER", 0x1B: "IA32_APIC_BASE", 0x174: "IA32_SYSENTER_CS",
    0x175: "IA32_SYSENTER_ESP", 0x176: "IA32_SYSENTER_EIP",
}

#: 32-bit TSS fields (SDM Vol.3A §7.2.1, Figure 7-2): name, offset, size.
TSS32_FIELDS = (
    ("link", 0, 2), ("esp0", 4, 4), ("ss0", 8, 2), ("esp1", 12, 4), ("ss1", 16, 2),
    ("esp2", 20, 4), ("ss2", 24, 2), ("cr3", 28, 4), ("eip", 32, 4), ("eflags", 36, 4),
    ("eax", 40, 4), ("ecx", 44, 4), ("edx", 48, 4), ("ebx", 52, 4), ("esp", 56, 4),
    ("ebp", 60, 4), ("esi", 64, 4), ("edi", 68, 4), ("es", 72, 2), ("cs", 76, 2),
    ("ss", 80, 2), ("ds", 84, 2), ("fs", 88, 2), ("gs", 92, 2), ("ldt", 96, 2),
    ("iomap", 102, 2),
)


def eflags_text(value: int) -> str:
    """gdb's rendering: the set flags in bit order, ``[ ZF IF ]``, with IOPL if not 0."""
    names = [name for bit, name in EFLAGS_BITS if value >> bit & 1]
    iopl = (value >> 12) & 3
    if iopl:
        names.append(f"IOPL={iopl}")
    return "[ " + " ".join(names) + (" ]" if names else "]")


def mode_name(cpu: Any) -> str:
    """real, protected or paged (protected with paging on), as a person would say it."""
    if not cpu.cr[0] & 1:
        return "real"
    if cpu.flags & 0x20000:
        return "v86"
    return "paged" if cpu.cr[0] & 0x80000000 else "protected"


def registers(cpu: Any, names: list[str] | None, symbolize: Symbolize) -> list[str]:
    """``info registers``: name, hex value, natural value, in gdb's columns."""
    everything = [*GPR32, "eip", "eflags", *SEGMENTS, "cr0", "cr2", "cr3", "cr4"]
    wanted = everything if not names else names
    lines = []
    for name in wanted:
        name = name.lstrip("$").lower()
        name = {"pc": "eip", "sp": "esp", "fp": "ebp"}.get(name, name)
        try:
            value = getattr(cpu.regs, name)
        except AttributeError:
            raise ValueError(f"Invalid register `{name}'") from None
        if name == "eflags":
            natural = eflags_text(value)
        elif name in ("esp", "ebp"):
            natural = f"{value:#x}"
        elif name == "eip":
            natural = f"{value:#x}" + _angle(symbolize((cpu.seg_base[1] + value) & M32))
        elif name.startswith("cr"):
            natural = f"[ {_cr_bits(name, value)} ]" if _cr_bits(name, value) else f"{value:#x}"
        else:
            natural = str(value)
        lines.append(f"{name:<15}{value:<#20x}{natural}")
    return lines


def _angle(text: str) -> str:
    return f" <{text}>" if text else ""


def _cr_bits(name: str, value: int) -> str:
    bits = {"cr0": ((0, "PE"), (1, "MP"), (2, "EM"), (3, "TS"), (4, "ET"), (5, "NE"),
                    (16, "WP"), (18, "AM"), (29, "NW"), (30, "CD"), (31, "PG")),
            "cr4": ((0, "VME"), (1, "PVI"), (2, "TSD"), (3, "DE"), (4, "PSE"), (5, "PAE"),
                    (6, "MCE"), (7, "PGE"))}.get(name, ())
    return " ".join(label for bit, label in bits if value >> bit & 1)


def attr_text(attr: int) -> str:
    """A segment cache's attribute word in words (see ``vmi.cpu.descriptors``)."""
    if attr & ATTR_UNUSABLE:
        return "unusable (null selector)"
    if not attr & ATTR_P:
        return "flat (not loaded from a descriptor)"
    dpl = (attr >> 5) & 3
    if attr & ATTR_S:
        kind = "code" if attr & TYPE_CODE else "data"
        bits = "32-bit" if attr & ATTR_DB else "16-bit"
    else:
        kind, bits = f"system type {attr & 0xF}", ""
    granular = " 4K-granular" if attr & ATTR_G else ""
    return f"{kind} dpl={dpl} {bits}{granular}".rstrip()


def segments(cpu: Any) -> list[str]:
    """``info segments``: every segment register's selector and hidden cache, then the
    descriptor-table registers."""
    lines = []
    for index, name in enumerate(SEGMENTS):
        lines.append(f"{name:<5} {cpu.sreg[index]:#06x}  base={cpu.seg_base[index]:#010x} "
                     f"limit={cpu.seg_limit[index]:#010x}  {attr_text(cpu.seg_attr[index])}")
    lines.append(f"gdtr          base={cpu.gdtr[0]:#010x} limit={cpu.gdtr[1]:#06x}")
    lines.append(f"idtr          base={cpu.idtr[0]:#010x} limit={cpu.idtr[1]:#06x}")
    for name, (selector, base, limit, attr) in (("ldtr", cpu.ldtr), ("tr", cpu.tr)):
        lines.append(f"{name:<5} {selector:#06x}  base={base:#010x} limit={limit:#010x}  "
                     f"{attr_text(attr)}")
    lines.append(f"cpl {cpu.cpl}  mode {mode_name(cpu)}  code {cpu.code_bits}-bit  "
                 f"stack {cpu.stack_bits}-bit")
    return lines


def _table_words(cpu: Any, base: int, offset: int) -> tuple[int, int] | None:
    try:
        data = read_linear(cpu, base + offset, 8)
    except Unmapped:
        return None
    return int.from_bytes(data[:4], "little"), int.from_bytes(data[4:], "little")


def gdt(cpu: Any, limit_entries: int = 256) -> list[str]:
    """``info gdt``: the non-empty descriptors of the GDT, decoded."""
    base, limit = cpu.gdtr
    count = min((limit + 1) // 8, limit_entries)
    lines = [f"GDT base={base:#010x} limit={limit:#06x} ({(limit + 1) // 8} entries)"]
    empty = 0
    for index in range(count):
        words = _table_words(cpu, base, index * 8)
        if words is None:
            lines.append(f"  {index * 8:#06x}  (unmapped)")
            continue
        low, high = words
        if low == 0 and high == 0:
            empty += 1
            continue
        desc = SegmentDescriptor(index * 8, (base + index * 8) & M32, low, high)
        lines.append(f"  {describe(desc)}  [{high:08x}{low:08x}]")
    if empty:
        lines.append(f"  ({empty} empty entries not shown)")
    if (limit + 1) // 8 > count:
        lines.append(f"  (only the first {count} entries shown)")
    return lines


def idt(cpu: Any, symbolize: Symbolize) -> list[str]:
    """``info idt``: IDT gates in protected mode, IVT vectors (CS:IP) in real mode."""
    base, limit = cpu.idtr
    if not cpu.cr[0] & 1:
        lines = [f"IVT base={base:#010x} limit={limit:#06x} (real mode: CS:IP per vector)"]
        shown = 0
        for vector in range(min(256, (limit + 1) // 4)):
            try:
                word = read_u32(cpu, base + vector * 4)
            except Unmapped:
                break
            if word:
                linear = ((word >> 16) << 4) + (word & 0xFFFF)
                lines.append(f"  {vector:#04x}  {word >> 16:04x}:{word & 0xFFFF:04x}"
                             f"{_angle(symbolize(linear))}")
                shown += 1
        if not shown:
            lines.append("  (every vector is 0000:0000)")
        return lines
    gates = min(256, (limit + 1) // 8)
    lines = [f"IDT base={base:#010x} limit={limit:#06x} ({gates} gates)"]
    empty = 0
    for vector in range(min(256, (limit + 1) // 8)):
        words = _table_words(cpu, base, vector * 8)
        if words is None:
            lines.append(f"  {vector:#04x}  (unmapped)")
            continue
        low, high = words
        if low == 0 and high == 0:
            empty += 1
            continue
        gate = Gate(vector, low, high)
        where = f"{gate.selector:#06x}:{gate.offset:#010x}"
        lines.append(f"  {vector:#04x}  {gate.kind:<9} gate {where}  dpl={gate.dpl} "
                     f"{'present' if gate.present else 'not present'}"
                     f"{'' if gate.bits == 32 else ' 16-bit'}{_angle(symbolize(gate.offset))}")
    if empty:
        lines.append(f"  ({empty} empty entries not shown)")
    return lines


def tss(cpu: Any) -> list[str]:
    """``info tss``: the task register and, for a loaded 32-bit TSS, its fields."""
    selector, base, limit, attr = cpu.tr
    lines = [f"tr {selector:#06x}  base={base:#010x} limit={limit:#x}  {attr_text(attr)}"]
    if attr & ATTR_UNUSABLE or not attr & ATTR_P:
        lines.append("no TSS loaded (ltr has not run)")
        return lines
    if not attr & 0x8:
        lines.append("16-bit TSS (fields not decoded)")
        return lines
    try:
        data = read_linear(cpu, base, min(limit + 1, 104))
    except Unmapped as error:
        return [*lines, str(error)]
    row = []
    for name, offset, size in TSS32_FIELDS:
        if offset + size > len(data):
            break
        value = int.from_bytes(data[offset:offset + size], "little")
        row.append(f"{name}={value:#0{2 + 2 * size}x}")
        if len(row) == 4:
            lines.append("  " + "  ".join(row))
            row = []
    if row:
        lines.append("  " + "  ".join(row))
    return lines


def msrs(cpu: Any) -> list[str]:
    """``info msr``: every model-specific register written so far, named where known."""
    if not cpu.msr:
        return ["no model-specific register has been written (all read as 0)"]
    return [f"{number:#06x}  {MSR_NAMES.get(number, ''):<24} {value:#x}"
            for number, value in sorted(cpu.msr.items())]


# -- stack frames ----------------------------------------------------------------------
def _plausible_eflags(value: int) -> bool:
    """Bit 1 set, bits 3, 5, 15 and 22-31 clear (SDM Vol.1 §3.4.3: reserved bits)."""
    return bool(value & 2) and not value & 0xFFC08028


def _code_selector(cpu: Any, selector: int) -> bool:
    """True when ``selector`` names a present code descriptor in the GDT, or is the CS
    a CPU holds now (flat CPUs have no descriptors)."""
    if selector > 0xFFFF or selector & 0xFFFC == 0:
        return False
    if selector == cpu.sreg[1]:
        return True
    if selector & 4:
        return False
    base, limit = cpu.gdtr
    offset = selector & 0xFFF8
    if offset + 7 > limit:
        return False
    words = _table_words(cpu, base, offset)
    if words is None:
        return False
    high = words[1]
    return bool(high & 0x8000) and bool(high & 0x1000) and bool(high & 0x800)


def frame_kind(cpu: Any, words: list[int]) -> str:
    """What sits at ESP: ``pt_regs``, ``iret``, ``iret+error`` or ``raw``."""
    if len(words) >= 13 and _code_selector(cpu, words[PT_REGS_CS // 4]) and \
            _plausible_eflags(words[PT_REGS_EFLAGS // 4]) and \
            words[7] <= 0xFFFF and words[8] <= 0xFFFF:
        return "pt_regs"
    if len(words) >= 3 and _code_selector(cpu, words[1]) and _plausible_eflags(words[2]):
        return "iret"
    if len(words) >= 4 and words[0] <= 0xFFFF and _code_selector(cpu, words[2]) and \
            _plausible_eflags(words[3]):
        return "iret+error"
    return "raw"


def stack(cpu: Any, count: int, symbolize: Symbolize) -> list[str]:
    """``stack``: the words at SS:ESP, with the frame named when one is recognised.

    A Linux 2.6.16 ``pt_regs`` frame (SAVE_ALL over the processor's interrupt
    frame) gets the entry.S names EBX..OLDSS at offsets 0x00..0x38; OLDESP and
    OLDSS are marked as not pushed when the saved CS is at the current privilege
    (no stack switch, SDM Vol.3A §6.12.1). A bare interrupt frame (EIP, CS,
    EFLAGS, with an error code below it for the vectors that push one) is named
    too; anything else is shown as raw words.
    """
    esp = cpu.r[4] if cpu.stack_bits == 32 else cpu.r[4] & 0xFFFF
    linear = (cpu.seg_base[2] + esp) & M32
    words = []
    for index in range(max(count, 16)):
        try:
            words.append(read_u32(cpu, linear + 4 * index))
        except Unmapped:
            break
    if not words:
        return [f"Cannot access memory at address {linear:#x} (esp={esp:#x})"]
    kind = frame_kind(cpu, words)
    names: dict[int, str] = {}
    if kind == "pt_regs":
        names = dict(enumerate(PT_REGS))
        title = "pt_regs frame (Linux 2.6.16 entry.S offsets)"
        saved_cs = words[PT_REGS_CS // 4]
        shown = max(count, 15)
    elif kind == "iret":
        names = {0: "EIP", 1: "CS", 2: "EFLAGS", 3: "ESP", 4: "SS"}
        title = "interrupt frame"
        saved_cs = words[1]
        shown = count
    elif kind == "iret+error":
        names = {0: "ERROR", 1: "EIP", 2: "CS", 3: "EFLAGS", 4: "ESP", 5: "SS"}
        title = "interrupt frame with error code"
        saved_cs = words[2]
        shown = count
    else:
        title, saved_cs, shown = "raw words", None, count
    outer = saved_cs is not None and (saved_cs & 3) > cpu.cpl
    lines = [f"stack at {cpu.sreg[2]:#06x}:{esp:#010x} (linear {linear:#010x}): {title}"]
    for index, word in enumerate(words[:shown]):
        name = names.get(index, "")
        note = ""
        if name in ("OLDESP", "OLDSS", "ESP", "SS") and saved_cs is not None and not outer:
            note = "  (not pushed: same-privilege entry)"
        elif name == "EFLAGS":
            note = "  " + eflags_text(word)
        elif name in ("EIP", "") and symbolize(word):
            note = f"  <{symbolize(word)}>"
        lines.append(f"  {linear + 4 * index:#010x} +{4 * index:#04x}  {name:<9}"
                     f"{word:#010x}{note}")
    return lines
