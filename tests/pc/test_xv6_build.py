"""``vmi xv6 build`` and ``vmi.pc.xv6.build_xv6``: MIT xv6 built from its source tree.

The real build (the session's ``xv6_build``, tests/pc/conftest.py) is checked by what
it must be: a boot sector signed 0x55AA followed by the kernel, a file system of
xv6's FSSIZE blocks, an ELF32 i386 kernel with its symbols and the stock i686 code
(``cmovCC``), and a source tree left exactly as it was. The errors a person can
cause are each one line with exit status 1, leaving their files alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.pc.conftest import require_toolchain, require_xv6_source, tree_digest
from vmi.cli import main
from vmi.commands.xv6 import format_report
from vmi.pc.xv6 import MARKER, TOOLS, XV6_FILES, Xv6Build

SECTOR = 512


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["xv6", "build", *args])


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """``result`` is a reported failure: exit status 1, nothing on stdout, one line
    on stderr that holds every fragment, and no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: vmi xv6 build: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- a small ELF32 reader (the kernel is checked without trusting the build's tools) -------
def elf_sections(data: bytes) -> dict[str, tuple[int, int, int, int, int]]:
    """Each section by name: (type, address, file offset, size, link)."""
    (_, _, _, _, _, _, shoff, _, _, _, _, shentsize, shnum,
     shstrndx) = struct.unpack_from("<16sHHIIIIIHHHHHH", data)
    headers = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]

    def name(at: int) -> str:
        end = data.index(b"\0", names_offset + at)
        return data[names_offset + at:end].decode()

    return {name(h[0]): (h[1], h[3], h[4], h[5], h[6]) for h in headers}


def elf_function_symbols(data: bytes) -> dict[str, int]:
    """The FUNC symbols of the ELF's .symtab, name to value."""
    sections = elf_sections(data)
    _, _, offset, size, link = sections[".symtab"]
    strings = list(sections.values())[link][2]
    functions = {}
    for at in range(offset, offset + size, 16):
        name, value, _, info, _, _ = struct.unpack_from("<IIIBBH", data, at)
        if info & 0xF == 2:  # STT_FUNC
            end = data.index(b"\0", strings + name)
            functions[data[strings + name:end].decode()] = value
    return functions


# -- the real build ---------------------------------------------------------------------------
def test_the_disk_image_is_the_signed_boot_sector_then_the_kernel(xv6_build: Xv6Build) -> None:
    image = xv6_build.image.read_bytes()
    bootblock = xv6_build.bootblock.read_bytes()
    kernel = xv6_build.kernel.read_bytes()
    assert image[510:512] == b"\x55\xaa"
    assert len(bootblock) == SECTOR and image[:SECTOR] == bootblock
    assert image[SECTOR:SECTOR + len(kernel)] == kernel      # bootmain reads it from sector 1
    assert len(image) % SECTOR == 0 and len(image) >= SECTOR + len(kernel)


def test_the_file_system_has_fssize_blocks(xv6_build: Xv6Build) -> None:
    param = (xv6_build.source / "param.h").read_text(encoding="ascii")
    defined = re.search(r"#define\s+FSSIZE\s+(\d+)", param)
    assert defined, "param.h defines no FSSIZE"
    fssize = int(defined.group(1))
    fs = xv6_build.fs_image.read_bytes()
    assert len(fs) == fssize * SECTOR                        # xv6's BSIZE is 512
    # mkfs wrote the superblock to block 1; its first field is the size in blocks
    assert struct.unpack_from("<I", fs, SECTOR)[0] == fssize


def test_the_kernel_is_an_elf32_i386_executable_with_its_symbols(xv6_build: Xv6Build) -> None:
    kernel = xv6_build.kernel.read_bytes()
    assert kernel[:4] == b"\x7fELF"
    assert kernel[4] == 1 and kernel[5] == 1                 # ELFCLASS32, little-endian
    e_type, e_machine = struct.unpack_from("<HH", kernel, 16)
    assert (e_type, e_machine) == (2, 3)                     # ET_EXEC, EM_386
    functions = elf_function_symbols(kernel)
    for name in ("main", "mpinit", "trap", "scheduler"):
        assert name in functions, name
    text = elf_sections(kernel)[".text"]
    assert text[1] <= functions["main"] < text[1] + text[3]  # main is code in .text


def test_the_kernel_is_stock_i686_code_with_cmov(xv6_build: Xv6Build) -> None:
    """Debian's gcc -m32 targets i686, and nothing asked for -march=i486: .text
    holds cmovCC (0F 40-4F, a P6 instruction), each confirmed in the file's bytes."""
    kernel = xv6_build.kernel.read_bytes()
    _, address, offset, size, _ = elf_sections(kernel)[".text"]
    listing = subprocess.run(["objdump", "-d", "-j", ".text", str(xv6_build.kernel)],
                             capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^\s*([0-9a-f]+):\t0f (4[0-9a-f]) [^\t]*\tcmov[a-z]+\s", listing,
                       re.MULTILINE)
    assert found, "no cmovCC in the kernel's .text"
    for where, opcode in found:
        at = int(where, 16) - address
        assert 0 <= at < size
        assert kernel[offset + at:offset + at + 2] == bytes([0x0F, int(opcode, 16)])


def test_the_build_adds_only_the_gcc12_warning_flags(xv6_build: Xv6Build) -> None:
    log = xv6_build.log.read_text(encoding="utf-8")
    compile_mp = next(line for line in log.splitlines()
                      if line.startswith("gcc ") and " -c -o mp.o mp.c" in line)
    assert "-Werror " in compile_mp and "-m32" in compile_mp and "-O2" in compile_mp
    assert "-Wno-error=array-bounds -Wno-error=infinite-recursion" in compile_mp
    assert "-march" not in log
    # xv6's Makefile is the source's, byte for byte; the addition is in the wrapper
    assert ((xv6_build.build_dir / "Makefile").read_bytes()
            == (xv6_build.source / "Makefile").read_bytes())
    assert "include Makefile" in (xv6_build.build_dir / "vmi-xv6.mk").read_text()


def test_the_source_tree_is_unchanged(xv6_built: tuple[Xv6Build, str]) -> None:
    build, before = xv6_built
    assert tree_digest(build.source) == before


def test_the_summary_says_each_file_its_size_and_how_to_boot(xv6_build: Xv6Build) -> None:
    lines = format_report(xv6_build.as_dict())
    for line, (name, path) in zip(lines, xv6_build.files().items(), strict=False):
        size = path.stat().st_size
        assert line.split()[:3] == [name, f"{size:,}", "bytes"] and line.endswith(str(path))
    assert lines[-1] == (f"boot it: python -m vmi boot --disk {xv6_build.image} "
                         f"--disk {xv6_build.fs_image}")


def test_the_command_builds_and_reports_json(tmp_path: Path) -> None:
    source = require_xv6_source()
    require_toolchain()
    output = tmp_path / "made" / "xv6"
    result = invoke(str(source), "-o", str(output), "--jobs", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["files"]) == {"xv6.img", "fs.img", "kernel", "bootblock"}
    for info in report["files"].values():
        assert Path(info["path"]).parent == output
        assert Path(info["path"]).stat().st_size == info["bytes"]
    assert Path(report["files"]["xv6.img"]["path"]).read_bytes()[510:512] == b"\x55\xaa"
    assert report["build"] == str(output / "build") and Path(report["log"]).is_file()
    assert report["boot"].startswith("python -m vmi boot --disk ")


# -- what a person can get wrong ---------------------------------------------------------------
def fake_xv6_tree(root: Path) -> Path:
    """A directory that passes the tree check (the files are there, empty)."""
    root.mkdir(parents=True)
    for name in XV6_FILES:
        (root / name).write_text("")
    return root


def tools_without(directory: Path, *missing: str) -> Path:
    """A PATH directory holding links to the host's build tools but ``missing``."""
    require_toolchain()
    directory.mkdir()
    for tool, _ in TOOLS:
        if tool not in missing:
            (directory / tool).symlink_to(shutil.which(tool) or tool)
    return directory


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(invoke(str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")),
                          f"{tmp_path / 'nowhere'}: no such directory")
    assert not (tmp_path / "out").exists()


def test_a_tree_that_is_not_xv6_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Makefile").write_text("all:\n")
    assert_one_line_error(invoke(str(tmp_path / "src"), "-o", str(tmp_path / "out")),
                          "not an xv6 (x86) source tree: it has no bootasm.S")
    (tmp_path / "src" / "Makefile").unlink()
    (tmp_path / "src" / "README").write_text("hello\n")
    assert_one_line_error(invoke(str(tmp_path / "src"), "-o", str(tmp_path / "out")),
                          "it has no Makefile")
    assert_one_line_error(invoke(str(tmp_path / "src" / "README"), "-o", str(tmp_path / "o")),
                          "README: not a directory")
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    (tmp_path / "out").write_text("mine\n")
    assert_one_line_error(invoke(str(source), "-o", str(tmp_path / "out")),
                          f"-o {tmp_path / 'out'}: exists and is not a directory")
    assert (tmp_path / "out").read_text() == "mine\n"


def test_a_directory_of_other_files_is_refused_without_force(tmp_path: Path) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine\n")
    assert_one_line_error(invoke(str(source), "-o", str(output)),
                          "not empty and holds no earlier xv6 build (it has notes.txt)",
                          "--force")
    assert sorted(os.listdir(output)) == ["notes.txt"]
    assert (output / "notes.txt").read_text() == "mine\n"


def test_an_output_in_the_source_or_a_source_in_the_build_tree_is_refused(
        tmp_path: Path) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    digest = tree_digest(source)
    assert_one_line_error(invoke(str(source), "-o", str(source / "out")),
                          "inside the source tree")
    assert_one_line_error(invoke(str(source), "-o", str(source)), "inside the source tree")
    assert tree_digest(source) == digest
    inner = fake_xv6_tree(tmp_path / "out" / "build" / "xv6")
    assert_one_line_error(invoke(str(inner), "-o", str(tmp_path / "out")),
                          "which a build replaces")
    assert sorted(os.listdir(inner)) == sorted(XV6_FILES)


@pytest.mark.parametrize("missing", ["gcc", "perl", "objcopy"])
def test_a_missing_tool_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 missing: str) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    monkeypatch.setenv("PATH", str(tools_without(tmp_path / "bin", missing)))
    assert_one_line_error(invoke(str(source), "-o", str(tmp_path / "out")),
                          f"{missing} not found on PATH (install ")
    assert not (tmp_path / "out").exists()


def test_an_empty_path_names_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert_one_line_error(invoke(str(source), "-o", str(tmp_path / "out")),
                          "gcc not found on PATH (install gcc; ")


def test_a_gcc_without_m32_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = fake_xv6_tree(tmp_path / "src")
    tools = tools_without(tmp_path / "bin", "gcc")
    # a gcc that compiles, but not for -m32 (as an x86-64 gcc without multilib)
    (tools / "gcc").write_text(
        "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = -m32 ]; then\n"
        "  echo \"gcc: error: unrecognized command-line option '-m32'\" >&2; exit 1\n"
        f"fi; done\nexec {shutil.which('gcc')} \"$@\"\n")
    (tools / "gcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    assert_one_line_error(invoke(str(source), "-o", str(tmp_path / "out")),
                          "gcc cannot compile 32-bit code",
                          "unrecognized command-line option '-m32'", "gcc-multilib")


def test_zero_jobs_is_bad_usage(tmp_path: Path) -> None:
    result = invoke(str(tmp_path), "-o", str(tmp_path / "out"), "--jobs", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_failing_make_shows_its_error_and_keeps_the_earlier_build(
        tmp_path: Path, xv6_build: Xv6Build) -> None:
    """A tree with a syntax error planted in mp.c, built into a copy of the session's
    build: make's last lines, then one error line naming the compiler's error and
    the log; the earlier images stay, the broken source is not written."""
    broken = tmp_path / "broken"
    shutil.copytree(xv6_build.source, broken, ignore=shutil.ignore_patterns(".git"))
    for directory, _, names in os.walk(broken):
        os.chmod(directory, 0o755)
        for name in names:
            os.chmod(os.path.join(directory, name), 0o644 | (0o111 * name.endswith(".pl")))
    with open(broken / "mp.c", "a", encoding="ascii") as file:
        file.write("int planted(void) { return }\n")
    digest = tree_digest(broken)
    output = tmp_path / "out"
    shutil.copytree(xv6_build.output, output, ignore=shutil.ignore_patterns("build"))
    assert (output / MARKER).is_file()
    (output / "notes.txt").write_text("mine\n")              # the marker makes --force needless
    image = (output / "xv6.img").read_bytes()
    result = invoke(str(broken), "-o", str(output), "--jobs", "2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("Error: vmi xv6 build: make xv6.img fs.img failed in ")
    assert "mp.c:" in last and "error: expected expression" in last
    assert last.endswith(f"; the full log is {output / 'build.log'}")
    assert any(line.startswith("  make: ***") for line in lines[:-1])
    assert "planted" in (output / "build.log").read_text(encoding="utf-8")
    assert (output / "xv6.img").read_bytes() == image
    assert (output / "notes.txt").read_text() == "mine\n"
    assert tree_digest(broken) == digest


def test_force_builds_into_a_directory_of_other_files_and_keeps_them(
        tmp_path: Path) -> None:
    """--force passes the check; the user's own file stays (a make failure, planted,
    keeps this test cheap: the check is before make)."""
    source = require_xv6_source()
    require_toolchain()
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    os.chmod(broken, 0o755)
    os.chmod(broken / "main.c", 0o644)
    (broken / "main.c").write_text("#error planted\n")
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine\n")
    result = invoke(str(broken), "-o", str(output), "--force")
    assert result.exit_code == 1
    assert "make xv6.img fs.img failed" in result.stderr and "#error planted" in result.stderr
    assert (output / "notes.txt").read_text() == "mine\n"
    assert (output / MARKER).is_file() and (output / "build" / "main.c").is_file()
