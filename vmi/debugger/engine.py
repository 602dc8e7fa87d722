"""The step debugger as a pure command engine: ``Engine(machine).execute(line) -> str``.

The engine reads a command line, acts on the machine and returns the text a
person should see. It does no terminal I/O, so the same engine serves the
``vmi debug`` REPL (``vmi.debugger.repl``), gdb's ``monitor`` command through
the remote stub (``vmi.debugger.gdbstub``), notebooks and tests.

Commands follow gdb's names and abbreviations (``stepi``/``si``,
``x/4wx $esp``, ``break *0x1000``, ``reverse-stepi``; ``backtrace``, ``finish``,
``reverse-finish`` and ``reverse-nexti`` live in ``vmi.debugger.frames``, read
and access watchpoints see memory through ``vmi.debugger.watch``) with a few
for what gdb cannot see: ``inject`` raises an external interrupt, ``stack`` names a Linux
``pt_regs`` frame, ``info idt`` decodes the gates, ``cpu N`` picks the CPU
whose view is shown. ``help`` lists them all; ``docs/debugger.md`` shows a
session.

Time. A *step* is one ``Machine.step()``: one instruction boundary on one
CPU, chosen by the machine's interleaving; delivering an interrupt is a step
of its own, so a breakpoint on a handler's first instruction always fires.
``stepi`` runs steps until the selected CPU has taken one (the others run as
the interleaving says in between), ``continue`` until a breakpoint,
watchpoint or catchpoint, or a step budget, so a command never hangs. Any run
stops at the next step once ``request_stop`` was called (the ``vmi debug``
shell's ^C handler) or ``poll`` says so (called every ``POLL_EVERY`` steps: the
gdb stub's look at its socket for gdb's interrupt byte).

Reverse execution (``reverse-stepi``, ``reverse-continue``, ``goto``) restores
a periodic snapshot and re-executes (``vmi.debugger.history``); the state it
reaches equals, snapshot for snapshot, the state the machine had. Looking is
free of side effects: memory is read through ``memview``, never through the
processor's own page walk, which would set accessed bits and load CR2.

Hooks. ``annotate(machine, cpu) -> list[str]``, when given, adds lines to
every stop report and to ``info vcpu``. ``monitor``, the VMI monitor the
machine runs under (``vmi.hypervisor``), puts the virtual IF, the pending
virtual vectors and a window marker on the state line, says after each step
what the monitor's policy did with an interrupt, and adds ``info monitor``
(``vmi.debugger.monitorview``). A platform that keeps state outside guest
memory provides ``snapshot()`` and ``restore()`` so reverse execution can
carry it (the monitor does: its statistics). Exceptions the platform delivers
are seen through its ``trace`` attribute (``NativePlatform`` has one), for
``catch exception``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from attrs import define, evolve, frozen

from vmi.cpu.operands import GPR8, GPR16, GPR32, SEGMENTS, Relative
from vmi.debugger import views
from vmi.debugger.expr import ExprError, evaluate
from vmi.debugger.frames import FrameCommands, FrameError
from vmi.debugger.history import DEFAULT_BUDGET, DEFAULT_INTERVAL, Edit, History
from vmi.debugger.memview import (
    Unmapped,
    code_linear,
    disassemble_at,
    read_linear,
    read_prefix,
    write_plan,
)
from vmi.debugger.monitorview import Before, MonitorView, Window
from vmi.debugger.watch import AccessWatch

M32 = 0xFFFFFFFF
#: Steps ``continue`` takes at most unless told otherwise (``set step-budget N``).
DEFAULT_STEP_BUDGET = 200_000
#: How often (in steps) a long run calls ``poll`` (the gdb stub's non-blocking look at
#: its socket for a ^C byte); the ^C flag of ``vmi debug`` is a plain attribute, read
#: at every step because it costs less than a step's bookkeeping.
POLL_EVERY = 256
#: The largest count a stepping command takes (``stepi N``, ``reverse-stepi N``...).
MAX_COUNT = 1_000_000_000
#: The most monitor notes (window policy outcomes) a stop report lists in full.
MAX_NOTES = 8
#: The most units ``x`` and ``disassemble`` show at once.
MAX_UNITS = 4096
#: Register names an expression or ``set $reg`` may use.
REGISTER_NAMES = (*GPR32, *GPR16, *GPR8, *SEGMENTS, "eip", "eflags", "cr0", "cr2", "cr3",
                  "cr4")
_ALIASES = {"pc": "eip", "sp": "esp", "fp": "ebp", "ps": "eflags"}


class CommandError(Exception):
    """A command that cannot be carried out; the message is shown as it is."""


@frozen
class StepRecord:
    """One machine step: it began at global step ``step`` on CPU ``cpu``; ``kind`` and
    ``value`` are what ``Machine.step()`` returned."""

    step: int
    cpu: int
    kind: str
    value: int


@frozen
class Hit:
    """A breakpoint, watchpoint or catchpoint that fired: its number and a report line."""

    kind: str  # "breakpoint", "watchpoint" or "catchpoint"
    number: int
    text: str
    address: int | None = None


@frozen
class Stop:
    """Why and where a command stopped the machine.

    ``reason`` is one of ``step`` (the requested step(s) were taken), ``hit``
    (see ``hits``), ``until`` (``nexti``/``until`` reached its place),
    ``budget`` (the step budget ran out), ``halted`` (every CPU halted with
    nothing to wake it), ``machine-stopped`` (the next step cannot be taken:
    ``message`` says why; the machine is left before it), ``history-begin``
    (reverse execution reached the start of history), ``interrupted`` (^C or
    ``request_stop``) and ``moved`` (``goto``). ``cpu`` is the CPU the stop
    concerns, selected afterwards; ``last`` the last step taken, if any.
    """

    reason: str
    cpu: int
    hits: tuple[Hit, ...] = ()
    last: StepRecord | None = None
    message: str = ""
    steps: int = 0


@define
class Point:
    """A breakpoint, watchpoint or catchpoint (one numbering for all three, as gdb).

    Breakpoints and watchpoints hold linear addresses. ``owner`` is ``user`` or
    ``gdb`` (inserted by a remote gdb through ``Z`` packets). ``value`` is a
    watchpoint's last seen bytes (None while unmapped).
    """

    number: int
    kind: str
    address: int | None = None
    length: int = 1
    temporary: bool = False
    enabled: bool = True
    hits: int = 0
    catch: str = ""
    vector: int | None = None
    owner: str = "user"
    value: bytes | None = None
    #: What a watchpoint watches: ``write`` (a change of value), ``read`` or ``access``.
    access: str = "write"


@define
class Display:
    """An expression shown at every stop: ``fmt`` is an ``x`` format (``i``, ``4wx``)
    or a ``print`` format (``x``, ``d``, empty)."""

    number: int
    fmt: str
    expression: str
    examine: bool


@frozen
class Command:
    """One engine command: its name, aliases, usage line and description (whose first
    sentence is the summary ``help`` lists)."""

    name: str
    aliases: tuple[str, ...]
    usage: str
    summary: str

    @property
    def short(self) -> str:
        """The line ``help`` lists."""
        return _SHORT.get(self.name, self.summary.split(". ")[0])


_SHORT = {
    "stepi": "step the selected CPU by N steps",
    "nexti": "step, running a call until it returns",
    "continue": "run until a breakpoint, watchpoint or catchpoint",
    "until": "run until the selected CPU reaches ADDR",
    "reverse-stepi": "go back before the selected CPU's last step",
    "reverse-continue": "go back to the last breakpoint hit",
    "finish": "run until the selected frame's function returns",
    "reverse-finish": "go back to the call of the selected frame's function",
    "reverse-nexti": "go back one step, over a call",
    "goto": "go to a global step, backwards or forwards",
    "when": "show the global step and the history",
    "break": "stop before the instruction at ADDR",
    "tbreak": "a breakpoint that fires once",
    "delete": "delete breakpoints (all, or N...)",
    "disable": "disable breakpoints",
    "enable": "enable breakpoints",
    "watch": "stop after a write changes memory",
    "rwatch": "stop after a step reads memory",
    "awatch": "stop after a step reads or writes memory",
    "catch": "stop on an interrupt, an exception or iret",
    "info": "registers, segments, idt, gdt, tss, msr, vcpu, monitor, breakpoints",
    "x": "examine memory (x/4wx $esp, x/3i $pc)",
    "disassemble": "disassemble around EIP or at ADDR",
    "display": "show an expression at every stop",
    "undisplay": "stop showing displays",
    "print": "show the value of an expression",
    "set": "change a register, memory or a setting",
    "stack": "the words at ESP, frames named",
    "backtrace": "the frames on the stack, innermost first",
    "frame": "select a frame and show it",
    "up": "select the frame N levels out",
    "down": "select the frame N levels in",
    "cpu": "select the CPU whose view is shown",
    "inject": "raise an external interrupt, now or at a step",
    "record": "write a trace of every step to a file",
    "help": "list the commands, or describe one",
    "quit": "leave the debugger",
}

COMMANDS = (
    Command("stepi", ("si", "s"), "stepi [N]",
            "Run until the selected CPU has taken N steps (default 1); the other CPUs run "
            "as the interleaving says in between. An interrupt delivery is a step."),
    Command("nexti", ("ni", "n"), "nexti [N]",
            "Like stepi, but a call is run until it returns to the next instruction."),
    Command("continue", ("c", "cont"), "continue [N]",
            "Run until a breakpoint, watchpoint or catchpoint fires, every CPU is halted, "
            "or N steps (default: the step budget) have been taken."),
    Command("until", ("u", "advance"), "until ADDR",
            "Run until the selected CPU reaches ADDR (or something else stops it)."),
    Command("reverse-stepi", ("rsi",), "reverse-stepi [N]",
            "Go back to just before the selected CPU's last step (N times)."),
    Command("reverse-continue", ("rc",), "reverse-continue",
            "Go back to the last place a breakpoint, watchpoint or catchpoint fired, or to "
            "the start of history."),
    Command("finish", (), "finish",
            "Run until the selected frame's function returns: the selected CPU's first "
            "ret or iret after which ESP is above the frame's."),
    Command("reverse-finish", (), "reverse-finish",
            "Go back to just before the call that entered the selected frame's function."),
    Command("reverse-nexti", ("rni",), "reverse-nexti [N]",
            "Like reverse-stepi, but undoing a callee's ret goes back to before its call."),
    Command("goto", (), "goto STEP", "Go to global step STEP, backwards or forwards "
            "(forwards without stopping at breakpoints)."),
    Command("when", (), "when", "Show the global step counter and the recorded history."),
    Command("break", ("b", "br"), "break SYMBOL | break *ADDR",
            "Stop when any CPU is about to execute the instruction at a linear address."),
    Command("tbreak", ("tb",), "tbreak SYMBOL | tbreak *ADDR",
            "A breakpoint deleted when it first fires."),
    Command("delete", ("d",), "delete [N...]",
            "Delete breakpoints, watchpoints and catchpoints (all when no number is given)."),
    Command("disable", (), "disable [N...]", "Disable breakpoints (all when none given)."),
    Command("enable", (), "enable [N...]", "Enable breakpoints (all when none given)."),
    Command("watch", (), "watch ADDR [LEN]",
            "Stop after a step changes the LEN bytes (default 4) at linear ADDR."),
    Command("rwatch", (), "rwatch ADDR [LEN]",
            "Stop after a step's instruction reads any of the LEN bytes (default 4) at "
            "linear ADDR."),
    Command("awatch", (), "awatch ADDR [LEN]",
            "Stop after a step's instruction reads or writes any of the LEN bytes "
            "(default 4) at linear ADDR."),
    Command("catch", (), "catch interrupt [VEC] | catch exception [VEC] | catch iret",
            "Stop after an external interrupt or an exception is delivered, or when a CPU "
            "is about to execute iret."),
    Command("info", ("i", "inf"),
            "info registers|segments|idt|gdt|tss|msr|vcpu|monitor|breakpoints|display|symbol",
            "Show processor state: registers [REG...], segment caches, descriptor "
            "tables, the TSS, MSRs, all CPUs, the VMI monitor's counts and windows, "
            "breakpoints, displays, or the symbol at ADDR."),
    Command("x", (), "x/NFU ADDR",
            "Examine memory at a linear address: N units, format F (x d u o t c a s i), "
            "unit U (b h w g)."),
    Command("disassemble", ("disas",), "disassemble [ADDR] [N]",
            "Disassemble N instructions (default: the function around EIP, or 10)."),
    Command("display", (), "display[/FMT] EXPR",
            "Show EXPR at every stop (display/i $pc shows the next instruction)."),
    Command("undisplay", (), "undisplay [N...]", "Stop showing displays (all when none)."),
    Command("print", ("p",), "print[/FMT] EXPR", "Show the value of an expression."),
    Command("set", (), "set $REG = EXPR | set {int|short|char} ADDR = EXPR | "
            "set step-budget N",
            "Change a register or memory (a change rewrites the future: history after "
            "this step is forgotten), or a setting."),
    Command("stack", (), "stack [N]",
            "The words at ESP; a Linux 2.6.16 pt_regs frame or an interrupt frame is "
            "named field by field."),
    Command("backtrace", ("bt", "where"), "backtrace [N]",
            "The frames on the selected CPU's stack: return addresses past a call, EBP "
            "frames and interrupt (pt_regs) frames, each named by symbol."),
    Command("frame", ("f",), "frame [N]", "Select frame N (default: show the selected one)."),
    Command("up", (), "up [N]", "Select the frame N levels out (towards the caller)."),
    Command("down", ("do",), "down [N]", "Select the frame N levels in."),
    Command("cpu", ("thread",), "cpu [N]", "Select the CPU whose view is shown."),
    Command("inject", (), "inject VECTOR [at STEP] [cpu N]",
            "Raise an external interrupt on the selected CPU (or cpu N) now, or when the "
            "machine reaches global step STEP. It goes through the interrupt controller: "
            "under the VMI monitor the monitor takes it and its window policy decides, "
            "and the next stop says what it did."),
    Command("record", (), "record FILE | record stop",
            "Write a line per step from now on: step, cpu, kind, eip, instruction."),
    Command("help", ("h",), "help [COMMAND]", "List the commands, or describe one."),
    Command("quit", ("q", "exit"), "quit", "Leave the debugger."),
)

INFO_TOPICS = {
    "registers": ("r", "reg", "registers", "all-registers"),
    "segments": ("seg", "segments", "sreg"),
    "idt": ("idt",),
    "gdt": ("gdt",),
    "tss": ("tss",),
    "msr": ("msr", "msrs"),
    "vcpu": ("vcpu", "vcpus", "cpus", "threads"),
    "monitor": ("monitor", "vmi", "hypervisor"),
    "breakpoints": ("b", "break", "breakpoints", "watchpoints"),
    "display": ("display",),
    "symbol": ("symbol",),
}

_UNIT_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
_PER_LINE = {1: 8, 2: 8, 4: 4, 8: 2}
_TYPE_SIZES = {"char": 1, "unsigned char": 1, "short": 2, "unsigned short": 2, "int": 4,
               "unsigned int": 4, "long": 4, "unsigned long": 4, "unsigned": 4}


class _Interrupted(Exception):
    """A replay was interrupted (^C, or the stub's poll)."""


class _StepFailed(Exception):
    """The machine could not take step ``step`` (``reason`` says why)."""

    def __init__(self, step: int, cpu: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.cpu = cpu
        self.reason = reason


class Engine(FrameCommands):
    """A debugger over one ``vmi.machine.Machine`` (see the module docstring).

    ``symbols`` maps names to linear addresses (``Program.symbols``).
    ``labels``, when given, are the names used for ``symbol+offset`` (default:
    ``symbols``; the kernel's constants are symbols but not places).
    ``annotate(machine, cpu)`` returns extra lines about a CPU's virtual state.
    ``monitor`` is the VMI monitor the machine runs under, if any; ``windows`` are
    code windows it does not know that the state line should mark (a naive
    kernel's inline IRET, ``monitorview.naive_windows``).
    ``step_budget`` bounds ``continue``; ``command_limit``, when set, bounds the
    steps of any one command whatever it asks (tests and notebooks use it).
    """

    def __init__(self, machine: Any, symbols: dict[str, int] | None = None, *,
                 annotate: Callable[[Any, Any], list[str]] | None = None,
                 labels: dict[str, int] | None = None, monitor: Any = None,
                 windows: list[Window] | None = None,
                 step_budget: int = DEFAULT_STEP_BUDGET,
                 snapshot_interval: int = DEFAULT_INTERVAL,
                 snapshot_budget: int = DEFAULT_BUDGET,
                 command_limit: int | None = None) -> None:
        self.machine = machine
        self.symbols: dict[str, int] = {}
        self._sorted: list[tuple[int, str]] = []
        self.set_symbols(symbols or {}, labels)
        self.annotate = annotate
        self.monitor = monitor
        self.monitor_view = None if monitor is None else MonitorView(
            monitor, machine, windows=windows, symbolize=self.symbolize)
        #: What the monitor did during the current command: (step, text, notable).
        self._notes: list[tuple[int, str, bool]] = []
        self._notes_dropped = 0
        self._counters: Any = None
        self._counters_key: tuple[int, int] | None = None
        #: The booted ``vmi.system.System`` when the loader made one (else None).
        self.system: Any = None
        #: The assembled ``--program`` when the loader made one (else None).
        self.program: Any = None
        self.step_budget = step_budget
        self.command_limit = command_limit
        self.selected = 0
        self.points: dict[int, Point] = {}
        self._next_point = 1
        self._break_at: dict[int, list[Point]] = {}
        self.displays: list[Display] = []
        self._next_display = 1
        self.history = History(machine, interval=snapshot_interval, budget=snapshot_budget)
        self.finished = False
        self._stop_requested = False
        #: Called every ``POLL_EVERY`` steps of any run; True stops it (the gdb stub
        #: sets it to its connection's check for a ^C byte while it serves a client).
        self.poll: Callable[[], bool] | None = None
        self._ticks = 0
        self._events: list[tuple[int, str]] = []
        self._record: TextIO | None = None
        self._record_name = ""
        self._values = 0
        self._x_format = ("x", 4)
        self._x_next: int | None = None
        self.last_stop: Stop | None = None
        #: Sees data reads and writes while read or access watchpoints exist.
        self._access = AccessWatch(machine)
        self._install_trace()

    # == public API ========================================================================
    def execute(self, line: str) -> str:
        """Run one command line and return what it prints (never raises)."""
        self._stop_requested = False  # a ^C that came after the last command ended
        try:
            return self._execute(line)
        except (CommandError, ExprError, Unmapped, FrameError) as error:
            return str(error)
        except RecursionError:
            return "expression too deeply nested"
        except Exception as error:  # a bug must not end a debugging session
            return f"internal error ({type(error).__name__}): {error}"

    def where(self) -> str:
        """The current stop report: the selected CPU's place and state."""
        return "\n".join(self._location_lines(self.selected) + self._display_lines())

    def request_stop(self) -> None:
        """Ask a running command to stop at the next step (^C; thread-safe enough: a flag)."""
        self._stop_requested = True

    def close(self) -> None:
        """Finish a trace being recorded."""
        self._stop_recording()

    def set_symbols(self, symbols: dict[str, int], labels: dict[str, int] | None = None) -> None:
        """Use ``symbols`` (name -> value) for expressions and ``labels`` (name ->
        linear address; default: ``symbols``) for ``symbol+offset``."""
        self.symbols = dict(symbols)
        first: dict[int, str] = {}
        for name, address in (self.symbols if labels is None else labels).items():
            if not name.startswith(".") and address not in first:
                first[address & M32] = name
        self._sorted = sorted(first.items())

    def symbolize(self, address: int) -> str:
        """``name`` or ``name+offset`` (decimal, as gdb) for the symbol at or below
        ``address`` within 64 KiB; empty when there is none."""
        index = bisect.bisect_right(self._sorted, (address, "\uffff")) - 1
        if index < 0:
            return ""
        base, name = self._sorted[index]
        offset = address - base
        if offset >= 0x10000:
            return ""
        return name if offset == 0 else f"{name}+{offset}"

    # -- execution (used by the commands and by the gdb stub) -------------------------------
    def stepi(self, count: int = 1, cpu: int | None = None) -> Stop:
        """Run until CPU ``cpu`` (default: the selected one) has taken ``count`` steps."""
        index = self._cpu_index(cpu)
        self._check_runs(index)
        stop = Stop("step", index)
        taken = 0
        for _ in range(count):
            stop = self._run(self._limit(self.step_budget), target_cpu=index)
            taken += stop.steps
            if stop.reason != "step":
                break
        return self._stopped(evolve(stop, steps=taken))

    def nexti(self, count: int = 1) -> Stop:
        """``stepi``, except that a call runs until it returns."""
        index = self.selected
        self._check_runs(index)
        stop = Stop("step", index)
        taken = 0
        for _ in range(count):
            cpu = self.machine.cpus[index]
            insn = self._instruction_at(cpu)
            if insn is None or not insn.mnemonic.startswith("call") or cpu.halted:
                stop = self._run(self._limit(self.step_budget), target_cpu=index)
            else:
                stop = self._run(self._limit(self.step_budget),
                                 until=_returned(cpu, index, insn.next_address, cpu.r[4]))
                if stop.reason == "until":
                    stop = Stop("step", index, last=stop.last, steps=stop.steps)
            taken += stop.steps
            if stop.reason != "step":
                break
        return self._stopped(evolve(stop, steps=taken))

    def cont(self, limit: int | None = None, *, poll: Callable[[], bool] | None = None) -> Stop:
        """Run until something stops the machine, at most ``limit`` steps (default: the
        step budget). ``poll()`` is called every few hundred steps; True stops."""
        steps = self._limit(self.step_budget if limit is None else limit)
        return self._stopped(self._run(steps, poll=poll))

    def until(self, address: int) -> Stop:
        """Run until the selected CPU is about to execute linear ``address``."""
        index = self.selected
        cpu = self.machine.cpus[index]
        stop = self._run(self._limit(self.step_budget), until=lambda rec: (
            rec.cpu == index and code_linear(cpu) == address and not cpu.halted))
        return self._stopped(stop)

    def reverse_stepi(self, count: int = 1, cpu: int | None = None) -> Stop:
        """Go back to the state just before CPU ``cpu``'s last step, ``count`` times."""
        index = self._cpu_index(cpu)
        target = self.machine.steps
        for _ in range(count):
            previous = self.history.last_step_of(index, target)
            if previous is None:
                self._goto(self.history.origin)
                return self._stopped(Stop("history-begin", index))
            target = previous
        if not self._goto_interruptibly(target):
            return self._stopped(Stop("interrupted", index))
        return self._stopped(Stop("step", index))

    def reverse_continue(self) -> Stop:
        """Go back to the latest earlier step at which a breakpoint, watchpoint or
        catchpoint fired going forwards; to the start of history if none did."""
        history = self.history
        last = self.machine.steps - 1
        if any(p.enabled for p in self.points.values()):
            while last > history.origin:
                start = history.nearest(last - 1)
                try:
                    found = self._scan(start, last)
                except _Interrupted:
                    return self._stopped(Stop("interrupted", self.selected))
                if found is not None:
                    step, record, hits = found
                    self._goto(step)
                    self._count_hits(hits)
                    return self._stopped(Stop("hit", record.cpu, hits, record))
                last = start
        self._goto(history.origin)
        return self._stopped(Stop("history-begin", self.selected))

    def goto(self, step: int, *, limit: int | None = None) -> Stop:
        """Go to global step ``step`` (forwards: without stopping at breakpoints), at
        most ``limit`` steps ahead of the furthest step reached so far."""
        if step < self.history.origin:
            raise CommandError(f"step {step} is before the start of history "
                               f"(step {self.history.origin})")
        ahead = step - max(self.machine.steps, self.history.end)
        bound = limit if self.command_limit is None else min(limit or self.command_limit,
                                                             self.command_limit)
        if bound is not None and ahead > bound:
            raise CommandError(f"step {step} is {ahead} steps past the furthest step reached; "
                               f"more than the {bound} a command may run (set step-budget N)")
        try:
            if not self._goto_interruptibly(step):
                return self._stopped(Stop("interrupted", self.selected))
        except _StepFailed as failure:
            self._recover(failure.step)
            return self._stopped(Stop("machine-stopped", failure.cpu, message=failure.reason))
        return self._stopped(Stop("moved", self.selected))

    def advance(self, step: int, *, note: Callable[[StepRecord], None] | None = None) -> Stop:
        """Run forwards to global step ``step`` without stopping at points, calling
        ``note`` with the record of every step taken (the replay loader lists the
        interrupts delivered on the way)."""
        machine = self.machine
        while machine.steps < step:
            try:
                record = self._step(replay=machine.steps < self.history.end)
            except _StepFailed as failure:
                self._recover(failure.step)
                return self._stopped(Stop("machine-stopped", failure.cpu,
                                          message=failure.reason))
            if note is not None:
                note(record)
        self._refresh_watches()
        return self._stopped(Stop("moved", self.selected))

    # -- breakpoints (used by the commands and by the gdb stub) -----------------------------
    def add_breakpoint(self, address: int, *, temporary: bool = False,
                       owner: str = "user") -> Point:
        point = self._new_point("breakpoint", address=address & M32, temporary=temporary,
                                owner=owner)
        self._index_breakpoints()
        return point

    def add_watchpoint(self, address: int, length: int = 4, *, owner: str = "user",
                       access: str = "write") -> Point:
        """A watchpoint on ``length`` bytes at linear ``address``: ``access`` is
        ``write`` (stop when a step changes them), ``read`` (when an instruction
        reads any of them) or ``access`` (reads or writes)."""
        command = {"write": "watch", "read": "rwatch", "access": "awatch"}[access]
        if not 1 <= length <= 64:
            raise CommandError(f"{command}: length: {_signed(length)} is out of range (1..64)")
        point = self._new_point("watchpoint", address=address & M32, length=length,
                                owner=owner, access=access)
        point.value = self._peek(self.machine.cpus[self.selected], address & M32, length)
        self._watch_accesses()
        return point

    def _watch_accesses(self) -> None:
        """Wrap the CPUs' accessors while an enabled read or access watchpoint exists
        (``vmi.debugger.watch``), and unwrap them when none is left."""
        ranges = []
        writes = False
        for point in self.points.values():
            if point.kind == "watchpoint" and point.access != "write" and point.enabled:
                assert point.address is not None
                ranges.append((point.address, point.address + point.length))
                writes = writes or point.access == "access"
        if ranges or self._access.active:
            self._access.watch(ranges, writes)

    def add_catchpoint(self, catch: str, vector: int | None = None) -> Point:
        return self._new_point("catchpoint", catch=catch, vector=vector)

    def delete_points(self, numbers: list[int] | None = None) -> None:
        for number in list(self.points) if numbers is None else numbers:
            if number not in self.points:
                raise CommandError(f"No breakpoint number {number}.")
            del self.points[number]
        self._index_breakpoints()

    def remove_owned(self, kind: str, address: int, owner: str, access: str = "write") -> bool:
        """Delete the ``owner``'s point of ``kind`` at ``address`` (a watchpoint: of
        ``access``); False if none."""
        for number, point in list(self.points.items()):
            if point.kind == kind and point.address == address & M32 and \
                    point.owner == owner and (kind != "watchpoint" or point.access == access):
                del self.points[number]
                self._index_breakpoints()
                return True
        return False

    # -- state changes (edits on the timeline) ---------------------------------------------
    def set_register(self, cpu: int, name: str, value: int) -> None:
        """Write a register of CPU ``cpu`` now (an edit: the future is forgotten)."""
        name = _ALIASES.get(name.lower(), name.lower())
        if name not in REGISTER_NAMES:
            raise CommandError(f"no register named ${name}")
        value &= M32

        def apply(machine: Any) -> None:
            setattr(machine.cpus[cpu].regs, name, value)

        self._edit(f"cpu{cpu} ${name} = {value:#x}", apply)

    def write_memory(self, linear: int, data: bytes, cpu: int | None = None) -> None:
        """Write ``data`` at a linear address now (an edit); ``Unmapped`` if any page
        is missing, in which case nothing is written."""
        plan = write_plan(self.machine.cpus[self._cpu_index(cpu)], linear, len(data))
        chunks = []
        offset = 0
        for physical, size in plan:
            chunks.append((physical, bytes(data[offset:offset + size])))
            offset += size

        def apply(machine: Any) -> None:
            for physical, chunk in chunks:
                machine.memory.write_bytes(physical, chunk)

        self._edit(f"{len(data)} bytes at {linear:#x}", apply)

    def read_memory(self, linear: int, length: int, cpu: int | None = None) -> bytes:
        """``length`` bytes at a linear address as CPU ``cpu`` sees them (``Unmapped``)."""
        return read_linear(self.machine.cpus[self._cpu_index(cpu)], linear, length)

    def inject(self, vector: int, cpu: int | None = None, at: int | None = None) -> None:
        """Raise external interrupt ``vector`` on CPU ``cpu`` now, or at global step ``at``."""
        index = self._cpu_index(cpu)
        if not 0 <= vector <= 255:
            raise CommandError(f"vector {vector:#x} is not 0..255")
        if at is not None and at < self.machine.steps:
            raise CommandError(f"step {at} is in the past (now at step {self.machine.steps}); "
                               "go back first (goto, reverse-stepi)")

        def apply(machine: Any) -> None:
            machine.pic.raise_vector(index, vector)

        self._edit(f"inject {vector:#x} on cpu{index}", apply, at=at)

    # == the stepping core ===================================================================
    def _limit(self, steps: int) -> int:
        limit = self.command_limit
        return steps if limit is None else min(steps, limit)

    def _cpu_index(self, cpu: int | None) -> int:
        index = self.selected if cpu is None else cpu
        if not 0 <= index < len(self.machine.cpus):
            raise CommandError(f"no cpu{index}: the machine has {len(self.machine.cpus)} "
                               f"CPU{'s' if len(self.machine.cpus) > 1 else ''}")
        return index

    def _check_runs(self, index: int) -> None:
        if index not in self.machine.interleaving:
            raise CommandError(f"cpu{index} never runs: the interleaving is "
                               f"{self.machine.interleaving}")

    def _step(self, *, replay: bool = False) -> StepRecord:
        """Take one machine step and arrive: log it, snapshot when due, apply edits."""
        machine = self.machine
        step = machine.steps
        text, eip = "", 0
        if self._record is not None and not replay:
            eip, text = self._next_text()
        self._events.clear()
        if self._access.ranges:
            self._access.arm()
        view = self.monitor_view
        if view is not None and not replay:
            stats = view.monitor.stats
            if self._counters_key != (id(stats), stats.exit_cycles):
                self._counters = view.counters()
            stepping = machine.cpus[machine.interleaving[machine._turn]]
            pre = (stepping.index, stepping.cpl, (stepping.seg_base[1] + stepping.eip) & M32)
        try:
            cpu, kind, value = machine.step()
        except Exception as error:  # MachineStopped, or a fault of the model itself
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            raise _StepFailed(step, self._upcoming_cpu(), reason) from None
        if kind == "instruction" and any(k == "exception" for _v, k in self._events):
            kind, value = "exception", next(v for v, k in self._events if k == "exception")
        if view is not None and not replay:
            self._monitor_step(view, step, pre, kind, value)
        history = self.history
        history.note_step(step, cpu)
        arrived = machine.steps
        if history.due(arrived):
            history.take(arrived)
        history.apply_edits(arrived)
        record = StepRecord(step, cpu, kind, value)
        if self._record is not None and not replay:
            what = text if kind in ("instruction", "exception") else f"{kind} {value:#x}"
            self._record.write(f"{step}\tcpu{cpu}\t{kind}\t{eip:#010x}\t{what}\n")
        return record

    def _monitor_step(self, view: MonitorView, step: int, pre: tuple[int, int, int],
                      kind: str, value: int) -> None:
        """Note what the monitor did in ``step`` (its counters moved only if it took
        an exit: ``exit_cycles`` is the cheap test)."""
        stats = view.monitor.stats
        key = (id(stats), stats.exit_cycles)
        if key == self._counters_key:
            return
        before, after = self._counters, view.counters()
        self._counters, self._counters_key = after, key
        if after == before:
            return
        lines, notable = view.describe(before, after, Before(*pre), kind, value)
        for text in lines:
            self._note(step, text, notable)

    def _note(self, step: int, text: str, notable: bool) -> None:
        notes = self._notes
        while notes and not notes[-1][2] and notes[-1][0] != step:
            notes.pop()  # ordinary notes are kept for the last step only
        if len(notes) >= 4 * MAX_NOTES:
            del notes[MAX_NOTES:2 * MAX_NOTES]
            self._notes_dropped += MAX_NOTES
        notes.append((step, text, notable))

    def take_notes(self, last: StepRecord | None) -> list[str]:
        """What the monitor did since the last call, as report lines: every notable
        outcome (policy decisions at a window) and the ordinary ones (a delivery, an
        interrupt made pending) of the last step ``last``."""
        notes, dropped = self._notes, self._notes_dropped
        self._notes, self._notes_dropped = [], 0
        kept = [(step, text) for step, text, notable in notes
                if notable or (last is not None and step == last.step)]
        lines = [f"step {step}: monitor: {text}" for step, text in kept]
        if len(lines) > MAX_NOTES:
            skipped = len(lines) - MAX_NOTES + dropped
            lines = lines[:MAX_NOTES // 2] + [f"... {skipped} more monitor notes ..."] + \
                lines[-(MAX_NOTES // 2):]
        elif dropped:
            lines.insert(MAX_NOTES // 2, f"... {dropped} more monitor notes ...")
        return lines

    def _upcoming_cpu(self) -> int:
        """The CPU the machine steps next (the interleaving at its current turn)."""
        machine = self.machine
        order = machine.interleaving
        return int(order[getattr(machine, "_turn", 0) % len(order)])

    def _next_text(self) -> tuple[int, str]:
        """EIP and instruction text of the CPU about to step (for ``record``)."""
        cpu = self.machine.cpus[self._upcoming_cpu()]
        if cpu.halted:
            return cpu.eip, "(halted)"
        try:
            return cpu.eip, disassemble_at(cpu, code_linear(cpu), 1, address=cpu.eip)[0].text
        except Unmapped:
            return cpu.eip, "(unmapped)"

    def _run(self, limit: int, *, target_cpu: int | None = None,
             until: Callable[[StepRecord], bool] | None = None,
             poll: Callable[[], bool] | None = None) -> Stop:
        """Step until a point fires, ``target_cpu`` takes a step, ``until`` holds, the
        machine halts or stops, a stop is requested, or ``limit`` steps were taken."""
        machine = self.machine
        taken = 0
        record: StepRecord | None = None
        checking = bool(self.points)
        polls = [p for p in (poll, self.poll) if p is not None]
        while taken < limit:
            if self._stop_requested or (polls and self._poll_due(polls)):
                self._stop_requested = False
                return Stop("interrupted", self.selected, last=record, steps=taken)
            try:
                record = self._step()
            except _StepFailed as failure:
                self._recover(failure.step)
                return Stop("machine-stopped", failure.cpu, message=failure.reason,
                            last=record, steps=taken)
            taken += 1
            if checking:
                hits = self._check(record)
                if hits:
                    self._count_hits(hits)
                    return Stop("hit", record.cpu, hits, record, steps=taken)
            if target_cpu is not None and record.cpu == target_cpu:
                return Stop("step", target_cpu, last=record, steps=taken)
            if until is not None and until(record):
                return Stop("until", record.cpu, last=record, steps=taken)
            if record.kind == "idle" and record.value == 0 and machine.all_stuck():
                return Stop("halted", self.selected, last=record, steps=taken)
        return Stop("budget", self.selected, last=record, steps=taken)

    def _poll_due(self, polls: list[Callable[[], bool]]) -> bool:
        """Count a step towards the next poll; at every ``POLL_EVERY``-th, ask the
        pollers (the count runs across the ``_run`` calls of one ``stepi N``)."""
        self._ticks += 1
        if self._ticks < POLL_EVERY:
            return False
        self._ticks = 0
        return any(poll() for poll in polls)

    def _interrupted(self) -> bool:
        """True once a stop was requested (^C) or ``poll`` says so; consumes the
        request. For the loops outside ``_run`` (replays of reverse execution)."""
        if not self._stop_requested and self.poll is not None:
            self._stop_requested = self._poll_due([self.poll])
        requested, self._stop_requested = self._stop_requested, False
        return requested

    def _check(self, record: StepRecord) -> tuple[Hit, ...]:
        """The points that fire on arrival after ``record`` (watchpoint values are
        updated; hit counts are not: see ``_count_hits``)."""
        cpu = self.machine.cpus[record.cpu]
        hits: list[Hit] = []
        for point in self.points.values():
            if not point.enabled:
                continue
            if point.kind == "watchpoint":
                assert point.address is not None
                new = self._peek(cpu, point.address, point.length)
                old, point.value = point.value, new
                if point.access != "write":
                    text = self._accessed(point, record.cpu, old, new)
                    if text:
                        hits.append(Hit("watchpoint", point.number, text, point.address))
                elif new != old and new is not None and old is not None:
                    hits.append(Hit("watchpoint", point.number, _watch_text(point, old, new),
                                    point.address))
            elif point.kind == "catchpoint":
                text = self._catch(point, record, cpu)
                if text:
                    hits.append(Hit("catchpoint", point.number, text))
        if not cpu.halted:
            for point in self._break_at.get(code_linear(cpu), ()):
                if point.enabled:
                    where = self.symbolize(code_linear(cpu))
                    hits.append(Hit("breakpoint", point.number,
                                    f"{'Temporary breakpoint' if point.temporary else 'Breakpoint'}"
                                    f" {point.number}, cpu{record.cpu} at "
                                    f"{code_linear(cpu):#x}{f' <{where}>' if where else ''}",
                                    point.address))
        return tuple(hits)

    def _accessed(self, point: Point, cpu: int, old: bytes | None, new: bytes | None) -> str:
        """The report of read or access watchpoint ``point`` if CPU ``cpu``'s step
        touched its bytes (gdb's words), else empty."""
        assert point.address is not None
        start, end = point.address, point.address + point.length
        touched = [a for a in self._access.seen if a.cpu == cpu and a.address < end
                   and a.address + a.size > start and (point.access == "access" or not a.write)]
        if not touched:
            return ""
        kind = "read" if point.access == "read" else "access (read/write)"
        how = "written" if any(a.write for a in touched) else "read"
        head = (f"Hardware {kind} watchpoint {point.number}: {point.address:#x} "
                f"({point.length} bytes), {how} by cpu{cpu}")
        if new is None:
            return head + "\n\nValue = (unmapped)"
        if point.access == "access" and old is not None and old != new:
            return head + f"\n\nOld value = {_show(old)}\nNew value = {_show(new)}"
        return head + f"\n\nValue = {_show(new)}"

    def _catch(self, point: Point, record: StepRecord, cpu: Any) -> str:
        vector = point.vector
        if point.catch in ("interrupt", "exception") and record.kind == point.catch and \
                (vector is None or vector == record.value):
            return (f"Catchpoint {point.number} ({point.catch} {record.value:#x} delivered "
                    f"on cpu{record.cpu})")
        if point.catch == "iret" and not cpu.halted:
            head = read_prefix(cpu, code_linear(cpu), 2)
            if head[:1] == b"\xcf" or head == b"\x66\xcf":
                return f"Catchpoint {point.number} (cpu{record.cpu} is about to execute iret)"
        return ""

    def _count_hits(self, hits: tuple[Hit, ...]) -> None:
        for hit in hits:
            point = self.points.get(hit.number)
            if point is None:
                continue
            point.hits += 1
            if point.temporary:
                del self.points[hit.number]
        self._index_breakpoints()

    def _scan(self, start: int, last: int) -> tuple[int, StepRecord, tuple[Hit, ...]] | None:
        """Replay from snapshot ``start`` and return the latest arrival in
        ``start+1 .. last`` at which a point fires (step, record, hits)."""
        self.history.restore(start)
        self._refresh_watches()
        found = None
        while self.machine.steps < last:
            if self._interrupted():
                raise _Interrupted
            record = self._step(replay=True)
            hits = self._check(record)
            if hits:
                found = (self.machine.steps, record, hits)
        return found

    def _goto(self, target: int) -> None:
        """Put the machine at global step ``target`` exactly (restore and replay, or
        run forward without checks). Raises ``_StepFailed`` if a step fails."""
        self._goto_interruptibly(target, interruptible=False)

    def _goto_interruptibly(self, target: int, *, interruptible: bool = True) -> bool:
        """``_goto``, but a ^C (or ``poll``) stops the replay where it is: False then."""
        machine = self.machine
        history = self.history
        if target != machine.steps:
            nearest = history.nearest(target)
            if not nearest <= machine.steps <= target:
                history.restore(nearest)
            while machine.steps < target:
                if interruptible and self._interrupted():
                    self._refresh_watches()
                    return False
                self._step(replay=machine.steps < history.end)
        self._refresh_watches()
        return True

    def _recover(self, step: int) -> None:
        """After a step failed half-way, put the machine back at ``step`` exactly (the
        failed step may have changed registers before it gave up)."""
        self.history.restore(self.history.nearest(step))
        while self.machine.steps < step:
            self._step(replay=True)
        self._refresh_watches()

    def _edit(self, description: str, apply: Callable[[Any], None],
              at: int | None = None) -> None:
        now = self.machine.steps
        step = now if at is None else at
        self.history.add_edit(Edit(step, description, apply))
        if step == now:
            apply(self.machine)
            self._refresh_watches()

    def _refresh_watches(self) -> None:
        for point in self.points.values():
            if point.kind == "watchpoint" and point.address is not None:
                point.value = self._peek(self.machine.cpus[self.selected], point.address,
                                         point.length)

    def _peek(self, cpu: Any, address: int, length: int) -> bytes | None:
        try:
            return read_linear(cpu, address, length)
        except Unmapped:
            return None

    def _new_point(self, kind: str, **fields: Any) -> Point:
        point = Point(self._next_point, kind, **fields)
        self.points[point.number] = point
        self._next_point += 1
        return point

    def _index_breakpoints(self) -> None:
        self._watch_accesses()
        index: dict[int, list[Point]] = {}
        for point in self.points.values():
            if point.kind == "breakpoint" and point.address is not None:
                index.setdefault(point.address, []).append(point)
        self._break_at = index

    def _install_trace(self) -> None:
        """Hear about exceptions the platform delivers, through its ``trace`` hook."""
        platform = self.machine.platform
        if not hasattr(platform, "trace"):
            return
        previous = platform.trace
        events = self._events

        def trace(vector: int, kind: str) -> None:
            events.append((vector, kind))
            if previous is not None:
                previous(vector, kind)

        try:
            platform.trace = trace
        except (AttributeError, TypeError):
            pass

    def _instruction_at(self, cpu: Any) -> Any:
        try:
            lines = disassemble_at(cpu, code_linear(cpu), 1, address=cpu.eip)
        except Unmapped:
            return None
        return lines[0].insn if lines else None

    # == reports ==============================================================================
    def _stopped(self, stop: Stop) -> Stop:
        """Select the CPU a stop concerns (the one that hit a breakpoint, or was
        stepped) and remember the stop."""
        self.selected = stop.cpu
        self.last_stop = stop
        self.frame_level = 0
        return stop

    def report(self, stop: Stop, *, previous: int | None = None) -> str:
        """The text of a stop: why, the last step if it was not an instruction, the
        selected CPU's place and state, and the displays."""
        lines: list[str] = []
        if previous is not None and previous != self.selected:
            lines.append(f"[Switching to cpu{self.selected}]")
        lines += [hit.text for hit in stop.hits]
        if stop.reason == "budget":
            lines.append(f"Stopped after {stop.steps} steps without a stop (the step budget "
                         f"is {self.step_budget}; 'continue N' or 'set step-budget N' runs "
                         "longer).")
        elif stop.reason == "halted":
            lines.append("Every CPU is halted and nothing can wake one.")
        elif stop.reason == "machine-stopped":
            lines.append(f"The machine cannot take its next step: {stop.message}")
            lines.append("(left just before it; reverse-stepi or goto to look back)")
        elif stop.reason == "history-begin":
            lines.append("No more reverse-execution history.")
        elif stop.reason == "interrupted":
            lines.append(f"Interrupted after {stop.steps} steps.")
        last = stop.last
        if last is not None and last.kind in ("interrupt", "exception"):
            lines.append(f"step {last.step}: cpu{last.cpu} took {last.kind} {last.value:#x}")
        lines += self.take_notes(last)
        lines += self._location_lines(self.selected)
        lines += self._display_lines()
        return "\n".join(lines)

    def _location_lines(self, index: int) -> list[str]:
        cpu = self.machine.cpus[index]
        linear = code_linear(cpu)
        if cpu.cr[0] & 1:
            head = f"cpu{index} {cpu.eip:#010x}"
        else:
            head = f"cpu{index} {cpu.sreg[1]:04x}:{cpu.eip:04x}"
        label = self.symbolize(linear)
        try:
            line = disassemble_at(cpu, linear, 1, address=cpu.eip)[0]
            text = f"{line.data.hex(' ')}  {line.text}{self._target_label(line.insn)}"
        except Unmapped:
            text = f"(no page at linear {linear:#x})"
        lines = [f"{head}{' ' + label if label else ''}: {text}"]
        view = self.monitor_view
        virtual = f"{view.fields(cpu)} " if view is not None else ""
        state = (f"  cpl={cpu.cpl} IF={1 if cpu.flags & 0x200 else 0} {virtual}"
                 f"shadow={1 if cpu.shadow else 0} mode={views.mode_name(cpu)}")
        if cpu.halted:
            state += " halted"
        marker = view.marker(cpu) if view is not None else ""
        lines.append(f"{state} step={self.machine.steps}{'  ' + marker if marker else ''}")
        lines += ["  " + text for text in self._annotations(cpu)]
        return lines

    def _annotations(self, cpu: Any) -> list[str]:
        if self.annotate is None:
            return []
        try:
            return [str(item) for item in self.annotate(self.machine, cpu)]
        except Exception as error:
            return [f"(annotate hook failed: {type(error).__name__}: {error})"]

    def _target_label(self, insn: Any) -> str:
        if insn is None:
            return ""
        for operand in insn.operands:
            if isinstance(operand, Relative):
                label = self.symbolize(operand.target)
                return f" <{label}>" if label else ""
        return ""

    def _display_lines(self) -> list[str]:
        lines = []
        for display in self.displays:
            try:
                if display.examine:
                    body = self._examine(display.fmt, display.expression, remember=False)
                    lines.append(f"{display.number}: x/{display.fmt} {display.expression}")
                    lines += body
                else:
                    value = self._value(display.expression)
                    shown = _format_value(value, display.fmt or "d")
                    fmt = f"/{display.fmt} " if display.fmt else ""
                    lines.append(f"{display.number}: {fmt}{display.expression} = {shown}")
            except (CommandError, ExprError, Unmapped) as error:
                lines.append(f"{display.number}: {display.expression}: {error}")
        return lines

    # == command dispatch =======================================================================
    def _execute(self, line: str) -> str:
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)(.*)$", line, re.S)
        if match is None:
            raise CommandError(f'Undefined command: "{line.split()[0]}".  Try "help".')
        word, rest = match.groups()
        command = lookup(word)
        handler = getattr(self, "_do_" + command.name.replace("-", "_"))
        result: str = handler(rest.strip())
        return result

    def _run_command(self, action: Callable[[], Stop]) -> str:
        previous = self.selected
        self.take_notes(None)  # forget what earlier commands (or the gdb stub) left
        stop = action()
        return self.report(stop, previous=previous)

    # -- execution commands -------------------------------------------------------------------
    def _do_stepi(self, args: str) -> str:
        count = self._count_arg(args, "stepi")
        return self._run_command(lambda: self.stepi(count))

    def _do_nexti(self, args: str) -> str:
        count = self._count_arg(args, "nexti")
        return self._run_command(lambda: self.nexti(count))

    def _do_continue(self, args: str) -> str:
        limit = self._count_arg(args, "continue") if args else None
        return self._run_command(lambda: self.cont(limit))

    def _do_until(self, args: str) -> str:
        if not args:
            raise CommandError("until needs an address: until ADDR")
        address = self._address(args.lstrip("*"))
        return self._run_command(lambda: self.until(address))

    def _do_reverse_stepi(self, args: str) -> str:
        count = self._count_arg(args, "reverse-stepi")
        return self._run_command(lambda: self.reverse_stepi(count))

    def _do_reverse_continue(self, args: str) -> str:
        if args:
            raise CommandError("reverse-continue takes no arguments")
        return self._run_command(self.reverse_continue)

    def _do_goto(self, args: str) -> str:
        if not args:
            raise CommandError("goto needs a step number: goto STEP")
        step = self._number(args, "step")
        return self._run_command(lambda: self.goto(step, limit=self.step_budget))

    def _do_when(self, args: str) -> str:
        history = self.history
        lines = [f"step {self.machine.steps}  (history: steps {history.origin}.."
                 f"{max(history.end, self.machine.steps)}, {len(history.snapshots)} snapshots "
                 f"every {history.interval} steps)"]
        for index, cpu in enumerate(self.machine.cpus):
            lines.append(f"  cpu{index}: {cpu.instructions} instructions, {cpu.cycles} cycles")
        edits = history.pending_edits()
        if edits:
            lines.append("edits on the timeline:")
            lines += [f"  step {edit.step}: {edit.description}" for edit in edits]
        return "\n".join(lines)

    def _count_arg(self, args: str, name: str) -> int:
        """A step count: 1..MAX_COUNT (^C stops a long one)."""
        if not args:
            return 1
        return self._ranged(args, f"{name}: count", 1, MAX_COUNT)

    def _ranged(self, text: str, what: str, low: int, high: int) -> int:
        """The value of ``text``, which must lie in ``low..high``; a value with bit 31
        set is read as the negative number it was most likely written as."""
        value = self._number(text, what)
        if value >> 31 and low >= 0 and high < 1 << 31:
            value -= 1 << 32
        if not low <= value <= high:
            raise CommandError(f"{what}: {value} is out of range ({low}..{high})")
        return value

    # -- breakpoints --------------------------------------------------------------------------
    def _do_break(self, args: str, temporary: bool = False) -> str:
        if args:
            address = self._address(args[1:] if args.startswith("*") else args)
        else:
            address = code_linear(self.machine.cpus[self.selected])
        point = self.add_breakpoint(address, temporary=temporary)
        label = self.symbolize(address)
        kind = "Temporary breakpoint" if temporary else "Breakpoint"
        return f"{kind} {point.number} at {address:#x}{f' <{label}>' if label else ''}"

    def _do_tbreak(self, args: str) -> str:
        return self._do_break(args, temporary=True)

    def _numbers(self, args: str) -> list[int] | None:
        if not args:
            return None
        numbers = []
        for word in args.replace(",", " ").split():
            if word in ("breakpoints", "display"):
                continue
            numbers.append(self._number(word, "breakpoint number"))
        return numbers or None

    def _do_delete(self, args: str) -> str:
        if args.startswith("display"):
            return self._do_undisplay(args[len("display"):].strip())
        self.delete_points(self._numbers(args))
        return ""

    def _do_disable(self, args: str, enabled: bool = False) -> str:
        numbers = self._numbers(args)
        for number in list(self.points) if numbers is None else numbers:
            if number not in self.points:
                raise CommandError(f"No breakpoint number {number}.")
            self.points[number].enabled = enabled
        self._refresh_watches()
        self._watch_accesses()
        return ""

    def _do_enable(self, args: str) -> str:
        return self._do_disable(args, enabled=True)

    def _do_watch(self, args: str, access: str = "write") -> str:
        command = {"write": "watch", "read": "rwatch", "access": "awatch"}[access]
        words = args.split()
        if not words:
            raise CommandError(f"{command} needs an address: {command} ADDR [LEN]")
        length = 4
        expression = args
        if len(words) > 1:
            try:
                length = self._number(words[-1], "length")
                expression = " ".join(words[:-1])
            except CommandError:
                length, expression = 4, args
        address = self._address(expression.lstrip("*"))
        point = self.add_watchpoint(address, length, access=access)
        label = self.symbolize(address)
        where = f" <{label}>" if label else ""
        value = "unmapped" if point.value is None else point.value.hex(" ")
        kind = {"write": "Watchpoint", "read": "Hardware read watchpoint",
                "access": "Hardware access (read/write) watchpoint"}[access]
        return f"{kind} {point.number}: {address:#x}{where}, {length} bytes (now {value})"

    def _do_rwatch(self, args: str) -> str:
        return self._do_watch(args, access="read")

    def _do_awatch(self, args: str) -> str:
        return self._do_watch(args, access="access")

    def _do_catch(self, args: str) -> str:
        words = args.split()
        if not words or words[0] not in ("interrupt", "exception", "iret"):
            raise CommandError("catch interrupt [VEC] | catch exception [VEC] | catch iret")
        vector = None
        if len(words) > 1:
            if words[0] == "iret":
                raise CommandError("catch iret takes no vector")
            vector = self._number(words[1], "vector")
            if not 0 <= vector <= 255:
                raise CommandError(f"vector {vector:#x} is not 0..255")
        if len(words) > 2:
            raise CommandError(f"unexpected {words[2]!r}")
        point = self.add_catchpoint(words[0], vector)
        if words[0] == "exception" and not hasattr(self.machine.platform, "trace") and \
                vector is None:
            return (f"Catchpoint {point.number} (exception) - this platform has no trace "
                    "hook: only exceptions the machine reports as steps are seen")
        what = words[0] + ("" if vector is None else f" {vector:#x}")
        return f"Catchpoint {point.number} ({what})"

    # -- inspection ---------------------------------------------------------------------------
    def _do_info(self, args: str) -> str:
        words = args.split(None, 1)
        if not words:
            raise CommandError("info what? " + ", ".join(INFO_TOPICS))
        topic = _lookup_topic(words[0])
        rest = words[1] if len(words) > 1 else ""
        cpu = self.machine.cpus[self.selected]
        if topic == "registers":
            try:
                return "\n".join(views.registers(cpu, rest.split() or None, self.symbolize))
            except ValueError as error:
                raise CommandError(str(error)) from None
        if topic == "segments":
            return "\n".join(views.segments(cpu))
        if topic == "idt":
            return "\n".join(views.idt(cpu, self.symbolize))
        if topic == "gdt":
            return "\n".join(views.gdt(cpu))
        if topic == "tss":
            return "\n".join(views.tss(cpu))
        if topic == "msr":
            return "\n".join(views.msrs(cpu))
        if topic == "vcpu":
            return "\n".join(self._vcpu_lines())
        if topic == "monitor":
            if self.monitor_view is None:
                return "No VMI monitor: the machine runs natively."
            return "\n".join(self.monitor_view.info_lines())
        if topic == "breakpoints":
            return "\n".join(self._point_lines())
        if topic == "display":
            if not self.displays:
                return "There are no auto-display expressions now."
            return "\n".join(f"{d.number}:   {'x' if d.examine else 'print'}/{d.fmt} "
                             f"{d.expression}" for d in self.displays)
        address = self._address(rest)
        label = self.symbolize(address)
        return label.replace("+", " + ") if label else f"No symbol matches {rest}."

    def _vcpu_lines(self) -> list[str]:
        machine = self.machine
        lines = []
        for index, cpu in enumerate(machine.cpus):
            mark = "*" if index == self.selected else " "
            linear = code_linear(cpu)
            label = self.symbolize(linear)
            pending = machine.pic.pending[index]
            vectors = [f"{v:#x}" for v in range(256) if pending >> v & 1]
            view = self.monitor_view
            virtual = ""
            if view is not None:
                marker = view.marker(cpu)
                fields = view.fields(cpu).split(" pic=")[0]
                virtual = f" {fields}{'  ' + marker if marker else ''}"
            lines.append(
                f"{mark} cpu{index}  eip={cpu.eip:#010x}{' <' + label + '>' if label else ''}  "
                f"cpl={cpu.cpl} IF={1 if cpu.flags & 0x200 else 0} "
                f"shadow={1 if cpu.shadow else 0} {'halted' if cpu.halted else 'running'} "
                f"mode={views.mode_name(cpu)} cycles={cpu.cycles} "
                f"pending=[{' '.join(vectors)}]{virtual}")
            lines += ["      " + text for text in self._annotations(cpu)]
        lines.append(f"interleaving {machine.interleaving}  step {machine.steps}")
        if self.monitor_view is not None:
            monitor = self.monitor_view.monitor
            stats = monitor.stats
            lines.append(f"monitor: mode {monitor.mode}, policy {monitor.policy}; deferred "
                         f"{stats.deferred}, fixed up {stats.fixups}, nested in the window "
                         f"{stats.nested_in_window} ('info monitor' for more)")
        return lines

    def _point_lines(self) -> list[str]:
        if not self.points:
            return ["No breakpoints or watchpoints."]
        lines = ["Num  Type        Disp  Enb  Address     What"]
        for point in self.points.values():
            disp = "del " if point.temporary else "keep"
            enabled = "y" if point.enabled else "n"
            if point.kind == "catchpoint":
                address = ""
                what = point.catch + ("" if point.vector is None else f" {point.vector:#x}")
            else:
                assert point.address is not None
                address = f"{point.address:#010x}"
                label = self.symbolize(point.address)
                what = f"<{label}>" if label else ""
                if point.kind == "watchpoint":
                    what = f"{point.length} bytes {what}".rstrip()
            if point.owner != "user":
                what = f"{what} (from {point.owner})".lstrip()
            kind = point.kind
            if kind == "watchpoint" and point.access != "write":
                kind = "rwatchpoint" if point.access == "read" else "awatchpoint"
            lines.append(f"{point.number:<4} {kind:<11} {disp}  {enabled}    "
                         f"{address:<11} {what}".rstrip())
            if point.hits:
                lines.append(f"        already hit {point.hits} time"
                             f"{'s' if point.hits != 1 else ''}")
        return lines

    def _do_x(self, args: str) -> str:
        fmt = ""
        if args.startswith("/"):
            match = re.match(r"/\s*(\d*[a-zA-Z]*)\s*(.*)$", args, re.S)
            assert match is not None
            fmt, args = match.groups()
        return "\n".join(self._examine(fmt, args))

    def _examine(self, fmt: str, expression: str, *, remember: bool = True) -> list[str]:
        match = re.fullmatch(r"(\d*)([a-zA-Z]*)", fmt)
        if match is None:
            raise CommandError(f"Invalid number \"{fmt}\".")
        count_text, letters = match.groups()
        count = int(count_text) if count_text else 1
        letter, size = self._x_format
        for char in letters:
            if char in _UNIT_SIZES:
                size = _UNIT_SIZES[char]
            elif char in "xduotcasi":
                letter = char
            else:
                raise CommandError(f"Undefined output format \"{char}\".")
        if count < 1 or count > MAX_UNITS:
            raise CommandError(f"x: count: {count} is out of range (1..{MAX_UNITS})")
        if expression.strip():
            address = self._address(expression)
        elif self._x_next is not None:
            address = self._x_next
        else:
            raise CommandError("Argument required (starting display address).")
        cpu = self.machine.cpus[self.selected]
        if letter == "i":
            lines, end = self._examine_code(cpu, address, count)
        elif letter == "s":
            lines, end = self._examine_strings(cpu, address, count)
        else:
            explicit = any(ch in _UNIT_SIZES for ch in letters)
            if letter == "c" and not explicit:
                size = 1
            elif letter == "a" and not explicit:
                size = 4  # a pointer
            lines, end = self._examine_units(cpu, address, count, letter, size)
        if remember:
            self._x_format = (letter, size)
            self._x_next = end
        return lines

    def _examine_units(self, cpu: Any, address: int, count: int, letter: str,
                       size: int) -> tuple[list[str], int]:
        data = read_linear(cpu, address, count * size)
        per_line = _PER_LINE[size]
        lines = []
        for first in range(0, count, per_line):
            here = (address + first * size) & M32
            label = self.symbolize(here)
            items = []
            for index in range(first, min(count, first + per_line)):
                value = int.from_bytes(data[index * size:(index + 1) * size], "little")
                items.append(self._unit_text(value, letter, size))
            lines.append(f"{here:#x}{' <' + label + '>' if label else ''}:\t"
                         + "\t".join(items))
        return lines, (address + count * size) & M32

    def _unit_text(self, value: int, letter: str, size: int) -> str:
        bits = size * 8
        if letter == "x":
            return f"0x{value:0{size * 2}x}"
        if letter == "d":
            return str(value - (1 << bits) if value >> (bits - 1) else value)
        if letter == "u":
            return str(value)
        if letter == "o":
            return f"0{value:o}" if value else "0"
        if letter == "t":
            return f"{value:0{bits}b}"
        if letter == "a":
            label = self.symbolize(value)
            return f"{value:#x}{' <' + label + '>' if label else ''}"
        low = value & 0xFF
        char = chr(low) if 32 <= low < 127 else f"\\{low:03o}"
        return f"{value - 256 if low > 127 else value} '{char}'"

    def _examine_strings(self, cpu: Any, address: int, count: int) -> tuple[list[str], int]:
        lines = []
        for _ in range(count):
            data = read_prefix(cpu, address, 200)
            if not data:
                raise Unmapped(address)
            end = data.find(b"\0")
            text = data if end < 0 else data[:end]
            shown = "".join(chr(b) if 32 <= b < 127 and b != 34 else f"\\{b:03o}" for b in text)
            label = self.symbolize(address)
            lines.append(f"{address:#x}{' <' + label + '>' if label else ''}:\t\"{shown}\""
                         + ("..." if end < 0 else ""))
            address = (address + len(text) + 1) & M32
        return lines, address

    def _examine_code(self, cpu: Any, address: int, count: int) -> tuple[list[str], int]:
        here = code_linear(cpu)
        lines = []
        end = address
        for line in disassemble_at(cpu, address, count):
            label = self.symbolize(line.address)
            mark = "=> " if line.address == here else "   "
            lines.append(f"{mark}{line.address:#x}{' <' + label + '>' if label else ''}:\t"
                         f"{line.text}{self._target_label(line.insn)}")
            end = (line.address + len(line.data)) & M32
        return lines, end

    def _do_disassemble(self, args: str) -> str:
        words = args.split()
        cpu = self.machine.cpus[self.selected]
        count = 10
        function = None
        if not words:
            address = code_linear(cpu)
            index = bisect.bisect_right(self._sorted, (address, "\uffff")) - 1
            if index >= 0 and address - self._sorted[index][0] < 0x1000:
                function = self._sorted[index][1]
                start = self._sorted[index][0]
                end = self._sorted[index + 1][0] if index + 1 < len(self._sorted) else None
                address = start
                count = 64
        else:
            if len(words) > 1:
                try:
                    count = self._number(words[-1], "count")
                    words = words[:-1]
                except CommandError:
                    count = 10
            address = self._address(" ".join(words))
            end = None
        if not 1 <= count <= MAX_UNITS:
            raise CommandError(f"disassemble: count: {_signed(count)} is out of range "
                               f"(1..{MAX_UNITS})")
        here = code_linear(cpu)
        base = address
        title = (f"Dump of assembler code for function {function}:" if function else
                 f"Dump of assembler code from {address:#x}:")
        lines = [title]
        for line in disassemble_at(cpu, address, count):
            if function is not None and end is not None and line.address >= end:
                break
            mark = "=> " if line.address == here else "   "
            where = f"<+{line.address - base}>" if function else \
                (f"<{self.symbolize(line.address)}>" if self.symbolize(line.address) else "")
            lines.append(f"{mark}{line.address:#010x} {where}:\t{line.data.hex(' ')}\t"
                         f"{line.text}{self._target_label(line.insn)}")
        lines.append("End of assembler dump.")
        return "\n".join(lines)

    def _do_display(self, args: str) -> str:
        if not args:
            return "\n".join(self._display_lines())
        fmt = ""
        if args.startswith("/"):
            match = re.match(r"/\s*(\d*[a-zA-Z]*)\s*(.*)$", args, re.S)
            assert match is not None
            fmt, args = match.groups()
        if not args.strip():
            raise CommandError("display needs an expression")
        examine = bool(re.search(r"[ibhwgs]|\d", fmt))
        if examine:
            self._examine(fmt, args, remember=False)  # refuse a bad one now
        else:
            if fmt and fmt not in ("x", "d", "u", "o", "t", "c"):
                raise CommandError(f"Undefined output format \"{fmt}\".")
            self._value(args)
        display = Display(self._next_display, fmt, args.strip(), examine)
        self._next_display += 1
        self.displays.append(display)
        return "\n".join(self._one_display(display))

    def _one_display(self, display: Display) -> list[str]:
        saved = self.displays
        self.displays = [display]
        try:
            return self._display_lines()
        finally:
            self.displays = saved

    def _do_undisplay(self, args: str) -> str:
        numbers = self._numbers(args)
        if numbers is None:
            self.displays = []
            return ""
        known = {d.number for d in self.displays}
        for number in numbers:
            if number not in known:
                raise CommandError(f"No display number {number}.")
        self.displays = [d for d in self.displays if d.number not in numbers]
        return ""

    def _do_print(self, args: str) -> str:
        fmt = ""
        if args.startswith("/"):
            match = re.match(r"/\s*(\d*[a-zA-Z]*)\s*(.*)$", args, re.S)
            assert match is not None
            fmt, args = match.groups()
        if fmt and fmt not in ("x", "d", "u", "o", "t", "c", "a"):
            raise CommandError(f"Undefined output format \"{fmt}\".")
        value = self._value(args)
        self._values += 1
        if fmt == "a":
            return f"${self._values} = {self._unit_text(value, 'a', 4)}"
        return f"${self._values} = {_format_value(value, fmt or 'd')}"

    def _do_set(self, args: str) -> str:
        match = re.match(r"(?:var(?:iable)?\s+)?\$(\w+)\s*=\s*(.+)$", args, re.S)
        if match:
            name, expression = match.groups()
            value = self._value(expression)
            self.set_register(self.selected, name, value)
            return ""
        match = re.match(r"(?:var(?:iable)?\s+)?\{\s*([a-z ]+?)\s*\}\s*(.+?)\s*=\s*(.+)$",
                         args, re.S)
        if match:
            type_name, target, expression = match.groups()
            size = _TYPE_SIZES.get(type_name)
            if size is None:
                raise CommandError(f"No type \"{type_name}\" (use char, short or int).")
            address = self._address(target)
            value = self._value(expression)
            self.write_memory(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
            return ""
        match = re.match(r"step-budget\s+(\S+)$", args)
        if match:
            budget = self._ranged(match.group(1), "step budget", 1, MAX_COUNT)
            self.step_budget = budget
            return f"continue now stops after at most {budget} steps"
        raise CommandError("set $REG = EXPR | set {int|short|char} ADDR = EXPR | "
                           "set step-budget N")

    def _do_stack(self, args: str) -> str:
        count = self._ranged(args, "stack: count", 1, 256) if args else 16
        return "\n".join(views.stack(self.machine.cpus[self.selected], count, self.symbolize))

    def _do_cpu(self, args: str) -> str:
        if not args:
            return self.where()
        index = self._ranged(args, "cpu", 0, len(self.machine.cpus) - 1)
        self.selected = index
        return f"[Switching to cpu{index}]\n" + self.where()

    def _do_inject(self, args: str) -> str:
        match = re.fullmatch(r"(\S+)(?:\s+at\s+(\S+))?(?:\s+(?:cpu|on)\s+(\S+))?", args.strip())
        if match is None:
            raise CommandError("inject VECTOR [at STEP] [cpu N]")
        vector = self._number(match.group(1), "vector")
        at = self._number(match.group(2), "step") if match.group(2) else None
        cpu = self._number(match.group(3), "cpu") if match.group(3) else None
        self.inject(vector, cpu, at)
        index = self._cpu_index(cpu)
        view = self.monitor_view
        if (at is None or at == self.machine.steps) and view is not None and \
                view.active(self.machine.cpus[index]):
            return (f"vector {vector:#x} is pending in the interrupt controller for cpu{index}; "
                    f"the monitor takes it at the next boundary of cpu{index} (the real IF is "
                    f"always 1 under it) and policy {view.monitor.policy} decides")
        if at is None or at == self.machine.steps:
            return (f"vector {vector:#x} is pending on cpu{index}; it is delivered at the "
                    "first boundary where IF=1 and no interrupt shadow holds it off")
        return f"vector {vector:#x} will be raised on cpu{index} at step {at}"

    def _do_record(self, args: str) -> str:
        if not args:
            if self._record is None:
                return "Not recording."
            return f"Recording every step to {self._record_name}."
        if args in ("stop", "off"):
            if self._record is None:
                return "Not recording."
            name = self._record_name
            self._stop_recording()
            return f"Stopped recording to {name}."
        self._stop_recording()
        try:
            handle = open(args, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        except (OSError, ValueError) as error:
            raise CommandError(f"{args}: {getattr(error, 'strerror', None) or error}") from None
        handle.write("# step\tcpu\tkind\teip\tinstruction\n")
        self._record = handle
        self._record_name = args
        return f"Recording every step to {args} (record stop to finish)."

    def _stop_recording(self) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None

    def _do_help(self, args: str) -> str:
        if not args:
            lines = ["Commands (unique prefixes work; Enter repeats at a terminal):"]
            for command in COMMANDS:
                aliases = f" ({', '.join(command.aliases)})" if command.aliases else ""
                lines.append(f"  {command.name + aliases:<30} {command.short}")
            lines.append("Addresses are linear; expressions take $registers, symbols, + - * ( ).")
            return "\n".join(lines)
        command = lookup(args.split()[0])
        aliases = f"\nAliases: {', '.join(command.aliases)}" if command.aliases else ""
        return f"{command.usage}\n{command.summary}{aliases}"

    def _do_quit(self, args: str) -> str:
        self.finished = True
        self._stop_recording()
        return ""

    # -- argument helpers --------------------------------------------------------------------
    def _register(self, name: str) -> int | None:
        name = _ALIASES.get(name, name)
        if name not in REGISTER_NAMES:
            return None
        value: int = getattr(self.machine.cpus[self.selected].regs, name)
        return value

    def _value(self, text: str) -> int:
        cpu = self.machine.cpus[self.selected]
        return evaluate(text, register=self._register, symbol=self.symbols.get,
                        read_word=lambda address: int.from_bytes(
                            read_linear(cpu, address, 4), "little"))

    def _address(self, text: str) -> int:
        if not text.strip():
            raise CommandError("an address is needed")
        return self._value(text)

    def _number(self, text: str, what: str) -> int:
        try:
            return self._value(text)
        except ExprError as error:
            raise CommandError(f"{what}: {error}") from None


def lookup(word: str) -> Command:
    """The command ``word`` names: a name, an alias or a unique prefix of a name."""
    word = word.lower()
    for command in COMMANDS:
        if word == command.name or word in command.aliases:
            return command
    matches = [c for c in COMMANDS if c.name.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(c.name for c in matches)
        raise CommandError(f'Ambiguous command "{word}": {names}.')
    raise CommandError(f'Undefined command: "{word}".  Try "help".')


def command_names() -> Iterator[str]:
    """Every command name and alias (for completion)."""
    for command in COMMANDS:
        yield command.name
        yield from command.aliases


def _lookup_topic(word: str) -> str:
    word = word.lower()
    for topic, names in INFO_TOPICS.items():
        if word in names:
            return topic
    matches = [topic for topic in INFO_TOPICS if topic.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CommandError(f'Ambiguous info command "{word}": {", ".join(matches)}.')
    raise CommandError(f'Undefined info command: "{word}".  Try "help info".')


def _returned(cpu: Any, index: int, back: int, esp: int) -> Callable[[StepRecord], bool]:
    """For ``nexti`` over a call: CPU ``index`` is back at ``back`` with its stack
    popped to ``esp`` or above (so a recursive call of the same site does not count)."""

    def check(record: StepRecord) -> bool:
        return record.cpu == index and cpu.eip == back and cpu.r[4] >= esp

    return check


def _signed(value: int) -> int:
    """A 32-bit value read as two's complement (for messages about counts)."""
    return value - (1 << 32) if value >> 31 else value


def _format_value(value: int, fmt: str) -> str:
    if fmt == "x":
        return f"{value:#x}"
    if fmt == "o":
        return f"0{value:o}" if value else "0"
    if fmt == "t":
        return f"{value:b}"
    if fmt == "c":
        low = value & 0xFF
        return f"{low} '{chr(low) if 32 <= low < 127 else '?'}'"
    if fmt == "u":
        return str(value)
    return str(value - (1 << 32) if value >> 31 else value)


def _show(data: bytes) -> str:
    if len(data) in (1, 2, 4, 8):
        return f"{int.from_bytes(data, 'little'):#x}"
    return data.hex(" ")


def _watch_text(point: Point, old: bytes, new: bytes) -> str:
    return (f"Watchpoint {point.number}: {point.address:#x} ({point.length} bytes)\n"
            f"Old value = {_show(old)}\nNew value = {_show(new)}")
