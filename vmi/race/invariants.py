"""The invariants, checked at every machine step of an exploration.

Each is a property the native kernel keeps by construction and a paravirtual
kernel keeps only if its IRET race is handled (docs/race.md):

``lost-work``
    Control never reaches a user-mode instruction while the current task has TIF
    work (need_resched, sigpending) unless an interrupt is already pending that
    will see it; and signal work is handled only on a frame that returns to user
    mode (``do_notify_resume`` on a kernel frame would build a signal frame over
    kernel state). Natively interrupts are off from the last work check
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
    holds it, released only by the CPU holding it, and never tried by the CPU that
    holds it (a deadlock).
``spin-irq``
    While a CPU spins on a held lock, its (virtual) interrupt flag is on exactly
    when the flags the caller saved had it on (the seed's spin_lock_flags); and no
    interrupt is taken by a CPU that holds a lock (every lock of this kernel is
    taken with spin_lock_irqsave, so a handler that took it would spin forever on
    one CPU).
``liveness``
    The branch comes back: no step budget reached before user mode resumes with
    every raised interrupt handled, no halt with interrupts off, no oops or failed
    kernel check, no triple fault; user mode never runs with the (virtual)
    interrupt flag off, and no user instruction retires while an interrupt is
    pending (natively a pending interrupt is taken at the first user boundary).
``transparency``
    What user mode can observe (every return to user mode: EIP, registers,
    flags, the words at the top of its stack; the console's output) equals what
    some native run of the same program with the same number of interrupts could
    have shown (``vmi.race.spec``). It knows nothing of the monitor or its windows.

``nesting`` is found from the stack, not from a table of windows: every entry from
user mode builds its frame (``KernelView.frame_base``) at the top of the task's
kernel stack; once the stack pointer has gone below that frame's base and come
back above it, the frame's pops have begun, and an external interrupt that
interrupts kernel code there builds its frame under a half-popped one. An
interrupt handler entered with interrupts on is a nesting failure too (nothing
keeps a second interrupt out of its entry). A return that faults there (an IRET
the processor refuses: the ``iret-fault`` path) is abandoned, not resumed: the
fault's handler runs on the half-popped frame and its fixup (2.6.16's
``iret_exc``) rebuilds the frame from what is left, so from the fault until the
fixup's own pushes have gone below the base again an interrupt there is not
nested in the return (natively ``iret_exc`` takes interrupts at once: its first
instruction is STI). Once rebuilt, the frame's pops are checked as before.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field, frozen

from vmi.cpu.paging import peek_linear
from vmi.machine import MachineStopped
from vmi.race.kernel import KernelView
from vmi.race.names import INVARIANTS

__all__ = ["INVARIANTS", "Checker", "Violation"]
#: User-mode instructions that may retire while an interrupt is pending: none, as
#: natively (an interrupt pending at a user boundary, with IF on, is taken there).
PENDING_BOUND = 0
#: The flags of a return to user mode that user code can observe and the kernel
#: must restore: the arithmetic flags, TF, IF, DF and IOPL.
OBSERVED_FLAGS = 0x8D5 | 0x100 | 0x200 | 0x400 | 0x3000
#: Words at the top of the user stack recorded with each return (a signal frame's
#: first words among them).
OBSERVED_STACK_WORDS = 8
ARITH = 0x8D5  # CF PF AF ZF SF OF
STACK_WORDS = 4
ESP, EAX, ECX, EDX, EBX, EBP, ESI, EDI = 4, 0, 1, 2, 3, 5, 6, 7
ORIG_EAX = 0x24  # pt_regs: where an interrupt's ~vector sits above SAVE_ALL's registers
PT_CS = 0x2C  # pt_regs: the CS the frame returns to
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
    handled: dict[int, int] = field(factory=dict)  # vector -> handlers completed
    nesting: list[int] = field(factory=list)  # per CPU: frames taken on half-popped ones
    holder: dict[int, int] = field(factory=dict)  # lock address -> cpu
    #: every return to user mode, as user code sees it (for ``transparency``)
    returns: list[tuple[Any, ...]] = field(factory=list)
    _prev_cpl: list[int] = field(factory=list)
    _user: list[Any] = field(factory=list)  # per CPU: (regs, eip, flags, ss_base, bits)
    _entries: dict[int, _UserEntry] = field(factory=dict)  # thread_info -> entry
    _built: dict[int, bool] = field(factory=dict)  # thread_info -> user frame complete
    _in_handler: dict[tuple[int, int], int] = field(factory=dict)  # (cpu, ESP) -> vector
    #: thread_info -> the ESP a fault interrupted while that thread's user frame was
    #: being popped (its return abandoned until the fault's handling comes back there)
    _faulted: dict[int, int] = field(factory=dict)
    #: thread_info -> whether its abandoned frame is being rebuilt (the fixup runs)
    _rebuilding: dict[int, bool] = field(factory=dict)
    #: thread_info -> the ESP an interrupt taken during a rebuild returns to
    _held: dict[int, int] = field(factory=dict)
    _waited: list[int] = field(factory=list)  # per CPU: user instructions while pending
    _returned: list[Any] = field(factory=list)  # per CPU: a return no instruction saw yet
    _failures: tuple[int, ...] = ()
    _console_start: int = 0

    def __attrs_post_init__(self) -> None:
        view = self.view
        cpus = view.machine.cpus
        self.nesting = [0] * len(cpus)
        self._prev_cpl = [cpu.cpl for cpu in cpus]
        self._user = [None] * len(cpus)
        self._waited = [0] * len(cpus)
        self._returned = [None] * len(cpus)
        self._failures = view.failures()
        self._console_start = len(view.machine.console.output)
        for cpu in cpus:
            if cpu.cpl == 3:
                self._user[cpu.index] = self._user_state(cpu)
            else:  # a task already inside the kernel: its user frame is whole
                thread, base = view.frame_base(cpu.r[ESP])
                self._built[thread] = cpu.r[ESP] <= base

    # -- the explorer's events ------------------------------------------------------------
    def raise_interrupt(self, cpu: Any, vector: int) -> None:
        """The explorer raises ``vector`` on ``cpu`` now (call before raising it)."""
        if not self.view.pending(cpu, vector):
            self.raised[vector] = self.raised.get(vector, 0) + 1

    def outstanding(self) -> int:
        """Raised interrupts whose handlers have not completed yet."""
        return sum(n - self.handled.get(v, 0) for v, n in self.raised.items())

    def observation(self) -> tuple[tuple[Any, ...], bytes]:
        """What user mode could observe of the run so far: its returns, the console."""
        last = tuple(r for r in self._returned if r is not None)
        return (tuple(self.returns) + last,
                bytes(self.view.machine.console.output[self._console_start:]))

    # -- per step ---------------------------------------------------------------------------
    def step(self, machine: Any, index: int) -> tuple[int, Violation | None]:
        """Run the machine's next step (number ``index`` of this run) and check it:
        returns the CPU that stepped and the first violation, if any."""
        self.step_index = index
        cpu = machine.next_cpu()
        eip = self.before_step(cpu)
        try:
            index_, kind, _ = machine.step()
        except MachineStopped as stopped:
            return cpu.index, self._violation("liveness", cpu, (
                f"the machine stopped: {stopped.reason}"))
        return index_, self.after_step(machine.cpus[index_], eip, kind)

    def before_step(self, cpu: Any) -> int:
        """Note what the step about to run on ``cpu`` starts from; returns its EIP."""
        if cpu.cpl == 3:
            self._user[cpu.index] = self._user_state(cpu)
        return cpu.eip

    def after_step(self, cpu: Any, eip_before: int, kind: str) -> Violation | None:
        """Check the invariants after ``cpu`` ran one boundary from ``eip_before``."""
        view = self.view
        index = cpu.index
        prev = self._prev_cpl[index]
        if kind == "instruction":
            if prev != 3:
                found = self._locks(cpu, eip_before)
                if found:
                    return found
            elif self._returned[index] is not None:  # a user instruction saw the return
                self.returns.append(self._returned[index])
                self._returned[index] = None
        eip = cpu.eip
        cpl = cpu.cpl
        if cpl != 3:
            found = self._kernel_step(cpu, eip)
            if found:
                return found
        elif kind == "instruction" and prev == 3:
            found = self._user_step(cpu)
            if found:
                return found
        if kind == "idle" and cpu.halted and not view.interrupts_enabled(cpu):
            return self._violation("liveness", cpu, (
                "halted with interrupts off: nothing but an NMI can wake it"))
        self._prev_cpl[index] = cpl
        if prev == 3 and cpl != 3:
            self._enter_kernel(cpu, eip_before)
        elif prev != 3 and cpl == 3:
            return self._return_to_user(cpu)
        return None

    def finish(self, cpu: Any) -> Violation | None:
        """At the end of a run: an interrupt raised and never handled is lost; a
        kernel that oopsed or failed a check did not survive the branch."""
        for vector, count in self.raised.items():
            if self.handled.get(vector, 0) < count:
                where = "still pending" if self.view.pending(cpu, vector) else "gone"
                return self._violation("exactly-once", cpu, (
                    f"vector {vector:#x} raised {count} time(s), handled "
                    f"{self.handled.get(vector, 0)} ({where} at the end of the run)"))
        return self._kernel_failed(cpu)

    def budget_exhausted(self, cpu: Any, steps: int) -> Violation:
        """The branch ran ``steps`` steps without coming back: a hang."""
        lost = self.outstanding()
        where = "in user mode" if cpu.cpl == 3 else f"in the kernel at {self.view.name(cpu.eip)}"
        return self._kernel_failed(cpu) or self._violation("liveness", cpu, (
            f"no return to user mode with every interrupt handled within {steps:,} steps "
            f"(now {where}; {lost} interrupt(s) not handled)"))

    # -- the checks ---------------------------------------------------------------------------
    def _violation(self, name: str, cpu: Any, detail: str) -> Violation:
        eip = (cpu.seg_base[1] + cpu.eip) & M32
        return Violation(name, self.step_index, cpu.index, eip, self.view.name(eip), detail)

    def _kernel_failed(self, cpu: Any) -> Violation | None:
        now = self.view.failures()
        if now == self._failures:
            return None
        oopses, checks = (b - a for a, b in zip(self._failures, now, strict=True))
        return self._violation("liveness", cpu, (
            f"the kernel failed: {oopses} oops(es), {checks} failed kernel check(s)"))

    def _kernel_step(self, cpu: Any, eip: int) -> Violation | None:
        """A boundary inside the kernel: the user frame's life, handler entry and
        completion, spin-waits."""
        view = self.view
        esp = cpu.r[ESP]
        thread, base = view.frame_base(esp)
        if eip in view.interrupt_stubs and self._rebuilding.get(thread):
            interrupted = (esp + 12) & M32  # the processor pushed EIP, CS, EFLAGS
            if view.read32((esp + 4) & M32) & 3 != 3 and interrupted > base:
                # an interrupt taken in the rebuild: its pushes are not the rebuild's
                self._held[thread] = interrupted
        held = self._held.get(thread)
        if held is not None and esp >= held:
            del self._held[thread]  # the interrupt taken in the rebuild has returned
            held = None
        if esp <= base and thread in self._built and held is None:
            self._built[thread] = True
            self._rebuilding.pop(thread, None)
        faulted = self._faulted.get(thread)
        if faulted is not None and esp >= faulted:
            # the fault's handling came back to where it struck, now at its fixup:
            # the frame is rebuilt from there (built again once ESP is below its base)
            del self._faulted[thread]
            self._built[thread] = False
            self._rebuilding[thread] = True
        error_code = view.exception_entries.get(eip)
        if error_code is not None:
            self._exception_entry(cpu, error_code)
        if eip == view.common_interrupt:
            found = self._interrupt_entry(cpu)
            if found:
                return found
        elif eip == view.do_notify_resume:
            cs = view.read32((cpu.r[EAX] + PT_CS) & M32)  # its argument: the pt_regs
            if cs & 3 != 3:
                return self._violation("lost-work", cpu, (
                    f"signal work handled on a kernel frame (CS {cs & 0xFFFF:#x}): a "
                    "signal frame built over kernel state"))
        elif eip == view.ret_from_intr:
            vector = self._in_handler.pop((cpu.index, (esp + ORIG_EAX) & M32), None)
            if vector is not None:
                self.handled[vector] = self.handled.get(vector, 0) + 1
                if self.handled[vector] > self.raised.get(vector, self.handled[vector]):
                    return self._violation("exactly-once", cpu, (
                        f"vector {vector:#x} handled {self.handled[vector]} times, raised "
                        f"{self.raised[vector]}"))
        wait = view.spin_wait_at.get(eip)
        if wait is not None:
            saved = bool(cpu.r[wait.flags] & 0x200)
            if view.interrupts_enabled(cpu) != saved:
                return self._violation("spin-irq", cpu, (
                    f"spinning with interrupts {'on' if not saved else 'off'} although the "
                    f"saved flags ({cpu.r[wait.flags]:#x}) had them "
                    f"{'on' if saved else 'off'}"))
        return None

    def _interrupts_off_in_user(self, cpu: Any, how: str) -> Violation | None:
        """User mode (that may not change IF itself: IOPL < 3) with the IF the kernel
        sees off: nothing can interrupt it (liveness)."""
        if self.view.interrupts_enabled(cpu) or (cpu.eflags >> 12) & 3 == 3:
            return None
        return self._violation("liveness", cpu, (
            f"user mode {how} with interrupts off (the IF the kernel sees is 0): no "
            "interrupt can reach this CPU"))

    def _user_step(self, cpu: Any) -> Violation | None:
        """A user instruction retired: interrupts must be on, and none kept waiting."""
        view = self.view
        found = self._interrupts_off_in_user(cpu, "runs")
        if found:
            return found
        index = cpu.index
        if view.pending(cpu):
            self._waited[index] += 1
            if self._waited[index] > PENDING_BOUND:
                return self._violation("liveness", cpu, (
                    f"{self._waited[index]} user instruction(s) retired while an interrupt "
                    f"was pending (the bound is {PENDING_BOUND})"))
        else:
            self._waited[index] = 0
        return None

    def _exception_entry(self, cpu: Any, error_code: bool) -> None:
        """A processor exception was just delivered: one that struck kernel code while
        the user frame's pops had begun (a faulting return) abandons that return."""
        view = self.view
        esp = cpu.r[ESP]
        words = 4 if error_code else 3  # [error code] EIP CS EFLAGS
        cs = view.read32((esp + 4 * (words - 2)) & M32)
        if cs & 3 == 3:
            return
        interrupted = (esp + 4 * words) & M32
        thread, base = view.frame_base(interrupted)
        if self._built.get(thread) and interrupted > base:
            self._faulted[thread] = interrupted

    def _interrupt_entry(self, cpu: Any) -> Violation | None:
        view = self.view
        esp = cpu.r[ESP]
        vector = (~view.read32(esp)) & M32
        if vector > 0xFF:
            return None
        self._in_handler[(cpu.index, esp)] = vector
        held = [view.lock_addresses[lock] for lock, holder in self.holder.items()
                if holder == cpu.index]
        if held:
            return self._violation("spin-irq", cpu, (
                f"vector {vector:#x} taken while this CPU holds {', '.join(held)} (taken "
                "with spin_lock_irqsave: a handler that takes it would spin forever)"))
        if view.interrupts_enabled(cpu):
            return self._violation("nesting", cpu, (
                f"the handler of vector {vector:#x} was entered with interrupts on: "
                "nothing keeps a second interrupt out of its entry"))
        eip, cs = view.read32(esp + 4), view.read32(esp + 8)
        if cs & 3 == 3:
            return None
        interrupted = (esp + 16) & M32  # the kernel's ESP before the processor's frame
        thread, base = view.frame_base(interrupted)
        if thread in self._faulted:
            return None  # under the fault's handling: not the frame's return
        if self._rebuilding.get(thread) and interrupted > base:
            return None  # the fixup rebuilding the abandoned frame was interrupted
        if self._built.get(thread) and interrupted > base:
            self.nesting[cpu.index] += 1
            return self._violation("nesting", cpu, (
                f"vector {vector:#x} taken at {view.name(eip)} with the user frame's pops "
                f"begun (ESP {interrupted - base} bytes above its base): a frame under a "
                f"half-popped one (level {self.nesting[cpu.index] + 1})"))
        return None

    def _locks(self, cpu: Any, eip: int) -> Violation | None:
        view = self.view
        register = view.try_sites.get(eip)
        if register is not None:
            lock = cpu.r[register]
            if lock not in view.lock_addresses:
                return None
            other = self.holder.get(lock)
            if view.memory.read8(lock - 0xC0000000) == 0:
                if other is not None and other != cpu.index:
                    return self._violation("mutual-exclusion", cpu, (
                        f"{view.lock_addresses[lock]} acquired while cpu{other} holds it"))
                self.holder[lock] = cpu.index
            elif other == cpu.index:  # the try failed on a lock this CPU holds itself
                return self._violation("mutual-exclusion", cpu, (
                    f"cpu{cpu.index} tries {view.lock_addresses[lock]}, which it holds "
                    "itself: a deadlock"))
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
        view = self.view
        self._returned[cpu.index] = None  # no user instruction saw that return
        thread = view.thread_info(cpu.index)
        self._built[thread] = False  # its user frame is being built
        for state in (self._faulted, self._rebuilding, self._held):
            state.pop(thread, None)
        state = self._user[cpu.index]
        if state is None:
            return
        regs, eip, flags, ss_base, bits = state
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

    def _stack_words(self, cpu: Any, ss_base: int, esp: int, bits: int,
                     count: int = STACK_WORDS) -> tuple[int, ...] | None:
        """The words at the top of a user stack, read without side effects (None
        where one is unmapped or misaligned)."""
        words = []
        for i in range(count):
            offset = (esp + 4 * i) & (M32 if bits == 32 else 0xFFFF)
            physical = peek_linear(cpu, (ss_base + offset) & M32)
            if physical is None or physical & 3:
                return None
            words.append(cpu.mem.read32(physical))
        return tuple(words)

    def _return_to_user(self, cpu: Any) -> Violation | None:
        view = self.view
        index = cpu.index
        self._built.pop(view.thread_info(index), None)
        # kept once a user instruction runs on it (or the run ends on it): a return
        # that an event interrupts before any user instruction is one user code
        # cannot see (natively the same event may be taken just before the return)
        self._returned[index] = (
            cpu.eip, tuple(cpu.r), cpu.eflags & OBSERVED_FLAGS,
            self._stack_words(cpu, cpu.seg_base[2], cpu.r[ESP], cpu.stack_bits,
                              OBSERVED_STACK_WORDS))
        failed = self._kernel_failed(cpu)
        if failed:
            return failed
        found = self._interrupts_off_in_user(cpu, "resumes")
        if found:
            return found
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
