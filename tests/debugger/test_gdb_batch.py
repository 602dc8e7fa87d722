"""The real gdb, in batch mode, against the stub: what it prints must be the machine's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

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


def start_gdbserver(*args: str) -> tuple[subprocess.Popen, int]:
    """``python -m vmi gdbserver ARGS --port 0 --once`` in the background; returns the
    process and the port it printed."""
    server = subprocess.Popen([sys.executable, "-m", "vmi", "gdbserver", *args, "--port", "0",
                               "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None
    for line in server.stdout:
        match = re.match(r"listening on 127\.0\.0\.1:(\d+) ", line)
        if match:
            return server, int(match.group(1))
    server.wait(timeout=10)
    problem = server.stderr.read() if server.stderr else ""
    raise AssertionError(f"gdbserver did not start: {problem}")


def test_gdb_against_gdbserver_on_the_kernel_under_the_monitor():
    from vmi.debugger.loader import open_engine as open_kernel

    # the values gdb must print: the same configuration driven directly
    model, _banner = open_kernel(mode="vmi", policy="defer")
    target = model.symbols["restore_nocheck"]
    expected_start = machine_registers(model)
    model.stepi()
    expected_stepped = machine_registers(model)
    model.add_breakpoint(target)
    model.cont()
    expected_at_break = machine_registers(model)
    esp = expected_at_break["esp"]
    expected_stack = [int.from_bytes(model.read_memory(esp + 4 * i, 4), "little")
                      for i in range(4)]
    model.delete_points()
    model.stepi()
    expected_after = machine_registers(model)
    model.reverse_stepi()
    assert machine_registers(model) == expected_at_break
    assert expected_at_break["eip"] == target and expected_after["eip"] == target + 1

    server, port = start_gdbserver("--mode", "vmi", "--policy", "defer")
    try:
        out = run_gdb(port, [
            "info registers", "stepi", "info registers", f"break *{target:#x}", "continue",
            "info registers", "x/4wx $esp", "delete", "stepi", "info registers",
            "reverse-stepi", "info registers", "monitor info vcpu", "info threads", "detach",
        ])
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert registers(out[0]) == expected_start
    assert registers(out[2]) == expected_stepped
    assert f"Breakpoint 1 at {target:#x}" in out[3]
    assert f"Breakpoint 1, {target:#010x} in ?? ()" in out[4]
    assert registers(out[5]) == expected_at_break
    assert registers(out[5])["cs"] == 0x61  # the kernel's CS at ring 1 under the monitor
    stack = re.search(r"^0x[0-9a-f]+:\s+(.*)$", out[6], re.M)
    assert stack is not None
    assert [int(word, 16) for word in stack.group(1).split()] == expected_stack
    assert registers(out[9]) == expected_after
    assert registers(out[11]) == expected_at_break  # reverse-stepi: exactly the earlier state
    assert re.search(r"^\* cpu0  eip=0xc01[0-9a-f]{5} <restore_nocheck>  cpl=1 IF=1 .* "
                     r"VIF=0 vpending=\[\]$", out[12], re.M)
    assert "monitor: mode vmi, policy defer" in out[12]
    assert "Thread 1 (cpu0 eip=" in out[13] and "VIF=0 vpending=[]" in out[13]
