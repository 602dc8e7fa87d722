"""Differential test of the AT&T text: ``str(instruction)`` against GNU objdump.

A deterministic corpus covers every form of the ISA table (``vmi.cpu.isa.FORMS``)
and the x87 escapes: for each form several ModRM/SIB/displacement/immediate and
prefix variants drawn from a seeded ``random.Random``, plus a hand-written list
of the cases objdump prints in a special way. Every instruction sits at the
start of its own 16-byte slot padded with ``nop``; an instruction is at most 15
bytes, so however objdump splits a slot, it starts decoding the next one at its
first byte and one disagreement cannot shift the rest of the listing. objdump
runs once per mode (``-m i386`` and ``-m i8086``) over the whole corpus.

Known differences are listed in ``ALLOWED`` with the reason; ``DECODER_XFAIL``
lists the encodings where our decoder (not the formatter) disagrees with objdump
on what the instruction is.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import example_scale
from vmi.cpu import decode, x87
from vmi.cpu.errors import DecodeError
from vmi.cpu.isa import FORMS, Form

OBJDUMP = shutil.which("objdump")
pytestmark = pytest.mark.skipif(OBJDUMP is None, reason="GNU objdump (binutils) is not installed")

SLOT = 16
NOP = 0x90
SEGMENT_PREFIXES = (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65)
#: Prefix bytes and how often the generator picks each (segment overrides share a weight).
PREFIX_WEIGHTS = {0x66: 6, 0x67: 4, 0xF3: 2, 0xF2: 2, 0xF0: 2} | dict.fromkeys(SEGMENT_PREFIXES, 1)
#: Variants per form in each mode (ten times more under the ``thorough`` profile).
VARIANTS = {32: 10 * example_scale(), 16: 6 * example_scale()}
SPECIAL_VALUES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE)

#: Hand-picked encodings objdump prints in a special way (hex, for each mode).
SPECIAL_CASES = {
    32: """
        89d8 c70001000000 ff30 6a05 6805000000 d1e0 c1e001 d3e0 d300 0fb600 0fb7c0 660fb6c0
        660fb7c0 0fbe00 0fbfc0 98 99 6698 6699 cf 66cf ff18 ff28 ffe0 ff10 66ffd0 66ff18
        a4 a5 66a5 f3a5 f3a6 f2a6 f2ae f3aa f3ac f36c f36f 26a4 26aa 26ac 67a5 67ac d7 26d7
        67d7 6c 6e ad af f00100 f0660100 3e90 6790 6690 f390 66f390 f36690 f2f390 f3f290
        e410 ec ee 66ed c8100000 66c8100001 ea00100000100066 9a0010000010 00 669a00101000
        e9fbffffff 8b45fc a134120000 64a134120000 67a13412 a33412000026 8b042534120000
        8b0460 8b0420 8b0424 8b0464 8b04e0 8b4000 8b8000000080 8b05fcffffff 8b0c8dfcffffff
        2e74fe 3e74fe 2e2e74fe 2e3e74fe 3e0f8400000000 3ee2fe 2ee3fe 67e3fe e3fe 67e2fe
        3effe0 3eff10 2eff10 3e2eff10 3eff18 3ee800000000 66f4 f3c3 f2c3 f2e900000000 f2ebfe
        f2f00100 f3f00100 f38900 f28900 f389c0 f3c70000000000 f28600 f38700 660600 6606
        0f00c0 660f00c0 0f01e0 0f0100 660f0100 8cc0 668cc0 8c00 668c00 8ec0 668ec0 8e00
        668e00 6200 666200 0f20c0 0f22d8 0f21c8 0f23f8 0f24f0 0f26f8 0f2000 0fc8 660fc9
        d40a d50a d408 cd80 cc ce f1 0f0b 9b 0f30 0f31 0f32 0f34 0f35 0fa2 0f06 0f08 0f09
        c20400 66c20400 ca0400 cb 66cb c3 66c3 c9 66c9 60 6660 61 6661 9c 669c 9d 669d
        1e 661e 0fa0 0fa8 660fa9 66e80000 e800000000 66e90000 0f8000000000 660f800000
        26262690 263e8b00 263e64652e366667f0f2f38b00 f0f00100 9b66
        f30fbcc0 f30fbdc0 f20fbcc0 d6 c03001 d030 d1f0 c0f001 8200 01 82c0ff
        f6c800 f7c800000000 f700ffffffff 83c0ff 6bc0ff 69c0ffffffff 0fba2001 0fa300
        0fa4c001 0fa5c0 0fac0001 0fad00 0fc708 0f0138 660f0138 8d00 268d00 668d00 678d00
        0f45d8 0f4c4e04 660f4fc1 0f4000 660f4a00 f00f4400 f30f4dc0 0f4b0424 670f4e00
    """,
    16: """
        8b00 8b4000 8b46fc 8b860080 8b063412 268b063412 678b00 678b0424 6a05 666a05
        660501000000 cf 66cf 60 6660 9c 669c c3 66c3 e80000 66e800000000 e90000
        66e900000000 c9 66c9 c8000000 66c8000000 98 6698 99 6699 ad 66ad a5 66a5 67a5
        d7 67d7 e3fe 67e3fe e2fe 67e2fe 0fb6c0 0fb7c0 660fb6c0 0fb600 660fb700 90 6690
        6790 ff30 66ff30 ff10 66ff10 ff18 66ff18 9a00001000 669a000000001000 ea00001000
        8cc0 668cc0 0f00c0 660f00c0 0fc8 660fc8 6200 666200 0f0100 660f0100 a13412
        67a134120000 66a13412 e410 e510 66e510 ed 66ed 6c 6d 666d 66f4 6790 f390
        0f45d8 660f45d8 0f4c4604 660f4c4604 670f4f00
    """,
}


@dataclass(frozen=True)
class Case:
    """One corpus instruction: its bytes and where it sits."""

    address: int
    data: bytes
    form: object  # the ISA-table (or x87) form it decoded as


@dataclass(frozen=True)
class ObjdumpLine:
    """One line of objdump's listing: address, raw bytes, text."""

    address: int
    data: bytes
    text: str


_PREFIX_BYTES = frozenset(PREFIX_WEIGHTS)
#: The undocumented x87 register aliases (escape byte, ModRM byte).
X87_ALIASES = frozenset(
    bytes([escape, modrm])
    for escape, first, count in (
        (0xD9, 0xD8, 8), (0xDC, 0xD0, 16), (0xDD, 0xC8, 8), (0xDE, 0xD0, 8), (0xDF, 0xC8, 24),
    )
    for modrm in range(first, first + count)
    if (escape, modrm) != (0xDE, 0xD9)  # fcompp
)


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(prefix bytes, the rest)."""
    start = next((i for i, b in enumerate(data) if b not in _PREFIX_BYTES), len(data))
    return data[:start], data[start:]


def _is_salc(bits: int, data: bytes, text: str) -> bool:
    return _split(data)[1][:1] == b"\xd6"


def _is_rep_bsf_bsr(bits: int, data: bytes, text: str) -> bool:
    prefixes, rest = _split(data)
    return rest[:2] in (b"\x0f\xbc", b"\x0f\xbd") and bool({0xF2, 0xF3} & set(prefixes))


def _is_prefixed_wbinvd(bits: int, data: bytes, text: str) -> bool:
    prefixes, rest = _split(data)
    return rest[:2] == b"\x0f\x09" and bool({0x66, 0xF2, 0xF3} & set(prefixes))


def _is_x87_alias(bits: int, data: bytes, text: str) -> bool:
    return _split(data)[1][:2] in X87_ALIASES


Rule = tuple[Callable[[int, bytes, str], bool], str]

#: Known differences from objdump: (predicate on (bits, bytes, objdump text), reason).
ALLOWED: list[Rule] = [
    (_is_salc, "D6 is SALC, undocumented but executed by every i386/i486; objdump 2.40 has "
               "no name for it and prints (bad)"),
    (_is_rep_bsf_bsr, "objdump reads F3 0F BC/BD as the BMI/ABM tzcnt/lzcnt (and F2 0F BC/BD "
                      "as (bad)); the i386/i486 modelled here ignores the prefix: bsf/bsr"),
    (_is_prefixed_wbinvd, "objdump reads 0F 09 under a 66/F2/F3 prefix as wbnoinvd (F3, 2019) "
                          "or (bad); the i486 ignores the prefix and executes wbinvd"),
    (_is_x87_alias, "undocumented x87 aliases of fstp/fcom/fcomp/fxch (D9 D8+i, DC D0-DF, "
                    "DD C8+i, DE D0+i, DF C8-DF) run by the 387/486; objdump prints (bad)"),
]

#: Encodings where the decoder, not the formatter, disagrees with objdump: each
#: entry names the decoder problem, and ``test_decoder_agrees_with_objdump``
#: xfails while any instruction matches one. (Empty: the disagreements found
#: while writing this test, ARPL and LLDT/LTR/VERR/VERW/LMSW register sizes,
#: JCXZ/JECXZ chosen by operand size, BSWAP under 66, are fixed in the decoder.)
DECODER_XFAIL: list[Rule] = []


def _random_tail(rng: random.Random, count: int) -> bytes:
    """Bytes for SIB, displacement and immediates: random, with edge values mixed in."""
    return bytes(
        rng.choice(SPECIAL_VALUES) if rng.random() < 0.3 else rng.randrange(256)
        for _ in range(count)
    )


def _random_prefixes(rng: random.Random) -> list[int]:
    count = rng.choices((0, 1, 2, 3), weights=(40, 35, 18, 7))[0]
    pool, weights = zip(*PREFIX_WEIGHTS.items(), strict=True)
    return rng.choices(pool, weights=weights, k=count)


def _modrm(rng: random.Random, form: Form, memory_only: bool) -> int:
    mod = rng.randrange(3) if memory_only else rng.choices((0, 1, 2, 3), weights=(3, 2, 2, 3))[0]
    reg = form.group if form.group is not None else rng.randrange(8)
    if "Sw" in form.operands:
        reg = rng.randrange(6)  # only six segment registers
    return mod << 6 | reg << 3 | rng.randrange(8)


def _form_variants(rng: random.Random, form: Form, count: int) -> list[bytes]:
    """``count`` encodings of ``form``: random prefixes, ModRM, SIB and tail bytes."""
    memory_only = any(spec[:1] == "M" for spec in form.operands)
    lockable = "lock" in form.attrs
    variants = []
    for attempt in range(count):
        prefixes = _random_prefixes(rng) if attempt else []  # the first one plain
        if lockable and attempt % 3 == 1:
            prefixes.insert(rng.randrange(len(prefixes) + 1), 0xF0)
        body = list(form.opcode)
        if form.has_modrm:
            modrm = _modrm(rng, form, memory_only or (lockable and 0xF0 in prefixes))
            body.append(modrm)
        variants.append(bytes(prefixes + body) + _random_tail(rng, 12))
    return variants


def _x87_variants(rng: random.Random, form: Form, count: int) -> list[bytes]:
    """Encodings of an x87 form: memory forms with random ModRM/SIB/displacement and
    prefixes, register forms (whose ModRM byte is part of the opcode) with prefixes."""
    variants = []
    for attempt in range(count):
        prefixes = _random_prefixes(rng) if attempt and rng.random() < 0.5 else []
        if form.group is not None:
            modrm = rng.randrange(3) << 6 | form.group << 3 | rng.randrange(8)
            body = [*form.opcode, modrm, *_random_tail(rng, 12)]
        else:
            body = list(form.opcode)
        variants.append(bytes(prefixes + body))
    return variants


def build_corpus(bits: int) -> list[Case]:
    """The corpus for one mode: decodable instructions, each in its own slot."""
    rng = random.Random(0x1386 + bits)
    candidates = [bytes.fromhex(text) for text in SPECIAL_CASES[bits].split()]
    for form in FORMS:
        candidates += _form_variants(rng, form, VARIANTS[bits])
    for form in x87.FORMS:
        candidates += _x87_variants(rng, form, 4 if form.group is not None else 2)
    cases = []
    for data in candidates:
        address = len(cases) * SLOT
        try:
            insn = decode(data, address, bits=bits)
        except DecodeError:
            continue
        cases.append(Case(address, bytes(insn.raw), insn.form))
    return cases


_LINE = re.compile(r"^ *([0-9a-f]+):\t([0-9a-f ]*)\t(.*)$")


def run_objdump(blob: bytes, bits: int, directory: Path) -> dict[int, ObjdumpLine]:
    """objdump's listing of ``blob`` (raw binary at address 0), by address."""
    path = directory / f"corpus{bits}.bin"
    path.write_bytes(blob)
    machine = "i386" if bits == 32 else "i8086"
    assert OBJDUMP is not None
    output = subprocess.run(
        [OBJDUMP, "-D", "-z", "-b", "binary", "-m", machine, "--insn-width=16", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = {}
    for line in output.splitlines():
        match = _LINE.match(line)
        if match:
            address = int(match[1], 16)
            lines[address] = ObjdumpLine(address, bytes.fromhex(match[2]), match[3])
    return lines


@cache
def _listing(bits: int, directory: Path) -> tuple[list[Case], dict[int, ObjdumpLine]]:
    cases = build_corpus(bits)
    blob = bytearray()
    for case in cases:
        blob += case.data.ljust(SLOT, bytes([NOP]))
    return cases, run_objdump(bytes(blob), bits, directory)


@dataclass
class Comparison:
    """The outcome for one mode: differences as ``(report, reason)`` pairs."""

    count: int
    mismatches: list[str]
    allowed: list[tuple[str, str]]
    xfails: list[tuple[str, str]]


@cache
def compare(bits: int, directory: Path) -> Comparison:
    """Compare every corpus instruction's text and length with objdump's."""
    cases, lines = _listing(bits, directory)
    result = Comparison(len(cases), [], [], [])
    for case in cases:
        insn = decode(case.data, case.address, bits=bits)
        ours = str(insn)
        line = lines.get(case.address)
        theirs = line.text if line is not None else "<no objdump line at this address>"
        if line is not None and line.data == case.data and theirs == ours:
            continue
        report = f"{case.data.hex(' ')}: ours {ours!r}, objdump {theirs!r}"
        if line is not None and line.data != case.data:
            report += f" (objdump length {len(line.data)}, ours {len(case.data)})"
        for rules, sink in ((ALLOWED, result.allowed), (DECODER_XFAIL, result.xfails)):
            reason = next((why for match, why in rules if match(bits, case.data, theirs)), None)
            if reason is not None:
                sink.append((report, reason))
                break
        else:
            result.mismatches.append(report)
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objdump")


@pytest.mark.parametrize("bits", [32, 16])
def test_att_text_matches_objdump(bits: int, workdir: Path) -> None:
    """Every corpus instruction's text is objdump's, but for the documented allow-list."""
    result = compare(bits, workdir)
    assert result.count > 2000
    assert not result.mismatches, f"{len(result.mismatches)} of {result.count} differ:\n" + (
        "\n".join(result.mismatches[:60])
    )


@pytest.mark.parametrize("bits", [32, 16])
def test_decoder_agrees_with_objdump(bits: int, workdir: Path) -> None:
    """The decoder problems of ``DECODER_XFAIL``: xfail while any remain, listing them."""
    xfails = compare(bits, workdir).xfails
    if xfails:
        pytest.xfail(f"{len(xfails)} decoder disagreements, e.g.:\n" + "\n".join(
            f"{report}: {reason}" for report, reason in xfails[:10]
        ))


@pytest.mark.parametrize("bits", [32, 16])
def test_corpus_covers_every_form(bits: int) -> None:
    """Every form of the ISA table and of the x87 table is in the corpus."""
    covered = {case.form for case in build_corpus(bits)}
    missing = [form.key for form in [*FORMS, *x87.FORMS] if form not in covered]
    assert not missing


def test_allow_list_entries_are_all_needed(workdir: Path) -> None:
    """Every ALLOWED entry still matches some instruction, so the list cannot go stale."""
    used = {reason for bits in (32, 16) for _, reason in compare(bits, workdir).allowed}
    assert used == {reason for _, reason in ALLOWED}
