"""``vmi debug`` on the bundled kernel, natively and under the VMI monitor: the IRET
window on the stop line, an injected interrupt decided by the window policy,
reverse execution back over it, and race counterexamples opened with ``--replay``.

The sessions are driven through stdin as a person's script would drive them. Each
boots the kernel and runs it to its first return to user space (about 75,000
steps, a second or two).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.debugger.test_cli import debug, register_block
from vmi.debugger.loader import LoadError, open_engine, read_replay
from vmi.debugger.monitorview import naive_windows

SEPARATOR = "----"  # an unknown command: its one-line answer separates the outputs
_SPLIT = f'Undefined command: "{SEPARATOR}".  Try "help".\n'
STATE = re.compile(r"^  cpl=(?P<cpl>\d) IF=(?P<IF>\d) (?P<virtual>.*?) ?shadow=(?P<shadow>\d) "
                   r"mode=(?P<mode>\w+)(?: halted)? step=(?P<step>\d+)(?:  \[(?P<marker>.*)\])?$",
                   re.M)


def session(args: list[str], commands: list[str]) -> tuple[str, list[str]]:
    """Run ``vmi debug ARGS``; returns the opening text (banner and first stop) and
    the output of each command."""
    script = []
    for command in commands:
        script += [SEPARATOR, command]
    status, out, err = debug(args, script)
    assert status == 0, err
    assert err == "" and "Traceback" not in out
    head, *outputs = out.split(_SPLIT)
    assert len(outputs) == len(commands)
    return head, [text.rstrip("\n") for text in outputs]


def state(text: str) -> dict[str, str]:
    """The fields of the (last) state line in ``text``."""
    matches = list(STATE.finditer(text))
    assert matches, f"no state line in {text!r}"
    found = matches[-1].groupdict()
    found["marker"] = found["marker"] or ""
    return found


def place(text: str) -> str:
    """The first line of the (last) stop view: ``cpu0 0x... symbol: bytes  insn``."""
    lines = [line for line in text.splitlines() if re.match(r"cpu\d+ (0x|[0-9a-f]{4}:)", line)]
    assert lines, f"no stop view in {text!r}"
    return lines[-1]


def window_counts(text: str) -> tuple[int, int, int]:
    match = re.search(r"window\s+deferred (\d+), fixed up (\d+), nested in the window (\d+)",
                      text)
    assert match, text
    deferred, fixed, nested = (int(v) for v in match.groups())
    return deferred, fixed, nested


def to_the_window(policy: str, where: str, after: list[str]) -> tuple[str, list[str]]:
    return session(["--mode", "vmi", "--policy", policy], [
        "break restore_nocheck", "continue", "delete", f"until {where}", "info registers",
        "info monitor", "inject 0x20", *after])


def test_defer_at_the_start_of_the_iret_window_then_reverse():
    head, out = to_the_window("defer", "vmi_iret_window_start", [
        "stepi", "info monitor", "stepi", "stack 5", "reverse-stepi", "reverse-stepi",
        "info registers", "info monitor"])
    assert "mode vmi, policy defer, kernel macro set vmi" in head
    assert state(head)["virtual"] == "VIF=native"  # at reset: the guest has not called Init
    # the breakpoint on the kernel's exit path: deprivileged, interrupts off, no window
    assert re.match(r"Breakpoint 1 at 0xc01[0-9a-f]{5} <restore_nocheck>$", out[0])
    assert "Breakpoint 1, cpu0 at 0xc01" in out[1] and "<restore_nocheck>" in out[1]
    assert re.search(r" restore_nocheck: 5b  pop    %ebx$", place(out[1]))
    at_break = state(out[1])
    assert (at_break["cpl"], at_break["IF"], at_break["virtual"], at_break["marker"]) == \
        ("1", "1", "VIF=0 vpending=[]", "")
    # into the ROM's IRET window: the marker, the virtual IF still off
    window = place(out[3])
    assert re.search(r"0xffc00[0-9a-f]{3} vmi_iret_window_start: 8b 44 24 10  "
                     r"mov    0x10\(%esp\),%eax$", window)
    in_window = state(out[3])
    assert in_window["marker"] == "in VMI IRET window"
    assert in_window["virtual"] == "VIF=0 vpending=[]"
    start = int(in_window["step"])
    assert start > int(at_break["step"])
    assert window_counts(out[5]) == (0, 0, 0)
    assert "policy defer decides" in out[6]
    # the interrupt arrives in the window: deferred; the monitor runs the guest out of
    # it to the ROM's pending check, where it is still pending
    stepped = out[7]
    assert f"step {start}: cpu0 took interrupt 0x20" in stepped
    address = int(window.split()[1], 16)
    assert (f"step {start}: monitor: interrupt 0x20 deferred by policy defer: EIP "
            f"{address:#x} <vmi_iret_window_start> in the VMI IRET window") in stepped
    assert "still pending (virtual IF off)" in stepped
    assert re.search(r" hc_iret_pending: 0f 0b  ud2$", place(stepped))
    left = state(stepped)
    assert (left["step"], left["virtual"], left["marker"]) == \
        (str(start + 1), "VIF=0 vpending=[0x20]", "")
    assert window_counts(out[8]) == (1, 0, 0)
    # then the ROM's pending check hands it over on the IRET's frame: a return to user
    # mode interrupted at its first user instruction
    delivered = out[9]
    assert re.search(r"monitor: the ROM's IRET found 0x20 pending as it re-enabled the "
                     r"virtual IF \(hypercall iret_pending\): delivered on its frame \(frame "
                     r"EIP 0x80[0-9a-f]{5} <syscalls\.", delivered)
    assert state(delivered)["virtual"] == "VIF=0 vpending=[]"  # an interrupt gate
    assert re.search(r"CS\s+0x00000073", out[10])  # the user's frame
    # reverse: back over the delivery, then over the deferral, to the window
    assert state(out[11])["step"] == str(start + 1)
    back = out[12]
    assert place(back) == window
    again = state(back)
    assert again["step"] == str(start) and again["marker"] == "in VMI IRET window"
    assert again["virtual"] == "VIF=0 vpending=[] pic=[0x20]"  # the edit is on the timeline
    assert register_block(out[13]) == register_block(out[4])
    assert window_counts(out[14]) == (0, 0, 0)  # the monitor's counts went back too


def test_fixup_after_the_store_delivers_on_the_returning_frame():
    head, out = to_the_window("fixup", "vmi_iret_pop", [
        "stepi", "stack 5", "info monitor", "reverse-stepi", "info registers",
        "info monitor"])
    assert "policy fixup" in head
    window = place(out[3])
    assert re.search(r" vmi_iret_pop: 58  pop    %eax$", window)
    in_window = state(out[3])
    assert in_window["marker"] == "in VMI IRET window"
    assert in_window["virtual"] == "VIF=1 vpending=[]"  # the store has enabled it
    start = int(in_window["step"])
    stepped = out[7]
    address = int(window.split()[1], 16)
    assert f"step {start}: cpu0 took interrupt 0x20" in stepped
    assert (f"step {start}: monitor: interrupt 0x20 fixed up by policy fixup: EIP "
            f"{address:#x} <vmi_iret_pop> in the VMI IRET window; delivered 0x20 on the frame "
            "the window was returning through (frame EIP 0x80") in stepped
    after = state(stepped)
    assert after["marker"] == "" and after["virtual"] == "VIF=0 vpending=[]"
    assert after["step"] == str(start + 1)
    # the handler's frame is the user's return frame: the IRET "completed"
    assert "interrupt frame" in out[8]
    assert re.search(r"EIP\s+0x080[0-9a-f]{5}\s+<syscalls\.", out[8])
    assert re.search(r"CS\s+0x00000073", out[8])
    assert window_counts(out[9]) == (0, 1, 0)
    back = out[10]
    assert place(back) == window
    assert state(back)["step"] == str(start)
    assert state(back)["marker"] == "in VMI IRET window"
    assert register_block(out[11]) == register_block(out[4])
    assert window_counts(out[12]) == (0, 0, 0)


def test_policy_none_nests_the_interrupt_inside_the_window():
    _head, out = to_the_window("none", "vmi_iret_pop", ["stepi", "stack 3"])
    start = int(state(out[3])["step"])
    stepped = out[7]
    assert (f"step {start}: monitor: interrupt 0x20 injected inside the VMI IRET window "
            "(EIP ") in stepped
    assert "by policy none: a nested frame on the half-returned kernel stack" in stepped
    # the nested frame returns into the ROM, at ring 1
    assert re.search(r"EIP\s+0xffc00[0-9a-f]{3}\s+<vmi_iret_pop>", out[8])
    assert re.search(r"CS\s+0x00000061", out[8])


def test_the_sysexit_window_and_coherent_monitor_counts_across_reverse_execution():
    engine, banner = open_engine(mode="vmi", policy="defer")
    assert "policy defer" in banner
    monitor = engine.monitor
    engine.execute("break sysenter_exit")
    engine.execute("continue")
    engine.execute("delete")
    out = engine.execute("until vmi_sysexit_store")
    assert "vmi_sysexit_store: 36 c7 05" in out
    assert state(out)["marker"] == "in VMI SYSEXIT window"
    step = engine.machine.steps
    before = monitor.stats.as_dict()
    cycles = engine.machine.cpus[0].cycles
    engine.execute("inject 0x20")
    out = engine.execute("stepi")
    assert "deferred by policy defer" in out and "in the VMI SYSEXIT window" in out
    assert "then delivered 0x20 (frame EIP 0x8040010 <SYSENTER_RETURN>)" in out
    after = monitor.stats.as_dict()
    assert after["deferred"] == before["deferred"] + 1
    assert after != before
    engine.execute("stepi 50")
    engine.execute(f"goto {step}")
    assert engine.machine.steps == step
    assert engine.machine.cpus[0].cycles == cycles
    assert monitor.stats.as_dict() == before  # restored with the machine
    engine.execute("stepi")
    assert monitor.stats.as_dict() == after  # and the same again going forwards


def test_replay_of_a_naive_counterexample(tmp_path):
    """A counterexample built by hand as the race explorer would: the naive kernel's
    inline IRET, after its store of VMI_VIF, on the return of a system call."""
    from vmi.system import boot_system

    system = boot_system("naive", policy="none", macros="naive", cpus=1, seed=0)
    machine, cpu = system.machine, system.machine.cpus[0]
    starts = {w.start for w in naive_windows(system.guest.build.kernel.program)
              if w.name == "naive inline IRET"}
    assert len(starts) >= 1
    syscalls = []
    system.monitor.trace = lambda vector, kind: syscalls.append(vector) if vector == 0x80 \
        else None
    for _ in range(200_000):
        machine.step()
        if syscalls and cpu.cpl == 1 and cpu.eip in starts:
            break  # at `popl %eax`: the store has set the virtual IF, the iret is next
    else:
        pytest.fail("the naive kernel never returned from a system call")
    fatal = machine.steps  # the interrupt is delivered by the step from here
    counterexample = {
        "format": "vmi-race-counterexample", "version": 1, "mode": "naive",
        "policy": "none", "macros": "naive", "cpus": 1, "seed": 0, "interleaving": None,
        "schedule": [[cpu.cycles, 0, 0x20]], "stop_step": fatal + 3, "path": "iret",
        "invariant": "nesting",
        "description": "a timer interrupt between the naive IRET's VIF store and its iret",
    }
    path = tmp_path / "counterexample.json"
    path.write_text(json.dumps(counterexample))
    head, out = session(["--replay", str(path)], [
        "when", f"goto {fatal}", "info registers", "stepi", "stack 2", "reverse-stepi",
        "info registers"])
    assert "mode naive, policy none, kernel macro set naive, 1 CPU, seed 0" in head
    assert (f"replay {path}: opened at step {fatal + 2}, one step before the recorded stop "
            f"at step {fatal + 3}") in head
    assert "  invariant nesting, path iret\n" in head
    assert "  a timer interrupt between the naive IRET's VIF store and its iret\n" in head
    assert (f"  the schedule's vector was last delivered: 0x20 on cpu0 at step {fatal} "
            f"('goto {fatal}' stands just before it)") in head
    opened = state(head)
    assert opened["step"] == str(fatal + 2) and opened["marker"] == ""
    assert out[0].startswith(f"step {fatal + 2}  (history: steps 0..{fatal + 2}")
    # just before the fatal interrupt: inside the naive kernel's own IRET window
    before = out[1]
    assert state(before)["step"] == str(fatal)
    assert state(before)["marker"] == "in naive inline IRET window"
    assert state(before)["virtual"] == "VIF=1 vpending=[]"
    assert re.search(r" restore_nocheck\+\d+: 58  pop    %eax$", place(before))
    stepped = out[3]
    assert f"step {fatal}: cpu0 took interrupt 0x20" in stepped
    assert (f"step {fatal}: monitor: interrupt 0x20 injected inside the naive inline IRET "
            "window") in stepped
    assert "which the monitor does not know (mode naive)" in stepped
    assert re.search(r"EIP\s+0xc01[0-9a-f]{5}\s+<restore_nocheck\+\d+>", out[4])
    assert place(out[5]) == place(before)
    assert register_block(out[6]) == register_block(out[2])


def test_replay_files_that_cannot_be_opened(tmp_path):
    path = tmp_path / "cx.json"
    good = {"format": "vmi-race-counterexample", "version": 1, "mode": "naive",
            "policy": "none", "macros": "naive", "cpus": 1, "seed": 0, "interleaving": None,
            "schedule": [[1000, 0, 32]], "stop_step": 10}

    def error(data, *args):
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        status, out, err = debug(["--replay", str(path), *args], [])
        # a damaged file exits 1; options that contradict it are bad usage (2)
        assert status == (2 if args else 1) and out == "" and "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        return lines[0]

    assert f"{path}: format is 'vmi-race-something'" in error({**good,
                                                             "format": "vmi-race-something"})
    assert f"{path}: version 2 of vmi-race-counterexample is not supported" in error(
        {**good, "version": 2})
    assert f"{path}: no 'policy'" in error({k: v for k, v in good.items() if k != "policy"})
    assert f"{path}: mode 'fast' is not one of" in error({**good, "mode": "fast"})
    assert f"{path}: schedule: entry 0 is [1, 2], not [cycle, cpu, vector]" in error(
        {**good, "schedule": [[1, 2]]})
    assert f"{path}: stop_step must be a step number" in error({**good, "stop_step": "x"})
    assert f"{path}: not a JSON replay file" in error("{nope")
    # the file says how the kernel ran; the command line may repeat it, not contradict it
    assert (f"{path} was recorded with --mode naive; the command line says --mode vmi "
            "(leave it out)") in error(good, "--mode", "vmi")
    assert "recorded with --policy none; the command line says --policy defer" in \
        error(good, "--policy", "defer")
    assert "a vmi-race-counterexample replays the bundled kernel" in error(
        good, "--program", str(path))
    # a configuration vmi.system refuses
    assert "--mode naive runs the kernel built with naive, not vmi" in error(
        {**good, "macros": "vmi"})


def test_the_older_minimal_replay_form_runs_on_the_command_lines_kernel(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schedule": [], "stop_step": 1000,
                                "description": "somewhere early"}))
    replay = read_replay(path)
    assert not replay.complete and replay.stop_step == 1000
    engine, banner = open_engine(replay=str(path), mode="trap")
    assert "mode trap, policy none, kernel macro set native" in banner
    assert "opened at step 999, one step before the recorded stop at step 1000" in banner
    assert "somewhere early" in banner
    assert engine.machine.steps == 999
    with pytest.raises(LoadError, match="--mode: chooses how the bundled kernel boots"):
        open_engine(program=str(path), mode="vmi")


def test_without_options_the_native_kernel_boots():
    head, out = session([], ["stepi", "info monitor", "break restore_nocheck", "help inject"])
    assert head.startswith("vmi debugger: the bundled kernel (mode native, kernel macro set "
                           "native, 1 CPU, seed 0)")
    assert "VIF" not in head and "VIF" not in out[0]  # no monitor: no virtual state
    assert state(out[0])["step"] == "1"
    assert out[1] == "No VMI monitor: the machine runs natively."
    assert re.match(r"Breakpoint 1 at 0xc01[0-9a-f]{5} <restore_nocheck>$", out[2])
    assert out[3].startswith("inject VECTOR [at STEP] [cpu N]")
