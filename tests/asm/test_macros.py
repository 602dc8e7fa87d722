"""The macro sets (native, vmi, naive, vmi-split) on an entry.S-like sample.

Each set is a GNU as ``.macro`` file; the same file in front of the same
source must give the same bytes in GNU as (linked by ``ld`` at the section
addresses vmi.asm chose, so cross-section references are compared too) and
in vmi.asm. The other tests check what each set means: the padded VMI sites
and their annotation records, the one-site STI_SYSEXIT, the naive IRET.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.asm.gnu import gnu_link
from vmi.asm import MACRO_SETS, Program, assemble, macro_source
from vmi.cpu import decode

DATA = Path(__file__).parent / "data"
MACROS = Path(__file__).parents[2] / "vmi" / "asm" / "macros"
BASE = 0x100000
HOOKS = ("CLI", "STI", "IRET", "STI_SYSEXIT", "GET_CR0", "WRMSR", "RDMSR", "CPUID")
CALLS = {"CPUID": 5, "WRMSR": 6, "RDMSR": 7, "GET_CR0": 24, "STI": 35, "CLI": 36, "IRET": 39,
         "STI_SYSEXIT": 40}
NATIVE = {"CLI": "fa", "STI": "fb", "IRET": "cf", "STI_SYSEXIT": "fb0f35", "GET_CR0": "0f20c0",
          "WRMSR": "0f30", "RDMSR": "0f32", "CPUID": "0fa2"}


def _entry(macros: str, **kwargs) -> Program:
    path = DATA / "entry.S"
    return assemble(path.read_text(), macros=macros, base=BASE, filename=str(path), **kwargs)


@pytest.mark.skipif(not all(shutil.which(t) for t in ("as", "ld", "objcopy")),
                    reason="GNU as, ld or objcopy is not installed")
@pytest.mark.parametrize("macros", sorted(MACRO_SETS))
def test_macro_set_matches_gnu_as(macros: str) -> None:
    program = _entry(macros)
    text, _path = macro_source(macros)
    gnu = gnu_link(text + "\n" + (DATA / "entry.S").read_text(), program, MACROS)
    for section in program.sections:
        if section.nobits:
            continue
        assert gnu[section.name] == program.section_bytes(section.name), section.name
    if ".vmi.annotation" in program.unloaded:
        assert program.section_bytes(".vmi.annotation") == _records(program)


def _records(program: Program) -> bytes:
    """The .vmi.annotation bytes rebuilt from the parsed records."""
    return b"".join(a.site.to_bytes(4, "little") + bytes([a.call, a.site_length,
                                                          a.native_length, 0])
                    for a in program.annotations)


def _hook(macros: str, hook: str) -> tuple[bytes, Program]:
    program = assemble(f"before: nop\n{hook}\nafter: nop\n", macros=macros, base=0x1000)
    start, end = program.symbols["before"] + 1, program.symbols["after"]
    return program.image[start - 0x1000:end - 0x1000], program


@pytest.mark.parametrize("hook", HOOKS)
def test_native_set_is_the_plain_instructions(hook: str) -> None:
    data, program = _hook("native", hook)
    assert data.hex() == NATIVE[hook]
    assert program.annotations == ()


@pytest.mark.parametrize("hook", HOOKS)
def test_vmi_site_is_native_then_nop_padding_then_a_record(hook: str) -> None:
    data, program = _hook("vmi", hook)
    native = bytes.fromhex(NATIVE[hook])
    assert len(data) == max(5, len(native))
    assert data.startswith(native)
    padding = data[len(native):]
    assert padding == b"\x66" * (len(padding) - 1) + b"\x90"  # one prefix-nop
    (record,) = program.annotations
    assert (record.site, record.call, record.site_length, record.native_length) == (
        0x1001, CALLS[hook], 5, len(native))
    # The padded site still runs natively: the native instruction(s), then a nop.
    pos, names = 0, []
    while pos < len(data):
        insn = decode(data[pos:], 0x1001 + pos)
        names.append(insn.mnemonic)
        pos += insn.length
    assert names[-1] in ("nop", "xchg")
    assert ".vmi.annotation" not in {s.name for s in program.sections if s.loaded}


def test_vmi_sti_sysexit_is_one_site_padded_after_sysexit() -> None:
    data, program = _hook("vmi", "STI_SYSEXIT")
    assert data.hex() == "fb0f356690"  # sti; sysexit; then the padding
    (record,) = program.annotations
    assert (record.call, record.site_length, record.native_length) == (40, 5, 3)


def test_vmi_split_pads_between_sti_and_sysexit() -> None:
    data, program = _hook("vmi-split", "STI_SYSEXIT")
    assert data.hex() == "fb66666690" + "0f35666690"
    sti, sysexit = program.annotations
    assert (sti.site, sti.call, sti.native_length) == (0x1001, 35, 1)
    assert (sysexit.site, sysexit.call, sysexit.native_length) == (0x1006, 40, 2)


def test_naive_set_uses_the_virtual_interrupt_flag_word() -> None:
    cli, program = _hook("naive", "CLI")
    vif = program.symbols["VMI_VIF"]
    assert vif == 0xFFFFF000 and program.symbols["VMI_PENDING"] == 0xFFFFF004
    assert cli == bytes.fromhex("36c705") + vif.to_bytes(4, "little") + bytes(4)
    sti, _ = _hook("naive", "STI")
    assert sti == bytes.fromhex("36c705") + vif.to_bytes(4, "little") + (0x200).to_bytes(4,
                                                                                   "little")
    iret, _ = _hook("naive", "IRET")
    address = vif.to_bytes(4, "little").hex()
    # push %eax; mov 12(%esp),%eax; and $0x200,%eax; mov %eax,%ss:VIF; pop %eax; iret
    assert iret.hex() == f"508b44240c250002000036a3{address}58cf"
    sysexit, _ = _hook("naive", "STI_SYSEXIT")
    assert sysexit.hex().endswith("0f35") and sysexit.startswith(sti)
    assert _hook("naive", "CPUID")[0].hex() == "0fa2"


def test_naive_addresses_come_from_defines() -> None:
    program = assemble("CLI\n", macros="naive", defines={"VMI_VIF": 0xC0001000,
                                                         "VMI_PENDING": 0xC0001004})
    assert program.image.hex() == "36c70500" + "1000c0" + "00000000"
    assert program.symbols["VMI_PENDING"] == 0xC0001004


def test_lower_case_instruction_is_the_hook_too() -> None:
    """GNU as macro names are case-insensitive: with a set prepended, `cli` is CLI,
    and `{nooptimize} cli` is the raw instruction (docs/asm.md)."""
    program = assemble("cli\n{nooptimize} cli\n", macros="vmi")
    assert program.image.hex() == "fa666666" "90" "fa"
    assert len(program.annotations) == 1


def test_entry_sample_records_every_hook_site() -> None:
    program = _entry("vmi")
    text = program.section_bytes(".text") + program.section_bytes(".fixup")
    assert len(program.annotations) == 20
    starts = {s.name: s for s in program.sections}
    for record in program.annotations:
        assert record.site_length == 5
        section = next(s for s in (starts[".text"], starts[".fixup"])
                       if s.address <= record.site < s.end)
        offset = record.site - section.address
        site = program.section_bytes(section.name)[offset:offset + 5]
        assert site[record.native_length:] in (b"\x90", b"\x66\x90", b"\x66\x66\x90",
                                              b"\x66\x66\x66\x90")
    assert text  # the loaded image holds the code, the records stay out of it
    assert starts[".vmi.annotation"].loaded is False
    assert program.end <= starts[".bss"].address
