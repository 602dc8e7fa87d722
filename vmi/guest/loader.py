"""Load the guest into a ``Machine``, run it, and read what the kernel counted.

``boot(machine, ...)`` writes the boot ROM, the kernel, the vsyscall page and
one user program per workload entry into physical memory, fills in the
kernel's ``boot_params`` (number of CPUs, the tasks' entry points and stacks,
the vsyscall return address, the timer divisor, per-CPU start-up delays), and
returns a ``Guest``: the handle that runs the machine to completion and reads
the kernel's counters through the symbol table.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from vmi.guest.build import (
    MAX_CPUS,
    MAX_TASKS,
    PROGRAM_SLOT,
    GuestBuild,
    Image,
    build_guest,
    user_program,
)

#: The workload `vmi run` boots: one of each program, two lockers to contend.
DEFAULT_WORKLOAD = ("syscalls", "locker", "locker", "fpu", "stack16")
#: The workload of the race explorer's ``iret-fault`` path: ``badseg``, whose return
#: IRET faults (it is killed with SIGSEGV through iret_exc), then ``syscalls``, which
#: runs once it is gone.
IRET_FAULT_WORKLOAD = ("badseg", "syscalls")

#: Offsets in kernel/defs.S.
BP_NR_CPUS, BP_NR_TASKS, BP_SYSENTER_RETURN, BP_PIT_DIVISOR = 0, 4, 8, 12
BP_BOOT_DELAY, BP_TASKS, BP_TASK_SIZE = 16, 32, 8
TASK_SIZE = 192
TASK_FIELDS = {"state": 0, "flags": 4, "pid": 8, "signals": 36, "last_signal": 40,
               "exit_code": 44, "nm_traps": 48, "syscalls": 56, "cpus": 60}
TASK_STATES = {0: "running", 1: "exited", 2: "unused"}
CPU_STATS_SIZE = 64
CPU_FIELDS = ("ticks", "irqs", "switches", "sys_int80", "sys_sysenter", "preempt_user",
              "preempt_kernel", "idle_halts", "nm_traps", "espfix", "exceptions", "spurious",
              "signals", "online", "console")
#: Global counters of the kernel (kernel/data.S), read by name.
KERNEL_COUNTERS = (
    "jiffies", "nr_tasks", "tasks_alive", "tasks_exited", "system_halted", "checks_failed",
    "kernel_oopses", "mutual_exclusion_violations", "user_checks_passed", "user_checks_failed",
    "last_failed_check", "user_faults", "signals_sent", "signals_delivered", "exception_fixups",
    "syscall_traces", "ldt_writes", "work_counter", "cpus_online",
)
SPINLOCKS = ("runqueue_lock", "console_spinlock", "work_lock")
#: System calls reported by name (kernel/defs.S, Linux's numbers).
SYSCALL_NAMES = {1: "exit", 4: "write", 20: "getpid", 37: "kill", 123: "modify_ldt",
                 158: "sched_yield", 320: "vmi_lock_work", 321: "vmi_check", 322: "vmi_query"}
NR_SYSCALLS = 323
#: HZ = 1000 at the PIT's 1.193182 MHz (kernel/defs.S DEFAULT_PIT_DIVISOR).
DEFAULT_PIT_DIVISOR = 1193


class Guest:
    """The guest kernel booted on ``machine``; see the module docstring."""

    def __init__(self, machine: Any, build: GuestBuild, workload: Sequence[str],
                 programs: Sequence[Image]) -> None:
        self.machine = machine
        self.build = build
        self.workload = tuple(workload)
        self.programs = tuple(programs)

    # -- reading kernel memory ---------------------------------------------------
    def address(self, symbol: str) -> int:
        """The physical address of a kernel symbol."""
        return self.build.kernel_physical(symbol)

    def read32(self, symbol: str, offset: int = 0) -> int:
        return self.machine.memory.read32(self.address(symbol) + offset)

    def counters(self) -> dict[str, int]:
        return {name: self.read32(name) for name in KERNEL_COUNTERS}

    def cpu_stats(self) -> list[dict[str, int]]:
        rows = []
        for cpu in range(len(self.machine.cpus)):
            base = cpu * CPU_STATS_SIZE
            rows.append({name: self.read32("cpu_stats", base + 4 * i)
                         for i, name in enumerate(CPU_FIELDS)})
        return rows

    def syscall_counts(self) -> dict[str, int]:
        counts = {name: self.read32("syscall_counts", 4 * nr) for nr, name in
                  SYSCALL_NAMES.items()}
        named = sum(counts.values())
        total = sum(self.read32("syscall_counts", 4 * nr) for nr in range(NR_SYSCALLS))
        counts["other"] = total - named
        return counts

    def spinlocks(self) -> dict[str, int]:
        """How often ``lock decb`` found each lock held."""
        return {name: self.read32(name, 4) for name in SPINLOCKS}

    def tasks(self) -> list[dict[str, Any]]:
        rows = []
        for index, image in enumerate(self.programs):
            base = index * TASK_SIZE
            row: dict[str, Any] = {"program": image.name}
            for name, offset in TASK_FIELDS.items():
                row[name] = self.read32("task_structs", base + offset)
            row["state"] = TASK_STATES.get(row["state"], str(row["state"]))
            row["cpus"] = [cpu for cpu in range(MAX_CPUS) if row["cpus"] >> cpu & 1]
            rows.append(row)
        return rows

    # -- running -------------------------------------------------------------------
    def run(self, max_steps: int) -> int:
        """Run until every CPU has stopped for good (or ``max_steps``); returns the
        steps taken. ``MachineStopped`` (a triple fault) propagates."""
        return self.machine.run(max_steps)

    @property
    def completed(self) -> bool:
        """Every task exited, the kernel announced it, and every CPU halted."""
        counters = self.counters()
        return (counters["system_halted"] == 1 and counters["tasks_alive"] == 0
                and counters["tasks_exited"] == len(self.workload)
                and counters["kernel_oopses"] == 0 and self.machine.all_stuck())

    def expected_work(self) -> int:
        """What work_counter must reach: every locker's calls, none lost."""
        total = 0
        for image in self.programs:
            if image.name == "locker":
                symbols = image.symbols
                total += 2 * symbols["ROUNDS"] * symbols["PER_CALL"]
        return total

    def check_failures(self) -> list[str]:
        """Every check that did not hold, in words (empty when all held)."""
        failures = []
        counters = self.counters()
        if not self.completed:
            failures.append("the workload did not complete")
        if counters["checks_failed"]:
            failures.append(f"kernel checks failed: {counters['checks_failed']} "
                            f"(mutual exclusion violations "
                            f"{counters['mutual_exclusion_violations']}, "
                            f"oopses {counters['kernel_oopses']})")
        if counters["user_checks_failed"]:
            failures.append(f"user checks failed: {counters['user_checks_failed']} "
                            f"(last: pid {counters['last_failed_check'] >> 16}, "
                            f"check {counters['last_failed_check'] & 0xFFFF})")
        if counters["user_faults"]:
            failures.append(f"user tasks killed by exceptions: {counters['user_faults']}")
        for task in self.tasks():
            if task["state"] != "exited" or task["exit_code"] != 0:
                failures.append(f"task {task['pid']} ({task['program']}) {task['state']} "
                                f"with status {task['exit_code']}")
        if counters["work_counter"] != self.expected_work():
            failures.append(f"work_counter {counters['work_counter']}, expected "
                            f"{self.expected_work()}: an update was lost")
        return failures

    def summary(self) -> dict[str, Any]:
        """Everything `vmi run` reports, as plain data."""
        machine = self.machine
        counters = self.counters()
        cpu_stats = self.cpu_stats()
        failures = self.check_failures()
        per_cpu = []
        for cpu, stats in zip(machine.cpus, cpu_stats, strict=True):
            per_cpu.append({"instructions": cpu.instructions, "cycles": cpu.cycles,
                            "interrupts": machine.pic.delivered[cpu.index], **stats})
        syscalls = self.syscall_counts()
        return {
            "macros": self.build.macros,
            "cpus": len(machine.cpus),
            "steps": machine.steps,
            "instructions": sum(cpu.instructions for cpu in machine.cpus),
            "cycles": max(cpu.cycles for cpu in machine.cpus),
            "syscalls": {
                "total": sum(syscalls.values()),
                "int80": sum(s["sys_int80"] for s in cpu_stats),
                "sysenter": sum(s["sys_sysenter"] for s in cpu_stats),
                "by_name": syscalls,
            },
            "interrupts": sum(machine.pic.delivered),
            "ticks": sum(s["ticks"] for s in cpu_stats),
            "reschedules": {
                "switches": sum(s["switches"] for s in cpu_stats),
                "user_preemptions": sum(s["preempt_user"] for s in cpu_stats),
                "kernel_preemptions": sum(s["preempt_kernel"] for s in cpu_stats),
            },
            "signals": {"sent": counters["signals_sent"],
                        "delivered": counters["signals_delivered"]},
            "fpu_traps": sum(s["nm_traps"] for s in cpu_stats),
            "espfix_returns": sum(s["espfix"] for s in cpu_stats),
            "exception_fixups": counters["exception_fixups"],
            "spinlock_contention": self.spinlocks(),
            "work": {"counter": counters["work_counter"], "expected": self.expected_work()},
            "per_cpu": per_cpu,
            "tasks": self.tasks(),
            "checks_failed": counters["checks_failed"] + counters["user_checks_failed"],
            "kernel_checks_failed": counters["checks_failed"],
            "user_checks": {"passed": counters["user_checks_passed"],
                            "failed": counters["user_checks_failed"]},
            "completed": self.completed,
            "failures": failures,
            "console": machine.console.text,
        }


def seeded_delays(seed: int, cpus: int) -> list[int]:
    """Per-CPU delay loops at the end of cpu_init: seed 0 gives none."""
    if not seed:
        return [0] * cpus
    rng = random.Random(seed)
    return [rng.randrange(0, 4000) for _ in range(cpus)]


def seeded_interleaving(seed: int, cpus: int) -> list[int] | None:
    """A CPU interleaving for the machine: round-robin for seed 0, else runs of
    1-4 steps per CPU in a random order (every CPU appears)."""
    if not seed or cpus == 1:
        return None
    rng = random.Random(seed ^ 0x5EED)
    order: list[int] = []
    for _ in range(8):
        for cpu in rng.sample(range(cpus), cpus):
            order += [cpu] * rng.randint(1, 4)
    return order


def boot(machine: Any, *, macros: str = "native", workload: Sequence[str] = DEFAULT_WORKLOAD,
         seed: int = 0, pit_divisor: int = DEFAULT_PIT_DIVISOR) -> Guest:
    """Load the guest into ``machine`` (fresh from reset) and return its ``Guest``."""
    cpus = len(machine.cpus)
    if cpus > MAX_CPUS:
        raise ValueError(f"the guest kernel supports up to {MAX_CPUS} CPUs, not {cpus}")
    if not workload:
        raise ValueError("the workload needs at least one program")
    if len(workload) > MAX_TASKS:
        raise ValueError(f"the guest kernel holds up to {MAX_TASKS} tasks, not {len(workload)}")
    if not 1 <= pit_divisor <= 0xFFFF:
        raise ValueError(f"PIT divisor {pit_divisor} is outside 1..65535")
    build = build_guest(macros)
    if machine.memory.size < 8 << 20:
        raise ValueError("the guest needs at least 8 MiB of memory")
    memory = machine.memory
    for image in (build.rom, build.kernel, build.vsyscall):
        memory.load(image.load_address, image.program.image)
    programs = [user_program(name, slot) for slot, name in enumerate(workload)]
    for image in programs:
        memory.load(image.load_address, image.program.image)

    params = build.kernel_physical("boot_params")
    memory.write32(params + BP_NR_CPUS, cpus)
    memory.write32(params + BP_NR_TASKS, len(programs))
    memory.write32(params + BP_SYSENTER_RETURN, build.vsyscall.symbols["SYSENTER_RETURN"])
    memory.write32(params + BP_PIT_DIVISOR, pit_divisor)
    for cpu, delay in enumerate(seeded_delays(seed, cpus)):
        memory.write32(params + BP_BOOT_DELAY + 4 * cpu, delay)
    for index, image in enumerate(programs):
        entry = image.program.symbols["_start"]
        stack = image.program.base + PROGRAM_SLOT  # the top of its slot
        memory.write32(params + BP_TASKS + BP_TASK_SIZE * index, entry)
        memory.write32(params + BP_TASKS + BP_TASK_SIZE * index + 4, stack)
    interleaving = seeded_interleaving(seed, cpus)
    if interleaving is not None:
        machine.set_interleaving(interleaving)
    return Guest(machine, build, workload, programs)
