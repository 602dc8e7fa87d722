"""``vmi disasm``: an objdump-style listing of raw bytes."""

from __future__ import annotations

from pathlib import Path

import click

from vmi.commands import UserError, parse_int


@click.command("disasm")
@click.argument("source", required=False)
@click.option("--hex", "hex_text", help="Instruction bytes as hex (spaces allowed).")
@click.option("--base", default="0", show_default=True, help="Address of the first byte.")
@click.option("--bits", type=click.Choice(["16", "32"]), default="32", show_default=True,
              help="Default operand and address size.")
def command(source: str | None, hex_text: str | None, base: str, bits: str) -> None:
    """Disassemble raw bytes (a file, or --hex) into an objdump-style listing."""
    from vmi.cpu import decode
    from vmi.cpu.errors import DecodeError, TruncatedInstruction

    if (source is None) == (hex_text is None):
        raise click.UsageError("give either a FILE or --hex BYTES")
    if hex_text is not None:
        cleaned = "".join(hex_text.split())
        try:
            data = bytes.fromhex(cleaned)
        except ValueError:
            raise UserError(f"--hex: {hex_text!r} is not hexadecimal bytes") from None
    else:
        try:
            data = Path(source).read_bytes()  # type: ignore[arg-type]
        except OSError as error:
            raise UserError(f"{source}: {error.strerror}") from None
    address = parse_int(base, "--base")
    offset = 0
    while offset < len(data):
        try:
            insn = decode(data[offset:], address + offset, bits=int(bits))
            length, text = insn.length, str(insn)
        except TruncatedInstruction:
            length, text = len(data) - offset, "(bad)"
        except DecodeError:
            length, text = 1, "(bad)"
        raw = " ".join(f"{b:02x}" for b in data[offset : offset + length])
        click.echo(f"{address + offset:8x}:\t{raw:<21}\t{text}")
        offset += length


