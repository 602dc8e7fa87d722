"""Costs and exit counts: every exit adds its documented cycles to the CPU's counter;
a patched kernel exits far less often than the same kernel left unpatched."""

from __future__ import annotations

from tests.hypervisor import test_window as w
from tests.hypervisor.kit import Guest
from vmi.hypervisor import EXIT_COSTS, FIXUP_COST, FRAME_COST


def cli_loop(count: int) -> Guest:
    g = Guest("main:\n" + "\tcli\n" * count + "\thlt\n", macros="native", monitor="vmi")
    g.run()
    assert g.stuck
    return g


def test_each_emulation_costs_its_cycles() -> None:
    ten, twenty = cli_loop(10), cli_loop(20)
    assert twenty.monitor.stats.emulated["cli"] - ten.monitor.stats.emulated["cli"] == 10
    # a faulting cli retires nothing itself: the difference is the exits alone
    assert twenty.cpu.cycles - ten.cpu.cycles == 10 * EXIT_COSTS["emulation"]


def total(stats: object) -> int:
    s = stats  # MonitorStats
    return (sum(EXIT_COSTS[k] * n for k, n in s.exits.items())  # type: ignore[attr-defined]
            + FRAME_COST * s.frames + FIXUP_COST * s.fixups)  # type: ignore[attr-defined]


def test_exit_cycles_add_up() -> None:
    for policy, point in (("defer", "vmi_iret_insn"), ("fixup", "vmi_iret_insn"),
                          ("none", "vmi_iret_insn")):
        g = w.run(policy, point)
        assert g.monitor.stats.exit_cycles == total(g.monitor.stats)
        assert g.monitor.stats.as_dict()["exits"] == dict(g.monitor.stats.exits)


def test_patched_exits_less_than_unpatched() -> None:
    patched = Guest(w.KERNEL, w.USER, macros="vmi", monitor="vmi", defines=w.DEFINES)
    unpatched = Guest(w.KERNEL, w.USER, macros="native", monitor="vmi", defines=w.DEFINES)
    native = Guest(w.KERNEL, w.USER, macros="native", monitor=None, defines=w.DEFINES)
    for g in (patched, unpatched, native):
        g.run()
        assert g.stuck and g.var("syscalls") == 4 and g.u32(w.MISSED) == 0
    p, u = patched.monitor.stats, unpatched.monitor.stats
    # patched: only what has no hook (the user's sysenter, the final hlt)
    assert p.emulated == {"sysenter": 3, "hlt": 1}
    assert u.emulated == {"cli": 7, "sti": 3, "wrmsr": 3, "sysexit": 3, "sysenter": 3,
                          "hlt": 1}
    assert u.exits["emulation"] == 20 > 4 * p.exits["emulation"]
    assert p.patched_sites == len(patched.kernel.annotations) == 10
    assert u.patched_sites == 0
    assert native.cpu.cycles < patched.cpu.cycles < unpatched.cpu.cycles


def test_an_unpatched_iret_leaves_the_virtual_if_off_in_user_mode() -> None:
    """The seed's point: at ring 1 with IOPL 0 a raw iret cannot set IF, so the user
    runs with the guest's interrupts off after the first CLI'd return."""
    g = Guest(w.KERNEL, w.USER, macros="native", monitor="vmi", defines=w.DEFINES)
    g.run_to(g.sym("after_int"), count=1)
    assert g.cpu.cpl == 3 and not g.monitor.vcpu(g.cpu).interrupts_enabled
    patched = Guest(w.KERNEL, w.USER, monitor="vmi", defines=w.DEFINES)
    patched.run_to(patched.sym("after_int"), count=1)
    assert patched.monitor.vcpu(patched.cpu).interrupts_enabled
