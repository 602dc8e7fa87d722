"""The ``iret-fault`` path: a return to user mode the processor refuses (the
``badseg`` program's SS names an LDT entry it has just cleared), fixed up by the
kernel's ``iret_exc`` into SIGSEGV. Natively the fault is the kernel's ``iret``;
under VMI the ROM's, reflected at the IRET site. Each branch starts at the
program's ``int $0x80`` and runs through the kill to the next task's return to
user mode, so the console's report of the signal is part of every outcome."""

from __future__ import annotations

import pytest

from tests.race.conftest import scenario
from vmi.race.explorer import sweep
from vmi.race.paths import PATHS
from vmi.race.report import PathReport

PATH = "iret-fault"
KILLED = b"task 1: exception 32 error 0x00000000 at "
SIGNAL = b", killed by signal 11\n"


def names(sc) -> list[str]:
    return [b.name for b in sc.boundaries]


@pytest.mark.parametrize(("mode", "policy"), [("native", "defer"), ("vmi", "defer"),
                                              ("vmi", "fixup")])
def test_the_path_goes_through_the_faulting_iret_to_do_iret_error(mode, policy):
    sc = scenario(mode=mode, policy=policy, path=PATH)
    assert sc.lead_in > 0  # from the program's int $0x80 (the modify_ldt that clears)
    seen = names(sc)
    assert seen[0] == "syscall_exit" and seen[-1] == "do_iret_error"
    assert "general_protection" in seen and "iret_exc" in seen
    assert seen.index("restore_nocheck") < seen.index("general_protection") \
        < seen.index("iret_exc")
    if mode == "vmi":  # the fault is the ROM's iret, inside its window
        windowed = [b for b in sc.boundaries if b.window == "iret"]
        assert windowed and windowed[-1].text.startswith("iret")
        assert seen.index(windowed[-1].name) + 1 == seen.index("general_protection")
    outcome = sc.run_branch(())
    assert outcome.ok and outcome.reached
    returns, console = sc.last_observation
    assert KILLED in console and SIGNAL in console
    assert returns  # the next task's return to user mode ends the branch


@pytest.mark.parametrize(("mode", "policy"), [("native", "defer"), ("vmi", "defer"),
                                              ("vmi", "fixup")])
def test_safe_kernels_hold_every_invariant_over_the_faulting_return(mode, policy):
    sc = scenario(mode=mode, policy=policy, path=PATH)
    report = PathReport(sc, 1, sweep(sc, 1))
    assert len(report.outcomes) == len(sc.boundaries) > 100
    assert all(o.reached for o in report.outcomes)
    assert not report.broken, report.counterexample().violation.describe()


def test_the_monitor_acts_on_interrupts_raised_in_the_faulting_window():
    """Under defer an interrupt raised inside the ROM's IRET window is deferred to the
    end of the window, which is the fault; the branch still matches native's
    outcomes (the reference is checked: transparency is part of the verdict)."""
    sc = scenario(mode="vmi", policy="defer", path=PATH)
    assert sc.reference is not None
    inside = [b.index for b in sc.boundaries if b.window == "iret"]
    assert sc.run_branch(()).ok
    baseline = sc.system.monitor.stats.deferred
    deferred = []
    for k in inside:
        outcome = sc.run_branch((k,))
        assert outcome.ok, outcome.violation.describe()
        deferred.append(sc.system.monitor.stats.deferred > baseline)
    assert any(deferred)


def test_native_takes_an_interrupt_in_iret_exc_without_nesting():
    """iret_exc's STI opens interrupts on the half-popped frame it is rebuilding: an
    interrupt there is not nested in a return (the return was abandoned by the
    fault), and the rebuilt frame is checked as any other."""
    sc = scenario(mode="native", path=PATH)
    at = names(sc).index("iret_exc")
    outcome = sc.run_branch((at,))
    assert outcome.ok
    assert outcome.injections and any(
        i.where.startswith(("iret_exc", "error_code")) for i in outcome.injections)


def test_vmi_none_nests_in_the_window_and_naive_oopses():
    """Without a policy the ROM's window nests a frame as on the iret path; the naive
    macro set's inline IRET faults on an instruction no table entry names, so the
    kernel oopses in every branch (liveness)."""
    none = PathReport(sc := scenario(mode="vmi", policy="none", path=PATH), 1, sweep(sc, 1))
    assert "nesting" in none.broken
    naive_sc = scenario(mode="naive", policy="none", path=PATH)
    assert names(naive_sc)[-1] == "die"
    naive = PathReport(naive_sc, 1, sweep(naive_sc, 1))
    assert "liveness" in naive.broken
    assert all(not o.ok for o in naive.outcomes)


def test_the_path_boots_its_own_workload():
    assert PATHS[PATH].workload == ("badseg", "syscalls")
    sc = scenario(mode="native", path=PATH)
    assert [p.name for p in sc.system.guest.programs] == ["badseg", "syscalls"]
