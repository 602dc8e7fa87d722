"""``vmi race``: sweep interrupt arrival over a kernel path and check the invariants.

For each path it prints the race map (one line per instruction boundary: where it
is, the instruction, whether it is inside an IRET/SYSEXIT window, and which
invariant an interrupt raised there broke), the smallest counterexample if one
broke, and timing. Exit status 0 when no invariant broke, 1 when one did, 2 for
bad usage (output paths are checked before any work), 130 after Ctrl-C (the
journal then holds every schedule that finished), 3 when a worker was lost. A
``--examples`` search that broke nothing says how much of the path it tried and
that it is not a proof; it exits 0. docs/race.md explains the invariants and the
paths.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from vmi.commands import UsageLine, UserError, check_output
from vmi.race.names import INVARIANTS, MAX_DEPTH
from vmi.system import MODES, POLICIES

PATH_CHOICES = ("iret", "sysexit", "spinlock", "iret16", "iret-fault", "all")
#: ``all``: every path of one CPU
ALL_PATHS = ["iret", "sysexit", "spinlock", "iret16", "iret-fault"]
VECTORS = {"console": 0x21, "timer": 0x20}


def _vector(ctx: Any, param: Any, value: str) -> int:
    """``--vector``: a name (console, timer) or a number 0x20..0xff."""
    if value in VECTORS:
        return VECTORS[value]
    try:
        number = int(value, 0)
    except ValueError:
        number = -1
    if not 0x20 <= number <= 0xFF:
        raise click.BadParameter(f"{value!r} is not console, timer or a vector 0x20..0xff")
    return number


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
@click.option("--depth", type=click.IntRange(1, MAX_DEPTH), default=1, show_default=True,
              help="Interrupts per schedule in the exhaustive sweep: 1 = at every "
                   "boundary, 2 = every ordered pair, 3 = every ordered triple "
                   "(n**depth schedules for n boundaries).")
@click.option("--examples", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of the exhaustive sweep, a hypothesis search of N schedules "
                   "(up to --depth interrupts), shrunk to the smallest failing one.")
@click.option("--horizon", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="With --depth 2 or 3: each later interrupt arrives at every "
                   "delay of 1..N steps after the one before, wherever that is (inside the "
                   "first one's handler too), instead of at the path's boundaries.")
@click.option("--vector", default="console", show_default=True, callback=_vector,
              metavar="console|timer|N", help="The interrupt raised: the console's (IRQ 1, "
                   "SIGINT to the running task), the timer's (IRQ 0, a reschedule) or a "
                   "vector number.")
@click.option("--cpus", type=click.IntRange(1, 4), default=1, show_default=True,
              help="With 2 or more, the spinlock path under CPU interleavings.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The workload's seed: the timer's phase and the CPUs' start-up, so "
                   "each path is reached in a different machine state (its code, and so "
                   "usually its map, stay the same).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the sweep on N local worker processes.")
@click.option("--dask", "dask", metavar="ADDRESS", default=None,
              help="Run the sweep on a Dask distributed cluster (a scheduler address, or "
                   "'local' for a LocalCluster of --jobs workers on loopback).")
@click.option("--journal", metavar="FILE", default=None,
              help="Append each finished schedule to FILE; rerunning with it resumes.")
@click.option("--plot", "plot", metavar="FILE.png", default=None,
              help="Draw the race map (needs the plotting extra); the suffix names the "
                   "format (.png, .svg, .pdf).")
@click.option("--invariant", "focus", type=click.Choice(INVARIANTS), default=None,
              help="Show and save the smallest counterexample breaking this invariant "
                   "(default: the smallest of any).")
@click.option("--brief", is_flag=True, help="Only the map line per path, not the table.")
@click.option("--save", "save", metavar="FILE.json", default=None,
              help="Write the first counterexample for `vmi debug --replay`.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def command(mode: str, policy: str, macros: str | None, path: str, depth: int,
            examples: int | None, horizon: int, vector: int, cpus: int, seed: int,
            jobs: int, dask: str | None,
            journal: str | None, plot: str | None, focus: str | None, brief: bool,
            save: str | None,
            as_json: bool) -> None:
    """Sweep interrupt arrival over kernel paths and check the invariants."""
    from vmi.race.explorer import Config, PathNotReached, ScenarioError, prepare
    from vmi.race.jobs import Interrupted, JobError, JournalError
    from vmi.system import SystemError_, check_config

    try:
        check_config(mode, macros, policy)
    except SystemError_ as error:
        raise click.UsageError(f"--macros: {error}") from None
    paths = list(ALL_PATHS) if path == "all" else [path]
    if horizon and examples is not None:
        raise click.UsageError("--horizon applies to exhaustive sweeps, not --examples")
    if horizon and depth == 1:
        raise click.UsageError("--horizon: the delays are those of a later interrupt; give "
                               "--depth 2 or 3")
    if cpus > 1:
        if path not in ("spinlock", "all"):
            raise click.UsageError(f"--cpus {cpus}: with several CPUs only the spinlock path "
                                   "is explored (CPU interleavings)")
        paths = ["spinlock"]
    if examples is not None and (jobs > 1 or dask or journal):
        raise click.UsageError("--examples is a sequential search; --jobs, --dask and "
                               "--journal apply to exhaustive sweeps")
    check_output(save, "--save")
    check_output(journal, "--journal")
    if plot:
        _check_plot(plot)
    began = time.perf_counter()
    try:
        scenarios, unreached = [], []
        for name in paths:  # a path the kernel never reaches is reported, not fatal
            try:
                scenarios.append(prepare(Config(mode=mode, policy=policy, macros=macros,
                                                path=name, cpus=cpus, seed=seed,
                                                vector=vector, horizon=horizon)))
            except PathNotReached as error:
                unreached.append({"path": name, "reason": str(error)})
        if not scenarios:
            raise UserError("; ".join(u["reason"] for u in unreached))
        swept = time.perf_counter()
        if examples is not None:
            reports, digest, runner = _search(scenarios, depth, examples), None, "search"
        else:
            reports, digest, runner = _sweep(scenarios, depth, jobs, dask, journal,
                                             progress=not as_json)
    except (ScenarioError, JournalError, JobError) as error:
        raise UserError(str(error)) from None
    except Interrupted as stop:
        where = (f"; run the same command again to resume from {journal}" if journal else
                 "; nothing was kept: give --journal FILE to be able to resume")
        click.echo(f"vmi race: stopped, {stop.cause}: {stop.done} of {stop.total} schedules "
                   f"done{where}", err=True)
        sys.exit(130 if stop.cause == "interrupted" else 3)
    for report in reports:
        report.focus = focus
    finished = time.perf_counter()
    result = _result(reports, finished - began, finished - swept, digest, runner, unreached)
    # The paths were checked before the sweep; if writing still fails (a full disk),
    # the report is printed all the same and the failure is the last line.
    failures: list[UserError] = []
    saved = plotted = None
    try:
        saved = _save(save, reports) if save else None
    except UserError as error:
        failures.append(error)
    try:
        plotted = _plot(plot, reports) if plot else None
    except UserError as error:
        failures.append(error)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print(reports, result, brief=brief, saved=saved, plotted=plotted)
        if save and not saved and not failures:
            click.echo(f"no counterexample: nothing written to {save}")
    for error in failures[:-1]:
        error.show()
    if failures:
        raise failures[-1]
    sys.exit(result["exit_status"])


def _check_plot(path: str) -> None:
    """Refuse a --plot path before the sweep: unwritable, without a suffix (the
    format would be guessed and a suffix appended behind the user's back), a format
    matplotlib does not write, or matplotlib missing."""
    from vmi.race.plot import PlotDependencyError, image_format

    check_output(path, "--plot")
    try:
        image_format(path)
    except PlotDependencyError as error:
        raise UserError(f"--plot: {error}") from None
    except ValueError as error:
        raise UsageLine(f"--plot {path}: {error}") from None


def _search(scenarios: list[Any], depth: int, examples: int) -> list[Any]:
    from vmi.race.report import PathReport
    from vmi.race.search import search

    reports = []
    for scenario in scenarios:
        _, outcomes = search(scenario, examples, max_interrupts=depth)
        reports.append(PathReport(scenario, depth, outcomes, searched=True))
    return reports


def _sweep(scenarios: list[Any], depth: int, jobs: int, dask: str | None,
           journal_file: str | None, *, progress: bool) -> tuple[list[Any], str, str]:
    """Every schedule of every path as jobs, on the chosen executor; the reports and
    their hash."""
    from vmi.race import jobs as J
    from vmi.race.explorer import schedules
    from vmi.race.report import PathReport

    work = [J.Job(sc.config, sc.fingerprint, s) for sc in scenarios
            for s in schedules(sc, depth)]
    journal = None
    if journal_file:
        journal = J.Journal(journal_file, J.sweep_key(scenarios, f"depth {depth}")).open()
    for scenario in scenarios:
        J.adopt(scenario)  # serial runs use them; forked workers inherit them
    if dask:
        executor: Any = J.DaskExecutor(dask, workers=max(jobs, 2))
        runner = f"dask {dask}"
    elif jobs > 1:
        executor, runner = J.processes(jobs), f"{jobs} processes"
    else:
        executor, runner = J.SerialExecutor(), "serial"
    bar = _progress_bar(len(work)) if progress else None
    try:
        results = J.run_jobs(work, executor, journal=journal,
                             progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
        if journal is not None:
            journal.close()
        executor.shutdown(wait=True, cancel_futures=True)
    merged = [J.merge(sc, results) for sc in scenarios]
    reports = [PathReport(sc, depth, list(m.outcomes))
               for sc, m in zip(scenarios, merged, strict=True)]
    return reports, J.report_digest(merged), runner


def _progress_bar(total: int) -> Any:
    """A progress bar on a terminal (jobs done, schedules per second, time left);
    None on a pipe."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="schedule", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)


def _result(reports: list[Any], seconds: float, sweep_seconds: float, digest: str | None,
            runner: str, unreached: list[dict[str, str]]) -> dict[str, Any]:
    schedules = sum(len(r.outcomes) for r in reports)
    broken = any(r.broken for r in reports) or bool(unreached)
    return {
        "complete": all(r.complete for r in reports),
        "tried_boundaries": sum(sum(r.tried()) for r in reports),
        "paths": [r.as_dict() for r in reports],
        "explored_boundaries": sum(len(r.scenario.boundaries) for r in reports),
        "schedules": schedules,
        "runner": runner,
        "seconds": round(seconds, 3),
        "sweep_seconds": round(sweep_seconds, 3),
        "schedules_per_second": round(schedules / sweep_seconds, 1) if sweep_seconds else None,
        "report_hash": digest,
        "broken": sorted({name for r in reports for name in r.broken}),
        "unreached": unreached,
        "exit_status": 1 if broken else 0,
    }


def _save(path: str, reports: list[Any]) -> str | None:
    """Write the first path's counterexample (whole, or not at all); the path
    written, or None when no invariant broke (nothing is written then)."""
    from vmi.files import write_atomically

    for report in reports:
        worst = report.counterexample()
        if worst is not None:
            data = (json.dumps(report.scenario.replay(worst), indent=1) + "\n").encode()
            try:
                write_atomically(path, lambda out, data=data: out.write(data))
            except OSError as error:
                raise UserError(f"--save {path}: {error.strerror or error}") from None
            return path
    return None


def _plot(path: str, reports: list[Any]) -> str:
    """Draw the race map of the swept paths, one row each (vmi.race.plot), to
    ``path`` (whole or not at all); returns ``path``."""
    from vmi.race.plot import PlotDependencyError, plot_race_map

    try:
        plot_race_map([(r.scenario.config.path, r) for r in reports], path,
                      title=reports[0].scenario.system.describe())
    except PlotDependencyError as error:
        raise UserError(f"--plot: {error}") from None
    except ValueError as error:  # a format matplotlib does not write (map.xyz)
        raise UserError(f"--plot {path}: {error}") from None
    except OSError as error:
        raise UserError(f"--plot {path}: {error.strerror or error}") from None
    return path


def _print(reports: list[Any], result: dict[str, Any], *, brief: bool,
           saved: str | None, plotted: str | None) -> None:
    from vmi.race.report import legend, render, tried_summary

    first = reports[0].scenario
    click.echo(f"vmi race: {first.system.describe()}, depth {reports[0].depth}")
    for report in reports:
        for line in render(report, verbose=not brief):
            click.echo(line)
    for path in result["unreached"]:
        click.echo(f"path {path['path']}: not explored: {path['reason']}")
    click.echo(legend(untried=not result["complete"]))
    rate = result["schedules_per_second"]
    explored = (f"explored {result['explored_boundaries']} boundaries" if result["complete"]
                else f"tried {result['tried_boundaries']} of {result['explored_boundaries']} "
                     "boundaries")
    click.echo(f"{explored}, {result['schedules']} schedules in {result['seconds']:.2f} s "
               f"({rate} schedules/s, {result['runner']})")
    if result["report_hash"]:
        click.echo(f"report hash {result['report_hash'][:16]}")
    if plotted:
        click.echo(f"race map drawn to {plotted}")
    if result["unreached"]:
        click.echo(f"paths not reached: {', '.join(u['path'] for u in result['unreached'])} "
                   "(the kernel never got there: a hang or a crash on the way)")
    if result["broken"]:
        click.echo(f"invariants broken: {', '.join(result['broken'])}")
        if saved:
            click.echo(f"counterexample saved to {saved}: python -m vmi debug --replay {saved}")
    if result["broken"] or result["unreached"]:
        return
    if result["complete"]:
        click.echo("every invariant held")
    else:  # a search that did not try everything proves nothing
        click.echo(f"no invariant broke in {tried_summary(reports)}; not a proof "
                   "(a sweep without --examples tries every boundary)")
