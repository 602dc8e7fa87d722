"""A sweep's result as data, as the text map ``vmi race`` prints, and as JSON.

``PathReport`` holds one path's boundaries and the outcome of every schedule run
over it; its ``cells`` give, per boundary, which invariant an interrupt there
broke (the race map: one cell per instruction boundary), and ``counterexample``
is the smallest failing schedule (fewest interrupts, then earliest boundaries).

A sweep runs every schedule of its depth. A hypothesis search (``--examples``)
runs some: ``tried`` says which boundaries some schedule put its first interrupt
at, the map shows the others as ``?`` (``UNTRIED``), and ``complete`` is true only
when every schedule of up to ``depth`` interrupts ran, so a search that broke
nothing is never reported as "every invariant held" unless it proved it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from attrs import define, field

from vmi.race.explorer import Outcome, Scenario
from vmi.race.invariants import INVARIANTS

#: The map's character for a boundary no schedule of a search started at.
UNTRIED = "?"
#: One character per invariant in the text map ("." = none broke).
MAP_CHARS = {"lost-work": "L", "nesting": "N", "exactly-once": "X", "integrity": "I",
             "mutual-exclusion": "M", "spin-irq": "S", "liveness": "H", "transparency": "T"}


@define
class PathReport:
    """One path of one configuration, swept."""

    scenario: Scenario
    depth: int
    outcomes: list[Outcome] = field(factory=list)
    searched: bool = False  # outcomes came from a hypothesis search, not a sweep
    #: the invariant whose counterexample is shown and saved (None: any)
    focus: str | None = None

    @property
    def broken(self) -> Counter[str]:
        return Counter(o.invariant for o in self.outcomes if o.invariant is not None)

    def cells(self) -> list[str | None]:
        """Per boundary k: the invariant broken by the schedule whose first interrupt
        is at k (the first broken one over all schedules starting there), or None."""
        cells: list[str | None] = [None] * len(self.scenario.boundaries)
        for outcome in self.outcomes:
            if outcome.schedule and outcome.invariant and cells[outcome.schedule[0]] is None:
                cells[outcome.schedule[0]] = outcome.invariant
        return cells

    def tried(self) -> list[bool]:
        """Per boundary k: whether some schedule run put its first interrupt at k
        (every boundary, for a finished sweep)."""
        tried = [False] * len(self.scenario.boundaries)
        for outcome in self.outcomes:
            if outcome.schedule:
                tried[outcome.schedule[0]] = True
        return tried

    @property
    def complete(self) -> bool:
        """Whether the schedules run are all there are: a sweep always; a search only
        if it happened to run every schedule of 1 to ``depth`` interrupts."""
        if not self.searched:
            return True
        n = len(self.scenario.boundaries)
        every = sum(n ** d for d in range(1, self.depth + 1))
        return len({o.schedule for o in self.outcomes}) >= every

    def counterexample(self) -> Outcome | None:
        """The smallest failing schedule (fewest interrupts, earliest boundaries), of
        those breaking ``focus`` when it is set."""
        failing = [o for o in self.outcomes if not o.ok
                   and (self.focus is None or o.invariant == self.focus)]
        if not failing:
            return None
        return min(failing, key=lambda o: (len(o.schedule), o.schedule))

    def as_dict(self) -> dict[str, Any]:
        sc = self.scenario
        worst = self.counterexample()
        outcomes = self.outcomes if self.depth == 1 else [o for o in self.outcomes if not o.ok]
        return {
            "path": sc.config.path,
            "mode": sc.config.mode,
            "policy": sc.system.policy,
            "macros": sc.system.macros,
            "cpus": sc.config.cpus,
            "depth": self.depth,
            "searched": self.searched,
            "boundaries": [{"index": b.index, "eip": b.eip, "where": b.name,
                            "instruction": b.text, "cpl": b.cpl, "window": b.window}
                           for b in sc.boundaries],
            "cells": self.cells(),
            "tried": self.tried(),
            "complete": self.complete,
            "schedules": len(self.outcomes),
            "broken": dict(sorted(self.broken.items())),
            "outcomes": [o.as_dict() for o in outcomes],
            "counterexample": None if worst is None else {
                **worst.as_dict(), "replay": sc.replay(worst)},
        }


def map_line(report: PathReport) -> str:
    """The map as one line of characters: ``.`` held, a letter per invariant, ``?``
    no schedule started there (a search)."""
    return "".join(UNTRIED if not tried else "." if c is None else MAP_CHARS[c]
                   for c, tried in zip(report.cells(), report.tried(), strict=True))


def render(report: PathReport, *, verbose: bool = True) -> list[str]:
    """The text ``vmi race`` prints for one path."""
    sc = report.scenario
    lines = [f"path {sc.config.path}: {sc.spec.describe}, {len(sc.boundaries)} boundaries "
             f"({sc.config.label()})"]
    if verbose:
        cells = report.cells()
        tried = report.tried()
        lines.append(f"  {'k':>3}  {'eip':<10}  {'where':<28} {'instruction':<34} "
                     f"{'window':<8} result")
        for b, cell, done in zip(sc.boundaries, cells, tried, strict=True):
            window = b.window or ""
            result = cell or ("ok" if done else "not tried")
            lines.append(f"  {b.index:>3}  {b.eip:#010x}  {b.name[:28]:<28} "
                         f"{b.text[:34]:<34} {window:<8} {result}")
    lines.append(f"  map: {map_line(report)}")
    broken = report.broken
    kind = f"depth {report.depth}"
    if report.searched:
        kind = (f"searched, up to {report.depth} interrupt(s), first interrupt at "
                f"{sum(report.tried())} of {len(sc.boundaries)} boundaries")
    summary = ", ".join(f"{name} {count}" for name, count in sorted(broken.items())) or "none"
    lines.append(f"  {len(report.outcomes)} schedules ({kind}); broken: {summary}")
    worst = report.counterexample()
    if worst is not None:
        lines += render_counterexample(sc, worst)
    return lines


def legend(*, untried: bool = False) -> str:
    """What the map's characters mean (``untried``: with the search's ``?``)."""
    names = ", ".join(f"{char} {name}" for name, char in MAP_CHARS.items())
    held = ". no invariant broke in the schedules tried" if untried else \
        ". every invariant held"
    tried = f"; {UNTRIED} not tried by the search" if untried else ""
    return f"({held}; {names}{tried})"


def tried_summary(reports: list[PathReport]) -> str:
    """How much of the paths a search covered, in words: ``the 5 schedules tried (5
    of 11 boundaries tried as the first interrupt)``."""
    schedules = sum(len(r.outcomes) for r in reports)
    tried = sum(sum(r.tried()) for r in reports)
    total = sum(len(r.scenario.boundaries) for r in reports)
    return (f"the {schedules} schedule{'s' if schedules != 1 else ''} tried "
            f"({tried} of {total} boundaries tried as the first interrupt)")


def render_counterexample(sc: Scenario, outcome: Outcome) -> list[str]:
    """The minimal counterexample: each interrupt's step, EIP and symbol, the
    instructions around the first one, and the broken invariant."""
    v = outcome.violation
    assert v is not None
    lines = [f"  counterexample: {len(outcome.schedule)} interrupt(s) at boundary "
             f"{', '.join(str(k) for k in outcome.schedule)}"]
    for inj in outcome.injections:
        lines.append(f"    vector {inj.vector:#04x} raised at step {inj.step} "
                     f"(machine step {inj.machine_step}), eip {inj.eip:#010x} {inj.where}")
    if outcome.schedule:
        k = outcome.schedule[0]
        for b in sc.boundaries[max(0, k - 3):k + 3]:
            mark = ">" if b.index == k else " "
            lines.append(f"    {mark} {b.eip:#010x} {b.name:<28} {b.text}")
    lines.append(f"    broke {v.invariant} at step {v.step} (cpu{v.cpu}, {v.where}): "
                 f"{v.detail}")
    return lines


__all__ = ["INVARIANTS", "MAP_CHARS", "UNTRIED", "PathReport", "legend", "map_line", "render",
           "render_counterexample", "tried_summary"]
