"""EFLAGS.TF: a debug trap after each instruction that began with TF set
(SDM Vol.3A §17.3.1.4, "Single-Step Exception Condition")."""

import pytest

from vmi.cpu import CPU, CPUException
from vmi.machine import Machine


def flat(code: bytes) -> CPU:
    cpu = CPU.flat()
    cpu.mem.load(0x1000, code)
    cpu.eip = 0x1000
    cpu.regs.esp = 0x8000
    return cpu


def test_trap_follows_the_instruction_with_eip_after_it():
    cpu = flat(bytes.fromhex("40" "40"))  # inc %eax ; inc %eax
    cpu.eflags = 0x102
    with pytest.raises(CPUException) as info:
        cpu.run(10)
    assert info.value.vector == 1 and getattr(info.value, "trap", False)
    assert cpu.eip == 0x1001 and cpu.regs.eax == 1  # trapped after the first inc
    assert cpu.dr[6] & 0x4000  # DR6.BS


def test_popf_that_sets_tf_traps_only_after_the_next_instruction():
    # push $0x102 ; popf ; inc %eax ; inc %eax
    cpu = flat(bytes.fromhex("6802010000" "9d" "40" "40"))
    with pytest.raises(CPUException) as info:
        cpu.run(10)
    assert info.value.vector == 1
    assert cpu.eip == 0x1007 and cpu.regs.eax == 1  # popf, then one inc, then the trap


def test_popf_that_clears_tf_still_traps_after_itself():
    cpu = flat(bytes.fromhex("6a02" "9d" "40"))  # push $2 ; popf ; inc %eax
    cpu.eflags = 0x102
    with pytest.raises(CPUException):
        cpu.run(1)  # the push
    cpu.run(0)
    with pytest.raises(CPUException) as info:
        cpu.run(1)  # the popf began with TF=1: trap after it
    assert info.value.vector == 1 and cpu.eip == 0x1003 and not cpu.flags & 0x100
    assert cpu.run(1) == 1 and cpu.regs.eax == 1  # no trap any more


def test_real_mode_trap_goes_through_the_ivt_with_tf_pushed():
    """The #DB frame holds FLAGS with TF=1; the handler runs with TF=0."""
    machine = Machine(memory_size=1 << 20)
    cpu = machine.cpus[0]
    machine.memory.load(0xFFFF0, bytes.fromhex("40"))  # inc %ax
    machine.memory.write32(1 * 4, 0x0000_2000)  # vector 1 -> 0000:2000
    cpu.regs.esp = 0x7000
    cpu.regs.ss = 0
    cpu.seg_base[2] = 0
    cpu.eflags = 0x102
    machine.step()
    assert (cpu.sreg[1], cpu.eip) == (0, 0x2000)
    assert not cpu.flags & 0x100
    flags, cs, ip = (machine.memory.read16(0x7000 - 2), machine.memory.read16(0x7000 - 4),
                     machine.memory.read16(0x7000 - 6))
    assert (ip, cs) == (0xFFF1, 0xF000) and flags & 0x100
