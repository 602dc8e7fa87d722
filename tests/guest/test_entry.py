"""Each entry path, stepped into: the pt_regs frame it builds has the 2.6.16 layout.

A breakpoint on the path's first instruction captures what the processor
left (the registers of the interrupted context, the hardware frame); a
second breakpoint after SAVE_ALL (or error_code) reads the frame and checks
every slot at its reference offset: EBX 0x00, ECX 0x04, EDX 0x08, ESI 0x0C,
EDI 0x10, EBP 0x14, EAX 0x18, DS 0x1C, ES 0x20, ORIG_EAX 0x24, EIP 0x28,
CS 0x2C, EFLAGS 0x30, OLDESP 0x34, OLDSS 0x38.
"""

from __future__ import annotations

import pytest

from tests.guest.conftest import (
    ESPFIX_SS,
    KERNEL_CS,
    PT_REGS,
    RUN_STEPS,
    USER_CS,
    USER_DS,
    frame,
    new_guest,
    read32,
    registers,
    run_to,
    step_cpu,
)
from vmi.guest import build_guest

IF = 0x200
THREAD_SIZE = 8192


def hardware_frame(cpu, with_error: bool = False) -> dict[str, int]:
    """EIP, CS, EFLAGS, ESP, SS as the processor pushed them (from user mode)."""
    esp = cpu.r[4] + (4 if with_error else 0)
    names = ("EIP", "CS", "EFLAGS", "OLDESP", "OLDSS")
    return {name: read32(cpu, esp + 4 * i) for i, name in enumerate(names)}


def assert_saved(regs: dict[str, int], user: dict[str, int], *names: str) -> None:
    for name in names:
        assert regs[name] == user[name], f"{name}: {regs[name]:#x} != {user[name]:#x}"


def code_byte(cpu, address: int) -> int:
    return cpu.mem.read8(cpu.linear_to_physical(address))


def current_pid(guest, cpu) -> int:
    ti = cpu.r[4] & -THREAD_SIZE
    task = read32(cpu, ti)
    return read32(cpu, task + 8)


def test_pt_regs_offsets_are_the_kernels():
    symbols = new_guest().build.kernel.symbols
    for name, offset in PT_REGS.items():
        assert symbols[name] == offset
    assert symbols["PT_REGS_SIZE"] == 0x3C
    for name, offset in {"TI_flags": 8, "TI_cpu": 16, "TI_preempt_count": 20,
                         "TI_addr_limit": 24, "TI_sysenter_return": 28}.items():
        assert symbols[name] == offset
    assert (symbols["__KERNEL_CS"], symbols["__KERNEL_DS"], symbols["__USER_CS"],
            symbols["__USER_DS"], symbols["__ESPFIX_SS"]) == (0x60, 0x68, 0x73, 0x7B, 0xD0)


@pytest.mark.parametrize("cpu", [0, 1])
def test_idle_loop_finds_its_own_thread_info(cpu):
    """cpu_idle runs on the idle stack with nothing above it: GET_THREAD_INFO
    must still find the idle task's thread_info (not the next stack's)."""
    guest = new_guest(2)
    this = run_to(guest, "cpu_idle", cpu=cpu)
    ti = this.r[4] & -THREAD_SIZE
    assert read32(this, ti) == guest.read32("idle_task", 4 * cpu)  # ti->task
    assert read32(this, ti + 16) == cpu  # ti->cpu


def test_system_call_int80_frame():
    guest = new_guest()
    cpu = run_to(guest, "system_call")
    assert cpu.cpl == 0
    user, hardware = registers(cpu), hardware_frame(cpu)
    cpu = run_to(guest, "syscall_call", cpu=cpu.index)
    regs = frame(cpu, cpu.r[4])
    assert_saved(regs, user, "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX", "DS", "ES")
    assert regs["ORIG_EAX"] == user["EAX"] == cpu.r[0]  # the number, still in EAX
    assert {name: regs[name] for name in hardware} == hardware
    assert regs["CS"] == USER_CS and regs["OLDSS"] == USER_DS
    assert regs["EFLAGS"] & IF  # int $0x80 from user mode with interrupts on
    # EIP is the instruction after `int $0x80` (CD 80)
    assert (code_byte(cpu, regs["EIP"] - 2), code_byte(cpu, regs["EIP"] - 1)) == (0xCD, 0x80)
    # the frame fills the top of the task's 8 KiB kernel stack (TSS.esp0)
    assert (cpu.r[4] + 0x3C) % THREAD_SIZE == 0
    assert cpu.sreg[3] == cpu.sreg[0] == USER_DS  # SAVE_ALL's data segments


def test_sysenter_frame_and_sti_sysexit():
    guest = new_guest()
    cpu = run_to(guest, "sysenter_entry", when=lambda c: c.r[0] == 20)  # getpid
    assert cpu.cpl == 0 and not cpu.flags & IF  # SYSENTER cleared IF
    user = registers(cpu)
    saved_ebp = read32(cpu, user["EBP"])  # the stub pushed the caller's EBP last
    cpu = run_to(guest, "sysenter_do_call", cpu=cpu.index)
    regs = frame(cpu, cpu.r[4])
    assert_saved(regs, user, "EBX", "ECX", "EDX", "ESI", "EDI", "EAX")
    assert regs["ORIG_EAX"] == user["EAX"]
    assert regs["EBP"] == saved_ebp  # the sixth argument, read from the user stack
    sysenter_return = guest.build.vsyscall.symbols["SYSENTER_RETURN"]
    assert regs["EIP"] == sysenter_return  # thread_info.sysenter_return
    assert regs["CS"] == USER_CS and regs["OLDSS"] == USER_DS
    assert regs["OLDESP"] == user["EBP"]  # the user's ESP, handed over in EBP
    assert regs["EFLAGS"] & IF  # pushfl after STI
    assert regs["DS"] == user["DS"] and regs["ES"] == user["ES"]
    assert (cpu.r[4] + 0x3C) % THREAD_SIZE == 0
    frame_at = cpu.r[4]

    # The exit: EDX = EIP, ECX = OLDESP, then STI;SYSEXIT. An interrupt that is
    # pending all along is taken only after SYSEXIT, in user mode: STI's shadow
    # covers SYSEXIT (the seed's N.B.).
    cpu = run_to(guest, "sysenter_exit", cpu=cpu.index)
    assert cpu.r[4] == frame_at and (cpu.r[2], cpu.r[1]) == (regs["EIP"], regs["OLDESP"])
    assert not cpu.flags & IF
    guest.machine.pic.raise_vector(cpu.index, 0x20)
    assert step_cpu(guest, cpu.index)[1:] == ("instruction", guest.build.symbol("sysenter_exit"))
    assert step_cpu(guest, cpu.index)[1] == "instruction"  # sysexit, in the shadow
    assert cpu.cpl == 3 and cpu.eip == sysenter_return and cpu.r[4] == regs["OLDESP"]
    assert cpu.sreg[1] == USER_CS and cpu.sreg[2] == USER_DS
    assert step_cpu(guest, cpu.index)[1:] == ("interrupt", 0x20)


def test_split_sti_sysexit_opens_the_window():
    """The vmi-split macro set pads STI and SYSEXIT separately: the nop after STI
    uses up the shadow and an interrupt lands in the kernel before SYSEXIT."""
    guest = new_guest(macros="vmi-split")
    cpu = run_to(guest, "sysenter_exit")
    guest.machine.pic.raise_vector(cpu.index, 0x20)
    assert step_cpu(guest, cpu.index)[1] == "instruction"  # sti
    assert step_cpu(guest, cpu.index)[1] == "instruction"  # the padding nop
    assert cpu.cpl == 0 and code_byte(cpu, cpu.eip) == 0x0F  # sysexit is next
    assert step_cpu(guest, cpu.index)[1:] == ("interrupt", 0x20)
    assert cpu.cpl == 0


def test_interrupt_frame_from_user_mode():
    guest = new_guest()

    def from_user(cpu) -> bool:  # the stub pushed ORIG_EAX: CS is at ESP + 8
        return read32(cpu, cpu.r[4] + 8) & 3 == 3

    cpu = run_to(guest, "common_interrupt", when=from_user)
    user = registers(cpu)
    orig = read32(cpu, cpu.r[4])
    esp = cpu.r[4]
    hardware = {name: read32(cpu, esp + 4 + 4 * i)
                for i, name in enumerate(("EIP", "CS", "EFLAGS", "OLDESP", "OLDSS"))}
    cpu = run_to(guest, "do_IRQ", cpu=cpu.index)
    regs = frame(cpu, cpu.r[0])  # do_IRQ(regs)
    assert cpu.r[0] == cpu.r[4] + 4
    assert_saved(regs, user, "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX", "DS", "ES")
    assert regs["ORIG_EAX"] == orig == (~0x20) & 0xFFFFFFFF  # ~vector
    assert {name: regs[name] for name in hardware} == hardware
    assert regs["CS"] == USER_CS and regs["OLDSS"] == USER_DS and regs["EFLAGS"] & IF
    assert not cpu.flags & IF  # an interrupt gate
    assert (cpu.r[0] + 0x3C) % THREAD_SIZE == 0
    # ret_from_intr goes to resume_userspace: (EFLAGS & VM) | (CS & 3) == 3
    run_to(guest, "resume_userspace", cpu=cpu.index)


def test_device_not_available_frame():
    guest = new_guest()
    cpu = run_to(guest, "device_not_available")
    assert cpu.cr[0] & 0x8  # CR0.TS: the task does not own the FPU
    user, hardware = registers(cpu), hardware_frame(cpu)
    cpu = run_to(guest, "math_state_restore", cpu=cpu.index)
    regs = frame(cpu, cpu.r[4] + 4)  # above the return address
    assert_saved(regs, user, "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX", "DS", "ES")
    assert regs["ORIG_EAX"] == 0xFFFFFFFF
    assert {name: regs[name] for name in hardware} == hardware
    assert regs["CS"] == USER_CS
    opcode = code_byte(cpu, regs["EIP"])
    assert 0xD8 <= opcode <= 0xDF or opcode == 0x9B  # an x87 escape or fwait faulted
    # after math_state_restore: TS clear and the task marked as the FPU owner
    run_to(guest, "ret_from_exception", cpu=cpu.index)
    assert not cpu.cr[0] & 0x8
    ti = cpu.r[4] & -THREAD_SIZE
    assert read32(cpu, ti + 12) & 1  # TS_USEDFPU


def test_error_code_frame_of_a_kernel_page_fault():
    """sys_write on an unmapped user buffer faults in the kernel; error_code turns
    [error code][handler] into ORIG_EAX and ES and the exception table resumes."""
    guest = new_guest()
    cpu = run_to(guest, "page_fault")
    error = read32(cpu, cpu.r[4])
    fault_eip = read32(cpu, cpu.r[4] + 4)
    assert read32(cpu, cpu.r[4] + 8) == KERNEL_CS  # same privilege: no ESP/SS
    user = registers(cpu)
    cpu = run_to(guest, "do_page_fault", cpu=cpu.index)
    regs = frame(cpu, cpu.r[0])
    assert cpu.r[2] == error == 0  # not present, read, supervisor
    assert_saved(regs, user, "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX", "DS", "ES")
    assert regs["ORIG_EAX"] == 0xFFFFFFFF
    assert regs["EIP"] == fault_eip and regs["CS"] == KERNEL_CS
    symbols = guest.build.kernel.symbols
    assert symbols["sys_write"] < fault_eip < symbols["find_task_by_pid"]
    assert cpu.cr[2] == 0x1000
    # the fixup: back in sys_write's .fixup code, then -EFAULT to the user
    cpu = run_to(guest, "ret_from_exception", cpu=cpu.index)
    assert symbols["__start___ex_table"] < symbols["__stop___ex_table"]
    assert read32(cpu, cpu.r[4] + 0x28) != fault_eip  # regs->eip = the fixup


def test_ldt_ss_returns_through_the_espfix_stack():
    guest = new_guest()
    cpu = run_to(guest, "ldt_ss")
    regs = frame(cpu, cpu.r[4])
    assert regs["CS"] == USER_CS and regs["OLDSS"] == 0x07  # LDT entry 0, RPL 3
    assert regs["OLDESP"] >> 16 == 0x5A5A
    iret_frame = [regs[name] for name in ("EIP", "CS", "EFLAGS", "OLDESP", "OLDSS")]
    machine = guest.machine
    for _ in range(2000):
        index, _, _ = machine.step()
        if index == cpu.index and cpu.sreg[2] == ESPFIX_SS:
            break
    else:
        raise AssertionError("ldt_ss never loaded __ESPFIX_SS")
    # SP addresses the copy of the IRET frame on the 16-bit stack; ESP[31:16]
    # is already the user's
    assert cpu.stack_bits == 16
    assert cpu.r[4] >> 16 == regs["OLDESP"] >> 16
    base = cpu.seg_base[2]
    sp = cpu.r[4] & 0xFFFF
    assert [read32(cpu, base + sp + 4 * i) for i in range(5)] == iret_frame
    assert step_cpu(guest, cpu.index)[1] == "instruction"  # the IRET
    assert cpu.cpl == 3 and cpu.sreg[2] == 0x07
    assert cpu.r[4] == regs["OLDESP"]  # all 32 bits
    assert cpu.eip == regs["EIP"]


def test_restore_nocheck_iret_to_user():
    guest = new_guest()
    cpu = run_to(guest, "restore_nocheck", when=lambda c: read32(c, c.r[4] + 0x2C) == USER_CS)
    regs = frame(cpu, cpu.r[4])
    for _ in range(12):  # RESTORE_REGS, addl $4, IRET
        step_cpu(guest, cpu.index)
        if cpu.cpl == 3:
            break
    assert cpu.cpl == 3
    assert cpu.eip == regs["EIP"] and cpu.r[4] == regs["OLDESP"]
    assert [cpu.r[i] for i in (3, 1, 2, 6, 7, 5, 0)] == [
        regs[name] for name in ("EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "EAX")]
    assert cpu.sreg[1] == USER_CS and cpu.sreg[2] == USER_DS


def test_resume_kernel_preempts_interrupted_kernel_code():
    guest = new_guest()
    cpu = run_to(guest, "preempt_schedule_irq")
    regs = frame(cpu, cpu.r[4] + 4)  # need_resched's frame, above the return address
    assert regs["CS"] & 3 == 0 and regs["CS"] == KERNEL_CS
    assert regs["EFLAGS"] & IF  # preempted only where interrupts were on
    ti = cpu.r[4] & -THREAD_SIZE
    assert read32(cpu, ti + 20) == 0  # preempt_count
    assert read32(cpu, ti + 8) & (1 << 3)  # TIF_NEED_RESCHED
    assert regs["ORIG_EAX"] == (~0x20) & 0xFFFFFFFF  # a timer interrupt


def test_work_notifysig_delivers_a_signal():
    guest = new_guest()
    cpu = run_to(guest, "do_notify_resume")
    regs = frame(cpu, cpu.r[0])
    assert cpu.r[0] == cpu.r[4] + 4
    assert regs["CS"] == USER_CS
    assert cpu.r[1] & (1 << 2)  # TIF_SIGPENDING in the work flags
    assert not cpu.flags & IF


def test_faulting_iret_goes_to_iret_exc_and_kills_the_task():
    """A user frame the processor refuses (CS with RPL 3 naming the kernel's DPL-0
    code segment): the IRET faults with #GP, the exception table sends it to
    iret_exc, and do_iret_error kills the task with SIGSEGV; the rest go on."""
    guest = new_guest()

    def locker_returning(cpu) -> bool:
        return read32(cpu, cpu.r[4] + 0x2C) == USER_CS and current_pid(guest, cpu) == 2

    cpu = run_to(guest, "restore_nocheck", when=locker_returning)
    cs_slot = cpu.linear_to_physical(cpu.r[4] + 0x2C)
    cpu.mem.write32(cs_slot, KERNEL_CS | 3)
    run_to(guest, "iret_exc", cpu=cpu.index, max_steps=5000)
    guest.run(RUN_STEPS)
    summary = guest.summary()
    assert summary["completed"]
    statuses = {task["pid"]: task["exit_code"] for task in summary["tasks"]}
    assert statuses == {1: 0, 2: 128 + 11, 3: 0, 4: 0, 5: 0}
    counters = guest.counters()
    assert counters["user_faults"] == 1 and counters["kernel_oopses"] == 0
    assert counters["exception_fixups"] >= 2
    assert "task 2: exception 32 error 0x00000000" in summary["console"]
    assert "killed by signal 11" in summary["console"]


@pytest.fixture(scope="module")
def executed() -> set[int]:
    """The address of every instruction a whole one-CPU run executed."""
    guest = new_guest()
    machine = guest.machine
    addresses = set()
    for _ in range(RUN_STEPS):
        _cpu, kind, value = machine.step()
        if kind == "instruction":
            addresses.add(value)
        elif kind == "idle" and value == 0 and machine.all_stuck():
            break
    assert guest.completed
    return addresses


@pytest.mark.parametrize("label", [
    "system_call", "syscall_call", "syscall_exit", "restore_all", "restore_nocheck",
    "sysenter_entry", "sysenter_past_esp", "sysenter_do_call", "sysenter_exit",
    "ret_from_intr", "ret_from_exception", "resume_userspace", "resume_kernel",
    "need_resched", "work_pending", "work_resched", "work_notifysig", "syscall_badsys",
    "common_interrupt", "error_code", "ldt_ss", "setup_x86_bogus_stack",
    "device_not_available", "math_state_restore", "fixup_exception", "schedule",
    "__switch_to", "preempt_schedule_irq", "cpu_idle", "ret_from_fork", "do_notify_resume",
])
def test_entry_labels_are_reached(executed, label):
    """Every label of the 2.6.16 structure exists and a whole run executes it."""
    address = build_guest().symbol(label)
    assert address in executed
