"""End-to-end checks of the flat CPU on small programs."""

from vmi.cpu import CPU
from vmi.demo import DEMO_BASE, DEMO_CODE


def test_alu_loop_matches_reference_values():
    """The ALU loop of reference/oracles-and-speed.md §4 (with add for shl until
    shifts land) computes what a hand calculation of its recurrences gives."""
    cpu = CPU.flat()
    code = bytes.fromhex("01d811f231c783eb0381e6ffffff7f83ca014001ff89c54975e6")
    cpu.mem.load(0x1000, code)
    cpu.eip = 0x1000
    cpu.regs.ecx = 1000
    cpu.run(11 * 1000)
    assert cpu.eip == 0x101A and cpu.regs.ecx == 0
    # eax_{n+1} = eax_n + ebx_n + 1 with ebx_n = -3n: eax_1000 = 1000 - 3*(999*1000/2)
    assert cpu.regs.eax == (1000 - 3 * 999 * 1000 // 2) & 0xFFFFFFFF
    assert cpu.regs.ebx == (-3000) & 0xFFFFFFFF


def test_demo_program_computes_fibonacci():
    cpu = CPU.flat()
    cpu.mem.load(DEMO_BASE, DEMO_CODE)
    cpu.eip = DEMO_BASE
    cpu.run(108)
    assert cpu.regs.eax == 6765
