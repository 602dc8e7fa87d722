"""Race search at scale: the figures of issue 11, measured in one run.

Prints:

* instructions per second of the bundled workload (``vmi run``'s) natively and
  under VMI, each in a fresh process: with the translation cache an earlier
  process saved (``vmi.cpu.codecache``; the figure the target is for), with an
  empty one (the first run after installing: every instruction decoded and
  compiled), and warm (the workload again in the same process);
* snapshot plus restore per second of the bundled machine (16 MiB) at
  boundaries 100 instructions apart (incremental: only the pages written since),
  and the cost of one whole snapshot;
* schedules per second of one depth-2 sweep (the VMI kernel's IRET path, defer)
  serially, with ``--jobs 2`` (forked: the workers start warm) and on a
  two-worker Dask LocalCluster (fresh processes: its second sweep, and the first
  for comparison), each as a ratio to serial, and whether the reports have the
  same hash;
* the time of the depth-2 sweeps of the IRET and SYSEXIT paths of the native,
  naive and VMI kernels with ``--jobs 2``.

Targets (issue 11, CPython 3.11, this 2-core machine): workload >= 1.5 M
instructions/s natively and >= 1.0 M/s under VMI; ``--jobs 2`` >= 1.7x serial;
the six depth-2 sweeps in < 60 s with ``--jobs 2``.

    python benchmarks/race_scale.py [--json] [--no-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

TARGETS = {"native_mips": 1.5, "vmi_mips": 1.0, "jobs2_ratio": 1.7, "sweeps_seconds": 60.0}


def workload(mode: str) -> dict[str, float]:
    """Instructions per second of the whole bundled workload in this process: its
    first run (decoding and compiling what the translation cache does not hold),
    then again on a new machine (warm: compiled code is shared by the process)."""
    from vmi.system import boot_system

    figures = {}
    for label in ("first", "warm"):
        system = boot_system(mode)
        began = time.perf_counter()
        system.machine.run(10_000_000)
        seconds = time.perf_counter() - began
        if not system.guest.completed or system.guest.check_failures():
            raise SystemExit(f"the {mode} workload did not complete cleanly")
        count = sum(cpu.instructions for cpu in system.machine.cpus)
        figures[label] = count / seconds / 1e6
    return figures


def workload_in_fresh_processes(mode: str, repeats: int = 3) -> dict[str, float]:
    """The workload in new processes sharing one new translation cache directory:
    the first process finds it empty (``empty``), the next ones find what the first
    saved (``cached``, the median of ``repeats``); ``warm`` is the best second run."""
    import statistics
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vmi-bench-cache-") as directory:
        env = dict(os.environ, VMI_CACHE_DIR=directory)
        runs = []
        for _ in range(1 + repeats):
            done = subprocess.run([sys.executable, __file__, "--workload", mode], env=env,
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"the {mode} workload failed:\n{done.stderr}")
            runs.append(json.loads(done.stdout))
    return {"empty": runs[0]["first"],
            "cached": statistics.median(run["first"] for run in runs[1:]),
            "warm": max(run["warm"] for run in runs)}


def snapshots() -> dict[str, float]:
    """Snapshot + restore pairs per second of the booted bundled machine at the
    boundaries of a run (100 instructions apart, the time of the run itself not
    counted), and what one whole 16 MiB snapshot costs."""
    from vmi.system import boot_system

    machine = boot_system("vmi").machine
    machine.run(100_000)
    began = time.perf_counter()
    machine.snapshot()  # the first one is taken whole
    whole = time.perf_counter() - began
    rounds, spent = 200, 0.0
    for _ in range(rounds):
        machine.run(100)
        began = time.perf_counter()
        machine.restore(machine.snapshot())
        spent += time.perf_counter() - began
    return {"pairs_per_second": rounds / spent, "whole_snapshot_ms": whole * 1000}


def sweep(configs: list[Any], executor: Any, depth: int = 2) -> tuple[float, str, int]:
    """Seconds, report hash and schedule count of depth-``depth`` sweeps of ``configs``
    on ``executor`` (scenarios prepared before the clock starts)."""
    from vmi.race import jobs as J
    from vmi.race.explorer import prepare, schedules

    scenarios = [prepare(config) for config in configs]
    for scenario in scenarios:
        J.adopt(scenario)
    work = [J.Job(s.config, s.fingerprint, k) for s in scenarios for k in schedules(s, depth)]
    began = time.perf_counter()
    try:
        results = J.run_jobs(work, executor() if callable(executor) else executor)
    finally:
        pass
    seconds = time.perf_counter() - began
    digest = J.report_digest(J.merge(s, results) for s in scenarios)
    return seconds, digest, len(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster")
    parser.add_argument("--workload", metavar="MODE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:  # one fresh process of workload_in_fresh_processes
        print(json.dumps(workload(args.workload)))
        return 0
    from vmi.race import jobs as J
    from vmi.race.explorer import Config

    out: dict[str, Any] = {}
    out["native"] = workload_in_fresh_processes("native")
    out["vmi"] = workload_in_fresh_processes("vmi")
    out["snapshot_restore_per_second"] = snapshots()

    iret = [Config(mode="vmi", policy="defer", path="iret")]
    serial_s, serial_hash, count = sweep(iret, J.SerialExecutor())
    pool = J.processes(2)
    jobs_s, jobs_hash, _ = sweep(iret, pool)
    pool.shutdown()
    out["sweep"] = {"schedules": count, "serial_per_second": count / serial_s,
                    "jobs2_per_second": count / jobs_s, "jobs2_ratio": serial_s / jobs_s,
                    "same_hash": jobs_hash == serial_hash}
    if not args.no_dask:
        try:
            cluster = J.DaskExecutor("local", workers=2)
        except J.JobError as error:
            out["sweep"]["dask"] = str(error)
        else:
            # the workers are fresh processes: the first sweep prepares their scenario
            # and compiles the code the branches run; the second is the steady state
            first_s, _, _ = sweep(iret, cluster)
            dask_s, dask_hash, _ = sweep(iret, cluster)
            out["sweep"]["dask2_first_per_second"] = count / first_s
            cluster.shutdown()
            out["sweep"].update({"dask2_per_second": count / dask_s,
                                 "dask2_ratio": serial_s / dask_s,
                                 "same_hash": out["sweep"]["same_hash"]
                                 and dask_hash == serial_hash})

    six = [Config(mode=mode, policy="defer", path=path)
           for mode in ("native", "naive", "vmi") for path in ("iret", "sysexit")]
    pool = J.processes(2)
    began = time.perf_counter()
    six_s, _, six_count = sweep(six, pool)
    pool.shutdown()
    out["six_depth2_sweeps"] = {"schedules": six_count, "seconds": six_s,
                                "with_preparation_seconds": time.perf_counter() - began}

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for mode, target in (("native", "native_mips"), ("vmi", "vmi_mips")):
        w = out[mode]
        print(f"workload {mode:8} {w['cached']:.2f} M instr/s in a fresh process "
              f"(target {TARGETS[target]}); {w['empty']:.2f} with an empty translation "
              f"cache, {w['warm']:.2f} warm")
    snap = out["snapshot_restore_per_second"]
    print(f"snapshot+restore  {snap['pairs_per_second']:.0f} per second 100 instructions apart "
          f"(target 10000; a whole 16 MiB snapshot: {snap['whole_snapshot_ms']:.1f} ms)")
    s = out["sweep"]
    print(f"depth-2 sweep of the VMI IRET path, {s['schedules']} schedules:")
    print(f"  serial          {s['serial_per_second']:.0f} schedules/s")
    print(f"  --jobs 2        {s['jobs2_per_second']:.0f} schedules/s, "
          f"{s['jobs2_ratio']:.2f}x serial (target {TARGETS['jobs2_ratio']})")
    if "dask2_per_second" in s:
        print(f"  dask, 2 workers {s['dask2_per_second']:.0f} schedules/s, "
              f"{s['dask2_ratio']:.2f}x serial (its first sweep, on fresh workers: "
              f"{s['dask2_first_per_second']:.0f} schedules/s)")
    elif "dask" in s:
        print(f"  dask            skipped: {s['dask']}")
    print(f"  reports identical: {s['same_hash']}")
    six_f = out["six_depth2_sweeps"]
    print(f"depth-2 sweeps of iret and sysexit for native, naive, vmi with --jobs 2: "
          f"{six_f['schedules']} schedules in {six_f['seconds']:.1f} s "
          f"({six_f['with_preparation_seconds']:.1f} s with preparation; target "
          f"{TARGETS['sweeps_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
