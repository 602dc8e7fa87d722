"""Round trip: corpus bytes -> ``vmi.cpu.decode`` -> ``str()`` -> vmi.asm -> same bytes.

``str()`` is the text objdump prints, so a branch target is an absolute
address; the test rewrites it as ``.+delta`` so the text can be reassembled
anywhere. Some corpus lines ask for an encoding the text cannot carry (a
forward reference gets a 32-bit field, ``{disp32}``, an explicit redundant
prefix, prefixes in a non-canonical order): for those the reassembled bytes
must decode to the same instruction, not be the same bytes.
"""

from __future__ import annotations

import pytest

from tests.asm.corpus import assembled_corpus, vmi_corpus
from vmi.cpu import decode
from vmi.cpu.errors import DecodeError
from vmi.cpu.operands import MemoryOperand, Relative

#: Corpus lines whose bytes depend on more than their text (see the docstring).
NON_CANONICAL = (
    "FWD", "L1+4", "$L0", "$L1", "(L1-L0)", "L1-L0", "$1f", "$.", "{", "ds;", "cs;", "rep;",
    "repz;", "lock;", "TI_flags", "nr_syscalls", "VIF", "sys_call_table",
    "addr16 movl 0x1234,%ecx", "%ds:(%esp)", "%ds:(%ebp)", "%ss:(%eax)", "ds; movl",
)

#: Text objdump prints that is not assembler syntax (and GNU as rejects it too).
NOT_ASSEMBLER_TEXT = ("fneni(8087 only)", "fndisi(8087 only)", "fnsetpm(287 only)")


def _text(insn, bits: int) -> str:
    """``str(insn)`` with a branch target rewritten relative to the instruction."""
    text = str(insn)
    for op in insn.operands:
        if isinstance(op, Relative):
            delta = (op.target - insn.address) & ((1 << insn.opsize) - 1)
            if delta >> (insn.opsize - 1):
                delta -= 1 << insn.opsize
            head, _, _ = text.rpartition(" ")
            text = f"{head} .{delta:+d}"
    return text


def _same_instruction(a, b) -> bool:
    """Same mnemonic, operands and prefixes in effect (the bytes may differ).

    A redundant segment prefix and the address size of a plain absolute
    address do not change what the instruction does, and objdump's text
    does not show them (``3e 8b 08`` and ``8b 08`` both print ``%ds:(%eax)``).
    """
    def shape(insn):
        ops = []
        for op in insn.operands:
            if isinstance(op, Relative):
                ops.append(("rel", op.target - insn.address))
            elif isinstance(op, MemoryOperand):
                absolute = op.base is None and op.index is None
                ops.append((op.size, op.segment, op.base, op.index, op.scale, op.disp,
                            None if absolute else op.addrsize))
            else:
                ops.append(op)
        prefixes = frozenset(insn.prefixes) - {"es", "cs", "ss", "ds", "fs", "gs", "addr16"}
        return insn.mnemonic, tuple(ops), prefixes, insn.opsize
    return shape(a) == shape(b)


@pytest.mark.parametrize("bits", [32, 16])
def test_decode_str_reassemble(bits: int) -> None:
    corpus = assembled_corpus(bits)
    texts: list[str] = []
    originals: list[tuple[str, bytes, list]] = []
    for k, line in enumerate(corpus.lines):
        data = corpus.bytes_of(k)
        pos, parts, insns = 0, [], []
        try:
            while pos < len(data):
                insn = decode(data[pos:], 0x100000 + pos, bits=bits)
                insns.append(insn)
                parts.append(_text(insn, bits))
                pos += insn.length
        except DecodeError:
            continue  # a prefix alone on its line, or mov to %cs (#UD)
        text = "; ".join(parts)
        if any(bad in text for bad in NOT_ASSEMBLER_TEXT):
            continue
        texts.append(text)
        originals.append((line, data, insns))
    again = vmi_corpus(texts, bits)
    unassembled = [(texts[k], message) for k, message in enumerate(again.rejected)]
    assert not again.rejected, (
        f"disassembly that does not reassemble: {list(again.rejected.items())[:20]}")
    assert again.lines == texts
    wrong = []
    for k, (line, data, insns) in enumerate(originals):
        result = again.bytes_of(k)
        if result == data:
            continue
        if any(mark in line for mark in NON_CANONICAL):
            pos, ok = 0, True
            for insn in insns:
                try:
                    other = decode(result[pos:], 0x100000 + pos, bits=bits)
                except DecodeError:
                    ok = False
                    break
                ok = ok and _same_instruction(insn, other)
                pos += other.length
            if ok and pos == len(result):
                continue
        wrong.append(f"{line!r} -> {texts[k]!r}: {data.hex()} -> {result.hex()}")
    assert not unassembled
    assert not wrong, f"{len(wrong)} of {len(originals)}:\n" + "\n".join(wrong[:40])
    assert len(originals) > 6000
