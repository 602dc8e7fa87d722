"""``vmi gdbserver --symbols FILE.elf``: a symbol file stock gdb can load.

gdb knows nothing of the machine's symbols over the remote protocol, so
``break restore_nocheck`` fails until it has read an ELF file naming them. This
module writes one with ``vmi.asm.elf.write_elf``: every program the session
runs, with its code and data as ``PT_LOAD`` sections at their link (linear)
addresses, and every symbol the debugger knows. For the bundled kernel that is
the kernel (sections ``.text``, ``.data``...), the vsyscall page
(``vsyscall.text``...), the boot ROM (``bootrom.text``...), each user program
(``NAME.text``...), and under the VMI monitor its ROM (``vmi_rom``, 4 KiB at
``layout.ROM_LINEAR``); the symbols are ``System.symbols`` plus the boot ROM's
``bootrom.NAME``. For ``--program`` it is that program and its symbols.

User programs are linked at their own addresses; where two loaded sections
would overlap, the later one is left out (its symbols stay), so gdb never sees
two segments claim one address.
"""

from __future__ import annotations

import os
from typing import Any

from vmi.asm.elf import program_sections, write_elf


def _named(prefix: str, program: Any) -> list[tuple[str, int, Any, Any]]:
    """``program``'s sections for ``write_elf``, their names prefixed (``vsyscall.text``)."""
    out = []
    for name, address, data, flags in program_sections(program):
        shown = name if not prefix else f"{prefix}{name}"
        out.append((shown, address, data, flags))
    return out


def symbol_sections(engine: Any) -> list[tuple[str, int, Any, Any]]:
    """The sections of the session's programs (see the module docstring)."""
    sections: list[tuple[str, int, Any, Any]] = []
    system = engine.system
    if system is not None:
        build = system.guest.build
        sections += _named("", build.kernel.program)
        sections += _named("vsyscall", build.vsyscall.program)
        sections += _named("bootrom", build.rom.program)
        for image in system.guest.programs:
            sections += _named(image.name, image.program)
        if system.monitor is not None:
            from vmi.hypervisor import layout

            sections.append(("vmi_rom", layout.ROM_LINEAR, system.monitor.rom.image, "ax"))
    elif engine.program is not None:
        sections += _named("", engine.program)
    return _without_overlaps(sections)


def _without_overlaps(sections: list[tuple[str, int, Any, Any]]) -> list[tuple[str, int, Any, Any]]:
    kept: list[tuple[str, int, Any, Any]] = []
    taken: list[tuple[int, int]] = []
    for section in sections:
        name, address, data, flags = section
        size = data if isinstance(data, int) else len(data)
        if "a" in str(flags) and size:
            end = address + size
            if any(address < stop and start < end for start, stop in taken):
                continue
            taken.append((address, end))
        kept.append(section)
    return kept


def write_symbols(engine: Any, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Write the symbol file of ``engine``'s session to ``path``; returns the number
    of sections and of symbols written. ``OSError`` if it cannot be written."""
    sections = symbol_sections(engine)
    symbols = {name: value & 0xFFFFFFFF for name, value in engine.symbols.items()}
    cpu = engine.machine.cpus[0]
    entry = symbols.get("_start", (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF)
    write_elf(path, sections, symbols, entry)
    return len(sections), len(symbols)
