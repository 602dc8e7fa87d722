"""``vmi boot``: boot a PC from disk images, shaped like the QEMU command line.

The guest's serial port (COM1) is the terminal: its output is printed as it
comes, and on a terminal what is typed goes to the guest (Ctrl-] leaves).
``--type``/``--input`` type text into it instead; ``--until`` stops when the
console shows a text (output after the last typing only). A summary goes to
stderr at the end (``--json``: one JSON object on stdout, the output in it).
The guest's disk writes stay in memory unless ``--write-disks``.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from typing import Any

import click

from vmi.commands import UsageLine, UserError

#: Ctrl-]: leaves an interactive session (telnet's and QEMU's habit).
QUIT_KEY = 0x1D


def parse_size(text: str) -> int:
    """``224M``, ``1G``, ``65536K`` or a number of bytes, as bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale != 1 else text
    try:
        value = int(digits, 0) * scale
    except ValueError:
        raise UsageLine(f"--memory: {text!r} is not a size (e.g. 224M)") from None
    if value < 2 << 20 or value % 4096:
        raise UsageLine(f"--memory: {text} is too small or not a multiple of 4 KiB "
                        "(at least 2M)")
    return value


@click.command("boot")
@click.option("--disk", "disks", multiple=True, metavar="FILE",
              help="A disk image (repeat: the first is disk 0, which boots; the second "
                   "disk 1).")
@click.option("--cpus", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Number of CPUs (an MP table describes them; the others wait for "
                   "INIT/STARTUP).")
@click.option("--memory", "memory", default="224M", show_default=True,
              help="RAM size (K, M or G suffix).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Stop after this many machine steps (default: run until --until, "
                   "Ctrl-] or Ctrl-C).")
@click.option("--until", "until", default=None, metavar="TEXT",
              help="Stop when the console shows TEXT (output after the last typing only).")
@click.option("--type", "typed", default=None, metavar="TEXT",
              help="Type TEXT into the serial port (backslash escapes: \\n, \\r, \\t, "
                   "\\\\, \\xNN); with --until, one line each time TEXT shows.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None,
              help="Type the bytes of this file into the serial port.")
@click.option("--write-disks", is_flag=True,
              help="Write the guest's disk writes back into the image files (default: "
                   "copy-on-write, the files stay as they are).")
@click.option("--symbols", type=click.Path(dir_okay=False), default=None, metavar="ELF",
              help="A kernel ELF whose symbols name addresses in the report.")
@click.option("--quantum", type=click.IntRange(min=1), default=None,
              help="Instructions one CPU runs before the next takes its turn "
                   "(default 2000; 1: strict interleaving).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary and the output as one JSON object.")
def command(disks: tuple[str, ...], cpus: int, memory: str, steps: int | None,
            until: str | None, typed: str | None, input_file: str | None,
            write_disks: bool, symbols: str | None, quantum: int | None,
            as_json: bool) -> None:
    """Boot a PC from its disk images (xv6: --disk xv6.img --disk fs.img)."""
    from vmi.pc.board import DEFAULT_QUANTUM
    from vmi.pc.session import BootError, boot_pc

    if not disks:
        raise UsageLine("vmi boot: give a disk image to boot from (--disk FILE)")
    size = parse_size(memory)
    text = _typed_bytes(typed, input_file)
    table = _symbols(symbols) if symbols else {}
    interactive = not as_json and text is None and sys.stdin.isatty()
    out = None if as_json else _Output()
    try:
        session = boot_pc(list(disks), cpus=cpus, memory_size=size, write_disks=write_disks,
                          serial=None if out is None else out.byte,
                          quantum=DEFAULT_QUANTUM if quantum is None else quantum)
    except BootError as error:
        raise UserError(f"vmi boot: {error}") from None
    session.load_symbols(table)
    if text and until is not None:
        session.type_at_prompts(text)
    elif text:
        session.type(text)
    if interactive:
        stop = _interactive(session, out, until=until, steps=steps)
    else:
        stop = session.run(until=until, steps=steps,
                           poll=None if out is None else out.flush_false)
    if out is not None:
        out.flush()
    written = 0
    if write_disks:
        written = session.flush_disks()
    summary: dict[str, Any] = {**session.summary(), "sectors_written_back": written}
    if as_json:
        summary["output"] = session.text()
        click.echo(json.dumps(summary))
    else:
        for line in _summary_lines(summary):
            click.echo(line, err=True)
    if stop.reason == "stopped":
        if as_json:
            raise SystemExit(1)
        raise UserError(f"vmi boot: the machine stopped: {stop.detail}")


def _typed_bytes(typed: str | None, input_file: str | None) -> bytes | None:
    """The bytes ``--type`` (escapes decoded) and ``--input`` give, or None."""
    data = b""
    if typed is not None:
        try:
            data += codecs.decode(typed, "unicode_escape").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError) as error:
            raise UsageLine(f"--type: {typed!r}: {error.reason}") from None
    if input_file is not None:
        try:
            with open(input_file, "rb") as f:
                data += f.read()
        except OSError as error:
            raise UserError(f"vmi boot: --input {input_file}: {error.strerror}") from None
    return data if typed is not None or input_file is not None else None


def _symbols(path: str) -> dict[str, int]:
    from vmi.asm.elf import ElfError, read_symbols

    try:
        return read_symbols(path)
    except ElfError as error:
        raise UserError(f"vmi boot: --symbols {error}") from None


class _Output:
    """The guest's serial output, written to stdout as it comes (binary, flushed
    between chunks)."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.stream = getattr(sys.stdout, "buffer", None)

    def byte(self, value: int) -> None:
        self.pending.append(value)

    def flush(self) -> None:
        if not self.pending:
            return
        if self.stream is not None:
            self.stream.write(self.pending)
            self.stream.flush()
        else:  # a text stream (a test's runner): as Latin-1
            sys.stdout.write(self.pending.decode("latin-1"))
            sys.stdout.flush()
        self.pending.clear()

    def flush_false(self) -> bool:
        self.flush()
        return False


def _interactive(session: Any, out: _Output, *, until: str | None,
                 steps: int | None) -> Any:
    """Run with the terminal in raw mode: keys go to the guest, Ctrl-] stops."""
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quit_seen = False

    def poll() -> bool:
        nonlocal quit_seen
        out.flush()
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 256)
            if not data or QUIT_KEY in data:
                quit_seen = True
                session.type(data.split(bytes([QUIT_KEY]))[0])
                return True
            session.type(data.replace(b"\n", b"\r"))
        return False

    click.echo("vmi boot: the guest's serial console; Ctrl-] leaves", err=True)
    try:
        tty.setraw(fd)
        return session.run(until=until, steps=steps, poll=poll)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        click.echo("", err=True)


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary ``vmi boot`` prints on stderr."""
    reason = {"until": "the console showed the text", "steps": "the step budget ran out",
              "halted": "every CPU halted", "quit": "Ctrl-] pressed",
              "stopped": "the machine stopped"}.get(summary["stopped"], summary["stopped"])
    lines = [f"vmi boot: stopped: {reason}"
             + (f" ({summary['detail']})" if summary["detail"] and summary["stopped"]
                != "stopped" else "")]
    mips = f", {summary['mips']} M/s" if summary["mips"] else ""
    lines.append(f"  {summary['instructions']:,} instructions in {summary['seconds']} s"
                 f"{mips}; cycles {', '.join(f'{c:,}' for c in summary['cycles'])}")
    lines.append(f"  {summary['cpus']} CPU(s), {summary['started_cpus']} started; "
                 f"{summary['interrupts']:,} interrupts taken")
    for index, disk in enumerate(summary["disks"]):
        if disk is not None:
            lines.append(f"  disk {index} {disk['path']}: {disk['reads']:,} sectors read, "
                         f"{disk['writes']:,} written (kept in memory)"
                         if not summary["sectors_written_back"] else
                         f"  disk {index} {disk['path']}: {disk['reads']:,} sectors read, "
                         f"{disk['writes']:,} written back")
    return lines
