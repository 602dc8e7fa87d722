"""vmi's own patch to xv6 (``vmi xv6 build --macros native|vmi|naive``; issue 20):
the seed's hook sites in a kernel this project did not write.

Shown here: the patch is applied to the build's copy only (the source tree's digest
is unchanged); the ``vmi`` kernel holds one 8-byte record per hook site in
``.vmi.annotation``, and every site's bytes are what vmi's own patcher expects
(and it patches them all); ``native`` and ``vmi`` kernels boot natively to xv6's
shell and print exactly what stock xv6 prints, on 1 and 2 CPUs; the ROM probe
finds a planted ROM by the 2006 protocol and calls its Init on every CPU; the
``naive`` kernel, which has no native path, stops natively at its first EFLAGS
read; and the errors a person can cause are one line, with nothing written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.pc.conftest import require_toolchain, require_xv6_source, tree_digest
from tests.pc.test_xv6_boot import boot_to_prompt, command
from tests.pc.test_xv6_build import assert_one_line_error, elf_sections
from vmi.asm.elf import read_symbols
from vmi.cli import main
from vmi.commands.xv6 import format_report
from vmi.hypervisor import layout
from vmi.hypervisor.patcher import expected_before, patch_sites, translation
from vmi.pc.session import boot_pc
from vmi.pc.xv6 import MARKER, Xv6BuildError, annotations, build_xv6, site_counts
from vmi.pc.xv6patch import MACRO_SETS, Xv6PatchError, edits, plan

KERNBASE = 0x80000000
COMMANDS = ("ls", "echo hi", "cat README")
CALLS = {"cli": layout.CALL_DISABLE_INTERRUPTS, "sti": layout.CALL_ENABLE_INTERRUPTS,
         "pushf": layout.CALL_GET_INTERRUPT_MASK, "iret": layout.CALL_IRET}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["xv6", "build", *args])


def kernel_bytes(kernel: Path) -> tuple[bytes, int]:
    """The kernel's .text and its address, read by the build tests' own ELF reader."""
    data = kernel.read_bytes()
    _, address, offset, size, _ = elf_sections(data)[".text"]
    return data[offset:offset + size], address


def function_of(symbols: dict[str, int], address: int) -> str:
    """The symbol at or below ``address`` (the function a site is in)."""
    return max(((value, name) for name, value in symbols.items()
                if value <= address and not name.startswith("__")), default=(0, "?"))[1]


def read32(session, linear: int) -> int:
    memory = session.machine.memory
    return int.from_bytes(bytes(memory.read8(linear - KERNBASE + i) for i in range(4)),
                          "little")


# -- the patch itself, against the source (no build) ------------------------------------
def test_the_patch_fits_the_source_and_changes_only_its_files() -> None:
    source = require_xv6_source()
    assert plan(source, "stock") == {}
    for macros in ("native", "vmi", "naive"):
        texts = plan(source, macros)
        assert set(texts) == {"x86.h", "trapasm.S", "main.c", "kernel.ld", "vmi.h",
                              "vmi-hooks.S"}
        for edit in edits():  # each edit made once, the rest of the file as it was
            original = (source / edit.path).read_text()
            assert texts[edit.path].count(edit.after) == 1
            assert edit.before not in texts[edit.path] or edit.before in edit.after
            assert len(texts[edit.path]) > len(original) - len(edit.before)
    assert "IRET" in plan(source, "vmi")["trapasm.S"].splitlines()[-1]
    with pytest.raises(ValueError, match="unknown macro set"):
        plan(source, "vmi-split")


def planted_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    source = require_xv6_source()
    copy = tmp_path / "xv6-copy"
    shutil.copytree(source, copy)
    path = copy / file
    path.chmod(0o644)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return copy


def test_a_tree_the_patch_does_not_fit_is_refused_naming_the_file(tmp_path: Path) -> None:
    copy = planted_copy(tmp_path, "trapasm.S", "  iret\n", "  iretl  # changed\n")
    before = tree_digest(copy)
    output = tmp_path / "out"
    result = invoke(str(copy), "--macros", "vmi", "-o", str(output))
    line = assert_one_line_error(result, f"{copy / 'trapasm.S'}: does not hold",
                                 "--macros vmi", "iret")
    assert "eeb7b415" in line
    assert not output.exists() and tree_digest(copy) == before
    # the stock build does not apply the patch, so it does not mind
    assert plan(copy, "stock") == {}


def test_text_found_twice_is_refused_too(tmp_path: Path) -> None:
    copy = planted_copy(tmp_path, "x86.h", '  asm volatile("sti");\n',
                        '  asm volatile("sti");\n}\nstatic inline void\nsti2(void)\n{\n'
                        '  asm volatile("sti");\n')
    with pytest.raises(Xv6PatchError, match=r"x86\.h: holds 2 times"):
        plan(copy, "native")
    with pytest.raises(Xv6BuildError, match=r"x86\.h: holds 2 times"):
        build_xv6(copy, tmp_path / "out", macros="native")
    assert not (tmp_path / "out").exists()


def test_an_unknown_macro_set_is_a_usage_error(tmp_path: Path) -> None:
    source = require_xv6_source()
    result = invoke(str(source), "--macros", "vmi-split", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--macros'" in result.stderr
    assert all(choice in result.stderr for choice in MACRO_SETS)
    assert not (tmp_path / "out").exists()
    with pytest.raises(Xv6BuildError, match="--macros vmi-split: not a macro set"):
        build_xv6(source, tmp_path / "out", macros="vmi-split")
    assert not (tmp_path / "out").exists()


def test_the_command_builds_with_a_macro_set(tmp_path: Path) -> None:
    source = require_xv6_source()
    require_toolchain()
    output = tmp_path / "xv6"
    result = invoke(str(source), "--macros", "vmi", "-o", str(output), "--jobs", "2")
    assert result.exit_code == 0, result.output
    notes = annotations(output / "kernel")
    counted = ", ".join(f"{name} {count}" for name, count in site_counts(notes).items())
    assert f"macros: vmi (vmi's patch; hook sites: {counted})\n" in result.stdout
    assert "iret 1" in counted
    assert json.loads((output / MARKER).read_text())["macros"] == "vmi"
    assert "IRET" in (output / "build" / "trapasm.S").read_text()


# -- the patched builds -------------------------------------------------------------------
def test_patched_builds_leave_the_source_tree_as_it_was(xv6_patched) -> None:
    for macros in ("native", "vmi", "naive"):
        build = xv6_patched.get(macros)
        assert build.macros == macros
        assert (build.build_dir / "vmi.h").is_file()
        assert not (xv6_patched.source / "vmi.h").exists()
    assert tree_digest(xv6_patched.source) == xv6_patched.digest_before


def test_the_user_programs_are_the_same_size_as_stock(xv6_patched) -> None:
    """The patch changes the kernel only: x86.h's include comes below stosb, the
    one x86.h function the user library uses, so the programs in fs.img (and the
    sizes ``ls`` prints) are stock's; only the build path in their debug
    information differs, and the fixture's directory names have one length."""
    stock = xv6_patched.get("stock").build_dir
    programs = sorted(path.name for path in stock.glob("_*"))
    assert "_ls" in programs and "_usertests" in programs
    for macros in ("native", "vmi", "naive"):
        build = xv6_patched.get(macros).build_dir
        assert {name: (build / name).stat().st_size for name in programs} == \
            {name: (stock / name).stat().st_size for name in programs}, macros


def test_the_vmi_kernel_holds_a_record_per_site_each_as_the_patcher_expects(xv6_patched):
    kernel = xv6_patched.get("vmi").kernel
    notes = annotations(kernel)
    text, base = kernel_bytes(kernel)
    symbols = read_symbols(kernel)
    start, end = symbols["__vmi_annotation_start"], symbols["__vmi_annotation_end"]
    assert end - start == 8 * len(notes)
    assert len({note.site for note in notes}) == len(notes)
    where: dict[str, set[str]] = {name: set() for name in CALLS}
    for note in notes:
        assert note.site_length == 5 and base <= note.site < base + len(text) - 5
        site = text[note.site - base:note.site - base + note.site_length]
        assert site in expected_before(note.call, note.native_length, note.site_length), \
            (hex(note.site), note, site.hex())
        name = next(key for key, call in CALLS.items() if call == note.call)
        where[name].add(function_of(symbols, note.site))
    counts = {name: sum(1 for note in notes if note.call == call)
              for name, call in CALLS.items()}
    print(f"\nxv6 --macros vmi hook sites: {', '.join(f'{k} {v}' for k, v in counts.items())}")
    assert counts["iret"] == 1 and where["iret"] == {"trapret"}
    assert {"pushcli", "popcli", "mycpu", "sched"} <= where["pushf"]
    assert "pushcli" in where["cli"] and "panic" in where["cli"]
    assert {"popcli", "scheduler"} <= where["sti"]
    # and the report of the command counts them the same way
    report = xv6_patched.get("vmi").as_dict()
    assert report["sites"] == {name: count for name, count in counts.items() if count}
    assert f"macros: vmi (vmi's patch; hook sites: cli {counts['cli']}, sti " \
           f"{counts['sti']}, pushf {counts['pushf']}, iret 1)" in format_report(report)


def test_the_patcher_rewrites_every_site_of_the_vmi_kernel(xv6_patched) -> None:
    kernel = xv6_patched.get("vmi").kernel
    text, base = kernel_bytes(kernel)

    class Memory:  # .text at its linked address, as a page walk would find it
        def __init__(self) -> None:
            self.bytes = bytearray(text)

        def read8(self, address: int) -> int:
            return self.bytes[address - base]

        def write8(self, address: int, value: int) -> None:
            self.bytes[address - base] = value

    memory = Memory()
    notes = annotations(kernel)
    patched, skipped = patch_sites(memory, lambda linear: linear, notes)
    assert skipped == [] and len(patched) == len(notes)
    for note in notes:
        offset = note.site - base
        assert memory.bytes[offset:offset + 5] == translation(note.site, note.call, 5)


def test_native_naive_and_stock_kernels_have_no_records(xv6_patched, xv6_build) -> None:
    for kernel in (xv6_patched.get("native").kernel, xv6_patched.get("naive").kernel,
                   xv6_build.kernel):
        assert annotations(kernel) == []
    assert "macros" not in "\n".join(format_report(xv6_build.as_dict()))


def test_the_native_kernel_returns_from_traps_with_stock_bytes(xv6_patched, xv6_build):
    """trapret (popal, pop gs/fs/es/ds, addl $8, iret) is byte for byte stock's."""
    def trapret(kernel: Path) -> bytes:
        text, base = kernel_bytes(kernel)
        at = read_symbols(kernel)["trapret"] - base
        return text[at:at + 10]

    assert trapret(xv6_build.kernel) == bytes.fromhex("61 0f a9 0f a1 07 1f 83 c4 08")
    assert trapret(xv6_patched.get("native").kernel) == trapret(xv6_build.kernel)
    text, base = kernel_bytes(xv6_patched.get("native").kernel)
    at = read_symbols(xv6_patched.get("native").kernel)["trapret"] - base
    assert text[at + 10] == 0xCF  # a bare iret, no padding
    vmi_text, vmi_base = kernel_bytes(xv6_patched.get("vmi").kernel)
    vmi_at = read_symbols(xv6_patched.get("vmi").kernel)["trapret"] - vmi_base
    assert vmi_text[vmi_at + 10:vmi_at + 15] == bytes.fromhex("cf 66 66 66 90")


# -- booting natively ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(xv6_patched):
    """``runs(macros, cpus)``: boot that build natively, run COMMANDS; cached per
    module: (the boot text to the first prompt, each command's output, vmicpus)."""
    cache: dict[tuple[str, int], tuple[str, dict[str, str], int]] = {}

    def run(macros: str, cpus: int):
        if (macros, cpus) not in cache:
            build = xv6_patched.get(macros)
            session = boot_to_prompt(build, cpus=cpus)
            boot_text = session.text()
            outputs = {line: command(session, line) for line in COMMANDS}
            symbols = read_symbols(build.kernel)
            vmicpus = read32(session, symbols["vmicpus"]) if "vmicpus" in symbols else -1
            cache[macros, cpus] = (boot_text, outputs, vmicpus)
        return cache[macros, cpus]

    return run


@pytest.mark.parametrize(("macros", "cpus"), [("vmi", 1), ("native", 1), ("vmi", 2),
                                              pytest.param("native", 2, marks=pytest.mark.slow)])
def test_the_patched_kernel_runs_natively_as_stock_xv6(runs, macros: str, cpus: int) -> None:
    stock_boot, stock, stock_vmicpus = runs("stock", cpus)
    boot, outputs, vmicpus = runs(macros, cpus)
    assert stock_vmicpus == -1 and vmicpus == 0  # probed; natively there is no ROM
    assert sorted(boot.splitlines()) == sorted(stock_boot.splitlines())
    assert f"cpu{cpus - 1}: starting {cpus - 1}" in boot
    assert outputs == stock
    assert outputs["echo hi"] == "hi\n" and "README" in outputs["ls"]
    assert len(outputs["cat README"]) > 1000


def plant_rom(session, physical: int, *, checksum_ok: bool = True) -> None:
    """A 512-byte option ROM with the VMI header and an Init (+0x80) that does
    nothing and returns 0 (``xor %eax,%eax; ret``), written into the PC's memory."""
    rom = bytearray(512)
    rom[0:3] = b"\x55\xaa\x01"
    rom[8:12] = layout.SIGNATURE.to_bytes(4, "little")
    rom[0x80:0x83] = b"\x31\xc0\xc3"
    rom[-1] = (-sum(rom)) & 0xFF
    if not checksum_ok:
        rom[-1] ^= 1
    for offset, value in enumerate(rom):
        session.machine.memory.write8(physical + offset, value)


def test_the_probe_finds_a_rom_and_every_cpu_calls_its_init(xv6_patched) -> None:
    build = xv6_patched.get("vmi")
    session = boot_pc([build.image, build.fs_image], cpus=2)
    plant_rom(session, 0xC0000, checksum_ok=False)  # skipped: its byte sum is not 0
    plant_rom(session, 0xC1800)                    # found, 3 steps of 2 KiB later
    # cpu1 prints once it is past mpenter, where it called Init after cpu0 did
    stop = session.run(until="cpu1: starting 1", steps=200_000_000)
    assert stop.reason == "until", (stop, session.text()[-300:])
    assert read32(session, read_symbols(build.kernel)["vmicpus"]) == 2


def test_the_naive_kernel_has_no_native_path(xv6_patched) -> None:
    """Its cli and sti are stores to the virtual IF a hypervisor publishes at
    0xFFC01000; natively nothing is there (xv6 maps the top 32 MiB as device space,
    which reads as all ones), so the first EFLAGS read, mycpu's check in seginit,
    sees IF set and xv6 panics. By design: the naive set runs only under a monitor."""
    build = xv6_patched.get("naive")
    header = (build.build_dir / "vmi.h").read_text()
    assert f"%%ss:{layout.VMI_VIF:#x}" in header
    session = boot_pc([build.image, build.fs_image], cpus=1)
    stop = session.run(until="$ ", steps=5_000_000)
    assert stop.reason == "steps"
    screen = session.machine.cga.text()
    assert "panic: mycpu called with interrupts enabled" in screen
    symbols = read_symbols(build.kernel)
    assert function_of(symbols, session.machine.cpus[0].eip) == "panic"


def test_annotations_of_a_file_that_is_not_elf_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kernel"
    bad.write_bytes(b"not an ELF")
    with pytest.raises(Xv6BuildError, match="kernel: not an ELF32 file"):
        annotations(bad)
