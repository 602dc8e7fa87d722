"""Sweeps at scale: the same report (same hash) from the serial executor, local
processes and a Dask LocalCluster; a sweep whose worker is killed resumes from its
journal to the same report without running a finished job twice; journals for
another sweep, and damaged ones, are refused with one clear message; --plot draws.
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
from vmi.race.explorer import schedules


def sweep_report(executor, sc, depth=2, journal=None):
    work = [J.Job(sc.config, sc.fingerprint, s) for s in schedules(sc, depth)]
    try:
        results = J.run_jobs(work, executor, journal=journal)
    finally:
        executor.shutdown(wait=True)
    return J.merge(sc, results), len(work)


def test_serial_processes_and_dask_give_the_same_report():
    sc = scenario(mode="native", path="iret")
    J.adopt(sc)
    serial, total = sweep_report(J.SerialExecutor(), sc)
    assert len(serial.outcomes) == total == len(sc.boundaries) ** 2
    assert [o.schedule for o in serial.outcomes] == sorted(o.schedule for o in serial.outcomes)
    pool, _ = sweep_report(J.processes(2), sc)
    assert pool.digest == serial.digest
    pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is absent")
    dask, _ = sweep_report(J.DaskExecutor("local", workers=2), sc)
    assert dask.digest == serial.digest


def test_a_worker_with_another_scenario_is_refused():
    sc = scenario(mode="native", path="iret")
    J.adopt(sc)
    job = J.Job(sc.config, "0" * 16, (0,))
    with pytest.raises(J.JobError, match="fingerprint"):
        J.run_chunk([job])


def test_a_worker_saves_what_it_compiled_for_the_next_fresh_worker(tmp_path, monkeypatch):
    """A worker's chunk leaves the process's new translations in the cache file (a
    fresh Dask worker then rebuilds them instead of compiling); run serially, the
    saving is left to the end of the process."""
    from vmi.cpu import codecache, codegen, core
    from vmi.race.explorer import Config, prepare

    monkeypatch.setattr(core, "COMPILED", {})
    monkeypatch.setattr(codegen, "_MAKERS", {})
    monkeypatch.setattr(codecache, "CACHE", codecache.TranslationCache(tmp_path))
    sc = prepare(Config(mode="native", path="iret"))  # compiles the kernel's code
    jobs = [J.Job(sc.config, sc.fingerprint, s) for s in schedules(sc, 1)[:8]]
    monkeypatch.setitem(J._SCENARIOS, sc.config, sc)
    serial = J.run_chunk(jobs)
    assert not list(tmp_path.iterdir())
    assert J.run_chunk_in_worker(jobs) == serial
    (saved,) = tmp_path.glob("translations-*.marshal")
    fresh = codecache.TranslationCache(tmp_path)
    assert fresh.recipe(next(iter(codecache.CACHE.recipes))) is not None
    assert len(fresh.recipes) == len(codecache.CACHE.recipes) > 500


def race(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmi", "race", *args]


def journal_records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds worker processes in /proc")
def test_killed_worker_then_resume_from_the_journal(tmp_path):
    journal = tmp_path / "sweep.jsonl"
    args = ["--mode", "vmi", "--path", "iret", "--depth", "2", "--jobs", "2", "--brief",
            "--json", "--journal", str(journal)]
    process = subprocess.Popen(race(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) > 60:
            break
        time.sleep(0.05)
    workers = children(process.pid)
    assert workers, "no worker processes found"
    os.kill(workers[0], signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, (out, err)
    assert "a worker was lost" in err and "run the same command again to resume" in err
    before = journal_records(journal)
    assert 60 <= len(before) < 49 * 49
    # resume: only the missing schedules run, and the report is the serial one
    resumed = subprocess.run(race(*args), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = journal_records(journal)
    keys = [(r["path"], tuple(r["schedule"])) for r in after]
    assert len(keys) == len(set(keys)) == 49 * 49  # nothing ran twice
    assert after[:len(before)] == before
    serial = subprocess.run(race("--mode", "vmi", "--path", "iret", "--depth", "2", "--json"),
                            capture_output=True, text=True, timeout=300)
    assert json.loads(resumed.stdout)["report_hash"] == json.loads(serial.stdout)["report_hash"]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["race", *args])


def test_a_journal_for_another_sweep_is_refused(tmp_path):
    journal = tmp_path / "j.jsonl"
    first = invoke("--mode", "vmi", "--policy", "fixup", "--path", "sysexit", "--brief",
                   "--journal", str(journal))
    assert first.exit_code == 0, first.output
    second = invoke("--mode", "vmi", "--policy", "defer", "--path", "sysexit", "--brief",
                    "--journal", str(journal))
    assert second.exit_code == 1
    lines = second.output.strip().splitlines()
    assert len(lines) == 1 and "was written for another sweep" in lines[0]
    assert "policy 'fixup' (this sweep: 'defer')" in lines[0]
    assert "Traceback" not in second.output


def test_a_garbled_line_is_refused_and_a_torn_last_line_tolerated(tmp_path):
    journal = tmp_path / "j.jsonl"
    args = ("--mode", "native", "--path", "sysexit", "--brief", "--json", "--journal",
            str(journal))
    complete = invoke(*args)
    assert complete.exit_code == 0
    digest = json.loads(complete.output)["report_hash"]
    lines = journal.read_text().splitlines()
    # a crash mid-write: the last record cut short, no newline
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output)["report_hash"] == digest
    assert len(journal.read_text().splitlines()) == len(lines)  # the torn job ran again
    # a damaged line in the middle is not a crash: refused, naming the line
    damaged = journal.read_text().splitlines()
    damaged[3] = damaged[3][:10] + "#" + damaged[3][10:]
    journal.write_text("\n".join(damaged) + "\n")
    refused = invoke(*args)
    assert refused.exit_code == 1
    assert refused.output.strip().count("\n") == 0
    assert f"{journal}:4: not a journal record" in refused.output


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plotting extra is absent")
    target = tmp_path / "map.png"
    result = invoke("--mode", "naive", "--path", "sysexit", "--brief", "--plot", str(target))
    assert result.exit_code == 1  # the naive kernel breaks
    assert f"race map drawn to {target}" in result.output
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_an_unreachable_cluster_is_one_line():
    pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is absent")
    result = invoke("--path", "sysexit", "--dask", "nonsense://nowhere", "--brief")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "--dask nonsense://nowhere: cannot reach the cluster" in result.output
