"""Hypothesis-driven search for a counterexample, shrunk to the smallest schedule.

``schedule_strategy(scenario)`` draws schedules for a scenario: one to
``max_interrupts`` boundary indices of its path (with several CPUs, the boundaries
where CPU 0 pauses). ``search`` asks hypothesis for a schedule that breaks an
invariant; hypothesis shrinks what it finds towards fewer interrupts at earlier
boundaries, so the report is the smallest schedule that still fails. The search is
derandomised (the same scenario and budget give the same answer) and stores
nothing on disk. hypothesis is imported only here, never by ``import vmi``.
"""

from __future__ import annotations

from typing import Any

from vmi.race.explorer import Outcome, Scenario


def schedule_strategy(scenario: Scenario, max_interrupts: int = 2) -> Any:
    """Schedules over ``scenario``'s path (a hypothesis strategy of tuples)."""
    from hypothesis import strategies as st

    n = len(scenario.boundaries)
    return st.lists(st.integers(0, n - 1), min_size=1, max_size=max_interrupts).map(tuple)


def search(scenario: Scenario, examples: int, *,
           max_interrupts: int = 2) -> tuple[Outcome | None, list[Outcome]]:
    """Try up to ``examples`` schedules; return the shrunk failing outcome (or None)
    and every outcome run on the way (for the map)."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    seen: dict[tuple[int, ...], Outcome] = {}

    def run(schedule: tuple[int, ...]) -> Outcome:
        if schedule not in seen:
            seen[schedule] = scenario.run_branch(schedule)
        return seen[schedule]

    config = settings(max_examples=examples, derandomize=True, database=None,
                      deadline=None, suppress_health_check=list(HealthCheck))
    try:
        worst = find(schedule_strategy(scenario, max_interrupts),
                     lambda s: not run(s).ok, settings=config)
    except NoSuchExample:
        return None, list(seen.values())
    return run(worst), list(seen.values())
