"""The real gdb, in batch mode, against the stub: what it prints must be the machine's."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.debugger.programs import open_engine
from tests.debugger.rsp import Served
from vmi.debugger.gdbstub import GDB_REGISTERS

GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")
MARK = "=====MARK====="


def run_gdb(port: int, commands: list[str]) -> list[str]:
    """Run gdb with ``commands``; returns its output cut at the marks between them."""
    args = [GDB or "gdb", "-nx", "-batch", "-ex", "set architecture i386",
            "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        args += ["-ex", f"echo {MARK}\\n", "-ex", command]
    # monitor output (O packets) goes to gdb's stderr: read both, in order
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=60)
    assert "Remote 'g' packet reply" not in result.stdout
    assert "Architecture rejected target-supplied description" not in result.stdout, \
        result.stdout
    return result.stdout.split(MARK + "\n")[1:]


def registers(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"^(\w+)\s+(0x[0-9a-f]+)\s", text, re.M)}


def machine_registers(engine) -> dict[str, int]:
    cpu = engine.machine.cpus[engine.selected]
    return {name: getattr(cpu.regs, name) for name in GDB_REGISTERS}


def test_gdb_session_matches_the_machine():
    # the same program on a second engine, driven directly: the values gdb must print
    model = open_engine()
    expected_start = machine_registers(model)
    model.stepi()
    expected_stepped = machine_registers(model)
    esp = model.machine.cpus[0].regs.esp
    expected_stack = [model.machine.memory.read32(esp + 4 * i) for i in range(4)]
    bump = model.symbols["bump"]
    model.add_breakpoint(bump)
    model.cont()
    expected_at_bump = machine_registers(model)
    model.delete_points()
    model.stepi()
    expected_after = machine_registers(model)
    model.reverse_stepi()
    assert machine_registers(model) == expected_at_bump

    engine = open_engine()
    serving = Served(engine, once=True)
    try:
        out = run_gdb(serving.port, [
            "info registers", "stepi", "info registers", "x/4wx $esp", f"break *{bump:#x}",
            "continue", "info registers", "delete", "stepi", "info registers",
            "reverse-stepi", "info registers", "reverse-continue", "info registers eip",
            "monitor info registers eip", "info threads", "detach",
        ])
    finally:
        serving.close()
    assert registers(out[0]) == expected_start
    assert registers(out[2]) == expected_stepped
    stack = re.search(r"^0x[0-9a-f]+:\s+(.*)$", out[3], re.M)
    assert stack is not None
    assert [int(word, 16) for word in stack.group(1).split()] == expected_stack
    assert f"Breakpoint 1 at {bump:#x}" in out[4]
    assert f"Breakpoint 1, {bump:#010x} in ?? ()" in out[5]
    assert registers(out[6]) == expected_at_bump
    assert registers(out[9]) == expected_after
    assert registers(out[11]) == expected_at_bump  # reverse-stepi: exactly the earlier state
    assert "No more reverse-execution history." in out[12]
    assert registers(out[13])["eip"] == 0x1000
    assert re.search(r"^eip\s+0x1000\s+0x1000 <_start>$", out[14], re.M)
    assert "Thread 1 (cpu0 eip=00001000 cpl=0 IF=0)" in out[15]
    assert engine.machine.steps == 0


def test_gdb_watchpoint_and_memory_writes():
    engine = open_engine()
    counter = engine.symbols["counter"]
    serving = Served(engine, once=True)
    try:
        out = run_gdb(serving.port, [
            f"watch *(int*){counter:#x}", "continue", f"set {{int}}{counter:#x} = 41",
            f"x/wx {counter:#x}", "set $ebx = 0x5a5a", "p/x $ebx", "detach"])
    finally:
        serving.close()
    assert "Old value = 0\nNew value = 1" in out[1]
    assert f"{counter:#x}:\t0x00000029" in out[3]
    assert "$1 = 0x5a5a" in out[5]
    assert engine.machine.memory.read32(counter) == 41
    assert engine.machine.cpus[0].regs.ebx == 0x5A5A
