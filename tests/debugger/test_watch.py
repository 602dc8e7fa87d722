"""Read and access watchpoints (``rwatch``, ``awatch``; gdb's Z3/Z4), issue 17."""

from __future__ import annotations

from tests.debugger.programs import open_engine
from tests.debugger.rsp import Served

#: Reads ``source``, writes ``sink``, and never touches ``idle``.
READER = """
        .globl _start
_start:
        movl $stack_top, %esp
again:
        movl source, %eax
        incl %ebx
        movl %ebx, sink
        pushl %eax
        popl %edx
        jmp again
        .data
source: .long 0x1234
sink:   .long 0
idle:   .long 7
        .fill 16, 4, 0
stack_top:
"""


def test_rwatch_stops_after_a_read_and_not_after_a_write():
    engine = open_engine(READER)
    out = engine.execute("rwatch source")
    assert out.startswith("Hardware read watchpoint 1: ")
    out = engine.execute("continue")
    assert out.startswith("Hardware read watchpoint 1: ")
    assert "read by cpu0\n\nValue = 0x1234" in out
    cpu = engine.machine.cpus[0]
    assert cpu.regs.eax == 0x1234  # the step that read it has been taken
    engine.execute("delete")
    engine.execute("rwatch sink")  # only ever written
    out = engine.execute("continue 60")
    assert out.startswith("Stopped after 60 steps")


def test_awatch_sees_writes_and_reads():
    engine = open_engine(READER)
    engine.execute("awatch sink")
    out = engine.execute("continue")
    assert "written by cpu0\n\nOld value = 0x0\nNew value = 0x1" in out
    engine.execute("delete")
    engine.execute("awatch source")
    out = engine.execute("continue")
    assert "read by cpu0\n\nValue = 0x1234" in out
    assert "awatchpoint" in engine.execute("info breakpoints")


def test_a_read_on_the_stack_is_seen_through_pop():
    engine = open_engine(READER)
    engine.execute("stepi 4")  # at pushl %eax
    esp = engine.machine.cpus[0].regs.esp
    engine.execute(f"rwatch {esp - 4:#x}")
    out = engine.execute("continue")
    assert out.startswith("Hardware read watchpoint 1")
    assert engine.machine.cpus[0].regs.edx == 0x1234  # popl read it


def test_idle_memory_never_fires_and_unwatching_restores_the_accessors():
    engine = open_engine(READER)
    cpu = engine.machine.cpus[0]
    plain = cpu.rd32
    engine.execute("awatch idle")
    assert cpu.rd32 is not plain
    assert engine.execute("continue 200").startswith("Stopped after 200 steps")
    engine.execute("disable")
    assert cpu.rd32 is plain and type(cpu.accessor_cache) is dict
    engine.execute("enable")
    assert cpu.rd32 is not plain
    engine.execute("delete")
    assert cpu.rd32 is plain


def test_reverse_continue_goes_back_to_the_last_read():
    engine = open_engine(READER)
    engine.execute("continue 40")
    engine.execute("rwatch source")
    engine.execute("reverse-continue")
    cpu = engine.machine.cpus[0]
    # just after the latest `movl source, %eax` before step 40
    assert cpu.eip == engine.symbols["again"] + 5
    assert engine.machine.steps < 40


def test_gdb_read_and_access_watchpoints():
    engine = open_engine(READER)
    serving = Served(engine)
    client = serving.client()
    try:
        source = engine.symbols["source"]
        sink = engine.symbols["sink"]
        assert client.ask(f"Z3,{source:x},4") == "OK"
        assert client.ask("c") == f"T05rwatch:{source:x};thread:01;"
        assert client.ask(f"z3,{source:x},4") == "OK"
        assert client.ask(f"Z4,{sink:x},4") == "OK"
        assert client.ask("c") == f"T05awatch:{sink:x};thread:01;"
        assert client.ask(f"z4,{sink:x},4") == "OK"
        assert engine.points == {}
    finally:
        client.close()
        serving.close()
