"""Where Intel says "undefined": the values vmi gives, pinned (docs/system-model.md,
"Where Intel says undefined"). The source of each rule is the 80C286 of the
SingleStepTests suite (``shared/data/sst-80286-real``), whose captured FLAGS show
the hardware's values for every flag the SDM leaves undefined; the last test runs
those captures themselves (skipped without the data). Unicorn gives other values
here, so the differential tests mask these flags (tests/cpu/test_exec_alu.py,
``HARDWARE_UNDEFINED``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmi.cpu import CPU, Memory

CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
ARITH = CF | PF | AF | ZF | SF | OF


def run(code: str, *, eflags: int = 0x2, stack_bits: int = 32, **regs: int) -> CPU:
    cpu = CPU.flat(Memory(1 << 20))
    cpu.mem.load(0x1000, bytes.fromhex(code))
    if stack_bits == 16:
        cpu.stack_bits = 16
        cpu.mode_changed()
    for name, value in regs.items():
        setattr(cpu.regs, name, value)
    cpu.eflags = eflags
    cpu.eip = 0x1000
    cpu.step()
    return cpu


def arith(cpu: CPU) -> int:
    return cpu.eflags & ARITH


# -- decimal adjustments (SST files 37, 3F, 27, 2F, D5) ------------------------------------------
def test_aaa_undefined_flags_are_those_of_al_plus_6():
    """AAA: SF, ZF, PF, OF are the flags of the 8-bit AL + 6 when it adjusts (AL + 0
    otherwise); CF = AF = the adjustment (SDM Vol.2 AAA, defined)."""
    cpu = run("37", eax=0x017A)  # 0x7A + 6 = 0x80: sign, overflow, odd parity
    assert cpu.regs.ax == 0x0200 and arith(cpu) == CF | AF | SF | OF
    cpu = run("37", eax=0x0185, eflags=0x2 | ZF | OF)  # no adjustment: flags of 0x85 + 0
    assert cpu.regs.ax == 0x0105 and arith(cpu) == SF


def test_aas_undefined_flags_are_those_of_al_minus_6():
    """AAS: SF, ZF, PF, OF of the 8-bit AL - 6 (AL - 0 when it does not adjust)."""
    cpu = run("3f", eax=0x0280, eflags=0x2 | AF)  # 0x80 - 6 = 0x7A: overflow, odd parity
    assert arith(cpu) == CF | AF | OF
    cpu = run("3f", eax=0x0200)  # AL - 0 = 0: ZF, PF
    assert arith(cpu) == ZF | PF


def test_daa_das_overflow_of_the_whole_correction():
    """DAA/DAS: OF is the overflow of the 8-bit AL +/- the correction applied."""
    cpu = run("27", eax=0x7A)  # 0x7A + 0x06 = 0x80
    assert cpu.regs.al == 0x80 and arith(cpu) & OF
    cpu = run("27", eax=0x12)  # no correction
    assert not arith(cpu) & OF
    cpu = run("2f", eax=0x80, eflags=0x2 | AF)  # 0x80 - 0x06 = 0x7A
    assert cpu.regs.al == 0x7A and arith(cpu) & OF


def test_aad_carry_and_auxiliary_of_the_final_addition():
    """AAD: CF and AF of the 8-bit AL + AH * imm8; OF = 0 (no rule found)."""
    cpu = run("d50a", eax=0x09F8)  # 0xF8 + 0x5A = 0x152: carry; 8 + A = 0x12: AF
    assert cpu.regs.ax == 0x52 and arith(cpu) == CF | AF
    cpu = run("d50a", eax=0x0603)  # 3 + 60 = 63: no carry
    assert cpu.regs.ax == 63 and arith(cpu) == PF


def test_aam_clears_carry_overflow_auxiliary():
    """AAM: CF = OF = AF = 0, SF, ZF, PF of the new AL."""
    cpu = run("d40a", eax=0x3F, eflags=0x2 | CF | OF | AF)
    assert cpu.regs.ax == 0x0603 and arith(cpu) == PF


# -- multiplies (SST files F6.4, F6.5, F7.4, F7.5, 69, 6B) -----------------------------------------
def test_mul_sf_zf_pf_of_the_upper_half_and_af_set():
    """MUL: SF, ZF, PF of AH/DX/EDX, AF = 1; CF = OF = upper half non-zero."""
    cpu = run("f6e1", eax=0x80, ecx=0x02)  # AX = 0x0100: AH = 1 (odd), AL = 0
    assert cpu.regs.ax == 0x100 and arith(cpu) == AF | CF | OF
    cpu = run("f6e1", eax=0x7, ecx=0x10)  # AH = 0: ZF, PF
    assert arith(cpu) == AF | ZF | PF
    cpu = run("f7e1", eax=0xFFFFFFFF, ecx=0xFFFFFFFF)  # EDX = 0xFFFFFFFE
    assert arith(cpu) == AF | SF | CF | OF


def test_imul_flags_from_the_bits_above_the_destination():
    """IMUL (one, two and three operands): SF, ZF, PF of the product's bits above
    the destination width, AF = 1."""
    cpu = run("f6e9", eax=0xFF, ecx=0x01)  # -1 * 1: AH = 0xFF, no overflow
    assert arith(cpu) == AF | SF | PF
    cpu = run("6bc1fd", ecx=5)  # imul eax, ecx, -3 = -15: upper dword 0xFFFFFFFF
    assert cpu.regs.eax == (-15) & 0xFFFFFFFF and arith(cpu) == AF | SF | PF
    cpu = run("0fafc1", eax=3, ecx=4)  # imul eax, ecx = 12: upper dword 0
    assert cpu.regs.eax == 12 and arith(cpu) == AF | ZF | PF


# -- shifts (SST files C0, C1, D0-D3) -----------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 5, 9, 31])
def test_left_shift_af_is_bit_4_of_the_result(count):
    """SHL/SAL: AF = bit 4 of the result, for every count."""
    cpu = run("d3e0", eax=0x12345678, ecx=count)  # shl %cl,%eax
    result = (0x12345678 << count) & 0xFFFFFFFF
    assert cpu.regs.eax == result and bool(arith(cpu) & AF) == bool(result & 0x10)


@pytest.mark.parametrize("code", ["d3e8", "d3f8", "66d3e8", "d2e8"])  # shr/sar, word, byte
@pytest.mark.parametrize("count", [1, 3, 8, 17, 31])
def test_right_shift_sets_af(code, count):
    """SHR/SAR: AF = 1 for every count that is not 0 (masked)."""
    cpu = run(code, eax=0x80000012, ecx=count)
    assert arith(cpu) & AF


def test_byte_and_word_shifts_past_the_width():
    """Counts are masked to 5 bits (SDM Vol.2 SAL/SAR/SHL/SHR, IA-32 Architecture
    Compatibility); a byte shifted by 8..31 is emptied: CF the last bit out, OF from
    the last one-bit step, AF as above."""
    cpu = run("d2e0", eax=0x81, ecx=9)  # shl al by 9: all out, the last out was 0
    assert cpu.regs.al == 0 and arith(cpu) == ZF | PF
    cpu = run("d2e0", eax=0x81, ecx=8)  # by 8: the last bit out is bit 0 = 1
    assert cpu.regs.al == 0 and arith(cpu) == CF | ZF | PF | OF
    cpu = run("d2e0", eax=0x81, ecx=0x28)  # 0x28 masks to 8
    assert cpu.regs.al == 0 and arith(cpu) == CF | ZF | PF | OF
    cpu = run("66d3f8", eax=0x8000, ecx=20)  # sar ax by 20: all sign bits
    assert cpu.regs.ax == 0xFFFF and arith(cpu) == CF | SF | PF | AF


# -- bit tests, addressing, stack -----------------------------------------------------------------
def test_bt_keeps_the_undefined_flags():
    """BT/BTS/BTR/BTC: OF, SF, AF, PF are undefined (SDM Vol.2 BT); no capture covers
    them (the 286 has no BT), so vmi keeps their values, as Unicorn does; ZF too."""
    cpu = run("0fa3c8", eax=1, ecx=0, eflags=0x2 | OF | SF | AF | PF | ZF)  # bt %ecx,%eax
    assert arith(cpu) == OF | SF | AF | PF | ZF | CF


def test_sib_without_index_ignores_the_scale():
    """SDM Vol.2 §2.1.5 Table 2-3: index field 100b means no index; the scale bits
    then select nothing (mov (%eax,%eiz,8),%ecx reads [EAX])."""
    cpu = CPU.flat(Memory(1 << 20))
    cpu.mem.write32(0x2000, 0xCAFEBABE)
    cpu.mem.load(0x1000, bytes.fromhex("8b0ce0"))  # modrm 0C: ECX, SIB; E0: scale 8, EAX
    cpu.regs.eax, cpu.regs.esp = 0x2000, 0x7777  # ESP (index 100b) must not be used
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.regs.ecx == 0xCAFEBABE


def test_pop_esp_on_a_16_bit_stack_loads_all_of_esp():
    """SDM Vol.2 POP: POP ESP increments the stack pointer, then writes the popped
    value to ESP; with a 32-bit operand on a 16-bit stack the whole dword lands in
    ESP, upper half included (the SP increment is overwritten)."""
    cpu = CPU.flat(Memory(1 << 20))
    cpu.stack_bits = 16
    cpu.mode_changed()
    cpu.mem.write32(0xFFF0, 0x12345678)
    cpu.mem.load(0x1000, b"\x5c")  # pop %esp
    cpu.regs.esp = 0xABCDFFF0
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.regs.esp == 0x12345678


def test_popad_discards_the_saved_esp():
    """SDM Vol.2 POPA/POPAD: the ESP slot is skipped (its value discarded), ESP is
    just raised by 32."""
    cpu = CPU.flat(Memory(1 << 20))
    for i, value in enumerate((7, 6, 5, 0xDEAD, 3, 2, 1, 0)):
        cpu.mem.write32(0x8000 + 4 * i, value)
    cpu.mem.load(0x1000, b"\x61")
    cpu.regs.esp = 0x8000
    cpu.eip = 0x1000
    cpu.step()
    assert cpu.r == [0, 1, 2, 3, 0x8020, 5, 6, 7]


# -- the captures themselves --------------------------------------------------------------------
#: Files whose undefined flags vmi reproduces in every test; D5 (AAD) except OF.
CAPTURED = ["27", "2F", "37", "3F", "D4", "D5", "F6.4", "F6.5", "F7.4", "F7.5", "69", "6B",
            "D0.4", "D0.5", "D0.7", "D1.4", "D1.5", "D1.7", "D2.4", "D2.5", "D2.7",
            "D3.4", "D3.5", "D3.7", "C0.4", "C0.5", "C0.7", "C1.4", "C1.5", "C1.7"]


def _sst_folder() -> Path | None:
    from tests.sst import test_sst

    folder = Path(os.environ["VMI_SST_DATA"]) if os.environ.get("VMI_SST_DATA") else None
    for candidate in (folder, test_sst.data_dir(), Path("/work/shared/data/sst-80286-real")):
        if candidate is not None and (candidate / "metadata.json").exists():
            return candidate
    return None


@pytest.mark.parametrize("key", CAPTURED)
def test_undefined_flags_match_the_80c286_captures(key):
    """Every test of the file without an exception: the flags the metadata calls
    undefined (the complement of ``flags-mask``) equal the hardware's."""
    from tests.sst import test_sst
    from tests.sst.moo import read_moo

    folder = _sst_folder()
    if folder is None:
        pytest.skip("the SST 80286 data is not available")
    metadata = test_sst.load_metadata(folder)
    undefined = ~test_sst.flags_mask(metadata, key) & 0x8D5
    if key == "D5":
        undefined &= ~OF
    assert undefined
    runner = test_sst.Runner(metadata)
    compared = 0
    for test in read_moo(folder / f"{key}.MOO.gz").tests:
        if test.exception is not None:
            continue
        outcome = runner.run_test(test, undefined, False)
        if any(d.field != "flags" for d in outcome.diffs or []):
            continue  # a documented 386 difference (LOCK, ...): not about flags
        compared += 1
        assert outcome.status == "pass", (test.name, [d.text for d in outcome.diffs])
    assert compared >= 50
