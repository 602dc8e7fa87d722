"""Driving GNU binutils (``as --32``, ``ld -m elf_i386``, ``objcopy``, ``nm``) for the
tests that compare ``vmi.asm`` with GNU as byte for byte.

``gnu_assemble`` assembles a text and returns ``.text``, the symbols and the
diagnostics by line (the generated corpus); ``gnu_link_sections`` assembles,
links every section at the address ``vmi.asm`` gave it and returns the linked
sections read from the ELF file (the samples and the bundled sources);
``gnu_link`` is its short form, section name -> bytes.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The tools each kind of comparison needs.
AS_TOOLS = ("as", "objcopy", "nm")
LINK_TOOLS = ("as", "ld")


def missing_tools(tools: Iterable[str] = AS_TOOLS) -> list[str]:
    """The tools of ``tools`` that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def gnu_as_available(tools: Iterable[str] = AS_TOOLS) -> bool:
    return not missing_tools(tools)


def gnu_assemble(source: str, include: Path | None = None) -> GnuResult:
    """Assemble with ``as --32``: .text bytes, symbols, errors and warnings by line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.s"
        path.write_text(source)
        obj = Path(tmp) / "corpus.o"
        command = ["as", "--32", str(path), "-o", str(obj)]
        if include is not None:
            command[2:2] = ["-I", str(include)]
        run = subprocess.run(command, capture_output=True, text=True)
        result = GnuResult()
        prefix = f"{path}:"
        for line in run.stderr.splitlines():
            if not line.startswith(prefix):
                continue
            number_text, _, rest = line[len(prefix):].partition(":")
            if not number_text.isdigit():
                continue
            number = int(number_text)
            if rest.startswith(" Error: "):
                result.errors.setdefault(number, rest[len(" Error: "):])
            elif rest.startswith(" Warning: "):
                result.warnings.setdefault(number, rest[len(" Warning: "):])
        if run.returncode != 0:
            if not result.errors:
                result.errors[0] = run.stderr
            return result
        binary = Path(tmp) / "text.bin"
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)],
                       check=True)
        nm = subprocess.run(["nm", "-n", str(obj)], capture_output=True, text=True,
                            check=True)
        for row in nm.stdout.splitlines():
            parts = row.split()
            if len(parts) == 3:
                result.symbols[parts[2]] = int(parts[0], 16)
        result.text = binary.read_bytes()
        return result


@dataclass(frozen=True)
class GnuSection:
    """A section of the linked ELF file."""

    name: str
    address: int
    size: int
    nobits: bool
    alloc: bool
    data: bytes  # empty for nobits sections


#: ELF section types and flags used below.
SHT_NOBITS = 8
SHF_ALLOC = 2


def elf_sections(elf: bytes) -> dict[str, GnuSection]:
    """Every named section of a little-endian ELF32 file (``ld -m elf_i386``'s output)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1 or elf[5] != 1:
        raise ValueError("not a little-endian ELF32 file")
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    headers = [struct.unpack_from("<10I", elf, shoff + k * shentsize) for k in range(shnum)]
    strtab = headers[shstrndx]
    names = elf[strtab[4]:strtab[4] + strtab[5]]
    out = {}
    for name_off, kind, flags, address, offset, size, *_rest in headers[1:]:
        name = names[name_off:names.index(b"\0", name_off)].decode()
        nobits = kind == SHT_NOBITS
        data = b"" if nobits else elf[offset:offset + size]
        out[name] = GnuSection(name, address, size, nobits, bool(flags & SHF_ALLOC), data)
    return out


def linker_script(program) -> str:
    """An ``ld`` script placing every section of ``program`` (a ``vmi.asm.Program``)
    at the address ``vmi.asm`` gave it."""
    script = ["SECTIONS {"]
    for section in program.sections:
        kind = " (NOLOAD)" if section.nobits else ""
        script.append(f'  "{section.name}" {section.address:#x}{kind} : '
                      f'{{ *("{section.name}") }}')
    script.append("}")
    return "\n".join(script) + "\n"


class GnuFailure(AssertionError):
    """A binutils tool failed; ``errors`` holds GNU as's ``(file, line, message)``."""

    def __init__(self, what: str, command: list[str], stderr: str) -> None:
        super().__init__(f"{what} failed ({' '.join(command)}):\n{stderr}")
        self.stderr = stderr
        self.errors: list[tuple[str, int, str]] = []
        for line in stderr.splitlines():
            where, _, message = line.partition(": Error: ")
            path, _, number = where.rpartition(":")
            if message and number.isdigit():
                self.errors.append((path, int(number), message))


def _run(command: list[str], what: str, cwd: str | None = None) -> None:
    run = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if run.returncode != 0:
        raise GnuFailure(what, command, run.stderr)


def gnu_link_sections(source: str, program, includes: Iterable[Path | None] = (),
                      defsyms: Mapping[str, int] | None = None) -> dict[str, GnuSection]:
    """Assemble ``source`` with ``as --32`` (``-I`` each of ``includes``, ``--defsym``
    each of ``defsyms``), link it with ``ld -m elf_i386`` at ``program``'s section
    addresses, and return the sections of the linked file (``.symtab`` and the
    other unallocated bookkeeping sections included). Raises ``GnuFailure`` when
    GNU as or ld fails."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, elf = Path(tmp) / "in.S", Path(tmp) / "in.o", Path(tmp) / "out.elf"
        src.write_text(source)
        command = ["as", "--32"]
        for include in includes:
            if include is not None:
                command += ["-I", str(include)]
        for name, value in (defsyms or {}).items():
            command += ["--defsym", f"{name}={value:#x}"]
        _run([*command, str(src), "-o", str(obj)], "as", cwd=tmp)  # .include: -I only
        script = Path(tmp) / "link.ld"
        script.write_text(linker_script(program))
        _run(["ld", "-m", "elf_i386", "-T", str(script), "-o", str(elf), str(obj)], "ld")
        return elf_sections(elf.read_bytes())


def gnu_link(source: str, program, include: Path | None = None) -> dict[str, bytes]:
    """Assemble with GNU as, link with ld at ``program``'s section addresses, and
    return the bytes of every section ``program`` loads or keeps (not its nobits
    sections)."""
    sections = gnu_link_sections(source, program, [include])
    empty = GnuSection("", 0, 0, False, False, b"")  # GNU as left out an empty section
    return {section.name: sections.get(section.name, empty).data
            for section in program.sections if not section.nobits}


@dataclass
class GnuResult:
    text: bytes = b""
    symbols: dict[str, int] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    warnings: dict[int, str] = field(default_factory=dict)
