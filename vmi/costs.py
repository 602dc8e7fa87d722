"""What a system call and an interrupt cost, natively and under the VMI monitor.

``measure(mode)`` boots the bundled kernel (``vmi.system.boot_system``) on one
CPU and steps its workload one boundary at a time (``Machine.step``), watching
from outside: nothing in the guest is changed, no breakpoint is set, and the
instruction bytes are read through the debugger's side-effect-free view of
memory (a page walk by the processor would set accessed bits and fill the TLB).
Three kinds of round trip are timed on the CPU's cycle counter, which under the
monitor also carries the documented cost of every exit
(``vmi.hypervisor.monitor.EXIT_COSTS``):

* ``int80``: a boundary at CPL 3 whose instruction is ``int $0x80`` with EAX = 20
  (getpid, which never blocks), from the cycle count before that step to the
  first later boundary at CPL 3;
* ``sysenter``: the same for ``sysenter`` (the vsyscall stub's);
* ``interrupt``: a timer interrupt (vector 0x20) taken at CPL 3, until the CPU is
  back at CPL 3.

A sample is kept only when it is the clean round trip it claims to be: no other
interrupt step happened inside it, and the CPU came back to the same task where
it should (EIP the next instruction for ``int $0x80``, the vsyscall page's
``SYSENTER_RETURN`` for ``sysenter``, the interrupted EIP for an interrupt; the
same ESP and CR3). Everything else is counted as discarded, by reason.

Two runs are pooled (``RUNS``): the whole default workload, then the
``syscalls`` program alone. The second is there for the interrupts: the
kernel's time slice is one tick, so a tick that lands in user mode while another
task is runnable always ends in a switch to that task (discarded), and in the
whole workload there always is one.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from attrs import define, field, frozen

#: What a cost figure is taken for, in table order.
KINDS = ("int80", "sysenter", "interrupt")
#: getpid: a system call that never blocks, so its round trip is the entry and exit
#: paths and nothing else.
GETPID = 20
TIMER_VECTOR = 0x20
#: Modes ``measure`` accepts (``vmi.system.MODES``) and how a table names them.
MODE_LABELS = {"native": "native", "trap": "trap-and-emulate", "vmi": "VMI",
               "naive": "naive"}
#: The workloads one measurement steps, pooled: the whole default workload (None),
#: then the ``syscalls`` program alone, where a tick in user mode finds no other
#: task to switch to.
RUNS: tuple[tuple[str, ...] | None, ...] = (None, ("syscalls",))
#: A generous bound: a run takes about 200,000 steps in every mode.
STEP_LIMIT = 5_000_000
#: Why a sample was thrown away.
INTERRUPTED = "interrupted"  # another interrupt step inside the round trip
ELSEWHERE = "returned elsewhere"  # back at CPL 3 in another task, or with another ESP
UNDELIVERED = "not delivered"  # the monitor made it pending: the guest's IF was off
UNFINISHED = "unfinished"  # the run ended before the CPU was back at CPL 3


class CostError(Exception):
    """The measurement could not be made (the workload did not finish)."""


@frozen
class Sample:
    """One clean round trip: its cycles, the guest instructions retired in it, and
    the monitor's exits inside it (``exit_cycles`` of ``cycles`` were charged by
    the monitor: exits, frames built, fixups)."""

    cycles: int
    instructions: int
    exit_cycles: int
    exits: tuple[tuple[str, int], ...]


@frozen
class Cell:
    """The kept samples of one kind in one mode, and what was discarded."""

    kind: str
    samples: tuple[Sample, ...]
    discarded: dict[str, int]

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def typical(self) -> Sample | None:
        """The median sample (the lower middle one for an even count, so the figure
        is always a round trip that really happened)."""
        if not self.samples:
            return None
        ordered = sorted(self.samples, key=lambda s: s.cycles)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def median(self) -> int | None:
        typical = self.typical
        return None if typical is None else typical.cycles

    def as_dict(self) -> dict[str, Any]:
        cycles = [s.cycles for s in self.samples]
        typical = self.typical
        return {
            "count": self.count,
            "median": self.median,
            "min": min(cycles) if cycles else None,
            "max": max(cycles) if cycles else None,
            "mean": round(statistics.fmean(cycles), 1) if cycles else None,
            "median_instructions": None if typical is None else typical.instructions,
            "median_exit_cycles": None if typical is None else typical.exit_cycles,
            "median_exits": {} if typical is None else dict(typical.exits),
            "discarded": dict(self.discarded),
        }


@frozen
class RunTotals:
    """One run's totals: the machine's and (under the monitor) the exits."""

    workload: tuple[str, ...]
    steps: int
    instructions: int
    cycles: int
    exits: dict[str, int]
    exit_cycles: int

    def as_dict(self) -> dict[str, Any]:
        return {"workload": list(self.workload), "steps": self.steps,
                "instructions": self.instructions, "cycles": self.cycles,
                "exits": dict(self.exits), "exit_cycles": self.exit_cycles}


@frozen
class CostFigures:
    """What ``measure`` found for one mode: a cell per kind, the runs' totals."""

    mode: str
    policy: str
    cells: dict[str, Cell]
    runs: tuple[RunTotals, ...]
    seconds: float

    @property
    def exits(self) -> dict[str, int]:
        """The monitor's exits by kind over the whole workload (the first run)."""
        return self.runs[0].exits

    @property
    def exit_cycles(self) -> int:
        return self.runs[0].exit_cycles

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "label": MODE_LABELS[self.mode],
            "policy": self.policy,
            **{kind: self.cells[kind].as_dict() for kind in KINDS},
            "exits": dict(self.exits),
            "exit_cycles": self.exit_cycles,
            "runs": [run.as_dict() for run in self.runs],
            "seconds": round(self.seconds, 2),
        }


class _Ledger:
    """The monitor's exit accounting as it was at the last user-mode boundary, so a
    round trip opened by the step that follows knows what was charged before it.
    The exits are copied only when they changed: in user mode that is about once per
    return from the kernel."""

    def __init__(self, monitor: Any) -> None:
        self.stats = monitor.stats if monitor is not None else None
        self.cycles = 0
        self.exits: Counter[str] = Counter()

    def mark(self) -> None:
        stats = self.stats
        if stats is not None and stats.exit_cycles != self.cycles:
            self.cycles = stats.exit_cycles
            self.exits = Counter(stats.exits)

    def marked(self) -> tuple[int, Counter[str]]:
        return self.cycles, self.exits

    def since(self, mark: tuple[int, Counter[str]]) -> tuple[int, tuple[tuple[str, int], ...]]:
        """The exit cycles (exits, frames, fixups) charged since ``mark``, and the
        exits by kind."""
        stats = self.stats
        if stats is None:
            return 0, ()
        cycles, before = mark
        exits = Counter(stats.exits)
        exits.subtract(before)
        return stats.exit_cycles - cycles, tuple(sorted((k, n) for k, n in exits.items() if n))


@define
class _Open:
    """A round trip under way: when it started, where it must end, the monitor's
    accounting before it."""

    kind: str
    start: int
    retired: int
    eip: int
    esp: int
    cr3: int
    mark: tuple[int, Counter[str]]
    interrupted: bool = False


@define
class _Recorder:
    """Kept samples and discard counts per kind, pooled over runs."""

    kept: dict[str, list[Sample]] = field(factory=lambda: {k: [] for k in KINDS})
    discarded: dict[str, Counter[str]] = field(factory=lambda: {k: Counter() for k in KINDS})

    def close(self, trip: _Open, cpu: Any, ledger: _Ledger) -> None:
        """The CPU is back at CPL 3: keep the round trip or say why not."""
        if trip.interrupted:
            self.discarded[trip.kind][INTERRUPTED] += 1
        elif (cpu.eip, cpu.r[4], cpu.cr[3]) != (trip.eip, trip.esp, trip.cr3):
            self.discarded[trip.kind][ELSEWHERE] += 1
        else:
            exit_cycles, exits = ledger.since(trip.mark)
            self.kept[trip.kind].append(Sample(cpu.cycles - trip.start,
                                               cpu.instructions - trip.retired,
                                               exit_cycles, exits))

    def cells(self) -> dict[str, Cell]:
        return {kind: Cell(kind, tuple(self.kept[kind]), dict(sorted(self.discarded[kind].items())))
                for kind in KINDS}


def measure(mode: str, *, policy: str = "defer", seed: int = 0,
            runs: Sequence[tuple[str, ...] | None] = RUNS,
            step_limit: int = STEP_LIMIT) -> CostFigures:
    """Boot the bundled kernel in ``mode`` (native, trap, vmi, naive; ``policy`` is
    the window policy under ``vmi``) on one CPU once per workload of ``runs`` (None:
    the default workload), step each to its end and time the getpid round trips and
    user-mode timer interrupts (see the module docstring). Raises
    ``vmi.system.SystemError_`` for a bad configuration, ``CostError`` if a run has
    not finished after ``step_limit`` steps, ``vmi.machine.MachineStopped`` if the
    machine stopped."""
    started = time.perf_counter()
    recorder = _Recorder()
    totals = tuple(_measure_run(mode, policy, seed, workload, recorder, step_limit)
                   for workload in runs)
    policy_used = policy if mode == "vmi" else "none"
    return CostFigures(mode=mode, policy=policy_used, cells=recorder.cells(), runs=totals,
                       seconds=time.perf_counter() - started)


def _measure_run(mode: str, policy: str, seed: int, workload: tuple[str, ...] | None,
                 recorder: _Recorder, step_limit: int) -> RunTotals:
    """Boot, step one workload to its end into ``recorder``, return its totals."""
    from vmi.system import boot_system

    system = boot_system(mode, policy=policy, cpus=1, seed=seed, workload=workload)
    steps = _step_workload(system, recorder, step_limit)
    cpu = system.machine.cpus[0]
    stats = system.monitor.stats if system.monitor is not None else None
    return RunTotals(workload=system.guest.workload, steps=steps,
                     instructions=cpu.instructions, cycles=cpu.cycles,
                     exits=dict(sorted(stats.exits.items())) if stats else {},
                     exit_cycles=stats.exit_cycles if stats else 0)


def _step_workload(system: Any, recorder: _Recorder, step_limit: int) -> int:
    """The stepping loop: one ``Machine.step`` per boundary until every CPU has
    stopped for good; opens and closes round trips in ``recorder``. Kept tight: a
    kernel boundary costs a few attribute reads and comparisons besides the step."""
    machine = system.machine
    cpu = machine.cpus[0]
    ledger = _Ledger(system.monitor)
    sysenter_return = system.guest.build.vsyscall.symbols["SYSENTER_RETURN"]
    step = machine.step
    trip: _Open | None = None
    for steps in range(1, step_limit + 1):
        user = cpu.cpl == 3
        if user:
            if trip is not None:
                recorder.close(trip, cpu, ledger)
                trip = None
            ledger.mark()
        call = _syscall_at(cpu, sysenter_return) if user and cpu.r[0] == GETPID else None
        start, retired, eip, esp = cpu.cycles, cpu.instructions, cpu.eip, cpu.r[4]
        _, kind, value = step()
        if kind == "interrupt":
            if trip is not None:
                trip.interrupted = True
            elif user and value == TIMER_VECTOR:
                trip = _open_interrupt(recorder, cpu, (start, retired, eip, esp), ledger)
        elif call is not None and kind == "instruction":
            trip = _Open(call[0], start, retired, call[1], esp, cpu.cr[3], ledger.marked())
        elif kind == "idle" and value == 0 and machine.all_stuck():
            if trip is not None:
                recorder.discarded[trip.kind][UNFINISHED] += 1
            return steps
    raise CostError(f"the workload did not finish in {step_limit:,} steps")


def _open_interrupt(recorder: _Recorder, cpu: Any, before: tuple[int, int, int, int],
                    ledger: _Ledger) -> _Open | None:
    """A timer interrupt was taken at CPL 3 (``before``: cycles, instructions, EIP
    and ESP before that step): a round trip begins, unless the CPU is still in
    user mode (the monitor made the interrupt pending because the guest's virtual
    IF was off: pure trap-and-emulate after a raw ``iret``)."""
    if cpu.cpl == 3:
        recorder.discarded["interrupt"][UNDELIVERED] += 1
        return None
    start, retired, eip, esp = before
    return _Open("interrupt", start, retired, eip, esp, cpu.cr[3], ledger.marked())


def _syscall_at(cpu: Any, sysenter_return: int) -> tuple[str, int] | None:
    """``("int80", next EIP)`` or ``("sysenter", SYSENTER_RETURN)`` when the
    instruction at CS:EIP is a system call, else None. The bytes are read without
    touching the TLB or the accessed bits (``vmi.debugger.memview``)."""
    from vmi.cpu import DecodeError, decode
    from vmi.debugger import memview

    data = memview.read_prefix(cpu, memview.code_linear(cpu), memview.MAX_INSTRUCTION)
    try:
        insn = decode(data, cpu.eip, bits=cpu.code_bits)
    except DecodeError:
        return None
    if insn.mnemonic == "int" and getattr(insn.operands[0], "value", None) == 0x80:
        return "int80", insn.next_address
    if insn.mnemonic == "sysenter":
        return "sysenter", sysenter_return
    return None


def measure_modes(modes: Sequence[str], *, policy: str = "defer",
                  seed: int = 0) -> list[CostFigures]:
    """``measure`` for each mode, in order."""
    return [measure(mode, policy=policy, seed=seed) for mode in modes]


def ratio(figures: CostFigures, native: CostFigures | None, kind: str) -> float | None:
    """``figures``' median over native's for ``kind``, or None when either is
    missing."""
    if native is None:
        return None
    ours, base = figures.cells[kind].median, native.cells[kind].median
    if ours is None or not base:
        return None
    return ours / base
