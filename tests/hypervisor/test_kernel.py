"""The bundled kernel (``vmi.guest``) under the monitor, on one CPU with each window
policy and in naive mode, and on two CPUs, against the same kernel run natively.

Guest-visible results must be the native ones, the 16-bit-stack task (``stack16``)
included: its returns to a 16-bit stack (the seed's deferred case) go through the
monitor's espfix as many times as the native kernel's ldt_ss took its espfix stack.
"""

from __future__ import annotations

from typing import Any

import pytest

from vmi.guest import build, loader
from vmi.hypervisor import boot, layout
from vmi.machine import Machine

STEPS = 3_000_000


def run(macros: str, mode: str | None, policy: str = "defer",
        cpus: int = 1) -> tuple[Any, Any]:
    machine = Machine(cpus=cpus, memory_size=16 << 20)
    monitor = None
    if mode is not None:
        kernel = build.build_guest(macros).kernel.program
        monitor = boot(machine, [kernel], policy=policy, mode=mode)
    guest = loader.boot(machine, macros=macros)
    guest.run(STEPS)
    if monitor is not None:
        assert monitor.stats.hypercalls["init"] == cpus  # every CPU opted in
    return guest, monitor


@pytest.fixture(scope="module")
def native() -> Any:
    guest, _ = run("vmi", None)
    assert guest.completed and not guest.check_failures()
    return guest


def compare(native: Any, guest: Any, monitor: Any) -> None:
    assert guest.completed, guest.check_failures()
    counters, reference = guest.counters(), native.counters()
    for name in ("checks_failed", "kernel_oopses", "mutual_exclusion_violations",
                 "tasks_exited", "work_counter", "signals_sent"):
        assert counters[name] == reference[name], name
    for task, expected in zip(guest.tasks(), native.tasks(), strict=True):
        assert (task["state"], task["exit_code"], task["syscalls"]) == (
            expected["state"], expected["exit_code"], expected["syscalls"]), task["program"]
    stats = monitor.stats
    assert stats.iret16_refused == 0
    assert guest.summary()["espfix_returns"] == 0  # deprivileged, ldt_ss leaves it to the monitor
    # stack16 checks its whole ESP after every return (checks_failed above); how many
    # returns there are depends on where the timer ticks land, as natively
    assert stats.iret16_espfix > 0 and native.summary()["espfix_returns"] > 0


@pytest.mark.parametrize("policy", ["defer", "fixup"])
def test_two_cpus(native: Any, policy: str) -> None:
    guest, monitor = run("vmi", "vmi", policy, cpus=2)
    compare(native, guest, monitor)
    assert all(monitor.active(cpu) for cpu in guest.machine.cpus)
    assert monitor.stats.hypercalls["init"] == 2


@pytest.mark.parametrize("policy", ["defer", "fixup", "none"])
def test_vmi_mode(native: Any, policy: str) -> None:
    guest, monitor = run("vmi", "vmi", policy)
    compare(native, guest, monitor)
    assert monitor.stats.patched_sites == len(build.build_guest("vmi").kernel.program.annotations)
    assert monitor.active(guest.machine.cpus[0])


def test_naive_mode(native: Any) -> None:
    kernel = build.build_guest("naive").kernel.program
    assert kernel.symbols.get("VMI_VIF") == layout.VMI_VIF
    guest, monitor = run("naive", "naive")
    assert guest.completed
    assert monitor.stats.patched_sites == 0
    # no ROM IRET: nothing refuses the 16-bit return, which loads only SP (the naive
    # kernel's own checks see the corrupted ESP, reference §4)
    assert monitor.stats.iret16_refused == 0
