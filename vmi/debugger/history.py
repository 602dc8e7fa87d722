"""The debugger's timeline: periodic snapshots, the CPU of every step, and edits.

Reverse execution here is the cheap recipe of a deterministic interpreter:
the machine's state is a function of its state at an earlier step plus the
steps in between, so going back to step ``t`` means restoring the nearest
snapshot at or before ``t`` and re-executing up to ``t`` (DESIGN.md: same
image + same schedule = the same trace, bit for bit).

What a person changes by hand (a register, memory, an injected interrupt) is
an *edit*: it is applied at a global step and kept on the timeline, so a
replay that passes that step applies it again and the past stays what it was.
An edit rewrites the future, so every snapshot and log entry after its step is
forgotten.

Snapshots are taken on arrival at a step, before that step's edits are
applied; restoring one means: restore it, then apply the edits of its step.
They cost what changed: the machine's snapshots hold memory as a
``vmi.machine.MemoryImage``, one whole image at the origin and after it only the
pages written since the snapshot before (chained deltas, folded into one over the
whole image every ``MAX_DELTA_DEPTH``, sharing the page copies), and restoring one
copies back only the pages that can differ from the memory as it is (no whole
16 MiB image is built). Their memory is bounded by a budget in bytes, counting
every page copy and whole image they hold once (``stored_bytes``), and their
number by as many as the budget would hold were each whole (so the bound holds
whatever the guest writes): past either, the spacing doubles, every other
snapshot is dropped, and each kept one is folded into one delta over the whole
image, so the pages only the dropped ones held are freed.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import Any

from attrs import frozen

#: Steps between snapshots at first (doubles when the memory budget is reached).
DEFAULT_INTERVAL = 1000
#: Memory the snapshots may take together, in bytes (page copies and whole images,
#: each counted once however many snapshots share it).
DEFAULT_BUDGET = 192 << 20
#: How long a restore sleeps so another thread can take the GIL (see ``restore``).
YIELD_SECONDS = 50e-6
#: Snapshots kept whatever the budget (a budget below one whole image still keeps
#: reverse execution's replays bounded).
MIN_SNAPSHOTS = 4


@frozen
class Edit:
    """A change made by hand at global step ``step``: ``apply(machine)`` makes it."""

    step: int
    description: str
    apply: Callable[[Any], None]


class History:
    """Snapshots, per-step CPU log and edits of one machine (see the module docstring).

    ``origin`` is the first step reverse execution can reach: the machine's step
    counter when the history began. ``cpus[i]`` is the CPU that took step
    ``origin + i`` (the step that led from ``origin + i`` to ``origin + i + 1``);
    the log runs as far as the machine has been, and stays valid after a
    reverse move because re-execution is deterministic.
    """

    def __init__(self, machine: Any, *, interval: int = DEFAULT_INTERVAL,
                 budget: int = DEFAULT_BUDGET) -> None:
        self.machine = machine
        self.origin: int = machine.steps
        self.interval = max(1, interval)
        self.budget = budget
        self.max_snapshots = max(MIN_SNAPSHOTS, budget // max(1, machine.memory.size))
        self.snapshots: dict[int, tuple[dict[str, Any], Any]] = {}
        self.cpus = array("B")
        self.edits: dict[int, list[Edit]] = {}
        self.take(self.origin)

    # -- the log ----------------------------------------------------------------------
    @property
    def end(self) -> int:
        """One past the last step whose CPU is known."""
        return self.origin + len(self.cpus)

    def note_step(self, step: int, cpu: int) -> None:
        """CPU ``cpu`` took step ``step`` (the machine was at ``step`` before it)."""
        index = step - self.origin
        if index < len(self.cpus):
            self.cpus[index] = cpu
        elif index == len(self.cpus):
            self.cpus.append(cpu)

    def cpu_of(self, step: int) -> int | None:
        index = step - self.origin
        return self.cpus[index] if 0 <= index < len(self.cpus) else None

    def last_step_of(self, cpu: int | None, before: int) -> int | None:
        """The latest step ``< before`` taken by ``cpu`` (any CPU when None)."""
        last = min(before, self.end) - 1
        if cpu is None:
            return last if last >= self.origin else None
        for step in range(last, self.origin - 1, -1):
            if self.cpus[step - self.origin] == cpu:
                return step
        return None

    # -- snapshots ----------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return (step - self.origin) % self.interval == 0 and step not in self.snapshots

    def take(self, step: int) -> None:
        """Snapshot the machine (and a platform that keeps state of its own) at ``step``."""
        platform = self.machine.platform
        platform_state = platform.snapshot() if callable(getattr(platform, "snapshot", None)) \
            else None
        self.snapshots[step] = (self.machine.snapshot(), platform_state)
        if len(self.snapshots) > self.max_snapshots or self._over_budget():
            self._thin()

    def stored_bytes(self) -> int:
        """The bytes of memory the snapshots hold: every whole image and page copy
        reachable from them (through the deltas they stack on), each counted once."""
        seen: set[int] = set()
        total = 0
        for machine_state, _platform in self.snapshots.values():
            image = machine_state["memory"]
            while image is not None and id(image) not in seen:
                seen.add(id(image))
                if image.full is not None:
                    total += image.full.nbytes
                for data in image.pages.values():
                    if id(data) not in seen:
                        seen.add(id(data))
                        total += data.nbytes
                image = image.parent
        return total

    def _over_budget(self) -> bool:
        return len(self.snapshots) > MIN_SNAPSHOTS and self.stored_bytes() > self.budget

    def _thin(self) -> None:
        """Double the spacing and keep the snapshots on the new grid (and the origin)
        until both the count and the budget in bytes hold."""
        while len(self.snapshots) > self.max_snapshots or self._over_budget():
            self.interval *= 2
            self.snapshots = {step: snap for step, snap in self.snapshots.items()
                              if step == self.origin or (step - self.origin) % self.interval == 0}
        self._fold()

    def _fold(self) -> None:
        """Stack each kept snapshot's memory directly on its whole image
        (``MemoryImage.flatten``: the same bytes, the same object, so the machine
        whose base it is keeps restoring it cheaply), so the deltas of the dropped
        snapshots it stacked on are freed."""
        for machine_state, _platform in self.snapshots.values():
            machine_state["memory"].flatten()

    def nearest(self, step: int) -> int:
        """The step of the latest snapshot at or before ``step``."""
        return max(s for s in self.snapshots if s <= step)

    def restore(self, step: int) -> None:
        """Put the machine back at snapshot ``step`` and apply that step's edits."""
        machine_state, platform_state = self.snapshots[step]
        self.machine.restore(machine_state)
        # Let the process's other threads run: a restore used to copy whole images
        # with the GIL released, which let a thread waiting on it (the tests' gdb
        # client reading an ack while a reverse-continue replays) take it; the
        # brief releases of the engine's ^C polls alone do not (the waiting thread
        # sees the GIL change hands and never asks for it), so it starved.
        time.sleep(YIELD_SECONDS)
        platform = self.machine.platform
        if platform_state is not None and callable(getattr(platform, "restore", None)):
            platform.restore(platform_state)
        self.apply_edits(step)

    # -- edits -------------------------------------------------------------------------
    def apply_edits(self, step: int) -> None:
        for edit in self.edits.get(step, ()):
            edit.apply(self.machine)

    def add_edit(self, edit: Edit) -> None:
        """Keep ``edit`` on the timeline and forget the future it changes."""
        self.edits.setdefault(edit.step, []).append(edit)
        self.forget_after(edit.step)

    def forget_after(self, step: int) -> None:
        """Drop snapshots after ``step`` and the log from ``step`` on."""
        self.snapshots = {s: snap for s, snap in self.snapshots.items() if s <= step}
        keep = max(0, step - self.origin)
        if keep < len(self.cpus):
            del self.cpus[keep:]

    def pending_edits(self) -> list[Edit]:
        """Every edit on the timeline, in step order."""
        return [edit for step in sorted(self.edits) for edit in self.edits[step]]
