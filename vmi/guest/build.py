"""Assemble the bundled guest: boot ROM, kernel, vsyscall page and user programs.

One kernel source (``kernel/kernel.S``) is assembled with each macro set
(``native``, ``vmi``, ``naive``, ``vmi-split``, see docs/asm.md); the boot
ROM, the vsyscall stub and the user programs use no hook and are assembled
without one. Results are cached per macro set (per program and slot for the
user programs), so tests pay for each assembly once per process, and on disk
(``vmi.asm.imagecache``, keyed by a hash of the sources, the macro set and the
defines), so a new process does not assemble them again.

Memory map (docs/guest.md)::

    physical                      virtual (after paging)
    0x000F0000  boot ROM (64 KiB, aliased at 0xFFFF0000: the reset vector)
    0x00100000  kernel image  ->  0xC0100000 (PAGE_OFFSET + 1 MiB), then .bss
    0x00400000  user region   ->  0x08000000 (4 MiB, user-accessible)
    0x00440000    vsyscall    ->  0x08040000
    0x00448000    program i   ->  0x08048000 + i * 0x10000 (64 KiB slots)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from attrs import frozen

from vmi.asm import Program
from vmi.asm.imagecache import assemble_cached as assemble

SOURCE_DIR = Path(__file__).parent
KERNEL_SOURCE = SOURCE_DIR / "kernel" / "kernel.S"
ROM_SOURCE = SOURCE_DIR / "boot.S"
USER_DIR = SOURCE_DIR / "user"

MACRO_SETS = ("native", "vmi", "naive", "vmi-split")

PAGE_OFFSET = 0xC000_0000
KERNEL_PHYS = 0x0010_0000
ROM_BASE = 0x000F_0000
USER_VIRT = 0x0800_0000
USER_PHYS = 0x0040_0000
USER_SIZE = 0x0040_0000
VSYSCALL_BASE = 0x0804_0000
PROGRAM_BASE = 0x0804_8000
PROGRAM_SLOT = 0x1_0000
#: The kernel's limits (kernel/defs.S: NR_CPUS, NR_TASKS).
MAX_CPUS = 4
MAX_TASKS = 16
#: The user programs in vmi/guest/user/ (besides lib.S and vsyscall.S). ``callgate``
#: and ``badseg`` are not in the default workload (``loader.DEFAULT_WORKLOAD``);
#: tests and the race explorer's ``iret-fault`` path boot them.
PROGRAMS = ("syscalls", "locker", "fpu", "stack16", "callgate", "badseg")


@frozen
class Image:
    """An assembled image and where it goes in physical memory."""

    name: str
    program: Program
    load_address: int

    @property
    def symbols(self) -> dict[str, int]:
        return self.program.symbols

    def physical(self, address: int) -> int:
        """The physical address of ``address`` (a linked address of this image)."""
        return address - self.program.base + self.load_address


@frozen
class GuestBuild:
    """The images of one macro set: ROM, kernel and vsyscall page. User programs
    come from ``user_program`` (they depend on their slot, not the macro set)."""

    macros: str
    rom: Image
    kernel: Image
    vsyscall: Image

    def symbol(self, name: str) -> int:
        """A kernel symbol's linked (virtual) address or value."""
        return self.kernel.symbols[name]

    def kernel_physical(self, name: str) -> int:
        return self.kernel.physical(self.symbol(name))


def user_physical(address: int) -> int:
    """The physical address behind a user-region virtual address."""
    if not USER_VIRT <= address < USER_VIRT + USER_SIZE:
        raise ValueError(f"{address:#x} is outside the user region")
    return address - USER_VIRT + USER_PHYS


def slot_base(slot: int) -> int:
    """The linked address of the user program in slot ``slot``."""
    if not 0 <= slot < MAX_TASKS:
        raise ValueError(f"slot {slot} is outside 0..{MAX_TASKS - 1}")
    return PROGRAM_BASE + slot * PROGRAM_SLOT


@cache
def build_guest(macros: str = "native") -> GuestBuild:
    """Assemble the ROM, the kernel (with macro set ``macros``) and the vsyscall page."""
    if macros not in MACRO_SETS:
        raise ValueError(f"unknown macro set {macros!r} (choose one of {', '.join(MACRO_SETS)})")
    defines = {"MACRO_SET_ID": MACRO_SETS.index(macros)}
    if macros == "naive":
        defines.update(naive_defines())
    kernel = assemble(KERNEL_SOURCE.read_text(), macros=macros, base=PAGE_OFFSET + KERNEL_PHYS,
                      filename=str(KERNEL_SOURCE), defines=defines)
    rom = assemble(ROM_SOURCE.read_text(), macros=None, base=ROM_BASE, filename=str(ROM_SOURCE),
                   defines={"KERNEL_ENTRY": kernel.symbols["startup_32"] - PAGE_OFFSET})
    return GuestBuild(
        macros=macros,
        rom=Image("rom", rom, ROM_BASE),
        kernel=Image("kernel", kernel, KERNEL_PHYS),
        vsyscall=_vsyscall(),
    )


def naive_defines() -> dict[str, int]:
    """Where the naive kernel keeps its virtual IF and pending word: the addresses
    the hypervisor publishes (``vmi.hypervisor.layout.NAIVE_DEFINES``), or the
    macro set's placeholders when the hypervisor package is not there."""
    try:
        from vmi.hypervisor.layout import NAIVE_DEFINES
    except ImportError:
        return {}
    return dict(NAIVE_DEFINES)


@cache
def _vsyscall() -> Image:
    path = USER_DIR / "vsyscall.S"
    program = assemble(path.read_text(), macros=None, base=VSYSCALL_BASE, filename=str(path))
    return Image("vsyscall", program, user_physical(VSYSCALL_BASE))


@cache
def user_program(name: str, slot: int) -> Image:
    """User program ``name`` linked for slot ``slot``."""
    if name not in PROGRAMS:
        raise ValueError(f"unknown user program {name!r} (choose from {', '.join(PROGRAMS)})")
    path = USER_DIR / f"{name}.S"
    base = slot_base(slot)
    vsyscall = _vsyscall().symbols
    program = assemble(path.read_text(), macros=None, base=base, filename=str(path),
                       defines={"VSYSCALL_ENTRY": vsyscall["__kernel_vsyscall"]})
    end = max(section.end for section in program.sections)
    if end > base + PROGRAM_SLOT // 2:
        raise ValueError(f"user program {name} ({end - base:#x} bytes) does not fit its slot")
    return Image(name, program, user_physical(base))
