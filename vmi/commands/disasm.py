"""``vmi disasm``: an objdump-style listing of raw bytes.

The lines are the ones ``objdump -D -b binary -m i386`` (``-m i8086`` with
``--bits 16``) prints after its header: address, up to seven bytes, the AT&T
text, and continuation lines for the rest of a long instruction's bytes.
``docs/disasm.md`` describes the format and the few differences.
"""

from __future__ import annotations

import string
from pathlib import Path

import click

from vmi.commands import UsageLine, UserError, parse_int


def _parse_hex(text: str) -> bytes:
    """Bytes from hex digits; spaces, tabs and newlines between them are ignored."""
    cleaned = "".join(text.split())
    for position, char in enumerate(cleaned):
        if char not in string.hexdigits:
            raise UsageLine(f"--hex: {char!r} at position {position + 1} is not a hex digit")
    if len(cleaned) % 2:
        raise UsageLine(f"--hex: odd number of hex digits ({len(cleaned)}); give whole bytes")
    if not cleaned:
        raise UsageLine("--hex: no bytes given")
    return bytes.fromhex(cleaned)


def _read_file(source: str) -> bytes:
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise UserError(f"{source}: {error.strerror or error}") from None


@click.command("disasm")
@click.argument("source", metavar="FILE", required=False)
@click.option("--hex", "hex_text", metavar="BYTES",
              help="Instruction bytes as hex (spaces allowed).")
@click.option("--base", default="0", show_default=True, metavar="ADDRESS",
              help="Address of the first byte (0x.. for hex).")
@click.option("--bits", type=click.Choice(["16", "32"]), default="32", show_default=True,
              help="Default operand and address size: 32 (i386) or 16 (i8086).")
def command(source: str | None, hex_text: str | None, base: str, bits: str) -> None:
    """Disassemble raw bytes (FILE, or --hex BYTES) into an objdump-style listing."""
    from vmi.cpu.disasm import disassemble, listing_lines

    if (source is None) == (hex_text is None):
        raise UsageLine("give either a FILE or --hex BYTES (exactly one)")
    data = _parse_hex(hex_text) if hex_text is not None else _read_file(source or "")
    address = parse_int(base, "--base")
    if not 0 <= address <= 0xFFFFFFFF:
        raise UsageLine(f"--base: {base!r} is not a 32-bit address")
    lines = list(disassemble(data, address, bits=int(bits)))
    for text in listing_lines(lines):
        click.echo(text)
