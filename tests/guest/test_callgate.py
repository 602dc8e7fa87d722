"""A real ring-3 to ring-0 transition through a call gate in the bundled kernel: the
``callgate`` user program (vmi/guest/user/callgate.S) does ``lcall $__CALL_GATE, $0``
to the kernel's DPL-3 32-bit call gate (GDT entry 27) whose routine,
``kernel_gate_call``, returns a value from kernel data and the call count, and
``lret``s to ring 3 (SDM Vol.3A §5.8.3-§5.8.6). Natively the processor makes the
transfer; under the VMI monitor the shadow GDT holds the gate not present and the
monitor makes it (docs/hypervisor.md, "Task gates and call gates").

The program is not in the default workload; these tests boot it with their own.
"""

from __future__ import annotations

import pytest

from tests.guest.conftest import read32, run_to
from vmi.guest import DEFAULT_WORKLOAD, PROGRAMS
from vmi.system import boot_system

WORKLOAD = ("syscalls", "callgate")  # syscalls sends the SIGUSR1 FINISH waits for
GATE, USER_CS, USER_DS, KERNEL_CS = 0xD8, 0x73, 0x7B, 0x60
TSS_ESP0, THREAD_SIZE = 4, 8192
MODES = ("native", "trap", "vmi", "naive")
ROUNDS = 3


def boot(mode: str, cpus: int = 1):
    return boot_system(mode, cpus=cpus, workload=WORKLOAD)


def test_the_program_is_not_in_the_default_workload():
    assert "callgate" in PROGRAMS and "callgate" not in DEFAULT_WORKLOAD


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cpus", [1, 2])
def test_the_program_passes_its_checks(mode, cpus):
    system = boot(mode, cpus)
    guest = system.guest
    guest.run(4_000_000)
    assert guest.check_failures() == []
    assert guest.read32("callgate_calls") == ROUNDS
    assert "callgate: done\n" in system.machine.console.text
    task = next(t for t in guest.tasks() if t["program"] == "callgate")
    assert task["exit_code"] == 0
    if system.monitor is not None:
        assert system.monitor.stats.emulated["lcall (call gate)"] == ROUNDS


@pytest.mark.parametrize("mode", MODES)
def test_the_gate_enters_ring_0_on_the_tasks_kernel_stack(mode):
    """At ``kernel_gate_call``: the kernel's privilege (ring 1 under the monitor),
    the stack switched to the TSS's esp0 with the caller's SS, ESP, CS and EIP on
    it (§5.8.5, Figure 5-13), the return address right after the 7-byte lcall."""
    system = boot(mode)
    guest = system.guest
    program = next(p for p in guest.programs if p.name == "callgate")
    cpu = run_to(guest, "kernel_gate_call", max_steps=2_000_000)
    assert cpu.cpl == (0 if mode == "native" else 1)
    assert cpu.sreg[1] == (KERNEL_CS if mode == "native" else KERNEL_CS | 1)
    esp0 = guest.read32("init_tss", TSS_ESP0)
    assert cpu.r[4] == esp0 - 16
    eip, cs, esp, ss = (read32(cpu, cpu.r[4] + 4 * i) for i in range(4))
    assert (cs, ss) == (USER_CS, USER_DS)
    assert program.symbols["_start"] < eip < program.program.base + 0x8000
    assert cpu.mem.read8(program.physical(eip - 7)) == 0x9A  # lcall ptr16:32
    assert program.program.base < esp <= program.program.base + 0x10000  # its user stack
    task_stacks = guest.build.symbol("task_stacks")
    assert task_stacks <= cpu.r[4] < task_stacks + 16 * THREAD_SIZE
    # and its lret comes back to ring 3, on the user stack, with the value
    returned = run_to(guest, eip, cpu=cpu.index, max_steps=2_000)
    assert returned.cpl == 3 and returned.r[4] == esp
    assert returned.r[0] == guest.read32("callgate_value")


def poke_gate_high(guest, cpus: int, change) -> None:
    """Change the high dword of every CPU's copy of the call gate (after cpu_init)."""
    memory = guest.machine.memory
    for cpu in range(cpus):
        address = guest.address("cpu_gdt_table") + 256 * cpu + GATE + 4
        memory.write32(address, change(memory.read32(address)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("change", "line"), [
    (lambda high: high & ~0x6000, "exception 13 error 0x000000d8"),  # DPL 0: #GP(gate)
    (lambda high: high & ~0x8000, "exception 11 error 0x000000d8"),  # not present: #NP
], ids=["dpl0", "not-present"])
def test_a_gate_the_user_may_not_use_faults_alike_in_every_mode(mode, change, line):
    """The gate's own checks come first (Vol.2 CALL "CALL-GATE"): DPL < CPL is
    #GP(gate selector), not present #NP(gate selector); the kernel kills the task.
    Under the monitor the guest sees the same faults, not the shadow's."""
    system = boot(mode)
    guest = system.guest
    run_to(guest, "cpu_idle", max_steps=2_000_000)
    poke_gate_high(guest, 1, change)
    guest.run(4_000_000)
    assert guest.read32("callgate_calls") == 0
    assert line in system.machine.console.text
    task = next(t for t in guest.tasks() if t["program"] == "callgate")
    assert task["exit_code"] >= 128
