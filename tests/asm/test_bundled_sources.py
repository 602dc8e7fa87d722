"""Byte-for-byte agreement with ``as --32`` for every bundled ``.S`` source, as built.

Each case is one image the product really assembles: the kernel
(``vmi/guest/kernel/kernel.S``) with each macro set, the boot ROM
(``vmi/guest/boot.S``) of each guest build, the vsyscall page, every user
program in every slot it can be loaded in, and the VMI ROM
(``vmi/hypervisor/rom.S``). The ``vmi.asm`` side is the product's own
``Program`` (from ``vmi.guest.build`` and, for the ROM, the same call as
``vmi.hypervisor.rom.build_rom``); the GNU side reproduces it:

- the macro set is prepended as ``vmi.asm`` prepends it: a wrapper file
  ``.include``-s the macro file and then the source;
- ``defines`` become ``--defsym NAME=VALUE`` (``vmi.asm`` turns them into
  ``.set`` lines in front of everything: absolute symbols known before use,
  like ``--defsym``);
- ``.include`` is relative to the including file in ``vmi.asm`` and to the
  ``-I`` directories in GNU as: the source's directory and the macro
  directory are passed with ``-I``;
- ``ld -m elf_i386`` places every section at the address ``vmi.asm`` gave it.

Then every section is compared (address, size, bytes), and the whole flat
image. Skipped when ``as`` or ``ld`` is not installed. ``docs/asm.md``,
"The bundled sources", describes the check.

Every source is given to GNU as as written, so the test fails on a statement GNU
as rejects. ``boot.S`` writes offsets in the ROM segment as ``label - rom_start``
(a 16-bit field GNU as cannot fill with ``label - ROM_BASE``): the test checks
that ``rom_start`` is ``ROM_BASE``, the image base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.asm.gnu import LINK_TOOLS, GnuSection, gnu_link_sections, missing_tools
from vmi.asm import Program, assemble, macro_source
from vmi.guest import build

pytestmark = pytest.mark.skipif(
    bool(missing_tools(LINK_TOOLS)),
    reason=f"GNU binutils not on PATH (missing: {', '.join(missing_tools(LINK_TOOLS))}): "
           "the bundled sources cannot be compared with as --32")


@dataclass(frozen=True)
class Case:
    """One image as the product builds it: what to give GNU as, and the product's
    ``Program`` to compare with."""

    source: Path
    macros: str | None
    base: int
    defines: dict[str, int] = field(default_factory=dict)


def _kernel(macros: str) -> tuple[Case, Program]:
    defines = {"MACRO_SET_ID": build.MACRO_SETS.index(macros)}
    if macros == "naive":
        defines.update(build.naive_defines())
    program = build.build_guest(macros).kernel.program
    return Case(build.KERNEL_SOURCE, macros, build.PAGE_OFFSET + build.KERNEL_PHYS,
                defines), program


def _boot(macros: str) -> tuple[Case, Program]:
    guest = build.build_guest(macros)
    entry = guest.symbol("startup_32") - build.PAGE_OFFSET
    return Case(build.ROM_SOURCE, None, build.ROM_BASE, {"KERNEL_ENTRY": entry}), guest.rom.program


def _vsyscall() -> tuple[Case, Program]:
    program = build.build_guest("native").vsyscall.program
    return Case(build.USER_DIR / "vsyscall.S", None, build.VSYSCALL_BASE), program


def _user(name: str, slot: int) -> tuple[Case, Program]:
    entry = build.build_guest("native").vsyscall.symbols["__kernel_vsyscall"]
    program = build.user_program(name, slot).program
    return Case(build.USER_DIR / f"{name}.S", None, build.slot_base(slot),
                {"VSYSCALL_ENTRY": entry}), program


def _vmi_rom() -> tuple[Case, Program]:
    from vmi.hypervisor import layout
    from vmi.hypervisor.rom import build_rom, rom_defines, rom_source

    text, path = rom_source()
    case = Case(Path(path), None, layout.ROM_LINEAR, rom_defines())
    program = assemble(text, macros=None, base=case.base, filename=path, defines=case.defines)
    # The same image build_rom() seals (it only replaces the last byte by the checksum).
    assert build_rom().image[:-1] == program.image[:-1], "rom.S is not assembled as build_rom does"
    return case, program


CASES: dict[str, Callable[[], tuple[Case, Program]]] = {
    **{f"kernel.S-{m}": (lambda m=m: _kernel(m)) for m in build.MACRO_SETS},
    **{f"boot.S-{m}": (lambda m=m: _boot(m)) for m in build.MACRO_SETS},
    "vsyscall.S": _vsyscall,
    **{f"{name}.S-slot{slot}": (lambda name=name, slot=slot: _user(name, slot))
       for name in build.PROGRAMS for slot in range(build.MAX_TASKS)},
    "rom.S": _vmi_rom,
}


def gnu_source(case: Case) -> str:
    """What GNU as reads for ``case``: the macro set, then the source, both included."""
    lines = []
    if case.macros is not None:
        lines.append(f'\t.include "{macro_source(case.macros)[1]}"')
    lines.append(f'\t.include "{case.source}"')
    return "\n".join(lines) + "\n"


def gnu_includes(case: Case) -> list[Path]:
    """``-I``: GNU as looks up ``.include`` there, vmi.asm next to the including file."""
    includes = [case.source.parent]
    if case.macros is not None:
        includes.append(Path(macro_source(case.macros)[1]).parent)
    return includes


def gnu_sections(case: Case, program: Program) -> dict[str, GnuSection]:
    """``case`` assembled by GNU as and linked at ``program``'s section addresses."""
    return gnu_link_sections(gnu_source(case), program, gnu_includes(case), case.defines)


def _listing_at(program: Program, section: str, address: int) -> str:
    """The vmi.asm listing lines that produced the byte at ``address`` (the nearest
    line before it when none did: alignment padding, a gap)."""
    covering = [line for line in program.listing if line.section == section
                and line.address <= address < line.address + len(line.data)]
    if not covering:
        before = [line for line in program.listing
                  if line.section == section and line.address <= address]
        covering = before[-1:]
    return "\n".join(f"    {Path(line.filename).name}:{line.line}: {line.address:#x}: "
                     f"{line.data.hex(' ')}  {'  ' * line.depth}{line.text.strip()}"
                     for line in covering) or "    (no listing line)"


def _difference(name: str, address: int, ours: bytes, theirs: bytes, program: Program) -> str:
    """A report of the first byte where ``ours`` (vmi.asm) and ``theirs`` (GNU as) differ."""
    offset = next((k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                  min(len(ours), len(theirs)))
    start = max(0, offset - 8)
    return (f"section {name}: first difference at offset {offset:#x} "
            f"(address {address + offset:#x}); sizes vmi.asm {len(ours)} GNU as {len(theirs)}\n"
            f"  vmi.asm [{start:#x}:] {ours[start:offset + 16].hex(' ')}\n"
            f"  GNU as  [{start:#x}:] {theirs[start:offset + 16].hex(' ')}\n"
            f"  vmi.asm listing:\n{_listing_at(program, name, address + offset)}")


def compare(program: Program, gnu: dict[str, GnuSection]) -> list[str]:
    """Every disagreement between ``program`` and GNU as's linked sections."""
    problems = []
    names = {section.name for section in program.sections}
    for section in program.sections:
        theirs = gnu.get(section.name)
        if theirs is None:
            if section.size:
                problems.append(f"section {section.name}: not in GNU as's output")
            continue
        if (theirs.address, theirs.size) != (section.address, section.size):
            problems.append(f"section {section.name}: vmi.asm at {section.address:#x} size "
                            f"{section.size:#x}, GNU as at {theirs.address:#x} size "
                            f"{theirs.size:#x}")
        if section.nobits != theirs.nobits:
            problems.append(f"section {section.name}: nobits vmi.asm {section.nobits}, "
                            f"GNU as {theirs.nobits}")
        if section.nobits:
            continue
        ours = program.section_bytes(section.name)
        if ours != theirs.data:
            problems.append(_difference(section.name, section.address, ours, theirs.data, program))
    extra = [s.name for s in gnu.values() if s.alloc and s.size and s.name not in names]
    if extra:
        problems.append(f"sections only GNU as produced: {extra}")
    return problems


def gnu_image(program: Program, gnu: dict[str, GnuSection]) -> bytes:
    """GNU as's sections laid out as ``program.image``: loaded sections from ``base``,
    zero gaps."""
    image = bytearray(len(program.image))
    for section in program.sections:
        if section.loaded and not section.nobits and section.name in gnu:
            start = section.address - program.base
            image[start:start + section.size] = gnu[section.name].data[:section.size]
    return bytes(image)


@pytest.mark.parametrize("name", CASES)
def test_bundled_source_matches_gnu_as(name: str) -> None:
    case, program = CASES[name]()
    assert program.base == case.base
    # The defines given to GNU as are the ones the product assembled with.
    assert {key: program.symbols.get(key) for key in case.defines} == case.defines
    assert [str(w) for w in program.warnings] == []
    if case.source.name == "boot.S":  # offsets in the ROM segment are label - rom_start
        assert program.symbols["rom_start"] == program.symbols["ROM_BASE"] == program.base
    gnu = gnu_sections(case, program)
    problems = compare(program, gnu)
    assert not problems, f"{case.source.name} ({name}) differs from as --32:\n" + "\n".join(
        problems)
    assert gnu_image(program, gnu) == program.image  # the whole flat image
    assert program.image, "an empty image compares trivially"
