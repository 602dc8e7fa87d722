"""Data movement and stack instructions: Unicorn differential tests and unit tests.

The differential tests run each instruction of the families in
``vmi/cpu/ops/move.py`` and ``vmi/cpu/ops/stack.py``, and cmovcc (whose
semantics live beside setcc in ``vmi/cpu/ops/bits.py``; every condition under
every flag combination is in ``tests/cpu/test_cmov.py``), through the shared oracle
(``compare``: one step, vmi at CPL 3, arithmetic flags and DF compared). Allowed
differences, each with its reason:

* ``enter`` with a 16-bit operand size on a 32-bit stack: the SDM writes the
  frame pointer to BP, QEMU (so Unicorn) to all of EBP. Those examples run
  through ``run_pair`` with only BP compared.
* mov to or from segment, control, debug and test registers and push/pop of
  segment registers belong to the system model and are not drawn here.
"""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings

from tests.conftest import example_scale
from tests.cpu.test_exec_string import (
    STATE_SEEDS,
    flat,
    forms_named,
    random_state,
    run_pair,
)
from tests.cpu.unicorn_oracle import compare
from tests.strategies import DATA_SIZE, PREFIX_BYTES, encoding
from vmi.cpu import CPUException, InvalidOpcode, decode
from vmi.cpu import flags as fl

_SPECIAL_OPERANDS = {"Sw", "Cd", "Dd", "Td", "ES", "CS", "SS", "DS", "FS", "GS"}


def _general(forms):
    return [f for f in forms if not _SPECIAL_OPERANDS & set(f.operands)]


MOVE_FORMS = _general(forms_named(
    "mov", "lea", "movzx", "movsx", "xchg", "cmpxchg", "xadd", "bswap", "cbw", "cwd", "xlat",
    "lahf", "sahf", *(f"cmov{cc}" for cc in fl.CONDITION_CODES)))
STACK_FORMS = _general(forms_named(
    "push", "pop", "pusha", "popa", "pushf", "popf", "enter", "leave"))


@functools.lru_cache(maxsize=64)
def window(seed: int) -> bytes:
    """The oracle's data window, random but reproducible from a small seed."""
    return random.Random(seed).randbytes(DATA_SIZE)


def check_against_unicorn(code: bytes, regs, eflags, seed) -> None:
    report = compare(code, regs, eflags, window(seed))
    assert report is None, f"{report} (window seed {seed})"


#: Prefixes drawn: everything but lock. Lock on a form that does not allow it is
#: #UD on a 386 (the decoder raises it) but Unicorn 2.1.4 executes it; lock is
#: drawn only for the lockable memory forms (LOCKABLE_FORMS below).
NO_LOCK = tuple(p for p in PREFIX_BYTES if p != 0xF0)
LOCKABLE_FORMS = [f for f in MOVE_FORMS if "lock" in f.attrs]


@settings(max_examples=3000 * example_scale())
@given(encoding(forms=MOVE_FORMS, prefixes=NO_LOCK), STATE_SEEDS)
def test_move_instructions_match_unicorn(code, seed):
    check_against_unicorn(code, *random_state(seed))


@settings(max_examples=300 * example_scale())
@given(encoding(forms=LOCKABLE_FORMS, prefixes=(0xF0, 0xF0, 0x66, 0x67)), STATE_SEEDS)
def test_locked_exchanges_match_unicorn(code, seed):
    """xchg, cmpxchg and xadd with lock and a memory operand. With a register
    operand lock is #UD on a 386 (the decoder refuses it) but Unicorn executes it,
    so those examples are skipped."""
    try:
        decode(code, 0x1000)
    except InvalidOpcode:
        return
    check_against_unicorn(code, *random_state(seed))


def _enter16(code: bytes) -> bool:
    insn = decode(code, 0x1000)
    return insn.mnemonic == "enter" and insn.opsize == 16


@settings(max_examples=2500 * example_scale())
@given(encoding(forms=STACK_FORMS, prefixes=NO_LOCK), STATE_SEEDS)
def test_stack_instructions_match_unicorn(code, seed):
    if _enter16(code):
        report = run_pair(code, *random_state(seed), low16=("ebp",))
        assert report is None, report
        return
    check_against_unicorn(code, *random_state(seed))


@settings(max_examples=400 * example_scale())
@given(encoding(forms=forms_named("pushf", "popf", "enter", "leave", "pusha", "popa"),
                prefixes=NO_LOCK), STATE_SEEDS)
def test_stack_instructions_match_unicorn_at_cpl0(code, seed):
    """The same at CPL 0 through ``run_pair``, where IF and IOPL are compared too."""
    report = run_pair(code, *random_state(seed), low16=("ebp",) if _enter16(code) else ())
    assert report is None, report


# -- unit tests: stack ---------------------------------------------------------------
def test_push_esp_pushes_the_old_value():
    cpu = flat(bytes([0x54]), esp=0x8000)
    cpu.step()
    assert cpu.regs.esp == 0x7FFC and cpu.mem.read32(0x7FFC) == 0x8000


def test_push_word_esp_with_operand_size_prefix():
    cpu = flat(bytes([0x66, 0x54]), esp=0x8000)
    cpu.step()
    assert cpu.regs.esp == 0x7FFE and cpu.mem.read16(0x7FFE) == 0x8000


def test_pop_esp_loads_the_popped_value():
    cpu = flat(bytes([0x5C]), esp=0x8000)
    cpu.mem.write32(0x8000, 0x1234)
    cpu.step()
    assert cpu.regs.esp == 0x1234


def test_pop_to_memory_addressed_by_esp_uses_the_incremented_esp():
    # pop 4(%esp): 8f 44 24 04
    cpu = flat(bytes([0x8F, 0x44, 0x24, 0x04]), esp=0x8000)
    cpu.mem.write32(0x8000, 0xCAFEBABE)
    cpu.step()
    assert cpu.regs.esp == 0x8004
    assert cpu.mem.read32(0x8008) == 0xCAFEBABE  # new ESP (0x8004) + 4
    assert cpu.mem.read32(0x8004) == 0


def test_pop_to_memory_restores_esp_when_the_store_faults():
    cpu = flat(bytes([0x8F, 0x05, 0x00, 0x90, 0x00, 0x00]), esp=0x8000)

    def refuse(seg, off, value):
        raise CPUException(14, 2)

    cpu.wr32 = refuse
    with pytest.raises(CPUException):
        cpu.step()
    assert cpu.regs.esp == 0x8000 and cpu.eip == 0x1000


def test_push_memory_addressed_by_esp_reads_before_the_decrement():
    # push (%esp): ff 34 24
    cpu = flat(bytes([0xFF, 0x34, 0x24]), esp=0x8000)
    cpu.mem.write32(0x8000, 0x55AA55AA)
    cpu.step()
    assert cpu.mem.read32(0x7FFC) == 0x55AA55AA


def test_pushad_popad_round_trip_and_popad_skips_esp():
    cpu = flat(bytes([0x60, 0x61]), esp=0x8000, eax=1, ecx=2, edx=3, ebx=4, ebp=6, esi=7,
               edi=8)
    cpu.step()
    assert cpu.regs.esp == 0x8000 - 32
    saved = [cpu.mem.read32(0x8000 - 4 * (i + 1)) for i in range(8)]
    assert saved == [1, 2, 3, 4, 0x8000, 6, 7, 8]
    cpu.mem.write32(0x8000 - 20, 0xDEAD)  # the saved ESP slot
    for reg in ("eax", "ecx", "edx", "ebx", "ebp", "esi", "edi"):
        setattr(cpu.regs, reg, 0)
    cpu.step()
    assert cpu.regs.esp == 0x8000
    assert [cpu.regs.eax, cpu.regs.ecx, cpu.regs.edx, cpu.regs.ebx, cpu.regs.ebp,
            cpu.regs.esi, cpu.regs.edi] == [1, 2, 3, 4, 6, 7, 8]


def test_pushaw_popaw_touch_low_words_only():
    cpu = flat(bytes([0x66, 0x60, 0x66, 0x61]), esp=0x8000, eax=0xAAAA0001, edi=0xBBBB0008)
    cpu.step()
    assert cpu.regs.esp == 0x8000 - 16
    assert cpu.mem.read16(0x8000 - 2) == 1 and cpu.mem.read16(0x8000 - 16) == 8
    cpu.mem.write16(0x8000 - 2, 0x1111)
    cpu.step()
    assert cpu.regs.eax == 0xAAAA1111 and cpu.regs.edi == 0xBBBB0008


def test_enter_level_0_is_push_mov_sub():
    cpu = flat(bytes([0xC8, 0x10, 0x00, 0x00]), esp=0x8000, ebp=0x9000)
    cpu.step()
    assert cpu.mem.read32(0x7FFC) == 0x9000
    assert cpu.regs.ebp == 0x7FFC and cpu.regs.esp == 0x7FFC - 0x10


def test_enter_with_nesting_copies_the_display():
    cpu = flat(bytes([0xC8, 0x08, 0x00, 0x03]), esp=0x8000, ebp=0x9000)
    cpu.mem.write32(0x9000 - 4, 0x1111)
    cpu.mem.write32(0x9000 - 8, 0x2222)
    cpu.step()
    frame = 0x7FFC
    assert cpu.mem.read32(frame) == 0x9000  # old EBP
    assert cpu.mem.read32(frame - 4) == 0x1111  # display copied from the old frame
    assert cpu.mem.read32(frame - 8) == 0x2222
    assert cpu.mem.read32(frame - 12) == frame  # the new frame pointer itself
    assert cpu.regs.ebp == frame and cpu.regs.esp == frame - 12 - 8


def test_enter_level_is_taken_modulo_32():
    cpu = flat(bytes([0xC8, 0x00, 0x00, 0x21]), esp=0x8000, ebp=0x9000)
    cpu.step()
    assert cpu.regs.esp == 0x8000 - 8 and cpu.mem.read32(0x7FF8) == 0x7FFC


def test_enter_16_bit_operand_writes_bp_only():
    cpu = flat(bytes([0x66, 0xC8, 0x04, 0x00, 0x02]), esp=0x8000, ebp=0x12349000)
    cpu.step()
    assert cpu.regs.ebp == 0x12347FFE  # BP = FrameTemp, upper half kept (SDM)
    assert cpu.mem.read16(0x7FFE) == 0x9000
    assert cpu.mem.read16(0x7FFC) == 0xFFFF  # [EBP-2] lies past the end of RAM
    assert cpu.mem.read16(0x7FFA) == 0x7FFE
    assert cpu.regs.esp == 0x7FFA - 4


def test_leave_restores_the_frame():
    cpu = flat(bytes([0xC9]), esp=0x7000, ebp=0x7FFC)
    cpu.mem.write32(0x7FFC, 0x9000)
    cpu.step()
    assert cpu.regs.esp == 0x8000 and cpu.regs.ebp == 0x9000


def _popf(cpl: int, image: int, *, eflags: int = 0x2, size: int = 4, pe: bool = True):
    code = bytes([0x9D]) if size == 4 else bytes([0x66, 0x9D])
    cpu = flat(code, cpl=cpl if cpl in (0, 3) else 0, esp=0x8000)
    cpu.cpl = cpl
    if not pe:
        cpu.cr[0] &= ~1
    cpu.eflags = eflags
    cpu.mem.write32(0x8000, image)
    cpu.step()
    return cpu.eflags


ALL_POPF = 0x3F7FD7  # every implemented bit and more


def test_popf_at_cpl0_changes_iopl_and_if_but_never_vm_or_rf():
    got = _popf(0, ALL_POPF)
    assert got & fl.IOPL == fl.IOPL and got & fl.IF
    assert not got & (fl.VM | fl.RF)
    assert got & (fl.AC | fl.ID | fl.NT)


def test_popf_in_real_mode_changes_iopl():
    assert _popf(0, fl.IOPL | 2, pe=False) & fl.IOPL == fl.IOPL


def test_popf_at_cpl3_iopl0_silently_keeps_if_and_iopl():
    got = _popf(3, 0x2 | fl.CF, eflags=0x2 | fl.IF)
    assert got & fl.IF and got & fl.CF and got & fl.IOPL == 0
    got = _popf(3, ALL_POPF, eflags=0x2)
    assert not got & fl.IF and got & fl.IOPL == 0 and got & fl.DF


def test_popf_at_cpl1_with_iopl1_changes_if_not_iopl():
    got = _popf(1, 0x2 | fl.IF | 0x3000, eflags=0x2 | 0x1000)
    assert got & fl.IF and got & fl.IOPL == 0x1000


def test_16_bit_popf_keeps_the_upper_half():
    got = _popf(0, 0x0, eflags=0x2 | fl.AC | fl.ID | fl.CF, size=2)
    assert got & (fl.AC | fl.ID) == fl.AC | fl.ID and not got & fl.CF


def test_pushf_clears_vm_and_rf_in_the_image():
    cpu = flat(bytes([0x9C]), esp=0x8000)
    cpu.flags |= fl.RF
    cpu.eflags = cpu.eflags | fl.CF | fl.AC
    cpu.flags |= fl.RF
    cpu.step()
    image = cpu.mem.read32(0x7FFC)
    assert image & fl.CF and image & fl.AC and not image & fl.RF


# -- unit tests: moves ----------------------------------------------------------------
def test_cmpxchg_match_stores_the_source():
    cpu = flat(bytes([0x0F, 0xB1, 0x0D, 0x00, 0x90, 0x00, 0x00]), eax=5, ecx=7)
    cpu.mem.write32(0x9000, 5)
    cpu.step()
    assert cpu.mem.read32(0x9000) == 7 and cpu.regs.eax == 5 and cpu.eflags & fl.ZF


def test_cmpxchg_mismatch_loads_the_accumulator_and_writes_memory_back():
    cpu = flat(bytes([0x0F, 0xB1, 0x0D, 0x00, 0x90, 0x00, 0x00]), eax=4, ecx=7)
    cpu.mem.write32(0x9000, 5)
    writes = []
    original = cpu.wr32
    cpu.wr32 = lambda seg, off, v: (writes.append((off, v)), original(seg, off, v))
    cpu.step()
    assert cpu.regs.eax == 5 and cpu.mem.read32(0x9000) == 5
    assert writes == [(0x9000, 5)]
    assert not cpu.eflags & fl.ZF and cpu.eflags & fl.CF  # 4 - 5 borrows


def test_cmpxchg_byte_register_forms():
    cpu = flat(bytes([0x0F, 0xB0, 0xE1]), eax=0x1234, ecx=0x99)  # cmpxchg %ah,%cl
    cpu.step()
    assert cpu.regs.al == 0x99 and cpu.regs.cl == 0x99  # mismatch: AL = CL
    assert cpu.regs.ah == 0x12


def test_xadd_same_register_gives_the_sum():
    cpu = flat(bytes([0x0F, 0xC1, 0xC0]), eax=3)
    cpu.step()
    assert cpu.regs.eax == 6


def test_xadd_memory():
    cpu = flat(bytes([0xF0, 0x0F, 0xC1, 0x0D, 0x00, 0x90, 0x00, 0x00]), ecx=1)
    cpu.mem.write32(0x9000, 0xFFFFFFFF)
    cpu.step()
    assert cpu.mem.read32(0x9000) == 0 and cpu.regs.ecx == 0xFFFFFFFF
    assert cpu.eflags & fl.CF and cpu.eflags & fl.ZF


def test_xchg_forms():
    cpu = flat(bytes([0x93, 0x86, 0xE0, 0x87, 0x05, 0x00, 0x90, 0x00, 0x00]),
               eax=0x1122, ebx=0x3344)
    cpu.mem.write32(0x9000, 0xABCD)
    cpu.run(1)
    assert cpu.regs.eax == 0x3344 and cpu.regs.ebx == 0x1122
    cpu.run(1)  # xchg %ah,%al
    assert cpu.regs.eax == 0x4433
    cpu.run(1)
    assert cpu.regs.eax == 0xABCD and cpu.mem.read32(0x9000) == 0x4433


def test_bswap():
    cpu = flat(bytes([0x0F, 0xC8, 0x66, 0x0F, 0xCB]), eax=0x12345678, ebx=0x12345678)
    cpu.run(2)
    assert cpu.regs.eax == 0x78563412
    assert cpu.regs.ebx == 0x12340000  # 16-bit: undefined, Unicorn's result


def test_movzx_movsx():
    # movsbl %al,%ecx; movzwl %ax,%edx; movsbw %al,%bx
    cpu = flat(bytes([0x0F, 0xBE, 0xC8, 0x0F, 0xB7, 0xD0, 0x66, 0x0F, 0xBE, 0xD8]),
               eax=0x8081, ebx=0xFFFF0000)
    cpu.run(3)
    assert cpu.regs.ecx == 0xFFFFFF81 and cpu.regs.edx == 0x8081
    assert cpu.regs.ebx == 0xFFFFFF81


def test_sign_extensions():
    cpu = flat(bytes([0x66, 0x98, 0x98, 0x99, 0x66, 0x99]), eax=0x12345680, edx=0x55555555)
    cpu.step()  # cbw
    assert cpu.regs.eax == 0x1234FF80
    cpu.step()  # cwde
    assert cpu.regs.eax == 0xFFFFFF80
    cpu.step()  # cdq
    assert cpu.regs.edx == 0xFFFFFFFF
    cpu.regs.eax = 0x7FFF
    cpu.step()  # cwd
    assert cpu.regs.edx == 0xFFFF0000


def test_xlat_with_override_and_16_bit_address():
    cpu = flat(bytes([0xD7, 0x67, 0x64, 0xD7]), ebx=0x00019000, eax=0x10)
    cpu.mem.write8(0x19010, 0x42)
    cpu.mem.write8(0x9042, 0x99)
    cpu.step()
    assert cpu.regs.eax == 0x42
    cpu.step()  # BX + AL = 0x9042 (FS base is 0 in the flat model)
    assert cpu.regs.eax == 0x99
    from vmi.cpu.ops.move import segment_of

    assert segment_of(decode(bytes([0x67, 0x64, 0xD7]), 0)) == 4


def test_lahf_sahf():
    cpu = flat(bytes([0x9F, 0x9E]), eax=0)
    cpu.eflags = 0x2 | fl.CF | fl.ZF | fl.OF
    cpu.step()
    assert cpu.regs.ah == 0x43
    cpu.regs.ah = 0xD5 ^ 0x40
    cpu.step()
    assert cpu.eflags & 0xFFF == 0x2 | fl.OF | fl.SF | fl.AF | fl.PF | fl.CF


def test_lea_sizes():
    # lea 0x10(%eax,%ebx,2),%cx ; lea 0x10(%bx,%si),%ecx (67)
    cpu = flat(bytes([0x66, 0x8D, 0x4C, 0x58, 0x10, 0x67, 0x8D, 0x48, 0x10]),
               eax=0x1FFFF, ebx=1, esi=0xFFFF, ecx=0xAAAAAAAA)
    cpu.step()
    assert cpu.regs.ecx == 0xAAAA0011
    cpu.step()
    assert cpu.regs.ecx == 0x00000010  # (1 + 0xFFFF + 0x10) & 0xFFFF, zero-extended


def test_mov_moffs_with_override():
    cpu = flat(bytes([0x64, 0xA1, 0x00, 0x90, 0x00, 0x00, 0xA2, 0x04, 0x90, 0x00, 0x00]))
    cpu.mem.write32(0x9000, 0x01020304)
    cpu.run(2)
    assert cpu.regs.eax == 0x01020304 and cpu.mem.read8(0x9004) == 0x04


# -- 16-bit stack (SS.B = 0): SP moves, ESP's upper half stays ------------------------------
def stack16(code: bytes, **regs):
    cpu = flat(code, **regs)
    cpu.stack_bits = 16
    cpu.mode_changed()
    return cpu


def test_push_pop_wrap_within_64k_on_a_16_bit_stack():
    cpu = stack16(bytes([0x50, 0x5B]), esp=0xABCD0000, eax=0x11223344)
    cpu.step()
    assert cpu.regs.esp == 0xABCDFFFC and cpu.mem.read32(0xFFFC) == 0x11223344
    cpu.step()
    assert cpu.regs.esp == 0xABCD0000 and cpu.regs.ebx == 0x11223344


def test_call_ret_pusha_enter_leave_on_a_16_bit_stack():
    cpu = stack16(bytes([0xE8, 0x00, 0x00, 0x00, 0x00]), esp=0x55550002)
    cpu.step()
    assert cpu.regs.esp == 0x5555FFFE and cpu.mem.read32(0xFFFE) & 0xFFFF == 0x1005
    cpu = stack16(bytes([0x60, 0x61]), esp=0x55550010, ebx=0xB)
    cpu.step()
    assert cpu.regs.esp == 0x5555FFF0 and cpu.mem.read32(0x0) == 0xB  # EBX at SP-16
    cpu.regs.ebx = 0
    cpu.step()
    assert cpu.regs.esp == 0x55550010 and cpu.regs.ebx == 0xB
    # enter $8,$1 with SP = 2, BP = 0x1234: FrameTemp = ESP after the push = 0x7777FFFE
    # (the whole ESP with a 32-bit operand size: see ops/stack.py enter)
    cpu = stack16(bytes([0xC8, 0x08, 0x00, 0x01, 0xC9]), esp=0x77770002, ebp=0x1234)
    cpu.step()
    assert cpu.regs.ebp == 0x7777FFFE
    assert cpu.regs.esp == 0x7777FFF2 and cpu.mem.read32(0xFFFA) == 0x7777FFFE
    cpu.step()  # leave: SP = BP, pop EBP
    assert cpu.regs.esp == 0x77770002 and cpu.regs.ebp == 0x1234
