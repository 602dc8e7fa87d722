"""The invariants, checked at every machine step of an exploration.

Each is a property the native kernel keeps by construction and a paravirtual
kernel keeps only if its IRET race is handled (docs/race.md):

``lost-work``
    Control never reaches a user-mode instruction while the current task has TIF
    work (need_resched, sigpending) unless an interrupt is already pending that
    will see it. Natively interrupts are off from the last work check
    (``resume_userspace``'s CLI) to the IRET, so work raised by an interrupt is
    seen by that interrupt's own return to user mode. Checked with one CPU (this
    kernel sends no IPI when it signals a task running on another CPU).
``nesting``
    No interrupt is taken inside an IRET window: after the return has started
    popping its frame and before the instruction that completes it. One taken
    there builds a frame under a half-popped one and returns into the same window,
    so a stream of interrupts grows the kernel stack without bound (the reason for
    Xen's fixup, reference §2). The level reported is how many such frames are
    stacked.
``exactly-once``
    Every interrupt the explorer raises reaches the guest's handler exactly once:
    not lost (still undelivered when the CPU is back in user mode with nothing to
    wait for) and not duplicated. A raise that finds the same vector already
    pending coalesces with it, as in the interrupt controller.
``integrity``
    A task's user registers are the same when it returns to user mode as when it
    left it: all of them, EIP, the arithmetic flags and the words at the top of its
    stack after an interrupt or exception; all but EAX after ``int $0x80``; EBX,
    ESI, EDI and ESP after ``sysenter`` (the vsyscall stub restores the others).
``mutual-exclusion``
    A spinlock is acquired (its ``lock decb`` leaves 0) only while no other CPU
    holds it, and released only by the CPU holding it.
``spin-irq``
    While a CPU spins on a held lock, its (virtual) interrupt flag is on exactly
    when the flags the caller saved had it on (the seed's spin_lock_flags).
"""

from __future__ import annotations

from typing import Any

from attrs import define, field, frozen

from vmi.cpu.paging import peek_linear
from vmi.race.kernel import KernelView

INVARIANTS = ("lost-work", "nesting", "exactly-once", "integrity", "mutual-exclusion",
              "spin-irq")
ARITH = 0x8D5  # CF PF AF ZF SF OF
STACK_WORDS = 4
ESP, EAX, ECX, EDX, EBX, EBP, ESI, EDI = 4, 0, 1, 2, 3, 5, 6, 7
M32 = 0xFFFFFFFF


@frozen
class Violation:
    """A broken invariant: which, at which explorer step, on which CPU and EIP."""

    invariant: str
    step: int
    cpu: int
    eip: int
    where: str
    detail: str

    def describe(self) -> str:
        return f"{self.invariant} at step {self.step}, cpu{self.cpu} {self.where}: {self.detail}"


@define
class _UserEntry:
    """A task's user state when it entered the kernel."""

    kind: str  # "int80", "sysenter", "event"
    regs: tuple[int, ...]
    eip: int
    flags: int
    stack: tuple[int, ...] | None


@define
class Checker:
    """The invariants' state over one run; ``after_step`` returns the first violation."""

    view: KernelView
    single_cpu: bool
    step_index: int = 0
    raised: dict[int, int] = field(factory=dict)  # vector -> raises not coalesced
    handled: dict[int, int] = field(factory=dict)
    nesting: list[int] = field(factory=list)  # per CPU: frames taken in IRET windows
    holder: dict[int, int] = field(factory=dict)  # lock address -> cpu
    _prev_cpl: list[int] = field(factory=list)
    _user: list[Any] = field(factory=list)  # per CPU: (regs, eip, flags, ss_base, bits)
    _entries: dict[int, _UserEntry] = field(factory=dict)  # thread_info -> entry

    def __attrs_post_init__(self) -> None:
        cpus = self.view.machine.cpus
        self.nesting = [0] * len(cpus)
        self._prev_cpl = [cpu.cpl for cpu in cpus]
        self._user = [None] * len(cpus)
        for cpu in cpus:
            if cpu.cpl == 3:
                self._user[cpu.index] = self._user_state(cpu)

    # -- the explorer's events ------------------------------------------------------------
    def raise_interrupt(self, cpu: Any, vector: int) -> None:
        """The explorer raises ``vector`` on ``cpu`` now (call before raising it)."""
        if not self.view.pending(cpu, vector):
            self.raised[vector] = self.raised.get(vector, 0) + 1

    def outstanding(self) -> int:
        """Raised interrupts not handled yet."""
        return sum(n - self.handled.get(v, 0) for v, n in self.raised.items())

    # -- per step ---------------------------------------------------------------------------
    def step(self, machine: Any, index: int) -> tuple[int, Violation | None]:
        """Run the machine's next step (number ``index`` of this run) and check it:
        returns the CPU that stepped and the first violation, if any."""
        self.step_index = index
        eip = self.before_step(machine.next_cpu())
        cpu, kind, _ = machine.step()
        return cpu, self.after_step(machine.cpus[cpu], eip, kind)

    def before_step(self, cpu: Any) -> int:
        """Note what the step about to run on ``cpu`` starts from; returns its EIP."""
        if cpu.cpl == 3:
            self._user[cpu.index] = self._user_state(cpu)
        return cpu.eip

    def after_step(self, cpu: Any, eip_before: int, kind: str) -> Violation | None:
        """Check the invariants after ``cpu`` ran one boundary from ``eip_before``."""
        view = self.view
        index = cpu.index
        if kind == "instruction" and self._prev_cpl[index] != 3:
            found = self._locks(cpu, eip_before)
            if found:
                return found
        eip = cpu.eip
        cpl = cpu.cpl
        if eip == view.common_interrupt and cpl != 3:
            found = self._interrupt_entry(cpu)
            if found:
                return found
        wait = view.spin_wait_at.get(eip)
        if wait is not None and cpl != 3:
            saved = bool(cpu.r[wait.flags] & 0x200)
            if view.interrupts_enabled(cpu) != saved:
                return self._violation("spin-irq", cpu, (
                    f"spinning with interrupts {'on' if not saved else 'off'} although the "
                    f"saved flags ({cpu.r[wait.flags]:#x}) had them "
                    f"{'on' if saved else 'off'}"))
        prev = self._prev_cpl[index]
        self._prev_cpl[index] = cpl
        if prev == 3 and cpl != 3:
            self._enter_kernel(cpu, eip_before)
        elif prev != 3 and cpl == 3:
            return self._return_to_user(cpu)
        return None

    def finish(self, cpu: Any) -> Violation | None:
        """At the end of a run: an interrupt raised and never handled is lost."""
        for vector, count in self.raised.items():
            if self.handled.get(vector, 0) < count:
                where = "still pending" if self.view.pending(cpu, vector) else "gone"
                return self._violation("exactly-once", cpu, (
                    f"vector {vector:#x} raised {count} time(s), handled "
                    f"{self.handled.get(vector, 0)} ({where} at the end of the run)"))
        return None

    # -- the checks ---------------------------------------------------------------------------
    def _violation(self, name: str, cpu: Any, detail: str) -> Violation:
        eip = (cpu.seg_base[1] + cpu.eip) & M32
        return Violation(name, self.step_index, cpu.index, eip, self.view.name(eip), detail)

    def _interrupt_entry(self, cpu: Any) -> Violation | None:
        view = self.view
        esp = cpu.r[ESP]
        vector = (~view.read32(esp)) & M32
        if vector > 0xFF:
            return None
        self.handled[vector] = self.handled.get(vector, 0) + 1
        if vector in self.raised and self.handled[vector] > self.raised[vector]:
            return self._violation("exactly-once", cpu, (
                f"vector {vector:#x} handled {self.handled[vector]} times, raised "
                f"{self.raised[vector]}"))
        eip, cs = view.read32(esp + 4), view.read32(esp + 8)
        if cs & 3 != 3 and view.in_iret_window(eip):
            self.nesting[cpu.index] += 1
            return self._violation("nesting", cpu, (
                f"vector {vector:#x} taken at {view.name(eip)}, inside an IRET window: "
                f"a frame under a half-popped one (level "
                f"{self.nesting[cpu.index] + 1})"))
        return None

    def _locks(self, cpu: Any, eip: int) -> Violation | None:
        view = self.view
        register = view.try_sites.get(eip)
        if register is not None:
            lock = cpu.r[register]
            if lock in view.lock_addresses and view.memory.read8(lock - 0xC0000000) == 0:
                other = self.holder.get(lock)
                if other is not None and other != cpu.index:
                    return self._violation("mutual-exclusion", cpu, (
                        f"{view.lock_addresses[lock]} acquired while cpu{other} holds it"))
                self.holder[lock] = cpu.index
            return None
        register = view.release_sites.get(eip)
        if register is not None:
            lock = cpu.r[register]
            if lock in view.lock_addresses:
                other = self.holder.pop(lock, None)
                if other is not None and other != cpu.index:
                    return self._violation("mutual-exclusion", cpu, (
                        f"{view.lock_addresses[lock]} released by cpu{cpu.index} while "
                        f"cpu{other} holds it"))
        return None

    def _user_state(self, cpu: Any) -> tuple[Any, ...]:
        return (tuple(cpu.r), cpu.eip, cpu.eflags, cpu.seg_base[2], cpu.stack_bits)

    def _enter_kernel(self, cpu: Any, eip_before: int) -> None:
        state = self._user[cpu.index]
        if state is None:
            return
        regs, eip, flags, ss_base, bits = state
        view = self.view
        landed = cpu.eip
        if landed == view.system_call and eip == eip_before:
            kind = "int80"
        elif landed == view.sysenter_entry:
            kind = "sysenter"
        else:
            kind = "event"
        stack = None
        if kind == "event":
            stack = self._stack_words(cpu, ss_base, regs[ESP], bits)
        self._entries[view.thread_info(cpu.index)] = _UserEntry(kind, regs, eip, flags, stack)

    def _stack_words(self, cpu: Any, ss_base: int, esp: int, bits: int) -> tuple[int, ...] | None:
        """The words at the top of a user stack, read without side effects (None
        where one is unmapped or misaligned)."""
        words = []
        for i in range(STACK_WORDS):
            offset = (esp + 4 * i) & (M32 if bits == 32 else 0xFFFF)
            physical = peek_linear(cpu, (ss_base + offset) & M32)
            if physical is None or physical & 3:
                return None
            words.append(cpu.mem.read32(physical))
        return tuple(words)

    def _return_to_user(self, cpu: Any) -> Violation | None:
        view = self.view
        index = cpu.index
        flags = view.work_flags(index) if self.single_cpu else 0
        if flags and not view.pending(cpu):
            names = "+".join(n for bit, n in ((8, "need_resched"), (4, "sigpending"))
                             if flags & bit)
            return self._violation("lost-work", cpu, (
                f"user mode resumes with TIF {names} set and no interrupt pending to "
                "act on it"))
        entry = self._entries.pop(view.thread_info(index), None)
        if entry is None:
            return None
        return self._compare(cpu, entry)

    def _compare(self, cpu: Any, entry: _UserEntry) -> Violation | None:
        regs = cpu.r
        old = entry.regs
        if entry.kind == "int80":
            expected = dict(enumerate(old))
            del expected[EAX]
            eip = entry.eip + 2
        elif entry.kind == "sysenter":
            # the vsyscall stub moved ESP into EBP before sysenter and restores ECX,
            # EDX and EBP itself; they come back as SYSEXIT leaves them (ECX = ESP,
            # EDX = the return) or, after work on the way out, as IRET restores them
            expected = {EBX: old[EBX], ESI: old[ESI], EDI: old[EDI], ESP: old[EBP]}
            eip = self.view.sysenter_return
        else:
            expected = dict(enumerate(old))
            eip = entry.eip
        if cpu.eip != eip:
            return None  # a different return (a signal, a fault that moved EIP): not ours
        for reg, value in expected.items():
            if regs[reg] != value:
                return self._violation("integrity", cpu, (
                    f"%{('eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi')[reg]} is "
                    f"{regs[reg]:#x} after the {entry.kind} return, was {value:#x}"))
        if entry.kind == "event":
            if (cpu.eflags ^ entry.flags) & ARITH:
                return self._violation("integrity", cpu, (
                    f"flags {cpu.eflags:#x} after the return, were {entry.flags:#x}"))
            if entry.stack is not None:
                now = self._stack_words(cpu, cpu.seg_base[2], regs[ESP], cpu.stack_bits)
                if now is not None and now != entry.stack:
                    return self._violation("integrity", cpu, (
                        "the user stack changed under the task: "
                        f"{[hex(w) for w in entry.stack]} -> {[hex(w) for w in now]}"))
        return None
