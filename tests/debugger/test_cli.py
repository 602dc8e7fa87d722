"""``python -m vmi debug``: driven through stdin as a script would drive it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from tests.debugger.programs import PROGRAM, TRIPLE, open_engine, write_program
from vmi.debugger.repl import DebuggerShell


def debug(args, commands, *, timeout=60):
    """Run ``vmi debug ARGS`` with ``commands`` on stdin; (status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "vmi", "debug", *args],
                            input="".join(line + "\n" for line in commands),
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def register_block(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"^(\w+)\s+(0x[0-9a-f]+)\s", text, re.M)}


def test_a_scripted_session(tmp_path):
    program = write_program(tmp_path)
    status, out, err = debug(["--program", str(program)], [
        "break bump", "continue", "stepi", "x/4wx $esp", "info registers", "echo-marker",
        "reverse-stepi", "info registers", "quit",
    ])
    assert status == 0, err
    assert err == ""
    assert out.startswith("vmi debugger: ")
    assert "cpu0 0x00001000 _start: bc 78 13 00 00  mov    $0x1378,%esp" in out
    assert "Breakpoint 1 at 0x1030 <bump>" in out
    assert "Breakpoint 1, cpu0 at 0x1030 <bump>" in out
    # the return address of the call at loop, then the empty stack above it
    assert re.search(r"^0x1374 <ticks\+256>:\t0x0000101e\t0x00000000", out, re.M)
    assert 'Undefined command: "echo-marker".  Try "help".' in out
    blocks = re.findall(r"(^eax .*?^cr4 .*?$)", out, re.M | re.S)
    assert len(blocks) == 2  # after stepi, and after reverse-stepi
    stepped, back = register_block(blocks[0]), register_block(blocks[1])
    assert stepped["eip"] == 0x1036  # past `incl counter`
    assert back["eip"] == 0x1030
    same = set(stepped) - {"eip", "eflags"}
    assert {k: back[k] for k in same} == {k: stepped[k] for k in same}


def test_reverse_stepi_restores_the_exact_registers_printed_before(tmp_path):
    program = write_program(tmp_path)
    status, out, _err = debug(["--program", str(program)], [
        "until loop", "si 3", "info registers", "si", "si", "rsi 2", "info registers"])
    assert status == 0
    blocks = re.findall(r"(^eax .*?^cr4 .*?$)", out, re.M | re.S)
    assert len(blocks) == 2 and blocks[0] == blocks[1]


def test_inject_through_the_idt_and_the_stack_view(tmp_path):
    program = write_program(tmp_path)
    status, out, _err = debug(["--program", str(program)], [
        "inject 0x30", "catch interrupt 0x30", "continue", "stack 3", "x/3wx $esp", "quit"])
    assert status == 0
    assert "Catchpoint 1 (interrupt 0x30 delivered on cpu0)" in out
    assert "step 6: cpu0 took interrupt 0x30" in out
    assert "cpu0 0x00001037 handler: 50  push   %eax" in out
    assert "interrupt frame" in out
    assert re.search(r"EIP\s+0x00001030\s+<bump>", out)


def test_schedule_file_and_interleaving(tmp_path):
    program = write_program(tmp_path)
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps([[30, 1, 0x30]]))
    status, out, err = debug(["--program", str(program), "--cpus", "2", "--schedule",
                              str(schedule), "--interleaving", "0,1"], [
        "catch interrupt", "c", "info vcpu"])
    assert status == 0, err
    assert "(interrupt 0x30 delivered on cpu1)" in out
    assert re.search(r"^\* cpu1  eip=0x00001037 <handler>", out, re.M)


def test_replay_opens_one_step_before_the_stop(tmp_path):
    program = write_program(tmp_path)
    replay = tmp_path / "counterexample.json"
    replay.write_text(json.dumps({"schedule": [[25, 0, 0x30]], "stop_step": 12,
                                  "description": "ticks changed inside the window"}))
    status, out, err = debug(["--program", str(program), "--replay", str(replay)], [
        "when", "si", "x/wx ticks", "rsi 12", "rsi", "quit"])
    assert status == 0, err
    assert "opened at step 11, one step before the recorded stop at step 12" in out
    assert "ticks changed inside the window" in out
    assert "step 11  (history: steps 0..11" in out
    assert "No more reverse-execution history." in out


def test_errors_are_one_line_and_never_a_traceback(tmp_path):
    program = write_program(tmp_path)
    status, out, err = debug(["--program", str(program)], [
        "x/4wx $nosuch", "break", "break *", "stepi many", "info nothing", "watch 0x0 999",
        "inject 0x30 at -5", "cpu 7", "x/4zx 0", "set $zz = 1", "continue 0", "", "   ",
        "\x00\x01", "disassemble 0x7fffffff 3", "stack", "quit"])
    assert status == 0
    assert "Traceback" not in out + err
    assert "no register named $nosuch" in out
    assert "watch: length: 999 is out of range (1..64)" in out
    assert "cpu: 7 is out of range (0..0)" in out
    assert "continue: count: 0 is out of range (1..1000000000)" in out


def test_triple_fault_is_reported_not_raised(tmp_path):
    program = write_program(tmp_path, TRIPLE, "triple.S")
    status, out, err = debug(["--program", str(program)], ["continue", "info registers eip"])
    assert status == 0 and "Traceback" not in err
    assert "The machine cannot take its next step: cpu0: triple fault" in out
    assert re.search(r"^eip\s+0x100c\s", out, re.M)


def test_bad_options_give_one_line_errors(tmp_path):
    status, _out, err = debug(["--program", str(tmp_path / "missing.S")], [])
    assert status == 1 and err.startswith("Error: ") and "No such file" in err
    bad = write_program(tmp_path, "movl $1, %eax\nfrob %zz\n", "bad.S")
    status, _out, err = debug(["--program", str(bad)], [])
    assert status == 1 and "bad.S:2:1: error:" in err and "Traceback" not in err
    program = write_program(tmp_path)
    schedule = tmp_path / "bad.json"
    schedule.write_text("[[1, 2]]")
    status, _out, err = debug(["--program", str(program), "--schedule", str(schedule)], [])
    assert status == 1 and "not [cycle, cpu, vector]" in err
    schedule.write_text("{not json")
    status, _out, err = debug(["--program", str(program), "--replay", str(schedule)], [])
    assert status == 1 and "not a JSON replay file" in err
    schedule.write_text('{"schedule": []}')
    status, _out, err = debug(["--program", str(program), "--replay", str(schedule)], [])
    assert status == 1 and "no 'stop_step'" in err
    status, _out, err = debug(["--program", str(program), "--base", "zz"], [])
    assert status == 2 and "--base" in err  # bad usage


def test_the_shell_over_stringio():
    engine = open_engine(PROGRAM)
    out = io.StringIO()
    shell = DebuggerShell(engine, stdin=io.StringIO("si\n\nnonsense\nquit\nsi\n"), stdout=out,
                          interactive=False)
    shell.run("banner")
    text = out.getvalue()
    assert text.startswith("banner\ncpu0 0x00001000 _start")
    assert text.count("step=1") == 1  # the blank line did not repeat `si`; quit ended it
    assert 'Undefined command: "nonsense"' in text
    assert shell.prompt == ""


def test_the_shell_repeats_at_a_terminal_and_completes():
    engine = open_engine(PROGRAM)
    out = io.StringIO()
    shell = DebuggerShell(engine, stdin=io.StringIO("si\n\n"), stdout=out, interactive=False)
    shell.interactive = True  # Enter repeats, as at a terminal
    shell.use_rawinput = False
    shell.run()
    assert engine.machine.steps == 2  # completion: tests/debugger/test_complete.py
