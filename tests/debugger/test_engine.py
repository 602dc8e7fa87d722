"""The command engine: execution, breakpoints, views, reverse execution, hooks."""

from __future__ import annotations

import re

import pytest

from tests.debugger.programs import PROGRAM, TRIPLE, machine_state, open_engine
from vmi.debugger.engine import CommandError, lookup


def registers(engine, cpu=0):
    return engine.machine.cpus[cpu].regs.as_dict()


def test_stepi_retires_one_instruction_and_reports_the_place():
    engine = open_engine()
    out = engine.execute("stepi")
    assert engine.machine.steps == 1
    assert engine.machine.cpus[0].eip == engine.symbols["_start"] + 5
    first = out.splitlines()[0]
    assert first.startswith("cpu0 0x00001005 _start+5: 0f 01 15")
    assert "lgdtl" in first
    assert "cpl=0 IF=0 shadow=0 mode=protected step=1" in out


def test_break_on_a_symbol_then_continue_stops_there():
    engine = open_engine()
    assert engine.execute("break bump") == "Breakpoint 1 at 0x1030 <bump>"
    out = engine.execute("continue")
    assert out.startswith("Breakpoint 1, cpu0 at 0x1030 <bump>")
    assert engine.machine.cpus[0].eip == engine.symbols["bump"]
    engine.execute("c")
    assert engine.machine.cpus[0].eip == engine.symbols["bump"]
    assert "already hit 2 times" in engine.execute("info breakpoints")


def test_break_star_address_tbreak_disable_delete():
    engine = open_engine()
    loop = engine.symbols["loop"]
    engine.execute(f"tbreak *{loop:#x}")
    engine.execute("b *loop+5")
    out = engine.execute("c")
    assert out.startswith("Temporary breakpoint 1")
    assert 1 not in engine.points
    engine.execute("disable 2")
    engine.execute("b done")
    engine.execute("c")
    assert engine.machine.cpus[0].eip == engine.symbols["done"]
    engine.execute("delete")
    assert engine.execute("info b") == "No breakpoints or watchpoints."
    assert engine.execute("delete 9") == "No breakpoint number 9."


def test_watchpoint_stops_after_the_write_with_old_and_new_value():
    engine = open_engine()
    engine.execute("watch counter")
    out = engine.execute("c")
    assert "Old value = 0x0\nNew value = 0x1" in out
    cpu = engine.machine.cpus[0]
    assert cpu.eip == engine.symbols["bump"] + 6  # after the incl
    assert engine.machine.memory.read32(engine.symbols["counter"]) == 1


def test_nexti_steps_over_a_call_and_until_runs_to_a_place():
    engine = open_engine()
    engine.execute("until loop")
    assert engine.machine.cpus[0].eip == engine.symbols["loop"]
    engine.execute("nexti")
    cpu = engine.machine.cpus[0]
    assert cpu.eip == engine.symbols["loop"] + 5
    assert engine.machine.memory.read32(engine.symbols["counter"]) == 1
    engine.execute("ni")  # not a call: one step
    assert cpu.eip == engine.symbols["loop"] + 6


def test_continue_without_breakpoints_ends_when_every_cpu_is_halted():
    engine = open_engine()
    out = engine.execute("c")
    assert "Every CPU is halted" in out
    assert engine.machine.cpus[0].regs.eax == 0xDEAD


def test_continue_honours_the_step_budget_and_a_count():
    engine = open_engine()
    engine.execute("set step-budget 7")
    assert "Stopped after 7 steps" in engine.execute("c")
    assert engine.machine.steps == 7
    engine.execute("c 3")
    assert engine.machine.steps == 10


def test_x_formats_and_sizes():
    engine = open_engine()
    engine.execute("until loop")
    engine.execute("si")  # into bump: the return address is on the stack
    esp = engine.machine.cpus[0].regs.esp
    out = engine.execute("x/4wx $esp")
    words = re.findall(r"0x[0-9a-f]{8}", out.split(":", 1)[1])
    memory = engine.machine.memory
    assert [int(w, 16) for w in words] == [memory.read32(esp + 4 * i) for i in range(4)]
    assert int(words[0], 16) == engine.symbols["loop"] + 5
    assert engine.execute("x/2xb counter").endswith("0x00\t0x00")
    assert engine.execute("x/1dw $esp").split("\t")[1] == str(engine.symbols["loop"] + 5)
    assert "<loop+5>" in engine.execute("x/a $esp")
    assert engine.execute("x/i $pc").startswith("=> 0x1030 <bump>:\tincl   0x1270")
    assert engine.execute("x/2c _start").endswith("-68 '\\274'\t120 'x'")
    assert engine.execute("x/q 0") == 'Undefined output format "q".'
    assert engine.execute("x/4wx nosuch") == 'No symbol "nosuch" in current context.'


def test_info_views():
    engine = open_engine()
    engine.execute("until loop")
    regs = engine.execute("info registers")
    assert re.search(r"^ecx\s+0x5\s+5$", regs, re.M)
    assert re.search(r"^eflags\s+0x202\s+\[ IF \]$", regs, re.M)
    loop = engine.symbols["loop"]
    assert re.search(rf"^eip\s+{loop:#x}\s+{loop:#x} <loop>$", regs, re.M)
    assert engine.execute("info registers nosuch") == "Invalid register `nosuch'"
    idt = engine.execute("info idt")
    assert "0x30  interrupt gate 0x0060:0x00001037" in idt and "<handler>" in idt
    gdt = engine.execute("info gdt")
    assert "0x0060: code base=0x0 limit=0xffffffff dpl=0 present" in gdt
    assert "cs    0x0060" in engine.execute("info segments")
    assert engine.execute("info tss").startswith("tr 0x0000")
    assert "model-specific" in engine.execute("info msr")
    assert engine.execute("info vcpu").startswith("* cpu0  eip=")
    assert engine.execute("i r eax").startswith("eax")
    assert engine.execute("info symbol loop+3") == "loop + 3"


def test_stack_names_a_pt_regs_frame_and_an_interrupt_frame():
    engine = open_engine()
    engine.execute("b saved")
    engine.execute("c")
    out = engine.execute("stack")
    assert "pt_regs frame" in out
    lines = out.splitlines()
    assert re.search(r"\+0x00\s+EBX", lines[1])
    assert re.search(r"\+0x18\s+EAX\s+0x00001234", lines[7])
    assert re.search(r"\+0x24\s+ORIG_EAX 0xffffffff", lines[10])
    assert re.search(r"\+0x28\s+EIP\s+0x00001028\s+<after_int>", lines[11])
    assert re.search(r"\+0x2c\s+CS\s+0x00000060", lines[12])
    assert re.search(r"\+0x38\s+OLDSS .*not pushed", lines[15])
    engine.execute("delete")
    engine.execute("goto 0")
    engine.execute("inject 0x30")
    engine.execute("catch interrupt 0x30")
    engine.execute("c")
    frame = engine.execute("stack 3")
    assert "interrupt frame" in frame and "EFLAGS   0x00000202  [ IF ]" in frame


def test_raw_words_when_no_frame_is_recognised():
    engine = open_engine()
    assert "raw words" in engine.execute("stack 2")


def test_inject_now_is_delivered_as_its_own_step_at_the_first_open_boundary():
    engine = open_engine()
    engine.execute("inject 0x30")
    engine.execute("catch interrupt")
    out = engine.execute("c")
    # IF becomes 1 after sti, and the STI shadow holds the interrupt off one more boundary
    # steps 0-4 run up to and through sti; step 5 (the call) is in the STI shadow
    assert "step 6: cpu0 took interrupt 0x30" in out
    assert engine.machine.cpus[0].eip == engine.symbols["handler"]
    assert engine.machine.steps == 7


def test_inject_at_a_future_step_and_refuses_the_past():
    engine = open_engine()
    engine.execute("until loop")
    assert "at step 20" in engine.execute("inject 0x30 at 20")
    engine.execute("catch interrupt 0x30")
    engine.execute("c")
    assert engine.machine.steps == 21  # raised on arrival at 20, delivered by step 20
    assert "in the past" in engine.execute("inject 0x30 at 3")
    assert "not 0..255" in engine.execute("inject 300")


def test_catch_exception_sees_int_n_and_catch_iret_stops_before_iret():
    engine = open_engine()
    engine.execute("catch exception 0x31")
    out = engine.execute("c")
    assert "exception 0x31 delivered" in out
    assert engine.machine.cpus[0].eip == engine.symbols["entry"]
    engine.execute("catch iret")
    out = engine.execute("c")
    assert "about to execute iret" in out
    assert engine.machine.cpus[0].eip == engine.symbols["saved"] + 12


def test_display_print_and_set():
    engine = open_engine()
    assert engine.execute("display/i $pc").startswith("1: x/i $pc\n=> 0x1000 <_start>:")
    engine.execute("display/x $esp")
    out = engine.execute("si")
    assert "1: x/i $pc\n=> 0x1005 <_start+5>:" in out
    assert "2: /x $esp = 0x1378" in out
    engine.execute("undisplay 1")
    assert "x/i" not in engine.execute("si")
    assert engine.execute("print/x $esp + 8") == "$1 = 0x1380"
    assert engine.execute("p/x *_start") == "$2 = 0x1378bc"
    engine.execute("set $ebx = 0x55")
    assert engine.machine.cpus[0].regs.ebx == 0x55
    engine.execute("set {int} counter = 0x11223344")
    assert engine.machine.memory.read32(engine.symbols["counter"]) == 0x11223344
    engine.execute("set {char} counter = 0x99")
    assert engine.machine.memory.read32(engine.symbols["counter"]) == 0x11223399
    assert "set $REG" in engine.execute("set nonsense")


def test_edits_are_kept_on_the_timeline():
    """A register set by hand at step 3 is set again when a replay passes step 3."""
    engine = open_engine()
    engine.execute("goto 3")
    engine.execute("set $ebx = 0x77")
    engine.execute("goto 8")
    later = machine_state(engine.machine)
    engine.execute("goto 1")
    assert engine.machine.cpus[0].regs.ebx == 0
    engine.execute("goto 8")
    assert machine_state(engine.machine) == later
    assert engine.machine.cpus[0].regs.ebx == 0x77


def test_reverse_stepi_returns_to_exactly_the_earlier_state():
    engine = open_engine(snapshot_interval=4)  # replays cross several snapshots
    engine.execute("inject 0x30 at 9")
    states = {}
    while engine.machine.steps < 60:
        states[engine.machine.steps] = machine_state(engine.machine)
        engine.execute("si")
    for _ in range(60):
        engine.execute("rsi")
        assert machine_state(engine.machine) == states[engine.machine.steps]
    assert engine.machine.steps == 0
    assert "No more reverse-execution history." in engine.execute("rsi")


def test_reverse_stepi_after_a_continue_restores_the_registers_shown_before():
    engine = open_engine()
    engine.execute("b bump")
    engine.execute("c")
    before = engine.execute("info registers")
    engine.execute("si")
    assert engine.execute("info registers") != before
    engine.execute("reverse-stepi")
    assert engine.execute("info registers") == before


def test_reverse_continue_finds_the_previous_hit_then_the_start():
    engine = open_engine()
    engine.execute("b bump")
    for _ in range(3):
        engine.execute("c")
    third = engine.machine.steps
    engine.execute("c")
    out = engine.execute("rc")
    assert out.startswith("Breakpoint 1, cpu0 at 0x1030 <bump>")
    assert engine.machine.steps == third
    engine.execute("rc")
    engine.execute("rc")
    assert "No more reverse-execution history." in engine.execute("rc")
    assert engine.machine.steps == 0


def test_reverse_continue_with_a_watchpoint():
    engine = open_engine()
    engine.execute("watch counter")
    engine.execute("c")
    engine.execute("c")
    second = engine.machine.steps
    engine.execute("c")
    assert engine.execute("x/wx counter").endswith("0x00000003")
    out = engine.execute("rc")
    assert "Old value = 0x1\nNew value = 0x2" in out
    assert engine.machine.steps == second


def test_snapshot_budget_thins_and_reverse_still_exact():
    engine = open_engine(snapshot_interval=2, snapshot_budget=4 << 20)  # 4 snapshots of 1 MiB
    states = {}
    while engine.machine.steps < 50:
        states[engine.machine.steps] = machine_state(engine.machine)
        engine.execute("si")
    assert len(engine.history.snapshots) <= 4
    assert engine.history.interval > 2
    for target in (49, 33, 2, 17, 0):
        engine.execute(f"goto {target}")
        assert machine_state(engine.machine) == states[target]


def test_a_step_the_machine_cannot_take_leaves_it_just_before():
    engine = open_engine(TRIPLE)
    engine.execute("si")
    engine.execute("si")
    before = machine_state(engine.machine)
    out = engine.execute("si")
    assert "The machine cannot take its next step" in out and "triple fault" in out
    assert machine_state(engine.machine) == before
    assert "cannot take" in engine.execute("c")
    assert machine_state(engine.machine) == before
    engine.execute("rsi")
    assert engine.machine.steps == 1


def test_two_cpus_step_with_the_interleaving_and_reverse_per_cpu():
    engine = open_engine(cpus=2, interleaving=[0, 0, 1])
    engine.execute("cpu 1")
    engine.execute("si")  # cpu0 steps twice, then cpu1 once
    assert engine.machine.steps == 3
    assert engine.machine.cpus[0].instructions == 2
    assert engine.machine.cpus[1].instructions == 1
    out = engine.execute("info vcpu")
    assert out.splitlines()[1].startswith("* cpu1")
    engine.execute("rsi")  # back to before cpu1's step
    assert engine.machine.steps == 2
    engine.execute("cpu 0")
    engine.execute("rsi")
    assert engine.machine.steps == 1
    engine.execute("b bump")
    out = engine.execute("c")
    assert out.startswith("Breakpoint 1, cpu0")
    assert engine.execute("cpu 5") == "cpu: 5 is out of range (0..1)"


def test_a_breakpoint_hit_by_another_cpu_switches_the_view():
    engine = open_engine(cpus=2, interleaving=[1, 0])
    engine.execute("b bump")
    out = engine.execute("c")
    assert out.startswith("[Switching to cpu1]\nBreakpoint 1, cpu1")
    assert engine.selected == 1


def test_annotate_hook_lines_appear_at_every_stop_and_in_info_vcpu():
    seen = []

    def annotate(machine, cpu):
        seen.append(cpu.index)
        return [f"virtual IF={cpu.index} window=no", "second line"]

    engine = open_engine(annotate=annotate)
    out = engine.execute("si")
    assert "  virtual IF=0 window=no\n  second line" in out
    assert "virtual IF=0" in engine.execute("info vcpu")

    def broken(machine, cpu):
        raise RuntimeError("boom")

    engine.annotate = broken
    assert "(annotate hook failed: RuntimeError: boom)" in engine.execute("si")


def test_record_writes_a_line_per_step(tmp_path):
    engine = open_engine()
    trace = tmp_path / "trace.tsv"
    engine.execute("inject 0x30")
    assert "Recording" in engine.execute(f"record {trace}")
    engine.execute("si 8")
    engine.execute("record stop")
    rows = [line.split("\t") for line in trace.read_text().splitlines()[1:]]
    assert len(rows) == 8
    assert rows[0] == ["0", "cpu0", "instruction", "0x00001000", "mov    $0x1378,%esp"]
    # the interrupt arrives after the call that sat in the STI shadow
    assert rows[6] == ["6", "cpu0", "interrupt", "0x00001030", "interrupt 0x30"]
    assert rows[7][4] == "push   %eax"


def test_goto_and_when():
    engine = open_engine()
    engine.execute("goto 12")
    assert engine.machine.steps == 12
    assert engine.execute("when").startswith("step 12")
    engine.execute("goto 4")
    assert engine.machine.steps == 4
    engine.execute("set step-budget 100")
    assert "more than the 100 a command may run" in engine.execute("goto 500")
    assert engine.machine.steps == 4


def test_errors_are_one_line_answers():
    engine = open_engine()
    assert engine.execute("frobnicate") == 'Undefined command: "frobnicate".  Try "help".'
    assert engine.execute("re").startswith('Ambiguous command "re"')
    assert engine.execute("stepi 0") == "stepi: count: 0 is out of range (1..1000000000)"
    assert engine.execute("break *(") == "expression ends too soon"
    assert engine.execute("info") .startswith("info what?")
    assert engine.execute("info zzz").startswith("Undefined info command")
    assert engine.execute("x/4wx 0x") != ""
    assert engine.execute("") == ""
    assert engine.execute("# a comment") == ""
    assert engine.execute("watch") == "watch needs an address: watch ADDR [LEN]"
    assert engine.execute("catch frogs").startswith("catch interrupt")
    for line in ("x/4wx", "until", "goto", "display/i", "cpu x", "inject", "stack 0"):
        answer = engine.execute(line)
        assert answer and "\n" not in answer and "Traceback" not in answer


def test_unique_prefixes_and_aliases():
    assert lookup("disas").name == "disassemble"
    assert lookup("rsi").name == "reverse-stepi"
    assert lookup("reverse-s").name == "reverse-stepi"
    assert lookup("cont").name == "continue"
    with pytest.raises(CommandError):
        lookup("re")


def test_help_lists_and_describes():
    engine = open_engine()
    out = engine.execute("help")
    for name in ("stepi", "reverse-stepi", "inject", "stack", "record", "x "):
        assert name in out
    assert engine.execute("help x").startswith("x/NFU ADDR")
    assert engine.execute("help rsi").startswith("reverse-stepi [N]")


def test_quit_sets_finished():
    engine = open_engine()
    assert not engine.finished
    engine.execute("quit")
    assert engine.finished


def test_program_without_symbols():
    from vmi.debugger import Engine
    from vmi.machine import Machine

    machine = Machine(cpus=1, memory_size=1 << 16)
    machine.memory.load(0x100, bytes.fromhex("40" * 4 + "f4"))
    machine.cpus[0].enter_flat_mode(0)
    machine.cpus[0].eip = 0x100
    engine = Engine(machine)
    assert engine.where().startswith("cpu0 0x00000100: 40  inc    %eax")
    engine.execute("si 2")
    assert machine.cpus[0].regs.eax == 2


def test_real_mode_cpu_after_reset():
    from vmi.debugger import Engine
    from vmi.machine import Machine

    engine = Engine(Machine(cpus=1, memory_size=1 << 20))
    assert engine.where().startswith("cpu0 f000:fff0")
    assert "mode=real" in engine.where()
    assert "IVT" in engine.execute("info idt")


def test_paging_reads_do_not_touch_accessed_bits_or_cr2():
    """The debugger's page walk writes nothing (SDM Vol.3A §4.8 bits stay clear)."""
    from vmi.debugger.memview import Unmapped, read_linear, translate

    engine = open_engine()
    cpu = engine.machine.cpus[0]
    memory = engine.machine.memory
    directory, table = 0x80000, 0x81000
    memory.write32(directory, table | 0x3)
    memory.write32(table + 4 * 1, 0x1000 | 0x3)  # linear 0x1000 -> physical 0x1000
    cpu.cr[3] = directory
    cpu.cr[0] |= 0x80000000
    before = memory.read_bytes(directory, 0x2000)
    assert translate(cpu, 0x1000) == 0x1000
    assert read_linear(cpu, 0x1000, 5) == memory.read_bytes(0x1000, 5)
    with pytest.raises(Unmapped):
        read_linear(cpu, 0x5000, 4)
    assert memory.read_bytes(directory, 0x2000) == before
    assert cpu.cr[2] == 0
    assert "Cannot access memory at address 0x5000" == engine.execute("x/4wx 0x5000")


def test_source_used_by_the_tests_assembles():
    engine = open_engine(PROGRAM)
    assert {"loop", "bump", "handler", "entry", "saved", "counter"} <= set(engine.symbols)
