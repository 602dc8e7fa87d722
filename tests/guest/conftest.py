"""Shared helpers for the guest-kernel tests: booting, breakpoints, frames.

A breakpoint is a kernel symbol: ``run_to`` steps the machine until a CPU is
about to execute the instruction at that address. Frames are read through
the CPU's paging (``linear``), so any virtual address works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from vmi.guest import Guest, boot
from vmi.machine import Machine

#: The pt_regs offsets of Linux 2.6.16 (reference section 6).
PT_REGS = {"EBX": 0x00, "ECX": 0x04, "EDX": 0x08, "ESI": 0x0C, "EDI": 0x10, "EBP": 0x14,
           "EAX": 0x18, "DS": 0x1C, "ES": 0x20, "ORIG_EAX": 0x24, "EIP": 0x28, "CS": 0x2C,
           "EFLAGS": 0x30, "OLDESP": 0x34, "OLDSS": 0x38}
GENERAL = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")  # cpu.r order
USER_CS, USER_DS, KERNEL_CS, KERNEL_DS, ESPFIX_SS = 0x73, 0x7B, 0x60, 0x68, 0xD0
RUN_STEPS = 3_000_000


def new_guest(cpus: int = 1, **kwargs: Any) -> Guest:
    return boot(Machine(cpus=cpus), **kwargs)


def run_to(guest: Guest, target: int | str | Iterable[int | str], *, cpu: int | None = None,
           when: Callable[[Any], bool] | None = None, max_steps: int = 600_000) -> Any:
    """Step until a CPU (``cpu`` if given) is about to execute one of the target
    addresses (symbols or addresses) and ``when(cpu)`` holds; returns that CPU."""
    targets = [target] if isinstance(target, int | str) else list(target)
    addresses = {guest.build.symbol(t) if isinstance(t, str) else t for t in targets}
    machine = guest.machine
    for _ in range(max_steps):
        index, _kind, _value = machine.step()
        if cpu is not None and index != cpu:
            continue
        this = machine.cpus[index]
        if this.eip in addresses and (when is None or when(this)):
            return this
    raise AssertionError(f"no CPU reached {targets} in {max_steps} steps")


def read32(cpu: Any, linear: int) -> int:
    return cpu.mem.read32(cpu.linear_to_physical(linear & 0xFFFFFFFF))


def frame(cpu: Any, address: int) -> dict[str, int]:
    """The pt_regs frame at ``address`` (a kernel virtual address)."""
    return {name: read32(cpu, address + offset) for name, offset in PT_REGS.items()}


def registers(cpu: Any) -> dict[str, int]:
    values = dict(zip(GENERAL, cpu.r, strict=True))
    values["DS"], values["ES"], values["SS"] = cpu.sreg[3], cpu.sreg[0], cpu.sreg[2]
    values["EFLAGS"] = cpu.eflags
    return values


def step_cpu(guest: Guest, index: int) -> tuple[int, str, int]:
    """One step of CPU ``index`` (the others wait)."""
    machine = guest.machine
    while True:
        result = machine.step()
        if result[0] == index:
            return result


@pytest.fixture(scope="session")
def native_runs() -> dict[int, Guest]:
    """The default workload run to completion natively on 1 and 2 CPUs."""
    runs = {}
    for cpus in (1, 2):
        guest = new_guest(cpus)
        guest.run(RUN_STEPS)
        runs[cpus] = guest
    return runs
