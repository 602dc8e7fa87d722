"""The machine: stepping, schedules, the timer, determinism and snapshots."""

from __future__ import annotations

import json
import random
import re
import time
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmi.machine import Machine, MachineStopped, ScheduledInterrupt, SnapshotError

# loop: inc %eax ; add %eax,%ebx ; dec %ecx ; jne loop ; then spin: jmp .
LOOP = bytes.fromhex("4001c34975fa" + "ebfe")


class RecordingPlatform:
    """Takes interrupts by recording them (no frame): enough to test the machine."""

    def __init__(self) -> None:
        self.interrupts: list[tuple[int, int, int, int]] = []

    def deliver_interrupt(self, cpu, vector):
        self.interrupts.append((cpu.index, vector, cpu.eip, cpu.cycles))

    def deliver_exception(self, cpu, exc):  # pragma: no cover - not reached here
        raise AssertionError(f"unexpected {exc}")


def flat_machine(cpus=1, **kwargs) -> Machine:
    machine = Machine(cpus=cpus, memory_size=1 << 20, platform=RecordingPlatform(), **kwargs)
    machine.memory.load(0x1000, LOOP)
    for cpu in machine.cpus:
        cpu.enter_flat_mode(0)
        cpu.eip = 0x1000
        cpu.regs.ecx = 50
        cpu.eflags = 0x202  # IF=1
    return machine


def test_step_retires_one_instruction_on_the_chosen_cpu():
    machine = flat_machine(cpus=2, interleaving=[1, 1, 0])
    kinds = [machine.step() for _ in range(3)]
    assert kinds == [(1, "instruction", 0x1000), (1, "instruction", 0x1001),
                     (0, "instruction", 0x1000)]
    assert machine.cpus[1].regs.eax == 1 and machine.cpus[0].regs.eax == 1


def test_scheduled_interrupt_arrives_at_the_first_boundary_past_its_cycle():
    machine = flat_machine(schedule=[(5, 0, 0x30)])
    events = [machine.step() for _ in range(6)]
    delivered = [e for e in events if e[1] == "interrupt"]
    assert delivered == [(0, "interrupt", 0x30)]
    ((cpu, vector, eip, cycles),) = machine.platform.interrupts
    assert vector == 0x30 and cycles >= 5
    # before it, every boundary had fewer than 5 cycles
    assert machine.pic.delivered[0] == 1 and machine.pic.raised[0] == 1


def test_interrupt_waits_while_if_is_clear_and_for_the_shadow():
    """SDM Vol.3A §6.8.1: maskable interrupts need IF=1 and no STI/MOV SS shadow."""
    machine = flat_machine(schedule=[(0, 0, 0x31)])
    cpu = machine.cpus[0]
    cpu.eflags = 0x2
    assert machine.step()[1] == "instruction"
    cpu.eflags = 0x202
    cpu.shadow = True
    assert machine.step()[1] == "instruction"  # shadow holds it off one boundary
    assert machine.step() == (0, "interrupt", 0x31)


def test_timer_ticks_every_period_on_every_cpu():
    machine = flat_machine(cpus=2)
    machine.ports.write(0x43, 1, 0x34)
    machine.ports.write(0x40, 1, 10)  # divisor 10
    machine.ports.write(0x40, 1, 0)
    period = 10 * machine.timer.cycles_per_tick
    machine.run(2000)
    for index in range(2):
        cycles = machine.cpus[index].cycles
        assert machine.timer.ticks[index] == pytest.approx(cycles / period, abs=2)
        assert machine.timer.ticks[index] >= 3


def test_same_schedule_same_trace_one_and_two_cpus():
    for cpus in (1, 2):
        digests = []
        for _ in range(2):
            machine = flat_machine(cpus=cpus, schedule=[(7, 0, 0x30), (40, cpus - 1, 0x31)])
            machine.start_trace()
            machine.run(400)
            digests.append(machine.trace_digest())
        assert digests[0] == digests[1]
    other = flat_machine(cpus=2, schedule=[(8, 0, 0x30), (40, 1, 0x31)])
    other.start_trace()
    other.run(400)
    assert other.trace_digest() != digests[0]


def test_snapshot_restore_replays_identically():
    machine = flat_machine(cpus=2, schedule=[(30, 1, 0x40)])
    machine.run(20)
    snap = machine.snapshot()
    machine.start_trace()
    machine.run(100)
    first = machine.trace_digest()
    registers = [cpu.regs.as_dict() for cpu in machine.cpus]
    machine.restore(snap)
    machine.start_trace()
    machine.run(100)
    assert machine.trace_digest() == first
    assert [cpu.regs.as_dict() for cpu in machine.cpus] == registers


def test_snapshot_file_round_trip(tmp_path):
    machine = flat_machine(schedule=[(300, 0, 0x40)])
    machine.run(37)
    path = tmp_path / "m.vmisnap"
    machine.save(path)
    expected = machine.cpus[0].regs.as_dict()
    machine.run(50)
    machine.load(path)
    assert machine.cpus[0].regs.as_dict() == expected
    assert machine.steps == 37 and machine.schedule == [ScheduledInterrupt(300, 0, 0x40)]


def test_corrupt_and_foreign_snapshots_are_refused(tmp_path):
    machine = flat_machine()
    garbage = tmp_path / "garbage.vmisnap"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(SnapshotError, match="not a vmi snapshot"):
        machine.load(garbage)
    foreign = tmp_path / "foreign.vmisnap"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("meta.json", '{"format": "other", "version": 1}')
        archive.writestr("memory.bin", b"")
    with pytest.raises(SnapshotError, match="format 'other'"):
        machine.load(foreign)
    good = tmp_path / "good.vmisnap"
    machine.save(good)
    truncated = tmp_path / "truncated.vmisnap"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(SnapshotError):
        machine.load(truncated)
    with pytest.raises(SnapshotError, match="no such file"):
        machine.load(tmp_path / "missing.vmisnap")


def test_machine_starts_at_the_reset_vector_and_runs_the_bios_window():
    """SDM Vol.3A §9.1.1: CS=F000 (base FFFF0000), EIP=FFF0 after RESET."""
    machine = Machine(memory_size=1 << 20)
    cpu = machine.cpus[0]
    assert (cpu.sreg[1], cpu.seg_base[1], cpu.eip, cpu.cr[0] & 1) == (0xF000, 0xFFFF0000,
                                                                     0xFFF0, 0)
    # at physical FFFF0 (aliased below 4 GiB): mov $0x1234,%ax (16-bit code)
    machine.memory.load(0xFFFF0, bytes.fromhex("b83412"))
    assert machine.step() == (0, "instruction", 0xFFF0)
    assert cpu.regs.ax == 0x1234


def test_triple_fault_stops_the_machine_with_a_reason():
    """An empty IVT limit makes every delivery fault: #UD, then #GP, then shutdown."""
    machine = Machine(memory_size=1 << 20)
    cpu = machine.cpus[0]
    machine.memory.load(0xFFFF0, bytes.fromhex("0f0b"))  # ud2
    cpu.idtr = [0, 0]
    with pytest.raises(MachineStopped, match="shut down|triple fault"):
        machine.run(5)


def test_sti_shadow_holds_a_pending_interrupt_for_exactly_one_instruction():
    """SDM Vol.3A §6.8.1: after STI sets IF, the next instruction completes first."""
    machine = flat_machine(schedule=[(0, 0, 0x30)])
    cpu = machine.cpus[0]
    machine.memory.load(0x1000, bytes.fromhex("fb9090"))  # sti ; nop ; nop
    cpu.eflags = 0x2  # IF=0: the interrupt waits
    assert machine.step() == (0, "instruction", 0x1000)  # sti
    assert machine.step() == (0, "instruction", 0x1001)  # shadow: nop runs first
    assert machine.step() == (0, "interrupt", 0x30)
    assert machine.platform.interrupts[0][2] == 0x1002


def test_sti_with_if_already_set_makes_no_shadow():
    machine = flat_machine(schedule=[(1, 0, 0x30)])
    machine.memory.load(0x1000, bytes.fromhex("fb9090"))
    assert machine.step() == (0, "instruction", 0x1000)
    assert machine.step() == (0, "interrupt", 0x30)


def test_mov_ss_shadow_holds_interrupts_for_one_instruction():
    """SDM Vol.3A §6.8.3: MOV SS blocks interrupts until after the next instruction
    (shown in real mode, where any selector is a valid SS)."""
    machine = Machine(memory_size=1 << 20, platform=RecordingPlatform())
    cpu = machine.cpus[0]
    cpu.eflags = 0x202
    machine.memory.load(0xFFFF0, bytes.fromhex("8cd08ed09090"))  # mov %ss,%ax; mov %ax,%ss
    assert machine.step() == (0, "instruction", 0xFFF0)
    machine.pic.raise_vector(0, 0x31)
    assert machine.step() == (0, "interrupt", 0x31)  # no shadow after a read of SS
    assert machine.step() == (0, "instruction", 0xFFF2)  # mov %ax,%ss
    machine.pic.raise_vector(0, 0x32)
    assert machine.step() == (0, "instruction", 0xFFF4)  # held by the shadow
    assert machine.step() == (0, "interrupt", 0x32)


def _timer_program() -> Machine:
    """Real mode: program the PIT, enable interrupts, count in a loop; the IRQ 0
    handler counts ticks in memory and sends an EOI."""
    machine = Machine(memory_size=1 << 20)
    # at F000:FFF0: jmp far 0000:1000
    machine.memory.load(0xFFFF0, bytes.fromhex("ea00100000"))
    main = (
        "31c08ed88ed0bc0070"  # xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7000
        "c70680000020"  # mov word [0x80],0x2000  (vector 0x20 offset)
        "c70682000000"  # mov word [0x82],0x0000  (segment)
        "b034e643"  # mov al,0x34; out 0x43,al
        "b005e640"  # mov al,5; out 0x40,al
        "b000e640"  # mov al,0; out 0x40,al
        "fb"  # sti
        "4166ff060005ebf8"  # loop: inc cx; inc dword [0x500]; jmp loop
    )
    machine.memory.load(0x1000, bytes.fromhex(main))
    handler = "ff060006" "b020e620" "cf"  # inc word [0x600]; mov al,0x20; out 0x20,al; iret
    machine.memory.load(0x2000, bytes.fromhex(handler))
    return machine


def test_run_batches_give_exactly_the_steps_result():
    """Machine.run's fast path must not move any interrupt by a single boundary."""
    by_run, by_step = _timer_program(), _timer_program()
    by_run.run(5000)
    for _ in range(5000):
        by_step.step()
    a, b = by_run.cpus[0], by_step.cpus[0]
    assert by_run.memory.read16(0x600) > 5  # the timer really interrupted the loop
    assert a.state() == b.state()
    assert (by_run.memory.array == by_step.memory.array).all()
    assert by_run.steps == by_step.steps == 5000
    assert by_run.pic.state() == by_step.pic.state()


def test_sti_hlt_in_a_batch_wakes_on_the_next_interrupt():
    """A batched run must leave no stale shadow: cli; sti; hlt then an interrupt."""
    machine = flat_machine()
    cpu = machine.cpus[0]
    machine.memory.load(0x1000, bytes.fromhex("fafbf4"))
    cpu.eip = 0x1000
    machine.run(10)
    assert cpu.halted and not cpu.shadow
    machine.pic.raise_vector(0, 0x20)
    assert machine.step() == (0, "interrupt", 0x20)


def test_restore_copies_back_only_written_pages_and_stays_exact():
    """After a snapshot, writes mark their pages dirty; restoring that snapshot copies
    back just those pages, and the memory is exactly the snapshot's, whichever
    snapshot is restored and in whichever order."""
    import numpy as np

    from vmi.system import boot_system

    machine = boot_system("vmi").machine
    machine.run(90_000)
    first = machine.snapshot()
    assert not any(machine.memory.dirty)
    machine.run(3_000)
    written = sum(machine.memory.dirty)
    assert 0 < written < 200  # a few pages, not the 4096 of the machine
    machine.memory.write_bytes(0x5000, b"\xAA" * 5000)  # a loader's write, two pages
    second = machine.snapshot()
    machine.run(3_000)
    machine.restore(first)  # not the last snapshot: all of memory
    assert np.array_equal(machine.memory.array, first["memory"])
    machine.run(2_000)
    machine.restore(first)  # the base now: only the dirty pages
    assert np.array_equal(machine.memory.array, first["memory"])
    machine.restore(second)
    assert np.array_equal(machine.memory.array, second["memory"])
    assert machine.memory.read8(0x5000 + 4999) == 0xAA


@pytest.mark.parametrize("sets_if", ["sti", "popf"])
def test_a_batch_with_if_clear_ends_where_an_instruction_sets_it(sets_if):
    """An interrupt pending while IF is clear is taken at the first boundary after
    the instruction that sets IF (one later for STI's shadow), batched or stepped.
    (IRET setting IF is covered by the bundled workload below.)"""
    # cli; mov $3,%ecx; spin: dec %ecx; jne spin; the IF-setting tail; nop; nop; jmp .
    tails = {"sti": "fb",
             "popf": "9c5881c80002000050" "9d"}  # pushf; pop; or $0x200,%eax; push; popf
    code = bytes.fromhex("fa" "b903000000" "49" "75fd" + tails[sets_if] + "9090" "ebfe")
    runs = []
    for batched in (True, False):
        machine = flat_machine()
        machine.memory.load(0x1000, code)
        machine.cpus[0].eflags = 0x2  # IF clear from the start
        machine.cpus[0].regs.esp = 0x8000
        machine.pic.raise_vector(0, 0x40)
        if batched:
            machine.run(30)
        else:
            for _ in range(30):
                machine.step()
        runs.append((machine.platform.interrupts, machine.cpus[0].state(), machine.steps))
    assert runs[0] == runs[1]
    (delivered,) = runs[0][0]
    tail_end = 0x1000 + 9 + len(bytes.fromhex(tails[sets_if]))
    assert delivered[2] == (tail_end + 1 if sets_if == "sti" else tail_end)


@pytest.mark.parametrize("mode", ["native", "vmi"])
def test_the_bundled_workload_batched_is_exactly_the_workload_stepped(mode):
    """Machine.run's batches (through interrupt shadows, and with IF clear while an
    interrupt waits) leave every register, every byte and every count exactly as
    stepping each boundary does, over the whole bundled workload."""
    from vmi.system import boot_system

    batched, stepped = boot_system(mode), boot_system(mode)
    batched.machine.run(10_000_000)
    assert batched.guest.completed and not batched.guest.check_failures()
    for _ in range(batched.machine.steps):
        stepped.machine.step()
    assert [c.state() for c in stepped.machine.cpus] == [c.state() for c in batched.machine.cpus]
    assert (stepped.machine.memory.array == batched.machine.memory.array).all()
    assert stepped.machine.pic.state() == batched.machine.pic.state()
    assert stepped.guest.completed


# -- snapshot files: atomic, checked ------------------------------------------------------------
SNAPSHOT_ERROR = r"^\S+: (not a vmi snapshot|damaged snapshot) \(.+\)$"


@pytest.fixture(scope="module")
def saved_snapshot(tmp_path_factory):
    """A snapshot file of a small machine, its bytes, and the state it holds."""
    machine = flat_machine(schedule=[(300, 0, 0x40)])
    machine.run(37)
    path = tmp_path_factory.mktemp("snap") / "good.vmisnap"
    machine.save(path)
    return path.read_bytes(), machine.cpus[0].regs.as_dict(), machine.steps


def one_line_snapshot_error(machine, path):
    with pytest.raises(SnapshotError) as error:
        machine.load(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_flipped_bit_anywhere_is_one_line_or_changes_nothing(saved_snapshot, tmp_path, data):
    """Any single flipped bit: either a ``SnapshotError`` of one line saying the file
    is not a snapshot or is damaged, or (a bit no reader looks at, like a zip
    timestamp) exactly the state that was saved. Never zlib.error or a wrong state."""
    good, registers, steps = saved_snapshot
    position = data.draw(st.integers(0, len(good) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = bytearray(good)
    damaged[position] ^= 1 << bit
    path = tmp_path / "flipped.vmisnap"
    path.write_bytes(bytes(damaged))
    machine = flat_machine()
    before = machine.cpus[0].regs.as_dict()
    try:
        machine.load(path)
    except SnapshotError as error:
        message = str(error)
        assert "\n" not in message and re.match(SNAPSHOT_ERROR, message), message
        assert machine.cpus[0].regs.as_dict() == before  # left as it was
    else:
        assert machine.cpus[0].regs.as_dict() == registers and machine.steps == steps


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_truncated_snapshot_is_one_line(saved_snapshot, tmp_path, data):
    good, _, _ = saved_snapshot
    length = data.draw(st.integers(0, len(good) - 1), label="length")
    path = tmp_path / "cut.vmisnap"
    path.write_bytes(good[:length])
    message = one_line_snapshot_error(flat_machine(), path)
    assert re.match(SNAPSHOT_ERROR, message), message


def test_the_digest_finds_damage_the_zip_cannot(tmp_path, saved_snapshot):
    """A snapshot rewritten with a changed field and a valid zip (CRC and all)."""
    good, _, _ = saved_snapshot
    source = tmp_path / "good.vmisnap"
    source.write_bytes(good)
    with zipfile.ZipFile(source) as archive:
        meta = json.loads(archive.read("meta.json"))
        memory = archive.read("memory.bin")
    meta["steps"] += 1
    forged = tmp_path / "forged.vmisnap"
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("memory.bin", memory)
    message = one_line_snapshot_error(flat_machine(), forged)
    assert "damaged snapshot (its digest does not match its content)" in message


def test_a_version_1_snapshot_still_loads(tmp_path, saved_snapshot):
    good, registers, steps = saved_snapshot
    source = tmp_path / "good.vmisnap"
    source.write_bytes(good)
    with zipfile.ZipFile(source) as archive:
        meta = json.loads(archive.read("meta.json"))
        memory = archive.read("memory.bin")
    assert meta["version"] == 2 and len(meta.pop("digest")) == 64
    meta["version"] = 1
    old = tmp_path / "v1.vmisnap"
    with zipfile.ZipFile(old, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("memory.bin", memory)
    machine = flat_machine()
    machine.load(old)
    assert machine.cpus[0].regs.as_dict() == registers and machine.steps == steps


def test_a_save_that_fails_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    """A full disk while the memory image is written: the previous snapshot is intact
    and loads, and no temporary file is left behind."""
    machine = flat_machine()
    machine.run(10)
    path = tmp_path / "m.vmisnap"
    machine.save(path)
    previous = path.read_bytes()
    machine.run(20)
    real = zipfile.ZipFile.writestr

    def full_disk(self, name, data, *args, **kwargs):
        if name == "memory.bin":
            self.fp.write(bytes(data[:1000]))  # part of it reaches the disk
            raise OSError(28, "No space left on device")
        return real(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full_disk)
    with pytest.raises(OSError, match="No space left"):
        machine.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["m.vmisnap"]
    fresh = flat_machine()
    fresh.load(path)
    assert fresh.steps == 10


# -- a long interrupt schedule ----------------------------------------------------------------
def step_seconds(machine, steps=3000) -> float:
    began = time.perf_counter()
    for _ in range(steps):
        machine.step()
    return time.perf_counter() - began


def test_a_step_costs_the_same_with_ten_thousand_future_interrupts():
    """A step looks only at the earliest scheduled interrupt of its CPU (a heap), not
    at every one: 10,000 entries in the future do not slow it (before, every step
    scanned them all, about 60 times slower). A ratio, not a time."""
    def machine_with(entries: int) -> Machine:
        machine = flat_machine()
        machine.cpus[0].regs.ecx = 1 << 30  # loop for ever
        machine.add_schedule((10**12 + i, 0, 0x40 + i % 16) for i in range(entries))
        return machine

    empty, full = machine_with(0), machine_with(10_000)
    step_seconds(empty, 500)  # warm the decoded code
    step_seconds(full, 500)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(5):  # alternated, the fastest of each: other load on the machine cancels
        times[0].append(step_seconds(empty, 5000))
        times[1].append(step_seconds(full, 5000))
    ratio = min(times[1]) / min(times[0])
    assert ratio < 3, f"a step with 10,000 scheduled interrupts is {ratio:.1f}x slower"
    assert len(full.schedule) == 10_000


def test_a_long_schedule_gives_the_same_trace_in_any_order():
    """2,000 interrupts on two CPUs, given sorted, reversed or shuffled: the same trace,
    each delivered at its first boundary past its cycle, the rest left pending."""
    events = [(40 + 3 * i, i % 2, 0x40 + i % 7) for i in range(2000)]
    orders = [sorted(events), sorted(events, reverse=True),
              random.Random(5).sample(events, len(events))]
    digests, delivered = [], []
    for order in orders:
        machine = flat_machine(cpus=2, schedule=order)
        machine.start_trace()
        for _ in range(3000):
            machine.step()
        digests.append(machine.trace_digest())
        delivered.append(list(machine.platform.interrupts))
        pending = machine.schedule
        assert pending == sorted(pending) and pending
        raised = {ScheduledInterrupt(*e) for e in events} - set(pending)
        # raised: due when its CPU last stepped; pending: not yet due then
        assert all(e.cycle <= machine.cpus[e.cpu].cycles for e in raised)
        assert all(e.cycle > machine.cpus[e.cpu].cycles - 20 for e in pending)
        assert min(e.cycle for e in pending) > max(e.cycle for e in raised) - 20
        snap = machine.snapshot()
        again = flat_machine(cpus=2)
        again.restore(snap)
        assert again.schedule == machine.schedule
    assert digests[0] == digests[1] == digests[2]
    assert delivered[0] == delivered[1] == delivered[2]
    assert all(cycles >= 40 for _cpu, _vector, _eip, cycles in delivered[0])


# -- quanta: several boundaries per CPU per turn ----------------------------------------------
# CPU 0 holds the lock at 0x3000 for a while, then releases it and halts; CPU 1 spins
# on it, takes it with xchg, counts at 0x3004 and halts. IF stays clear: both halted
# is the end (all_stuck).
HOLDER = bytes.fromhex(
    "b900100000"  # mov $0x1000,%ecx
    "49" "75fd"  # busy: dec %ecx ; jne busy
    "c70500300000" "00000000"  # movl $0,0x3000  (release)
    "f4")  # hlt
SPINNER = bytes.fromhex(
    "833d0030000000" "75f7"  # spin: cmpl $0,0x3000 ; jne spin
    "b801000000" "87050030" "0000"  # mov $1,%eax ; xchg %eax,0x3000
    "85c0" "75e8"  # test %eax,%eax ; jne spin
    "ff0504300000"  # incl 0x3004
    "f4")  # hlt


class RecordedTrace:
    """A trace hash that also keeps each record hashed (to count them)."""

    def __init__(self, digest, records: list) -> None:
        self.digest, self.records = digest, records

    def update(self, data: bytes) -> None:
        self.records.append(data)
        self.digest.update(data)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def lock_machine(**kwargs) -> Machine:
    machine = Machine(cpus=2, memory_size=1 << 20, platform=RecordingPlatform(), **kwargs)
    machine.memory.load(0x1000, HOLDER)
    machine.memory.load(0x2000, SPINNER)
    machine.memory.write32(0x3000, 1)  # held by CPU 0 from the start
    for cpu, start in zip(machine.cpus, (0x1000, 0x2000), strict=True):
        cpu.enter_flat_mode(0)
        cpu.eip = start
        cpu.eflags = 0x2
    return machine


def test_a_quantum_is_a_number_of_boundaries():
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ValueError, match="quantum"):
            Machine(memory_size=1 << 20, quantum=bad)
    assert Machine(memory_size=1 << 20).quantum is None
    machine = Machine(memory_size=1 << 20, quantum=250)
    assert machine.quantum == 250
    with pytest.raises(ValueError, match="quantum"):
        machine.quantum = 0
    machine.quantum = None
    assert machine.quantum is None


def test_the_same_quantum_configuration_gives_the_same_trace():
    """Quanta are deterministic: the same image, schedule, interleaving and quantum
    give the same trace twice; another quantum gives another trace; and a trace does
    not force stepping (the batches are hashed, far fewer records than boundaries)."""
    def traced(quantum, interleaving=None):
        machine = flat_machine(cpus=2, schedule=[(7, 0, 0x30), (300, 1, 0x31)],
                               quantum=quantum, interleaving=interleaving)
        for cpu in machine.cpus:
            cpu.regs.ecx = 1000
        machine.start_trace()
        records = []
        machine._trace = RecordedTrace(machine._trace, records)  # see each record too
        assert machine.run(3000) == 3000
        return machine.trace_digest(), records, [c.state() for c in machine.cpus]

    first, records, states = traced(100)
    assert traced(100) == (first, records, states)
    assert len(records) < 3000 // 10 and any(b":batch:" in r for r in records)
    assert traced(37)[0] != first
    assert traced(100, [0, 1, 1])[0] != first
    # the same boundaries as stepping, on each CPU: only the interleaving differs
    assert sum(c["instructions"] for c in states) + 2 == 3000  # two interrupts taken


def test_quantum_one_is_the_exact_interleaving():
    """Quantum 1 passes one boundary per turn: the trace of step() bit for bit."""
    digests, states = [], []
    for quantum in (None, 1):
        machine = flat_machine(cpus=2, schedule=[(7, 0, 0x30), (40, 1, 0x31)],
                               interleaving=[0, 1, 1], quantum=quantum)
        machine.start_trace()
        machine.run(600)
        digests.append(machine.trace_digest())
        states.append(([c.state() for c in machine.cpus], machine.platform.interrupts,
                       machine.steps))
    assert digests[0] == digests[1] and states[0] == states[1]


def test_a_run_cut_anywhere_ends_in_the_same_state_with_quanta():
    """The turn's progress survives the end of a run (and a snapshot): run(400) is
    run(150) then run(280), also through a snapshot restored into a fresh machine."""
    whole = flat_machine(cpus=2, schedule=[(30, 1, 0x40)], quantum=100)
    whole.run(430)
    cut = flat_machine(cpus=2, schedule=[(30, 1, 0x40)], quantum=100)
    cut.run(150)  # half way through CPU 1's turn
    snap = cut.snapshot()
    assert snap["quantum"] == 100 and snap["slice"] == 50
    cut.run(280)
    again = flat_machine(cpus=2)  # no quantum: the snapshot's is restored with it
    again.restore(snap)
    assert again.quantum == 100
    again.run(280)
    assert cut.platform.interrupts == whole.platform.interrupts
    for machine in (cut, again):
        assert [c.state() for c in machine.cpus] == [c.state() for c in whole.cpus]
        assert machine.pic.state() == whole.pic.state()
        assert machine.steps == whole.steps == 430


def test_a_snapshot_file_keeps_the_quantum(tmp_path):
    machine = flat_machine(cpus=2, quantum=64)
    machine.run(100)
    machine.save(tmp_path / "q.vmisnap")
    fresh = flat_machine(cpus=2)
    fresh.load(tmp_path / "q.vmisnap")
    assert (fresh.quantum, fresh._slice) == (64, 36)
    machine.run(200)
    fresh.run(200)
    assert [c.state() for c in fresh.cpus] == [c.state() for c in machine.cpus]


def test_one_cpu_with_a_quantum_is_exactly_stepping():
    """Alone, a quantum only bounds the batches: the timer program ends exactly as
    stepped, whatever the quantum (a subclass relies on the bound, _batch_limit)."""
    stepped = _timer_program()
    for _ in range(5000):
        stepped.step()
    for quantum in (1, 7, 1000):
        machine = _timer_program()
        machine.quantum = quantum
        assert machine.run(5000) == 5000
        assert machine.cpus[0].state() == stepped.cpus[0].state()
        assert (machine.memory.array == stepped.memory.array).all()
        assert machine.pic.state() == stepped.pic.state()


def test_batches_are_bounded_by_the_batch_limit():
    """The hook: every quiet batch runs at most ``_batch_limit(cpu)`` boundaries."""
    sizes = []

    class Bounded(Machine):
        def _batch_limit(self, cpu):
            return 13

        def _run_quietly(self, cpu, count, wake):
            sizes.append(count)
            return super()._run_quietly(cpu, count, wake)

    for quantum in (None, 100):
        sizes.clear()
        machine = Bounded(memory_size=1 << 20, quantum=quantum)
        machine.memory.load(0xFFFF0, bytes.fromhex("ebfe"))  # jmp . (real mode)
        assert machine.run(1000) == 1000
        assert sizes and max(sizes) == 13


def test_a_cpu_spinning_on_a_held_lock_gets_it_with_quanta():
    """CPU 1 spins on a lock CPU 0 holds for about 8,000 boundaries: with quanta of
    500 each sees the other's stores at its next turn; CPU 1 takes the lock once
    released, and the run ends when both halted (no livelock)."""
    for quantum in (None, 500):
        machine = lock_machine(quantum=quantum)
        ran = machine.run(200_000)
        assert machine.memory.read32(0x3004) == 1, quantum  # CPU 1 got the lock
        assert machine.memory.read32(0x3000) == 1  # and holds it
        assert all(cpu.halted for cpu in machine.cpus)
        assert ran < 40_000  # stopped when both halted, not at the limit


def test_an_interrupt_raised_for_another_cpu_is_taken_at_its_next_turn():
    """An IPI (the PIC raising a vector for CPU 1) while CPU 0's turn runs: CPU 1
    takes it at its first boundary, when its turn comes."""
    machine = flat_machine(cpus=2, quantum=100)
    for cpu in machine.cpus:
        cpu.regs.ecx = 1000
    machine.run(50)  # inside CPU 0's first turn
    machine.pic.raise_vector(1, 0x44)
    cycles = machine.cpus[1].cycles
    machine.run(51)  # the rest of CPU 0's turn, and CPU 1's first boundary
    assert machine.platform.interrupts == [(1, 0x44, 0x1000, cycles)]


def test_a_scheduled_interrupt_for_cpu1_arrives_at_its_cycle_with_quanta():
    """Batches stop at the cycle limit: the interrupt scheduled for CPU 1 is taken at
    the first boundary of CPU 1 whose cycle count has reached its cycle, exactly as
    with one boundary per turn, though CPU 1 runs whole batches of 1000."""
    taken = []
    for quantum in (None, 1000):
        machine = flat_machine(cpus=2, schedule=[(333, 1, 0x30), (2000, 0, 0x31)],
                               quantum=quantum)
        for cpu in machine.cpus:
            cpu.regs.ecx = 10_000
        machine.run(6000)
        taken.append(sorted(machine.platform.interrupts))
    assert taken[0] == taken[1]
    (cpu1,) = [entry for entry in taken[1] if entry[0] == 1]
    assert 333 <= cpu1[3] < 333 + 3  # the first boundary at or past cycle 333


def _interleaving_independent(system) -> dict:
    """What the bundled workload gives whatever the interleaving: the console's lines
    (the order in which tasks finish, and the jiffies of the last line, depend on
    it), the system calls by name, signals, the shared work, the checks, each task's
    end."""
    summary = system.guest.summary()
    counters = system.guest.counters()
    console = re.sub(r"jiffies \d+", "jiffies N", summary["console"])
    return {
        "console": sorted(console.splitlines()),
        "syscalls": summary["syscalls"]["by_name"],
        "signals": summary["signals"],
        "work": summary["work"],
        "user_checks": summary["user_checks"],
        "checks_failed": summary["checks_failed"],
        "failures": summary["failures"],
        "fixups": summary["exception_fixups"],
        "tasks": [{k: t[k] for k in ("pid", "program", "state", "exit_code", "syscalls")}
                  for t in summary["tasks"]],
        "counters": {k: counters[k] for k in (
            "tasks_exited", "tasks_alive", "system_halted", "kernel_oopses",
            "mutual_exclusion_violations", "work_counter", "user_faults")},
    }


@pytest.mark.parametrize("mode", ["native", "vmi"])
def test_the_bundled_two_cpu_workload_with_quanta_gives_the_same_results(mode):
    """Two CPUs with the default quantum: the workload completes, every check holds,
    and the console and counters equal those of the exact interleaving; a second run
    is the same run (same trace)."""
    from vmi.machine import DEFAULT_QUANTUM
    from vmi.system import boot_system

    exact = boot_system(mode, cpus=2)
    exact.machine.run(10_000_000)
    assert exact.guest.completed and not exact.guest.check_failures()
    runs = []
    for _ in range(2):
        system = boot_system(mode, cpus=2)
        system.machine.quantum = DEFAULT_QUANTUM
        system.machine.start_trace()
        steps = system.machine.run(10_000_000)
        assert system.guest.completed
        assert _interleaving_independent(system) == _interleaving_independent(exact)
        runs.append((system.machine.trace_digest(), steps, system.guest.summary()))
    assert runs[0] == runs[1]
    # each CPU ran user tasks: the work was shared
    assert all(cpu["sys_int80"] + cpu["sys_sysenter"] > 0 for cpu in runs[0][2]["per_cpu"])
