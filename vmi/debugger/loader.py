"""The machine a debugging session starts from, for ``vmi debug`` and ``vmi gdbserver``.

Two sources:

* ``--program FILE.S``: the file is assembled with ``vmi.asm`` and loaded at
  ``base`` into a machine whose CPUs are in flat 32-bit protected mode at CPL
  0 (``CPU.enter_flat_mode``) with EIP at ``_start`` if the program defines
  it, else at ``base``; CPU *i*'s ESP starts at the top of memory minus
  ``i * STACK_SPACING`` so every CPU has a stack; EFLAGS is 0x2 (IF clear).
* the bundled guest kernel: ``vmi.guest.build.boot_machine(mode=..., cpus=...)``
  returning ``(machine, symbols)``, when that module exists.

Interrupt schedules are JSON lists of ``[cycle, cpu, vector]`` (the machine's
``ScheduledInterrupt``). A *replay file* is what the race explorer writes for
a counterexample (documented in ``docs/debugger.md``)::

    {"schedule": [[cycle, cpu, vector], ...], "stop_step": N,
     "interleaving": [0, 1, ...],          # optional
     "description": "what went wrong"}     # optional

The session opens at global step ``stop_step - 1``, one step before the
violation, with the whole history behind it for reverse execution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import frozen

#: Bytes between the initial stacks of consecutive CPUs of a ``--program`` machine.
STACK_SPACING = 0x4000
#: Memory of a ``--program`` machine unless told otherwise.
DEFAULT_MEMORY = 4 << 20


class LoadError(Exception):
    """The session cannot start: a file is missing or wrong, or no kernel exists yet."""


@frozen
class Replay:
    """A counterexample to open: its interrupt schedule and the step it failed at."""

    schedule: tuple[tuple[int, int, int], ...]
    stop_step: int
    interleaving: tuple[int, ...] | None = None
    description: str = ""


def program_machine(path: str | Path, *, base: int, macros: str | None, cpus: int,
                    memory_size: int = DEFAULT_MEMORY) -> tuple[Any, dict[str, int]]:
    """Assemble ``path`` and load it into a flat-mode machine (see the module docstring)."""
    from vmi.asm import AsmError, assemble
    from vmi.machine import Machine

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise LoadError(f"{path}: {error.strerror or error}") from None
    try:
        program = assemble(text, macros=macros, base=base, filename=str(path))
    except AsmError as failure:
        errors = len(failure.errors)
        raise LoadError("\n".join(d.format() for d in failure.diagnostics) +
                        f"\n{path}: {errors} error{'s' if errors != 1 else ''}") from None
    except ValueError as error:
        raise LoadError(f"{path}: {error}") from None
    if memory_size < 0x1000 or memory_size % 0x1000:
        raise LoadError(f"--memory: {memory_size:#x} is not a positive multiple of 4 KiB")
    if base + len(program.image) > memory_size:
        raise LoadError(f"{path}: the image ends at {base + len(program.image):#x}, past the "
                        f"end of memory ({memory_size:#x}); give a larger --memory")
    if cpus < 1 or cpus > 64:
        raise LoadError(f"--cpus: {cpus} is not 1..64")
    machine = Machine(cpus=cpus, memory_size=memory_size)
    machine.memory.load(base, program.image)
    entry = program.symbols.get("_start", base)
    for index, cpu in enumerate(machine.cpus):
        cpu.enter_flat_mode(0)
        cpu.eip = entry
        cpu.regs.esp = max(0, memory_size - index * STACK_SPACING)
    return machine, dict(program.symbols)


def bundled_machine(*, mode: str, cpus: int) -> tuple[Any, dict[str, int]]:
    """Boot the bundled guest kernel through ``vmi.guest.build.boot_machine``."""
    import importlib

    try:
        build = importlib.import_module("vmi.guest.build")
    except ImportError:
        build = None
    except Exception as error:  # a kernel being written may not import yet
        raise LoadError(f"the bundled kernel cannot be loaded: {type(error).__name__}: "
                        f"{error}; pass --program FILE.S") from None
    boot_machine = getattr(build, "boot_machine", None)
    if not callable(boot_machine):
        raise LoadError("debugging the bundled kernel is not wired up yet (it needs "
                        "vmi.guest.build.boot_machine); pass --program FILE.S to debug a "
                        "program of your own")
    try:
        machine, symbols = boot_machine(mode=mode, cpus=cpus)
    except Exception as error:  # bad mode, assembly errors, a machine that cannot start
        raise LoadError(f"cannot boot the bundled kernel ({mode}, {cpus} CPUs): "
                        f"{type(error).__name__}: {error}") from None
    return machine, dict(symbols)


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise LoadError(f"{path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoadError(f"{path}: not a JSON {what} ({error})") from None


def parse_schedule(data: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    """A schedule from JSON: a list of ``[cycle, cpu, vector]`` triples of integers."""
    if not isinstance(data, list):
        raise LoadError(f"{where}: a schedule is a list of [cycle, cpu, vector]")
    events = []
    for position, item in enumerate(data):
        if not (isinstance(item, list | tuple) and len(item) == 3 and
                all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise LoadError(f"{where}: entry {position} is {item!r}, not [cycle, cpu, vector]")
        cycle, cpu, vector = item
        if cycle < 0 or cpu < 0 or not 0 <= vector <= 255:
            raise LoadError(f"{where}: entry {position} {item!r} is out of range")
        events.append((cycle, cpu, vector))
    return tuple(events)


def read_schedule(path: str | Path) -> tuple[tuple[int, int, int], ...]:
    """Read a ``--schedule`` file."""
    return parse_schedule(_read_json(path, "schedule"), str(path))


def read_replay(path: str | Path) -> Replay:
    """Read a ``--replay`` file (see the module docstring)."""
    data = _read_json(path, "replay file")
    if not isinstance(data, dict):
        raise LoadError(f"{path}: a replay file is a JSON object with schedule and stop_step")
    for key in ("schedule", "stop_step"):
        if key not in data:
            raise LoadError(f"{path}: no {key!r} in the replay file")
    stop_step = data["stop_step"]
    if not isinstance(stop_step, int) or isinstance(stop_step, bool) or stop_step < 0:
        raise LoadError(f"{path}: stop_step must be a step number (0 or more)")
    interleaving = data.get("interleaving")
    if interleaving is not None and not (
            isinstance(interleaving, list) and interleaving and
            all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in interleaving)):
        raise LoadError(f"{path}: interleaving must be a non-empty list of CPU numbers")
    return Replay(parse_schedule(data["schedule"], f"{path}: schedule"), stop_step,
                  tuple(interleaving) if interleaving else None,
                  str(data.get("description", "")))


def apply_schedule(machine: Any, schedule: tuple[tuple[int, int, int], ...], where: str) -> None:
    try:
        machine.add_schedule(schedule)
    except ValueError as error:
        raise LoadError(f"{where}: {error} (the machine has {len(machine.cpus)} CPUs)") from None


def open_engine(*, program: str | None, base: int, macros: str, cpus: int,
                memory_size: int, schedule: str | None, replay: str | None,
                interleaving: list[int] | None = None) -> tuple[Any, str]:
    """Build the machine and an ``Engine`` over it; returns the engine and a banner.

    The annotate hook is the platform's ``annotate(machine, cpu)`` when it has
    one (the VMI monitor will), so the virtual state shows at every stop.
    """
    from vmi.debugger.engine import Engine

    macro_set = None if macros == "none" else macros
    if program is not None:
        machine, symbols = program_machine(program, base=base, macros=macro_set, cpus=cpus,
                                           memory_size=memory_size)
        what = f"{program} at {base:#x}"
    else:
        machine, symbols = bundled_machine(mode=macros, cpus=cpus)
        what = f"the bundled kernel ({macros})"
    if schedule is not None:
        apply_schedule(machine, read_schedule(schedule), schedule)
    loaded = read_replay(replay) if replay is not None else None
    if loaded is not None:
        apply_schedule(machine, loaded.schedule, replay or "")
    order = list(loaded.interleaving) if loaded and loaded.interleaving else interleaving
    if order:
        try:
            machine.set_interleaving(order)
        except ValueError as error:
            raise LoadError(f"interleaving: {error}") from None
    annotate = getattr(machine.platform, "annotate", None)
    engine = Engine(machine, symbols, annotate=annotate if callable(annotate) else None)
    count = len(machine.cpus)
    banner = (f"vmi debugger: {what}, {count} CPU{'s' if count != 1 else ''}, "
              f"{len(symbols)} symbols. 'help' lists the commands.")
    if loaded is not None:
        stop = engine.goto(max(0, loaded.stop_step - 1))
        banner += (f"\nreplay {replay}: opened at step {engine.machine.steps}, one step before "
                   f"the recorded stop at step {loaded.stop_step}")
        if loaded.description:
            banner += f"\n  {loaded.description}"
        if stop.reason == "machine-stopped":
            banner += f"\n  the machine stopped early: {stop.message}"
    return engine, banner
