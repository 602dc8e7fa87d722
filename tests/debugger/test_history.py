"""The debugger's history costs what changed: its snapshots hold page deltas over one
whole image, restoring any of them copies back only the pages that can differ (no
whole image is ever built), its memory stays within its budget in bytes however
much the guest writes, and reverse execution lands on exactly the state recorded
going forward."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from vmi.debugger.history import History
from vmi.machine import MAX_DELTA_DEPTH, PAGE, Machine, MemoryImage

MiB = 1 << 20


@pytest.fixture
def no_whole_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a snapshot's whole image (16 MiB for the kernel) fails the test."""

    def refuse(self: MemoryImage) -> Any:
        if self.full is None:
            raise AssertionError("a whole memory image was built from page deltas")
        return self.full

    monkeypatch.setattr(MemoryImage, "array", refuse)


def state(machine: Machine) -> tuple[Any, ...]:
    """The machine's registers, step counter and memory (by digest), read without
    taking a snapshot (which would move the machine's base)."""
    return (machine.steps, [cpu.state() for cpu in machine.cpus],
            hashlib.sha256(machine.memory.array.tobytes()).hexdigest())


def scribble(machine: Machine, rng: random.Random, pages: int) -> None:
    """Write a few bytes into ``pages`` random pages (marked written, as any store is)."""
    for _ in range(pages):
        page = rng.randrange(machine.memory.size // PAGE)
        machine.memory.write_bytes(page * PAGE + rng.randrange(PAGE - 8),
                                   rng.randbytes(8))


def test_restore_across_branches_and_folds_is_exact_and_builds_no_whole_image(
        no_whole_images: None) -> None:
    """Snapshots in a tree (restore one, write, snapshot again) and chains past the
    fold depth: restoring any of them, in any order, gives exactly its memory, and
    only the first snapshot is a whole image."""
    rng = random.Random(21)
    machine = Machine(cpus=1, memory_size=MiB)
    snaps, expected = [], []
    for round_ in range(3 * MAX_DELTA_DEPTH):
        if round_ and round_ % 5 == 0:  # branch off an earlier snapshot
            machine.restore(snaps[rng.randrange(len(snaps))])
        scribble(machine, rng, rng.randrange(1, 6))
        snaps.append(machine.snapshot())
        expected.append(bytes(machine.memory.array))
    images = [snap["memory"] for snap in snaps]
    assert images[0].full is not None
    assert all(image.full is None for image in images[1:])
    assert all(image.root() is images[0] and image.depth <= MAX_DELTA_DEPTH
               for image in images)
    for index in [rng.randrange(len(snaps)) for _ in range(60)] + [0, len(snaps) - 1]:
        scribble(machine, rng, 3)  # written since: those pages differ too
        machine.restore(snaps[index])
        assert bytes(machine.memory.array) == expected[index], index


def test_a_snapshot_of_another_chain_is_copied_whole_and_exact(
        no_whole_images: None) -> None:
    """Two machines' snapshots share no image: restoring the other's (a delta) is a
    whole copy of its root with its pages over it, and builds no whole image."""
    rng = random.Random(5)
    first, second = Machine(cpus=1, memory_size=MiB), Machine(cpus=1, memory_size=MiB)
    first.snapshot()
    scribble(second, rng, 20)
    second.snapshot()
    scribble(second, rng, 20)
    foreign = second.snapshot()
    assert foreign["memory"].full is None
    assert first._base.pages_between(foreign["memory"]) is None
    scribble(first, rng, 3)
    first.restore(foreign)
    assert bytes(first.memory.array) == bytes(second.memory.array)
    assert foreign["memory"].full is None


def test_budget_bounds_the_bytes_held_when_every_page_is_written() -> None:
    """A guest that writes all of memory between snapshots: the pages of the dropped
    snapshots are freed, so the history holds no more than its budget, and every
    snapshot kept still restores exactly."""
    rng = random.Random(7)
    machine = Machine(cpus=1, memory_size=MiB)
    budget = 4 * MiB
    history = History(machine, interval=1, budget=budget)
    recorded = {0: bytes(machine.memory.array)}
    for step in range(1, 41):
        machine.memory.write_bytes(0, rng.randbytes(machine.memory.size))
        machine.steps = step
        recorded[step] = bytes(machine.memory.array)
        if history.due(step):
            history.take(step)
        assert history.stored_bytes() <= budget, step
    assert len(history.snapshots) <= 4
    for step in sorted(history.snapshots, reverse=True) + sorted(history.snapshots):
        history.restore(step)
        assert bytes(machine.memory.array) == recorded[step], step


def test_kernel_reverse_after_many_steps_is_exact_and_copies_what_changed(
        no_whole_images: None) -> None:
    """The bundled kernel in the debugger: 100,000 steps forward, then reverse-stepi
    and gotos back to earlier snapshots and forward again. No whole image is built,
    the history holds its one whole image and a few MiB of pages, and each place
    reached has exactly the registers and memory it had going forward."""
    from vmi.debugger.loader import open_engine

    engine, _banner = open_engine()
    machine = engine.machine
    marks = [20_000, 50_001, 73_333, 99_000, 99_999, 100_000]
    recorded = {}
    for mark in marks:
        engine.stepi(mark - machine.steps)
        recorded[mark] = state(machine)
    history = engine.history
    assert len(history.snapshots) > 4
    assert history.stored_bytes() < machine.memory.size + 4 * MiB
    engine.reverse_stepi()
    assert state(machine) == recorded[99_999]
    for mark in (50_001, 20_000, 99_000, 73_333, 100_000):
        engine.goto(mark)
        assert state(machine) == recorded[mark], mark
    images = [snap["memory"] for snap, _platform in history.snapshots.values()]
    assert sum(image.full is not None for image in images) == 1
    assert history.stored_bytes() < machine.memory.size + 4 * MiB
