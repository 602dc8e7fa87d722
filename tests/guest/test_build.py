"""Building the guest: every macro set assembles one kernel source; hook points are
written with the macros only; the vmi sets annotate the seed's sites; the
exception table and the memory map are consistent."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from vmi.asm.program import Annotation
from vmi.guest import MACRO_SETS, PROGRAMS, boot, build_guest, user_program
from vmi.guest.build import (
    KERNEL_SOURCE,
    PAGE_OFFSET,
    PROGRAM_BASE,
    ROM_BASE,
    naive_defines,
    slot_base,
)
from vmi.machine import Machine, MachineStopped

KERNEL_DIR = KERNEL_SOURCE.parent
HOOK_MNEMONICS = {"cli", "sti", "iret", "iretl", "sysexit", "wrmsr", "rdmsr", "cpuid"}
CR0_READ = re.compile(r"^movl?\s+%cr0\s*,\s*%eax$")
# VMI API 13 call numbers (docs/asm.md)
CPUID, WRMSR, GET_CR0, STI, CLI, IRET, SYSEXIT = 5, 6, 24, 35, 36, 39, 40


def statements(path):
    """(line number, statement) of an assembly file, comments and labels removed."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for statement in line.split(";"):
            statement = re.sub(r"^\s*(?:[A-Za-z_.$][\w.$]*:\s*|\d+:\s*)*", "", statement)
            if statement.strip():
                yield number, statement.strip()


def test_every_macro_set_assembles_the_same_kernel():
    builds = {name: build_guest(name) for name in MACRO_SETS}
    names = {name: set(build.kernel.symbols) for name, build in builds.items()}
    # the same labels and constants (the vmi and naive sets add their own)
    assert all(names["native"] <= symbols for symbols in names.values())
    assert builds["native"].kernel.program.annotations == ()
    for name, value in naive_defines().items():  # where the hypervisor publishes them
        assert builds["naive"].kernel.symbols[name] == value
    assert builds["naive"].kernel.program.annotations == ()
    for build in builds.values():
        assert build.kernel.program.base == PAGE_OFFSET + 0x100000
        assert build.kernel.load_address == 0x100000
        assert build.symbol("startup_32") == PAGE_OFFSET + 0x100000  # the physical entry
        assert build.rom.load_address == ROM_BASE and len(build.rom.program.image) == 0x10000
    assert build_guest("native") is build_guest("native")  # cached


def test_hook_points_use_the_macros():
    """No bare cli/sti/iret/sysexit/wrmsr/rdmsr/cpuid in the kernel; the only plain
    CR0 read is head.S's, before and while paging is switched on."""
    bare, raw, cr0_reads = [], [], []
    for path in sorted(KERNEL_DIR.glob("*.S")):
        for number, statement in statements(path):
            words = statement.split()
            if words[0] in HOOK_MNEMONICS:
                bare.append(f"{path.name}:{number}: {statement}")
            if words[0] == "{nooptimize}":
                raw.append((path.name, words[1]))
            if CR0_READ.match(statement):
                cr0_reads.append(path.name)
    assert bare == []
    # the one deliberate raw hook instruction: startup_32's CPU number, read
    # before the CPU has called the VMI ROM's Init (docs/guest.md)
    assert raw == [("head.S", "cpuid")]
    assert cr0_reads == ["head.S"]


def annotations_at(build, address) -> list[Annotation]:
    return [a for a in build.kernel.program.annotations if a.site == address]


def test_vmi_sites_are_the_seeds():
    build = build_guest("vmi")
    calls = Counter(a.call for a in build.kernel.program.annotations)
    # restore_nocheck and ldt_ss IRET; one STI_SYSEXIT; the three SYSENTER MSRs;
    # device_not_available, the FPU switch and cpu_init read CR0; no CPUID site
    # (startup_32's runs before Init)
    assert calls[IRET] == 2 and calls[SYSEXIT] == 1 and calls[WRMSR] == 3 and calls[CPUID] == 0
    assert calls[GET_CR0] == 3
    assert calls[CLI] >= 8 and calls[STI] >= 6
    for annotation in build.kernel.program.annotations:
        assert annotation.site_length == 5
    (sti_sysexit,) = annotations_at(build, build.symbol("sysenter_exit"))
    assert (sti_sysexit.call, sti_sysexit.native_length) == (SYSEXIT, 3)
    (cli,) = annotations_at(build, build.symbol("resume_userspace"))
    assert cli.call == CLI
    (get_cr0,) = [a for a in build.kernel.program.annotations if a.call == GET_CR0
                  and build.symbol("device_not_available") < a.site
                  < build.symbol("device_not_available") + 40]
    assert get_cr0.native_length == 3


def test_vmi_split_breaks_sti_sysexit_in_two():
    build = build_guest("vmi-split")
    exit_site = build.symbol("sysenter_exit")
    (sti,) = annotations_at(build, exit_site)
    (sysexit,) = annotations_at(build, exit_site + 5)
    assert (sti.call, sti.native_length) == (STI, 1)
    assert (sysexit.call, sysexit.native_length) == (SYSEXIT, 2)


def test_exception_table_entries():
    build = build_guest("native")
    program = build.kernel.program
    start, stop = build.symbol("__start___ex_table"), build.symbol("__stop___ex_table")
    table = program.section_bytes("__ex_table")
    assert stop - start == len(table) and len(table) % 8 == 0
    instructions = {line.address for line in program.listing if line.data}
    text = program.section(".text")
    fixup = program.section(".fixup")
    pairs = [(int.from_bytes(table[i:i + 4], "little"), int.from_bytes(table[i + 4:i + 8],
              "little")) for i in range(0, len(table), 8)]
    for insn, target in pairs:
        assert insn in instructions and text.address <= insn < text.end
        assert text.address <= target < text.end or fixup.address <= target < fixup.end
    # the IRETs of restore_nocheck and ldt_ss go to iret_exc
    assert sum(target == build.symbol("iret_exc") for _, target in pairs) == 2


def test_data_is_kept_off_code_pages():
    """A write to a page holding decoded code flushes the decode caches."""
    program = build_guest("native").kernel.program
    code_end = max(s.end for s in program.sections if s.code)
    assert program.section(".data").address >= (code_end + 0xFFF) & ~0xFFF
    for name in PROGRAMS:
        user = user_program(name, 0).program
        assert user.section(".data").address >> 12 != user.section(".text").address >> 12


def test_user_programs_link_per_slot():
    for name in PROGRAMS:
        first, second = user_program(name, 0), user_program(name, 3)
        assert first.program.base == PROGRAM_BASE and second.program.base == slot_base(3)
        assert first.load_address == 0x448000 and second.load_address == 0x448000 + 3 * 0x10000
    with pytest.raises(ValueError, match="unknown user program"):
        user_program("nosuch", 0)
    with pytest.raises(ValueError, match="unknown macro set"):
        build_guest("nosuch")


def test_boot_refuses_what_the_kernel_cannot_hold():
    with pytest.raises(ValueError, match="up to 4 CPUs"):
        boot(Machine(cpus=5))
    with pytest.raises(ValueError, match="up to 16 tasks"):
        boot(Machine(), workload=["locker"] * 17)


def test_naive_kernel_needs_the_hypervisor():
    """The naive set keeps its virtual IF at VMI_VIF, a page only the hypervisor
    maps: on the bare machine the first CLI faults before the IDT exists."""
    guest = boot(Machine(), macros="naive")
    with pytest.raises(MachineStopped, match="triple fault"):
        guest.run(200_000)


def test_a_smaller_workload_runs():
    guest = boot(Machine(cpus=2), workload=["locker", "locker", "syscalls"])
    guest.run(2_000_000)
    summary = guest.summary()
    assert summary["failures"] == [] and summary["completed"]
    assert [task["program"] for task in summary["tasks"]] == ["locker", "locker", "syscalls"]
