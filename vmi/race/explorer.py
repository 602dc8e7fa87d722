"""Exploring interrupt arrival over a kernel path, one branch per schedule.

A ``Scenario`` is the bundled kernel booted in one configuration and run to the
start of a path (``paths.PATHS``): the machine is snapshotted there, and the
uninterrupted run to the end of the path gives the path's instruction
boundaries. A **schedule** is a tuple of boundary indices: the first interrupt is
raised at exactly that boundary of the path; each later one the next time the
execution reaches the EIP of its boundary after the previous one was raised (so a
second interrupt can land in the window the first one's handler returns
through). ``run_branch`` restores the snapshot, plays the schedule and checks the
invariants (``invariants.Checker``) at every step until the CPU is back in user
mode with every raised interrupt handled, or the step budget runs out.

Everything a branch does is reproducible from boot: ``Outcome.replay`` is the
machine schedule (absolute cycles from reset) and the machine step of the
violation, the counterexample format ``vmi debug --replay`` opens.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import astuple as attrs_astuple
from attrs import define, field, frozen

from vmi.race import spec
from vmi.race.invariants import Checker, Violation
from vmi.race.kernel import CONSOLE_VECTOR, PAGE_OFFSET, THREAD_SIZE, TSS_ESP0, KernelView
from vmi.race.names import MAX_DEPTH
from vmi.race.paths import PATHS, PathSpec

#: Steps a branch may run past the start before it is cut off.
BRANCH_BUDGET = 6000
#: Steps a later interrupt of a schedule waits for its boundary to come round
#: again after the previous one was raised; past that the schedule is unreachable.
REACH_WAIT = 400
#: Steps the other CPUs run while CPU 0 pauses (an interleaving schedule).
INTERLEAVE_BURST = 200
#: Steps to reach a path's start from reset before giving up.
BOOT_BUDGET = 2_000_000
#: Cycles the periodic timer is held off from a single-CPU branch's start: a branch
#: sees only the interrupts of its schedule, so the same branch is the same in every
#: mode (the timer's vector can be scheduled like any other: ``Config.vector``).
TIMER_HOLD = 50_000_000


class ScenarioError(Exception):
    """The path's start was never reached (a kernel or configuration problem)."""


class PathNotReached(ScenarioError):
    """The kernel never got to the path (or through it) in this configuration: a
    hang or a crash on the way, which ``vmi race`` reports instead of a verdict."""


@frozen
class Config:
    """Everything that decides what a sweep explores (and a journal must match)."""

    mode: str = "native"
    policy: str = "defer"
    macros: str | None = None
    path: str = "iret"
    cpus: int = 1
    seed: int = 0
    vector: int = CONSOLE_VECTOR
    #: 0: each later interrupt of a schedule arrives the next time its path boundary
    #: is reached; N > 0 (nested): each later one arrives d = 1..N steps after the
    #: previous one was raised, wherever that is: inside the first one's handler, on
    #: its way out, or in user mode
    horizon: int = 0

    def label(self) -> str:
        policy = f"/{self.policy}" if self.mode == "vmi" else ""
        macros = f" ({self.macros})" if self.macros and self.macros != self.mode else ""
        return f"{self.mode}{policy}{macros}"


@frozen
class Boundary:
    """One instruction boundary of a path's uninterrupted run."""

    index: int
    eip: int
    name: str
    text: str
    cpl: int
    window: str | None  # "iret"/"sysexit" ROM window, "iret" inline window, or None


@frozen
class Injection:
    """An interrupt the branch raised: explorer step, machine step, cycle, EIP."""

    step: int
    machine_step: int
    cycle: int
    cpu: int
    vector: int
    eip: int
    where: str


@frozen
class Outcome:
    """What one schedule did."""

    schedule: tuple[int, ...]
    violation: Violation | None
    injections: tuple[Injection, ...]
    steps: int
    reached: bool  # every injection of the schedule happened
    machine_step: int  # the machine's step count at the violation (or the end)
    observed: str = ""  # a digest of what user mode observed (vmi.race.spec)

    @property
    def ok(self) -> bool:
        return self.violation is None

    @property
    def invariant(self) -> str | None:
        return None if self.violation is None else self.violation.invariant

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """The inverse of ``as_dict`` (journals and workers send outcomes as JSON)."""
        v = data["violation"]
        violation = None if v is None else Violation(
            v["invariant"], v["step"], v["cpu"], v["eip"], v["where"], v["detail"])
        injections = tuple(Injection(i["step"], i["machine_step"], i["cycle"], i["cpu"],
                                     i["vector"], i["eip"], i["where"])
                           for i in data["injections"])
        return cls(tuple(data["schedule"]), violation, injections, data["steps"],
                   data["reached"], data["machine_step"], data.get("observed", ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule": list(self.schedule),
            "invariant": self.invariant,
            "violation": None if self.violation is None else {
                "invariant": self.violation.invariant, "step": self.violation.step,
                "cpu": self.violation.cpu, "eip": self.violation.eip,
                "where": self.violation.where, "detail": self.violation.detail},
            "injections": [{"step": i.step, "machine_step": i.machine_step, "cycle": i.cycle,
                            "cpu": i.cpu, "vector": i.vector, "eip": i.eip, "where": i.where}
                           for i in self.injections],
            "steps": self.steps,
            "reached": self.reached,
            "machine_step": self.machine_step,
            "observed": self.observed,
        }


@define
class Scenario:
    """A configuration booted and run to its path's start (see the module docstring)."""

    config: Config
    system: Any
    view: KernelView
    spec: PathSpec
    start: Any  # machine snapshot
    monitor_start: Any
    start_steps: int
    boundaries: list[Boundary] = field(factory=list)
    prepare_seconds: float = 0.0
    fingerprint: str = ""  # the start state and the path, hashed (jobs name it)
    lead_in: int = 0  # steps from the start snapshot to the path's first boundary
    #: what native runs of the same path show (vmi.race.spec), for ``transparency``;
    #: None for the native kernel itself and for CPU interleavings
    reference: Any = None
    last_observation: Any = None  # what user mode observed in the last branch run

    @property
    def cpu(self) -> Any:
        return self.system.machine.cpus[0]

    @property
    def timer_hold(self) -> int | None:
        """The cycle the timer's next tick is moved to in a single-CPU branch."""
        if len(self.system.machine.cpus) > 1:
            return None
        return self.start["cpus"][0]["cycles"] + TIMER_HOLD

    def restore(self) -> None:
        """Back to the start snapshot (with the timer held off, one CPU)."""
        machine = self.system.machine
        machine.restore(self.start)
        if self.system.monitor is not None:
            self.system.monitor.restore(self.monitor_start)
        hold = self.timer_hold
        if hold is not None and machine.timer.period:
            machine.timer.deadline[0] = hold

    # -- running one schedule -------------------------------------------------------------
    def run_branch(self, schedule: Sequence[int], *, budget: int = BRANCH_BUDGET) -> Outcome:
        """Play ``schedule`` from the start snapshot, checking every invariant."""
        self.restore()
        if len(self.system.machine.cpus) > 1:
            return self._run_interleaving(schedule, budget)
        machine = self.system.machine
        cpu = self.cpu
        checker = Checker(self.view, single_cpu=True)
        vector = self.config.vector
        first = schedule[0] if schedule else None
        pending_index = 0
        injections: list[Injection] = []
        last_raise = -1
        step = 0
        violation = None
        for lead in range(-self.lead_in, 0):
            _, violation = checker.step(machine, lead)
            if violation is not None:
                return Outcome(tuple(schedule), violation, (), 0, False, machine.steps)
        while step < budget:
            if pending_index < len(schedule):
                if pending_index == 0:
                    due = step == first
                elif self.config.horizon:
                    if schedule[pending_index] < 1:
                        break  # a delay of 0: not a schedule of a nested sweep
                    due = step == last_raise + schedule[pending_index]
                else:
                    target = self.boundaries[schedule[pending_index]]
                    due = (step > last_raise and cpu.eip == target.eip
                           and cpu.cpl == target.cpl)
                    if not due and step - last_raise > REACH_WAIT:
                        break  # its boundary did not come round again
                if due:
                    checker.raise_interrupt(cpu, vector)
                    injections.append(Injection(step, machine.steps, cpu.cycles, cpu.index,
                                                vector, cpu.eip, self.view.name(cpu.eip)))
                    machine.pic.raise_vector(cpu.index, vector)
                    pending_index += 1
                    last_raise = step
            _, violation = checker.step(machine, step)
            step += 1
            if violation is not None:
                break
            if (pending_index == len(schedule) and cpu.cpl == 3 and step > last_raise + 1
                    and checker.outstanding() == 0 and not self.view.pending(cpu)):
                break
        else:
            violation = checker.budget_exhausted(cpu, budget)
        reached = pending_index == len(schedule)
        if violation is None and reached:
            violation = checker.finish(cpu)
        observed = ""
        if reached:
            observation = checker.observation()
            self.last_observation = observation
            observed = spec.digest(observation)
            if violation is None and self.reference is not None:
                violation = self.reference.check(checker, observation, len(schedule))
        return Outcome(tuple(schedule), violation, tuple(injections), step, reached,
                       machine.steps, observed)

    def _run_interleaving(self, schedule: Sequence[int], budget: int) -> Outcome:
        """With several CPUs a schedule is where CPU 0 pauses on its path: CPU 0 runs
        alone to each boundary of ``schedule`` in turn, there the other CPUs run
        ``INTERLEAVE_BURST`` steps without it, and after the last one all CPUs take
        turns until CPU 0 has finished its path."""
        machine = self.system.machine
        cpu = self.cpu
        checker = Checker(self.view, single_cpu=False)
        others = [c.index for c in machine.cpus[1:]]
        everyone = [c.index for c in machine.cpus]
        ended = self.spec.ender(self.system.symbols, cpu, machine)
        pauses = sorted(schedule)
        own = 0  # CPU 0's boundaries so far
        burst = 0
        machine.set_interleaving([0])
        step = 0
        violation = None
        while step < budget:
            if burst == 0 and pauses and own == pauses[0]:
                pauses.pop(0)
                burst = INTERLEAVE_BURST
                machine.set_interleaving(others)
            elif burst == 0 and not pauses and machine.interleaving != everyone:
                machine.set_interleaving(everyone)
            index, violation = checker.step(machine, step)
            step += 1
            if violation is not None:
                break
            if index == 0:
                own += 1
                if not pauses and burst == 0 and ended(cpu):
                    break
            elif burst:
                burst -= 1
                if burst == 0:
                    machine.set_interleaving([0] if pauses else everyone)
        return Outcome(tuple(schedule), violation, (), step, not pauses, machine.steps)

    def replay(self, outcome: Outcome) -> dict[str, Any]:
        """The counterexample file for ``vmi debug --replay`` (docs/debugger.md)."""
        c = self.config
        v = outcome.violation
        return {
            "format": "vmi-race-counterexample", "version": 1,
            "mode": c.mode, "policy": self.system.policy, "macros": self.system.macros,
            "cpus": c.cpus, "seed": c.seed, "interleaving": None,
            "schedule": [[i.cycle, i.cpu, i.vector] for i in outcome.injections],
            "replayable": c.cpus == 1,
            # the session opens at stop_step - 1: just before the step that raises
            # (and, if it can, delivers) the last interrupt of the schedule
            "stop_step": (outcome.injections[-1].machine_step + 1 if outcome.injections
                          else outcome.machine_step),
            "violation_step": outcome.machine_step,
            # a single-CPU branch holds the timer off from its start (TIMER_HOLD): at
            # machine step ``step`` the timer's next tick on ``cpu`` moves to ``deadline``
            "timer_hold": None if self.timer_hold is None else {
                "step": self.start_steps, "cpu": 0, "deadline": self.timer_hold},
            "path": c.path, "invariant": None if v is None else v.invariant,
            "description": "no invariant broke" if v is None else v.describe(),
        }


def prepare(config: Config) -> Scenario:
    """Boot ``config`` and run it to its path's start; record the path's boundaries."""
    from vmi.system import boot_system

    if config.path not in PATHS:
        raise ScenarioError(f"unknown path {config.path!r} (choose one of "
                            f"{', '.join(PATHS)})")
    began = time.perf_counter()
    spec = PATHS[config.path]
    system = boot_system(config.mode, policy=config.policy, macros=config.macros,
                         cpus=config.cpus, seed=config.seed, workload=spec.workload)
    machine = system.machine
    monitor = system.monitor
    symbols = system.symbols
    cpu = machine.cpus[0]
    from_user = spec.from_user and config.cpus == 1
    if from_user:
        booted = machine.snapshot()
        monitor_booted = monitor.snapshot() if monitor is not None else None
    seen = 0
    user_step = None  # the machine step of CPU 0's last user-mode boundary so far
    user_thread = None  # the thread_info of the task that ran there
    tss_esp0 = symbols["init_tss"] + TSS_ESP0 - PAGE_OFFSET
    for _ in range(BOOT_BUDGET):
        # with a lead-in, only a start the task reached from its own user entry (not
        # one it resumes in after a switch) can be replayed with the timer held
        if spec.starts(symbols, cpu, machine) and (
                not from_user or user_thread == cpu.r[4] & -THREAD_SIZE):
            seen += 1
            if seen > spec.occurrence:
                break
        if cpu.cpl == 3:
            user_step = machine.steps
            user_thread = (machine.memory.read32(tss_esp0) - 1) & -THREAD_SIZE
        machine.step()
    else:
        raise PathNotReached(f"{config.label()}: the {config.path} path's start "
                            f"({spec.describe}) was not reached in {BOOT_BUDGET:,} steps")
    if from_user:
        if user_step is None:
            raise PathNotReached(f"{config.label()}: no user-mode boundary before the "
                                f"{config.path} path's start")
        machine.restore(booted)
        if monitor is not None:
            monitor.restore(monitor_booted)
        while machine.steps < user_step:  # the same steps again: the run is deterministic
            machine.step()
    view = KernelView(system)
    start = machine.snapshot()
    monitor_start = monitor.snapshot() if monitor is not None else None
    scenario = Scenario(config, system, view, spec, start, monitor_start, machine.steps)
    scenario.boundaries = _trace_path(scenario)
    scenario.restore()
    scenario.fingerprint = _fingerprint(scenario)
    if (config.cpus == 1 and config.vector == CONSOLE_VECTOR
            and (config.mode, system.macros) != ("native", "native")):
        from vmi.race.spec import NativeReference

        scenario.reference = NativeReference(config)
    scenario.prepare_seconds = time.perf_counter() - began
    return scenario


def _fingerprint(scenario: Scenario) -> str:
    """A hash of what every schedule of the scenario starts from: its configuration,
    the machine's memory and processors at the start, and the path's boundaries.
    Two processes that prepare the same configuration get the same fingerprint,
    so a worker (or a journal) can check it explores the sweep it was given."""
    import hashlib
    import json

    digest = hashlib.sha256()
    digest.update(repr(attrs_astuple(scenario.config)).encode())
    digest.update(scenario.start["memory"].tobytes())
    digest.update(json.dumps(scenario.start["cpus"], sort_keys=True, default=str).encode())
    digest.update(repr([(b.eip, b.cpl, b.window) for b in scenario.boundaries]).encode())
    digest.update(repr((scenario.lead_in, scenario.timer_hold)).encode())
    return digest.hexdigest()[:16]


def _trace_path(scenario: Scenario) -> list[Boundary]:
    """Step the uninterrupted path from its start and name each boundary."""
    from vmi.cpu import decode
    from vmi.cpu.errors import DecodeError
    from vmi.debugger import memview

    machine = scenario.system.machine
    cpu = scenario.cpu
    view = scenario.view
    monitor = scenario.system.monitor
    scenario.restore()
    machine.set_interleaving([0])  # CPU 0's own path (restored with the snapshot)
    if cpu.cpl == 3:  # a lead-in: from the user instruction to the path's start, with
        # the timer held as in every branch (a tick the first run met is not taken)
        symbols = scenario.system.symbols
        for lead in range(BRANCH_BUDGET):
            if cpu.cpl != 3 and scenario.spec.starts(symbols, cpu, machine):
                scenario.lead_in = lead
                break
            machine.step()
        else:
            raise PathNotReached(f"{scenario.config.label()}: the {scenario.config.path} "
                                f"path's start is not reached from user mode within "
                                f"{BRANCH_BUDGET} steps")
    end = scenario.spec.ender(scenario.system.symbols, cpu, machine)
    out: list[Boundary] = []
    for index in range(BRANCH_BUDGET):
        eip = cpu.eip
        data = memview.read_prefix(cpu, memview.code_linear(cpu), memview.MAX_INSTRUCTION)
        try:
            text = str(decode(data, eip, bits=cpu.code_bits)) if data else "?"
        except DecodeError:
            text = "(bad)"
        window = None
        if monitor is not None and cpu.cpl != 3:
            rom = monitor.rom.window_at(eip)
            window = rom.name if rom is not None else None
        if window is None and cpu.cpl != 3:
            window = view.window_at(eip)
        out.append(Boundary(index, eip, view.name(eip), text, cpu.cpl, window))
        if end(cpu):
            return out
        machine.step()
    raise PathNotReached(f"{scenario.config.label()}: the {scenario.config.path} path did "
                        f"not end within {BRANCH_BUDGET} steps")


# -- sweeps ----------------------------------------------------------------------------------


def schedules(scenario: Scenario, depth: int) -> list[tuple[int, ...]]:
    """Every schedule of ``depth`` interrupts, in order: depth 1 is one interrupt at
    every boundary; depth 2 every ordered pair (at k1, then the next time k2 is
    reached after it); depth 3 every ordered triple, and so on. Nested
    (``Config.horizon`` N > 0): the first at every boundary, each later one at every
    delay of 1..N steps after the one before (n * N**(depth-1) schedules)."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth {depth}: exhaustive sweeps go from 1 to {MAX_DEPTH}")
    first = range(len(scenario.boundaries))
    horizon = scenario.config.horizon
    if horizon:
        return list(itertools.product(first, *[range(1, horizon + 1)] * (depth - 1)))
    return list(itertools.product(first, repeat=depth))


def sweep(scenario: Scenario, depth: int = 1,
          chosen: Iterable[tuple[int, ...]] | None = None) -> list[Outcome]:
    """Run every schedule of ``depth`` (or ``chosen``) from the scenario's start."""
    return [scenario.run_branch(s) for s in (schedules(scenario, depth) if chosen is None
                                             else chosen)]
