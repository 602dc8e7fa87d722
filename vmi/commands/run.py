"""``vmi run``: boot the bundled guest kernel and its workload, print a summary.

The machine starts every CPU at the reset vector; the boot ROM enters
protected mode and jumps to the kernel, which turns on paging, brings up the
CPUs, and runs the user programs (docs/guest.md) until all have exited. The
summary comes from the kernel's own counters (read through the symbol
table) and the machine's. Exit status 0 only when the workload completed and
every check held.

With several CPUs the machine gives each CPU a quantum of instruction
boundaries per turn (``--quantum``, default ``vmi.machine.DEFAULT_QUANTUM``):
deterministic like the exact one-boundary interleaving (``--quantum 1``), and
about four times faster.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from vmi.machine import DEFAULT_QUANTUM
from vmi.system import MODES, POLICIES


@click.command("run")
@click.option("--mode", type=click.Choice(MODES), default="native", show_default=True,
              help="native: the bare machine; trap: the native kernel under the VMI "
                   "monitor (pure trap-and-emulate); vmi: the vmi-annotated kernel under "
                   "the monitor; naive: the naive paravirtual kernel under the monitor.")
@click.option("--policy", type=click.Choice(POLICIES), default="defer",
              show_default=True,
              help="Under the monitor: what an interrupt inside the ROM's IRET/SYSEXIT "
                   "window does (lguest-style defer, Xen-style fixup, or none).")
@click.option("--macros", type=click.Choice(("native", "vmi", "vmi-split", "naive")),
              default=None,
              help="The kernel's macro set (default: the mode's own; native runs native, "
                   "vmi or vmi-split, vmi runs vmi or vmi-split).")
@click.option("--cpus", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Number of CPUs.")
@click.option("--steps", type=click.IntRange(min=1), default=10_000_000, show_default=True,
              help="Give up after this many machine steps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Vary the timer phase and CPU interleaving (0: round-robin, no delays).")
@click.option("--quantum", type=click.IntRange(min=1), default=DEFAULT_QUANTUM,
              show_default=True,
              help="With several CPUs, the instruction boundaries each CPU runs per "
                   "turn (1: the exact one-instruction interleaving, slower).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(mode: str, policy: str, macros: str | None, cpus: int, steps: int, seed: int,
            quantum: int, as_json: bool) -> None:
    """Boot the guest kernel, run its workload to completion and summarise."""
    from vmi.machine import MachineStopped
    from vmi.system import SystemError_, boot_system

    try:
        system = boot_system(mode, policy=policy, macros=macros, cpus=cpus, seed=seed)
    except SystemError_ as error:
        raise click.UsageError(f"--macros: {error}") from None
    machine, guest, monitor = system.machine, system.guest, system.monitor
    # Quanta: one CPU's batches up to the next event or the quantum, then the next
    # CPU's (Machine.run); on one CPU the result is the same whatever the quantum.
    machine.quantum = quantum
    stopped = None
    try:
        guest.run(steps)
    except MachineStopped as error:
        stopped = error.reason
    summary: dict[str, Any] = {"mode": mode, "seed": seed, "quantum": quantum,
                               **guest.summary()}
    if monitor is not None:
        stats = monitor.stats.as_dict()
        summary["policy"] = system.policy
        summary["exits"] = stats["exits"]
        summary["patched_sites"] = stats["patched_sites"]
        summary["monitor"] = stats
    if stopped:
        summary["failures"].insert(0, f"machine stopped: {stopped}")
    elif not summary["completed"] and machine.steps >= steps:
        summary["failures"].insert(0, f"not finished after {steps:,} steps")
    ok = summary["completed"] and not summary["failures"]
    summary["exit_status"] = 0 if ok else 1
    if as_json:
        click.echo(json.dumps(summary))
    else:
        _print_summary(summary)
    sys.exit(summary["exit_status"])


def _print_summary(s: dict[str, Any]) -> None:
    echo = click.echo
    several = s["cpus"] > 1
    cpus = f"{s['cpus']} CPUs (quantum {s['quantum']:,})" if several else "1 CPU"
    policy = f", policy {s['policy']}" if "policy" in s else ""
    echo(f"vmi run: mode {s['mode']}{policy}, {cpus}, kernel macro set "
         f"{s['macros']}, seed {s['seed']}")
    echo("console:")
    for line in s["console"].splitlines():
        echo(f"  | {line}")
    syscalls = s["syscalls"]
    by_name = ", ".join(f"{name} {count}" for name, count in syscalls["by_name"].items()
                        if count)
    resched = s["reschedules"]
    locks = ", ".join(f"{name} {count}" for name, count in s["spinlock_contention"].items())
    rows = [
        ("instructions", f"{s['instructions']:,}"),
        ("cycles", f"{s['cycles']:,} (the busiest CPU)"),
        ("steps", f"{s['steps']:,}"),
        ("syscalls", f"{syscalls['total']:,} (int $0x80 {syscalls['int80']:,}, "
                     f"sysenter {syscalls['sysenter']:,}): {by_name}"),
        ("interrupts", f"{s['interrupts']:,} delivered ({s['ticks']:,} timer ticks)"),
        ("reschedules", f"{resched['switches']:,} context switches: "
                        f"{resched['user_preemptions']:,} on return to user mode, "
                        f"{resched['kernel_preemptions']:,} kernel preemptions"),
        ("signals", f"{s['signals']['sent']} sent, {s['signals']['delivered']} delivered"),
        ("fpu", f"{s['fpu_traps']} device_not_available traps (lazy FPU)"),
        ("espfix", f"{s['espfix_returns']} returns to a 16-bit stack through ldt_ss"),
        ("fixups", f"{s['exception_fixups']} exceptions resolved by the exception table"),
        ("spinlocks", f"held when tried: {locks}"),
        ("shared work", f"{s['work']['counter']} of {s['work']['expected']} updates"),
    ]
    if "monitor" in s:
        rows += _monitor_rows(s["monitor"])
    for label, text in rows:
        echo(f"{label:<13} {text}")
    echo("per CPU:      cpu  instructions      cycles  interrupts  switches  syscalls  "
         "idle-halts")
    for index, cpu in enumerate(s["per_cpu"]):
        echo(f"{'':14}{index:>3}  {cpu['instructions']:>12,}  {cpu['cycles']:>10,}  "
             f"{cpu['interrupts']:>10,}  {cpu['switches']:>8,}  "
             f"{cpu['sys_int80'] + cpu['sys_sysenter']:>8,}  {cpu['idle_halts']:>10,}")
    echo("tasks:        pid  program    state    status  syscalls  cpus")
    for task in s["tasks"]:
        cpus = ",".join(str(c) for c in task["cpus"]) or "-"
        echo(f"{'':14}{task['pid']:>3}  {task['program']:<9}  {task['state']:<7}  "
             f"{task['exit_code']:>6}  {task['syscalls']:>8}  {cpus}")
    user = s["user_checks"]
    if s["exit_status"] == 0:
        echo(f"checks        all held: {user['passed']} user reports passed, "
             f"kernel checks failed {s['kernel_checks_failed']}")
    else:
        echo("checks        FAILED:")
        for failure in s["failures"]:
            echo(f"  - {failure}")


def _monitor_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The hypervisor's figures: exits by kind and what they cost, the patcher's work,
    injections and what the window policy did."""
    exits = ", ".join(f"{kind} {count:,}" for kind, count in m["exits"].items()) or "none"
    emulated = ", ".join(f"{name} {count:,}" for name, count in m["emulated"].items()) or "none"
    injected = ", ".join(f"{name} {count:,}" for name, count in m["injected"].items()) or "none"
    return [
        ("exits", f"{sum(m['exits'].values()):,} ({exits}), {m['exit_cycles']:,} cycles"),
        ("emulated", emulated),
        ("patched", f"{m['patched_sites']} sites ({m['skipped_sites']} skipped)"),
        ("injected", f"{m['frames']:,} frames built: {injected}"),
        ("window", f"{m['deferred']} deferred, {m['fixups']} fixed up, "
                   f"{m['nested_in_window']} nested in the window"),
        ("iret16", f"{m['iret16_espfix']} returns to a 16-bit stack by the monitor's espfix, "
                   f"{m['iret16_refused']} refused"),
    ]
