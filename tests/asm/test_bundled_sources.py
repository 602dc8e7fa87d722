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

A few statements of the bundled sources are spelled in a way GNU as rejects
although their bytes are well defined (``GNU_SPELLINGS``): GNU as is given the
GNU spelling of the same statement there, and ``test_gnu_spellings_are_needed``
checks that GNU as really rejects each original (so an entry that is no longer
needed fails instead of lingering).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.asm.gnu import LINK_TOOLS, GnuFailure, GnuSection, gnu_link_sections, missing_tools
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


#: Statements GNU as rejects, and the GNU spelling (same bytes) GNU as is given instead:
#: file name -> [(statement as written, GNU spelling, vmi.asm warns about it)]. Each
#: original is rejected by GNU as (``test_gnu_spellings_are_needed``); rewriting the
#: sources this way makes the entry unnecessary (the test then says so).
GNU_SPELLINGS: dict[str, list[tuple[str, str, bool]]] = {
    # GNU as writes an ELF object with REL relocations: a 16-bit field holds the
    # addend, the label's offset in .text minus 0xF0000, which does not fit
    # ("value of fff10050 too large for field of 2 bytes"), although the linked
    # value does. rom_start is ROM_BASE (the first byte of .text), and a difference
    # of two labels of one section is a constant to GNU as.
    "boot.S": [
        ("lgdtl %cs:(boot_gdt_descr - ROM_BASE)", "lgdtl %cs:(boot_gdt_descr - rom_start)",
         False),
        ("ljmp $0xF000, $(rom_start - ROM_BASE)", "ljmp $0xF000, $(rom_start - rom_start)",
         False),
    ],
    # GNU as splits macro arguments at the blanks around `-`: four arguments for
    # PRINT's two ("too many positional arguments"); vmi.asm warns and reads one
    # expression (docs/asm.md, "Differences from GNU as").
    "syscalls.S": [("PRINT hello, hello_end - hello", "PRINT hello, hello_end-hello", True)],
    "locker.S": [("PRINT done, done_end - done", "PRINT done, done_end-done", True)],
    "fpu.S": [("PRINT done, done_end - done", "PRINT done, done_end-done", True)],
    "stack16.S": [("PRINT done, done_end - done", "PRINT done, done_end-done", True)],
}
#: The vmi.asm warning that marks a statement of the second kind.
SPLIT_WARNING = "GNU as splits these arguments at blanks"


def _respelled(source: Path) -> tuple[str, list[int], list[int]]:
    """``source`` with the GNU spellings of ``GNU_SPELLINGS``, the 1-based lines changed,
    and those of them vmi.asm warns about."""
    text = source.read_text()
    lines = text.split("\n")
    changed, warned = [], []
    for original, spelling, warns in GNU_SPELLINGS.get(source.name, ()):
        hits = [k for k, line in enumerate(lines) if original in line]
        assert hits, (f"{source.name} no longer has {original!r}: remove it from "
                      f"GNU_SPELLINGS")
        for k in hits:
            lines[k] = lines[k].replace(original, spelling)
            changed.append(k + 1)
            if warns:
                warned.append(k + 1)
    return "\n".join(lines), sorted(changed), sorted(warned)


def gnu_source(case: Case, respell: bool = True) -> str:
    """What GNU as reads for ``case``: the macro set, then the source (included, or
    inline with its GNU spellings)."""
    lines = []
    if case.macros is not None:
        lines.append(f'\t.include "{macro_source(case.macros)[1]}"')
    if respell and case.source.name in GNU_SPELLINGS:
        lines.append(_respelled(case.source)[0])
    else:
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
    # vmi.asm warns about exactly the split statements GNU as is given respelled.
    assert sorted((w.location.filename, w.location.line) for w in program.warnings
                  if SPLIT_WARNING in w.message
                  ) == [(str(case.source), line) for line in _respelled(case.source)[2]]
    assert [str(w) for w in program.warnings if SPLIT_WARNING not in w.message] == []
    if case.source.name == "boot.S":  # the GNU spelling names rom_start for ROM_BASE
        assert program.symbols["rom_start"] == program.symbols["ROM_BASE"] == program.base
    gnu = gnu_sections(case, program)
    problems = compare(program, gnu)
    assert not problems, f"{case.source.name} ({name}) differs from as --32:\n" + "\n".join(
        problems)
    assert gnu_image(program, gnu) == program.image  # the whole flat image
    assert program.image, "an empty image compares trivially"


#: One product build of each source that has GNU spellings.
SPELLED = {"boot.S": "boot.S-native", **{f"{name}.S": f"{name}.S-slot0" for name in build.PROGRAMS}}


@pytest.mark.parametrize("source", GNU_SPELLINGS)
def test_gnu_spellings_are_needed(source: str) -> None:
    """GNU as rejects each statement of ``GNU_SPELLINGS`` as written (and nothing else)."""
    case, program = CASES[SPELLED[source]]()
    with pytest.raises(GnuFailure) as failure:
        gnu_link_sections(gnu_source(case, respell=False), program, gnu_includes(case),
                          case.defines)
    rejected = sorted({line for path, line, _message in failure.value.errors
                       if Path(path).name == source})
    assert rejected == _respelled(case.source)[1], failure.value.stderr
