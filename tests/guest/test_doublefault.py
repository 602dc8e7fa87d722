"""The bundled kernel's double fault: a task gate in IDT entry 8 to a double-fault
TSS with its own stack (Linux 2.6.16 arch/i386/kernel/doublefault.c), natively and
under the VMI monitor, which performs the task switch on the guest's behalf
(docs/hypervisor.md, "Task gates and call gates").

The double fault is forced as a corrupt kernel stack pointer forces it: at the
first instruction of ``do_IRQ`` (a ``push``) ESP is set to an unmapped kernel
address, so the push raises #PF and the delivery of that #PF, which pushes on the
same stack, raises #PF again: a double fault (SDM Vol.3A §6.15, Table 6-5). A
#DF delivered through an interrupt gate would need that stack too and shut the
processor down; through the task gate, the handler runs on its own stack and the
faulting task's registers are in its TSS.
"""

from __future__ import annotations

import pytest

from vmi.cpu.tasks import TSS32_EFLAGS, TSS32_EIP, TSS32_LINK, TSS32_REGS, TSS32_SEGS
from vmi.system import boot_system

BAD_ESP = 0xD000_0000  # no page table behind it: the kernel maps 0xC0000000-0xC07FFFFF
DF_TSS_SEL, TSS_SEL, KERNEL_CS = 0xF8, 0x80, 0x60
DF_TSS_SIZE, DF_STACK_SIZE, TSS_STRUCT_SIZE = 128, 1024, 384
NT, IF = 0x4000, 0x200
MODES = ("native", "trap", "vmi", "naive")


def force_double_fault(mode: str, cpus: int = 1):
    """Boot ``mode``, stop CPU 0 at ``do_IRQ`` (a timer tick in the kernel), corrupt
    its ESP and run on until every CPU has stopped. Returns the system, the CPU and
    the EIP of the faulting instruction."""
    system = boot_system(mode, cpus=cpus, workload=("syscalls",))
    guest, machine = system.guest, system.machine
    target = guest.build.symbol("do_IRQ")
    for _ in range(3_000_000):
        index, _kind, _value = machine.step()
        cpu = machine.cpus[index]
        if index == 0 and cpu.eip == target:
            break
    else:
        raise AssertionError("CPU 0 never reached do_IRQ")
    assert cpu.cpl == (0 if mode == "native" else 1)
    cpu.r[4] = BAD_ESP
    guest.run(400_000)
    return system, cpu, target


def word(guest, symbol: str, offset: int) -> int:
    return guest.read32(symbol, offset) & 0xFFFF


@pytest.fixture(scope="module", params=MODES)
def faulted(request):
    return (request.param, *force_double_fault(request.param))


def test_idt_entry_8_is_a_task_gate_to_each_cpus_double_fault_tss():
    system = boot_system("native", cpus=2, workload=("syscalls",))
    guest = system.guest
    guest.run(3_000_000)
    assert guest.completed and guest.read32("double_faults") == 0
    low, high = guest.read32("idt_table", 8 * 8), guest.read32("idt_table", 8 * 8 + 4)
    assert (low >> 16, high & 0xFF00) == (DF_TSS_SEL, 0x8500)  # P, DPL 0, type 5
    stacks = guest.build.symbol("doublefault_stack")
    for cpu in range(2):
        gdt = 256 * cpu
        d_low = guest.read32("cpu_gdt_table", gdt + DF_TSS_SEL)
        d_high = guest.read32("cpu_gdt_table", gdt + DF_TSS_SEL + 4)
        base = (d_low >> 16) | (d_high & 0xFF) << 16 | (d_high & 0xFF000000)
        assert base == guest.build.symbol("doublefault_tss") + DF_TSS_SIZE * cpu
        assert (d_high >> 8) & 0xFF == 0x89  # an available 32-bit TSS
        tss = DF_TSS_SIZE * cpu
        assert guest.read32("doublefault_tss", tss + TSS32_EIP) == guest.build.symbol(
            "doublefault_fn")
        assert guest.read32("doublefault_tss", tss + TSS32_REGS + 16) == (
            stacks + DF_STACK_SIZE * (cpu + 1))  # ESP: the top of its own stack
        assert guest.read32("doublefault_tss", tss + 0x1C) == guest.address("swapper_pg_dir")
        assert guest.read32("doublefault_tss", tss + TSS32_EFLAGS) & IF == 0
        assert guest.read32("doublefault_tss", tss + TSS32_REGS + 12) == cpu  # EBX


def test_the_handler_runs_on_its_own_stack(faulted):
    mode, system, cpu, _eip = faulted
    guest = system.guest
    counters = guest.counters()
    assert guest.read32("double_faults") == 1
    assert counters["kernel_oopses"] == 1 and counters["system_halted"] == 1
    bottom = guest.build.symbol("doublefault_stack")
    handler_esp = guest.read32("double_fault_esp")
    assert bottom <= handler_esp < bottom + DF_STACK_SIZE
    # the processor (or the monitor) pushed #DF's error code, 0, on the new stack
    assert handler_esp == bottom + DF_STACK_SIZE - 4
    assert guest.read32("doublefault_stack", DF_STACK_SIZE - 4) == 0
    # and the CPU is still in the double-fault task, halted with interrupts off
    assert cpu.halted and cpu.tr[0] == DF_TSS_SEL
    assert bottom <= cpu.r[4] < bottom + DF_STACK_SIZE
    assert cpu.eflags & NT
    if system.monitor is not None:
        assert system.monitor.vcpu(cpu).tr_selector == DF_TSS_SEL
        assert not system.monitor.vcpu(cpu).interrupts_enabled
        assert system.monitor.stats.injected["#DF"] == 1


def test_the_faulting_tasks_state_is_in_its_tss(faulted):
    mode, system, cpu, eip = faulted
    guest = system.guest
    assert word(guest, "doublefault_tss", TSS32_LINK) == TSS_SEL  # the back link
    assert guest.read32("init_tss", TSS32_EIP) == eip  # the faulting push
    assert guest.read32("init_tss", TSS32_REGS + 16) == BAD_ESP
    cs = word(guest, "init_tss", TSS32_SEGS + 4)
    assert cs == (KERNEL_CS if mode == "native" else KERNEL_CS | 1)  # ring 1 under VMI
    # both TSS descriptors busy: the old one stays busy (nested), the new one is
    busy = [(guest.read32("cpu_gdt_table", sel + 4) >> 8) & 0xF for sel in (TSS_SEL,
                                                                              DF_TSS_SEL)]
    assert busy == [0xB, 0xB]


def test_the_console_reports_the_previous_task(faulted):
    mode, system, _cpu, eip = faulted
    line = (f"double fault on cpu 0: previous task (TSS 0x00000080) eip {eip:#010x} "
            f"esp {BAD_ESP:#010x}, handler esp ")
    assert line in system.machine.console.text
    if system.monitor is not None:
        assert ("cpu0: #DF through the guest's task gate: task switch from TSS 0x0080 "
                "to 0x00f8") in system.monitor.stats.reports


def test_a_double_fault_stops_every_cpu():
    """CPU 1 sees system_halted and stops too, as after an oops."""
    system, cpu, _eip = force_double_fault("native", cpus=2)
    assert system.guest.read32("double_faults") == 1
    assert system.machine.all_stuck()
    assert all(other.halted for other in system.machine.cpus)
