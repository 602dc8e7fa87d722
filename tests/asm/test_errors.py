"""Errors a person can cause: located, all of them in one run, never a traceback."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example_scale
from vmi.asm import AsmError, Program, assemble
from vmi.asm.errors import MAX_ERRORS

BAD = """\
	.text
start:	movl %eax, %ebx
	frob %eax
	movl %eax
	movl %eax, %bl
	jmp nowhere
start:	nop
	.byte 256
	addb $300, %al
	movl $1, (%eax, %esp)
	.byte 1f
"""


def _errors(source: str, **kwargs) -> list:
    with pytest.raises(AsmError) as failure:
        assemble(source, macros=None, **kwargs)
    return failure.value.errors


def test_all_errors_of_a_file_in_one_run_with_line_and_column() -> None:
    errors = _errors(BAD, filename="bad.S")
    found = [(e.location.line, e.location.column, e.message) for e in errors]
    assert found == [
        (3, 2, "unknown instruction 'frob'"),
        (4, 2, "number of operands mismatch for 'movl'"),
        (5, 2, "operand size mismatch for 'movl'"),
        (7, 1, "symbol 'start' is already defined"),
        (8, 8, "value 0x100 does not fit in 8 bits"),
        (9, 7, "value 0x12c does not fit in 8 bits"),
        (10, 11, "'%esp' cannot be an index register"),
        (11, 8, "undefined local label '1f'"),
        (6, 6, "undefined symbol 'nowhere'"),
    ]
    assert all(e.location.filename == "bad.S" for e in errors)


def test_message_format_is_file_line_col_then_source_then_caret() -> None:
    (error,) = _errors("\tnop\n\tmovl $1, %al, %bl\n", filename="x.S")
    assert error.format() == (
        "x.S:2:2: error: number of operands mismatch for 'movl'\n"
        "\tmovl $1, %al, %bl\n"
        "\t^")


def test_at_most_twenty_errors() -> None:
    errors = _errors("bogus\n" * 50)
    assert len(errors) == MAX_ERRORS == 20


def test_error_in_a_macro_points_into_the_body_and_notes_the_invocation() -> None:
    error, second = _errors(".macro twice x\n\tmovl \\x, %eax\n\tmovl \\x, %ebx\n.endm\n"
                            "\ttwice $1\n\ttwice %ax\n", filename="m.S")
    assert (error.location.line, error.message) == (2, "operand size mismatch for 'movl'")
    assert second.location.line == 3
    assert error.location.text.strip() == "movl %ax, %eax"
    (note,) = error.notes
    assert (note.location.line, note.message) == (6, "in expansion of macro 'twice'")


@pytest.mark.parametrize("source, message", [
    (".if 1\nnop\n", "end of file inside conditional"),
    (".endif\n", ".endif without .if"),
    (".else\n", ".else without .if"),
    (".macro m\nnop\n", "missing .endm"),
    (".rept 2\nnop\n", "missing .endr"),
    (".endm\n", ".endm without a matching opening directive"),
    ('.include "no/such/file.S"\n', "cannot read 'no/such/file.S'"),
    (".macro m\nm\n.endm\nm\n", "macros nested too deeply"),
    (".macro m a:req\n.byte \\a\n.endm\nm\n", "missing value for required parameter"),
    (".rept 1 << 40\nnop\n.endr\n", "too large"),
    (".space 1 << 40\n", "larger than"),
    (".fill -1\n", "negative"),
    (".org start\nstart:\n", None),
    (".align 3\n", "not a power of 2"),
    ("movl $1, %cr9\n", "bad register name"),
    ("movl (%eax,%ebx,3), %ecx\n", "scale factor"),
    ("movl $x, %eax\n.set x, x + 1\n", "defined in terms of itself"),
    ("jmp .+1000\nloop .+1000\n", "branch target out of range"),
    ('.ascii "abc\n', "unterminated string"),
    ("/* open comment\nnop\n", "unterminated /* comment"),
    ("lock movl %eax, (%ebx)\n", "expecting lockable instruction"),
    ("rep addl %eax, %ebx\n", "after 'rep'"),
    (".section\n", "needs a section name"),
    (".popsection\n", ".popsection without .pushsection"),
    ("x = 1\nx: nop\n", "already defined"),
    (".intel_syntax\n", "not supported"),
    (".error \"stop here\"\n", "stop here"),
    ("1: jmp 2b\n", "backward reference to unknown label '2:'"),
    ("movl %eax, %ds:%ebx\n", "not allowed in an expression"),
    ("movl %eax, 4(%ebx) 5\n", "junk"),
    ("movw $0x12345, %ax\n", "does not fit in 16 bits"),
    (".code16\nmovl 0x12345, %eax\n", "does not fit in 16-bit addressing"),
])
def test_each_kind_of_error_is_located(source: str, message: str | None) -> None:
    if message is None:
        assemble(source, macros=None)  # .org forward to a label is fine
        return
    errors = _errors(source, filename="e.S")
    assert any(message in e.message for e in errors), [e.message for e in errors]
    for error in errors:
        assert error.location.filename == "e.S" or error.location.filename.endswith(".S")
        assert error.location.line >= 1 and error.location.column >= 1


def test_warnings_are_kept_on_the_program() -> None:
    program = assemble("inc (%eax)\nfadd\n", macros=None, filename="w.S")
    assert [(w.location.line, w.message) for w in program.warnings] == [
        (1, "no instruction mnemonic suffix given and no register operands; using default "
            "for 'inc'"),
        (2, "translating to 'faddp'"),
    ]

_SOURCE = """\
	.text
	.globl start
K = 4 * (1 + 2)
.macro push2 a, b=%ebx
	pushl \\a
	pushl \\b
.endm
start:	movl $K, %eax
	push2 %eax
1:	leal 8(%esp,%eax,4), %ecx
	cmpl $0x10, -4(%ebp)
	jne 1b
	.rept 2
	incl %edx
	.endr
.if K > 3
	lock; xaddl %eax, (%ecx)
.else
	nop
.endif
	call *table(,%eax,4)
	iret
	.section .fixup, "ax"
fix:	jmp start
	.previous
	.data
table:	.long start, fix, 2f
	.asciz "text; with # marks"
2:	.byte 'a, 0x7f
	.align 4
	.bss
	.space 64
"""

_PIECES = st.sampled_from([
    "%", "$", "(", ")", ",", ":", ";", ".", "#", '"', "'", "\\", "/", "*", "-", "+", "~", "!",
    "<", ">", "=", "|", "&", "^", "{", "}", "[", "]", " ", "\t", "\n", "0", "1", "9", "x", "b",
    "f", "a", "eax", "%esp", ".macro", ".endm", ".rept", ".endr", ".if", ".else", ".endif",
    ".section", ".org", ".space", ".fill", ".align", "lock", "rep", "jmp", "1b", "1f", "K",
    "start", ".include", "\\a", "\\@", ".exitm", "0x", "99999999999999999999",
])


@st.composite
def _mangled(draw) -> str:
    text = _SOURCE
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and text:
            end = min(len(text), pos + draw(st.integers(1, 12)))
            text = text[:pos] + text[end:]
        else:
            text = text[:pos] + draw(_PIECES) + text[pos:]
    return text


def test_the_unmangled_program_assembles() -> None:
    program = assemble(_SOURCE, macros=None, filename="m.S")
    assert program.symbols["K"] == 12


@settings(max_examples=300 * example_scale())
@given(_mangled())
def test_mangled_sources_give_a_program_or_located_errors(source: str) -> None:
    try:
        result = assemble(source, macros="vmi", filename="m.S")
    except AsmError as failure:
        assert failure.errors, "an AsmError carries at least one error"
        for diagnostic in failure.diagnostics:
            location = diagnostic.location
            assert location.line >= 1 and location.column >= 1
            assert re.match(r".+:\d+:\d+: (error|warning): .+", diagnostic.format())
        return
    assert isinstance(result, Program)
