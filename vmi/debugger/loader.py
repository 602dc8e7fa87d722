"""The machine a debugging session starts from, for ``vmi debug`` and ``vmi gdbserver``.

Two sources:

* ``--program FILE.S``: the file is assembled with ``vmi.asm`` and loaded at
  ``base`` into a machine whose CPUs are in flat 32-bit protected mode at CPL
  0 (``CPU.enter_flat_mode``) with EIP at ``_start`` if the program defines
  it, else at ``base``; CPU *i*'s ESP starts at the top of memory minus
  ``i * STACK_SPACING`` so every CPU has a stack; EFLAGS is 0x2 (IF clear).
* the bundled guest kernel, booted by ``vmi.system.boot_system(mode, policy=,
  macros=, cpus=, seed=)``: natively or under the VMI monitor. Its symbols are
  ``System.symbols``; the engine is given the monitor, so stops show the virtual
  IF, the pending virtual vectors and the ROM windows.

Interrupt schedules are JSON lists of ``[cycle, cpu, vector]`` (the machine's
``ScheduledInterrupt``). A *replay file* is a counterexample of the race
explorer (``docs/debugger.md``, "Replay files")::

    {"format": "vmi-race-counterexample", "version": 1,
     "mode": "naive", "policy": "none", "macros": "naive", "cpus": 1, "seed": 0,
     "interleaving": null, "schedule": [[cycle, cpu, vector], ...],
     "stop_step": N, "path": "iret", "invariant": "lost-work",
     "description": "one line"}

or the older minimal form ``{"schedule": [...], "stop_step": N}`` (with
``interleaving`` and ``description`` optional), which runs on the machine the
other options describe. The session opens at global step ``stop_step - 1``, one
step before the fatal interrupt, with the whole history behind it for reverse
execution.
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
#: The ``format`` and ``version`` of a race counterexample this reader understands.
REPLAY_FORMAT = "vmi-race-counterexample"
REPLAY_VERSION = 1
#: Defaults of the options that choose how the bundled kernel boots.
DEFAULT_MODE = "native"
DEFAULT_POLICY = "defer"


class LoadError(Exception):
    """The session cannot start: a file is missing or wrong, or a configuration does
    not exist. The message is one line (assembly errors: the diagnostics first)."""


class LoadUsageError(LoadError):
    """Options that cannot go together or a value out of range: bad usage (exit 2)."""


@frozen
class Replay:
    """A counterexample to open: its interrupt schedule and the step it failed at.

    ``mode``, ``policy``, ``macros``, ``cpus`` and ``seed`` are None for the older
    minimal form, which runs on the machine the command line describes."""

    schedule: tuple[tuple[int, int, int], ...]
    stop_step: int
    interleaving: tuple[int, ...] | None = None
    description: str = ""
    mode: str | None = None
    policy: str | None = None
    macros: str | None = None
    cpus: int | None = None
    seed: int | None = None
    path: str = ""
    invariant: str = ""
    replayable: bool = True
    #: (machine step, cpu, cycle): at that step the timer's next tick on that CPU
    #: moves to that cycle (the race explorer holds the timer off in its branches)
    timer_hold: tuple[int, int, int] | None = None

    @property
    def complete(self) -> bool:
        """Whether the file names its configuration (the versioned format)."""
        return self.mode is not None


@frozen
class Loaded:
    """What ``load_machine`` built: the machine, its symbols (names for expressions),
    its labels (names for ``symbol+offset``: addresses only, no constants), the
    booted ``vmi.system.System`` (None for ``--program``) and a one-line description."""

    machine: Any
    symbols: dict[str, int]
    labels: dict[str, int]
    system: Any
    what: str
    #: The assembled ``--program`` (None for the kernel: ``system`` has its programs).
    program: Any = None


# -- --program ---------------------------------------------------------------------------
def program_machine(path: str | Path, *, base: int, macros: str | None, cpus: int,
                    memory_size: int = DEFAULT_MEMORY) -> tuple[Any, dict[str, int]]:
    """Assemble ``path`` and load it into a flat-mode machine (see the module docstring)."""
    machine, program = _program_machine(path, base=base, macros=macros, cpus=cpus,
                                        memory_size=memory_size)
    return machine, dict(program.symbols)


def _program_machine(path: str | Path, *, base: int, macros: str | None, cpus: int,
                     memory_size: int) -> tuple[Any, Any]:
    """``program_machine``, returning the ``vmi.asm.Program`` instead of its symbols
    (``gdbserver --symbols`` writes its sections)."""
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
        raise LoadUsageError(f"--memory: {memory_size:#x} is not a positive multiple of 4 KiB")
    if base + len(program.image) > memory_size:
        raise LoadError(f"{path}: the image ends at {base + len(program.image):#x}, past the "
                        f"end of memory ({memory_size:#x}); give a larger --memory")
    if cpus < 1 or cpus > 64:
        raise LoadUsageError(f"--cpus: {cpus} is not 1..64")
    machine = Machine(cpus=cpus, memory_size=memory_size)
    machine.memory.load(base, program.image)
    entry = program.symbols.get("_start", base)
    for index, cpu in enumerate(machine.cpus):
        cpu.enter_flat_mode(0)
        cpu.eip = entry
        cpu.regs.esp = max(0, memory_size - index * STACK_SPACING)
    return machine, program


# -- the bundled kernel ---------------------------------------------------------------------
def kernel_system(*, mode: str, policy: str, macros: str | None, cpus: int, seed: int) -> Any:
    """Boot the bundled kernel with ``vmi.system.boot_system``; a configuration that
    does not exist is a one-line ``LoadError``."""
    from vmi.system import SystemError_, boot_system

    try:
        return boot_system(mode, policy=policy, macros=macros, cpus=cpus, seed=seed)
    except SystemError_ as error:
        raise LoadError(str(error)) from None
    except ValueError as error:  # too many CPUs for the kernel or the monitor
        raise LoadError(f"cannot boot the bundled kernel (--mode {mode}, --cpus {cpus}): "
                        f"{error}") from None


def _extent(program: Any) -> tuple[int, int]:
    """The linked addresses a program's loaded sections (code, data, bss) cover."""
    sections = [s for s in program.sections if s.loaded and s.size]
    if not sections:
        return program.base, program.end
    return (min(s.address for s in sections), max(s.address + s.size for s in sections))


def kernel_labels(system: Any) -> tuple[dict[str, int], dict[str, int]]:
    """``System.symbols`` (with the VMI ROM's call slots, ``vmi_call_NAME``) plus the
    boot ROM's labels (``bootrom.NAME``), and the subset that names addresses
    (inside an image or the ROM) for ``symbol+offset`` labels: the kernel's
    ``.set`` constants (``TSS_sysenter_esp0``, ``__KERNEL_CS``) would otherwise
    label low memory and the real-mode reset vector."""
    symbols = dict(system.symbols)
    build = system.guest.build
    extents = [_extent(image.program) for image in (build.kernel, build.vsyscall,
                                                    *system.guest.programs)]
    rom_program = build.rom.program
    for name, value in rom_program.symbols.items():
        symbols.setdefault(f"bootrom.{name}", value)
    extents.append(_extent(rom_program))
    if system.monitor is not None:  # its labels and call slots: System.symbols
        from vmi.hypervisor import layout

        extents.append((layout.ROM_LINEAR, layout.ROM_LINEAR + layout.ROM_SIZE))
    places = [(name, value) for name, value in symbols.items()
              if any(start <= value < end for start, end in extents)]
    # where names share an address, a label (lower case) before a constant (ROM_BASE)
    places.sort(key=lambda item: item[0].rsplit(".", 1)[-1].isupper())
    return symbols, dict(places)


def load_machine(*, program: str | None, base: int, macros: str | None, cpus: int,
                 memory_size: int, mode: str, policy: str, seed: int) -> Loaded:
    """The machine of a session: ``--program`` or the bundled kernel."""
    if program is not None:
        macro_set = None if macros == "none" else (macros or "native")
        machine, assembled = _program_machine(program, base=base, macros=macro_set,
                                              cpus=cpus, memory_size=memory_size)
        symbols = dict(assembled.symbols)
        return Loaded(machine, symbols, symbols, None, f"{program} at {base:#x}", assembled)
    system = kernel_system(mode=mode, policy=policy, macros=macros, cpus=cpus, seed=seed)
    symbols, labels = kernel_labels(system)
    return Loaded(system.machine, symbols, labels, system,
                  f"the bundled kernel ({system.describe()})")


# -- schedules and replay files ----------------------------------------------------------------
def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise LoadError(f"{path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LoadError(f"{path}: not a JSON {what} ({error})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_schedule(data: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    """A schedule from JSON: a list of ``[cycle, cpu, vector]`` triples of integers."""
    if not isinstance(data, list):
        raise LoadError(f"{where}: a schedule is a list of [cycle, cpu, vector]")
    events = []
    for position, item in enumerate(data):
        if not (isinstance(item, list | tuple) and len(item) == 3 and
                all(_is_int(v) for v in item)):
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
    """Read a ``--replay`` file (see the module docstring); every problem is one
    ``LoadError`` line naming the file."""
    data = _read_json(path, "replay file")
    if not isinstance(data, dict):
        raise LoadError(f"{path}: a replay file is a JSON object with schedule and stop_step")
    complete = "format" in data or "version" in data
    if complete:
        if data.get("format") != REPLAY_FORMAT:
            raise LoadError(f"{path}: format is {data.get('format')!r}, not {REPLAY_FORMAT!r}")
        if data.get("version") != REPLAY_VERSION:
            raise LoadError(f"{path}: version {data.get('version')!r} of {REPLAY_FORMAT} is "
                            f"not supported (this vmi reads version {REPLAY_VERSION})")
    required = ("mode", "policy", "macros", "cpus", "seed", "schedule", "stop_step") \
        if complete else ("schedule", "stop_step")
    for key in required:
        if key not in data:
            raise LoadError(f"{path}: no {key!r} in the replay file")
    stop_step = data["stop_step"]
    if not _is_int(stop_step) or stop_step < 0:
        raise LoadError(f"{path}: stop_step must be a step number (0 or more), not "
                        f"{stop_step!r}")
    interleaving = data.get("interleaving")
    if interleaving is not None and not (
            isinstance(interleaving, list) and interleaving and
            all(_is_int(v) and v >= 0 for v in interleaving)):
        raise LoadError(f"{path}: interleaving must be null or a non-empty list of CPU "
                        "numbers")
    texts = {}
    for key in ("description", "path", "invariant"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise LoadError(f"{path}: {key} must be a string, not {value!r}")
        texts[key] = " ".join((value or "").split())  # one line
    replayable = data.get("replayable", True)
    if not isinstance(replayable, bool):
        raise LoadError(f"{path}: replayable must be true or false, not {replayable!r}")
    fields: dict[str, Any] = {}
    if complete:
        from vmi.system import MODES, POLICIES

        if data["mode"] not in MODES:
            raise LoadError(f"{path}: mode {data['mode']!r} is not one of {', '.join(MODES)}")
        if data["policy"] not in POLICIES:
            raise LoadError(f"{path}: policy {data['policy']!r} is not one of "
                            f"{', '.join(POLICIES)}")
        if not isinstance(data["macros"], str):
            raise LoadError(f"{path}: macros must be a macro set name, not {data['macros']!r}")
        if not _is_int(data["cpus"]) or not 1 <= data["cpus"] <= 64:
            raise LoadError(f"{path}: cpus must be a number of CPUs, not {data['cpus']!r}")
        if not _is_int(data["seed"]) or data["seed"] < 0:
            raise LoadError(f"{path}: seed must be a number (0 or more), not "
                            f"{data['seed']!r}")
        fields = {key: data[key] for key in ("mode", "policy", "macros", "cpus", "seed")}
    hold = data.get("timer_hold")
    if hold is not None:
        if not (isinstance(hold, dict) and all(_is_int(hold.get(key)) and hold[key] >= 0
                                               for key in ("step", "cpu", "deadline"))):
            raise LoadError(f"{path}: timer_hold must be an object of step, cpu and "
                            f"deadline (numbers), not {hold!r}")
        fields["timer_hold"] = (hold["step"], hold["cpu"], hold["deadline"])
    return Replay(parse_schedule(data["schedule"], f"{path}: schedule"), stop_step,
                  tuple(interleaving) if interleaving else None, texts["description"],
                  path=texts["path"], invariant=texts["invariant"], replayable=replayable,
                  **fields)


def hold_timer(machine: Any, cpu: int, deadline: int) -> None:
    """Move the timer's next tick on ``cpu`` to ``deadline`` (a replay's timer_hold)."""
    if machine.timer.period:
        machine.timer.deadline[cpu] = deadline


def apply_schedule(machine: Any, schedule: tuple[tuple[int, int, int], ...], where: str) -> None:
    try:
        machine.add_schedule(schedule)
    except ValueError as error:
        raise LoadError(f"{where}: {error} (the machine has {len(machine.cpus)} CPUs)") from None


def _resolve(replay_path: str | None, loaded: Replay | None, program: str | None,
             options: dict[str, Any]) -> dict[str, Any]:
    """The kernel configuration: the replay file's, checked against what the command
    line gave (None: not given), else the command line's with the defaults."""
    kernel_options = ("mode", "policy", "seed")
    if program is not None:
        given = [f"--{name}" for name in kernel_options if options[name] is not None]
        if given:
            raise LoadUsageError(f"{', '.join(given)}: choose{'s' if len(given) == 1 else ''} how "
                            "the bundled kernel boots; not for --program")
        if loaded is not None and loaded.complete:
            raise LoadUsageError(f"{replay_path}: a {REPLAY_FORMAT} replays the bundled kernel "
                            f"(mode {loaded.mode}); leave out --program")
        return options
    if loaded is not None and loaded.complete:
        recorded = {"mode": loaded.mode, "policy": loaded.policy, "macros": loaded.macros,
                    "cpus": loaded.cpus, "seed": loaded.seed}
        for name, value in recorded.items():
            given = options[name]
            if given is not None and given != value:
                raise LoadUsageError(f"{replay_path} was recorded with --{name} {value}; the "
                                f"command line says --{name} {given} (leave it out)")
        return {**options, **recorded}
    return {**options, "mode": options["mode"] or DEFAULT_MODE,
            "policy": options["policy"] or DEFAULT_POLICY, "seed": options["seed"] or 0}


def open_engine(*, program: str | None = None, base: int = 0x1000, macros: str | None = None,
                cpus: int | None = None, memory_size: int | None = None,
                schedule: str | None = None, replay: str | None = None,
                interleaving: list[int] | None = None, mode: str | None = None,
                policy: str | None = None, seed: int | None = None) -> tuple[Any, str]:
    """Build the machine and an ``Engine`` over it; returns the engine and a banner.

    ``None`` means "not given on the command line". For the bundled kernel the
    engine is given the monitor (virtual IF, pending vectors, windows, policy
    outcomes); for another platform with an ``annotate(machine, cpu)`` method that
    method is the annotate hook.
    """
    from vmi.debugger.engine import Engine

    if memory_size is not None and program is None:
        raise LoadError("--memory: for --program (the bundled kernel's machine has 16 MiB)")
    loaded_replay = read_replay(replay) if replay is not None else None
    options = _resolve(replay, loaded_replay, program,
                       {"mode": mode, "policy": policy, "macros": macros, "cpus": cpus,
                        "seed": seed})
    loaded = load_machine(program=program, base=base, macros=options["macros"],
                          cpus=options["cpus"] or 1,
                          memory_size=DEFAULT_MEMORY if memory_size is None else memory_size,
                          mode=options["mode"], policy=options["policy"],
                          seed=options["seed"])
    machine = loaded.machine
    if schedule is not None:
        apply_schedule(machine, read_schedule(schedule), schedule)
    if loaded_replay is not None:
        apply_schedule(machine, loaded_replay.schedule, replay or "")
    order = list(loaded_replay.interleaving) if loaded_replay and loaded_replay.interleaving \
        else interleaving
    if order:
        try:
            machine.set_interleaving(order)
        except ValueError as error:
            raise LoadError(f"interleaving: {error}") from None
    monitor = loaded.system.monitor if loaded.system is not None else None
    windows = None
    if monitor is not None and monitor.mode == "naive":
        from vmi.debugger.monitorview import naive_windows

        windows = naive_windows(loaded.system.guest.build.kernel.program)
    # the engine shows the monitor itself; another platform may annotate
    annotate = None if monitor is not None else getattr(machine.platform, "annotate", None)
    engine = Engine(machine, loaded.symbols, labels=loaded.labels, monitor=monitor,
                    windows=windows, annotate=annotate if callable(annotate) else None)
    engine.system = loaded.system
    engine.program = loaded.program
    count = len(machine.cpus)
    if loaded.system is not None:
        banner = (f"vmi debugger: {loaded.what}, {len(loaded.symbols)} symbols. "
                  "'help' lists the commands.")
    else:
        banner = (f"vmi debugger: {loaded.what}, {count} CPU{'s' if count != 1 else ''}, "
                  f"{len(loaded.symbols)} symbols. 'help' lists the commands.")
    if loaded_replay is not None:
        vectors = {vector for _cycle, _cpu, vector in loaded_replay.schedule}
        delivered: list[Any] = []

        def note(record: Any) -> None:
            if record.kind == "interrupt" and record.value in vectors:
                delivered.append(record)

        target = max(0, loaded_replay.stop_step - 1)
        hold = loaded_replay.timer_hold
        if hold is not None and hold[0] <= target and hold[1] < count:
            engine.advance(hold[0], note=note)
            hold_timer(engine.machine, hold[1], hold[2])
        stop = engine.advance(target, note=note)
        banner += (f"\nreplay {replay}: opened at step {engine.machine.steps}, one step before "
                   f"the recorded stop at step {loaded_replay.stop_step}")
        what = [f"invariant {loaded_replay.invariant}" if loaded_replay.invariant else "",
                f"path {loaded_replay.path}" if loaded_replay.path else ""]
        what = [item for item in what if item]
        if what:
            banner += f"\n  {', '.join(what)}"
        if loaded_replay.description:
            banner += f"\n  {loaded_replay.description}"
        if delivered:
            shown = ", ".join(f"{r.value:#x} on cpu{r.cpu} at step {r.step}"
                              for r in delivered[-3:])
            banner += (f"\n  the schedule's vector{'s' if len(vectors) > 1 else ''} "
                       f"{'were' if len(delivered) > 1 else 'was'} last delivered: {shown} "
                       f"('goto {delivered[-1].step}' stands just before "
                       f"{'the last' if len(delivered) > 1 else 'it'})")
        elif loaded_replay.schedule:
            banner += "\n  no interrupt of the schedule has been delivered yet"
        if not loaded_replay.replayable:
            banner += ("\n  (the file marks the run \"replayable\": false: its schedule "
                       "and interleaving alone may not lead to the state the explorer saw)")
        if stop.reason == "machine-stopped":
            banner += f"\n  the machine stopped early: {stop.message}"
    return engine, banner
