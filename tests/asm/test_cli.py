"""``vmi asm``: files in, images out, listings, macro sets, and located errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from vmi.cli import main

SOURCE = """\
	.text
start:	movl $1, %eax
	CLI
	IRET
	.data
value:	.long start
"""


def run(*args: str):
    return CliRunner().invoke(main, ["asm", *args])


def test_assembles_a_file_next_to_it_by_default(tmp_path: Path) -> None:
    source = tmp_path / "prog.S"
    source.write_text(SOURCE)
    result = run(str(source))
    assert result.exit_code == 0, result.output
    image = (tmp_path / "prog.bin").read_bytes()
    assert image.hex() == "b801000000" "fa" "cf" "00000000"
    assert "prog.bin: 11 bytes at 0x0" in result.output


def test_output_base_and_defines(tmp_path: Path) -> None:
    source = tmp_path / "prog.S"
    source.write_text("movl $LIMIT, %eax\nhere: .long here\n")
    out = tmp_path / "out" / "image.img"
    out.parent.mkdir()
    result = run(str(source), "-o", str(out), "--base", "0x100000", "-D", "LIMIT=0x40")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().hex() == "b840000000" "05001000"


def test_listing_shows_the_padded_vmi_site(tmp_path: Path) -> None:
    source = tmp_path / "prog.S"
    source.write_text(SOURCE)
    result = run(str(source), "--macros", "vmi", "--listing", "--base", "0x1000")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("00001005") and line.endswith("CLI") for line in lines)
    assert any("fa" in line and "{nooptimize} cli" in line for line in lines)
    assert any("66 66 66" in line and ".fill" in line for line in lines)
    assert "2 VMI annotations" in result.output
    assert ".vmi.annotation" in result.output and "(not loaded)" in result.output
    image = (tmp_path / "prog.bin").read_bytes()
    assert image[5:15].hex() == "fa66666690" "cf66666690"


def test_macro_set_none_and_naive(tmp_path: Path) -> None:
    source = tmp_path / "prog.S"
    source.write_text("IRET\n")
    assert run(str(source), "--macros", "none").exit_code == 0  # IRET is then iret
    assert (tmp_path / "prog.bin").read_bytes().hex() == "cf"
    result = run(str(source), "--macros", "naive")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prog.bin").read_bytes()[-2:].hex() == "58cf"


def test_errors_are_located_all_reported_and_exit_1(tmp_path: Path) -> None:
    source = tmp_path / "bad.S"
    source.write_text("\tnop\n\tfrob %eax\n\tjmp nowhere\n\t.byte 300\n")
    result = run(str(source))
    assert result.exit_code == 1
    err = result.stderr
    assert f"{source}:2:2: error: unknown instruction 'frob'\n\tfrob %eax\n\t^" in err
    assert f"{source}:4:8: error: value 0x12c does not fit in 8 bits" in err
    assert f"{source}:3:6: error: undefined symbol 'nowhere'" in err
    assert "3 errors" in err
    assert "Traceback" not in result.output + err
    assert not (tmp_path / "bad.bin").exists()


def test_warnings_go_to_stderr_and_do_not_fail(tmp_path: Path) -> None:
    source = tmp_path / "w.S"
    source.write_text("inc (%eax)\n")
    result = run(str(source))
    assert result.exit_code == 0
    assert "warning: no instruction mnemonic suffix" in result.stderr


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    missing = run(str(tmp_path / "missing.S"))
    assert missing.exit_code == 1 and "missing.S" in missing.stderr
    source = tmp_path / "p.S"
    source.write_text("nop\n")
    assert run(str(source), "--base", "lots").exit_code == 2  # bad usage
    assert run(str(source), "-D", "NOVALUE").exit_code == 2
    assert run(str(source), "--macros", "other").exit_code == 2


def test_python_dash_m_vmi_asm(tmp_path: Path) -> None:
    source = tmp_path / "p.S"
    source.write_text("bogus\n")
    done = subprocess.run([sys.executable, "-m", "vmi", "asm", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "p.S:1:1: error: unknown instruction 'bogus'" in done.stderr
    assert "Traceback" not in done.stderr
