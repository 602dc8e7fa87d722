"""``vmi boot`` as a user meets it: bad disks, a guest that triple-faults or runs an
instruction the model does not implement, read-only images with --write-disks:
each one line naming where and why, a non-zero exit, no traceback, the user's
files unchanged. And the good path: output, --until, --type, --json, the summary."""

from __future__ import annotations

import json
import stat

from click.testing import CliRunner

from tests.pc.test_board import boot_sector, disk_file
from vmi.cli import main


def run(*args: str):
    result = CliRunner().invoke(main, ["boot", *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result


def one_error_line(result, *fragments: str) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error")
             or line.startswith("vmi boot")]
    error = [line for line in lines if "Error" in line]
    assert len(error) == 1, result.output
    for fragment in fragments:
        assert fragment in error[0], error[0]
    return error[0]


def test_a_missing_disk(tmp_path):
    one_error_line(run("--disk", str(tmp_path / "none.img")), "none.img",
                   "cannot read the disk image")


def test_an_empty_disk(tmp_path):
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    one_error_line(run("--disk", str(path)), "empty.img", "empty")


def test_an_odd_sized_disk(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(1000))
    one_error_line(run("--disk", str(path)), "odd.img", "1000 bytes", "512-byte sectors")


def test_a_disk_without_the_boot_signature(tmp_path):
    path = tmp_path / "plain.img"
    path.write_bytes(bytes(512 * 4))
    before = path.read_bytes()
    one_error_line(run("--disk", str(path)), "plain.img", "0x55AA")
    assert path.read_bytes() == before


def test_no_disk_is_bad_usage():
    result = run()
    assert result.exit_code == 2 and "--disk" in result.output


def test_a_read_only_image_with_write_disks(tmp_path):
    path = disk_file(tmp_path, boot_sector("hlt"))
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        one_error_line(run("--disk", str(path), "--write-disks", "--memory", "4M"),
                       "disk.img", "read-only")
    finally:
        path.chmod(0o644)


def test_a_guest_that_triple_faults(tmp_path):
    source = "lidt zero\nint $3\nzero: .word 0\n.long 0\n"
    path = disk_file(tmp_path, boot_sector(source))
    line = one_error_line(run("--disk", str(path), "--memory", "4M", "--steps", "1000"),
                          "the machine stopped", "shut down", "#DF")
    assert "cpu0" in line


def test_a_guest_running_an_instruction_the_model_does_not_implement(tmp_path):
    source = "nop\n.byte 0x0f, 0xae, 0xf8\nhlt\n"  # sfence, an SSE instruction
    path = disk_file(tmp_path, boot_sector(source))
    line = one_error_line(run("--disk", str(path), "--memory", "4M", "--steps", "1000"),
                          "does not implement", "0000:00007c01", "0f ae f8")
    assert "undefined opcode" in line


def test_bad_memory_size_is_bad_usage(tmp_path):
    path = disk_file(tmp_path, boot_sector("hlt"))
    result = run("--disk", str(path), "--memory", "lots")
    assert result.exit_code == 2 and "--memory" in result.output


HELLO = """
    movw $0x3F8, %dx
    movw $msg, %si
1:  movb (%si), %al
    testb %al, %al
    jz 2f
    outb %al, %dx
    incw %si
    jmp 1b
2:  hlt
msg: .asciz "hello from the boot sector\\n"
"""


def test_the_guests_serial_output_and_the_summary(tmp_path):
    path = disk_file(tmp_path, boot_sector(HELLO))
    result = run("--disk", str(path), "--memory", "4M")
    assert result.exit_code == 0, result.output
    assert "hello from the boot sector" in result.output
    assert "vmi boot: stopped: every CPU halted" in result.output
    assert "instructions" in result.output and "disk 0" in result.output


def test_json_summary(tmp_path):
    path = disk_file(tmp_path, boot_sector(HELLO))
    result = run("--disk", str(path), "--memory", "4M", "--json")
    summary = json.loads(result.output)
    assert summary["output"] == "hello from the boot sector\n"
    assert summary["stopped"] == "halted" and summary["instructions"] > 10


ECHO = """
    movw $0x3F8, %dx
1:  addw $5, %dx
2:  inb %dx, %al            # LSR: wait for data ready
    testb $1, %al
    jz 2b
    subw $5, %dx
    inb %dx, %al
    cmpb $'q', %al
    je 3f
    incb %al                # echo the next letter
    outb %al, %dx
    jmp 1b
3:  hlt
"""


def test_typed_input_reaches_the_guest_and_until_stops(tmp_path):
    path = disk_file(tmp_path, boot_sector(ECHO))
    result = run("--disk", str(path), "--memory", "4M", "--type", "HAL\\n", "--json",
                 "--steps", "20000")
    summary = json.loads(result.output)
    assert summary["output"].startswith("IBM")
    path_in = tmp_path / "typed.txt"
    path_in.write_bytes(b"abcq")
    result = run("--disk", str(path), "--memory", "4M", "--input", str(path_in), "--json",
                 "--steps", "20000")
    assert json.loads(result.output)["output"] == "bcd"


PROMPTED = """
    movw $0x3F8, %dx
0:  movb $'>', %al          # the prompt
    outb %al, %dx
1:  addw $5, %dx
2:  inb %dx, %al            # LSR: wait for data ready
    testb $1, %al
    jz 2b
    subw $5, %dx
    inb %dx, %al
    cmpb $10, %al           # end of the line: prompt again
    je 0b
    incb %al
    outb %al, %dx
    jmp 1b
"""


def test_until_with_type_types_a_line_at_each_prompt(tmp_path):
    path = disk_file(tmp_path, boot_sector(PROMPTED))
    result = run("--disk", str(path), "--memory", "4M", "--until", ">",
                 "--type", "ab\\ncd\\n", "--json")
    summary = json.loads(result.output)
    assert summary["output"] == ">bc>de>"
    assert summary["stopped"] == "until"


def test_the_image_files_are_unchanged_without_write_disks(tmp_path):
    from tests.pc.test_board import IDE_WRITE_READ

    path = disk_file(tmp_path, boot_sector(IDE_WRITE_READ))
    before = path.read_bytes()
    result = run("--disk", str(path), "--memory", "4M", "--json")
    summary = json.loads(result.output)
    assert summary["disks"][0]["writes"] == 1
    assert path.read_bytes() == before


def test_symbols_name_the_place_the_machine_stopped(tmp_path):
    from vmi.asm import assemble
    from vmi.asm.elf import program_sections, write_elf

    source = ".code16\nnop\nbroken:\n.byte 0x0f, 0xae, 0xf8\nhlt\n"
    program = assemble(source, base=0x7C00)
    write_elf(tmp_path / "boot.elf", program_sections(program), program.symbols, 0x7C00)
    path = disk_file(tmp_path, boot_sector(source[len(".code16\n"):]))
    line = one_error_line(run("--disk", str(path), "--memory", "4M", "--steps", "100",
                              "--symbols", str(tmp_path / "boot.elf")), "does not implement")
    assert "<broken>" in line


def test_symbols_that_are_not_an_elf_file(tmp_path):
    path = disk_file(tmp_path, boot_sector("hlt"))
    (tmp_path / "text.elf").write_text("hello")
    one_error_line(run("--disk", str(path), "--symbols", str(tmp_path / "text.elf")),
                   "text.elf", "not an ELF file")


def test_an_interactive_session_types_into_the_guest_and_ctrl_bracket_leaves(tmp_path):
    """On a terminal (a pty here) keys go to the guest and Ctrl-] ends the session."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    path = disk_file(tmp_path, boot_sector(PROMPTED))
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "vmi", "boot", "--disk", str(path), "--memory", "4M"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""

    def read_until(text: bytes, seconds: float = 60) -> None:
        nonlocal out
        deadline = time.monotonic() + seconds
        while text not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                out += os.read(process.stdout.fileno(), 1024)
        assert text in out, out

    try:
        read_until(b">")
        os.write(master, b"hal")
        read_until(b"ibm")
        os.write(master, b"\x1d")  # Ctrl-]
        status = process.wait(timeout=60)
    finally:
        process.kill()
        os.close(master)
    error = process.stderr.read().decode()
    assert status == 0, error
    assert "Ctrl-] leaves" in error and "stopped: Ctrl-] pressed" in error
    assert "Traceback" not in error
