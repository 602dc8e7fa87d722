"""backtrace, frame/up/down, finish, reverse-finish and reverse-nexti (issue 17), on
the test program (tests/debugger/programs.py) and the bundled kernel."""

from __future__ import annotations

from tests.debugger.programs import open_engine


def at(engine, symbol: str) -> int:
    return engine.symbols[symbol]


def test_backtrace_names_the_caller_by_its_return_address():
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    assert engine.execute("bt") == ("#0  0x00001030 in bump ()\n"
                                    "#1  0x0000101e in loop ()")
    assert engine.execute("where 1") == "#0  0x00001030 in bump ()\n(More stack frames follow...)"
    assert engine.execute("backtrace 0") == "backtrace: count: 0 is out of range (1..64)"


def test_frame_up_and_down_select_and_say_so():
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    assert engine.execute("up") == "#1  0x0000101e in loop ()\n   0x101e <loop+5>:\tdec    %ecx"
    assert engine.frame_level == 1
    assert engine.execute("up") == "Initial frame selected; you cannot go up."
    assert engine.execute("down").startswith("#0  0x00001030 in bump ()\n=> 0x1030 <bump>:")
    assert engine.execute("down") == "Bottom (innermost) frame selected; you cannot go down."
    assert engine.execute("frame 1").startswith("#1  0x0000101e in loop ()")
    assert engine.execute("frame 5") == "No frame at level 5."
    assert engine.execute("frame -1") == "frame: -1 is out of range (0..63)"
    engine.execute("stepi")  # any stop selects frame 0 again
    assert engine.frame_level == 0


def test_finish_runs_until_the_function_returns():
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    cpu = engine.machine.cpus[0]
    esp = cpu.regs.esp
    out = engine.execute("finish")
    assert out.startswith("Run till exit from #0  0x00001030 in bump ()\n")
    assert cpu.eip == 0x101E and cpu.regs.esp == esp + 4
    assert "cpu0 0x0000101e loop+5: 49  dec    %ecx" in out
    # from the caller's frame: finish the frame above, which is the outermost
    assert engine.execute("finish") == '"finish" not meaningful in the outermost frame.'


def test_finish_of_a_selected_outer_frame_and_of_an_interrupt_handler():
    engine = open_engine()
    engine.execute("goto 8")  # at loop+5, interrupts enabled
    eax = engine.machine.cpus[0].regs.eax
    engine.execute("inject 0x30")
    engine.execute("stepi")  # the delivery
    engine.execute("stepi")  # push %eax in the handler
    cpu = engine.machine.cpus[0]
    assert cpu.eip == at(engine, "handler") + 1
    bt = engine.execute("bt").splitlines()
    assert bt[1] == "#1  0x0000101e in loop ()  [interrupt frame at 0x136c, cs=0x0060]"
    engine.execute("finish")
    assert cpu.eip == 0x101E and cpu.regs.eax == eax  # the handler's pop ran too
    assert engine.execute("p ticks") != "" and engine.read_memory(at(engine, "ticks"), 4) == \
        (1).to_bytes(4, "little")


def test_finish_from_a_frame_selected_with_up():
    """``up`` then ``finish`` returns from the outer frame's function: here the
    handler frame holds the interrupted bump, whose ret comes after the iret."""
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    engine.execute("delete")
    engine.execute("inject 0x30")
    engine.execute("stepi")  # delivered at bump's first boundary
    engine.execute("stepi")
    bt = engine.execute("bt").splitlines()
    assert [line.split(" in ")[1].split()[0] for line in bt] == ["handler", "bump", "loop"]
    engine.execute("up")
    out = engine.execute("finish")
    assert out.startswith("Run till exit from #1  0x00001030 in bump ()")
    assert engine.machine.cpus[0].eip == 0x101E  # back in loop: bump returned


def test_backtrace_names_a_pt_regs_frame():
    engine = open_engine()
    engine.execute("break saved")
    engine.execute("continue")
    bt = engine.execute("bt").splitlines()
    assert bt == ["#0  0x00001051 in saved ()",
                  "#1  0x00001028 in after_int ()  [pt_regs at 0x1344, orig_eax=0xffffffff, "
                  "cs=0x0060]"]


def test_reverse_finish_goes_back_to_the_call():
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    engine.execute("continue")  # the second call of bump
    engine.execute("stepi")  # at its ret
    cpu = engine.machine.cpus[0]
    assert cpu.eip == at(engine, "bump") + 6
    out = engine.execute("reverse-finish")
    assert out.startswith("Run back to call of #0  0x00001036 in bump ()")
    assert cpu.eip == at(engine, "loop") and engine.machine.steps == 10
    assert "call   0x1030 <bump>" in out


def test_reverse_finish_out_of_a_handler_goes_back_before_the_delivery():
    engine = open_engine()
    engine.execute("goto 8")
    engine.execute("inject 0x30")
    engine.execute("stepi 3")
    assert engine.machine.cpus[0].eip == at(engine, "handler") + 6
    engine.execute("reverse-finish")
    assert engine.machine.steps == 8 and engine.machine.cpus[0].eip == 0x101E


def test_reverse_nexti_steps_back_over_a_call():
    engine = open_engine()
    engine.execute("break bump")
    engine.execute("continue")
    engine.execute("finish")  # at loop+5, just after the call returned
    assert engine.machine.steps == 8
    engine.execute("reverse-nexti")
    cpu = engine.machine.cpus[0]
    assert cpu.eip == at(engine, "loop") and engine.machine.steps == 5
    engine.execute("rni")  # an ordinary instruction: one step back
    assert engine.machine.steps == 4
    engine.execute("goto 8")
    engine.execute("reverse-stepi")  # for comparison: into bump's ret
    assert cpu.eip == at(engine, "bump") + 6
    assert engine.execute("reverse-nexti 0") == \
        "reverse-nexti: count: 0 is out of range (1..1000000000)"


def test_kernel_backtrace_and_finish_to_user_mode():
    from vmi.debugger.loader import open_engine as open_kernel

    engine, _banner = open_kernel(mode="native")
    engine.execute("break restore_nocheck")
    engine.execute("continue")
    bt = engine.execute("bt").splitlines()
    assert bt[0] == f"#0  {engine.system.symbols['restore_nocheck']:#010x} in restore_nocheck ()"
    assert "pt_regs at 0x" in bt[1] and "from cpl 3" in bt[1]
    engine.execute("delete")
    engine.execute("finish")  # its iret returns to user mode
    cpu = engine.machine.cpus[0]
    assert cpu.cpl == 3 and cpu.eip == int(bt[1].split()[1], 16)
