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

from vmi.commands import UsageLine, UserError, parse_int

_MACRO_SETS = ["native", "vmi", "naive", "vmi-split", "none"]
_MODES = ["native", "trap", "vmi", "naive"]
_POLICIES = ["defer", "fixup", "none"]


def parse_size(text: str, what: str) -> int:
    """A byte count: a number, or one with a K or M suffix (``4M``, ``512K``)."""
    scale = 1
    if text[-1:].upper() in ("K", "M"):
        scale = 1024 if text[-1:].upper() == "K" else 1 << 20
        text = text[:-1]
    return parse_int(text, what) * scale


def machine_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose the machine a session starts from (shared with
    ``vmi gdbserver``). Those without a default shown are None when not given, so a
    replay file's configuration can be checked against what the user asked for."""
    options = [
        click.option("--mode", type=click.Choice(_MODES), default=None,
                     help="How the bundled kernel runs: native (the bare machine), trap "
                          "(native kernel under the VMI monitor), vmi (the vmi-annotated "
                          "kernel under the monitor), naive (the naive paravirtual kernel "
                          "under the monitor). Default native."),
        click.option("--policy", type=click.Choice(_POLICIES), default=None,
                     help="Under --mode vmi: what an interrupt inside the ROM's IRET/"
                          "SYSEXIT window does (defer, fixup, none). Default defer."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="The kernel's timer phase and CPU interleaving (default 0)."),
        click.option("--cpus", default=None, type=click.IntRange(1, 64),
                     help="Number of CPUs (default 1)."),
        click.option("--program", metavar="FILE.S",
                     help="Assemble FILE.S and run it on flat 32-bit CPUs (else: the "
                          "bundled kernel)."),
        click.option("--base", default="0x1000", show_default=True, metavar="ADDR",
                     help="Load address of --program; EIP starts at _start if defined."),
        click.option("--macros", type=click.Choice(_MACRO_SETS), default=None,
                     help="Macro set of --program (default native), or of the kernel where "
                          "the mode allows (--mode vmi --macros vmi-split)."),
        click.option("--memory", default=None, metavar="SIZE",
                     help="Memory of a --program machine (bytes, or with K/M; default 4M)."),
        click.option("--schedule", metavar="FILE.json",
                     help="Interrupt schedule: a JSON list of [cycle, cpu, vector]."),
        click.option("--replay", metavar="FILE.json",
                     help="Open a race counterexample one step before its fatal "
                          "interrupt (docs/debugger.md, 'Replay files')."),
        click.option("--interleaving", metavar="LIST",
                     help="CPU order used cyclically, e.g. 0,0,1 (default round-robin)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def open_session(options: dict[str, Any]) -> tuple[Any, str]:
    """Build the engine the options (``machine_options``'s, by name) describe; every
    failure is one line: ``UsageLine`` (exit status 2) for options that do not go
    together, ``UserError`` (1) for a file that is missing or wrong."""
    from vmi.debugger.loader import LoadError, LoadUsageError, open_engine

    if options["program"] is not None:
        given = [f"--{name}" for name in ("mode", "policy", "seed")
                 if options[name] is not None]
        if given:
            raise UsageLine(f"{', '.join(given)}: choose{'s' if len(given) == 1 else ''} how "
                            "the bundled kernel boots; not for --program")
    elif options["memory"] is not None:
        raise UsageLine("--memory: for --program (the bundled kernel's machine has 16 MiB)")

    base = options["base"]
    address = parse_int(base, "--base")
    if not 0 <= address <= 0xFFFFFFFF:
        raise UsageLine(f"--base: {base} is not a 32-bit address")
    memory = options["memory"]
    size = None if memory is None else parse_size(memory, "--memory")
    if size is not None and (size < 0x1000 or size % 0x1000):
        raise UsageLine(f"--memory: {size:#x} is not a positive multiple of 4 KiB")
    order = None
    interleaving = options["interleaving"]
    if interleaving:
        order = [parse_int(item.strip(), "--interleaving") for item in interleaving.split(",")]
    try:
        return open_engine(program=options["program"], base=address, macros=options["macros"],
                           cpus=options["cpus"], memory_size=size,
                           schedule=options["schedule"], replay=options["replay"],
                           interleaving=order, mode=options["mode"], policy=options["policy"],
                           seed=options["seed"])
    except LoadUsageError as error:
        raise UsageLine(str(error)) from None
    except LoadError as error:
        raise UserError(str(error)) from None


@click.command("debug")
@machine_options
def command(**options: Any) -> None:
    """Debug the bundled kernel (natively or under the VMI monitor) or a program
    (--program FILE.S), step by step.

    Commands are gdb's (stepi, continue, break SYMBOL, x/4wx $esp, info
    registers, reverse-stepi, ...) plus inject, stack, info idt/gdt/tss/vcpu/
    monitor; 'help' lists them. Reads stdin: a terminal or a pipe.

    \b
    python -m vmi debug --mode vmi --policy defer
    python -m vmi debug --replay counterexample.json
    python -m vmi debug --program prog.S
    """
    from vmi.debugger.repl import DebuggerShell

    engine, banner = open_session(options)
    DebuggerShell(engine).run(banner)
