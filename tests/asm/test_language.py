"""The assembler language: directives, expressions, macros, sections and layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.asm.gnu import gnu_assemble, gnu_link
from vmi.asm import AsmError, assemble
from vmi.asm.assembler import nop_padding

DATA = Path(__file__).parent / "data"


def _bytes(source: str, **kwargs) -> str:
    return assemble(source, macros=None, **kwargs).image.hex()


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "objcopy")),
                    reason="GNU as, ld or objcopy is not installed")
def test_features_sample_matches_gnu_as() -> None:
    path = DATA / "features.S"
    program = assemble(path.read_text(), macros=None, base=0x8000, filename=str(path))
    gnu = gnu_link(path.read_text(), program, DATA)
    for section in program.sections:
        assert gnu[section.name] == program.section_bytes(section.name), section.name
    assert program.symbols["included"] > program.symbols["start"]
    assert program.symbols["foo_bar"]  # built with \()


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 & 3", 3), ("2 * 3 << 1", 12), ("7 - 2 - 1", 4), ("(1 < 2)", -1), ("2 < 1", 0),
    ("5 ! 1", -1), ("-7 / 2", -3), ("-7 % 2", -1), ("~0 >> 28", -1), ("!5", 0), ("!0", 1),
    ("1 && 2", 1), ("0 || 0", 0), ("3 == 3", -1), ("3 <> 3", 0), ("0x10 | 0b1", 17),
    ("017", 15), ("'a", 97), ("'\\n", 10), ("1 << 3 + 1", 9), ("6 ^ 3", 5),
])
def test_expressions_follow_gnu_as_precedence(expression: str, value: int) -> None:
    data = bytes.fromhex(_bytes(f".long {expression}"))
    assert int.from_bytes(data, "little", signed=True) == value


def test_known_constants_take_short_forms_and_forward_references_long_ones() -> None:
    source = """
        addl $LATER, %eax
        movl LATER(%ebp), %eax
        .equ LATER, 4
        addl $LATER, %eax
        movl LATER(%ebp), %eax
    """
    assert _bytes(source) == "0504000000" "8b8504000000" "83c004" "8b4504"


def test_label_differences_are_constant_within_a_fragment() -> None:
    source = """
    a:  nop
    b:  addl $(b - a), %eax       # same fragment: imm8
        addl $(c - a), %eax       # a branch lies between: imm32
        jmp c
    c:  addl $(c - b), %eax       # still across the branch
    """
    assert _bytes(source) == "90" "83c001" "050b000000" "eb00" "050a000000"


def test_branches_relax_to_the_long_form_only_when_needed() -> None:
    near = _bytes("jmp 1f\n jne 1f\n .fill 125,1,0x90\n1: nop")
    assert near.startswith("eb7f757d")
    far = _bytes("jmp 1f\n jne 1f\n .fill 126,1,0x90\n1: nop")
    assert far.startswith("e980000000" "757e")  # jmp is 2 bytes further away than jne
    assert _bytes("1: .fill 126,1,0x90\n jmp 1b").endswith("eb80")
    assert _bytes("1: .fill 127,1,0x90\n jmp 1b").endswith("e97cffffff")


def test_numeric_local_labels() -> None:
    source = "1: jmp 1f\n1: jmp 1b\n2: jmp 2b\n jmp 1b"
    assert _bytes(source) == "eb00" "ebfe" "ebfe" "ebfa"


def test_set_redefines_and_earlier_uses_keep_the_old_value() -> None:
    assert _bytes(".set X, 1\n.byte X\n.set X, 2\n.byte X\nX = 3\n.byte X") == "010203"


def test_sections_are_laid_out_in_order_of_appearance_text_first() -> None:
    program = assemble("""
        .data
        .byte 1
        .section .rodata, "a"
        .align 16
        .byte 2
        .text
        nop
        .bss
        .space 100
        .pushsection .vmi.annotation, "a"
        .long 0, 0
        .popsection
    """, macros=None, base=0x1000)
    layout = [(s.name, s.address, s.size, s.loaded, s.nobits) for s in program.sections]
    assert layout == [
        (".text", 0x1000, 1, True, False),
        (".data", 0x1001, 1, True, False),
        (".rodata", 0x1010, 1, True, False),  # aligned to its largest .align
        (".bss", 0x1011, 100, True, True),
        (".vmi.annotation", 0x1075, 8, False, False),
    ]
    # The image ends with the last loaded progbits section; .bss is size only.
    assert program.image.hex() == "90" "01" + "00" * 14 + "02"
    assert program.end == 0x1011


def test_symbols_include_labels_and_constants_but_not_local_labels() -> None:
    program = assemble("start: nop\n.Lhidden: nop\n1: nop\nK = 5\n.globl start", macros=None,
                       base=0x200)
    assert program.symbols == {"start": 0x200, "K": 5}


def test_alignment_in_code_pads_with_the_gnu_as_nop_patterns() -> None:
    assert nop_padding(5) == bytes.fromhex("8d74260090")
    assert nop_padding(21)[:2] == bytes.fromhex("eb13")
    assert nop_padding(4, 16) == bytes.fromhex("8db40000")
    assert _bytes("nop\n.p2align 3\nnop") == "90" "8db42600000000" "90"
    assert _bytes(".data\n.byte 1\n.p2align 2\n.byte 2") == "01000000" "02"
    assert _bytes("nop\n.balign 8, 0xcc\nnop") == "90" + "cc" * 7 + "90"


def test_org_and_fill() -> None:
    assert _bytes(".byte 1\n.org 4, 0xee\n.fill 2, 2, 0x1234") == "01eeeeee34123412"
    with pytest.raises(AsmError, match="backwards"):
        assemble(".space 8\n.org 4", macros=None)


def test_code16_and_prefixes() -> None:
    assert _bytes(".code16\nmovl %eax,%ebx\nmov (%bx,%si),%ax\n.code32\nmovw %ax,%bx") == (
        "6689c3" "8b00" "6689c3")
    assert _bytes("lock; incl (%eax)\nrep movsb\ncs\nnop") == "f0ff00" "f3a4" "2e" "90"


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.S").write_text(".byte 2\n")
    (tmp_path / "outer.S").write_text('.byte 1\n.include "sub/inner.S"\n.byte 3\n')
    program = assemble((tmp_path / "outer.S").read_text(), macros=None,
                       filename=str(tmp_path / "outer.S"))
    assert program.image.hex() == "010203"


def test_incbin_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(8)))
    source = '.incbin "blob.bin"\n.incbin "blob.bin", 6\n.incbin "blob.bin", 2, 3\n'
    program = assemble(source, macros=None, filename=str(tmp_path / "p.S"))
    assert program.image.hex() == "0001020304050607" "0607" "020304"


def test_defines_are_absolute_symbols() -> None:
    program = assemble("movl $LIMIT, %eax", macros=None, defines={"LIMIT": 0x40})
    assert program.image.hex() == "b840000000"


def test_listing_has_address_bytes_and_source_text() -> None:
    program = assemble("start: movl %eax, %ebx\n nop ; nop\n", macros=None, base=0x10)
    rows = [(line.address, line.data.hex(), line.text, line.line) for line in program.listing]
    assert rows == [(0x10, "89c3", "start: movl %eax, %ebx", 1), (0x12, "90", "nop", 2),
                    (0x13, "90", "nop", 2)]
    assert "00000010  89 c3" in program.format_listing()


def test_vmi_asm_extensions() -> None:
    """Table forms GNU as has no spelling for: vmi.asm accepts them (docs/asm.md)."""
    assert _bytes("salc\nfstpnce %st(1)\nmovsww %ax,%cx") == "d6" "d9d9" "660fbfc8"


def test_end_stops_reading() -> None:
    assert _bytes("nop\n.end\nthis is not read") == "90"


def test_bss_holds_only_zeros() -> None:
    with pytest.raises(AsmError, match="nobits"):
        assemble(".bss\n.byte 1", macros=None)
    assert assemble(".bss\n.byte 0\n.space 4", macros=None).sections[1].size == 5


#: Macro arguments as GNU as 2.40 splits them: its scrubber keeps a blank only between
#: symbol characters (on i386 `-`, `*`, `%`, `(` ... count), then a blank or a comma
#: ends an argument outside parentheses. Expected values checked against `as --32`.
_SHOW = '.macro STR a b c d\n.ascii "[\\a|\\b|\\c|\\d]"\n.endm\n'
ARGUMENT_SPLITS = [
    ("x - y", "[x|-|y|]"), ("x -y", "[x|-y||]"), ("x- y", "[x-|y||]"), ("$a - b", "[$a|-|b|]"),
    ("1 + 2", "[1+2|||]"), ("1 +2, 3", "[1+2|3||]"), ("(1 + 2) 3", "[(1+2)3|||]"),
    ("x * y", "[x|*|y|]"), ("x / y", "[x/y|||]"), ("8 (%eax)", "[8|(%eax)||]"),
    ("x) y", "[x)y|||]"), ("x} y", "[x}|y||]"), ("(x, y) z", "[(x|y)z||]"),
    ('"a b" c', "[a b|c||]"), ('"x y" "z"', "[x y|z||]"), ("'a b", "[97b|||]"),
    ("'a, b", "[97|b||]"), ("x,,y", "[x||y|]"), ("x,", "[x|||]"), ("d=4 c=3", "[||3|4]"),
    ("1, d=4", "[1|||4]"), ("a, (b_end - b)", "[a|(b_end - b)||]"),
    ("%eax,4(%ebp) ,  0x10", "[%eax|4(%ebp)|0x10|]"),
]


@pytest.mark.parametrize("arguments, shown", ARGUMENT_SPLITS)
def test_macro_arguments_split_as_gnu_as_splits_them(arguments: str, shown: str) -> None:
    program = assemble(f"{_SHOW}STR {arguments}\n", macros=None)
    assert program.image.decode() == shown
    assert program.warnings == ()


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "objcopy")),
                    reason="GNU as, ld or objcopy is not installed")
def test_macro_argument_splits_match_gnu_as() -> None:
    source = _SHOW + '.macro V a, b:vararg\n.ascii "<\\a|\\b>"\n.endm\n' + "".join(
        f"STR {arguments}\n" for arguments, _shown in ARGUMENT_SPLITS
    ) + "V 1, 2 - 3 , 4\nV 1 x + y  z\n"
    source += ".irp v, 1 - 2\n.byte 0x77\n.endr\n.irp v,1+ 2,3\n.byte \\v\n.endr\n"
    program = assemble(source, macros=None)
    assert gnu_link(source, program)[".text"] == program.image
    assert program.image.endswith(b"<1|2 - 3,4><1|x+y z>www\x03\x03")


@pytest.mark.parametrize("arguments, message", [
    ("1, d=4, 5", "can't mix positional and keyword arguments"),
    ("y=1", "parameter named 'y' does not exist for macro 'STR'"),
    ("1 2 3 4 5", "too many positional arguments for macro 'STR'"),
])
def test_macro_arguments_gnu_as_rejects_are_errors(arguments: str, message: str) -> None:
    with pytest.raises(AsmError, match=message):
        assemble(f"{_SHOW}STR {arguments}\n", macros=None)


#: Invocations GNU as splits into more arguments than the macro has: `5 - 2` is three
#: arguments (`5`, `-`, `2`), so lines 4, 6 and 8 are "too many positional arguments";
#: `5-2` and `(5 - 2)` are one. Checked against `as --32`.
TOO_MANY = (".macro P a, b\n.byte \\a, \\b\n.endm\n"
            "P 1, 5 - 2\n" "P 1, 5-2\n" "P 1,5 -2\n" "P 1, (5 - 2)\n"
            "\tP msg, msg_end - msg\n" 'msg: .ascii "hi"\nmsg_end:\n')


def test_too_many_positional_arguments_is_a_located_error() -> None:
    with pytest.raises(AsmError) as failure:
        assemble(TOO_MANY, macros=None, filename="split.S")
    errors = failure.value.errors
    message = "too many positional arguments for macro 'P'"
    # located at the first argument too many
    assert [(e.location.line, e.location.column, e.message) for e in errors] == [
        (4, 8, message), (6, 7, message), (8, 17, message)]
    assert errors[0].format().splitlines() == [f"split.S:4:8: error: {message}",
                                               "P 1, 5 - 2", "       ^"]


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "objcopy")),
                    reason="GNU as, ld or objcopy is not installed")
def test_too_many_positional_arguments_matches_gnu_as() -> None:
    with pytest.raises(AsmError) as failure:
        assemble(TOO_MANY, macros=None)
    ours = {e.location.line: e.message for e in failure.value.errors}
    theirs = gnu_assemble(TOO_MANY).errors
    assert sorted(ours) == sorted(theirs) == [4, 6, 8]
    assert all(ours[line].startswith(theirs[line]) for line in ours), (ours, theirs)
    # the lines both accept give the same bytes
    accepted = "".join(line for number, line in enumerate(TOO_MANY.splitlines(True), 1)
                       if number not in ours)
    program = assemble(accepted, macros=None)
    assert gnu_link(accepted, program)[".text"] == program.image == b"\x01\x03\x01\x03hi"
    assert program.warnings == ()


#: Escapes as GNU as reads them: in strings `\a` and `\e` are the letters (`\v` is 11);
#: in character constants (its scrubber) only `\b \f \n \r \t`, so `'\0` is `'0` (48).
ESCAPES = ".ascii \"\\a\\v\\e\\q\\n\\101\\x41\"\n.byte '\\0, '\\v, '\\a, '\\n, '\\\\, '\\', 'a'\n"


def test_escapes_follow_gnu_as() -> None:
    assert _bytes(ESCAPES) == "610b65710a4141" + "3076610a5c2761"


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "objcopy")),
                    reason="GNU as, ld or objcopy is not installed")
def test_escapes_match_gnu_as() -> None:
    program = assemble(ESCAPES, macros=None)
    assert gnu_link(ESCAPES, program)[".text"] == program.image
