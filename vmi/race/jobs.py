"""A sweep as data, run by any executor, journalled so it can be resumed.

A sweep is a list of small, picklable, independent ``Job``s: the configuration
of the scenario (which names a deterministic boot, hence the starting snapshot),
the scenario's fingerprint (a hash of that snapshot and the path) and one
schedule. ``run_jobs`` runs them (serially one by one, on an executor in chunks),
writes each result to the journal the moment it (or its chunk) completes, and
returns the outcomes; ``Report`` merges them sorted by schedule with a hash over
the content, so the report is the same whatever ran the jobs and in whatever order
they finished.

Executors (the ``concurrent.futures.Executor`` shape):

* serial: in this process (the default);
* ``processes(n)``: a local process pool. Workers are forked after the scenario
  is prepared, so they start with it in memory;
* ``dask(address)``: an existing Dask ``distributed`` cluster (``"local"`` starts a
  LocalCluster on loopback). Each worker prepares a scenario once, by the same
  deterministic boot, and checks its fingerprint: only configurations and
  schedules travel.

A journal (``Journal``) is a JSON-lines file: a header naming the sweep (its
configuration, depth, fingerprint and vmi version; written whole, to a temporary
file renamed into place) and one line per finished job, flushed as it is
written. Rerunning with the same journal skips what it holds; a journal written
for another sweep is refused, naming the difference; a truncated last line (a
crash mid-write) is ignored, any other line that is not a record is refused.
Ctrl-C (SIGINT) is the parent's alone: pool and LocalCluster workers ignore it,
and the parent journals what they finish before it stops (``run_jobs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

from attrs import frozen

from vmi.cpu import codecache
from vmi.files import write_atomically
from vmi.race.explorer import Config, Outcome, Scenario, prepare

JOURNAL_FORMAT = "vmi-race-journal"
JOURNAL_VERSION = 1
#: Schedules per submitted chunk: small enough that the journal follows closely,
#: large enough that scheduling overhead stays small.
CHUNK = 8


class JobError(Exception):
    """A job cannot run as described (a worker's scenario differs from the sweep's)."""


class JournalError(Exception):
    """A journal that cannot be used for this sweep; the message says why."""


@frozen
class Job:
    """One schedule of one scenario."""

    config: Config
    fingerprint: str
    schedule: tuple[int, ...]


# -- running jobs (in any process) -----------------------------------------------------------
_SCENARIOS: dict[Config, Scenario] = {}


def adopt(scenario: Scenario) -> None:
    """Make ``scenario`` the one this process uses for its configuration (a forked
    worker inherits it)."""
    _SCENARIOS[scenario.config] = scenario


def scenario_for(config: Config, fingerprint: str) -> Scenario:
    """This process's scenario for ``config``, prepared on first use and checked."""
    scenario = _SCENARIOS.get(config)
    if scenario is None:
        scenario = _SCENARIOS[config] = prepare(config)
    if scenario.fingerprint != fingerprint:
        raise JobError(f"this worker's {config.label()} {config.path} scenario has "
                       f"fingerprint {scenario.fingerprint}, the sweep's is {fingerprint} "
                       "(a different vmi version or kernel?)")
    return scenario


def run_chunk(jobs: Sequence[Job]) -> list[tuple[str, dict[str, Any]]]:
    """Run ``jobs`` here; each result is its path and ``Outcome.as_dict()`` (plain
    data)."""
    results = []
    for job in jobs:
        scenario = scenario_for(job.config, job.fingerprint)
        results.append((job.config.path, scenario.run_branch(job.schedule).as_dict()))
    return results


def run_chunk_in_worker(jobs: Sequence[Job]) -> list[tuple[str, dict[str, Any]]]:
    """``run_chunk`` in a worker process, which then saves what it compiled to the
    translation cache (a Dask worker is killed, not exited, so it cannot wait for
    its exit; saving with nothing new costs nothing) for the next fresh worker."""
    results = run_chunk(jobs)
    codecache.CACHE.save()
    return results


# -- executors ----------------------------------------------------------------------------------
class SerialExecutor(Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 (handed to the caller)
            if isinstance(error, KeyboardInterrupt):
                raise
            future.set_exception(error)
        return future


def _ignore_interrupts() -> None:
    """In a worker process: leave Ctrl-C to the parent. A terminal sends SIGINT to
    the whole process group; the parent stops the sweep, journals what the workers
    finish, and shuts them down, so a worker need not (and must not) die mid-chunk
    printing its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def processes(count: int) -> Executor:
    """A pool of ``count`` local worker processes (forked where the OS allows, so
    prepared scenarios are inherited) that ignore SIGINT (``_ignore_interrupts``)."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=count, mp_context=context,
                               initializer=_ignore_interrupts)


@contextmanager
def _children_ignore_interrupts() -> Iterator[None]:
    """SIGINT ignored while processes are started, so they inherit that (an ignored
    signal stays ignored across fork and exec, and Python keeps it so), then this
    process's handler back. A Ctrl-C during those few seconds of start-up is
    ignored with them; the next one stops the sweep."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class DaskExecutor(Executor):
    """Submits to a Dask ``distributed`` cluster: ``"local"`` starts a LocalCluster of
    ``workers`` single-threaded processes on loopback (which ignore SIGINT, as a
    process pool's workers do); anything else is a scheduler address
    (``tcp://host:8786``). Its chunks are larger than a process pool's: a Dask task
    costs about a millisecond of scheduling, so 64 schedules per task keep that
    small (measured: 8 per task ran at 1.2x serial on two workers, 64 at about
    1.7x)."""

    chunk = 64

    def __init__(self, address: str, workers: int = 2) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise JobError("--dask needs Dask distributed: pip install 'vmi[cluster]'") \
                from None
        self.cluster = None
        try:
            if address == "local":
                with _children_ignore_interrupts(), warnings.catch_warnings():
                    # its HTTP server moves to a free port by itself; no need to say so
                    warnings.filterwarnings("ignore", message="Port .* is already in use")
                    self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                                processes=True, host="127.0.0.1",
                                                dashboard_address=None,
                                                silence_logs=logging.ERROR)
                self.client = Client(self.cluster)
            else:
                self.client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as error:
            if self.cluster is not None:
                self.cluster.close()
            raise JobError(f"--dask {address}: cannot reach the cluster ({error})") from None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Close the client (and the LocalCluster). Quietly: after Ctrl-C, Dask would
        otherwise log every cancelled task and closed connection on the way out."""
        loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        except Exception:  # noqa: BLE001 - closing a cluster that is going away anyway
            pass
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def as_done(futures: Iterable[Any]) -> Iterator[Any]:
    """Completed futures in completion order, for concurrent.futures and Dask alike."""
    futures = list(futures)
    if futures and not isinstance(futures[0], Future):
        from distributed import as_completed as dask_completed

        yield from dask_completed(futures)
    else:
        yield from as_completed(futures)


# -- journals ------------------------------------------------------------------------------------
def sweep_key(scenarios: Sequence[Scenario], kind: str) -> dict[str, Any]:
    """What a journal must match: the configuration, the kind of sweep, and each
    path's start (its fingerprint)."""
    from vmi import __version__

    config = scenarios[0].config
    return {"mode": config.mode, "policy": config.policy, "macros": config.macros,
            "cpus": config.cpus, "seed": config.seed, "vector": config.vector,
            "sweep": kind,
            "paths": {s.config.path: s.fingerprint for s in scenarios},
            "vmi": __version__}


class Journal:
    """One command's journal file (see the module docstring): records are keyed by
    path and schedule."""

    def __init__(self, path: str | os.PathLike[str], key: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.done: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
        self._file: Any = None

    def open(self) -> Journal:
        """Read what an earlier run finished (checking it is this sweep's), then open
        for appending."""
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        try:
            if exists:
                self._read()
            else:  # the header whole or not at all: never a journal without one
                header = json.dumps({"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION,
                                     "sweep": self.key}, sort_keys=True) + "\n"
                write_atomically(self.path, lambda out: out.write(header.encode()))
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise JournalError(f"{self.path}: {error.strerror or error}") from None
        return self

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise JournalError(f"{self.path}: cannot be read ({error})") from None
        complete = text.endswith("\n")
        lines = text.split("\n")
        if complete:
            lines.pop()
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                if number == len(lines) and not complete and number > 1:
                    break  # a crash mid-write: that job simply runs again
                raise JournalError(f"{self.path}:{number}: not a journal record "
                                   f"({error}); the file is damaged") from None
            kept.append(line)
            if number == 1:
                self._check_header(record)
                continue
            try:
                key = (str(record["path"]), tuple(int(k) for k in record["schedule"]))
                Outcome.from_dict(record["outcome"])
            except (KeyError, TypeError, ValueError) as error:
                raise JournalError(f"{self.path}:{number}: not a job record "
                                   f"({error!r}); the file is damaged") from None
            self.done.setdefault(key, record["outcome"])
        if not complete:  # start the next append on a fresh line, without the torn tail
            text = "".join(line + "\n" for line in kept)
            write_atomically(self.path, lambda out: out.write(text.encode()))

    def _check_header(self, record: dict[str, Any]) -> None:
        if record.get("format") != JOURNAL_FORMAT:
            raise JournalError(f"{self.path} is not a vmi race journal")
        if record.get("version") != JOURNAL_VERSION:
            raise JournalError(f"{self.path}: journal version {record.get('version')} is "
                               f"not supported (this vmi writes {JOURNAL_VERSION})")
        theirs = record.get("sweep", {})
        differences = [f"{name} {theirs.get(name)!r} (this sweep: {value!r})"
                       for name, value in self.key.items() if theirs.get(name) != value]
        if differences:
            raise JournalError(f"{self.path} was written for another sweep: "
                               + "; ".join(differences)
                               + ". Use another --journal file, or delete this one.")

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def record(self, path: str, outcome: dict[str, Any]) -> None:
        key = (path, tuple(outcome["schedule"]))
        if key not in self.done:  # written first: ``done`` never claims an unwritten line
            self._write({"path": path, "schedule": list(key[1]), "outcome": outcome})
            self.done[key] = outcome

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- a sweep -------------------------------------------------------------------------------------
class Interrupted(Exception):
    """The sweep stopped early (Ctrl-C, a lost worker): ``done`` of ``total`` finished."""

    def __init__(self, done: int, total: int, cause: str) -> None:
        super().__init__(cause)
        self.done, self.total, self.cause = done, total, cause


Results = dict[tuple[str, tuple[int, ...]], dict[str, Any]]


def run_jobs(jobs: Sequence[Job], executor: Executor, *, journal: Journal | None = None,
             progress: Callable[[int], None] | None = None,
             chunk: int | None = None) -> Results:
    """Run every job not already in ``journal``; returns all outcomes (as dicts) by
    path and schedule, journalled ones included.

    Serially each job runs, is journalled (flushed) and counted in ``progress`` the
    moment it finishes, so Ctrl-C loses at most the schedule it interrupted.
    Elsewhere ``chunk`` schedules go per submitted task (default: the executor's
    ``chunk``, else ``CHUNK``), each chunk journalled as it completes; on Ctrl-C
    the chunks not started are cancelled and those running are waited for (up to
    ``SALVAGE_SECONDS``; a second Ctrl-C stops waiting) and journalled too. Raises
    ``Interrupted`` when stopped early: the journal then holds every job that
    finished."""
    wanted = {(job.config.path, job.schedule) for job in jobs}
    results: Results = {k: v for k, v in (journal.done if journal else {}).items()
                        if k in wanted}
    todo = [job for job in jobs if (job.config.path, job.schedule) not in results]
    if progress is not None and results:
        progress(len(results))

    def keep(finished: list[tuple[str, dict[str, Any]]]) -> None:
        for path, outcome in finished:
            if journal is not None:
                journal.record(path, outcome)
            results[(path, tuple(outcome["schedule"]))] = outcome
        if progress is not None:
            progress(len(finished))

    def stopped(cause: str) -> Interrupted:
        """Interrupted, counting what is kept: with a journal, what it holds (Ctrl-C
        may land between journalling an outcome and counting it)."""
        kept = len(wanted & journal.done.keys()) if journal is not None else len(results)
        return Interrupted(kept, len(jobs), cause)

    if isinstance(executor, SerialExecutor):
        try:
            for job in todo:
                keep(run_chunk([job]))
        except KeyboardInterrupt:
            raise stopped("interrupted") from None
        return results
    chunk = chunk or getattr(executor, "chunk", CHUNK)
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    codecache.CACHE.save()  # fresh workers (Dask) find what preparing compiled
    futures: list[Any] = []
    taken: set[int] = set()
    try:
        futures = [executor.submit(run_chunk_in_worker, part) for part in chunks]
        for future in as_done(futures):
            finished = future.result()
            taken.add(id(future))
            keep(finished)
    except KeyboardInterrupt:
        _salvage([f for f in futures if id(f) not in taken], keep)
        raise stopped("interrupted") from None
    except JobError:
        raise
    except Exception as error:  # a lost worker: BrokenProcessPool, a Dask KilledWorker
        raise stopped(f"a worker was lost ({type(error).__name__}: {error})") from None
    return results


#: After Ctrl-C, how long to wait for the chunks already running to finish.
SALVAGE_SECONDS = 10.0


def _salvage(futures: list[Any], keep: Callable[[list[tuple[str, dict[str, Any]]]], None]) \
        -> None:
    """Cancel the chunks not started; keep (journal) every chunk that finished or,
    on a local pool, finishes within ``SALVAGE_SECONDS`` (a Dask task's state is not
    known here without asking the scheduler, so only the finished ones are kept)."""
    import concurrent.futures

    try:
        local = [f for f in futures if isinstance(f, Future)]
        for future in local:
            future.cancel()  # only those not yet running
        concurrent.futures.wait([f for f in local if not f.cancelled()],
                                timeout=SALVAGE_SECONDS)
        for future in futures:
            if isinstance(future, Future):
                usable = future.done() and not future.cancelled() and \
                    future.exception() is None
            else:  # a Dask future: cancelling a finished one would drop its result
                usable = future.status == "finished"
                if not usable:
                    future.cancel()
            if usable:
                keep(future.result())
    except KeyboardInterrupt:  # asked twice: stop at once
        pass


@frozen
class Report:
    """One path's sweep, merged: outcomes sorted by schedule, and their hash."""

    config: Config
    fingerprint: str
    outcomes: tuple[Outcome, ...]

    @property
    def digest(self) -> str:
        body = json.dumps({"fingerprint": self.fingerprint,
                           "outcomes": [o.as_dict() for o in self.outcomes]},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def merge(scenario: Scenario, results: Results) -> Report:
    """The report of one path's sweep from the results, in schedule order."""
    path = scenario.config.path
    ordered = sorted((schedule, outcome) for (name, schedule), outcome in results.items()
                     if name == path)
    return Report(scenario.config, scenario.fingerprint,
                  tuple(Outcome.from_dict(o) for _, o in ordered))


def report_digest(reports: Iterable[Report]) -> str:
    """One hash over several paths' reports (what ``vmi race --json`` prints)."""
    digest = hashlib.sha256()
    for report in reports:
        digest.update(report.digest.encode())
    return digest.hexdigest()
