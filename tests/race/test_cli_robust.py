"""``vmi race`` loses nothing and never lies (issue 17).

* Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in the middle
  of a sweep with ``--journal``, serial, on two processes and on a Dask
  LocalCluster: exit status 130, one line on stderr, every finished schedule in
  the journal, and rerunning the command resumes to the report hash of an
  uninterrupted run without running a schedule twice.
* A serial sweep journals and counts each schedule the moment it finishes.
* ``--examples`` marks untried boundaries ``?`` and never says "every invariant
  held" for a search that did not cover the path.
* Output paths (``--save``, ``--plot``, ``--journal``) are refused before any work
  (exit status 2, one line); a write that fails after the sweep still prints the
  report.
* Exit statuses everywhere: 2 for bad usage, 130 for Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.race.conftest import scenario
from vmi.cli import main as cli
from vmi.race import jobs as J
from vmi.race.explorer import schedules, sweep
from vmi.race.report import UNTRIED, PathReport, legend, map_line, render

SWEEP = ("--mode", "vmi", "--path", "sysexit", "--depth", "2", "--brief", "--json")
ROOT = Path(__file__).resolve().parents[2]


def vmi(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmi", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def records(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def uninterrupted_hash() -> str:
    done = subprocess.run(vmi("race", *SWEEP), capture_output=True, text=True, timeout=300,
                          env=environment())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["report_hash"]


def interrupt_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """Send SIGINT to the process's group (what Ctrl-C at a terminal does) once
    ``ready()`` holds."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if ready():
            break
        time.sleep(0.01)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)


@pytest.mark.parametrize("runner", [
    pytest.param((), id="serial"),
    pytest.param(("--jobs", "2"), id="jobs2"),
    pytest.param(("--dask", "local", "--jobs", "2"), id="dask"),
])
def test_ctrl_c_keeps_every_finished_schedule_and_resume_gives_the_same_report(
        tmp_path, uninterrupted_hash, runner):
    if runner and runner[0] == "--dask":
        pytest.importorskip("distributed", reason="the cluster extra is absent")
    journal = tmp_path / "sweep.jsonl"
    args = vmi("race", *SWEEP, *runner, "--journal", str(journal))
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment(), start_new_session=True)
    interrupt_when(process, lambda: journal.exists()
                   and len(journal.read_text().splitlines()) > 30)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback from any process
    assert "stopped, interrupted:" in lines[0]
    assert f"run the same command again to resume from {journal}" in lines[0]
    done = int(lines[0].split("interrupted: ")[1].split(" of ")[0])
    kept = records(journal)
    total = 22 * 22
    # every finished schedule, nothing else (the chunks running when ^C came are
    # finished and kept, which can be all of them on a fast run under Dask)
    assert 30 <= len(kept) == done <= total
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                             env=environment())
    assert resumed.returncode == 0, resumed.stderr
    after = records(journal)
    assert after[:len(kept)] == kept
    keys = [(r["path"], tuple(r["schedule"])) for r in after]
    assert len(keys) == len(set(keys)) == total  # nothing ran twice
    assert json.loads(resumed.stdout)["report_hash"] == uninterrupted_hash


def test_a_serial_sweep_journals_and_counts_each_schedule_as_it_finishes(tmp_path):
    sc = scenario(mode="native", path="sysexit")
    J.adopt(sc)
    work = [J.Job(sc.config, sc.fingerprint, s) for s in schedules(sc, 1)]
    journal = J.Journal(tmp_path / "j.jsonl", J.sweep_key([sc], "depth 1")).open()
    seen: list[tuple[int, int]] = []

    def progress(count: int) -> None:  # journal records on disk at each tick
        seen.append((count, len(records(tmp_path / "j.jsonl"))))

    try:
        J.run_jobs(work, J.SerialExecutor(), journal=journal, progress=progress)
    finally:
        journal.close()
    assert seen == [(1, k) for k in range(1, len(work) + 1)]


def test_a_serial_interrupt_keeps_what_finished(tmp_path, monkeypatch):
    """Ctrl-C inside the fifth schedule: the four before it are in the journal."""
    sc = scenario(mode="native", path="sysexit")
    J.adopt(sc)
    work = [J.Job(sc.config, sc.fingerprint, s) for s in schedules(sc, 1)]
    calls = []
    real = J.run_chunk

    def run_chunk(jobs):
        calls.append(jobs)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(jobs)

    monkeypatch.setattr(J, "run_chunk", run_chunk)
    path = tmp_path / "j.jsonl"
    journal = J.Journal(path, J.sweep_key([sc], "depth 1")).open()
    with pytest.raises(J.Interrupted) as stop:
        J.run_jobs(work, J.SerialExecutor(), journal=journal)
    journal.close()
    assert (stop.value.done, stop.value.total) == (4, len(work))
    assert [tuple(r["schedule"]) for r in records(path)] == [j.schedule for j in work[:4]]


def test_a_pool_interrupt_journals_the_chunks_already_running(tmp_path):
    """Ctrl-C while two workers are busy: the chunks they are running finish and are
    journalled too (before, they finished and were thrown away)."""
    sc = scenario(mode="native", path="sysexit")
    J.adopt(sc)
    work = [J.Job(sc.config, sc.fingerprint, s) for s in schedules(sc, 2)]
    path = tmp_path / "j.jsonl"
    journal = J.Journal(path, J.sweep_key([sc], "depth 2")).open()
    ticks = []

    def progress(count: int) -> None:
        ticks.append(count)
        if len(ticks) == 3:  # three chunks in: Ctrl-C
            raise KeyboardInterrupt

    executor = J.processes(2)
    try:
        with pytest.raises(J.Interrupted) as stop:
            J.run_jobs(work, executor, journal=journal, progress=progress, chunk=8)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        journal.close()
    kept = records(path)
    assert stop.value.done == len(kept) >= 3 * 8 + 8  # at least one running chunk kept
    assert len({tuple(r["schedule"]) for r in kept}) == len(kept)
    expected = {o.schedule: o.as_dict() for o in sweep(sc, 2)}
    assert all(r["outcome"] == expected[tuple(r["schedule"])] for r in kept)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["race", *args])


def test_examples_marks_untried_boundaries_and_claims_no_proof():
    result = invoke("--mode", "naive", "--path", "sysexit", "--examples", "5")
    assert "every invariant held" not in result.output
    path_map = next(line for line in result.output.splitlines() if "map:" in line)
    cells = path_map.split("map: ")[1]
    assert len(cells) == 11 and UNTRIED in cells
    tried = 11 - cells.count(UNTRIED)
    assert f"first interrupt at {tried} of 11 boundaries" in result.output
    assert "not tried" in result.output and f"{UNTRIED} not tried by the search" in result.output
    last = result.output.strip().splitlines()[-1]
    if "invariants broken" not in result.output:  # exit 0, said truthfully
        assert result.exit_code == 0
        assert last.startswith("no invariant broke in the ") and "not a proof" in last
        assert f"({tried} of 11 boundaries tried" in last
    as_json = json.loads(invoke("--mode", "naive", "--path", "sysexit", "--examples", "5",
                                "--json").output)
    assert as_json["complete"] is False and as_json["tried_boundaries"] == tried
    assert as_json["paths"][0]["tried"].count(True) == tried


def test_a_search_that_ran_every_schedule_is_complete_and_one_that_did_not_is_not():
    sc = scenario(mode="native", path="sysexit")
    everything = sweep(sc, 1)
    full = PathReport(sc, 1, list(everything), searched=True)
    assert full.complete and UNTRIED not in map_line(full)
    assert "every invariant held" in legend(untried=not full.complete)
    partial = PathReport(sc, 1, [o for o in everything if o.schedule != (3,)], searched=True)
    assert not partial.complete
    assert map_line(partial)[3] == UNTRIED and map_line(partial).count(UNTRIED) == 1
    assert "not tried" in render(partial)[1 + 1 + 3]  # the table row of boundary 3
    deeper = PathReport(sc, 2, list(everything), searched=True)  # no pairs ran
    assert not deeper.complete
    assert PathReport(sc, 1, list(everything)).complete  # a sweep


@pytest.mark.parametrize("option, value, message", [
    ("--save", "{missing}/cx.json", "no such directory"),
    ("--save", "{tmp}", "is a directory"),
    ("--save", "{file}/cx.json", "is not a directory"),
    ("--plot", "{missing}/map.png", "no such directory"),
    ("--plot", "{tmp}/map", "no suffix"),
    ("--plot", "{tmp}/map.xyz", "does not write .xyz"),
    ("--journal", "{missing}/j.jsonl", "no such directory"),
])
def test_output_paths_are_refused_before_the_sweep(tmp_path, monkeypatch, option, value,
                                                   message):
    if option == "--plot":
        pytest.importorskip("matplotlib", reason="the plotting extra is absent")
    import vmi.race.explorer

    def no_sweep(*_args, **_kwargs):
        raise AssertionError("the sweep started before the output path was checked")

    monkeypatch.setattr(vmi.race.explorer, "prepare", no_sweep)
    (tmp_path / "file").write_text("")
    path = value.format(missing=tmp_path / "missing", tmp=tmp_path, file=tmp_path / "file")
    result = invoke("--mode", "naive", "--path", "sysexit", option, path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {option} {path}: ")
    assert message in lines[0]
    assert not (tmp_path / "missing").exists()  # never created


def test_a_write_that_fails_after_the_sweep_still_prints_the_report(tmp_path, monkeypatch):
    import vmi.files

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vmi.files, "write_atomically", full_disk)
    target = tmp_path / "cx.json"
    result = invoke("--mode", "naive", "--path", "sysexit", "--brief", "--save", str(target))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "  map: .........L." in lines  # the report is there
    assert lines[-1] == f"Error: --save {target}: No space left on device"
    assert not target.exists()


def test_save_with_nothing_broken_says_nothing_was_written(tmp_path):
    target = tmp_path / "cx.json"
    result = invoke("--mode", "native", "--path", "sysexit", "--brief", "--save", str(target))
    assert result.exit_code == 0
    assert f"no counterexample: nothing written to {target}" in result.output
    assert not target.exists()


def test_plot_writes_exactly_the_path_given(tmp_path):
    pytest.importorskip("matplotlib", reason="the plotting extra is absent")
    target = tmp_path / "map.svg"
    result = invoke("--mode", "naive", "--path", "sysexit", "--brief", "--plot", str(target))
    assert result.exit_code == 1
    assert f"race map drawn to {target}" in result.output
    assert target.read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.svg"]  # no temporary left


# -- exit statuses in every command -------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["race", "--plot", "map"], "--plot map: no suffix"),
    (["costs", "--modes", "bogus"], "--modes: unknown mode 'bogus'"),
    (["costs", "--policy", "none"], "--policy: unknown policy"),
    (["disasm", "--hex", "q"], "--hex: 'q' at position 1 is not a hex digit"),
    (["disasm", "--hex", "90", "--base", "-1"], "--base: '-1' is not a 32-bit address"),
    (["debug", "--memory", "4M"], "--memory: for --program"),
    (["debug", "--program", "x.S", "--mode", "vmi"], "--mode: chooses how the bundled kernel"),
    (["debug", "--program", "x.S", "--memory", "1000"], "--memory: 0x3e8 is not a positive"),
    (["debug", "--base", "zz"], "--base: 'zz' is not a number"),
    (["asm", "x.S", "--base", "lots"], "--base: 'lots' is not a number"),
    (["asm", "x.S", "-D", "NOVALUE"], "--define: 'NOVALUE' is not NAME=VALUE"),
])
def test_bad_usage_is_exit_status_2_and_one_line(args, message):
    if args[0] == "race":
        pytest.importorskip("matplotlib", reason="the plotting extra is absent")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_ctrl_c_in_any_command_is_exit_status_130_and_one_line():
    """A command with no Ctrl-C handling of its own (here a long hypothesis search):
    click would say "Aborted!" and exit 1, like a failed check."""
    process = subprocess.Popen(vmi("race", "--path", "iret", "--depth", "3", "--examples",
                                   "1000000"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment(),
                               start_new_session=True)
    time.sleep(3)  # preparing, then searching
    interrupt_when(process, lambda: True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert err.strip().splitlines() == ["vmi race: interrupted"]
