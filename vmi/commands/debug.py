"""``vmi debug``: the step debugger, reading commands from stdin.

At a terminal it is an interactive shell with history and completion;
through a pipe it reads one command per line and prints only the answers,
so scripts and tests drive it the same way. ``docs/debugger.md`` lists the
commands with a real session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vmi.commands import UserError, parse_int

_MACRO_SETS = ["native", "vmi", "naive", "vmi-split", "none"]


def parse_size(text: str, what: str) -> int:
    """A byte count: a number, or one with a K or M suffix (``4M``, ``512K``)."""
    scale = 1
    if text[-1:].upper() in ("K", "M"):
        scale = 1024 if text[-1:].upper() == "K" else 1 << 20
        text = text[:-1]
    return parse_int(text, what) * scale


def machine_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose the machine a session starts from (shared with
    ``vmi gdbserver``)."""
    options = [
        click.option("--cpus", default=1, show_default=True, type=click.IntRange(1, 64),
                     help="Number of CPUs."),
        click.option("--program", metavar="FILE.S",
                     help="Assemble FILE.S and run it on flat 32-bit CPUs (else: the "
                          "bundled kernel)."),
        click.option("--base", default="0x1000", show_default=True, metavar="ADDR",
                     help="Load address of --program; EIP starts at _start if defined."),
        click.option("--macros", type=click.Choice(_MACRO_SETS), default="native",
                     show_default=True,
                     help="Macro set for --program, or the bundled kernel's mode."),
        click.option("--memory", default="4M", show_default=True, metavar="SIZE",
                     help="Memory of a --program machine (bytes, or with K/M)."),
        click.option("--schedule", metavar="FILE.json",
                     help="Interrupt schedule: a JSON list of [cycle, cpu, vector]."),
        click.option("--replay", metavar="FILE.json",
                     help="Open a counterexample ({schedule, stop_step}) one step before "
                          "its stop."),
        click.option("--interleaving", metavar="LIST",
                     help="CPU order used cyclically, e.g. 0,0,1 (default round-robin)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def open_session(cpus: int, program: str | None, base: str, macros: str, memory: str,
                 schedule: str | None, replay: str | None,
                 interleaving: str | None) -> tuple[Any, str]:
    """Build the engine the options describe; every failure is one ``UserError`` line."""
    from vmi.debugger.loader import LoadError, open_engine

    address = parse_int(base, "--base")
    if not 0 <= address <= 0xFFFFFFFF:
        raise UserError(f"--base: {base} is not a 32-bit address")
    size = parse_size(memory, "--memory")
    order = None
    if interleaving:
        order = [parse_int(item.strip(), "--interleaving") for item in interleaving.split(",")]
    try:
        return open_engine(program=program, base=address, macros=macros, cpus=cpus,
                           memory_size=size, schedule=schedule, replay=replay,
                           interleaving=order)
    except LoadError as error:
        raise UserError(str(error)) from None


@click.command("debug")
@machine_options
def command(cpus: int, program: str | None, base: str, macros: str, memory: str,
            schedule: str | None, replay: str | None, interleaving: str | None) -> None:
    """Debug a program (--program FILE.S) or the bundled kernel, step by step.

    Commands are gdb's (stepi, continue, break *ADDR, x/4wx $esp, info
    registers, reverse-stepi, ...) plus inject, stack and info idt/gdt/tss;
    'help' lists them. Reads stdin: a terminal or a pipe.
    """
    from vmi.debugger.repl import DebuggerShell

    engine, banner = open_session(cpus, program, base, macros, memory, schedule, replay,
                                  interleaving)
    DebuggerShell(engine).run(banner)
