"""``vmi disasm``: the listing's shape, its options, and one-line errors for bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmi.cli import main

#: ``address:<TAB>bytes padded to 21 columns<TAB>text``, objdump's instruction line.
LINE = re.compile(r"^ *([0-9a-f]+):\t((?:[0-9a-f]{2} )+) *\t(.+)$")


def run(*args: str):
    return CliRunner().invoke(main, ["disasm", *args])


def parse(output: str) -> list[tuple[int, str, str]]:
    """(address, bytes, text) of each instruction line; continuation lines are skipped."""
    rows = []
    for line in output.splitlines():
        match = LINE.match(line)
        assert match or re.match(r"^ *[0-9a-f]+:\t(?:[0-9a-f]{2} )+$", line), line
        if match:
            rows.append((int(match[1], 16), match[2].strip(), match[3]))
    return rows


def test_hex_listing_shape() -> None:
    result = run("--hex", "55 89e5 83ec10 c3")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "   0:\t55                   \tpush   %ebp\n"
        "   1:\t89 e5                \tmov    %esp,%ebp\n"
        "   3:\t83 ec 10             \tsub    $0x10,%esp\n"
        "   6:\tc3                   \tret\n"
    )


def test_long_instruction_wraps_bytes_like_objdump() -> None:
    result = run("--hex", "c7 84 98 78 56 34 12 78 56 34 12")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "   0:\tc7 84 98 78 56 34 12 \tmovl   $0x12345678,0x12345678(%eax,%ebx,4)",
        "   7:\t78 56 34 12 ",
    ]


def test_base_moves_addresses_and_branch_targets() -> None:
    result = run("--hex", "90 ebfd e8f8ffffff", "--base", "0x401000")
    assert result.exit_code == 0, result.output
    assert parse(result.output) == [
        (0x401000, "90", "nop"),
        (0x401001, "eb fd", "jmp    0x401000"),
        (0x401003, "e8 f8 ff ff ff", "call   0x401000"),
    ]
    assert result.output.startswith("  401000:\t")  # objdump's address column width


def test_bits_16() -> None:
    result = run("--bits", "16", "--base", "0x7c00", "--hex", "b8 00 10 8e d8 cd 10 66 50")
    assert result.exit_code == 0, result.output
    assert [text for _, _, text in parse(result.output)] == [
        "mov    $0x1000,%ax", "mov    %ax,%ds", "int    $0x10", "push   %eax",
    ]


def test_bad_and_truncated_bytes_are_listed_not_fatal() -> None:
    """As objdump: (bad) covers the opcode byte, a cut-off instruction one .byte."""
    result = run("--hex", "c6 08 90 8b")
    assert result.exit_code == 0, result.output
    assert parse(result.output) == [
        (0, "c6", "(bad)"), (1, "08", ".byte 0x8"), (2, "90", "nop"), (3, "8b", ".byte 0x8b"),
    ]
    assert parse(run("--hex", "f0 90 66").output) == [(0, "f0 90", "lock nop"), (2, "66", "data16")]


def test_file_argument(tmp_path: Path) -> None:
    path = tmp_path / "code.bin"
    path.write_bytes(bytes.fromhex("31c0 40 cd80"))
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert [text for _, _, text in parse(result.output)] == [
        "xor    %eax,%eax", "inc    %eax", "int    $0x80",
    ]


def test_empty_file_lists_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    result = run(str(path))
    assert result.exit_code == 0 and result.output == ""


#: Code whose whole objdump listing the CLI must reproduce: long instructions
#: (continuation lines), (bad) with and without prefixes, a LOCK the CPU would
#: reject, x87, and a lone prefix cut off by the end of the data.
OBJDUMP_BLOBS = {
    "32": "55 89e5 83ec10 c784987856341278563412 8b45fc f3a5 f0ff01 e8e2ffffff 75e0"
          " ea001000001000 c3 c608 0f0b 8d742600 668b0424 26a178563412 0fb7c0 cf f090"
          " 66fed0e0 263e8b00 d9c1 dce9 9b 3eff10 f2c3 f0",
    "16": "b80010 8ed8 cd10 6650 8b46fc 678b0424 e9fdff ebf0 e80000 66e9f0ffffff f3a4 66cf"
          " 0f01e0 c608 f0",
}
#: Where the blobs sit: the 16-bit one straddles 64 KiB so that branch targets
#: wrap within the segment as objdump wraps them.
OBJDUMP_BASES = {"32": "0x1000", "16": "0xffe8"}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="GNU objdump is not installed")
@pytest.mark.parametrize("bits", ["32", "16"])
def test_file_listing_equals_objdump(tmp_path: Path, bits: str) -> None:
    """The whole listing, byte columns and continuation lines included, is objdump's."""
    path = tmp_path / "code.bin"
    path.write_bytes(bytes.fromhex(OBJDUMP_BLOBS[bits]))
    machine = "i386" if bits == "32" else "i8086"
    objdump = subprocess.run(
        ["objdump", "-D", "-b", "binary", "-m", machine, f"--adjust-vma={OBJDUMP_BASES[bits]}",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    expected = objdump.split(">:\n", 1)[1]
    result = run(str(path), "--bits", bits, "--base", OBJDUMP_BASES[bits])
    assert result.exit_code == 0, result.output
    assert result.output == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hex", "90 zz"], "--hex: 'z' at position 3 is not a hex digit"),
        (["--hex", "909"], "--hex: odd number of hex digits"),
        (["--hex", "  "], "--hex: no bytes given"),
        (["--hex", "90", "--base", "sixteen"], "--base: 'sixteen' is not a number"),
        (["--hex", "90", "--base", "0x100000000"], "--base: '0x100000000' is not a 32-bit"),
        (["/no/such/file.bin"], "/no/such/file.bin: No such file or directory"),
        ([], "give either a FILE or --hex BYTES"),
        (["some.bin", "--hex", "90"], "give either a FILE or --hex BYTES"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0]


def test_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = run(str(tmp_path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tmp_path}: Is a directory"]


def test_module_entry_point() -> None:
    """``python -m vmi disasm`` works as a process, with errors on stderr and no traceback."""
    ok = subprocess.run(
        [sys.executable, "-m", "vmi", "disasm", "--hex", "c3"],
        capture_output=True, text=True, check=False,
    )
    assert ok.returncode == 0 and ok.stdout == "   0:\tc3                   \tret\n"
    bad = subprocess.run(
        [sys.executable, "-m", "vmi", "disasm", "--hex", "q"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""  # bad usage
    assert bad.stderr.strip().splitlines() == ["Error: --hex: 'q' at position 1 is not a hex digit"]
