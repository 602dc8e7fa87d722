"""Differential test of ``vmi.cpu.decode`` against iced-x86 1.21.0, 32- and 16-bit.

Every encoding is decoded by both; the outcome must agree:

* we decode: iced must decode an instruction of a 386/486/387 or of the
  kernel's later extras (``ALLOWED_FEATURES``), and the fields must be equal
  one by one (length, mnemonic, every operand's kind, register, memory
  base/index/scale/displacement/segment/override and access size, immediate,
  branch target, far pointer, and the lock/rep prefixes);
* we raise ``InvalidOpcode``: iced must fail too, or decode an instruction
  that is not on a 386/486/387 plus the kernel's extras (``ALLOWED_FEATURES``);
* we raise ``TruncatedInstruction``: iced must fail, and more bytes must
  change our answer.

A 386 is not a modern CPU: the few places where iced's reading differs from
what a 386 (with the kernel's later additions) does are in ``ALLOW_LIST``,
each with its reason; ``docs/decoder.md`` repeats them. Anything else is a
mismatch.

The encodings come from five generators: a deterministic sweep of every form
of the table (x87 included) with ``SEEDS_PER_FORM`` seeds, a deterministic
sweep of every opcode byte (one-byte and 0F map) under every ModRM
``reg``/``mod`` (so undefined encodings are covered too), every truncation of
one encoding of each form, every form behind 8-15 prefixes (the 15-byte
limit), and hypothesis over the ``encoding`` strategy. Together they compare
about 65,000 encodings per run in the ``ci`` profile.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings

from tests.conftest import example_scale
from tests.strategies import ALL_FORMS, PREFIX_BYTES, encoding, form_bytes
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
from vmi.cpu.operands import SEGMENTS

iced = pytest.importorskip("iced_x86")

IP = 0x7FF0  # near the 16-bit wrap, so masked branch targets show up
OPTIONS = iced.DecoderOptions.MOV_TR  # 0F 24/0F 26: the 386/486 test registers

_CODE_NAMES = {getattr(iced.Code, n): n for n in dir(iced.Code) if n.isupper()}
_MNEMONICS = {getattr(iced.Mnemonic, n): n.lower() for n in dir(iced.Mnemonic) if n.isupper()}
_REGISTERS = {getattr(iced.Register, n): n for n in dir(iced.Register) if n.isupper()}
_FEATURES = {getattr(iced.CpuidFeature, n): n for n in dir(iced.CpuidFeature) if n.isupper()}
_K = iced.OpKind

#: CPUID features of the instructions the decoder must know: the 386 and 387,
#: the 486 additions, and the later ones a 2006 kernel uses.
ALLOWED_FEATURES = frozenset({
    "INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486", "FPU", "FPU287", "FPU387",
    "CPUID", "TSC", "MSR", "SEP", "CX8", "PAUSE", "MOV_TR",
})
#: iced's feature CMOV covers the integer CMOVcc (0F 40-4F), which the decoder
#: knows (a stock i686 ``gcc -m32`` build of xv6 emits it), and the P6 x87
#: additions FCMOVcc and FCOMI/FUCOMI(P), which it does not (no guest uses them).
CMOV_MNEMONICS = frozenset(f"cmov{cc}" for cc in (
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"))

#: iced mnemonic -> ours, where the spellings differ.
MNEMONIC_MAP = {
    "movsb": "movs", "movsw": "movs", "movsd": "movs",
    "cmpsb": "cmps", "cmpsw": "cmps", "cmpsd": "cmps",
    "stosb": "stos", "stosw": "stos", "stosd": "stos",
    "lodsb": "lods", "lodsw": "lods", "lodsd": "lods",
    "scasb": "scas", "scasw": "scas", "scasd": "scas",
    "insb": "ins", "insw": "ins", "insd": "ins",
    "outsb": "outs", "outsw": "outs", "outsd": "outs",
    "xlatb": "xlat", "wait": "fwait", "retf": "lret",
}


def our_mnemonic(ins) -> str:
    """iced's mnemonic in our spelling; far CALL/JMP are ``lcall``/``ljmp`` (AT&T)."""
    code = _CODE_NAMES[ins.code]
    if code.startswith(("CALL_PTR", "CALL_M16")):
        return "lcall"
    if code.startswith(("JMP_PTR", "JMP_M16")):
        return "ljmp"
    name = _MNEMONICS[ins.mnemonic]
    return MNEMONIC_MAP.get(name, name)


# -- the allow-list -----------------------------------------------------------------

def _opcode_start(data: bytes) -> int:
    """Index of the first byte after the prefixes."""
    i = 0
    while i < len(data) and data[i] in PREFIX_BYTES:
        i += 1
    return i


def _ud0_ud1(data: bytes, bits: int, ours, ins) -> bool:
    i = _opcode_start(data)
    return isinstance(ours, InvalidOpcode) and data[i:i + 2] in (b"\x0f\xb9", b"\x0f\xff")


def _low_test_register(data: bytes, bits: int, ours, ins) -> bool:
    i = _opcode_start(data)
    return (
        isinstance(ours, InvalidOpcode) and len(data) > i + 2
        and data[i:i + 2] in (b"\x0f\x24", b"\x0f\x26") and (data[i + 2] >> 3) & 7 < 3
    )


#: iced's forms that name a 32-bit register for an r/m16 operand under a 32-bit operand size.
_R32M16_CODES = frozenset({
    "ARPL_R32M16_R32", "LLDT_R32M16", "LTR_R32M16", "VERR_R32M16", "VERW_R32M16", "LMSW_R32M16",
})


def _word_operand(data: bytes, bits: int, ours, ins) -> bool:
    return (
        ins is not None and isinstance(ours, Instruction)
        and _CODE_NAMES[ins.code] in _R32M16_CODES
        and compare_fields(ins, ours, word_registers=True) is None
    )


def _f3_reading(data: bytes, bits: int, ours, ins) -> bool:
    i = _opcode_start(data)
    return (
        0xF3 in data[:i] and data[i:i + 2] in (b"\x0f\xbc", b"\x0f\xbd", b"\x0f\x09")
        and isinstance(ours, Instruction) and ours.mnemonic in ("bsf", "bsr", "wbinvd")
    )


#: (name, predicate(data, bits, ours, iced_instruction), reason). A mismatch is
#: forgiven only when one of these predicates holds.
ALLOW_LIST: list[tuple[str, Callable[..., bool], str]] = [
    ("ud0-ud1", _ud0_ud1,
     "iced decodes 0F FF and 0F B9 as UD0/UD1 with a ModRM byte; both are #UD, "
     "which is what InvalidOpcode says"),
    ("tr0-2", _low_test_register,
     "iced (MOV_TR) accepts TR0-TR2; the 386 has TR6-TR7 and the 486 TR3-TR7"),
    ("r/m16", _word_operand,
     "ARPL, LLDT, LTR, VERR, VERW, LMSW read a 16-bit operand (SDM Vol.2: r/m16, as "
     "objdump prints it); iced names a 32-bit register under a 32-bit operand size"),
    ("f3-opcodes", _f3_reading,
     "F3 0F BC/BD/09 are TZCNT/LZCNT/WBNOINVD to iced; a 386/486 ignores the F3 "
     "and runs BSF/BSR/WBINVD"),
]

#: iced operands the decoder leaves implicit: XLAT's [eBX+AL] (its segment override
#: is in ``Instruction.prefixes``; the executor forms the address).
IMPLICIT_OPERANDS = {"XLAT_M8": 0}


def allowed(data: bytes, bits: int, ours, ins) -> str | None:
    for name, predicate, _reason in ALLOW_LIST:
        if predicate(data, bits, ours, ins):
            return name
    return None


# -- decoding with both ---------------------------------------------------------------

def iced_decode(data: bytes, bits: int):
    decoder = iced.Decoder(bits, data, OPTIONS, ip=IP)
    ins = decoder.decode()
    return ins, decoder.last_error


def ours_decode(data: bytes, bits: int):
    try:
        return decode(data, IP, bits=bits)
    except (InvalidOpcode, TruncatedInstruction) as error:
        return error


def is_386(ins) -> bool:
    """Whether the decoder must know iced's instruction ``ins``."""
    features = {_FEATURES[f] for f in ins.cpuid_features()}
    if features == {"CMOV"}:
        return our_mnemonic(ins) in CMOV_MNEMONICS
    return features <= ALLOWED_FEATURES


_GPR = {}
for _size, _names in ((4, ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")),
                      (2, ("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")),
                      (1, ("AL", "CL", "DL", "BL", "AH", "CH", "DH", "BH"))):
    for _i, _n in enumerate(_names):
        _GPR[_n] = ("gpr", _i, _size)


def iced_register(reg: int) -> tuple[str, int, int]:
    """iced register -> (kind, index, size) in our terms (x87 size 10)."""
    name = _REGISTERS[reg]
    if name in _GPR:
        return _GPR[name]
    if name.lower() in SEGMENTS:
        return ("seg", SEGMENTS.index(name.lower()), 2)
    for prefix, kind, size in (("CR", "cr", 4), ("DR", "dr", 4), ("TR", "tr", 4),
                               ("ST", "st", 10)):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return (kind, int(name[len(prefix):]), size)
    raise AssertionError(f"unexpected iced register {name}")


def our_register(op: Register) -> tuple[str, int, int]:
    # "ST" (the stack top, index -1) is ST(0) to iced.
    return (op.kind, max(op.index, 0), op.size)


def _address_register(reg: int, addrsize: int) -> int | None:
    if reg == iced.Register.NONE:
        return None
    kind, index, size = iced_register(reg)
    assert kind == "gpr" and size * 8 == addrsize, (_REGISTERS[reg], addrsize)
    return index


def compare_operand(ins, i: int, op, ours: Instruction, word_registers: bool = False) -> str | None:
    """None if operand ``i`` agrees, else a description of the difference.

    ``word_registers`` reads iced's 32-bit registers as their 16-bit halves.
    """
    kind = ins.op_kind(i)
    if kind == _K.REGISTER:
        if not isinstance(op, Register):
            return f"op{i}: iced register, ours {op!r}"
        theirs = iced_register(ins.op_register(i))
        if word_registers and theirs[0] == "gpr" and theirs[2] == 4:
            theirs = ("gpr", theirs[1], 2)
        return None if theirs == our_register(op) else f"op{i}: iced {theirs}, ours {op!r}"
    if kind == _K.MEMORY:
        if not isinstance(op, MemoryOperand):
            return f"op{i}: iced memory, ours {op!r}"
        try:
            base = _address_register(ins.memory_base, op.addrsize)
            index = _address_register(ins.memory_index, op.addrsize)
        except AssertionError as error:
            return f"op{i}: address size {error}"
        theirs = (base, index, ins.memory_index_scale, ins.memory_displacement,
                  SEGMENTS.index(_REGISTERS[ins.memory_segment].lower()),
                  ins.segment_prefix != iced.Register.NONE,
                  iced.MemorySizeExt.size(ins.memory_size))
        mine = (op.base, op.index, op.scale, op.disp, op.segment, op.segment_override, op.size)
        if theirs != mine:
            return f"op{i}: iced {theirs}, ours {mine}"
        if base is None and index is None and ins.memory_displ_size * 8 != op.addrsize:
            return f"op{i}: displacement size {ins.memory_displ_size}, addrsize {op.addrsize}"
        return None
    if kind in (_K.MEMORY_SEG_SI, _K.MEMORY_SEG_ESI, _K.MEMORY_ESDI, _K.MEMORY_ESEDI):
        if not isinstance(op, MemoryOperand):
            return f"op{i}: iced string operand, ours {op!r}"
        source = kind in (_K.MEMORY_SEG_SI, _K.MEMORY_SEG_ESI)
        wide = kind in (_K.MEMORY_SEG_ESI, _K.MEMORY_ESEDI)
        segment = SEGMENTS.index(_REGISTERS[ins.memory_segment].lower()) if source else 0
        theirs = (6 if source else 7, 32 if wide else 16, segment,
                  iced.MemorySizeExt.size(ins.memory_size))
        mine = (op.base, op.addrsize, op.segment, op.size)
        return None if theirs == mine else f"op{i}: iced {theirs}, ours {mine}"
    if kind in (_K.IMMEDIATE8, _K.IMMEDIATE16, _K.IMMEDIATE32, _K.IMMEDIATE8_2ND,
                _K.IMMEDIATE8TO16, _K.IMMEDIATE8TO32):
        size = {_K.IMMEDIATE8: 1, _K.IMMEDIATE8_2ND: 1, _K.IMMEDIATE16: 2,
                _K.IMMEDIATE8TO16: 2, _K.IMMEDIATE32: 4, _K.IMMEDIATE8TO32: 4}[kind]
        value = ins.immediate(i) & ((1 << size * 8) - 1)
        if isinstance(op, Constant):
            return None if (value, size) == (op.value, 1) else f"op{i}: iced {value}, ours {op}"
        if not isinstance(op, Immediate):
            return f"op{i}: iced immediate, ours {op!r}"
        return None if (value, size) == (op.value, op.size) else \
            f"op{i}: iced imm {value:#x}/{size}, ours {op!r}"
    if kind in (_K.NEAR_BRANCH16, _K.NEAR_BRANCH32):
        if not isinstance(op, Relative):
            return f"op{i}: iced branch, ours {op!r}"
        width = 16 if kind == _K.NEAR_BRANCH16 else 32
        if (ins.near_branch_target, width) != (op.target, ours.opsize):
            return f"op{i}: iced target {ins.near_branch_target:#x}/{width}, ours {op!r}"
        return None
    if kind in (_K.FAR_BRANCH16, _K.FAR_BRANCH32):
        if not isinstance(op, FarPointer):
            return f"op{i}: iced far branch, ours {op!r}"
        offset = ins.far_branch16 if kind == _K.FAR_BRANCH16 else ins.far_branch32
        theirs = (ins.far_branch_selector, offset)
        return None if theirs == (op.selector, op.offset) else f"op{i}: iced {theirs}, ours {op!r}"
    return f"op{i}: unexpected iced operand kind {kind}"


def compare_fields(ins, ours: Instruction, word_registers: bool = False) -> str | None:
    """None if every compared field agrees, else the first difference."""
    if ins.len != ours.length:
        return f"length: iced {ins.len}, ours {ours.length}"
    mnemonic = our_mnemonic(ins)
    if mnemonic != ours.mnemonic:
        return f"mnemonic: iced {mnemonic}, ours {ours.mnemonic}"
    kept = [i for i in range(ins.op_count)
            if IMPLICIT_OPERANDS.get(_CODE_NAMES[ins.code]) != i]
    if len(kept) != len(ours.operands):
        return f"operand count: iced {len(kept)}, ours {len(ours.operands)}"
    for i, op in zip(kept, ours.operands, strict=True):
        problem = compare_operand(ins, i, op, ours, word_registers)
        if problem:
            return problem
    if ins.has_lock_prefix != ours.lock:
        return f"lock: iced {ins.has_lock_prefix}, ours {ours.lock}"
    if ours.mnemonic != "pause":  # F3 is part of PAUSE's opcode, not a REP prefix
        theirs = "rep" if ins.has_rep_prefix else "repne" if ins.has_repne_prefix else None
        if theirs != ours.rep:
            return f"rep: iced {theirs}, ours {ours.rep}"
    return None


def compare(data: bytes, bits: int) -> str | None:
    """None if iced and we agree on ``data`` (or the difference is allow-listed),
    else a one-line description of the mismatch."""
    ours = ours_decode(data, bits)
    ins, error = iced_decode(data, bits)
    iced_ok = error == iced.DecoderError.NONE
    if isinstance(ours, Instruction):
        if not iced_ok:
            problem = f"iced error {error}, ours {ours.mnemonic}"
        elif not is_386(ins):
            problem = (f"iced {our_mnemonic(ins)} needs "
                       f"{[_FEATURES[f] for f in ins.cpuid_features()]}, ours {ours.mnemonic}")
        else:
            problem = compare_fields(ins, ours)
    elif isinstance(ours, InvalidOpcode):
        if iced_ok and is_386(ins):
            problem = f"ours #UD ({ours}), iced {our_mnemonic(ins)}"
        else:
            # iced may have stopped for want of bytes where we already know the answer;
            # with padding it must still reject (or need a non-386 feature).
            padded, padded_error = iced_decode(data + bytes(16), bits)
            if padded_error == iced.DecoderError.NONE and is_386(padded) \
                    and padded.len <= len(data):
                problem = f"ours #UD ({ours}), padded iced {our_mnemonic(padded)}"
            else:
                problem = None
    else:
        longer = ours_decode(data + bytes(16), bits)
        if iced_ok and is_386(ins):
            problem = f"ours truncated, iced {our_mnemonic(ins)} ({ins.len} bytes)"
        elif isinstance(longer, Instruction) and longer.length <= len(data):
            problem = f"ours truncated, but padded decodes in {longer.length} bytes"
        else:
            problem = None
    if problem is None:
        return None
    if allowed(data, bits, ours, ins if iced_ok else None):
        return None
    return f"{bits}-bit {data.hex()}: {problem}"


def assert_agree(cases: Iterator[tuple[bytes, int]]) -> int:
    """Compare every case; fail with (up to 20 of) the mismatches. Returns the count."""
    mismatches = []
    count = 0
    for data, bits in cases:
        count += 1
        problem = compare(data, bits)
        if problem:
            mismatches.append(problem)
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
    return count


# -- generators -----------------------------------------------------------------------

# Prefix mixes: none, the size prefixes, segment overrides, rep/lock.
_PREFIX_CHOICES = (
    (), (), (), (0x66,), (0x67,), (0x66, 0x67), (0x26,), (0x64, 0x3E), (0xF3,), (0xF2,),
    (0xF0,), (0x2E, 0x67), (0x65, 0x66, 0xF3),
)
SEEDS_PER_FORM = 48


def form_sweep(seed: int) -> Iterator[tuple[bytes, int]]:
    """Every form of the table, ``SEEDS_PER_FORM`` encodings each, in both modes:
    the ModRM ``mod`` cycles through 0-3, the rest and the prefixes are random."""
    rng = random.Random(seed)
    for form in ALL_FORMS:
        for k in range(SEEDS_PER_FORM):
            modrm = (k % 4) << 6 | rng.randrange(64)
            prefixes = _PREFIX_CHOICES[rng.randrange(len(_PREFIX_CHOICES))]
            data = form_bytes(form, modrm, prefixes) + rng.randbytes(12)
            yield data, 32 if k % 2 == 0 else 16


def opcode_sweep(seed: int) -> Iterator[tuple[bytes, int]]:
    """Every one-byte and 0F-map opcode byte under every ModRM ``reg`` and ``mod``
    (random ``rm``), both modes, defined or not."""
    rng = random.Random(seed)
    for escape in ((), (0x0F,)):
        for byte in range(256):
            if not escape and byte in PREFIX_BYTES:
                continue
            for modrm_high in range(32):  # mod (2 bits) x reg (3 bits)
                modrm = modrm_high << 3 | rng.randrange(8)
                prefixes = _PREFIX_CHOICES[rng.randrange(len(_PREFIX_CHOICES))]
                data = bytes([*prefixes, *escape, byte, modrm]) + rng.randbytes(12)
                yield data, 32 if modrm_high % 2 else 16


def long_prefix_sweep(seed: int) -> Iterator[tuple[bytes, int]]:
    """Every form behind 8-15 prefixes, whole and cut to 14, 15 and 16 bytes: the
    15-byte limit (InvalidOpcode) against running out of bytes (truncated)."""
    rng = random.Random(seed)
    repeatable = [b for b in PREFIX_BYTES if b != 0xF0]
    for n, form in enumerate(ALL_FORMS):
        prefixes = [rng.choice(repeatable) for _ in range(8 + n % 8)]
        data = form_bytes(form, rng.randrange(256), prefixes) + rng.randbytes(12)
        for cut in (len(data), 14, 15, 16):
            yield data[:cut], 32 if (n + cut) % 2 else 16


# -- the tests ------------------------------------------------------------------------

def test_every_form_agrees_with_iced():
    count = assert_agree(form_sweep(seed=1))
    assert count >= 20_000


def test_every_opcode_and_modrm_reg_agrees_with_iced():
    count = assert_agree(opcode_sweep(seed=2))
    assert count >= 15_000


def test_long_prefix_runs_agree_with_iced():
    assert_agree(long_prefix_sweep(seed=3))


@pytest.mark.parametrize("bits", [32, 16])
@settings(max_examples=1500 * example_scale())
@given(data=encoding(max_prefixes=4))
def test_hypothesis_encodings_agree_with_iced(bits, data):
    problem = compare(data, bits)
    assert problem is None, problem


@pytest.mark.parametrize("bits", [32, 16])
def test_truncations_agree_with_iced(bits):
    """Every prefix of a valid encoding is truncated for us and an error for iced."""
    rng = random.Random(bits)
    cases = []
    for form in ALL_FORMS:
        data = form_bytes(form, rng.randrange(256), ()) + rng.randbytes(12)
        full = ours_decode(data, bits)
        if isinstance(full, Instruction):
            cases.extend((data[:cut], bits) for cut in range(full.length))
    assert_agree(iter(cases))


def test_allow_list_is_short_and_explained():
    assert len(ALLOW_LIST) <= 6
    for name, _predicate, reason in ALLOW_LIST:
        assert name and len(reason) > 20
