"""A GNU-as-compatible AT&T assembler for i386, with the VMI macro sets.

``assemble(source)`` turns the text of a ``.S`` file into a ``Program``: a
flat image placed at ``base``, its symbols, sections, the VMI annotation
records and a listing. The dialect, the macro sets and the choices made for
the flat image are documented in ``docs/asm.md``.
"""

from __future__ import annotations

import gc
from importlib import resources
from pathlib import Path

from vmi.asm.errors import AsmError, Diagnostic, Location
from vmi.asm.program import Annotation, ListingLine, Program, Section

__all__ = [
    "assemble", "AsmError", "Diagnostic", "Location", "Program", "Section", "Annotation",
    "ListingLine", "MACRO_SETS", "macro_source",
]

#: The macro sets selectable with ``macros=``: name -> file under ``vmi/asm/macros``.
MACRO_SETS = {
    "native": "native.S",
    "vmi": "vmi.S",
    "naive": "naive.S",
    "vmi-split": "vmi-split.S",
}


def macro_source(name: str) -> tuple[str, str]:
    """The text and path of macro set ``name`` (``native``, ``vmi``, ``naive``, ``vmi-split``)."""
    if name not in MACRO_SETS:
        choices = ", ".join(MACRO_SETS)
        raise ValueError(f"unknown macro set {name!r} (choose one of {choices})")
    resource = resources.files("vmi.asm").joinpath("macros", MACRO_SETS[name])
    return resource.read_text(encoding="utf-8"), str(resource)


def assemble(source: str, *, macros: str | None = "native", base: int = 0,
             filename: str = "<string>", defines: dict[str, int] | None = None) -> Program:
    """Assemble AT&T ``source`` into a ``Program`` placed at ``base``.

    ``macros`` names the macro set prepended to the source (None: none);
    ``defines`` are absolute symbols defined before it (``{"VMI_VIF": 0x...}``).
    ``.include`` paths are relative to ``filename``'s directory. Raises
    ``AsmError`` with every located error (up to 20) when the source is wrong.
    """
    from vmi.asm.assembler import Assembler

    if not 0 <= base <= 0xFFFFFFFF:
        raise ValueError(f"base {base:#x} is not a 32-bit address")
    directory = Path(filename).parent if filename != "<string>" else Path.cwd()
    sources: list[tuple[str, str, Path]] = []
    if defines:
        lines = []
        for name, value in defines.items():
            if not isinstance(value, int):
                raise TypeError(f"define {name!r} must be an int, not {type(value).__name__}")
            lines.append(f".set {name}, {value:#x}")
        sources.append(("\n".join(lines) + "\n", "<defines>", directory))
    if macros is not None:
        text, path = macro_source(macros)
        sources.append((text, path, Path(path).parent))
    sources.append((source, filename, directory))
    # Assembling allocates objects by the million and frees few; Python's cyclic
    # collector would walk them over and over (a fifth of the time on a large
    # source). The assembler makes no garbage that needs it while it runs.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return Assembler(base).assemble(sources, listed_from=len(sources) - 1)
    finally:
        if collecting:
            gc.enable()
