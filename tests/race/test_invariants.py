"""Each invariant can fail: a run whose state is corrupted on purpose at the right
moment is reported with the invariant named; the same run untouched passes."""

from __future__ import annotations

from typing import Any

from tests.race.conftest import scenario
from vmi.race.invariants import Checker
from vmi.race.kernel import PAGE_OFFSET, TI_FLAGS, TIF_SIGPENDING


def run_with(sc: Any, poke: Any, *, limit: int = 3000):
    """Run from the scenario's start, calling ``poke(sc, step)`` before each step;
    returns the first violation (or None). With two CPUs, CPU 0 runs alone first
    (it takes the lock), then CPU 1 alone (it finds the lock held and spins)."""
    sc.restore()
    machine = sc.system.machine
    checker = Checker(sc.view, single_cpu=len(machine.cpus) == 1)
    for step in range(limit):
        if len(machine.cpus) > 1 and step in (0, 25, 600):
            machine.set_interleaving({0: [0], 25: [1], 600: [0, 1]}[step])
        poke(sc, step)
        _, found = checker.step(machine, step)
        if found:
            return found
    return checker.finish(sc.cpu)


def nothing(sc: Any, step: int) -> None:
    pass


def test_lost_work_when_sigpending_appears_after_the_last_check():
    sc = scenario(mode="native", path="iret")
    assert run_with(sc, nothing, limit=len(sc.boundaries)) is None
    # after syscall_exit sampled the flags (boundary 3), set TIF_SIGPENDING behind
    # the kernel's back: user mode resumes with work nobody will see
    def poke(sc: Any, step: int) -> None:
        if step == 4:
            ti = sc.view.thread_info(0)
            memory = sc.system.machine.memory
            memory.write32(ti + TI_FLAGS - PAGE_OFFSET,
                           memory.read32(ti + TI_FLAGS - PAGE_OFFSET) | TIF_SIGPENDING)
    found = run_with(sc, poke, limit=len(sc.boundaries))
    assert found is not None and found.invariant == "lost-work"
    assert "sigpending" in found.detail


def test_integrity_when_a_saved_register_is_changed():
    """Start in user mode (the end of the path), let the next system call enter the
    kernel, and change its saved EBX in pt_regs on the way out."""
    sc = scenario(mode="native", path="iret")
    sc.restore()
    machine, cpu = sc.system.machine, sc.cpu
    while cpu.cpl != 3:
        machine.step()
    checker = Checker(sc.view, single_cpu=True)
    found = None
    for step in range(2000):
        if cpu.cpl != 3 and cpu.eip == sc.system.symbols["syscall_exit"]:
            machine.memory.write32(cpu.r[4] - PAGE_OFFSET, 0xBAD)  # pt_regs.EBX
        _, found = checker.step(machine, step)
        if found:
            break
    assert found is not None and found.invariant == "integrity"
    assert "%ebx is 0xbad" in found.detail


def test_exactly_once_when_a_raised_interrupt_vanishes():
    sc = scenario(mode="native", path="iret")
    sc.restore()
    machine, cpu = sc.system.machine, sc.cpu
    checker = Checker(sc.view, single_cpu=True)
    for step in range(400):
        if step == 2:
            checker.raise_interrupt(cpu, 0x21)
            machine.pic.raise_vector(0, 0x21)
        if step == 3:  # dropped before delivery (interrupts are off on the path)
            machine.pic.pending[0] &= ~(1 << 0x21)
        assert checker.step(machine, step)[1] is None
    found = checker.finish(cpu)
    assert found is not None and found.invariant == "exactly-once"
    assert "handled 0" in found.detail
    # untouched, the same interrupt is handled once
    assert sc.run_branch((2,)).ok


def test_nesting_names_the_level_in_the_window():
    sc = scenario(mode="naive", policy="none", path="iret")
    window = [b.index for b in sc.boundaries if b.window == "iret"]
    outcome = sc.run_branch((window[-1],))
    assert outcome.invariant == "nesting" and "level 2" in outcome.violation.detail


def test_mutual_exclusion_when_the_lock_is_freed_under_its_holder():
    sc = scenario(mode="native", path="spinlock", cpus=2)
    lock = sc.system.symbols["work_lock"]
    memory = sc.system.machine.memory

    def poke(sc: Any, step: int) -> None:
        # while CPU 0 holds work_lock, make it look free: CPU 1 then takes it too
        if memory.read8(lock - PAGE_OFFSET) == 0:
            memory.write8(lock - PAGE_OFFSET, 1)
    found = run_with(sc, poke, limit=6000)
    assert found is not None and found.invariant == "mutual-exclusion"
    assert "work_lock" in found.detail


def test_spin_irq_when_the_saved_flags_disagree_with_the_spinning_if():
    sc = scenario(mode="native", path="spinlock", cpus=2)
    waits = {w.start: w for w in sc.view.spin_waits}
    assert waits

    def poke(sc: Any, step: int) -> None:
        for cpu in sc.system.machine.cpus:
            wait = waits.get(cpu.eip)
            if wait is not None:
                cpu.r[wait.flags] ^= 0x200  # the saved IF flips under the spinner
    found = run_with(sc, poke, limit=6000)
    assert found is not None and found.invariant == "spin-irq"
