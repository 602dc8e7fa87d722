"""The decoder's error contract under arbitrary bytes, and tricky encodings by hand.

Contract (``vmi.cpu.decode`` docstring, ``docs/decoder.md``): any byte string
decodes to an ``Instruction`` or raises ``InvalidOpcode`` or
``TruncatedInstruction``, both carrying the address; nothing else comes out.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from tests.strategies import PREFIX_BYTES
from vmi.cpu import (
    Constant,
    FarPointer,
    Immediate,
    Instruction,
    InvalidOpcode,
    MemoryOperand,
    Register,
    Relative,
    TruncatedInstruction,
    decode,
)
from vmi.cpu.operands import CS, DS, ES, FS, GS, SS

# Byte strings biased towards instruction-like starts: prefixes, the 0F escape
# and the x87 escapes, then anything.
_START = st.sampled_from([*PREFIX_BYTES, 0x0F, 0x0F, *range(0xD8, 0xE0)])
_BYTES = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda head, rest: bytes(head) + rest,
              st.lists(_START, max_size=6), st.binary(max_size=16)),
)


def _check_contract(data: bytes, bits: int, address: int) -> None:
    try:
        insn = decode(data, address, bits=bits)
    except (InvalidOpcode, TruncatedInstruction) as error:
        assert error.address == address
        return
    assert isinstance(insn, Instruction)
    assert 1 <= insn.length <= min(15, len(data))
    assert insn.raw == bytes(data[: insn.length])
    assert insn.next_address == (address + insn.length) & 0xFFFFFFFF
    assert insn.opsize in (16, 32) and insn.addrsize in (16, 32)
    assert insn.mnemonic and insn.mnemonic == insn.mnemonic.lower()
    form = insn.form
    assert isinstance(form.cycles, int) and isinstance(form.cycles_mem, int)
    assert form.name(insn.opsize) and isinstance(form.attrs, frozenset)
    for op in insn.operands:
        assert isinstance(op, Register | MemoryOperand | Immediate | Relative | FarPointer
                          | Constant)
    # A decoded instruction does not depend on the bytes after it.
    assert _same(decode(data[: insn.length], address, bits=bits), insn)


def _same(a: Instruction, b: Instruction) -> bool:
    # Instruction compares by identity (eq=False); compare the decoded fields.
    return (a.length, a.mnemonic, a.operands, a.prefixes, a.opsize, a.addrsize) == (
        b.length, b.mnemonic, b.operands, b.prefixes, b.opsize, b.addrsize)


@pytest.mark.parametrize("bits", [32, 16])
@settings(max_examples=3000 * example_scale())
@given(data=_BYTES, address=st.integers(0, 0xFFFFFFFF))
def test_any_bytes_decode_or_raise_a_decode_error(bits, data, address):
    _check_contract(data, bits, address)


def test_bits_must_be_16_or_32():
    with pytest.raises(ValueError):
        decode(b"\x90", bits=64)


# -- errors ---------------------------------------------------------------------------

def test_empty_and_cut_short_are_truncated():
    with pytest.raises(TruncatedInstruction):
        decode(b"")
    with pytest.raises(TruncatedInstruction):
        decode(b"\x66\x67")  # prefixes only
    with pytest.raises(TruncatedInstruction) as info:
        decode(b"\xb8\x01\x02", 0x1234)  # mov eax, imm32 needs four bytes
    assert info.value.address == 0x1234


def test_more_than_15_bytes_is_invalid_even_if_the_data_ends():
    with pytest.raises(InvalidOpcode):
        decode(b"\x26" * 14 + b"\xb8\x00\x00\x00\x00")  # 19 bytes
    assert decode(b"\x26" * 14 + b"\x90").length == 15
    with pytest.raises(InvalidOpcode):
        decode(b"\x26" * 15)  # cannot be completed within 15 bytes


@pytest.mark.parametrize("code", [
    "f0 90",          # lock nop
    "f0 01 c0",       # lock add eax,eax: register destination
    "f0 0f a3 00",    # lock bt [eax],eax: bt does not write
    "f0 8b 00",       # lock mov eax,[eax]
    "8d c0",          # lea with a register source
    "c4 c0",          # les with a register source (VEX to modern CPUs)
    "8e c8",          # mov cs,eax
    "8c f0",          # mov eax,<segment register 6>
    "0f 20 c8",       # mov eax,cr1
    "0f 22 f8",       # mov cr7,eax
    "0f 24 c0",       # mov eax,tr0
    "fe 10",          # FE /2
    "ff f8",          # FF /7
    "0f 0d 00",       # prefetch (not on a 486)
    "db 08",          # fisttp (SSE3)
    "da c0",          # fcmovb (P6)
    "0f ff 00",       # ud0
])
def test_undefined_encodings_raise_invalid_opcode(code):
    with pytest.raises(InvalidOpcode):
        decode(bytes.fromhex(code), 0x400)


def test_lock_is_kept_where_it_is_allowed():
    insn = decode(bytes.fromhex("f0 0f c1 08"))  # lock xadd [eax],ecx
    assert insn.lock and insn.mnemonic == "xadd"
    assert decode(bytes.fromhex("f0 0f c7 0b")).mnemonic == "cmpxchg8b"


# -- addressing -----------------------------------------------------------------------

def test_sib_without_base_takes_a_disp32_and_ds():
    # mov eax,[ecx*4+0x12345678]: SIB base=101 with mod=00 means "no base, disp32".
    insn = decode(bytes.fromhex("8b 04 8d 78 56 34 12"))
    (_, mem) = insn.operands
    assert insn.length == 7
    assert (mem.base, mem.index, mem.scale, mem.disp, mem.segment) == (None, 1, 4, 0x12345678, DS)
    # With mod=01 the same SIB byte names EBP, and SS becomes the default.
    (_, mem) = decode(bytes.fromhex("8b 44 8d 10")).operands
    assert (mem.base, mem.index, mem.disp, mem.segment) == (5, 1, 0x10, SS)
    # Index 100 means "no index"; ESP as base defaults to SS.
    (_, mem) = decode(bytes.fromhex("8b 04 24")).operands
    assert (mem.base, mem.index, mem.segment) == (4, None, SS)


def test_16_bit_bp_plus_displacement_defaults_to_ss():
    (_, mem) = decode(bytes.fromhex("8b 46 fe"), bits=16).operands  # mov ax,[bp-2]
    assert (mem.base, mem.index, mem.disp, mem.segment, mem.addrsize) == (5, None, 0xFFFE, SS, 16)
    (_, mem) = decode(bytes.fromhex("8b 02"), bits=16).operands  # mov ax,[bp+si]
    assert (mem.base, mem.index, mem.segment) == (5, 6, SS)
    # mod=00 rm=110 is a bare disp16 in DS, not [bp].
    (_, mem) = decode(bytes.fromhex("8b 06 34 12"), bits=16).operands
    assert (mem.base, mem.index, mem.disp, mem.segment) == (None, None, 0x1234, DS)
    # 67 in 32-bit code selects the same 16-bit forms.
    (_, mem) = decode(bytes.fromhex("67 8b 46 02")).operands
    assert (mem.base, mem.segment, mem.addrsize) == (5, SS, 16)


def test_the_last_segment_override_wins():
    (_, mem) = decode(bytes.fromhex("26 64 8b 00")).operands  # es fs mov eax,[eax]
    assert (mem.segment, mem.segment_override) == (FS, True)
    (_, mem) = decode(bytes.fromhex("64 26 8b 45 00")).operands  # overrides [ebp]'s SS
    assert mem.segment == ES
    # The string destination ES:eDI cannot be overridden; the source can.
    dst, src = decode(bytes.fromhex("65 a5")).operands  # gs movsd
    assert (dst.segment, dst.segment_override, src.segment) == (ES, False, GS)


def test_moffs_width_follows_the_address_size():
    insn = decode(bytes.fromhex("67 a1 34 12"))  # mov eax,[0x1234] with a 16-bit offset
    (_, mem) = insn.operands
    assert insn.length == 4 and (mem.disp, mem.addrsize, mem.size) == (0x1234, 16, 4)
    insn = decode(bytes.fromhex("67 a0 78 56 34 12"), bits=16)  # 32-bit offset in 16-bit code
    assert insn.length == 6 and insn.operands[1].disp == 0x12345678
    insn = decode(bytes.fromhex("2e a2 00 10 00 00"))  # mov cs:[0x1000],al
    assert insn.operands[0].segment == CS


def test_66_prefixed_branches_wrap_the_target_to_16_bits():
    # jmp rel16 at 0x12345678 in 32-bit code: EIP = (IP + 4 + 0x10) & 0xFFFF.
    insn = decode(bytes.fromhex("66 e9 10 00"), 0x12345678)
    assert insn.operands == (Relative((0x5678 + 4 + 0x10) & 0xFFFF, 2),)
    insn = decode(bytes.fromhex("66 eb fd"), 0x12340000)  # short jump to itself
    assert insn.operands[0].target == 0x0000
    insn = decode(bytes.fromhex("66 0f 84 00 80"), 0x10000)  # je rel16 backwards
    assert insn.operands[0].target == (0x10000 + 5 - 0x8000) & 0xFFFF
    # Without 66 the full 32 bits are kept; in 16-bit code 66 widens the target.
    assert decode(bytes.fromhex("e9 00 00 00 80"), 0x100).operands[0].target == 0x80000105
    assert decode(bytes.fromhex("66 e8 00 00 01 00"), 0xFFF0, bits=16).operands[0].target \
        == 0x1FFF6


# -- forms worth pinning ----------------------------------------------------------------

def test_pause_is_f3_90_and_nop_otherwise():
    assert decode(b"\xf3\x90").mnemonic == "pause"
    assert decode(b"\x66\xf3\x90").mnemonic == "pause"
    assert decode(b"\xf3\xf2\x90").mnemonic == "nop"  # the last of F2/F3 decides
    assert decode(b"\x90").mnemonic == "nop"


def test_reference_sequence_of_the_oracle_notes():
    """The byte string of reference/oracles-and-speed.md §3.1, decoded in a row."""
    code = bytes.fromhex("fafbcf0f350f20c0f390f0fe0f")
    names, at = [], 0
    while at < len(code):
        insn = decode(code[at:], at)
        names.append(insn.mnemonic)
        at += insn.length
    assert names == ["cli", "sti", "iretd", "sysexit", "mov", "pause", "dec"]
    assert decode(code[-3:]).lock


def test_operand_and_address_size_names():
    assert decode(b"\xe3\x00").mnemonic == "jecxz"
    assert decode(b"\x67\xe3\x00").mnemonic == "jcxz"  # by address size, not operand size
    assert decode(b"\x66\xe3\x00").mnemonic == "jecxz"
    assert decode(b"\x98", bits=16).mnemonic == "cbw"
    assert decode(b"\x66\x98", bits=16).mnemonic == "cwde"
    assert decode(b"\xcf").mnemonic == "iretd" and decode(b"\x66\xcf").mnemonic == "iret"


def test_segment_register_moves_use_the_operand_size_for_registers():
    assert decode(bytes.fromhex("8c d8")).operands == (Register("gpr", 0, 4), Register("seg", 3, 2))
    assert decode(bytes.fromhex("66 8c d8")).operands[0] == Register("gpr", 0, 2)
    assert decode(bytes.fromhex("8c 18")).operands[0].size == 2  # memory is always a word
    assert decode(bytes.fromhex("8e d0")).operands == (Register("seg", 2, 2), Register("gpr", 0, 4))


def test_x87_forms():
    insn = decode(bytes.fromhex("d9 7d fe"))  # fnstcw [ebp-2]
    assert insn.mnemonic == "fnstcw" and insn.operands[0].size == 2 and insn.length == 3
    assert decode(bytes.fromhex("dd 38")).mnemonic == "fnstsw"
    assert decode(bytes.fromhex("df e0")).operands == (Register("gpr", 0, 2),)
    faddp = decode(bytes.fromhex("de c1"))  # faddp st(1),st
    assert faddp.operands == (Register("st", 1, 10), Register("st", -1, 10))
    assert decode(bytes.fromhex("d9 c9")).mnemonic == "fxch"
    assert decode(bytes.fromhex("db 28")).operands[0].size == 10  # fld m80
    assert decode(bytes.fromhex("d9 20")).operands[0].size == 28  # fldenv
    assert decode(bytes.fromhex("66 dd 30")).operands[0].size == 94  # fnsave, 16-bit image
    assert "x87" in decode(bytes.fromhex("d9 e8")).form.attrs


def test_immediates_and_far_pointers():
    assert decode(b"\x6a\xff").operands == (Immediate(0xFFFFFFFF, 4),)
    assert decode(b"\x66\x6a\x80").operands == (Immediate(0xFF80, 2),)
    assert decode(b"\xd1\xe0").operands[1] == Constant(1)
    assert decode(bytes.fromhex("ea 78 56 34 12 60 00")).operands == (
        FarPointer(0x60, 0x12345678),)
    assert decode(bytes.fromhex("c8 10 00 01")).operands == (Immediate(16, 2), Immediate(1, 1))
