"""The monitor on the machine: batched runs give what stepping gives, snapshots carry
the virtual state (it lives in memory), and SMP CPUs each get their own shared page
at the same linear address."""

from __future__ import annotations

import pytest

from tests.hypervisor import test_window as w
from tests.hypervisor.kit import Guest
from vmi.hypervisor import layout


@pytest.mark.parametrize("policy", ["defer", "fixup", "none"])
def test_batched_run_equals_stepping(policy: str) -> None:
    results = []
    for batched in (False, True):
        g = Guest(w.KERNEL, w.USER, monitor="vmi", policy=policy, defines=w.DEFINES)
        g.run(batched=batched)
        assert g.stuck
        results.append((g.cpu.cycles, g.cpu.instructions, g.var("syscalls"),
                        g.monitor.stats.as_dict()))
    assert results[0] == results[1]


def test_snapshot_and_restore_under_the_monitor() -> None:
    g = Guest(w.KERNEL, w.USER, monitor="vmi", defines=w.DEFINES)
    g.run_to(g.sym("after_int"), count=2)
    snap = g.machine.snapshot()
    vif = g.monitor.vcpu(g.cpu).vif
    g.run()
    end = (g.cpu.cycles, g.var("syscalls"), g.u32(w.ITER))
    g.machine.restore(snap)
    assert g.monitor.vcpu(g.cpu).vif == vif and g.monitor.active(g.cpu)
    g.run()
    assert g.stuck and (g.cpu.cycles, g.var("syscalls"), g.u32(w.ITER)) == end


SMP = """
main:
	movl $1, %eax
	CPUID
	shrl $24, %ebx
	movl %ebx, %ecx
	STI
	movl %ss:VMI_VIF + layout_cpu, %eax	# this CPU's shared page, same address
	movl %eax, seen(,%ecx,4)
	CLI
	hlt
.data
seen: .long -1, -1
"""


def test_each_cpu_has_its_own_shared_page() -> None:
    g = Guest(SMP, monitor="vmi", cpus=2,
              defines={"VMI_VIF": layout.VMI_VIF, "layout_cpu": layout.SHARED_CPU})
    g.run()
    assert g.stuck
    assert [g.u32(g.sym("seen") + 4 * i) for i in range(2)] == [0, 1]
    for cpu in g.machine.cpus:
        assert cpu.cpl == 1 and g.monitor.active(cpu)
    assert g.monitor.stats.hypercalls["init"] == 2
    assert g.monitor.stats.patched_sites == len(g.kernel.annotations)


LATE_PDE = """
main:
	movl $PT_LATE + 0x7, PD_BASE + 4	# map 4-8 MiB now, no TLB flush: natively a
	movl $0x400000 + 0x1000, %esp		# not-present entry is not cached
	int $0x40				# the frame goes onto a stack behind that entry:
	movl $0x5A5A, 0x400000			# a hidden fault while injecting
	CLI
	hlt
trap_64:
	movl %esp, esp_in_handler
	IRET
.data
esp_in_handler: .long 0
"""


def test_a_directory_entry_added_late_is_picked_up() -> None:
    g = Guest(LATE_PDE, monitor="vmi", defines={"PT_LATE": 0x6000})
    table = bytearray(0x1000)
    for page in range(2):  # 4-8 MiB: pages 0 and 1 onto physical 0x300000...
        table[4 * page:4 * page + 4] = (0x300000 + 0x1000 * page | 0x3).to_bytes(4, "little")
    g.machine.memory.write_bytes(0x6000, bytes(table))
    g.run()
    assert g.stuck
    assert g.u32(0x300000) == 0x5A5A
    assert g.var("esp_in_handler") == 0x401000 - 12
    assert g.monitor.stats.exits["shadow"] == 1 and g.monitor.stats.injected == {"0x40": 1}


def test_debugger_hooks() -> None:
    from vmi.hypervisor import build_rom

    g = Guest(w.KERNEL, w.USER, monitor="vmi", policy="fixup", defines=w.DEFINES)
    assert g.monitor.annotate(g.machine, g.cpu)[0].startswith("vmi: native")
    seen: list[tuple[int, str]] = []
    g.monitor.trace = lambda vector, kind: seen.append((vector, kind))
    g.run_to(build_rom().symbols["vmi_iret_insn"], count=2)
    g.interrupt(0x20)
    g.machine.step()  # taken by the monitor: fixup delivers it on the frame
    lines = g.monitor.annotate(g.machine, g.cpu)
    assert lines[0] == "vmi: ring 1 under the monitor, virtual IF off, pending none"
    g.run_to(build_rom().symbols["vmi_iret_insn"], count=1)
    assert "inside the IRET window" in g.monitor.annotate(g.machine, g.cpu)[1]
    assert (0x20, "interrupt") in seen and (6, "exception") in seen  # a hypercall's ud2
    state = g.monitor.snapshot()
    g.run()
    assert g.monitor.stats.frames > state.frames
    g.monitor.restore(state)
    assert g.monitor.stats.frames == state.frames
