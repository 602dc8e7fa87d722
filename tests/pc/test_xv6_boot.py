"""MIT xv6, built from its own source tree by ``vmi xv6 build`` (stock i686 code,
cmovCC included), boots on the PC board from its disk to its shell, on one CPU
and on two, and its commands give the outputs its file system says they should:
a real kernel nobody here wrote, driving every device xv6 uses."""

from __future__ import annotations

import pytest

from vmi.asm.elf import read_symbols
from vmi.pc.session import boot_pc

#: Machine steps allowed to reach the first prompt (1 CPU needs about 73 M).
BOOT_STEPS = 200_000_000
COMMAND_STEPS = 60_000_000
PROMPT = "$ "


def boot_to_prompt(build, cpus: int):
    session = boot_pc([build.image, build.fs_image], cpus=cpus)
    session.load_symbols(read_symbols(build.kernel))
    stop = session.run(until=PROMPT, steps=BOOT_STEPS)
    assert stop.reason == "until", (stop, session.text()[-500:])
    return session


def command(session, line: str) -> str:
    """Type ``line``, run to the next prompt, return what it printed (echo removed)."""
    start = len(session.output)
    session.type(line + "\n")
    stop = session.run(until=PROMPT, steps=COMMAND_STEPS)
    assert stop.reason == "until", (stop, session.text()[start:][-500:])
    out = session.text()[start:]
    assert out.startswith(line + "\n")  # the console echoes what is typed
    assert out.endswith(PROMPT)
    return out[len(line) + 1:-len(PROMPT)]


@pytest.fixture(scope="module")
def xv6_one_cpu(xv6_build):
    return boot_to_prompt(xv6_build, cpus=1)


def ls_line(name: str, kind: int, inode: int, size: int) -> str:
    """A line of xv6's ls (ls.c: ``printf("%s %d %d %d\\n", fmtname(path), ...)``,
    the name padded to DIRSIZ = 14)."""
    return f"{name:<14} {kind} {inode} {size}"


def test_xv6_boots_to_its_shell_on_one_cpu(xv6_one_cpu):
    text = xv6_one_cpu.text()
    assert "cpu0: starting 0" in text
    assert "init: starting sh" in text
    summary = xv6_one_cpu.summary()
    assert summary["disks"][0]["reads"] > 0 and summary["disks"][1]["reads"] > 0
    assert summary["interrupts"] > 0  # the disk's and the timer's, through the IOAPIC


def test_echo(xv6_one_cpu):
    assert command(xv6_one_cpu, "echo hi") == "hi\n"


def test_cat_prints_the_readme_from_the_file_system(xv6_one_cpu, xv6_build):
    readme = (xv6_build.source / "README").read_text()
    assert command(xv6_one_cpu, "cat README") == readme


def test_ls_lists_the_root_directory(xv6_one_cpu, xv6_build):
    lines = command(xv6_one_cpu, "ls").splitlines()
    size = (xv6_build.source / "README").stat().st_size
    assert lines[0].split()[:2] == [".", "1"] and lines[1].split()[:2] == ["..", "1"]
    assert ls_line("README", 2, 2, size) in lines
    names = {line.split()[0] for line in lines}
    assert {"cat", "echo", "ls", "mkdir", "sh", "usertests"} <= names


def test_mkdir_makes_a_directory_ls_then_shows(xv6_one_cpu):
    assert command(xv6_one_cpu, "mkdir d") == ""
    entries = {line.split()[0]: line.split()[1:] for line in
               command(xv6_one_cpu, "ls").splitlines()}
    assert entries["d"][0] == "1"  # T_DIR
    assert command(xv6_one_cpu, "ls d").splitlines()[0].split()[:2] == [".", "1"]


def test_xv6_boots_on_two_cpus_and_the_ap_reports(xv6_build):
    session = boot_to_prompt(xv6_build, cpus=2)
    text = session.text()
    assert "cpu1: starting 1" in text and "cpu0: starting 0" in text
    assert session.summary()["started_cpus"] == 2
    assert command(session, "echo hi") == "hi\n"


@pytest.mark.slow
def test_usertests_pass(xv6_build):
    session = boot_to_prompt(xv6_build, cpus=1)
    session.type("usertests\n")
    stop = session.run(until="ALL TESTS PASSED", steps=40_000_000_000)
    assert stop.reason == "until", (stop, session.text()[-2000:])
