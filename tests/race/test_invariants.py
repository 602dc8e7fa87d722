"""Each invariant can fail: a run whose state is corrupted on purpose at the right
moment is reported with the invariant named; the same run untouched passes."""

from __future__ import annotations

from typing import Any

from tests.race.conftest import scenario
from vmi.cpu.paging import peek_linear
from vmi.race.invariants import Checker
from vmi.race.kernel import PAGE_OFFSET, TI_FLAGS, TIF_SIGPENDING


def run_with(sc: Any, poke: Any, *, limit: int = 3000):
    """Run from the scenario's start (its lead-in first, so ``step`` counts the
    path's boundaries), calling ``poke(sc, step)`` before each step;
    returns the first violation (or None). With two CPUs, CPU 0 runs alone first
    (it takes the lock), then CPU 1 alone (it finds the lock held and spins)."""
    sc.restore()
    machine = sc.system.machine
    checker = Checker(sc.view, single_cpu=len(machine.cpus) == 1)
    for lead in range(-sc.lead_in, 0):  # from the user instruction to the path's start
        _, found = checker.step(machine, lead)
        assert found is None, found
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
    for lead in range(-sc.lead_in, 0):
        assert checker.step(machine, lead)[1] is None
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


# -- liveness, nesting from the stack, completion, transparency ------------------------------
PT_EFLAGS = 0x30  # pt_regs: the EFLAGS image the return restores


def frame_word(sc: Any, offset: int) -> int:
    """The physical address of a word of the user frame at the top of the kernel stack
    (the path starts with ESP at its base)."""
    return (sc.cpu.r[4] + offset - PAGE_OFFSET) & 0xFFFFFFFF


def test_liveness_when_user_mode_resumes_with_interrupts_off():
    sc = scenario(mode="native", path="iret")
    memory = sc.system.machine.memory

    def poke(sc: Any, step: int) -> None:
        if step == 0:  # the frame's IF image cleared: the iret returns with IF 0
            address = frame_word(sc, PT_EFLAGS)
            memory.write32(address, memory.read32(address) & ~0x200)
    found = run_with(sc, poke, limit=len(sc.boundaries) + 3)
    assert found is not None and found.invariant == "liveness"
    assert "with interrupts off" in found.detail


def test_liveness_when_the_kernel_oopses():
    sc = scenario(mode="native", path="iret")
    memory = sc.system.machine.memory
    oopses = sc.system.symbols["kernel_oopses"] - PAGE_OFFSET

    def poke(sc: Any, step: int) -> None:
        if step == 2:
            memory.write32(oopses, memory.read32(oopses) + 1)
    found = run_with(sc, poke, limit=len(sc.boundaries))
    assert found is not None and found.invariant == "liveness"
    assert "1 oops" in found.detail


def test_liveness_when_the_branch_never_comes_back():
    sc = scenario(mode="native", path="iret")
    sc.restore()
    checker = Checker(sc.view, single_cpu=True)
    machine = sc.system.machine
    cpu = sc.cpu
    # a kernel that spins forever where the path starts: jmp . at syscall_exit
    for lead in range(-sc.lead_in, 0):
        checker.step(machine, lead)
    machine.memory.write_bytes(cpu.eip - PAGE_OFFSET, b"\xeb\xfe")
    for step in range(500):
        assert checker.step(machine, step)[1] is None
    found = checker.budget_exhausted(cpu, 500)
    assert found.invariant == "liveness" and "within 500 steps" in found.detail


def test_trap_and_emulate_runs_user_mode_with_the_virtual_if_off():
    """The seed: pure trap-and-emulate cannot restore the virtual IF with a raw iret
    at ring 1. Every branch of its IRET path breaks liveness."""
    sc = scenario(mode="trap", policy="none", path="iret")
    outcome = sc.run_branch(())
    assert outcome.invariant == "liveness"
    assert "interrupts off" in outcome.violation.detail


def test_nesting_when_a_handler_is_entered_with_interrupts_on():
    sc = scenario(mode="native", path="iret")
    memory = sc.system.machine.memory
    gate = sc.system.symbols["idt_table"] + 8 * 0x21 - PAGE_OFFSET

    def poke(sc: Any, step: int) -> None:
        if step == 0:  # interrupt gate (0xE) -> trap gate (0xF), then ^C
            memory.write32(gate + 4, memory.read32(gate + 4) | 0x100)
            sc.system.machine.pic.raise_vector(0, 0x21)
    found = run_with(sc, poke, limit=400)
    assert found is not None and found.invariant == "nesting"
    assert "entered with interrupts on" in found.detail


def test_nesting_is_found_from_the_stack_not_from_a_window_table():
    """Blank the explorer's own window table: the naive kernel still nests at its
    inline pop and iret, found from the half-popped frame on the stack."""
    sc = scenario(mode="naive", policy="none", path="iret")
    window = [b.index for b in sc.boundaries if b.window == "iret"]
    saved = sc.view.iret_windows
    sc.view.iret_windows = []
    try:
        outcome = sc.run_branch((window[-1],))
    finally:
        sc.view.iret_windows = saved
    assert outcome.invariant == "nesting" and "pops begun" in outcome.violation.detail


def test_exactly_once_counts_completion_not_entry():
    """An interrupt counts as handled when its C handler has returned to
    ``ret_from_intr`` on the frame it was entered with, not when it is entered."""
    sc = scenario(mode="native", path="iret")
    sc.restore()
    machine, cpu = sc.system.machine, sc.cpu
    checker = Checker(sc.view, single_cpu=True)
    for lead in range(-sc.lead_in, 0):
        checker.step(machine, lead)
    checker.raise_interrupt(cpu, 0x21)
    machine.pic.raise_vector(0, 0x21)
    seen = []
    for step in range(2000):
        checker.step(machine, step)
        if cpu.eip in (sc.view.common_interrupt, sc.view.ret_from_intr):
            seen.append((cpu.eip, dict(checker.handled)))
        if cpu.eip == sc.view.ret_from_intr:
            break
    assert seen[0] == (sc.view.common_interrupt, {})  # entered: not yet handled
    assert seen[-1] == (sc.view.ret_from_intr, {0x21: 1})
    assert checker.outstanding() == 0


def test_transparency_when_user_mode_sees_what_native_never_shows():
    """Change a word of the user stack behind the kernel's back during a VMI branch:
    no register changed (integrity holds), but no native run shows that stack."""
    sc = scenario(mode="vmi", policy="defer", path="iret")
    assert sc.reference is not None
    memory = sc.system.machine.memory

    def poke(sc: Any, step: int) -> None:
        if step == 0:
            user_esp = memory.read32(frame_word(sc, 0x34))  # OLDESP
            physical = peek_linear(sc.cpu, user_esp)
            memory.write32(physical, memory.read32(physical) ^ 0x40)
    found = run_with(sc, poke, limit=len(sc.boundaries))
    assert found is None  # every other invariant holds
    machine = sc.system.machine
    checker = Checker(sc.view, single_cpu=True)
    sc.restore()
    for step in range(-sc.lead_in, len(sc.boundaries) - 1):
        poke(sc, step)
        checker.step(machine, step)
    assert sc.cpu.cpl == 3
    violation = sc.reference.check(checker, checker.observation(), 0)
    assert violation is not None and violation.invariant == "transparency"
    assert "user stack" in violation.detail
    # untouched, the same branch is one of the native outcomes
    assert sc.run_branch(()).ok


def test_mutual_exclusion_when_a_cpu_tries_a_lock_it_holds():
    """A CPU that tries a lock it holds itself spins forever: a deadlock."""
    sc = scenario(mode="native", path="spinlock")
    lock = sc.system.symbols["work_lock"]
    memory = sc.system.machine.memory
    site, register = next(iter(sc.view.try_sites.items()))
    done = []

    def poke(sc: Any, step: int) -> None:
        cpu = sc.cpu
        if not done and memory.read8(lock - PAGE_OFFSET) == 0 and cpu.eip not in (
                sc.view.try_sites):  # held: send the holder back to try it again
            cpu.eip = site
            cpu.r[register] = lock
            done.append(step)
    found = run_with(sc, poke, limit=400)
    assert done and found is not None and found.invariant == "mutual-exclusion"
    assert "which it holds itself" in found.detail


def test_lost_work_when_signal_work_runs_on_a_kernel_frame():
    sc = scenario(mode="native", path="iret")
    sc.restore()
    checker = Checker(sc.view, single_cpu=True)
    machine, cpu = sc.system.machine, sc.cpu
    for lead in range(-sc.lead_in, 0):
        checker.step(machine, lead)
    # call do_notify_resume by hand on a frame whose CS is the kernel's
    frame = cpu.r[4]
    cs = machine.memory.read32(frame + 0x2C - PAGE_OFFSET)
    machine.memory.write32(frame + 0x2C - PAGE_OFFSET, cs & ~3)
    cpu.r[0] = frame
    cpu.eip = sc.view.do_notify_resume
    found = checker.after_step(cpu, cpu.eip, "instruction")
    assert found is not None and found.invariant == "lost-work"
    assert "kernel frame" in found.detail
