"""ELF32 i386 executable images of an assembled program, for debuggers and binutils.

``vmi asm SOURCE -o FILE.elf`` (and ``vmi gdbserver --symbols FILE.elf``) need
a file that ``gdb``, ``readelf``, ``objdump`` and ``nm`` understand: the
program's sections at their addresses, and its symbols by name. The API is one
function::

    write_elf(path_or_file, sections, symbols, entry)

- ``sections``: a list of ``(name, address, data, flags)``. ``data`` is the
  section's bytes, or an ``int``: the size of a section that holds only zeros
  and takes no room in the file (``.bss``, ``SHT_NOBITS``). ``flags`` are
  GNU as letters, ``"a"`` allocated (loaded), ``"w"`` writable, ``"x"``
  executable (``"ax"`` for ``.text``, ``"aw"`` for ``.data``), or an ``int`` of
  ``SHF_*`` bits. Each allocated section gets one ``PT_LOAD`` segment
  (``p_vaddr = p_paddr = address``); a section without ``"a"`` is in the file
  (a section header) but not loaded.
- ``symbols``: name -> value. A value inside an allocated section (or at its
  end) is a symbol of that section, ``STT_FUNC`` in an executable section and
  ``STT_OBJECT`` otherwise; any other value is an absolute ``STT_NOTYPE``
  symbol (``SHN_ABS``), as GNU as makes ``NAME = 8``. All are ``STB_GLOBAL``
  with size 0, sorted by value, then name.
- ``entry``: ``e_entry``.

The file is an ``ET_EXEC`` for ``EM_386``, little-endian, ELF version 1, with
no relocations and no dynamic section (the addresses are final). Layout:
ELF header, program headers, the section contents (each at a file offset
congruent to its address modulo 4096, so the segments could be mapped),
``.symtab``, ``.strtab``, ``.shstrtab``, and the section headers. The format is
the System V ABI's (gABI "Object Files") with the i386 supplement's values.

A path is written atomically (``vmi.files.write_atomically``); a file
object (opened for binary writing) gets the bytes with one ``write``.
``elf_bytes`` returns them instead.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import BinaryIO

from vmi.files import write_atomically

#: ``e_machine`` of Intel 80386, ``e_type`` of an executable file.
EM_386 = 3
ET_EXEC = 2
PT_LOAD = 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
PF_X, PF_W, PF_R = 1, 2, 4
SHN_ABS = 0xFFF1
STB_GLOBAL = 1
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
PAGE = 4096

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")  # 52 bytes
_PHDR = struct.Struct("<IIIIIIII")  # 32 bytes
_SHDR = struct.Struct("<IIIIIIIIII")  # 40 bytes
_SYM = struct.Struct("<IIIBBH")  # 16 bytes

SectionSpec = tuple[str, int, "bytes | int", "str | int"]


def _flags(flags: str | int) -> int:
    if isinstance(flags, int):
        return flags
    unknown = set(flags) - set("awx")
    if unknown:
        raise ValueError(f"unknown section flag(s) {''.join(sorted(unknown))!r} "
                         f"(use a, w, x or an int of SHF_* bits)")
    return ((SHF_ALLOC if "a" in flags else 0) | (SHF_WRITE if "w" in flags else 0)
            | (SHF_EXECINSTR if "x" in flags else 0))


class _Strings:
    """A string table: offset 0 is the empty string, each name is stored once."""

    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.offsets: dict[str, int] = {"": 0}

    def add(self, name: str) -> int:
        if name not in self.offsets:
            self.offsets[name] = len(self.data)
            self.data += name.encode("utf-8") + b"\0"
        return self.offsets[name]


def elf_bytes(sections: Sequence[SectionSpec], symbols: dict[str, int], entry: int) -> bytes:
    """The ELF file ``write_elf`` writes, as bytes (see the module docstring)."""
    specs = []
    for name, address, data, flags in sections:
        if not 0 <= address <= 0xFFFFFFFF:
            raise ValueError(f"section {name!r}: address {address:#x} is not 32-bit")
        size = data if isinstance(data, int) else len(data)
        if size < 0 or address + size > 1 << 32:
            raise ValueError(f"section {name!r} of {size} bytes does not fit at {address:#x}")
        specs.append((name, address, data, _flags(flags), size))
    loaded = [s for s in specs if s[3] & SHF_ALLOC]
    phoff = _EHDR.size
    offset = phoff + _PHDR.size * len(loaded)
    out = bytearray(offset)
    shstr = _Strings()
    headers = [bytes(_SHDR.size)]  # index 0: SHN_UNDEF
    phdrs = []
    index_of: list[tuple[int, int, int, int]] = []  # (address, size, shndx, flags)
    for name, address, data, flags, size in specs:
        nobits = isinstance(data, int)
        offset = len(out)
        if flags & SHF_ALLOC:
            offset += (address - offset) % PAGE  # offset = address (mod PAGE)
        if not nobits:
            out += bytes(offset - len(out))
            out += data  # type: ignore[arg-type]
        sh_type = SHT_NOBITS if nobits else SHT_PROGBITS
        headers.append(_SHDR.pack(shstr.add(name), sh_type, flags, address, offset, size,
                                  0, 0, 1, 0))
        if flags & SHF_ALLOC:
            pflags = PF_R | (PF_W if flags & SHF_WRITE else 0) | (
                PF_X if flags & SHF_EXECINSTR else 0)
            phdrs.append(_PHDR.pack(PT_LOAD, offset, address, address, 0 if nobits else size,
                                    size, pflags, PAGE))
            index_of.append((address, size, len(headers) - 1, flags))
    strtab = _Strings()
    symtab = bytearray(_SYM.size)  # index 0: the null symbol
    for name, value in sorted(symbols.items(), key=lambda item: (item[1], item[0])):
        value &= 0xFFFFFFFF
        shndx, kind = SHN_ABS, STT_NOTYPE
        home = [s for s in index_of if s[0] <= value < s[0] + s[1]] or [
            s for s in index_of if value == s[0] + s[1]]
        if home:
            shndx = home[0][2]
            kind = STT_FUNC if home[0][3] & SHF_EXECINSTR else STT_OBJECT
        symtab += _SYM.pack(strtab.add(name), value, 0, STB_GLOBAL << 4 | kind, 0, shndx)
    symtab_index = len(headers)
    out += bytes(-len(out) % 4)
    headers.append(_SHDR.pack(shstr.add(".symtab"), SHT_SYMTAB, 0, 0, len(out), len(symtab),
                              symtab_index + 1, 1, 4, _SYM.size))
    out += symtab
    headers.append(_SHDR.pack(shstr.add(".strtab"), SHT_STRTAB, 0, 0, len(out),
                              len(strtab.data), 0, 0, 1, 0))
    out += strtab.data
    shstrndx = len(headers)
    name_offset = shstr.add(".shstrtab")
    headers.append(_SHDR.pack(name_offset, SHT_STRTAB, 0, 0, len(out), len(shstr.data),
                              0, 0, 1, 0))
    out += shstr.data
    out += bytes(-len(out) % 4)
    shoff = len(out)
    for header in headers:
        out += header
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)  # ELFCLASS32, LSB, version 1, SysV
    out[0:_EHDR.size] = _EHDR.pack(ident, ET_EXEC, EM_386, 1, entry & 0xFFFFFFFF, phoff,
                                   shoff, 0, _EHDR.size, _PHDR.size, len(phdrs),
                                   _SHDR.size, len(headers), shstrndx)
    out[phoff:phoff + _PHDR.size * len(phdrs)] = b"".join(phdrs)
    return bytes(out)


def write_elf(path_or_file: str | os.PathLike[str] | BinaryIO,
              sections: Sequence[SectionSpec], symbols: dict[str, int], entry: int) -> None:
    """Write an ELF32 i386 executable image of ``sections`` with ``symbols``.

    ``sections`` is a list of ``(name, address, bytes or nobits size, flags)``,
    ``symbols`` maps names to values, ``entry`` is the entry address; see the
    module docstring for the details. Raises ``ValueError`` for a section that
    does not fit in 32-bit addresses or unknown flags, ``OSError`` when the
    file cannot be written (a path is then left as it was).
    """
    data = elf_bytes(sections, symbols, entry)
    if hasattr(path_or_file, "write"):
        path_or_file.write(data)  # type: ignore[union-attr]
    else:
        write_atomically(path_or_file, lambda out: out.write(data))  # type: ignore[arg-type]


def program_sections(program: object) -> list[SectionSpec]:
    """The ``sections`` argument of ``write_elf`` for a ``vmi.asm.Program``: loaded
    sections from its image, ``.bss``-like ones as sizes, unloaded ones (such as
    ``.vmi.annotation``) from ``program.unloaded`` without the ``a`` flag."""
    out: list[SectionSpec] = []
    for section in program.sections:  # type: ignore[attr-defined]
        flags = ("ax" if section.code else "aw") if section.loaded else ""
        if section.nobits:
            data: bytes | int = section.size
        elif section.loaded:
            start = section.address - program.base  # type: ignore[attr-defined]
            data = program.image[start:start + section.size]  # type: ignore[attr-defined]
        else:
            data = program.unloaded.get(section.name, b"")  # type: ignore[attr-defined]
        out.append((section.name, section.address, data, flags))
    return out


class ElfError(Exception):
    """A file that is not a readable ELF32 little-endian image (message: where, why)."""


def read_symbols(path: str | os.PathLike[str]) -> dict[str, int]:
    """The named symbols (functions, objects, labels; not sections or files) of an
    ELF32 little-endian file such as a kernel built by gcc: name -> value. Raises
    ``ElfError`` naming the file when it cannot be read or is not such an ELF."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ElfError(f"{name}: {error.strerror}") from None
    if data[:4] != b"\x7fELF":
        raise ElfError(f"{name}: not an ELF file")
    if data[4] != 1 or data[5] != 1:
        raise ElfError(f"{name}: not a 32-bit little-endian ELF file")
    try:
        return _symbols_of(data)
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise ElfError(f"{name}: damaged ELF file ({error})") from None


def _symbols_of(data: bytes) -> dict[str, int]:
    """Walk the section headers to each ``SHT_SYMTAB`` and its string table."""
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    headers = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]
    table: dict[str, int] = {}
    for header in headers:
        if header[1] != 2:  # SHT_SYMTAB
            continue
        offset, size, link, entsize = header[4], header[5], header[6], header[9] or 16
        strings = headers[link][4]
        for at in range(offset, offset + size, entsize):
            st_name, value, _size, info = struct.unpack_from("<IIIB", data, at)
            if not st_name or (info & 0xF) in (3, 4):  # STT_SECTION, STT_FILE
                continue
            end = data.index(b"\0", strings + st_name)
            table.setdefault(data[strings + st_name:end].decode(), value)
    return table
