"""A PC booted from its disks, run as a user runs QEMU: what ``vmi boot`` drives,
and what the tests and benchmarks use to boot xv6.

``boot_pc`` opens the disk images (copy-on-write: the guest's writes stay in
memory unless ``write_disks``), builds a ``PcMachine``, installs the firmware
(which checks the boot sector) and returns a ``PcSession``. ``PcSession.run``
runs until one of: the console shows a text (``until``; only output after the
last typing counts, so ``type("ls\\n")`` then ``run(until="$ ")`` stops at
the prompt after ``ls``'s output; lines given to
``type_at_prompts`` are typed one at a time, each when ``until`` shows, as an
expect script does, and the run stops at the prompt after the last), a step budget,
every CPU halted for good, or the machine stopping (a triple fault, an
instruction the model refuses). ``summary()`` gives the figures ``vmi boot``
prints.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field

from vmi.machine import MachineStopped
from vmi.pc.board import DEFAULT_MEMORY, DEFAULT_QUANTUM, PcMachine
from vmi.pc.ide import Disk, DiskError

#: Machine steps run between two looks at the console and the input.
CHUNK = 20_000


class BootError(Exception):
    """The PC cannot be booted as asked (the message names the place and the cause)."""


@define
class Stop:
    """Why a run stopped: ``reason`` is ``until``, ``steps``, ``halted`` or
    ``stopped`` (the machine cannot go on; ``detail`` says why)."""

    reason: str
    detail: str = ""


@define(eq=False)
class PcSession:
    """A booted PC and its console (see the module docstring)."""

    machine: PcMachine
    disks: list[Disk | None]
    seconds: float = 0.0
    #: Output position from which ``until`` looks: where the last typing began.
    _watch_from: int = 0
    _lines: deque[bytes] = field(factory=deque)
    last_stop: Stop | None = None
    _symbols: dict[str, int] = field(factory=dict)

    @property
    def output(self) -> bytes:
        """Everything the guest sent on COM1 so far."""
        return bytes(self.machine.output)

    def text(self) -> str:
        """The console output as text (bytes outside ASCII shown as U+FFFD)."""
        return self.output.decode("latin-1")

    def type(self, data: bytes | str) -> None:
        """Type ``data`` into COM1 (the guest reads it as it reads the UART)."""
        if isinstance(data, str):
            data = data.encode()
        self.machine.uart.feed(data)
        self._watch_from = len(self.machine.output)

    def type_at_prompts(self, data: bytes | str) -> None:
        """Queue ``data``'s lines, each typed when the next run's ``until`` shows."""
        if isinstance(data, str):
            data = data.encode()
        self._lines.extend(data.splitlines(keepends=True))

    def run(self, *, until: str | None = None, steps: int | None = None,
            poll: Callable[[], bool] | None = None) -> Stop:
        """Run until ``until`` shows (after the typed input was read), ``steps``
        machine steps passed, every CPU halted for good, or the machine stopped.
        ``poll()``, called between chunks, may return True to stop (reason
        ``quit``)."""
        machine = self.machine
        target = until.encode() if until is not None else None
        budget = steps
        started = time.perf_counter()
        try:
            while True:
                if target is not None and target in machine.output[self._watch_from:]:
                    self._watch_from = len(machine.output)
                    if self._lines:
                        self.type(self._lines.popleft())
                        continue
                    stop = Stop("until", until or "")
                    break
                if budget is not None and budget <= 0:
                    stop = Stop("steps")
                    break
                if poll is not None and poll():
                    stop = Stop("quit")
                    break
                chunk = CHUNK if budget is None else min(CHUNK, budget)
                ran = machine.run(chunk)
                if budget is not None:
                    budget -= ran
                if ran < chunk and machine.all_stuck():
                    stop = Stop("halted", "every CPU halted with interrupts off "
                                "or nothing to wake it")
                    break
        except MachineStopped as error:
            stop = Stop("stopped", self._place(error.reason))
        finally:
            self.seconds += time.perf_counter() - started
        self.last_stop = stop
        return stop

    def _place(self, reason: str) -> str:
        """``reason`` with each CPU's EIP named by the kernel's symbols, if known."""
        if not self._symbols:
            return reason
        where = [f"cpu{cpu.index} at {self.symbolize(cpu.eip)}" for cpu in self.machine.cpus]
        return f"{reason} ({'; '.join(where)})"

    def load_symbols(self, symbols: dict[str, int]) -> None:
        """Name addresses with ``symbols`` (a kernel ELF's, say) in reports."""
        self._symbols = dict(symbols)

    def symbolize(self, address: int) -> str:
        """``name+0xN`` for the nearest symbol at or below ``address``, else hex."""
        best = None
        for name, value in self._symbols.items():
            if value <= address and (best is None or value > best[1]):
                best = (name, value)
        if best is None or address - best[1] > 0x10000:
            return f"{address:#x}"
        offset = address - best[1]
        return f"{address:#x} <{best[0]}+{offset:#x}>" if offset else \
            f"{address:#x} <{best[0]}>"

    def summary(self) -> dict[str, Any]:
        """What ran: instructions, cycles, interrupts, disk traffic, why it stopped."""
        machine = self.machine
        instructions = sum(cpu.instructions for cpu in machine.cpus)
        disks = [None if d is None else {"path": d.path, "reads": d.reads, "writes": d.writes}
                 for d in self.disks]
        stop = self.last_stop
        return {
            "cpus": len(machine.cpus),
            "memory": machine.memory.size,
            "instructions": instructions,
            "cycles": [cpu.cycles for cpu in machine.cpus],
            "interrupts": sum(machine.pic.delivered),
            "disks": disks,
            "seconds": round(self.seconds, 3),
            "mips": round(instructions / self.seconds / 1e6, 3) if self.seconds else None,
            "stopped": None if stop is None else stop.reason,
            "detail": None if stop is None else stop.detail,
            "started_cpus": sum(1 for waiting in machine.waiting if not waiting),
        }

    def flush_disks(self) -> int:
        """Write the guest's disk writes into the image files opened writable."""
        return sum(disk.flush() for disk in self.disks if disk is not None and disk.writable)


def boot_pc(disks: Sequence[str | os.PathLike[str]], *, cpus: int = 1,
            memory_size: int = DEFAULT_MEMORY, write_disks: bool = False,
            serial: Callable[[int], None] | None = None,
            quantum: int | None = DEFAULT_QUANTUM) -> PcSession:
    """Open ``disks`` (disk 0 boots), build the PC, install the firmware; nothing
    has run yet. Raises ``BootError`` (one line) for an unusable disk or machine."""
    from vmi.pc import firmware

    if not disks:
        raise BootError("no disk to boot from (give --disk FILE)")
    if len(disks) > 2:
        raise BootError(f"{len(disks)} disks given; the IDE channel holds two")
    if cpus < 1 or cpus > 8:
        raise BootError(f"{cpus} CPUs: choose 1 to 8")
    try:
        opened: list[Disk | None] = [Disk.open(path, writable=write_disks) for path in disks]
    except DiskError as error:
        raise BootError(str(error)) from None
    try:
        machine = PcMachine(cpus=cpus, memory_size=memory_size, disks=opened,
                            serial=serial, quantum=quantum)
    except ValueError as error:
        raise BootError(f"--memory: {error}") from None
    boot_disk = opened[0]
    assert boot_disk is not None
    try:
        firmware.install(machine.memory, cpus=cpus, memory_size=memory_size,
                         boot_sector=boot_disk.peek(0, 512), ioapic_id=machine.ioapic.apic_id,
                         hard_disks=len(disks), source=f"disk 0 ({boot_disk.path})")
    except firmware.FirmwareError as error:
        raise BootError(str(error)) from None
    return PcSession(machine=machine, disks=opened + [None] * (2 - len(opened)))
