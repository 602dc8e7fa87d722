"""End-to-end checks of the flat CPU on small programs."""

from vmi.cpu import CPU


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


def test_fibonacci_program_halts_with_the_answer():
    """Fibonacci(20) in a loop, passed on the stack to a subroutine that stores it
    (the program `vmi run` ran before the guest kernel existed)::

        mov $0x8000,%esp ; mov $20,%ecx ; xor %eax,%eax ; mov $1,%ebx
    1:  mov %eax,%edx ; add %ebx,%eax ; mov %edx,%ebx ; dec %ecx ; jnz 1b
        push %eax ; call 2f ; hlt
    2:  mov 4(%esp),%edx ; mov %edx,0x9000 ; ret $4
    """
    code = bytes.fromhex(
        "bc00800000b91400000031c0bb0100000089c201d889d34975f750e801000000f4"
        "8b542404891500900000c20400"
    )
    cpu = CPU.flat()
    cpu.mem.load(0x1000, code)
    cpu.eip = 0x1000
    cpu.run(200)
    assert cpu.halted
    assert cpu.regs.eax == 6765 and cpu.mem.read32(0x9000) == 6765
