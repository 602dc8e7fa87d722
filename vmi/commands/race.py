"""``vmi race``: sweep interrupt arrival over a kernel path and check the invariants.

For each path it prints the race map (one line per instruction boundary: where it
is, the instruction, whether it is inside an IRET/SYSEXIT window, and which
invariant an interrupt raised there broke), the smallest counterexample if one
broke, and timing. Exit status 0 when no invariant broke, 1 when one did.
docs/race.md explains the invariants and the paths.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from vmi.commands import UserError
from vmi.system import MODES, POLICIES

PATH_CHOICES = ("iret", "sysexit", "spinlock", "all")


@click.command("race")
@click.option("--mode", type=click.Choice(MODES), default="vmi", show_default=True,
              help="The kernel and platform (as for `vmi run`).")
@click.option("--policy", type=click.Choice(POLICIES), default="defer", show_default=True,
              help="Under --mode vmi: what the monitor does with an interrupt inside the "
                   "ROM's IRET/SYSEXIT window.")
@click.option("--macros", type=click.Choice(("native", "vmi", "vmi-split", "naive")),
              default=None, help="The kernel's macro set (e.g. vmi-split under --mode vmi).")
@click.option("--path", "path", type=click.Choice(PATH_CHOICES), default="all",
              show_default=True, help="The kernel path to sweep.")
@click.option("--depth", type=click.IntRange(1, 2), default=1, show_default=True,
              help="Interrupts per schedule in the exhaustive sweep: 1 = at every "
                   "boundary, 2 = every ordered pair.")
@click.option("--examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of the exhaustive sweep, a hypothesis search of N schedules "
                   "(up to --depth interrupts), shrunk to the smallest failing one.")
@click.option("--cpus", type=click.IntRange(1, 4), default=1, show_default=True,
              help="With 2 or more, the spinlock path under CPU interleavings.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The workload's seed (timer phase, CPU start-up).")
@click.option("--brief", is_flag=True, help="Only the map line per path, not the table.")
@click.option("--save", "save", metavar="FILE.json", default=None,
              help="Write the first counterexample for `vmi debug --replay`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(mode: str, policy: str, macros: str | None, path: str, depth: int,
            examples: int | None, cpus: int, seed: int, brief: bool, save: str | None,
            as_json: bool) -> None:
    """Sweep interrupt arrival over kernel paths and check the invariants."""
    from vmi.race.explorer import Config, ScenarioError
    from vmi.system import SystemError_, check_config

    try:
        check_config(mode, macros, policy)
    except SystemError_ as error:
        raise click.UsageError(f"--macros: {error}") from None
    paths = ["iret", "sysexit", "spinlock"] if path == "all" else [path]
    if cpus > 1:
        if path not in ("spinlock", "all"):
            raise click.UsageError(f"--cpus {cpus}: with several CPUs only the spinlock path "
                                   "is explored (CPU interleavings)")
        paths = ["spinlock"]
    began = time.perf_counter()
    reports = []
    try:
        for name in paths:
            config = Config(mode=mode, policy=policy, macros=macros, path=name, cpus=cpus,
                            seed=seed)
            reports.append(_explore(config, depth, examples))
    except ScenarioError as error:
        raise UserError(str(error)) from None
    seconds = time.perf_counter() - began
    result = _result(reports, seconds)
    if save:
        _save(save, reports)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print(reports, result, brief=brief, saved=save)
    sys.exit(result["exit_status"])


def _explore(config: Any, depth: int, examples: int | None) -> Any:
    from vmi.race.explorer import prepare, sweep
    from vmi.race.report import PathReport

    scenario = prepare(config)
    began = time.perf_counter()
    if examples is None:
        report = PathReport(scenario, depth, sweep(scenario, depth))
    else:
        try:
            from vmi.race.search import search
        except ImportError:  # pragma: no cover - hypothesis is a dependency
            raise UserError("--examples needs hypothesis: pip install hypothesis") from None
        _, outcomes = search(scenario, examples, max_interrupts=depth)
        report = PathReport(scenario, depth, outcomes, searched=True)
    report.seconds = time.perf_counter() - began
    return report


def _result(reports: list[Any], seconds: float) -> dict[str, Any]:
    schedules = sum(len(r.outcomes) for r in reports)
    sweeping = sum(r.seconds for r in reports)
    broken = any(r.broken for r in reports)
    return {
        "paths": [r.as_dict() for r in reports],
        "explored_boundaries": sum(len(r.scenario.boundaries) for r in reports),
        "schedules": schedules,
        "seconds": round(seconds, 3),
        "sweep_seconds": round(sweeping, 3),
        "schedules_per_second": round(schedules / sweeping, 1) if sweeping else None,
        "broken": sorted({name for r in reports for name in r.broken}),
        "exit_status": 1 if broken else 0,
    }


def _save(path: str, reports: list[Any]) -> None:
    for report in reports:
        worst = report.counterexample()
        if worst is not None:
            try:
                with open(path, "w", encoding="utf-8") as out:
                    json.dump(report.scenario.replay(worst), out, indent=1)
                    out.write("\n")
            except OSError as error:
                raise UserError(f"--save {path}: {error.strerror or error}") from None
            return


def _print(reports: list[Any], result: dict[str, Any], *, brief: bool,
           saved: str | None) -> None:
    from vmi.race.report import legend, render

    first = reports[0].scenario
    click.echo(f"vmi race: {first.system.describe()}, depth {reports[0].depth}")
    for report in reports:
        for line in render(report, verbose=not brief):
            click.echo(line)
    click.echo(legend())
    rate = result["schedules_per_second"]
    click.echo(f"explored {result['explored_boundaries']} boundaries, {result['schedules']} "
               f"schedules in {result['seconds']:.2f} s ({rate} schedules/s in the sweeps)")
    if result["broken"]:
        click.echo(f"invariants broken: {', '.join(result['broken'])}")
        if saved and any(r.counterexample() for r in reports):
            click.echo(f"counterexample saved to {saved}: python -m vmi debug --replay {saved}")
    else:
        click.echo("every invariant held")
