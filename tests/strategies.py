"""Hypothesis strategies shared by the differential tests: instruction encodings
generated from the ISA table, and random machine states."""

from __future__ import annotations

from hypothesis import strategies as st

from vmi.cpu import x87
from vmi.cpu.isa import FORMS, Form

PREFIX_BYTES = (0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3)

#: Every form the decoder knows: the integer table and the x87 escapes.
ALL_FORMS: list[Form] = FORMS + x87.FORMS


def form_bytes(form: Form, modrm: int, prefixes: list[int] | tuple[int, ...] = ()) -> bytes:
    """The prefix, opcode and ModRM bytes of one encoding of ``form``.

    ``modrm`` is used as given except that a group's ``reg`` field is forced to
    the form's, and an x87 memory form (whose ``mod`` 3 would select a register
    form instead) gets ``mod`` 2 in place of 3.
    """
    body = list(form.opcode)
    if form.has_modrm:
        if form.group is not None:
            modrm = (modrm & 0xC7) | (form.group << 3)
            if "x87" in form.attrs and modrm >= 0xC0:
                modrm &= 0xBF
        body.append(modrm)
    return bytes(list(prefixes) + body)


@st.composite
def encoding(draw, forms: list[Form] | None = None, prefixes: tuple[int, ...] = PREFIX_BYTES,
             max_prefixes: int = 2, tail: int = 12) -> bytes:
    """Bytes that start with one instruction of ``forms`` (default: every form,
    x87 included) plus ``tail`` random bytes.

    The ModRM byte is random but for a group's ``reg`` field (see
    ``form_bytes``); SIB, displacement and immediates come from the random
    tail, which the decoder reads as needed (12 bytes cover the longest
    SIB + disp32 + imm32 tail).
    """
    form = draw(st.sampled_from(forms if forms is not None else ALL_FORMS))
    chosen = draw(st.lists(st.sampled_from(prefixes), max_size=max_prefixes)) if prefixes else []
    modrm = draw(st.integers(0, 255))
    rest = draw(st.binary(min_size=tail, max_size=tail))
    return form_bytes(form, modrm, chosen) + rest


def register_value():
    """A 32-bit register value: often small or a pointer into the data window."""
    return st.one_of(
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFF),
        st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                         0x80000000, 0xFFFFFFFF]),
        st.integers(DATA_BASE, DATA_BASE + DATA_SIZE - 1),
    )


#: The data window of differential tests: random bytes, stack at its top.
DATA_BASE = 0x10000
DATA_SIZE = 0x20000
CODE_BASE = 0x1000
