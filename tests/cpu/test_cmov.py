"""CMOVcc, conditional move (SDM Vol.2 CMOVcc; the conditions of Vol.1 Appendix B).

What the SDM says and each test below checks:

* the sixteen conditions, 0F 40-4F, with a 16- or 32-bit operand size and a
  register or memory source: compared with Unicorn on every combination of the
  five status flags the conditions read, for both outcomes of each condition
  (``test_every_condition_and_flag_combination_matches_unicorn``);
* ``temp <- SRC`` comes before the test: a memory source is read, and faults,
  even when the condition is false (Unicorn's read of unmapped memory; vmi's #PF
  with the destination untouched);
* when the condition is false a 32-bit destination keeps all its bits (only
  64-bit mode clears the upper half, and a 32-bit processor has none);
* no flag changes; CPUID.1:EDX.CMOV[bit 15] says the instruction exists;
* the compiled closures are stored by the translation cache and come back the same.
"""

from __future__ import annotations

import random

import pytest
from unicorn import Uc, UcError
from unicorn import unicorn_const as uc_const
from unicorn import x86_const as ux

from tests.cpu.test_codecache import (  # noqa: F401  (fresh_cache is a fixture)
    _new_process,
    _no_translation,
    fresh_cache,
)
from tests.cpu.test_exec_string import flat
from tests.cpu.test_paging import paged_cpu, set_pte
from tests.cpu.test_protected import fault_of, run_code, wire
from tests.cpu.unicorn_oracle import GPRS, compare
from tests.strategies import CODE_BASE, DATA_BASE, DATA_SIZE
from vmi.cpu import codecache, decode
from vmi.cpu.ops import instruction_cycles
from vmi.cpu.ops.misc import CPUID_LEAVES


@pytest.fixture(autouse=True)
def _wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instruction fetch through paging, as in tests/cpu/test_paging.py."""
    wire(monkeypatch)


CF, PF, ZF, SF, OF = 0x1, 0x4, 0x40, 0x80, 0x800
#: The condition of each opcode 0F 40+cc, written from SDM Vol.1 Appendix B
#: (independently of ``vmi.cpu.flags``): flags -> whether the move happens.
REFERENCE = {
    "o": lambda f: bool(f & OF), "no": lambda f: not f & OF,
    "b": lambda f: bool(f & CF), "ae": lambda f: not f & CF,
    "e": lambda f: bool(f & ZF), "ne": lambda f: not f & ZF,
    "be": lambda f: bool(f & (CF | ZF)), "a": lambda f: not f & (CF | ZF),
    "s": lambda f: bool(f & SF), "ns": lambda f: not f & SF,
    "p": lambda f: bool(f & PF), "np": lambda f: not f & PF,
    "l": lambda f: bool(f & SF) != bool(f & OF), "ge": lambda f: bool(f & SF) == bool(f & OF),
    "le": lambda f: bool(f & ZF) or bool(f & SF) != bool(f & OF),
    "g": lambda f: not f & ZF and bool(f & SF) == bool(f & OF),
}
CONDITIONS = list(REFERENCE)
#: Every combination of the five status flags the conditions read.
FLAG_SETS = [sum(bit for k, bit in enumerate((CF, PF, ZF, SF, OF)) if n >> k & 1) | 2
             for n in range(32)]
#: The ModRM bytes tried: ecx <- ebx (register), ecx <- (%esi) and 0x8(%esi,%edi,2).
SOURCES = {"register": bytes([0xCB]), "base": bytes([0x0E]),
           "sib+disp8": bytes([0x4C, 0x7E, 0x08])}


def cmov(cc: str, modrm: bytes, *, data16: bool = False) -> bytes:
    return (b"\x66" if data16 else b"") + bytes([0x0F, 0x40 + CONDITIONS.index(cc)]) + modrm


def _window(seed: int) -> bytes:
    return random.Random(seed).randbytes(DATA_SIZE)


def test_the_opcodes_decode_to_the_sixteen_conditions():
    for code, cc in enumerate(CONDITIONS):
        insn = decode(bytes([0x0F, 0x40 + code, 0xC8]))
        assert insn.mnemonic == f"cmov{cc}"
        assert str(insn) == f"{'cmov' + cc:<6} %eax,%ecx"  # objdump's column


@pytest.mark.parametrize("data16", [False, True], ids=["32-bit", "16-bit"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_condition_and_flag_combination_matches_unicorn(source, data16):
    """Each condition under all 32 combinations of CF PF ZF SF OF, so both outcomes of
    every condition occur (checked against the Appendix B table), compared with
    Unicorn (registers, EIP, flags, memory)."""
    rng = random.Random(f"{source}{data16}")
    outcomes = {cc: set() for cc in CONDITIONS}
    for cc in CONDITIONS:
        code = cmov(cc, SOURCES[source], data16=data16)
        for flags in FLAG_SETS:
            regs = {name: rng.getrandbits(32) for name in GPRS}
            regs.update(esi=DATA_BASE + rng.randrange(0x100), edi=rng.randrange(0x100),
                        esp=DATA_BASE + DATA_SIZE - 0x100)
            report = compare(code, regs, flags, _window(rng.randrange(8)))
            assert report is None, report
            outcomes[cc].add(REFERENCE[cc](flags))
    assert all(seen == {True, False} for seen in outcomes.values()), outcomes


def _unicorn_reads_unmapped(code: bytes, flags: int) -> bool:
    """Run ``cmovCC (%esi),%ecx`` in Unicorn with ESI in unmapped memory: whether it
    stops on a read of unmapped memory."""
    uc = Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_32)
    uc.mem_map(0, 0x1000 + CODE_BASE)
    uc.mem_write(CODE_BASE, code)
    uc.reg_write(ux.UC_X86_REG_ESI, 0x900000)
    uc.reg_write(ux.UC_X86_REG_ECX, 0x12345678)
    uc.reg_write(ux.UC_X86_REG_EFLAGS, flags)
    try:
        uc.emu_start(CODE_BASE, CODE_BASE + 0x1000, count=1)
    except UcError as error:
        return error.errno == uc_const.UC_ERR_READ_UNMAPPED
    return False


@pytest.mark.parametrize("cc", CONDITIONS)
def test_a_memory_source_is_read_even_when_the_condition_is_false(cc):
    """SDM Vol.2 CMOVcc, Operation: ``temp <- SRC`` before ``IF condition``. Unicorn
    faults on the unmapped source whatever the flags; vmi takes the #PF of a
    not-present page with the destination, EIP and CR2 as the SDM's fault rules say
    (Vol.3A §6.5: restartable; §4.7: CR2 the linear address)."""
    false_flags = next(f for f in FLAG_SETS if not REFERENCE[cc](f))
    true_flags = next(f for f in FLAG_SETS if REFERENCE[cc](f))
    code = cmov(cc, SOURCES["base"])
    assert _unicorn_reads_unmapped(code, false_flags)
    assert _unicorn_reads_unmapped(code, true_flags)

    for flags in (false_flags, true_flags):
        cpu = paged_cpu()
        set_pte(cpu, 0x300000, 0)
        cpu.regs.esi, cpu.regs.ecx = 0x300010, 0xDEADBEEF
        cpu.eflags = flags
        assert fault_of(lambda cpu=cpu, code=code: run_code(cpu, code)) == (14, 0)
        assert cpu.regs.ecx == 0xDEADBEEF and cpu.cr[2] == 0x300010
        assert cpu.eflags & 0x8D5 == flags & 0x8D5


def test_a_false_condition_leaves_the_whole_destination():
    """32-bit operand size, condition false: nothing is written, not even a zero
    upper half (SDM Vol.2 CMOVcc: the clearing is a 64-bit mode rule)."""
    # cmovne %ebx,%ecx with ZF = 1; cmovne (%esi),%ecx likewise.
    for code in (cmov("ne", SOURCES["register"]), cmov("ne", SOURCES["base"])):
        cpu = flat(code, ecx=0xDEADBEEF, ebx=0x1234, esi=0x8000)
        cpu.mem.write32(0x8000, 0x55)
        cpu.eflags = 2 | ZF
        cpu.step()
        assert cpu.regs.ecx == 0xDEADBEEF and cpu.eip == 0x1000 + len(code)


def test_a_16bit_move_keeps_the_upper_half_and_no_flag_changes():
    cpu = flat(cmov("e", SOURCES["register"], data16=True), ecx=0xDEADBEEF, ebx=0x11112222)
    cpu.eflags = 2 | ZF | CF | SF | OF | PF
    cpu.step()
    assert cpu.regs.ecx == 0xDEAD2222
    assert cpu.eflags & 0x8D5 == ZF | CF | SF | OF | PF


def test_cpuid_reports_cmov():
    """CPUID.01H:EDX.CMOV[bit 15] (SDM Vol.2 CPUID, Table 3-11): software checks it
    before using CMOVcc."""
    assert CPUID_LEAVES[1][3] & (1 << 15)
    cpu = flat(bytes([0x0F, 0xA2]), eax=1)
    cpu.step()
    assert cpu.regs.edx & (1 << 15)


def test_cycle_cost():
    """No Intel486 figure exists (the 486 has no CMOV): 2 clocks, the P6 figure
    (vmi/cpu/isa.py docstring, ``CYCLES``), for a register or memory source."""
    for modrm in SOURCES.values():
        assert instruction_cycles(decode(cmov("le", modrm))) == 2
    cpu = flat(cmov("le", SOURCES["register"]))
    before = cpu.cycles
    cpu.step()
    assert cpu.cycles - before == 2


def _program() -> bytes:
    """Every condition, register and memory source, 32 and 16 bits, then hlt."""
    body = b"".join(cmov(cc, modrm, data16=data16) for cc in CONDITIONS
                    for modrm in SOURCES.values() for data16 in (False, True))
    return body + b"\xf4"


def _run_program():
    cpu = flat(_program(), ebx=0x01020304, esi=0x8000, edi=0x10, ecx=0)
    cpu.mem.write32(0x8000, 0xA0B0C0D0)
    cpu.mem.write32(0x8028, 0x0E0F1011)
    cpu.eflags = 2 | CF | SF
    cpu.run(1000)
    assert cpu.halted
    return cpu


def test_the_translation_cache_stores_and_rebuilds_cmov(fresh_cache, monkeypatch):  # noqa: F811
    """Every cmov closure is kept as a recipe (its condition function, when it has
    one, is a module-level reference) and a new process runs them without compiling."""
    first = _run_program()
    assert codecache.CACHE.save()
    distinct = len(CONDITIONS) * len(SOURCES) * 2 + 1
    cache = _new_process(fresh_cache, monkeypatch)
    _no_translation(monkeypatch)
    second = _run_program()
    assert second.state() == first.state()
    assert cache.hits == distinct
