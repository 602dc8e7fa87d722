"""Byte-for-byte agreement with GNU as over the generated corpus (every table form).

Each corpus line gets a label, so the bytes of every line are compared on
their own (``nm`` gives GNU as's label addresses). Both assemblers see the
same source; lines only one of them accepts are checked against the short
lists below.
"""

from __future__ import annotations

import pytest

from tests.asm.corpus import (
    assembled_corpus,
    build_source,
    by_corpus_line,
    corpus_lines,
)
from tests.asm.gnu import gnu_as_available, gnu_assemble
from vmi.cpu import decode, isa, x87

pytestmark = pytest.mark.skipif(not gnu_as_available(),
                                reason="GNU as, objcopy or nm is not installed")

#: Mnemonics vmi.asm accepts and GNU as 2.40 does not (spellings of table forms
#: that objdump prints or the decoder names; see docs/asm.md).
VMI_ONLY_MNEMONICS = ("fstpnce", "salc", "movsww", "movzww")

#: What vmi.asm rejects where GNU as only warns and truncates: values that do
#: not fit their field (docs/asm.md, "Differences from GNU as").
TRUNCATION_MESSAGES = ("does not fit",)


@pytest.mark.parametrize("bits", [32, 16])
def test_corpus_bytes_match_gnu_as(bits: int) -> None:
    corpus = assembled_corpus(bits)
    everything = [line for line, _key in corpus_lines()]
    first = gnu_assemble(build_source(everything, bits))
    gnu_rejected = by_corpus_line(first.errors, everything)
    gnu_warned = by_corpus_line(first.warnings, everything)

    lenient = [line for line in corpus.lines if line in gnu_rejected
               and not line.startswith(VMI_ONLY_MNEMONICS)]
    assert not lenient, f"vmi.asm accepts what GNU as rejects: {lenient[:10]}"

    strict = [(line, message) for line, message in corpus.rejected.items()
              if line not in gnu_rejected
              and not (line in gnu_warned and any(m in message for m in TRUNCATION_MESSAGES))]
    assert not strict, f"vmi.asm rejects what GNU as accepts: {strict[:10]}"

    lines = [line for line in corpus.lines if line not in gnu_rejected]
    assert lines == [line for line in corpus.lines
                     if not line.startswith(VMI_ONLY_MNEMONICS)]
    if len(lines) != len(corpus.lines):
        from tests.asm.corpus import vmi_corpus

        corpus = vmi_corpus(lines, bits)
        assert corpus.lines == lines
    gnu = gnu_assemble(build_source(lines, bits))
    assert not gnu.errors
    mismatches = []
    for k, line in enumerate(lines):
        theirs = gnu.text[gnu.symbols[f"L{k}"]:gnu.symbols[f"L{k + 1}"]]
        ours = corpus.bytes_of(k)
        if theirs != ours:
            mismatches.append(f"{line!r}: GNU as {theirs.hex()} vmi.asm {ours.hex()}")
    assert not mismatches, f"{len(mismatches)} of {len(lines)} differ:\n" + "\n".join(
        mismatches[:40])
    assert len(lines) > 6000  # the corpus did not silently shrink


#: Forms no GNU as spelling produces: decode-only aliases of other forms.
UNREACHABLE = {
    *(f"82/{r}" for r in range(8)),  # 80 /r (GNU as never writes 82)
    "C0/6", "C1/6", "D0/6", "D1/6", "D2/6", "D3/6",  # sal is written as shl (/4)
    "F6/1", "F7/1",  # test /0
    "D6",  # salc: not in GNU as (vmi.asm accepts it)
    "DCD0+", "DCD8+", "DED0+", "DDC8+", "DFC8+", "DFD0+", "DFD8+",  # x87 aliases
}
#: x87 register forms GNU as spells with the D8 form instead (%st(0) is %st).
UNREACHABLE_OPCODES = {(0xDC, 0xC0 + 8 * k) for k in range(8) if k not in (2, 3)}


def test_corpus_reaches_every_form_gnu_as_can_write() -> None:
    corpus = assembled_corpus(32)
    reached = set()
    for k in range(len(corpus.lines)):
        data = corpus.bytes_of(k)
        pos = 0
        while pos < len(data):
            try:
                insn = decode(data[pos:], 0)
            except Exception:
                break  # a prefix alone on its line
            reached.add(id(insn.form))
            pos += insn.length
    missing = sorted(
        (form.key, bytes(form.opcode).hex()) for form in list(isa.FORMS) + list(x87.FORMS)
        if id(form) not in reached and form.key not in UNREACHABLE
        and tuple(form.opcode) not in UNREACHABLE_OPCODES and form.key != "D9D8+"
    )
    assert not missing, f"forms no corpus line produced: {missing}"
