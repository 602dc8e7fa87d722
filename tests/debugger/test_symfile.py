"""``vmi gdbserver --symbols FILE.elf``: stock gdb reads the machine's symbols
from the file and breaks on them by name (issue 17)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import vmi.asm.elf  # noqa: F401 (the writer this feature is built on)
from tests.debugger.programs import open_engine, write_program
from tests.debugger.rsp import Served
from vmi.debugger.symfile import symbol_sections, write_symbols


def test_program_symbol_file_lets_gdb_break_by_name(tmp_path):
    gdb = shutil.which("gdb")
    if gdb is None:
        pytest.skip("gdb is not installed")
    engine = open_engine()
    engine.program = _assembled()
    elf = tmp_path / "prog.elf"
    sections, names = write_symbols(engine, elf)
    assert sections >= 2 and names == len(engine.symbols)
    serving = Served(engine)
    try:
        result = subprocess.run(
            [gdb, "-nx", "-batch", "-ex", f"file {elf}",
             "-ex", f"target remote 127.0.0.1:{serving.port}",
             "-ex", "break bump", "-ex", "continue", "-ex", "x/2i $pc"],
            capture_output=True, text=True, timeout=60)
    finally:
        serving.close()
    out = result.stdout
    assert "Breakpoint 1 at 0x1030" in out
    assert "Breakpoint 1, 0x00001030 in bump ()" in out
    assert "=> 0x1030 <bump>:\tincl   0x1270" in out
    assert engine.machine.cpus[0].eip == 0x1030


def _assembled():
    from tests.debugger.programs import BASE, PROGRAM
    from vmi.asm import assemble

    return assemble(PROGRAM, base=BASE)


def test_kernel_symbol_file_holds_every_program_and_symbol(tmp_path):
    from vmi.debugger.loader import open_engine as open_kernel

    engine, _banner = open_kernel(mode="vmi")
    elf = tmp_path / "kernel.elf"
    write_symbols(engine, elf)
    names = [name for name, *_rest in symbol_sections(engine)]
    assert {".text", "vsyscall.text", "bootrom.text", "syscalls.text", "vmi_rom"} <= set(names)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    listed = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout
    table = {line.split()[2]: (int(line.split()[0], 16), line.split()[1])
             for line in listed.splitlines() if len(line.split()) == 3}
    for name in ("restore_nocheck", "vmi_iret_store", "syscalls._start"):
        assert table[name] == (engine.symbols[name], "T")
    # the code in the file is the code in memory (the kernel at physical = linear -
    # PAGE_OFFSET 0xc0000000; the CPU is still at its reset vector, paging off)
    objdump = shutil.which("objdump")
    if objdump is not None:
        start = engine.symbols["restore_nocheck"]
        dump = subprocess.run([objdump, "-s", "--start-address", hex(start),
                               "--stop-address", hex(start + 4), str(elf)],
                              capture_output=True, text=True, check=True).stdout
        line = next(row for row in dump.splitlines() if row.strip().startswith(f"{start:x}"))
        physical = start - 0xC0000000
        assert bytes.fromhex(line.split()[1]) == engine.machine.memory.read_bytes(physical, 4)


def test_the_gdbserver_command_writes_the_file_or_says_why_not(tmp_path):
    program = write_program(tmp_path)
    result = subprocess.run([sys.executable, "-m", "vmi", "gdbserver", "--program",
                             str(program), "--symbols", str(tmp_path / "no" / "such.elf"),
                             "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"--symbols {tmp_path / 'no' / 'such.elf'}: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
