"""The whole workload, natively: it completes and every check holds.

On one and two CPUs: every task exits with status 0, every user check passes,
the kernel's own checks (mutual exclusion of the spinlock's critical section,
no oops) hold, the timer preempts tasks, signals are delivered, the lazy FPU
switch and the espfix return run. On two CPUs the spinlock is contended
(``lock decb`` found it held) and the shared counter loses no update. The
kernel built with the ``vmi`` macro set (hook sites padded and annotated)
runs natively with the same results.
"""

from __future__ import annotations

import pytest

from tests.guest.conftest import RUN_STEPS, new_guest
from vmi.guest import DEFAULT_WORKLOAD, Guest


def assert_workload_held(guest: Guest) -> dict:
    summary = guest.summary()
    assert summary["failures"] == [], summary["failures"]
    assert summary["completed"]
    assert summary["checks_failed"] == 0
    assert summary["user_checks"] == {"passed": len(DEFAULT_WORKLOAD), "failed": 0}
    assert [t["exit_code"] for t in summary["tasks"]] == [0] * len(DEFAULT_WORKLOAD)
    assert [t["pid"] for t in summary["tasks"]] == list(range(1, len(DEFAULT_WORKLOAD) + 1))
    # every CPU halted with interrupts off after the summary line
    for cpu in guest.machine.cpus:
        assert cpu.halted and not cpu.flags & 0x200
    assert "vmi guest: all tasks exited: 5 tasks" in summary["console"]
    for name in ("syscalls", "locker", "fpu", "stack16"):
        assert f"{name}: done" in summary["console"]
    return summary


@pytest.mark.parametrize("cpus", [1, 2])
def test_workload_completes_natively(native_runs, cpus):
    summary = assert_workload_held(native_runs[cpus])
    assert summary["cpus"] == cpus
    # the timer preempts: reschedules on the way back to user mode and in the kernel
    assert summary["ticks"] > 0
    assert summary["reschedules"]["user_preemptions"] > 0
    assert summary["reschedules"]["kernel_preemptions"] > 0
    assert summary["reschedules"]["switches"] > len(DEFAULT_WORKLOAD)
    # both system-call paths, signals, #NM, espfix, the exception-table fixup
    assert summary["syscalls"]["int80"] > 0 and summary["syscalls"]["sysenter"] > 0
    assert summary["syscalls"]["by_name"]["getpid"] >= 80
    assert summary["signals"] == {"sent": 5, "delivered": 5}
    assert summary["fpu_traps"] > 0
    assert summary["espfix_returns"] > 0
    assert summary["exception_fixups"] >= 1
    assert summary["work"]["counter"] == summary["work"]["expected"] > 0


def test_two_cpus_share_the_work_and_contend(native_runs):
    guest = native_runs[2]
    summary = guest.summary()
    # both CPUs ran user tasks and took timer ticks
    for cpu in summary["per_cpu"]:
        assert cpu["ticks"] > 0 and cpu["switches"] > 0
        assert cpu["sys_int80"] + cpu["sys_sysenter"] > 0
    assert any(len(task["cpus"]) == 2 for task in summary["tasks"])
    # lock decb found the shared lock held, and nobody was ever inside twice
    assert summary["spinlock_contention"]["work_lock"] > 0
    assert guest.counters()["mutual_exclusion_violations"] == 0


def test_one_cpu_never_contends(native_runs):
    """With interrupts off inside, a lock on one CPU is always free when tried."""
    assert set(native_runs[1].summary()["spinlock_contention"].values()) == {0}


@pytest.mark.parametrize("cpus", [1, 2])
def test_vmi_macro_set_runs_natively_with_the_same_results(native_runs, cpus):
    guest = new_guest(cpus, macros="vmi")
    guest.run(RUN_STEPS)
    summary = assert_workload_held(guest)
    native = native_runs[cpus].summary()
    for key in ("syscalls", "signals", "work"):
        assert summary[key] == native[key]
    assert summary["espfix_returns"] > 0 and summary["fpu_traps"] > 0
    # the padding makes it longer, not different
    assert summary["instructions"] > native["instructions"]


def test_seed_varies_the_run_deterministically():
    runs = []
    for seed in (3, 3, 4):
        guest = new_guest(2, seed=seed)
        guest.machine.start_trace()
        guest.run(RUN_STEPS)
        assert_workload_held(guest)
        runs.append((guest.machine.trace_digest(), guest.summary()["instructions"]))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_vmi_probe_finds_a_rom_and_calls_init_on_every_cpu():
    """vmi_init's scan: natively nothing is found; a ROM with the "cVmi" header and a
    zero checksum in the option-ROM hole has its Init (ROM + 0x80) called once per
    CPU with paging on. This one counts the calls and answers "stay native"."""
    from vmi.asm import assemble

    counter = 0xC0F00  # physical, free memory in the option-ROM hole
    rom = bytearray(0x1000)
    rom[0:3] = b"\x55\xaa\x08"  # signature, length 8 * 512
    rom[8:12] = (0x696D5663).to_bytes(4, "little")  # "cVmi"
    rom[0x10:0x14] = (0xFFC00000).to_bytes(4, "little")  # virtual_top
    init = assemble(f"lock incl {0xC0000000 + counter:#x}\nmovl $1, %eax\nret\n", macros=None)
    rom[0x80:0x80 + len(init.image)] = init.image
    rom[0xFFF] = -sum(rom) & 0xFF
    assert sum(rom) & 0xFF == 0

    native = new_guest(2)
    native.run(RUN_STEPS)
    assert native.read32("vmi_rom") == 0 and native.read32("vmi_cpus") == 0

    guest = new_guest(2)
    guest.machine.memory.load(0xC8000, bytes(rom))  # a 2 KiB-aligned slot of the scan
    guest.run(RUN_STEPS)
    assert_workload_held(guest)
    assert guest.machine.memory.read32(counter) == 2  # once per CPU
    assert guest.read32("vmi_rom") == 0xC00C8000
    assert guest.read32("vmi_cpus") == 0  # Init said "native"


def test_four_cpus():
    """The kernel's NR_CPUS: every CPU comes online, runs tasks and halts."""
    guest = new_guest(4)
    guest.run(RUN_STEPS)
    summary = assert_workload_held(guest)
    assert guest.read32("cpus_online") == 4
    assert all(cpu["online"] == 1 for cpu in summary["per_cpu"])
    assert sum(cpu["switches"] > 0 for cpu in summary["per_cpu"]) >= 3
