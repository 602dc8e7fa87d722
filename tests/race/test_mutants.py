"""Mutation testing of the race verdict: plant a realistic bug in a copy of vmi and
check that ``vmi race`` -- its exit status and the invariants it names, not a
pinned list of bytes or counters -- catches it.

Each mutant replaces one exact piece of text in one file of a copy of the ``vmi``
package (the text must occur exactly once, so a refactoring that moves it fails
here loudly instead of silently testing nothing) and runs ``python -m vmi race``
on that copy with the configurations the catalogue names. A mutant is caught when
every one of its configurations exits 1 naming one of the invariants expected.
``test_mutation_score`` prints the score; docs/race.md lists the catalogue.

The mutants run in a subprocess each (a few seconds: boot, sweep); the ones whose
configurations are slower are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from attrs import frozen

import vmi

PACKAGE = Path(vmi.__file__).parent


@frozen
class Mutant:
    """A planted bug: in ``file`` (relative to the package), ``old`` becomes ``new``;
    ``runs`` are ``vmi race`` argument lists, each of which must break one of
    ``expect``."""

    name: str
    what: str
    file: str
    old: str
    new: str
    runs: tuple[tuple[str, ...], ...]
    expect: frozenset[str]
    default: bool = False  # the default command (``vmi race``) is among its runs
    slow: bool = False


#: ``vmi race`` with no options: --mode vmi --policy defer, every path, depth 1
DEFAULT: tuple[str, ...] = ()
FIXUP_IRET = ("--mode", "vmi", "--policy", "fixup", "--path", "iret")
IRET_FAULT = ("--mode", "vmi", "--path", "iret-fault")

CATALOGUE = (
    Mutant("defer-forgets-redelivery",
           "the defer policy steps out of the ROM window and then forgets the interrupt",
           "hypervisor/monitor.py",
           "                self._leave_window(cpu)\n",
           "                self._leave_window(cpu)\n                return\n",
           (DEFAULT,), frozenset({"exactly-once", "liveness"}), default=True),
    Mutant("fixup-frame-off-by-4",
           "the fixup policy finds the half-popped frame 4 bytes too high",
           "hypervisor/monitor.py",
           "return (esp + 8) & M32, int(cpu.rd32(SS_REG, esp))",
           "return (esp + 12) & M32, int(cpu.rd32(SS_REG, esp))",
           (FIXUP_IRET,), frozenset({"integrity", "transparency", "liveness"})),
    Mutant("injection-ignores-virtual-if",
           "the monitor injects pending interrupts whatever the virtual IF",
           "hypervisor/monitor.py",
           "while vcpu.pending and vcpu.interrupts_enabled:",
           "while vcpu.pending:",
           (DEFAULT,), frozenset({"nesting", "lost-work", "transparency"}), default=True),
    Mutant("interrupt-gate-keeps-virtual-if",
           "an injected interrupt gate leaves the virtual IF on",
           "hypervisor/monitor.py",
           '        if gate.kind == "interrupt":\n            vcpu.vif = 0',
           '        if gate.kind == "trap":\n            vcpu.vif = 0',
           (DEFAULT,), frozenset({"nesting"}), default=True),
    Mutant("rom-pending-check-dropped",
           "the ROM's IRET turns the virtual IF on without looking for pending events",
           "hypervisor/rom.S",
           "\tcmpl $0, %ss:PENDING\t\t# enabling with events waiting: the monitor\n"
           "\tjne hc_iret_pending\t\t# takes them on this frame (no iret)\n",
           "",
           (DEFAULT,), frozenset({"liveness"}), default=True),
    Mutant("rom-iret-window-too-short",
           "the monitor's IRET window ends before the ROM's iret",
           "hypervisor/rom.py",
           'Window("iret", symbols["vmi_iret_window_start"], symbols["vmi_iret_window_end"])',
           'Window("iret", symbols["vmi_iret_window_start"], symbols["vmi_iret_insn"])',
           (DEFAULT,), frozenset({"nesting"}), default=True),
    Mutant("rom-sysexit-loses-flags",
           "the ROM's SYSEXIT returns with EFLAGS 0x202 instead of the flags sysexit keeps",
           "hypervisor/rom.S",
           "\tpushfl\t\t\t\t# EFLAGS: the real IF is 1, IOPL 0\n",
           "\tpushl $0x202\t\t\t# EFLAGS: the real IF is 1, IOPL 0\n",
           (DEFAULT,), frozenset({"transparency"}), default=True),
    Mutant("iret-fault-reflected-past-the-site",
           "a fault of the ROM's iret is reflected at the call's return address instead "
           "of the IRET site the kernel's exception table names",
           "hypervisor/monitor.py",
           "                cpu.eip = (ret - 5) & M32\n                vcpu.vif = 0",
           "                cpu.eip = ret & M32\n                vcpu.vif = 0",
           (IRET_FAULT, DEFAULT), frozenset({"liveness"}), default=True),
    Mutant("iret-fault-reflected-in-the-rom",
           "the monitor looks for the ROM's iret at the IRET window's start, so a fault "
           "of the iret is reflected inside the ROM, where no exception-table entry is",
           "hypervisor/monitor.py",
           "            if linear == self._iret_insn:",
           "            if linear == self.rom.iret_window.start:",
           (IRET_FAULT, DEFAULT), frozenset({"liveness"}), default=True),
    Mutant("iret-fault-keeps-virtual-if",
           "a fault of the ROM's iret is reflected with the virtual IF the ROM already "
           "took from the refused frame (natively the fault finds interrupts off)",
           "hypervisor/monitor.py",
           "                vcpu.vif = 0  # as before the call",
           "                pass  # as before the call",
           (IRET_FAULT,), frozenset({"nesting", "transparency", "lost-work", "liveness"})),
    Mutant("no-sti-shadow",
           "STI enables interrupts at once, with no one-instruction shadow",
           "cpu/ops/misc.py",
           "    cpu.shadow = True\n    cpu.flags |= 0x200",
           "    cpu.flags |= 0x200",
           (("--mode", "native", "--path", "sysexit"),), frozenset({"lost-work"})),
    Mutant("syscall-exit-without-cli",
           "syscall_exit samples the work flags with interrupts still on",
           "guest/kernel/entry.S",
           "ENTRY syscall_exit\n\tCLI\t",
           "ENTRY syscall_exit\n\t",
           (("--mode", "native", "--path", "iret"), DEFAULT), frozenset({"lost-work"}),
           default=True),
    Mutant("saved-ebx-corrupted",
           "the system call's return value is stored over the user's saved EBX",
           "guest/kernel/entry.S",
           "\tmovl %eax, EAX(%esp)\t\t# the return value goes back in EAX",
           "\tmovl %eax, EBX(%esp)\t\t# the return value goes back in EAX",
           (("--mode", "native", "--path", "iret"), DEFAULT), frozenset({"integrity"}),
           default=True),
    Mutant("console-handler-oopses",
           "the console interrupt's handler dereferences a bad pointer",
           "guest/kernel/traps.S",
           "ENTRY console_interrupt\n\tCPU_STAT CPU_console, %edx\n",
           "ENTRY console_interrupt\n\tmovl 0x10, %eax\n\tCPU_STAT CPU_console, %edx\n",
           (DEFAULT,), frozenset({"liveness", "exactly-once"}), default=True),
    Mutant("unlock-enables-before-release",
           "_spin_unlock_irqrestore releases the lock after it has enabled interrupts",
           "guest/kernel/sched.S",
           "ENTRY _spin_unlock_irqrestore\n\tSPIN_UNLOCK %eax\n\tGET_THREAD_INFO %ecx\n"
           "\tdecl TI_preempt_count(%ecx)\n\ttestl $IF_MASK, %edx\n\tjz 1f\n\tSTI\n1:\tret\n",
           "ENTRY _spin_unlock_irqrestore\n\tGET_THREAD_INFO %ecx\n"
           "\tdecl TI_preempt_count(%ecx)\n\ttestl $IF_MASK, %edx\n\tjz 1f\n\tSTI\n"
           "\tnop\n1:\tSPIN_UNLOCK %eax\n\tret\n",
           (("--mode", "native", "--path", "spinlock"), DEFAULT),
           frozenset({"spin-irq"}), default=True),
    Mutant("ret-from-intr-test-made-native",
           "ret_from_intr takes any frame of RPL 1 or more for a user frame (the native "
           "kernel's test, which a ring-1 kernel's own frames pass)",
           "guest/kernel/entry.S",
           "\tcmpl $USER_RPL, %eax\n\tjb resume_kernel\n",
           "\tcmpl $1, %eax\n\tjb resume_kernel\n",
           (DEFAULT,), frozenset({"lost-work", "transparency", "integrity", "liveness"}),
           default=True),
    Mutant("spin-wait-never-enables",
           "the spin-wait never re-enables interrupts the caller had on",
           "guest/kernel/macros.S",
           "\ttestl $IF_MASK, \\flags\t\t\t# 2:\n\tjz .Lspin_wait\\@\n\tSTI\n",
           "\ttestl $IF_MASK, \\flags\t\t\t# 2:\n\tjz .Lspin_wait\\@\n\tnop\n",
           (("--mode", "native", "--path", "spinlock", "--cpus", "2"),),
           frozenset({"spin-irq"}), slow=True),
)


def plant(mutant: Mutant, root: Path) -> Path:
    """A copy of the package under ``root`` with the mutant planted; returns the
    directory to put on PYTHONPATH."""
    target = root / "vmi"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / mutant.file
    text = path.read_text()
    assert text.count(mutant.old) == 1, (
        f"{mutant.name}: the text to mutate occurs {text.count(mutant.old)} times in "
        f"{mutant.file}; update the catalogue")
    path.write_text(text.replace(mutant.old, mutant.new))
    return root


def verdict(root: Path, args: tuple[str, ...]) -> tuple[int, set[str], str]:
    """Run ``vmi race ARGS --json`` on the copy: exit status, broken invariants, output."""
    env = dict(os.environ, PYTHONPATH=str(root))
    result = subprocess.run([sys.executable, "-m", "vmi", "race", *args, "--json"],
                            capture_output=True, text=True, env=env, timeout=600,
                            cwd=root)
    try:
        broken = set(json.loads(result.stdout)["broken"])
    except (ValueError, KeyError):
        broken = set()
    return result.returncode, broken, result.stdout[-2000:] + result.stderr[-2000:]


def caught(mutant: Mutant, root: Path) -> tuple[bool, str]:
    """Whether every run of the mutant exits 1 naming an expected invariant."""
    plant(mutant, root)
    notes = []
    for args in mutant.runs:
        status, broken, output = verdict(root, args)
        notes.append(f"{' '.join(args)}: exit {status}, broken {sorted(broken)}")
        if status != 1 or not broken & mutant.expect:
            return False, "\n".join(notes) + "\n" + output
    return True, "\n".join(notes)


def test_every_unmutated_configuration_holds(tmp_path):
    """The configurations the catalogue uses hold on the unmutated copy, so a
    mutant's failure is the mutant's."""
    root = tmp_path / "clean"
    shutil.copytree(PACKAGE, root / "vmi", ignore=shutil.ignore_patterns("__pycache__"))
    for args in sorted({args for m in CATALOGUE if not m.slow for args in m.runs}):
        status, broken, output = verdict(root, args)
        assert status == 0 and not broken, output


@pytest.mark.parametrize("mutant", [
    pytest.param(m, id=m.name, marks=[pytest.mark.slow] if m.slow else [])
    for m in CATALOGUE])
def test_vmi_race_catches_the_planted_bug(mutant, tmp_path):
    found, notes = caught(mutant, tmp_path)
    assert found, f"{mutant.name} ({mutant.what}) was not caught:\n{notes}"


def test_the_default_command_is_run_on_every_mutant_it_can_exercise():
    """Mutants marked ``default`` name the default command among their runs."""
    assert all((DEFAULT in m.runs) == m.default for m in CATALOGUE)


def test_the_catalogue_is_documented():
    """docs/race.md lists every mutant of the catalogue by name."""
    text = (PACKAGE.parent / "docs" / "race.md").read_text()
    missing = [m.name for m in CATALOGUE if f"`{m.name}`" not in text]
    assert not missing, f"docs/race.md does not list {missing}"


if __name__ == "__main__":  # python tests/race/test_mutants.py: the mutation score
    import tempfile

    score = 0
    for m in CATALOGUE:
        with tempfile.TemporaryDirectory() as directory:
            ok, notes = caught(m, Path(directory))
        score += ok
        print(f"{'caught' if ok else 'MISSED'}  {m.name}: {m.what}\n    "
              + notes.splitlines()[0])
    print(f"mutation score: {score} of {len(CATALOGUE)} caught")
