"""The patcher: rewrites every annotated hook site of a ``vmi`` image into a call to the
ROM, in guest memory, when the guest calls Init.

A site (docs/asm.md, "Annotation records") is the native instruction(s) followed by
a prefix nop, ``site_length`` bytes in all (5: the length of ``call rel32``). The
2006 patcher copied a translation over each site and retargeted its call to
``ROM + 32 * N`` (reference §1, "[RFC, PATCH 5/24] i386 Vmi code patching"); here
the translation is always that call: ``E8 rel32`` with ``rel32 = ROM + 32*N -
(site + 5)``, and the rest of the site (if any) is filled with prefix nops.

The bytes are written through physical memory, found by walking the guest's page
tables, so every CPU's decoded-instruction cache sees the change
(``vmi.cpu.memory``). A site whose bytes are not the native ones the ``vmi`` macro
set emits for its call is left alone and reported: the patcher never writes over
code it does not recognise. Natively nothing calls Init, nothing is patched and
the same image runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen

from vmi.hypervisor import layout

#: Native bytes a site may start with, per VMI call (vmi/asm/macros/vmi.S; the
#: ``vmi-split`` set's SYSEXIT site is a bare sysexit).
NATIVE_BYTES: dict[int, tuple[bytes, ...]] = {
    layout.CALL_DISABLE_INTERRUPTS: (b"\xfa",),
    layout.CALL_ENABLE_INTERRUPTS: (b"\xfb",),
    layout.CALL_IRET: (b"\xcf",),
    layout.CALL_SYSEXIT: (b"\xfb\x0f\x35", b"\x0f\x35"),
    layout.CALL_GET_CR0: (b"\x0f\x20\xc0",),
    layout.CALL_CPUID: (b"\x0f\xa2",),
    layout.CALL_WRMSR: (b"\x0f\x30",),
    layout.CALL_RDMSR: (b"\x0f\x32",),
    layout.CALL_GET_INTERRUPT_MASK: (b"\x9c\x58",),  # pushfl; popl %eax
    layout.CALL_SET_INTERRUPT_MASK: (b"\x50\x9d",),  # pushl %eax; popfl
    layout.CALL_HALT: (b"\xf4",),
    layout.CALL_CLTS: (b"\x0f\x06",),
}
CALL_LENGTH = 5


@frozen
class PatchedSite:
    """One site as it was and as it is now."""

    site: int
    call: int
    before: bytes
    after: bytes


@frozen
class SkippedSite:
    site: int
    call: int
    reason: str


def nop_fill(length: int) -> bytes:
    """``length`` bytes of prefix nops (``66 .. 66 90``, at most 12 bytes each, as the
    2006 padding was; reference §1)."""
    out = b""
    while length > 0:
        chunk = min(length, 12)
        out += b"\x66" * (chunk - 1) + b"\x90"
        length -= chunk
    return out


def translation(site: int, call: int, site_length: int) -> bytes:
    """The bytes that replace a site: ``call ROM+32*call`` and nop fill."""
    rel = (layout.slot_address(call) - (site + CALL_LENGTH)) & 0xFFFFFFFF
    return b"\xe8" + rel.to_bytes(4, "little") + nop_fill(site_length - CALL_LENGTH)


def expected_before(call: int, native_length: int, site_length: int) -> tuple[bytes, ...]:
    """The site bytes the ``vmi`` macro set emits for ``call``."""
    pad = nop_fill(site_length - native_length) if site_length > native_length else b""
    return tuple(native + pad for native in NATIVE_BYTES.get(call, ())
                 if len(native) == native_length)


def patch_sites(mem: Any, translate: Callable[[int], int | None],
                annotations: Iterable[Any]) -> tuple[list[PatchedSite], list[SkippedSite]]:
    """Patch each annotation (``site``, ``call``, ``site_length``, ``native_length``)
    through ``translate(linear) -> physical | None``; returns what was patched and
    what was skipped, with the reason."""
    patched: list[PatchedSite] = []
    skipped: list[SkippedSite] = []
    seen: set[int] = set()
    for note in annotations:
        site, call = note.site, note.call
        if site in seen:
            continue
        seen.add(site)
        if note.site_length < CALL_LENGTH:
            skipped.append(SkippedSite(site, call, f"site of {note.site_length} bytes is "
                                       "shorter than a call"))
            continue
        physical = [translate((site + i) & 0xFFFFFFFF) for i in range(note.site_length)]
        if any(p is None for p in physical):
            skipped.append(SkippedSite(site, call, "not mapped in the guest's page tables"))
            continue
        addresses = [p for p in physical if p is not None]
        before = bytes(mem.read8(p) for p in addresses)
        if before not in expected_before(call, note.native_length, note.site_length):
            skipped.append(SkippedSite(site, call, f"unexpected bytes {before.hex(' ')}"))
            continue
        after = translation(site, call, note.site_length)
        for p, byte in zip(addresses, after, strict=True):
            mem.write8(p, byte)
        patched.append(PatchedSite(site, call, before, after))
    return patched, skipped


def format_patches(patched: Iterable[PatchedSite]) -> str:
    """One line per site: address, call, bytes before -> after, the call target."""
    lines = []
    for p in patched:
        target = (p.site + CALL_LENGTH + int.from_bytes(p.after[1:5], "little", signed=True))
        lines.append(f"{p.site:#010x}  call {p.call:2d}  {p.before.hex(' '):<15} -> "
                     f"{p.after.hex(' '):<15} (call {target & 0xFFFFFFFF:#010x})")
    return "\n".join(lines)
