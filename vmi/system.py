"""The bundled kernel booted in one of its configurations: the one place that knows
how ``--mode`` maps onto a machine, a kernel image and (perhaps) the VMI monitor.

Every command that runs the bundled kernel (``run``, ``costs``, ``race``,
``debug``, ``gdbserver``) starts from ``boot_system``:

=========  ===========================  ==============================================
mode       kernel macro set             platform
=========  ===========================  ==============================================
native     native (or ``macros=``)      the bare machine
trap       native                       the VMI monitor: nothing to patch, every
                                        privileged instruction traps and is emulated
                                        (pure trap-and-emulate)
vmi        vmi (or vmi-split)           the VMI monitor: annotated sites patched into
                                        ROM calls
naive      naive                        the VMI monitor with no window knowledge
=========  ===========================  ==============================================

Pure trap-and-emulate is the classic scheme the seed explains cannot be right on
the i386: at ring 1 a raw ``iret`` is not privileged, so it does not trap and
cannot restore the virtual IF, and a return to a 16-bit stack keeps the kernel's
ESP[31:16]. It runs the workload (its 16-bit-stack checks fail) and is there to
compare costs.
"""

from __future__ import annotations

from typing import Any

from attrs import define

MODES = ("native", "trap", "vmi", "naive")
POLICIES = ("defer", "fixup", "none")
#: Macro sets a mode may run, the first being its default.
MODE_MACROS = {
    "native": ("native", "vmi", "vmi-split"),
    "trap": ("native",),
    "vmi": ("vmi", "vmi-split"),
    "naive": ("naive",),
}


class SystemError_(ValueError):
    """A configuration that does not exist (a mode with a macro set it cannot run)."""


@define
class System:
    """A booted machine with its guest, monitor (or None) and symbol table."""

    machine: Any
    guest: Any
    monitor: Any | None
    mode: str
    policy: str
    macros: str
    seed: int
    _symbols: dict[str, int] | None = None

    @property
    def symbols(self) -> dict[str, int]:
        """Every name a user can break on: the kernel's, the vsyscall page's, the user
        programs' (``program.name``), and under the monitor the VMI ROM's labels and
        its call slots (``vmi_call_iret``, ...). Built once; do not modify it."""
        if self._symbols is None:
            self._symbols = symbol_table(self)
        return self._symbols

    def describe(self) -> str:
        """One line: ``mode vmi, policy defer, kernel macro set vmi, 1 CPU, seed 0``."""
        cpus = len(self.machine.cpus)
        policy = f", policy {self.policy}" if self.monitor is not None else ""
        return (f"mode {self.mode}{policy}, kernel macro set {self.macros}, "
                f"{cpus} CPU{'s' if cpus > 1 else ''}, seed {self.seed}")


def check_config(mode: str, macros: str | None, policy: str) -> str:
    """The macro set ``mode`` runs (``macros`` or its default); raises SystemError_."""
    if mode not in MODES:
        raise SystemError_(f"unknown mode {mode!r} (choose one of {', '.join(MODES)})")
    if policy not in POLICIES:
        raise SystemError_(f"unknown policy {policy!r} (choose one of {', '.join(POLICIES)})")
    allowed = MODE_MACROS[mode]
    chosen = allowed[0] if macros is None else macros
    if chosen not in allowed:
        raise SystemError_(f"--mode {mode} runs the kernel built with "
                           f"{' or '.join(allowed)}, not {chosen}")
    return chosen


def boot_system(mode: str = "native", *, policy: str = "defer", macros: str | None = None,
                cpus: int = 1, seed: int = 0, workload: Any = None,
                memory_size: int = 16 << 20) -> System:
    """Boot the bundled kernel in ``mode`` (the table in the module docstring) on a
    fresh machine of ``cpus`` CPUs; nothing has run yet when it returns."""
    from vmi.guest import boot
    from vmi.guest.loader import DEFAULT_WORKLOAD
    from vmi.machine import Machine

    chosen = check_config(mode, macros, policy)
    machine = Machine(cpus=cpus, memory_size=memory_size)
    monitor = None
    if mode != "native":
        from vmi.guest.build import build_guest
        from vmi.hypervisor import boot as boot_monitor

        monitor = boot_monitor(machine, [build_guest(chosen).kernel.program],
                               policy=policy if mode == "vmi" else "none",
                               mode="naive" if mode == "naive" else "vmi")
    guest = boot(machine, macros=chosen, seed=seed,
                 workload=DEFAULT_WORKLOAD if workload is None else workload)
    return System(machine=machine, guest=guest, monitor=monitor, mode=mode,
                  policy=policy if mode == "vmi" else "none", macros=chosen, seed=seed)


def symbol_table(system: System) -> dict[str, int]:
    """See ``System.symbols``."""
    build = system.guest.build
    table: dict[str, int] = {}
    for image in system.guest.programs:
        for name, value in image.symbols.items():
            table[f"{image.name}.{name}"] = value
    table.update(build.vsyscall.symbols)
    if system.monitor is not None:
        from vmi.hypervisor import layout

        for name, value in system.monitor.rom.symbols.items():
            if name.startswith(("vmi_", "hc_", "rom_")):
                table[name] = value
        table.setdefault("vmi_rom", layout.ROM_LINEAR)
        for name in dir(layout):  # each call slot: vmi_call_iret = ROM + 32 * 39 ...
            if name.startswith("CALL_"):
                slot = layout.ROM_LINEAR + getattr(layout, name) * layout.SLOT_SIZE
                table.setdefault(f"vmi_call_{name[5:].lower()}", slot)
    table.update(build.kernel.symbols)
    return table
