"""The monitor carries out the guest's task gates and call gates (docs/hypervisor.md,
"Task gates and call gates"): the same kernel program runs natively and under the
monitor and must see the same state, but for the RPL of its kernel selectors.
"""

from __future__ import annotations

import pytest

from tests.hypervisor.kit import GDT, TSS, TSS2, Guest
from vmi.cpu.tasks import TSS32_EIP, TSS32_LINK, TSS32_REGS
from vmi.hypervisor import shadow
from vmi.machine import MachineStopped

NT = 0x4000
DEFINES = {"TSS2_BASE": TSS2}

#: A software interrupt through a task gate (IDT entry 0x40, DPL 0, to the kit's
#: second TSS) from the kernel. The new task records what it finds (its ESP, the
#: error-code-free stack, EBX from its TSS, NT, its CS's RPL, the link) and halts.
TASK_GATE = """
TASK_STACK = 0x70000
main:
	movl $task_entry, TSS2_BASE + 0x20	# EIP
	movl $0x2, TSS2_BASE + 0x24		# EFLAGS: IF clear
	movl $0x1234, TSS2_BASE + 0x34		# EBX
	movl $TASK_STACK, TSS2_BASE + 0x38	# ESP
	movl $PD_BASE, TSS2_BASE + 0x1C		# CR3
	movl $USER_DS, TSS2_BASE + 0x48		# ES
	movl $KERNEL_CS, TSS2_BASE + 0x4C	# CS
	movl $KERNEL_DS, TSS2_BASE + 0x50	# SS
	movl $USER_DS, TSS2_BASE + 0x54		# DS
	movl $(TSS2_SEL << 16), IDT_BASE + 0x40 * 8
	movl $0x8500, IDT_BASE + 0x40 * 8 + 4	# task gate, present, DPL 0
	movl $0x5A5A, %esi
before:
	int $0x40
after:
	hlt
task_entry:
	movl %esp, r_esp
	movl %ebx, r_ebx
	movl %esi, r_esi
	pushfl
	popl %eax
	movl %eax, r_eflags
	movl %cs, %eax
	andl $3, %eax
	movl %eax, r_rpl
	movzwl TSS2_BASE, %eax
	movl %eax, r_link
	cli
	hlt
.data
r_esp: .long 0
r_ebx: .long 0
r_esi: .long 0
r_eflags: .long 0
r_rpl: .long 0
r_link: .long 0
"""


def run_task_gate(monitor: str | None) -> Guest:
    guest = Guest(TASK_GATE, macros="native" if monitor is None else "vmi", monitor=monitor,
                  defines=DEFINES)
    guest.run(20_000)
    assert guest.stuck
    return guest


@pytest.mark.parametrize("monitor", [None, "vmi"])
def test_int_through_a_task_gate_switches_to_the_new_task(monitor):
    guest = run_task_gate(monitor)
    assert guest.var("r_esp") == 0x70000  # its own stack, nothing pushed (no error code)
    assert guest.var("r_ebx") == 0x1234  # its registers are its TSS's
    assert guest.var("r_esi") == 0  # not the old task's
    assert guest.var("r_eflags") & NT
    assert guest.var("r_link") == 0x80  # the back link: the kit's first TSS
    assert guest.var("r_rpl") == (0 if monitor is None else 1)
    # the old task's state in its TSS: EIP after the int (a trap), its ESI
    assert guest.u32(TSS + TSS32_EIP) == guest.sym("after")
    assert guest.u32(TSS + TSS32_REGS + 4 * 6) == 0x5A5A
    assert guest.u32(TSS2 + TSS32_LINK) & 0xFFFF == 0x80
    # the new TSS is busy in the guest's own GDT
    assert (guest.u32(GDT + 0x90 + 4) >> 8) & 0xF == 0xB
    assert guest.cpu.tr[0] == 0x90
    if monitor is not None:
        vcpu = guest.monitor.vcpu(guest.cpu)
        assert vcpu.tr_selector == 0x90 and vcpu.cr0 & 0x8  # CR0.TS, as natively


def test_a_busy_tss_through_the_guests_task_gate_is_gp_in_the_guest():
    """A task gate to a busy TSS: #GP(TSS selector) (SDM Vol.2 INT n "TASK-GATE"), the
    guest's fault to handle, under the monitor as natively; here the #GP has no gate
    and escalates to a triple fault with the processor's message."""
    source = TASK_GATE.replace("	movl $0x5A5A, %esi\n",
                               "	movl $0x5A5A, %esi\n	orl $0x200, GDT_BASE + 0x90 + 4\n")
    for monitor in (None, "vmi"):
        guest = Guest(source, macros="native" if monitor is None else "vmi",
                      monitor=monitor, defines=DEFINES)
        with pytest.raises(Exception, match=r"#GP\(0x90\)"):
            guest.run(20_000)


def test_the_shadow_gdt_holds_call_gates_not_present():
    """The guest's call gates are shadowed with P clear (so that a far CALL or JMP
    through one comes to the monitor); task gates and TSS descriptors are not."""
    call_gate = (0x0060_1234, 0x0000_EC00)  # 32-bit, DPL 3, present
    call_gate16 = (0x0060_1234, 0x0000_E400)
    task_gate = (0x00F8_0000, 0x0000_8500)
    tss = (0x3000_0067, 0x0000_8900)
    assert shadow.shadow_descriptor(*call_gate) == (call_gate[0], 0x0000_6C00)
    assert shadow.shadow_descriptor(*call_gate16) == (call_gate16[0], 0x0000_6400)
    assert shadow.shadow_descriptor(*task_gate) == task_gate
    assert shadow.shadow_descriptor(*tss) == tss


#: A 16-bit call gate (type 4) for the user program: refused under the monitor.
GATE16 = """
main:
	movl $(KERNEL_CS << 16), GDT_BASE + 0xA0
	movl $0xE400, GDT_BASE + 0xA0 + 4	# 16-bit call gate, DPL 3, offset 0
	ENTER_USER
"""


def test_a_16bit_call_gate_is_refused_with_one_line():
    guest = Guest(GATE16, "lcall $0xA3, $0\n", monitor="vmi")
    with pytest.raises(MachineStopped, match=r"^cpu0: far call at 0x00200000 through the "
                       r"guest's 16-bit call gate 0xa0 \(not supported under the monitor\) "
                       r"at eip=0x200000$"):
        guest.run(20_000)
