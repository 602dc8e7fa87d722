"""The issue's claims, by exhaustive sweep: the naive kernel and the vmi-split macro
set each break an invariant with a single interrupt inside the window; native and
VMI (defer and fixup) break none over depth-1 sweeps of every path and depth-2
sweeps of the IRET and SYSEXIT paths (native SYSEXIT over depth 3 too); two-CPU
interleavings of the spinlock path break none."""

from __future__ import annotations

import pytest

from tests.race.conftest import scenario
from vmi.race.explorer import sweep
from vmi.race.report import PathReport

SAFE = [("native", "defer", None), ("vmi", "defer", None), ("vmi", "fixup", None)]


def broken(mode: str, policy: str, macros: str | None, path: str, depth: int = 1):
    sc = scenario(mode=mode, policy=policy, macros=macros, path=path)
    return sc, PathReport(sc, depth, sweep(sc, depth))


@pytest.mark.parametrize("mode,policy,macros", SAFE)
@pytest.mark.parametrize("path", ["iret", "sysexit", "spinlock", "iret16", "iret-fault"])
def test_safe_kernels_hold_every_invariant_at_depth_1(mode, policy, macros, path):
    sc, report = broken(mode, policy, macros, path)
    assert len(report.outcomes) == len(sc.boundaries) > 5
    assert all(o.reached for o in report.outcomes)
    assert not report.broken, report.counterexample().violation.describe()


@pytest.mark.parametrize("mode,policy,macros", SAFE)
@pytest.mark.parametrize("path", ["iret", "sysexit"])
def test_safe_kernels_hold_every_invariant_at_depth_2(mode, policy, macros, path):
    sc, report = broken(mode, policy, macros, path, depth=2)
    n = len(sc.boundaries)
    assert len(report.outcomes) == n * n
    assert not report.broken, report.counterexample().violation.describe()


def test_the_vmi_window_is_where_the_policies_act():
    """The VMI sweep does reach the ROM's windows: interrupts raised there are
    deferred (defer) or merged into the frame (fixup) -- not simply absent."""
    for policy, counter in (("defer", "deferred"), ("fixup", "fixups")):
        sc = scenario(mode="vmi", policy=policy, path="iret")
        inside = [b.index for b in sc.boundaries if b.window == "iret"]
        assert inside
        before = getattr(sc.system.monitor.stats, counter)
        outcome = sc.run_branch((inside[-2],))
        assert outcome.ok
        assert getattr(sc.system.monitor.stats, counter) > before


def test_naive_iret_nests_a_frame_in_its_inline_window():
    sc, report = broken("naive", "none", None, "iret")
    worst = report.counterexample()
    assert worst is not None and worst.schedule and len(worst.schedule) == 1
    nested = [b for b, c in zip(sc.boundaries, report.cells(), strict=True) if c == "nesting"]
    # only after the store that turns the virtual IF on: pop and iret
    assert [b.text.split()[0] for b in nested] == ["pop", "iret"]
    assert all(b.window == "iret" and b.name.startswith("restore_nocheck") for b in nested)
    # an interrupt raised earlier waits in the monitor: the inline store of the virtual
    # IF checks nothing, so user code runs while it is pending (a liveness failure)
    late = [c for b, c in zip(sc.boundaries, report.cells(), strict=True)
            if c and c != "nesting"]
    assert late and set(late) == {"liveness"}


def test_naive_sysexit_loses_the_signal_raised_between_sti_and_sysexit():
    sc, report = broken("naive", "none", None, "sysexit")
    worst = report.counterexample()
    assert worst.invariant == "lost-work" and len(worst.schedule) == 1
    assert sc.boundaries[worst.schedule[0]].text.startswith("sysexit")
    assert "sigpending" in worst.violation.detail


def test_vmi_split_loses_work_between_its_two_sites():
    """vmi-split pads between STI and SYSEXIT: the gap is kernel code outside any ROM
    window, so even the defer policy cannot protect it."""
    sc, report = broken("vmi", "defer", "vmi-split", "sysexit")
    worst = report.counterexample()
    assert worst.invariant == "lost-work" and len(worst.schedule) == 1
    gap = [b for b, c in zip(sc.boundaries, report.cells(), strict=True) if c == "lost-work"]
    assert all(b.window is None for b in gap)  # outside the ROM's windows
    assert any(b.name.startswith("sysenter_exit") for b in gap)
    # the same image with STI_SYSEXIT as one site holds (the seed's N.B.)
    assert not broken("vmi", "defer", None, "sysexit")[1].broken


def test_vmi_without_a_policy_nests_in_the_rom_window():
    sc, report = broken("vmi", "none", None, "iret")
    # nested where the ROM has begun popping; left pending (user code runs first)
    # where the ROM checked for pending events before the store of the virtual IF
    assert set(report.broken) == {"nesting", "liveness"}
    assert all(sc.boundaries[o.schedule[0]].window == "iret"
               for o in report.outcomes if not o.ok)


@pytest.mark.parametrize("mode,policy", [("native", "defer"), ("vmi", "defer"),
                                         ("vmi", "fixup")])
def test_two_cpu_spinlock_interleavings_hold(mode, policy):
    sc = scenario(mode=mode, policy=policy, path="spinlock", cpus=2)
    outcomes = sweep(sc, 1)
    assert len(outcomes) == len(sc.boundaries) > 20
    assert all(o.ok for o in outcomes), [o.violation.describe() for o in outcomes if not o.ok]


def test_depth_3_is_every_ordered_triple_and_native_sysexit_holds_over_it():
    """Three interrupts per schedule: n**3 schedules in order; the native SYSEXIT
    path (sti; sysexit, whose shadow covers the gap) holds over all of them."""
    from vmi.race.explorer import MAX_DEPTH, schedules

    sc = scenario(mode="native", policy="defer", macros=None, path="sysexit")
    n = len(sc.boundaries)
    triples = schedules(sc, 3)
    assert len(triples) == n ** 3 and triples == sorted(set(triples))
    assert triples[0] == (0, 0, 0) and triples[-1] == (n - 1, n - 1, n - 1)
    with pytest.raises(ValueError, match="from 1 to"):
        schedules(sc, MAX_DEPTH + 1)
    report = PathReport(sc, 3, sweep(sc, chosen=triples))
    assert len(report.outcomes) == n ** 3
    assert not report.broken, report.counterexample().violation.describe()
    three = [o for o in report.outcomes if len(o.injections) == 3]
    assert len(three) > n  # many triples really raised three interrupts


def test_the_16_bit_stack_return_breaks_only_without_the_espfix():
    """The seed's deferred case: natively ldt_ss's espfix, under VMI the monitor's;
    the naive kernel's raw iret at ring 1 keeps the kernel's ESP[31:16], which the
    program sees (transparency), and trap-and-emulate runs user mode with the
    virtual IF off (liveness)."""
    _, naive = broken("naive", "none", None, "iret16")
    assert "transparency" in naive.broken
    _, trap = broken("trap", "none", None, "iret16")
    assert set(trap.broken) == {"liveness"}


@pytest.mark.parametrize("mode,policy", [("native", "defer"), ("vmi", "defer"),
                                         ("vmi", "fixup")])
@pytest.mark.parametrize("path", ["iret", "sysexit"])
def test_the_timer_vector_holds_on_safe_kernels(mode, policy, path):
    sc = scenario(mode=mode, policy=policy, path=path, vector=0x20)
    outcomes = sweep(sc, 1)
    assert all(o.reached for o in outcomes)
    assert all(o.ok for o in outcomes), [o.violation.describe() for o in outcomes if not o.ok]


def test_nested_schedules_put_the_second_interrupt_inside_the_first_handler():
    """Depth 2 nested: the second interrupt 1..N steps after the first, wherever that
    is. VMI with defer holds; the naive kernel breaks."""
    sc = scenario(mode="vmi", policy="defer", path="sysexit", horizon=40)
    outcomes = sweep(sc, 2)
    assert len(outcomes) == len(sc.boundaries) * 40
    inside = [o for o in outcomes if len(o.injections) == 2
              and o.injections[1].where.startswith(("common_interrupt", "do_IRQ",
                                                     "console_interrupt"))]
    assert inside, "no second interrupt landed inside the first one's handler"
    assert all(o.ok for o in outcomes), [o.violation.describe() for o in outcomes if not o.ok]
    naive = scenario(mode="naive", policy="none", path="sysexit", horizon=40)
    assert any(not o.ok for o in sweep(naive, 2))


@pytest.mark.slow
@pytest.mark.parametrize("mode,policy", [("vmi", "defer"), ("vmi", "fixup")])
def test_nested_schedules_over_the_whole_handler_hold(mode, policy):
    sc = scenario(mode=mode, policy=policy, path="sysexit", horizon=200)
    outcomes = sweep(sc, 2)
    assert all(o.ok for o in outcomes), [o.violation.describe() for o in outcomes if not o.ok]


def test_seeds_change_the_state_the_path_starts_from():
    """--seed changes the workload's timing (the timer's phase, the CPUs' start-up),
    so each seed reaches the path in a different machine state."""
    prints = {scenario(mode="vmi", policy="defer", path="sysexit", seed=seed).fingerprint
              for seed in (0, 1, 2)}
    assert len(prints) == 3
