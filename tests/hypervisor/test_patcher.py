"""The patcher: every annotated site of a ``vmi`` image becomes ``call ROM+32*N`` at
Init, in guest memory; natively nothing changes and the same image runs."""

from __future__ import annotations

from tests.hypervisor.kit import KERNEL_BASE, Guest
from vmi.asm import assemble
from vmi.hypervisor import layout
from vmi.hypervisor.patcher import format_patches, nop_fill, patch_sites, translation

#: Every hook of the seed once, then park (the hooks after `hlt` never run).
ALL_HOOKS = """
main:
	CLI
	hlt
	STI
	IRET
	STI_SYSEXIT
	GET_CR0
	WRMSR
	RDMSR
	CPUID
"""


def test_every_site_patched_with_its_bytes() -> None:
    g = Guest(ALL_HOOKS, monitor="vmi")
    g.run(1000)
    notes = g.kernel.annotations
    assert [n.call for n in notes] == [36, 35, 39, 40, 24, 6, 7, 5]
    stats = g.monitor.stats
    assert stats.patched_sites == len(notes) == 8 and not stats.skipped
    table = format_patches(stats.patched)
    print(table)
    mem = g.machine.memory
    for note, patched in zip(notes, stats.patched, strict=True):
        assert patched.site == note.site
        now = mem.read_bytes(note.site, note.site_length)  # identity-mapped kernel
        assert now == patched.after == translation(note.site, note.call, note.site_length)
        assert now[0] == 0xE8
        target = (note.site + 5 + int.from_bytes(now[1:5], "little", signed=True)) & 0xFFFFFFFF
        assert target == layout.ROM_LINEAR + 32 * note.call
        original = g.kernel.image[note.site - KERNEL_BASE:][:note.site_length]
        assert patched.before == original
        assert f"{note.site:#010x}  call {note.call:2d}" in table
    assert mem.read32(layout.GLOBAL_PHYSICAL + layout.GLOBAL_PATCHED_SITES) == 8


def test_the_exact_bytes_of_each_hook() -> None:
    g = Guest(ALL_HOOKS, monitor="vmi")
    g.run(1000)
    before = {p.call: p.before.hex(" ") for p in g.monitor.stats.patched}
    assert before == {
        36: "fa 66 66 66 90", 35: "fb 66 66 66 90", 39: "cf 66 66 66 90",
        40: "fb 0f 35 66 90", 24: "0f 20 c0 66 90", 6: "0f 30 66 66 90",
        7: "0f 32 66 66 90", 5: "0f a2 66 66 90",
    }


def test_natively_nothing_is_patched() -> None:
    g = Guest(ALL_HOOKS, monitor=None)
    g.run(1000)
    assert g.stuck and g.cpu.cpl == 0
    text = next(s for s in g.kernel.sections if s.name == ".text")
    assert g.machine.memory.read_bytes(text.address, text.size) == \
        g.kernel.image[text.address - KERNEL_BASE:text.end - KERNEL_BASE]


def test_naive_mode_patches_nothing() -> None:
    g = Guest(ALL_HOOKS.replace("\tIRET\n", "").replace("\tSTI_SYSEXIT\n", ""),
              macros="naive", monitor="naive")
    g.run(1000)
    assert g.cpu.cpl == 1 and g.monitor.stats.patched_sites == 0
    assert not g.kernel.annotations


def test_vmi_split_sites() -> None:
    g = Guest(ALL_HOOKS, macros="vmi-split", monitor="vmi")
    g.run(1000)
    calls = [(p.call, p.before.hex(" ")) for p in g.monitor.stats.patched]
    assert (35, "fb 66 66 66 90") in calls and (40, "0f 35 66 66 66") not in calls
    assert (40, "0f 35 66 66 90") in calls
    assert g.monitor.stats.patched_sites == len(g.kernel.annotations) == 9


def test_unexpected_bytes_are_left_alone() -> None:
    program = assemble("x: CLI\ny: STI\n", macros="vmi", base=0x1000)
    memory = bytearray(0x3000)
    memory[0x1000:0x1000 + len(program.image)] = program.image
    memory[0x1005] = 0x90  # someone rewrote the STI site

    class Mem:
        def read8(self, a: int) -> int:
            return memory[a]

        def write8(self, a: int, v: int) -> None:
            memory[a] = v

    patched, skipped = patch_sites(Mem(), lambda a: a, program.annotations)
    assert [p.site for p in patched] == [0x1000]
    assert [(s.site, s.reason) for s in skipped] == [(0x1005, "unexpected bytes 90 66 66 66 90")]
    patched, skipped = patch_sites(Mem(), lambda a: None, program.annotations)
    assert not patched and {s.reason for s in skipped} == {
        "not mapped in the guest's page tables"}


def test_nop_fill() -> None:
    assert nop_fill(0) == b""
    assert nop_fill(1) == b"\x90"
    assert nop_fill(3) == b"\x66\x66\x90"
    assert nop_fill(13) == b"\x66" * 11 + b"\x90" + b"\x90"
