"""The faulting IRET: the ``badseg`` program (vmi/guest/user/badseg.S) clears the LDT
entry its own SS names, so the IRET that returns it from that modify_ldt faults
with #GP(0x0C). 2.6.16's exception table sends the fault to ``iret_exc``, which
makes the refused frame the pt_regs of exception 32 handled by ``do_iret_error``:
the task is killed with SIGSEGV and the rest of the workload goes on.

Natively the fault is the kernel's own ``iret``; under the VMI monitor it is the
ROM's, and the monitor reports it at the IRET call site (docs/hypervisor.md), so
the same table entry applies; in ``trap`` mode the bare ``iret`` at ring 1 faults
at the site itself. The ``naive`` macro set's inline store-pop-iret faults on its
last instruction, which no table entry names: the kernel oopses (docs/guest.md).
"""

from __future__ import annotations

import pytest

from tests.guest.conftest import frame, read32, run_to
from vmi.guest import DEFAULT_WORKLOAD, PROGRAMS
from vmi.guest.loader import IRET_FAULT_WORKLOAD
from vmi.system import boot_system

USER_CS, KERNEL_CS = 0x73, 0x60
BADSEG_SS = 0x0F
SIGSEGV = 11
PAGE_OFFSET = 0xC0000000
#: (mode, policy): every configuration whose IRET fault reaches iret_exc
REFLECTING = (("native", "defer"), ("trap", "defer"), ("vmi", "defer"), ("vmi", "fixup"),
              ("vmi", "none"))


def boot(mode: str, policy: str = "defer"):
    return boot_system(mode, policy=policy, workload=IRET_FAULT_WORKLOAD)


def iret_sites(system) -> list[int]:
    """The IRET sites of the exception table (those whose fixup is iret_exc), in
    address order: restore_nocheck's, then ldt_ss's."""
    build = system.guest.build
    memory = system.machine.memory

    def word(virtual: int) -> int:  # the kernel maps physical memory at PAGE_OFFSET
        return memory.read32(virtual - PAGE_OFFSET)

    start, stop = build.symbol("__start___ex_table"), build.symbol("__stop___ex_table")
    entries = [(word(e), word(e + 4)) for e in range(start, stop, 8)]
    return sorted(site for site, fixup in entries if fixup == build.symbol("iret_exc"))


def test_the_program_is_not_in_the_default_workload():
    assert "badseg" in PROGRAMS and "badseg" not in DEFAULT_WORKLOAD


@pytest.mark.parametrize(("mode", "policy"), REFLECTING)
def test_the_task_is_killed_with_sigsegv_and_the_rest_go_on(mode, policy):
    system = boot(mode, policy)
    guest = system.guest
    guest.run(3_000_000)
    summary = guest.summary()
    assert summary["completed"]
    statuses = {task["program"]: task["exit_code"] for task in summary["tasks"]}
    assert statuses == {"badseg": 128 + SIGSEGV, "syscalls": 0}
    counters = guest.counters()
    assert counters["user_faults"] == 1 and counters["kernel_oopses"] == 0
    assert counters["user_checks_failed"] == 0  # check 2: the IRET did not fault
    returned = next(p for p in guest.programs if p.name == "badseg").symbols["badseg_returned"]
    assert (f"task 1: exception 32 error 0x00000000 at {returned:#010x}, killed by signal "
            f"{SIGSEGV}\n") in summary["console"]


def test_the_clear_zeroes_the_ldt_entry():
    system = boot("native")
    guest = system.guest
    cpu = run_to(guest, "iret_exc", max_steps=2_000_000)
    ldt = guest.build.symbol("ldt_table")
    assert read32(cpu, ldt + 8) == 0 and read32(cpu, ldt + 12) == 0
    assert guest.read32("ldt_writes") == 2  # the flat entry, then its clear


@pytest.mark.parametrize(("mode", "policy"), REFLECTING)
def test_the_fault_is_reported_at_the_iret_site_and_fixed_up(mode, policy):
    """At the #GP handler: a kernel frame whose EIP is restore_nocheck's IRET site
    (under the monitor: the call of the ROM, not the ROM's own iret) with error code
    the selector; at iret_exc: the refused user frame, whole, on top of the stack."""
    system = boot(mode, policy)
    guest = system.guest
    site = iret_sites(system)[0]
    cpu = run_to(guest, "general_protection", max_steps=2_000_000)
    error, eip, cs = (read32(cpu, cpu.r[4] + k) for k in (0, 4, 8))
    assert (error, eip) == (BADSEG_SS & ~3, site)
    assert cs & ~3 == KERNEL_CS
    cpu = run_to(guest, "iret_exc", max_steps=20_000)
    user = frame(cpu, cpu.r[4] - 0x28)  # the processor's five words at ESP
    program = next(p for p in guest.programs if p.name == "badseg")
    assert user["EIP"] == program.symbols["badseg_returned"]
    assert (user["CS"], user["OLDSS"]) == (USER_CS, BADSEG_SS)
    assert guest.read32("exception_fixups") >= 1


def test_naive_oopses_on_the_inline_iret_no_table_entry_names():
    """The naive macro set's IRET is ``pushl; movl; andl; movl; popl; iret`` inline
    (vmi/asm/macros/naive.S): the exception-table
    entry names its first instruction, the fault is the last one's, so
    fixup_exception finds nothing and the kernel dies (what a naive port does)."""
    system = boot("naive")
    guest = system.guest
    site = iret_sites(system)[0]
    guest.run(3_000_000)
    counters = guest.counters()
    assert counters["kernel_oopses"] == 1 and counters["user_faults"] == 0
    oops = next(line for line in system.machine.console.text.splitlines()
                if line.startswith("Oops"))
    assert oops.startswith(f"Oops: exception 13 error {BADSEG_SS & ~3:#010x}")
    faulted = int(oops.rsplit(":", 1)[1], 16)
    assert site < faulted < site + 32
    assert system.machine.memory.read8(faulted - PAGE_OFFSET) == 0xCF  # iret
