"""``Machine``: CPUs sharing one memory, the devices, a platform, and the step.

``step()`` advances one instruction boundary on one CPU, chosen by the
interleaving: it delivers a pending, deliverable external interrupt (IF set,
no interrupt shadow), or retires one instruction, or (for a halted CPU with
nothing to take) lets its clock run to its next event. Devices are driven by
each CPU's cycle counter. Interrupt schedules are data, ``(cycle, cpu,
vector)``: the vector is raised on that CPU at the first boundary at which its
cycle counter has reached ``cycle``. The same image, interleaving and
schedule give the same trace, bit for bit (``trace_digest``).

``run()`` passes many boundaries at once where nothing can happen between them
(a *quiet batch* on the CPU's fast path). With several CPUs it interleaves them
one boundary per turn, exactly as ``step()`` does, unless the machine has a
``quantum``: then each turn of the interleaving gives its CPU up to ``quantum``
boundaries, run as quiet batches that stop at the CPU's own events, before the
next CPU's turn (see ``run``). Both are deterministic; only the exact
interleaving (no quantum, or quantum 1) is the one ``step()`` gives.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen

from vmi.cpu import CPU, CPUException, Memory
from vmi.cpu.descriptors import UnsupportedSystemFeature
from vmi.cpu.errors import ProcessorShutdown
from vmi.cpu.platform import NativePlatform
from vmi.cpu.realmode import reset
from vmi.devices import Console, InterruptController, IntervalTimer, PortBus

SNAPSHOT_FORMAT = "vmi-snapshot"
#: Version 2 adds ``digest`` (SHA-256 over the metadata and memory); 1 is still read.
SNAPSHOT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@frozen(order=True)
class ScheduledInterrupt:
    """Raise ``vector`` on CPU ``cpu`` once its cycle counter reaches ``cycle``."""

    cycle: int
    cpu: int
    vector: int


#: The quantum ``vmi run`` gives several CPUs: boundaries per CPU per turn. Measured
#: on the bundled kernel's ``--cpus 2`` workload (benchmarks/smp.py): from about 300
#: up, the speed no longer grows (1.7-2.9 M instructions per CPU-second, against
#: 0.45-0.7 one boundary per turn); 1,000 instructions, a few thousand cycles, stay
#: well under a timer tick (33,000 cycles), so an interrupt or a lock released by
#: another CPU is seen within a tenth of a tick, and the lockers still find their
#: lock held.
DEFAULT_QUANTUM = 1000

PAGE = 4096
#: Deltas a snapshot may stack on earlier ones before they are folded into one
#: (over the same whole image, sharing the page copies: no new 16 MiB copy).
MAX_DELTA_DEPTH = 16


class MemoryImage:
    """Physical memory as a snapshot holds it, immutable: either a whole array, or
    the pages written since an earlier image (``parent``) over that image. A machine
    that keeps restoring and snapshotting from one start (the race explorer, the
    debugger's history) so stores only the pages that changed.

    ``page(i)`` reads one page through the chain; ``array()`` (and numpy's
    ``np.asarray(image)``) gives the whole image, built once and kept."""

    __slots__ = ("parent", "pages", "full", "size", "depth")

    def __init__(self, *, full: Any = None, parent: MemoryImage | None = None,
                 pages: dict[int, Any] | None = None) -> None:
        self.full = full
        self.parent = parent
        self.pages = pages or {}
        self.size = int(full.size) if full is not None else parent.size  # type: ignore[union-attr]
        self.depth = 0 if parent is None else parent.depth + 1

    def page(self, index: int) -> Any:
        image: MemoryImage | None = self
        while image is not None and image.full is None:
            found = image.pages.get(index)
            if found is not None:
                return found
            image = image.parent
        assert image is not None
        return image.full[index * PAGE:(index + 1) * PAGE]

    def root(self) -> MemoryImage:
        """The whole image at the bottom of this image's chain."""
        image = self
        while image.parent is not None:
            image = image.parent
        return image

    def folded(self) -> dict[int, Any]:
        """Every page this image holds over its root, newer deltas over older ones
        (the page copies are shared, not copied)."""
        chain: list[MemoryImage] = []
        image: MemoryImage | None = self
        while image is not None and image.full is None:
            chain.append(image)
            image = image.parent
        pages: dict[int, Any] = {}
        for image in reversed(chain):
            pages.update(image.pages)
        return pages

    def flatten(self) -> None:
        """Stack this image directly on its root, holding ``folded()``: what it holds
        is unchanged (so every snapshot and machine holding it stays right), but the
        deltas it stacked on are no longer kept alive by it (the debugger's history
        frees the pages of the snapshots it drops so)."""
        if self.parent is not None and self.parent.parent is not None:
            self.pages, self.parent, self.depth = self.folded(), self.root(), 1

    def pages_between(self, other: MemoryImage) -> set[int] | None:
        """The pages that can differ between this image and ``other``: those of the
        deltas on the way from each down to their nearest common image; None when
        they have none (another chain), so only a whole copy is right."""
        below: dict[int, MemoryImage] = {}
        image: MemoryImage | None = self
        while image is not None:
            below[id(image)] = image
            image = image.parent
        differ: set[int] = set()
        image = other
        while image is not None and id(image) not in below:
            differ.update(image.pages)
            image = image.parent
        if image is None:
            return None
        common = image
        image = self
        while image is not common:
            assert image is not None
            differ.update(image.pages)
            image = image.parent
        return differ

    def array(self) -> Any:
        if self.full is None:
            assert self.parent is not None
            whole = self.parent.array().copy()
            for index, data in self.pages.items():
                whole[index * PAGE:(index + 1) * PAGE] = data
            self.full, self.parent, self.pages = whole, None, {}
        return self.full

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self.array() if dtype is None else self.array().astype(dtype)

    def tobytes(self) -> bytes:
        return bytes(self.array().tobytes())


def memory_image(memory: Any) -> MemoryImage:
    """A snapshot's memory as a ``MemoryImage`` (a plain array is taken whole)."""
    return memory if isinstance(memory, MemoryImage) else MemoryImage(full=memory)


def check_quantum(quantum: int | None) -> int | None:
    """``quantum`` if it is None or a whole number >= 1; else ``ValueError``."""
    if quantum is not None and (isinstance(quantum, bool) or not isinstance(quantum, int)
                                or quantum < 1):
        raise ValueError(f"a quantum is a number of boundaries >= 1 (or None), "
                         f"not {quantum!r}")
    return quantum


class SnapshotError(Exception):
    """A snapshot file that is not one, is damaged, or is of another format version."""


class MachineStopped(Exception):
    """The machine cannot go on (every CPU halted with nothing that could wake it,
    or a fault no platform could deliver); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Machine:
    """One or more CPUs over one physical memory, with timer, interrupt
    controller and console on the port bus. Every CPU starts as after RESET
    (real mode, CS:EIP = F000:FFF0).

    ``platform`` delivers exceptions and interrupts (``deliver_exception(cpu,
    exc)``, ``deliver_interrupt(cpu, vector)``): by default the native platform,
    which does what the hardware does; the VMI monitor is another platform.
    ``interleaving`` is a sequence of CPU indices used cyclically (default
    round-robin): the turns. ``quantum`` is how many boundaries ``run()`` gives a
    CPU per turn: None (the default) is one per turn with several CPUs, each a
    ``step()``, as the race explorer and the debugger need; a number N >= 1 lets
    each CPU run up to N boundaries per turn in quiet batches (N = 1 is the exact
    interleaving again). See ``run``.
    """

    def __init__(
        self,
        *,
        cpus: int = 1,
        memory_size: int = 16 << 20,
        platform: Any = None,
        interleaving: Sequence[int] | None = None,
        schedule: Iterable[ScheduledInterrupt | tuple[int, int, int]] = (),
        quantum: int | None = None,
    ) -> None:
        if cpus < 1:
            raise ValueError("a machine needs at least one CPU")
        self.quantum = quantum
        #: Boundaries the current turn has used (``run`` with a quantum).
        self._slice = 0
        self.memory = Memory(memory_size)
        self.cpus = [CPU(self.memory, index=i) for i in range(cpus)]
        for cpu in self.cpus:
            reset(cpu)
        self.ports = PortBus()
        self.pic = InterruptController(cpus)
        self.timer = IntervalTimer(cpus, clock=lambda i: self.cpus[i].cycles)
        self.console = Console()
        self.ports.attach(self.pic, 0x20, 0x21)
        self.ports.attach(self.timer, 0x40, 0x43)
        self.ports.attach(self.console, 0xE9)
        self.platform = NativePlatform() if platform is None else platform
        for cpu in self.cpus:
            cpu.io = self.ports
            cpu.platform = self.platform
        self.set_interleaving(interleaving)
        #: Per CPU, its scheduled interrupts not yet raised: a heap by (cycle, vector),
        #: so a step looks only at the earliest (``_raise_due``), however many wait.
        self._pending: list[list[ScheduledInterrupt]] = [[] for _ in self.cpus]
        self.add_schedule(schedule)
        self.steps = 0
        self._trace: Any = None
        self._base: MemoryImage | None = None  # memory equals it but for dirty pages

    # -- configuration ------------------------------------------------------
    @property
    def quantum(self) -> int | None:
        """Boundaries ``run()`` gives each CPU per turn (None: one per turn with
        several CPUs, exactly as ``step()``); see ``run``. Set it at any time: a
        turn under way that has already had the new quantum ends after one more
        boundary."""
        return self._quantum

    @quantum.setter
    def quantum(self, quantum: int | None) -> None:
        self._quantum = check_quantum(quantum)

    def set_interleaving(self, interleaving: Sequence[int] | None) -> None:
        order = list(range(len(self.cpus))) if not interleaving else list(interleaving)
        for index in order:
            if not 0 <= index < len(self.cpus):
                raise ValueError(f"interleaving names CPU {index}; the machine has "
                                 f"{len(self.cpus)}")
        self.interleaving = order
        self._turn = 0
        self._slice = 0

    def next_cpu(self) -> CPU:
        """The CPU the next ``step()`` runs (the interleaving's current turn)."""
        return self.cpus[self.interleaving[self._turn]]

    def add_schedule(self, events: Iterable[ScheduledInterrupt | tuple[int, int, int]]) -> None:
        """Schedule interrupts (``ScheduledInterrupt`` or ``(cycle, cpu, vector)``);
        all are checked before any is added."""
        checked = []
        for event in events:
            if not isinstance(event, ScheduledInterrupt):
                event = ScheduledInterrupt(*event)
            if not 0 <= event.cpu < len(self.cpus) or not 0 <= event.vector <= 255:
                raise ValueError(f"bad scheduled interrupt {event}")
            checked.append(event)
        for event in checked:
            heapq.heappush(self._pending[event.cpu], event)

    @property
    def schedule(self) -> list[ScheduledInterrupt]:
        """The scheduled interrupts not yet raised, sorted (a copy: change it with
        ``add_schedule``)."""
        return sorted(event for heap in self._pending for event in heap)

    def scheduled_due(self, cpu: int, cycle: int) -> bool:
        """Whether a scheduled interrupt for ``cpu`` is due at ``cycle`` (not yet raised)."""
        heap = self._pending[cpu]
        return bool(heap) and heap[0].cycle <= cycle

    def start_trace(self) -> None:
        """Hash every step from now on (see ``trace_digest``)."""
        self._trace = hashlib.sha256()

    def trace_digest(self) -> str:
        if self._trace is None:
            raise RuntimeError("start_trace() was not called")
        return self._trace.hexdigest()

    # -- stepping -------------------------------------------------------------
    def _raise_due(self, cpu: CPU) -> None:
        index = cpu.index
        if self.timer.due(index, cpu.cycles):
            self.pic.raise_irq(0, index)
        heap = self._pending[index]
        while heap and heap[0].cycle <= cpu.cycles:  # in (cycle, vector) order
            self.pic.raise_vector(index, heapq.heappop(heap).vector)

    def _next_event_cycle(self, cpu: CPU) -> int | None:
        """The next cycle at which something may raise an interrupt on ``cpu``."""
        heap = self._pending[cpu.index]
        scheduled = heap[0].cycle if heap else None
        if not self.timer.period:
            return scheduled
        deadline = self.timer.deadline[cpu.index]
        return deadline if scheduled is None else min(scheduled, deadline)

    def step(self) -> tuple[int, str, int]:
        """Advance one boundary; returns ``(cpu, kind, value)``: kind is
        ``"instruction"`` (value = EIP it ran), ``"interrupt"`` (value = vector),
        ``"exception"`` (value = vector delivered) or ``"idle"`` (value = cycles)."""
        cpu = self.cpus[self.interleaving[self._turn]]
        self._turn = (self._turn + 1) % len(self.interleaving)
        return self._boundary(cpu)

    def _boundary(self, cpu: CPU) -> tuple[int, str, int]:
        """One boundary on ``cpu`` (``step()`` without moving the turn): raise what is
        due, then take an interrupt, retire an instruction or idle."""
        self._raise_due(cpu)
        result = self._step_cpu(cpu)
        self.steps += 1
        if self._trace is not None:
            self._trace.update(f"{result[0]}:{result[1]}:{result[2]:x}:{cpu.eip:x};".encode())
        return result

    def _step_cpu(self, cpu: CPU) -> tuple[int, str, int]:
        index = cpu.index
        vector = self.pic.next_vector(index)
        if vector is not None and cpu.flags & 0x200 and not cpu.shadow:
            self.pic.acknowledge(index, vector)
            cpu.halted = False
            self._deliver_interrupt(cpu, vector)
            return index, "interrupt", vector
        if cpu.halted:
            wake = self._next_event_cycle(cpu)
            if wake is None or not cpu.flags & 0x200:
                return index, "idle", 0
            spent = max(wake - cpu.cycles, 1)
            cpu.cycles += spent
            return index, "idle", spent
        eip = cpu.eip
        cpu.shadow = False
        try:
            cpu.run(1)
        except CPUException as exc:
            raise MachineStopped(f"cpu{index}: {exc} at eip={cpu.eip:#x} "
                                 "(no platform delivers exceptions)") from None
        except ProcessorShutdown as exc:
            raise MachineStopped(f"cpu{index}: {exc}") from None
        except UnsupportedSystemFeature as exc:  # EIP is on the refused instruction
            raise MachineStopped(f"cpu{index}: {exc} at eip={cpu.eip:#x}") from None
        return index, "instruction", eip

    def _deliver_interrupt(self, cpu: CPU, vector: int) -> None:
        try:
            self.platform.deliver_interrupt(cpu, vector)
        except ProcessorShutdown as exc:
            raise MachineStopped(f"cpu{cpu.index}: {exc}") from None
        except UnsupportedSystemFeature as exc:  # EIP is on the refused instruction
            raise MachineStopped(f"cpu{cpu.index}: {exc} at eip={cpu.eip:#x}") from None

    def run(self, max_steps: int) -> int:
        """Step up to ``max_steps`` boundaries; stop early when every CPU is halted
        and nothing can wake any of them. Returns the boundaries passed.

        Without a ``quantum`` the result is exactly that of calling ``step()``
        repeatedly. When only one CPU runs and no trace is taken, stretches of
        boundaries at which nothing can happen (no interrupt pending or due before
        the stretch ends, no shadow, no single-stepping) run as one batch on the
        CPU's fast path (of at most ``_batch_limit(cpu)`` boundaries, when that is
        not None).

        With a ``quantum`` N, see ``_run_quanta``: each turn of the interleaving
        gives its CPU up to N boundaries.
        """
        if self._quantum is not None:
            return self._run_quanta(max_steps, self._quantum)
        done = 0
        alone = len(set(self.interleaving)) == 1
        while done < max_steps:
            if alone and self._trace is None:
                cpu = self.cpus[self.interleaving[0]]
                room = max_steps - done
                limit = self._batch_limit(cpu)
                quiet, wake = self._quiet_steps(cpu, room if limit is None else min(room, limit))
                if quiet:
                    ran = self._run_quietly(cpu, quiet, wake)
                    if ran:
                        done += ran
                        self._turn = (self._turn + ran) % len(self.interleaving)
                        continue
            cpu_index, kind, value = self.step()
            done += 1
            if kind == "idle" and value == 0 and self.all_stuck():
                break
        return done

    def _run_quanta(self, max_steps: int, quantum: int) -> int:
        """``run`` with a quantum: the CPU of the interleaving's current turn passes
        up to ``quantum`` boundaries, then the turn moves on. Within its turn a CPU
        runs quiet batches (``_quiet_steps``/``_run_quietly``): each stops at the
        CPU's next event (its timer deadline or a scheduled interrupt: the cycle
        limit; a port write; an instruction setting IF or making a shadow; ``hlt``;
        a fault's delivery), after which one boundary (``_boundary``) raises what
        is due and takes what is pending, as ``step()`` would; where no batch can
        run (an interrupt it can take now, halted, TF set) the boundary is all.

        A turn is charged one boundary per instruction retired: the iterations of
        a ``rep`` string instruction done in bulk (``CPU.rep_bulk``) count as the
        one instruction they are, so a CPU clearing pages with ``rep stos`` does
        not hand the others a quantum of spinning per page (``done`` and
        ``max_steps`` still count every boundary).

        A turn ends early when its CPU idles (halted: nothing to do before its
        next event, so the others run). Another CPU's doings reach this one only
        at turn changes: a store to a lock it spins on, an interrupt raised for it
        (an IPI through the PIC) are seen at its next turn. So the interleaving
        differs from ``step()``'s, but the same configuration (image, schedule,
        interleaving, quantum) and the same ``run`` calls give the same trace, and
        the state reached does not depend on how the boundaries are cut into
        ``run`` calls (the turn's progress is kept in ``_slice``, and in snapshots).
        The trace hashes one record per batch (CPU, boundaries passed, EIP after);
        a batch of one boundary is hashed as ``step()`` hashes it, so quantum 1
        gives exactly ``step()``'s trace."""
        done = 0
        order, cpus, count = self.interleaving, self.cpus, len(self.interleaving)
        while done < max_steps:
            cpu = cpus[order[self._turn]]
            room = quantum - self._slice
            if max_steps - done < room:
                room = max_steps - done
            ran = charged = 0
            if room > 1:  # else one boundary: run as step() runs it
                limit = self._batch_limit(cpu)
                if limit is not None and limit < room:
                    room = limit
                quiet, wake = self._quiet_steps(cpu, room)
                if quiet:
                    eip, bulk = cpu.eip, cpu.rep_bulk
                    ran = self._run_quietly(cpu, quiet, wake)
                    charged = ran - (cpu.rep_bulk - bulk)
                    if ran and self._trace is not None:  # one boundary: as step() has it
                        record = (f"{cpu.index}:instruction:{eip:x}" if ran == 1
                                  else f"{cpu.index}:batch:{ran}")
                        self._trace.update(f"{record}:{cpu.eip:x};".encode())
            if ran:
                done += ran
                self._slice += charged
                if self._slice >= quantum:
                    self._turn = (self._turn + 1) % count
                    self._slice = 0
                continue
            _, kind, value = self._boundary(cpu)
            done += 1
            self._slice += 1
            if kind == "idle" or self._slice >= quantum:  # idle: nothing to do, next
                self._turn = (self._turn + 1) % count
                self._slice = 0
                if kind == "idle" and value == 0 and self.all_stuck():
                    break
        return done

    def _batch_limit(self, cpu: CPU) -> int | None:
        """The most boundaries one quiet batch on ``cpu`` may pass (None: no limit
        but the run's). By default the quantum: so a change the batch cannot see
        (a subclass's device programmed by a memory-mapped write inside it) is
        noticed within that many instructions. A subclass may lower it."""
        return self.quantum

    def _quiet_steps(self, cpu: CPU, limit: int) -> tuple[int, int | None]:
        """How many boundaries CPU ``cpu`` may pass as one batch, and the cycle of its
        next event: the batch stops at the first boundary whose cycle count has
        reached it (where ``step()`` would raise the event)."""
        if cpu.halted or cpu.flags & 0x100:
            return 0, None
        if self.pic.pending[cpu.index] and cpu.flags & 0x200:
            return 0, None  # taken at this boundary, or held by its interrupt shadow
        # Pending with IF clear: nothing is taken until an instruction sets IF, and
        # each that can (sti, popf, iret) ends the batch when it does. A shadow with
        # nothing pending holds nothing back: the batch clears it (_run_quietly).
        wake = self._next_event_cycle(cpu)
        if wake is not None and wake <= cpu.cycles:
            return 0, None
        return limit, wake

    def _run_quietly(self, cpu: CPU, count: int, wake: int | None) -> int:
        cpu.shadow = False  # the next instruction retires as step() would run it
        try:
            ran = cpu.run(count, stop_on_event_change=True, cycle_limit=wake)
            ran += cpu.faulted  # a fault's delivery is a boundary, as in step()
        except CPUException as exc:
            raise MachineStopped(f"cpu{cpu.index}: {exc} at eip={cpu.eip:#x} "
                                 "(no platform delivers exceptions)") from None
        except ProcessorShutdown as exc:
            raise MachineStopped(f"cpu{cpu.index}: {exc}") from None
        except UnsupportedSystemFeature as exc:  # EIP is on the refused instruction
            raise MachineStopped(f"cpu{cpu.index}: {exc} at eip={cpu.eip:#x}") from None
        self.steps += ran
        return ran

    def all_stuck(self) -> bool:
        """Every CPU halted with nothing pending that it could take or wait for."""
        for cpu in self.cpus:
            if not cpu.halted:
                return False
            if cpu.flags & 0x200 and (self.pic.pending[cpu.index]
                                      or self._next_event_cycle(cpu) is not None):
                return False
        return True

    # -- snapshots --------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole machine's state (memory as a ``MemoryImage``). Memory writes are
        tracked by page, so a snapshot taken after a restore or another snapshot
        keeps only the pages written since (over that image), and restoring the
        snapshot last taken or restored copies back only the pages written since."""
        base = self._base
        if base is not None:
            pages = self.memory.array.reshape(-1, PAGE)
            written = {i: pages[i].copy() for i in self._dirty_pages()}
            if base.depth < MAX_DELTA_DEPTH:
                memory = MemoryImage(parent=base, pages=written)
            else:  # fold the chain into one delta over its root: pointers, not pages
                folded = base.folded()
                folded.update(written)
                memory = MemoryImage(parent=base.root(), pages=folded)
        else:
            memory = MemoryImage(full=self.memory.array.copy())
        self._clean_since(memory)
        return {
            "cpus": [cpu.state() for cpu in self.cpus],
            "memory": memory,
            "devices": {"pic": self.pic.state(), "timer": self.timer.state(),
                        "console": self.console.state()},
            "schedule": [[e.cycle, e.cpu, e.vector] for e in self.schedule],
            "interleaving": list(self.interleaving),
            "turn": self._turn,
            "steps": self.steps,
            # with a quantum, how far the current turn is: a restored run goes on
            # exactly as the machine would have
            "quantum": self.quantum,
            "slice": self._slice,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a ``snapshot()``. Memory costs the pages that can differ: those
        written since the last snapshot or restore, and those of the deltas between
        that image and the snapshot's (both of one chain: no whole image is built);
        a snapshot of another chain is copied whole. Decoded code survives when the
        pages it came from hold the same bytes and the same mappings in the snapshot;
        else it is forgotten."""
        if len(snap["cpus"]) != len(self.cpus) or snap["memory"].size != self.memory.size:
            raise SnapshotError("snapshot is of a machine with another shape "
                                f"({len(snap['cpus'])} CPUs, {snap['memory'].size} bytes)")
        saved = memory_image(snap["memory"])
        base = self._base
        between = None if base is None else set() if base is saved \
            else base.pages_between(saved)
        if between is not None:
            between.update(self._dirty_pages())
        same_code = self._same_code(saved, between)
        if between is not None:  # only the pages written since, and on the way, differ
            pages = self.memory.array.reshape(-1, PAGE)
            for index in between:
                pages[index] = saved.page(index)
        else:  # another chain: its whole image, then its pages (none built whole)
            root = saved.root()
            self.memory.array[:] = root.full
            pages = self.memory.array.reshape(-1, PAGE)
            for index, data in saved.folded().items():
                pages[index] = data
        self._clean_since(saved)
        if not same_code:
            self.memory.invalidate_code()
        for cpu, state in zip(self.cpus, snap["cpus"], strict=True):
            cpu.set_state(state)
            if same_code:
                cpu.revalidate_code()
        self.pic.set_state(snap["devices"]["pic"])
        self.timer.set_state(snap["devices"]["timer"])
        self.console.set_state(snap["devices"]["console"])
        self._pending = [[] for _ in self.cpus]
        self.add_schedule(snap["schedule"])
        self.interleaving = list(snap["interleaving"])
        self._turn = snap["turn"]
        self.steps = snap["steps"]
        # snapshots from before quanta (and version 1 files) ran without one
        self.quantum = snap.get("quantum")
        self._slice = snap.get("slice", 0)

    def _dirty_pages(self) -> list[int]:
        """The pages written since the last snapshot or restore (memory marks each
        with 1). A few are found by ``bytearray.find`` (well under a microsecond
        each), many by numpy (about 15 µs whatever their number)."""
        dirty, limit = self.memory.dirty, self.memory.size // PAGE
        if len(dirty) - dirty.count(0) > 32:
            found = np.flatnonzero(np.frombuffer(dirty, dtype=np.uint8)).tolist()
            return [index for index in found if index < limit]
        indices = []
        index = dirty.find(1)
        while 0 <= index < limit:
            indices.append(index)
            index = dirty.find(1, index + 1)
        return indices

    def _clean_since(self, base: Any) -> None:
        """Memory now equals ``base``: start tracking the pages written from here."""
        self.memory.dirty[:] = bytes(len(self.memory.dirty))
        self._base = base

    def _same_code(self, saved: Any, differ: set[int] | None = None) -> bool:
        """Whether every page holding decoded code has the same bytes in ``saved`` (so
        the CPUs' decoded code survives a restore, if its mappings do too). When
        ``differ`` is given, the other pages are known to be the same: only the
        code pages among it are compared."""
        current = self.memory.array
        code = self.memory.code_pages
        if differ is not None:
            pages = [page for page in differ if page < len(code) and code[page]]
        else:
            pages = np.flatnonzero(np.frombuffer(code, dtype=np.uint8)).tolist()
        for page in pages:
            start = page * PAGE
            if start >= len(current):
                continue
            if not np.array_equal(current[start:start + PAGE], saved.page(page)):
                return False
        return True

    def save(self, path: str | Path) -> None:
        """Write a snapshot file (a zip: ``meta.json`` + ``memory.bin``; format
        version 2 adds ``digest``, a SHA-256 over both, so any damage is found).
        Atomic: written to a temporary file beside ``path`` and renamed over it, so
        a failure part way (a full disk) leaves the previous file as it was."""
        from vmi.files import write_atomically

        snap = self.snapshot()
        memory = snap.pop("memory").array().tobytes()
        meta = {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
                "memory_size": len(memory), **snap}
        meta["digest"] = _snapshot_digest(meta, memory)

        def write(out: Any) -> None:
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("meta.json", json.dumps(meta))
                archive.writestr("memory.bin", memory)

        write_atomically(path, write)

    def load(self, path: str | Path) -> None:
        """Restore a snapshot file; a missing, foreign, damaged or truncated file
        raises ``SnapshotError`` (one line naming the file) and leaves the machine
        as it was."""
        snap = read_snapshot(path)
        before = self.snapshot()
        try:
            self.restore(snap)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                OverflowError) as error:
            self.restore(before)  # leave the machine as it was
            raise SnapshotError(f"{path}: damaged snapshot ({error!r})") from None


def _snapshot_digest(meta: dict[str, Any], memory: bytes) -> str:
    """SHA-256 over the snapshot's metadata (canonical JSON, without the digest) and
    its memory image."""
    body = json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True,
                      separators=(",", ":"))
    digest = hashlib.sha256(body.encode())
    digest.update(memory)
    return digest.hexdigest()


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """Read and check a snapshot file written by ``Machine.save`` (format version 2,
    checked against its digest; version 1 files, which have none, are still read,
    relying on the zip's CRC-32). Every problem is a ``SnapshotError`` whose one
    line names the file: ``not a vmi snapshot`` or ``damaged snapshot`` and why."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            raw = archive.read("memory.bin")
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path}: is a directory, not a snapshot file") from None
    except PermissionError as error:
        raise SnapshotError(f"{path}: {error.strerror}") from None
    except zipfile.BadZipFile as error:
        # not a zip at all, or one whose structure or CRC-32 is damaged
        what = "damaged snapshot" if zipfile.is_zipfile(path) else "not a vmi snapshot"
        raise SnapshotError(f"{path}: {what} ({error})") from None
    except KeyError as error:  # a zip without our members
        raise SnapshotError(f"{path}: not a vmi snapshot (no {error})") from None
    except Exception as error:  # noqa: BLE001 - zlib.error, EOFError, a flipped flag...
        # A bit flip in a zip can surface as almost anything zipfile or zlib raise
        # (zlib.error, EOFError, NotImplementedError for a "new" compression method,
        # RuntimeError for an "encrypted" member, UnicodeDecodeError, ...).
        raise SnapshotError(f"{path}: damaged snapshot ({type(error).__name__}: "
                            f"{error})") from None
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: not a vmi snapshot (format {meta.get('format')!r})"
                            if isinstance(meta, dict) else f"{path}: not a vmi snapshot")
    version = meta.get("version")
    if version not in READABLE_VERSIONS:
        raise SnapshotError(f"{path}: snapshot format version {version}, this vmi reads "
                            f"versions {', '.join(str(v) for v in READABLE_VERSIONS)}")
    if version >= 2 and meta.get("digest") != _snapshot_digest(meta, raw):
        raise SnapshotError(f"{path}: damaged snapshot (its digest does not match its "
                            "content)")
    if len(raw) != meta.get("memory_size"):
        raise SnapshotError(f"{path}: damaged snapshot (memory is {len(raw)} bytes, "
                            f"header says {meta.get('memory_size')})")
    try:
        snap = {key: meta[key] for key in
                ("cpus", "devices", "schedule", "interleaving", "turn", "steps")}
    except KeyError as missing:
        raise SnapshotError(f"{path}: damaged snapshot (no {missing})") from None
    for key in ("quantum", "slice"):  # absent from files written before quanta
        if key in meta:
            snap[key] = meta[key]
    snap["memory"] = np.frombuffer(raw, dtype=np.uint8).copy()
    return snap
