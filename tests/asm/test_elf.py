"""ELF32 output (vmi.asm.elf): what binutils and gdb read from the file we write."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmi.asm import assemble
from vmi.asm.elf import elf_bytes, program_sections, write_elf
from vmi.cli import main

SOURCE = """\
	.text
_start:	movl $msg, %eax
	CLI
loop:	jmp loop
	.data
msg:	.long 0x11223344
table:	.byte 1, 2, 3
	.bss
buffer:	.space 64
	K_FLAGS = 8
"""
BASE = 0x08048000

needs = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("readelf", "objdump", "nm", "objcopy")),
    reason="binutils (readelf, objdump, nm, objcopy) not installed")


def tool(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def program():
    return assemble(SOURCE, macros="vmi", base=BASE)


@pytest.fixture()
def elf(tmp_path: Path, program) -> Path:
    path = tmp_path / "prog.elf"
    write_elf(path, program_sections(program), program.symbols, program.symbols["_start"])
    return path


@needs
def test_header_is_an_i386_executable_with_the_entry(elf: Path, program) -> None:
    header = tool("readelf", "-h", str(elf))
    assert re.search(r"Class:\s+ELF32", header)
    assert re.search(r"Type:\s+EXEC", header)
    assert re.search(r"Machine:\s+Intel 80386", header)
    assert re.search(rf"Entry point address:\s+{program.symbols['_start']:#x}", header)


@needs
def test_one_load_segment_per_allocated_section(elf: Path, program) -> None:
    segments = tool("readelf", "-l", "-W", str(elf))
    loads = re.findall(r"^\s+LOAD\s+(0x\w+) (0x\w+) (0x\w+) (0x\w+) (0x\w+) (.{3})", segments,
                       re.M)
    loaded = [s for s in program.sections if s.loaded]
    assert len(loads) == len(loaded) == 3
    for (offset, vaddr, paddr, filesz, memsz, flags), section in zip(loads, loaded, strict=True):
        assert int(vaddr, 16) == int(paddr, 16) == section.address
        assert int(memsz, 16) == section.size
        assert int(filesz, 16) == (0 if section.nobits else section.size)
        assert int(offset, 16) % 4096 == section.address % 4096
        assert flags == ("R E" if section.code else "RW ")


@needs
def test_section_headers_and_contents(elf: Path, program, tmp_path: Path) -> None:
    table = tool("readelf", "-S", "-W", str(elf))
    rows = {m[0]: m[1:] for m in re.findall(
        r"\]\s+(\S+)\s+(\S+)\s+([0-9a-f]{8}) [0-9a-f]{6} ([0-9a-f]{6}) [0-9a-f]{2}\s+(\S*)",
        table)}
    for section in program.sections:
        kind, address, size, flags = rows[section.name]
        assert int(address, 16) == section.address and int(size, 16) == section.size
        assert kind == ("NOBITS" if section.nobits else "PROGBITS")
        assert ("A" in flags) == section.loaded and ("X" in flags) == section.code
        if not section.nobits:
            out = tmp_path / f"{section.name.strip('.')}.bin"
            tool("objcopy", "-O", "binary", "--set-section-flags",
                 f"{section.name}=alloc,load,contents", "-j", section.name, str(elf), str(out))
            assert out.read_bytes() == program.section_bytes(section.name), section.name
    assert {".symtab", ".strtab", ".shstrtab"} <= set(rows)
    assert program.annotations  # the vmi macro set made .vmi.annotation (not loaded)
    assert "A" not in rows[".vmi.annotation"][3]


@needs
def test_symbols_in_nm_objdump_and_readelf(elf: Path, program) -> None:
    nm = {name: (int(value, 16), kind) for value, kind, name in
          (line.split() for line in tool("nm", str(elf)).splitlines())}
    assert nm["_start"] == (program.symbols["_start"], "T")
    assert nm["loop"] == (program.symbols["loop"], "T")
    assert nm["msg"] == (program.symbols["msg"], "D")
    assert nm["table"] == (program.symbols["table"], "D")
    assert nm["buffer"] == (program.symbols["buffer"], "B")
    assert nm["K_FLAGS"] == (8, "A")
    assert set(nm) == set(program.symbols)
    objdump = tool("objdump", "-t", str(elf))
    assert re.search(rf"^{program.symbols['loop']:08x} g\s+F \.text\s+00000000 loop$", objdump,
                     re.M)
    symbols = tool("readelf", "-s", "-W", str(elf))
    assert re.search(r"\d+: [0-9a-f]{8}\s+0 OBJECT\s+GLOBAL DEFAULT\s+\d+ msg$", symbols, re.M)


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_gdb_resolves_symbols(elf: Path, program) -> None:
    out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "info address msg",
                          "-ex", f"info symbol {program.symbols['loop'] + 1:#x}",
                          "-ex", "break loop", str(elf)],
                         capture_output=True, text=True, timeout=120).stdout
    assert f'Symbol "msg" is at {program.symbols["msg"]:#x}' in out
    assert f"Breakpoint 1 at {program.symbols['loop']:#x}" in out
    assert "loop + 1 in section .text" in out


def test_file_object_and_path_get_the_same_bytes(elf: Path, program) -> None:
    buffer = io.BytesIO()
    write_elf(buffer, program_sections(program), program.symbols, program.symbols["_start"])
    assert buffer.getvalue() == elf.read_bytes()
    assert buffer.getvalue()[:4] == b"\x7fELF"


def test_bad_sections_are_refused() -> None:
    with pytest.raises(ValueError, match="flag"):
        elf_bytes([(".text", 0, b"\x90", "aq")], {}, 0)
    with pytest.raises(ValueError, match="does not fit"):
        elf_bytes([(".text", 0xFFFFFFFF, b"\x90\x90", "ax")], {}, 0)


@needs
def test_vmi_asm_writes_elf_for_an_elf_suffix(tmp_path: Path) -> None:
    source = tmp_path / "prog.S"
    source.write_text(SOURCE)
    result = CliRunner().invoke(main, ["asm", str(source), "-o", str(tmp_path / "prog.elf"),
                                       "--base", hex(BASE)])
    assert result.exit_code == 0, result.output
    assert "ELF32 executable" in result.output
    assert "_start" in tool("nm", str(tmp_path / "prog.elf"))
    assert f"{BASE:#x}" in tool("readelf", "-h", str(tmp_path / "prog.elf"))
