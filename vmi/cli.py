"""The ``vmi`` command line: ``python -m vmi COMMAND``.

Every error a person can cause ends in one line naming the place and the
cause and exit status 1 (2 for bad usage), never a Python traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


class UserError(click.ClickException):
    """An error caused by the user's input: printed as one line, exit status 1."""


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vmi")
def main() -> None:
    """vmi: an i386 interpreter and VMI hypervisor model for studying the IRET race."""


@main.command()
@click.argument("source", required=False)
@click.option("--hex", "hex_text", help="Instruction bytes as hex (spaces allowed).")
@click.option("--base", default="0", show_default=True, help="Address of the first byte.")
@click.option("--bits", type=click.Choice(["16", "32"]), default="32", show_default=True,
              help="Default operand and address size.")
def disasm(source: str | None, hex_text: str | None, base: str, bits: str) -> None:
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
    address = _parse_int(base, "--base")
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


@main.command()
@click.option("--steps", default=1_000_000, show_default=True, help="Stop after this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def run(steps: int, as_json: bool) -> None:
    """Run the bundled program and print a summary.

    Until the guest kernel lands this is the bundled demo (Fibonacci(20) on a
    flat 32-bit CPU); exit status 0 when it halted with the right answer.
    """
    from vmi.cpu import CPU, CPUException
    from vmi.demo import DEMO_BASE, DEMO_CODE, DEMO_EXPECTED, DEMO_RESULT

    cpu = CPU.flat()
    cpu.mem.load(DEMO_BASE, DEMO_CODE)
    cpu.eip = DEMO_BASE
    fault = None
    try:
        cpu.run(steps)
    except CPUException as exc:
        fault = f"{exc} at eip={cpu.eip:#x}"
    result = cpu.mem.read32(DEMO_RESULT)
    ok = cpu.halted and fault is None and result == DEMO_EXPECTED
    summary = {
        "program": "demo: fibonacci(20)",
        "instructions": cpu.instructions,
        "cycles": cpu.cycles,
        "halted": cpu.halted,
        "result": result,
        "expected": DEMO_EXPECTED,
        "fault": fault,
        "checks_failed": 0 if ok else 1,
        "registers": cpu.regs.as_dict(),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=None))
    else:
        click.echo(f"program       {summary['program']}")
        click.echo(f"instructions  {cpu.instructions}")
        click.echo(f"cycles        {cpu.cycles}")
        click.echo(f"halted        {'yes' if cpu.halted else 'no'}")
        click.echo(f"result        {result} (expected {DEMO_EXPECTED})")
        if fault:
            click.echo(f"fault         {fault}")
        click.echo("registers     " + " ".join(
            f"{k}={v:08x}" for k, v in summary["registers"].items()))
        click.echo(f"checks        {'all held' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)
