"""Run one instruction in Unicorn (UC_MODE_32, flat) and in vmi from the same state.

Unicorn is an oracle for user-mode instruction semantics and fault detection,
not for delivery or limits (``reference/oracles-and-speed.md`` §3.2). Both
machines map the same code page and data window; an access outside them in
Unicorn makes the example unusable (``None``), not a failure.

Two harnesses share the machines' set-up and the comparison:

* ``compare`` (``run_unicorn``, ``run_vmi``): one step, vmi at CPL 3, the
  arithmetic flags and DF compared, the data window at ``DATA_BASE``.
* ``run_pair`` (``run_unicorn_steps``, ``run_vmi_steps``), for string and
  privileged instructions, which need more:

  * **Several steps.** One Unicorn step (``emu_start(..., count=1)``) of a
    repeated string instruction performs ONE iteration and leaves EIP on the
    instruction, even after the last iteration (QEMU re-enters the instruction,
    which then sees a zero count and moves on). vmi also does one iteration per
    step but moves EIP on as soon as the count runs out (or repe/repne
    terminates). Comparing after one step would therefore differ only in EIP at
    the last iteration, and would leave the rest of the rep untested; so both
    machines are stepped until EIP leaves the instruction, and the final states
    are compared. The callers keep the count register small for the repeated forms.
  * **CPL 0.** Unicorn's flat UC_MODE_32 runs at CPL 0, so vmi runs at CPL 0
    here and IF/IOPL (popf, cli, sti) are compared as well.
  * **16-bit addresses.** Memory 0..0x30000 is mapped and compared, so SI/DI
    and BX+SI style addresses reach data; the code lives apart at ``CODE_AT``.
  * **Ports.** Unicorn's IN hook returns all ones, what vmi's empty bus reads.
"""

from __future__ import annotations

import collections
import functools
import random
from collections.abc import Iterable
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
#: The EFLAGS bits ``run_pair`` compares: arithmetic, IF, DF, IOPL, NT, AC, ID.
COMPARED_FLAGS = ARITH | 0x200 | 0x400 | 0x3000 | 0x4000 | 0x40000 | 0x200000
#: ``run_pair``'s memory: 0..MEMORY_END mapped and compared; the code at CODE_AT.
MEMORY_END = 0x30000
CODE_AT = 0x40000
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
    data: bytes  # the compared memory
    vector: int | None  # exception raised, if any
    steps: int = 1


def unicorn_steps(code_at: int, maps: Iterable[tuple[int, int]],
                  loads: Iterable[tuple[int, bytes]], regs: dict[str, int], eflags: int,
                  max_steps: int = 1, *, ports: bool = False) -> tuple[Uc, int | None, int] | None:
    """Step a flat Unicorn from EIP = ``code_at`` until EIP leaves it, an exception
    is raised, or ``max_steps``: the machine, the vector (or None) and the steps
    taken; None if Unicorn refused the example (an access outside the ``maps``,
    (address, size) pairs). ``loads`` are (address, bytes) written first; with
    ``ports`` IN reads all ones and OUT is dropped, as on vmi's empty bus."""
    uc = Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_32)
    for address, size in maps:
        uc.mem_map(address, size)
    for address, data in loads:
        uc.mem_write(address, data)
    for name, value in regs.items():
        uc.reg_write(_UC_REGS[name], value)
    uc.reg_write(ux.UC_X86_REG_EFLAGS, eflags)
    uc.reg_write(ux.UC_X86_REG_EIP, code_at)
    vector: list[int] = []

    def on_interrupt(uc, intno, _data):
        vector.append(intno)
        uc.emu_stop()

    def on_in(uc, port, size, _data):
        return (1 << size * 8) - 1

    def on_out(uc, port, size, value, _data):
        return None

    uc.hook_add(uc_const.UC_HOOK_INTR, on_interrupt)
    if ports:
        uc.hook_add(uc_const.UC_HOOK_INSN, on_in, None, 1, 0, ux.UC_X86_INS_IN)
        uc.hook_add(uc_const.UC_HOOK_INSN, on_out, None, 1, 0, ux.UC_X86_INS_OUT)
    steps = 0
    try:
        while steps < max_steps:
            steps += 1
            uc.emu_start(uc.reg_read(ux.UC_X86_REG_EIP), code_at + 0x1000, count=1)
            if vector or uc.reg_read(ux.UC_X86_REG_EIP) != code_at:
                break
    except UcError:
        return None
    return uc, vector[0] if vector else None, steps


def vmi_steps(code_at: int, loads: Iterable[tuple[int, bytes]], regs: dict[str, int],
              eflags: int, max_steps: int = 1, cpl: int = 3) -> tuple[CPU, int | None, int]:
    """Step vmi (flat, at ``cpl``, 1 MiB) from EIP = ``code_at`` until EIP leaves it,
    it halts or faults, or ``max_steps``: the CPU, the vector (or None) and the steps
    taken. ``loads`` are (address, bytes) written first."""
    cpu = CPU.flat(Memory(1 << 20), cpl=cpl)
    for address, data in loads:
        cpu.mem.load(address, data)
    for name, value in regs.items():
        setattr(cpu.regs, name, value)
    cpu.eflags = eflags
    cpu.eip = code_at
    vector = None
    steps = 0
    try:
        while steps < max_steps:
            steps += 1
            cpu.step()
            if cpu.eip != code_at or cpu.halted:
                break
    except CPUException as exc:
        vector = exc.vector
    return cpu, vector, steps


def _unicorn_outcome(uc: Uc, vector: int | None, steps: int, base: int, size: int) -> Outcome:
    return Outcome({name: uc.reg_read(_UC_REGS[name]) for name in GPRS},
                   uc.reg_read(ux.UC_X86_REG_EIP), uc.reg_read(ux.UC_X86_REG_EFLAGS),
                   bytes(uc.mem_read(base, size)), vector, steps)


def _vmi_outcome(cpu: CPU, vector: int | None, steps: int, base: int, size: int) -> Outcome:
    return Outcome({name: getattr(cpu.regs, name) for name in GPRS}, cpu.eip, cpu.eflags,
                   cpu.mem.read_bytes(base, size), vector, steps)


def run_unicorn(code: bytes, regs: dict[str, int], eflags: int, data: bytes) -> Outcome | None:
    """One step of ``code`` (at CODE_BASE, ``data`` at DATA_BASE) in Unicorn; None
    when the example is unusable."""
    run = unicorn_steps(CODE_BASE, [(0, 0x1000 + CODE_BASE), (DATA_BASE, DATA_SIZE)],
                        [(CODE_BASE, code), (DATA_BASE, data)], regs, eflags)
    return None if run is None else _unicorn_outcome(*run, DATA_BASE, DATA_SIZE)


def run_vmi(code: bytes, regs: dict[str, int], eflags: int, data: bytes) -> Outcome:
    """The same step in vmi at CPL 3."""
    run = vmi_steps(CODE_BASE, [(CODE_BASE, code), (DATA_BASE, data)], regs, eflags)
    return _vmi_outcome(*run, DATA_BASE, DATA_SIZE)


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


def differences(expected: Outcome, got: Outcome, flags: int, base: int,
                low16: tuple[str, ...] = ()) -> list[str]:
    """What differs between two outcomes without an exception: the registers (those
    in ``low16`` in their low word only), EIP, the EFLAGS bits in ``flags``, and the
    first differing byte of the memory compared (which starts at ``base``)."""
    problems = []
    for name in GPRS:
        mask = 0xFFFF if name in low16 else 0xFFFFFFFF
        if (expected.regs[name] ^ got.regs[name]) & mask:
            problems.append(f"{name}: unicorn {expected.regs[name]:#x} vmi {got.regs[name]:#x}")
    if expected.eip != got.eip:
        problems.append(f"eip: unicorn {expected.eip:#x} vmi {got.eip:#x}")
    if (expected.eflags ^ got.eflags) & flags:
        problems.append(f"eflags: unicorn {expected.eflags:#x} vmi {got.eflags:#x} "
                        f"(compared {flags:#x})")
    if expected.data != got.data:
        diff = next(i for i in range(len(expected.data)) if expected.data[i] != got.data[i])
        problems.append(f"memory at {base + diff:#x}: unicorn {expected.data[diff]:#x} "
                        f"vmi {got.data[diff]:#x}")
    return problems


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
    if expected.vector is not None or got.vector is not None:
        if expected.vector != got.vector:
            return f"{code.hex()} ({text}): exception: unicorn {expected.vector} vmi {got.vector}"
        return None
    problems = differences(expected, got, (ARITH | 0x400) & ~undefined_flags(code), DATA_BASE)
    if problems:
        state = " ".join(f"{k}={v:#x}" for k, v in regs.items())
        return f"{code.hex()} ({text}) from {state} eflags={eflags:#x}: " + "; ".join(problems)
    return None


# -- several steps at CPL 0 (see the module docstring) ------------------------------
#: How many examples ``run_pair`` compared and how many it had to skip.
USABLE: collections.Counter[str] = collections.Counter()


@functools.lru_cache(maxsize=64)
def _memory_image(seed: int) -> bytes:
    return random.Random(seed).randbytes(MEMORY_END)


def run_unicorn_steps(code: bytes, regs: dict[str, int], eflags: int, image: bytes,
                      max_steps: int) -> Outcome | None:
    """Step Unicorn until EIP leaves the instruction (or an exception); None if
    the example touched unmapped memory or Unicorn refused it."""
    run = unicorn_steps(CODE_AT, [(0, MEMORY_END), (CODE_AT, 0x1000)],
                        [(0, image), (CODE_AT, code)], regs, eflags, max_steps, ports=True)
    return None if run is None else _unicorn_outcome(*run, 0, MEMORY_END)


def run_vmi_steps(code: bytes, regs: dict[str, int], eflags: int, image: bytes,
                  max_steps: int, cpl: int = 0) -> Outcome:
    """Step vmi (flat, at ``cpl``) until EIP leaves the instruction or it faults."""
    run = vmi_steps(CODE_AT, [(0, image), (CODE_AT, code)], regs, eflags, max_steps, cpl)
    return _vmi_outcome(*run, 0, MEMORY_END)


def run_pair(code: bytes, regs: dict[str, int], eflags: int, seed: int, *, max_steps: int = 80,
             low16: tuple[str, ...] = ()) -> str | None:
    """Run both machines; None when they agree (or the example is unusable),
    else a report. Registers named in ``low16`` are compared in their low word
    only (documented differences, see the callers)."""
    image = _memory_image(seed)
    expected = run_unicorn_steps(code, regs, eflags, image, max_steps)
    if expected is None:
        USABLE["unusable"] += 1
        return None
    USABLE["compared"] += 1
    got = run_vmi_steps(code, regs, eflags, image, max_steps)
    try:
        text = str(decode(code, CODE_AT))
    except Exception as error:  # the decoder refuses it: #UD on both sides
        text = f"undecodable: {error}"
    state = " ".join(f"{k}={v:#x}" for k, v in regs.items())
    where = f"{code.hex()} ({text}) from {state} eflags={eflags:#x} seed={seed}"
    if expected.vector is not None or got.vector is not None:
        if expected.vector != got.vector:
            return f"{where}: exception: unicorn {expected.vector} vmi {got.vector}"
        return None
    problems = differences(expected, got, COMPARED_FLAGS & ~undefined_flags(code), 0, low16)
    return f"{where}: " + "; ".join(problems) if problems else None
