"""A long ``rep stos`` inside a batch fills memory in bulk (ops.string.bulk_stos);
it must be exactly what stepping one iteration at a time gives: registers, memory,
cycles, instruction counts, step budgets, page crossings, faults and code pages."""

from __future__ import annotations

import numpy as np
import pytest

from vmi.cpu import CPU, CPUException

CODE = 0x1000
STOS = {1: "f3aa", 2: "66f3ab", 4: "f3ab"}  # rep stosb / stosw / stosl


def machine(size: int, count: int, edi: int, *, tail: str = "f4") -> CPU:
    cpu = CPU.flat()
    cpu.mem.write_bytes(CODE, bytes.fromhex(STOS[size] + tail))
    cpu.eip = CODE
    cpu.r[0], cpu.r[1], cpu.r[7] = 0x5A6B7C8D, count, edi
    return cpu


def stepped(cpu: CPU, limit: int) -> CPU:
    for _ in range(limit):
        if cpu.halted:
            break
        cpu.run(1)
    return cpu


def same(a: CPU, b: CPU) -> None:
    assert a.r == b.r and a.eip == b.eip
    assert a.cycles == b.cycles and a.instructions == b.instructions
    assert np.array_equal(a.mem.array, b.mem.array)


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("count,edi", [(3000, 0x20000), (5000, 0x20FFD), (100, 0x33001),
                                       (70, 0x40FFF)])
def test_bulk_equals_stepping(size: int, count: int, edi: int) -> None:
    bulk = machine(size, count, edi)
    bulk.run(100_000)
    same(bulk, stepped(machine(size, count, edi), 100_000))
    assert bulk.halted and bulk.r[1] == 0


@pytest.mark.parametrize("budget", [1, 2, 65, 1000, 2999])
def test_a_step_budget_is_kept_exactly(budget: int) -> None:
    bulk = machine(4, 3000, 0x20000)
    assert bulk.run(budget) == budget
    same(bulk, stepped(machine(4, 3000, 0x20000), budget))


def test_a_fault_stops_the_bulk_at_the_same_iteration() -> None:
    """With paging, the fill reaches a page that is not present: #PF at the same
    iteration, with the same registers and CR2, as when stepped."""
    def paged() -> CPU:
        cpu = machine(4, 3000, 0x200000 - 0x800)
        mem = cpu.mem
        directory, table = 0x100000, 0x101000
        mem.write32(directory, table | 0x3)
        for page in range(0x200):  # 0-2 MiB mapped, the page at 2 MiB is not
            mem.write32(table + 4 * page, page << 12 | 0x3)
        cpu.cr[3] = directory
        cpu.cr[0] |= 0x80000000
        cpu.mode_changed()
        return cpu

    bulk = paged()
    with pytest.raises(CPUException) as bulk_fault:
        bulk.run(100_000)
    step = paged()
    with pytest.raises(CPUException) as step_fault:
        stepped(step, 100_000)
    assert bulk_fault.value.vector == step_fault.value.vector == 14
    same(bulk, step)
    assert bulk.r[7] == 0x200000 and bulk.cr[2] == step.cr[2] == 0x200000


def test_filling_decoded_code_is_seen() -> None:
    """A fill that runs over code already decoded: the code caches forget it, and
    the instruction after the fill runs what the fill left (zeros: add %al,(%eax))."""
    def over_code() -> CPU:
        cpu = machine(1, 200, CODE + 2, tail="f4" + "90" * 300 + "f4")
        cpu.r[0] = 0x90  # fill with nops: the hlt after the stos becomes a nop
        return cpu

    bulk = over_code()
    bulk.run(1_000)
    same(bulk, stepped(over_code(), 1_000))
    assert bulk.halted and bulk.eip == CODE + 2 + 1 + 300 + 1  # past the last hlt


def test_not_first_in_a_batch_ends_the_batch_then_fills() -> None:
    """After other instructions in the same call the stos ends the batch first (its
    budget is only known at the start of one), then fills; same as stepping."""
    def led() -> CPU:
        cpu = CPU.flat()
        cpu.mem.write_bytes(CODE, bytes.fromhex("9090" + STOS[4] + "f4"))
        cpu.eip = CODE
        cpu.r[0], cpu.r[1], cpu.r[7] = 7, 4000, 0x30000
        return cpu

    bulk = led()
    assert bulk.run(100_000) == 2 + 4000 + 1
    same(bulk, stepped(led(), 100_000))
