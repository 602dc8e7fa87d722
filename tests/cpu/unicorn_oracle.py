"""Run one instruction in Unicorn (UC_MODE_32, flat) and in vmi from the same state.

Unicorn is an oracle for user-mode instruction semantics and fault detection,
not for delivery or limits (``reference/oracles-and-speed.md`` §3.2). Both
machines map the same code page and data window; an access outside them in
Unicorn makes the example unusable (``None``), not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import iced_x86
from unicorn import Uc, UcError
from unicorn import unicorn_const as uc_const
from unicorn import x86_const as ux

from tests.strategies import CODE_BASE, DATA_BASE, DATA_SIZE
from vmi.cpu import CPU, CPUException, Memory, decode
from vmi.cpu.errors import DecodeError

GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_UC_REGS = {name: getattr(ux, f"UC_X86_REG_{name.upper()}") for name in GPRS}
ARITH = 0x8D5  # CF PF AF ZF SF OF
_ICED_FLAGS = {  # iced RflagsBits -> EFLAGS bit
    iced_x86.RflagsBits.OF: 0x800, iced_x86.RflagsBits.SF: 0x80, iced_x86.RflagsBits.ZF: 0x40,
    iced_x86.RflagsBits.AF: 0x10, iced_x86.RflagsBits.CF: 0x1, iced_x86.RflagsBits.PF: 0x4,
    iced_x86.RflagsBits.DF: 0x400, iced_x86.RflagsBits.IF: 0x200, iced_x86.RflagsBits.AC: 0x40000,
}


def undefined_flags(code: bytes) -> int:
    """EFLAGS bits iced says the instruction leaves undefined."""
    insn = iced_x86.Decoder(32, code, ip=CODE_BASE).decode()
    bits = insn.rflags_undefined
    return sum(eflag for iced_bit, eflag in _ICED_FLAGS.items() if bits & iced_bit)


@dataclass
class Outcome:
    regs: dict[str, int]
    eip: int
    eflags: int
    data: bytes
    vector: int | None  # exception raised, if any


def run_unicorn(code: bytes, regs: dict[str, int], eflags: int, data: bytes) -> Outcome | None:
    uc = Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_32)
    uc.mem_map(0, 0x1000 + CODE_BASE)  # page 0 and the code page
    uc.mem_map(DATA_BASE, DATA_SIZE)
    uc.mem_write(CODE_BASE, code)
    uc.mem_write(DATA_BASE, data)
    for name, value in regs.items():
        uc.reg_write(_UC_REGS[name], value)
    uc.reg_write(ux.UC_X86_REG_EFLAGS, eflags)
    uc.reg_write(ux.UC_X86_REG_EIP, CODE_BASE)
    vector: list[int] = []

    def on_interrupt(uc, intno, _data):
        vector.append(intno)
        uc.emu_stop()

    uc.hook_add(uc_const.UC_HOOK_INTR, on_interrupt)
    try:
        uc.emu_start(CODE_BASE, CODE_BASE + 0x1000, count=1)
    except UcError:
        return None
    return Outcome(
        {name: uc.reg_read(_UC_REGS[name]) for name in GPRS},
        uc.reg_read(ux.UC_X86_REG_EIP),
        uc.reg_read(ux.UC_X86_REG_EFLAGS),
        bytes(uc.mem_read(DATA_BASE, DATA_SIZE)),
        vector[0] if vector else None,
    )


def run_vmi(code: bytes, regs: dict[str, int], eflags: int, data: bytes) -> Outcome:
    cpu = CPU.flat(Memory(1 << 20), cpl=3)
    cpu.mem.load(CODE_BASE, code)
    cpu.mem.load(DATA_BASE, data)
    for name, value in regs.items():
        setattr(cpu.regs, name, value)
    cpu.eflags = eflags
    cpu.eip = CODE_BASE
    vector = None
    try:
        cpu.step()
    except CPUException as exc:
        vector = exc.vector
    return Outcome(
        {name: getattr(cpu.regs, name) for name in GPRS},
        cpu.eip,
        cpu.eflags,
        cpu.mem.read_bytes(DATA_BASE, DATA_SIZE),
        vector,
    )


def unicorn_would_crash(code: bytes, regs: dict[str, int]) -> bool:
    """Encodings that take the whole test process down inside Unicorn 2.1.4:
    LOCK on an instruction that cannot take it (a QEMU assertion for lock
    bts/btr/btc with a register destination; vmi raises #UD for all of them,
    checked by the decoder tests), and idiv of the most negative dividend, which
    Unicorn divides in host arithmetic (SIGFPE when the divisor is -1)."""
    try:
        insn = decode(code, CODE_BASE)
    except DecodeError:
        return any(b == 0xF0 for b in code[:15])
    if insn.mnemonic == "idiv":
        return (regs["edx"] == 0x80000000 and regs["eax"] == 0) or (
            regs["edx"] & 0xFFFF == 0x8000 and regs["eax"] & 0xFFFF == 0)
    return False


def compare(code: bytes, regs: dict[str, int], eflags: int, data: bytes) -> str | None:
    """Run both; return None when they agree (or the example is unusable), else a report."""
    if unicorn_would_crash(code, regs):
        return None
    expected = run_unicorn(code, regs, eflags, data)
    if expected is None:
        return None
    got = run_vmi(code, regs, eflags, data)
    text = str(iced_x86.Formatter(iced_x86.FormatterSyntax.GAS).format(
        iced_x86.Decoder(32, code, ip=CODE_BASE).decode()))
    problems = []
    if expected.vector is not None or got.vector is not None:
        if expected.vector != got.vector:
            problems.append(f"exception: unicorn {expected.vector} vmi {got.vector}")
        if problems:
            return f"{code.hex()} ({text}): " + "; ".join(problems)
        return None
    for name in GPRS:
        if expected.regs[name] != got.regs[name]:
            problems.append(f"{name}: unicorn {expected.regs[name]:#x} vmi {got.regs[name]:#x}")
    if expected.eip != got.eip:
        problems.append(f"eip: unicorn {expected.eip:#x} vmi {got.eip:#x}")
    mask = (ARITH | 0x400) & ~undefined_flags(code)
    if (expected.eflags ^ got.eflags) & mask:
        problems.append(f"eflags: unicorn {expected.eflags:#x} vmi {got.eflags:#x} "
                        f"(compared {mask:#x})")
    if expected.data != got.data:
        diff = next(i for i in range(DATA_SIZE) if expected.data[i] != got.data[i])
        problems.append(f"memory at {DATA_BASE + diff:#x}: unicorn "
                        f"{expected.data[diff]:#x} vmi {got.data[diff]:#x}")
    if problems:
        state = " ".join(f"{k}={v:#x}" for k, v in regs.items())
        return f"{code.hex()} ({text}) from {state} eflags={eflags:#x}: " + "; ".join(problems)
    return None
