"""Near control flow (jmp jcc call ret loop jcxz) and miscellaneous instructions
(flag control, cli/sti, hlt, in/out, cpuid, rdtsc, rdmsr/wrmsr, software
interrupts, bound, ud2): Unicorn differential tests and unit tests.

Allowed differences, each with its reason:

* cpuid, rdtsc, rdmsr and wrmsr are not compared: Unicorn reports QEMU's CPU
  and clock, vmi a documented fixed model (``vmi/cpu/ops/misc.py``).
* cli, sti, hlt, in and out are compared at CPL 0 only (``run_pair``): Unicorn
  runs at CPL 0, so their CPL 3 faults are unit-tested instead.
* Unicorn reports only the vector of int n/int3/into/int1/bound/ud2; the
  shared oracle compares just that.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from tests.conftest import example_scale
from tests.cpu.test_exec_move import NO_LOCK, check_against_unicorn
from tests.cpu.test_exec_string import STATE_SEEDS, flat, forms_named, random_state, run_pair
from tests.strategies import encoding
from vmi.cpu import CPUException
from vmi.cpu import flags as fl
from vmi.cpu.core import CPU
from vmi.cpu.flags import CONDITION_CODES

CONTROL_FORMS = forms_named("jmp", "call", "ret", "loop", "loope", "loopne", "jcxz",
                            *("j" + cc for cc in CONDITION_CODES))
MISC_FORMS = forms_named("nop", "pause", "clc", "stc", "cmc", "cld", "std", "int", "int3", "into",
                         "int1", "bound", "ud2", "fwait")
PRIVILEGED_FORMS = forms_named("cli", "sti", "hlt", "in", "out")


@settings(max_examples=2800 * example_scale())
@given(encoding(forms=CONTROL_FORMS, prefixes=NO_LOCK), STATE_SEEDS)
def test_control_transfers_match_unicorn(code, seed):
    check_against_unicorn(code, *random_state(seed))


@settings(max_examples=800 * example_scale())
@given(encoding(forms=MISC_FORMS, prefixes=NO_LOCK), STATE_SEEDS)
def test_misc_instructions_match_unicorn(code, seed):
    check_against_unicorn(code, *random_state(seed))


@settings(max_examples=400 * example_scale())
@given(encoding(forms=PRIVILEGED_FORMS + MISC_FORMS, prefixes=NO_LOCK), STATE_SEEDS)
def test_privileged_instructions_match_unicorn_at_cpl0(code, seed):
    report = run_pair(code, *random_state(seed))
    assert report is None, report


# -- unit tests: control ----------------------------------------------------------------
def test_call_and_ret_with_16_bit_operand_size():
    # at 0x1000: 66 e8 rel16 -> IP-relative target masked to 16 bits
    cpu = flat(bytes([0x66, 0xE8, 0x10, 0x00]), esp=0x8000)
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.eip == 0x1014 and cpu.regs.esp == 0x7FFE and cpu.mem.read16(0x7FFE) == 0x1004
    cpu.mem.load(0x1014, bytes([0x66, 0xC3]))
    cpu.mem.write16(0x7FFE, 0x2345)
    cpu.step()
    assert cpu.eip == 0x2345 and cpu.regs.esp == 0x8000


def test_16_bit_jump_masks_eip():
    cpu = flat(b"", esp=0x8000)
    cpu.mem.load(0x12340, bytes([0x66, 0xE9, 0xF0, 0xFF]))  # jmp .-12 -> wraps into 64K
    cpu.eip = 0x12340
    cpu.step()
    assert cpu.eip == (0x12344 - 0x10) & 0xFFFF


def test_indirect_call_through_esp_reads_before_the_push():
    cpu = flat(bytes([0xFF, 0x14, 0x24]), esp=0x8000)  # call *(%esp)
    cpu.mem.write32(0x8000, 0x5000)
    cpu.step()
    assert cpu.eip == 0x5000 and cpu.mem.read32(0x7FFC) == 0x1003


def test_ret_imm16_releases_arguments():
    cpu = flat(bytes([0xC2, 0x08, 0x00]), esp=0x8000)
    cpu.mem.write32(0x8000, 0x4444)
    cpu.step()
    assert cpu.eip == 0x4444 and cpu.regs.esp == 0x800C


def test_loop_with_16_bit_address_size_uses_cx():
    cpu = flat(bytes([0x67, 0xE2, 0xFD]), ecx=0x00010002)  # addr16 loop .
    cpu.step()
    assert cpu.regs.ecx == 0x00010001 and cpu.eip == 0x1000
    cpu.step()
    assert cpu.regs.ecx == 0x00010000 and cpu.eip == 0x1003


def test_loop_32_bit_wraps_from_zero():
    cpu = flat(bytes([0xE2, 0xFE]), ecx=0)
    cpu.step()
    assert cpu.regs.ecx == 0xFFFFFFFF and cpu.eip == 0x1000


def test_loope_and_loopne_test_zf():
    cpu = flat(bytes([0xE1, 0xFE]), ecx=5)
    cpu.eflags = 0x2 | fl.ZF
    cpu.step()
    assert cpu.eip == 0x1000 and cpu.regs.ecx == 4
    cpu.eflags = 0x2
    cpu.step()
    assert cpu.eip == 0x1002 and cpu.regs.ecx == 3
    cpu = flat(bytes([0xE0, 0xFE]), ecx=5)
    cpu.eflags = 0x2 | fl.ZF
    cpu.step()
    assert cpu.eip == 0x1002


def test_jcxz_uses_the_address_size():
    cpu = flat(bytes([0x67, 0xE3, 0x10]), ecx=0x10000)  # CX = 0
    cpu.step()
    assert cpu.eip == 0x1013
    cpu = flat(bytes([0xE3, 0x10]), ecx=0x10000)  # ECX != 0
    cpu.step()
    assert cpu.eip == 0x1002


@pytest.mark.parametrize("code,taken", [("74", True), ("75", False)])
def test_je_jne_fast_path_with_every_flag_record(code, taken):
    for record in [(fl.EXPLICIT, 32, fl.ZF, 0, 0), (fl.SUB, 8, 5, 5, 0),
                   (fl.ADD, 16, 0xFFFF, 1, 0x10000), (fl.LOGIC, 32, 0, 0, 0)]:
        cpu = flat(bytes.fromhex(code) + b"\x10")
        cpu.lf = record
        cpu.step()
        assert (cpu.eip == 0x1012) == taken, record


# -- unit tests: misc ----------------------------------------------------------------------
@pytest.mark.parametrize("opcode", [0xFA, 0xFB])
def test_cli_sti_fault_at_cpl3_with_iopl0(opcode):
    cpu = flat(bytes([opcode]), cpl=3)
    cpu.eflags = 0x202
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert (info.value.vector, info.value.error_code) == (13, 0)
    assert cpu.eip == 0x1000 and cpu.eflags & fl.IF


def test_cli_sti_allowed_at_cpl3_with_iopl3():
    cpu = flat(bytes([0xFA, 0xFB]), cpl=3)
    cpu.eflags = 0x3202
    cpu.step()
    assert not cpu.eflags & fl.IF
    cpu.step()
    assert cpu.eflags & fl.IF and cpu.shadow


def test_sti_sets_the_shadow_only_when_if_was_clear():
    cpu = flat(bytes([0xFB]))
    cpu.eflags = 0x202
    cpu.step()
    assert not cpu.shadow


def test_cli_at_ring1_iopl0_faults():
    cpu = flat(bytes([0xFA]))
    cpu.cpl = 1
    with pytest.raises(CPUException):
        cpu.step()


def test_hlt_at_cpl3_faults_and_at_cpl0_halts():
    cpu = flat(bytes([0xF4]), cpl=3)
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert (info.value.vector, info.value.error_code) == (13, 0) and not cpu.halted
    cpu = flat(bytes([0xF4, 0x90]))
    assert cpu.run(10) == 1
    assert cpu.halted and cpu.eip == 0x1001
    assert cpu.run(10) == 0  # stays halted until an event


def test_hlt_in_real_mode_ignores_cpl():
    cpu = flat(bytes([0xF4]))
    cpu.cr[0] &= ~1
    cpu.cpl = 3
    cpu.step()
    assert cpu.halted


def test_flag_instructions():
    cpu = flat(bytes([0xF9, 0xF5, 0xF5, 0xF8, 0xFD, 0xFC]))
    cpu.eflags = 0x2 | fl.ZF | fl.OF
    expected = [fl.CF, 0, fl.CF, 0]
    for cf in expected:
        cpu.step()
        assert cpu.eflags & (fl.CF | fl.ZF | fl.OF) == cf | fl.ZF | fl.OF
    cpu.step()
    assert cpu.eflags & fl.DF
    cpu.step()
    assert not cpu.eflags & fl.DF


def test_cpuid_leaves():
    cpu = flat(bytes([0x0F, 0xA2, 0x0F, 0xA2, 0x0F, 0xA2]), eax=0)
    cpu.step()
    vendor = b"".join(v.to_bytes(4, "little") for v in (cpu.regs.ebx, cpu.regs.edx,
                                                          cpu.regs.ecx))
    assert vendor == b"GenuineIntel" and cpu.regs.eax == 1
    cpu.regs.eax = 1
    cpu.step()
    assert cpu.regs.eax == 0x633
    assert cpu.regs.edx & (1 << 11) and cpu.regs.edx & (1 << 4) and cpu.regs.edx & (1 << 5)
    assert not cpu.regs.edx & 1  # no FPU
    cpu.regs.eax = 0x80000000
    cpu.step()
    assert cpu.regs.eax == 0x633  # above the highest leaf: leaf 1 again


def test_rdtsc_reads_the_cycle_counter():
    cpu = flat(bytes([0x90, 0x90, 0x0F, 0x31]))
    cpu.run(2)
    before = cpu.cycles
    cpu.cycles += 0x1_0000_0005
    cpu.step()
    assert (cpu.regs.edx << 32) | cpu.regs.eax == before + 0x1_0000_0005


def test_rdtsc_with_cr4_tsd_faults_at_cpl3():
    cpu = flat(bytes([0x0F, 0x31]), cpl=3)
    cpu.cr[4] |= 4
    with pytest.raises(CPUException):
        cpu.step()


def test_rdmsr_wrmsr():
    # wrmsr SYSENTER_CS; rdmsr it back; rdmsr TSC; rdmsr unknown -> #GP(0)
    cpu = flat(bytes([0x0F, 0x30, 0x0F, 0x32, 0x0F, 0x32, 0x0F, 0x32]), ecx=0x174,
               eax=0x60, edx=0)
    cpu.step()
    assert cpu.msr[0x174] == 0x60
    cpu.regs.eax = 0
    cpu.step()
    assert cpu.regs.eax == 0x60 and cpu.regs.edx == 0
    cpu.regs.ecx = 0x10
    cycles = cpu.cycles
    cpu.step()
    assert cpu.regs.eax == cycles
    cpu.regs.ecx = 0x1B  # APIC base: not modelled
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert (info.value.vector, info.value.error_code) == (13, 0)


def test_wrmsr_tsc_moves_rdtsc():
    cpu = flat(bytes([0x0F, 0x30, 0x0F, 0x31]), ecx=0x10, eax=1000, edx=1)
    cpu.step()
    cpu.step()
    # rdtsc runs with cycles advanced by the wrmsr's cost
    assert (cpu.regs.edx << 32) | cpu.regs.eax == (1 << 32) + 1000 + cpu.icache[0x1000][2]


def test_msr_access_at_cpl3_faults():
    for code in (b"\x0f\x32", b"\x0f\x30"):
        cpu = flat(code, cpl=3, ecx=0x174)
        with pytest.raises(CPUException) as info:
            cpu.step()
        assert info.value.vector == 13


class Bus:
    def __init__(self):
        self.log = []

    def read(self, port, size):
        self.log.append(("in", port, size))
        return 0x12345678

    def write(self, port, size, value):
        self.log.append(("out", port, size, value))


def test_in_out_through_the_bus_and_without_one():
    code = bytes([0xE4, 0x60, 0x66, 0xED, 0xEF, 0xE6, 0x80])
    cpu = flat(code, eax=0xAAAAAAAA, edx=0x3F8)
    cpu.run(2)
    assert cpu.regs.eax == 0xAAAAFFFF  # no bus: all ones
    cpu = flat(code, eax=0xAAAAAAAA, edx=0x3F8)
    cpu.io = Bus()
    cpu.run(4)
    assert cpu.regs.eax == 0xAAAA5678
    assert cpu.io.log == [("in", 0x60, 1), ("in", 0x3F8, 2), ("out", 0x3F8, 4, 0xAAAA5678),
                          ("out", 0x80, 1, 0x78)]


def test_in_out_at_cpl3_need_iopl3():
    cpu = flat(bytes([0xEC]), cpl=3)
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert info.value.vector == 13
    cpu = flat(bytes([0xEC]), cpl=3)
    cpu.eflags = 0x3002
    cpu.step()
    assert cpu.regs.al == 0xFF


def _raised(code: bytes, **regs) -> tuple[CPU, CPUException]:
    cpu = flat(code, **regs)
    with pytest.raises(CPUException) as info:
        cpu.step()
    return cpu, info.value


def test_software_interrupts_are_traps_after_the_instruction():
    for code, vector, software in [(b"\xcd\x80", 0x80, True), (b"\xcc", 3, True),
                                   (b"\xf1", 1, False)]:
        cpu, exc = _raised(code)
        assert exc.vector == vector and exc.trap and exc.software is software
        assert exc.error_code is None
        assert cpu.eip == 0x1000 + len(code)


def test_into_traps_only_with_of():
    cpu = flat(b"\xce")
    cpu.step()
    assert cpu.eip == 0x1001
    cpu = flat(b"\xce")
    cpu.eflags = 0x2 | fl.OF
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert info.value.vector == 4 and info.value.trap and cpu.eip == 0x1001


def test_bound_is_a_fault_with_signed_bounds():
    # bound %eax,(%ebx) with bounds [-5, 10]
    for value, faults in [(0, False), (-5, False), (10, False), (11, True), (-6, True)]:
        cpu = flat(b"\x62\x03", eax=value & 0xFFFFFFFF, ebx=0x9000)
        cpu.mem.write32(0x9000, -5 & 0xFFFFFFFF)
        cpu.mem.write32(0x9004, 10)
        if faults:
            with pytest.raises(CPUException) as info:
                cpu.step()
            assert info.value.vector == 5 and not getattr(info.value, "trap", False)
            assert cpu.eip == 0x1000
        else:
            cpu.step()
            assert cpu.eip == 0x1002


def test_bound_16_bit():
    cpu = flat(b"\x66\x62\x03", eax=0x1234_8000, ebx=0x9000)  # AX = -32768
    cpu.mem.write16(0x9000, 0x8000)
    cpu.mem.write16(0x9002, 0x7FFF)
    cpu.step()
    assert cpu.eip == 0x1003


def test_ud2_and_fwait():
    cpu, exc = _raised(b"\x0f\x0b")
    assert exc.vector == 6 and cpu.eip == 0x1000
    cpu = flat(b"\x9b")
    cpu.step()
    assert cpu.eip == 0x1001
    cpu = flat(b"\x9b")
    cpu.cr[0] |= 0xA  # MP | TS
    with pytest.raises(CPUException) as info:
        cpu.step()
    assert info.value.vector == 7


def test_pause_is_a_nop():
    cpu = flat(b"\xf3\x90")
    cpu.step()
    assert cpu.eip == 0x1002
