"""Native behaviour as the specification: the ``transparency`` invariant.

A paravirtual kernel is correct when nothing user mode can observe tells it apart
from the native kernel. For a branch of a paravirtual configuration, what user
mode observed (``Checker.observation``: every return to user mode with its EIP,
registers, observable flags and the words at the top of its stack, and the
console's output) must equal what some native run of the same path showed with
the same number of interrupts raised at any of the native path's boundaries (or
fewer: an interrupt that coalesces with one already pending is one interrupt).

The native outcome set is computed once per path and depth, by sweeping the
native kernel (``--mode native``) over every schedule of that depth. It is small:
the native kernel takes an interrupt only where its interrupts are on, so most
boundaries give the same outcome. The check knows nothing of the monitor, its
windows or the kernel's symbols, so a wrong window table cannot blind it.

What it misses: behaviour user mode cannot see within one branch (kernel state
that matters only later), and native outcomes that need an arrival point the
native path does not have (the two kernels run the same user programs, so their
user-mode boundaries are the same).
"""

from __future__ import annotations

import hashlib
from typing import Any

from attrs import evolve

REGISTERS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
Observation = tuple[tuple[Any, ...], bytes]


def digest(observation: Observation) -> str:
    """A short stable name for an observation (outcomes carry it, not the data)."""
    return hashlib.sha256(repr(observation).encode()).hexdigest()[:16]


class NativeReference:
    """What the native kernel shows on the path of ``config`` (prepared on first use)."""

    def __init__(self, config: Any) -> None:
        self.config = evolve(config, mode="native", macros=None, policy="defer")
        self._scenario: Any = None
        self._depth = -1
        self._known: dict[str, Observation] = {}

    def observations(self, depth: int) -> dict[str, Observation]:
        """Every distinct observation of native schedules of up to ``depth`` interrupts."""
        if depth > self._depth:
            from vmi.race.explorer import prepare, schedules

            if self._scenario is None:
                self._scenario = prepare(self.config)
            native = self._scenario
            for k in range(self._depth + 1, depth + 1):
                for schedule in ([()] if k == 0 else schedules(native, k)):
                    outcome = native.run_branch(schedule)
                    if outcome.reached and native.last_observation is not None:
                        self._known.setdefault(outcome.observed, native.last_observation)
            self._depth = depth
        return self._known

    def check(self, checker: Any, observation: Observation, depth: int) -> Any:
        """None when ``observation`` is one the native kernel shows, else the
        ``transparency`` violation naming the first difference from the nearest."""
        known = self.observations(depth)
        if digest(observation) in known:
            return None
        nearest = min(known.values(), key=lambda native: _distance(observation, native))
        cpu = checker.view.machine.cpus[0]
        return checker._violation("transparency", cpu, (
            f"user mode saw what no native run of this path shows ({len(known)} native "
            f"outcomes): {difference(observation, nearest)}"))


def _distance(seen: Observation, native: Observation) -> tuple[int, int, int]:
    returns, console = seen
    common = 0
    for mine, theirs in zip(returns, native[0], strict=False):
        if mine != theirs:
            break
        common += 1
    return (-common, abs(len(returns) - len(native[0])), int(console != native[1]))


def difference(seen: Observation, native: Observation) -> str:
    """The first difference between two observations, in words."""
    returns, console = seen
    for i, (mine, theirs) in enumerate(zip(returns, native[0], strict=False)):
        if mine == theirs:
            continue
        eip, regs, flags, stack = mine
        n_eip, n_regs, n_flags, n_stack = theirs
        where = f"return {i + 1} to user mode"
        if eip != n_eip:
            return f"{where} lands at {eip:#x}, natively at {n_eip:#x}"
        for name, a, b in zip(REGISTERS, regs, n_regs, strict=True):
            if a != b:
                return f"{where} (at {eip:#x}): %{name} is {a:#x}, natively {b:#x}"
        if flags != n_flags:
            return f"{where} (at {eip:#x}): flags {flags:#x}, natively {n_flags:#x}"
        return (f"{where} (at {eip:#x}): the user stack holds "
                f"{_words(stack)}, natively {_words(n_stack)}")
    if len(returns) != len(native[0]):
        return (f"{len(returns)} return(s) to user mode, natively {len(native[0])} "
                f"(the last at {_last(native[0])})")
    return f"the console shows {console!r}, natively {native[1]!r}"


def _words(stack: tuple[int, ...] | None) -> str:
    return "(unmapped)" if stack is None else "[" + " ".join(f"{w:#x}" for w in stack) + "]"


def _last(returns: tuple[Any, ...]) -> str:
    return f"{returns[-1][0]:#x}" if returns else "none"
