"""MIT xv6 from its disk to its shell prompt on the PC board, on 1 and on 2 CPUs.

Builds xv6 (``vmi.pc.xv6.build_xv6``, from ``$VMI_XV6_SRC`` or the shared data
tree) unless ``--build DIR`` names a finished build, then boots it in a fresh
process per configuration (``python -m vmi boot ... --until '$ ' --json``, as a
user would) and prints, for each: instructions, wall and CPU seconds of that
process (imports, machine set-up and boot included) and M instructions per
CPU-second. Targets of issue 19: one CPU to the prompt in <= 15 s of CPU time
on this 2-core machine, two CPUs in <= 2x the one-CPU time. The bundled
kernel's ``--cpus 2`` target (>= 1.0 M/s) is ``benchmarks/smp.py``'s.
Exit status 1 if a boot did not reach the prompt.

    python benchmarks/xv6_boot.py [--build DIR] [--cpus 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ONE_CPU_TARGET = 15.0  # seconds to the prompt, 1 CPU
TWO_CPU_RATIO = 2.0  # 2 CPUs at most this many times the 1-CPU time


def build(directory: Path | None) -> Path:
    """A finished xv6 build: ``directory`` if given, else a fresh one."""
    if directory is not None:
        return directory
    from vmi.pc.xv6 import build_xv6

    source = Path(os.environ.get("VMI_XV6_SRC") or
                  Path(__file__).resolve().parents[2] / "shared/data/xv6-public")
    output = Path(tempfile.mkdtemp(prefix="vmi-xv6-bench-")) / "xv6"
    return build_xv6(source, output).output


def boot(directory: Path, cpus: int) -> dict[str, Any]:
    """Boot to the prompt in a new process; its figures."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vmi", "boot", "--disk", str(directory / "xv6.img"),
         "--disk", str(directory / "fs.img"), "--cpus", str(cpus), "--until", "$ ",
         "--steps", "400000000", "--json"],
        capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        summary = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"cpus": cpus, "ok": False, "error": result.stderr.strip()[-300:]}
    return {"cpus": cpus, "ok": summary["stopped"] == "until",
            "instructions": summary["instructions"], "wall": wall, "cpu": cpu,
            "mips": summary["instructions"] / cpu / 1e6,
            "ap_started": "cpu1: starting 1" in summary["output"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=None,
                        help="a directory holding xv6.img and fs.img (else build one)")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = build(args.build)
    results = [boot(directory, cpus) for cpus in args.cpus]
    by_cpus = {r["cpus"]: r for r in results}
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            if not r["ok"]:
                print(f"{r['cpus']} CPU(s): did not reach the prompt "
                      f"{r.get('error', '')}")
                continue
            print(f"{r['cpus']} CPU(s): {r['instructions']:,} instructions to '$ ' in "
                  f"{r['cpu']:.1f} s CPU ({r['wall']:.1f} s wall), "
                  f"{r['mips']:.2f} M instructions/CPU-second")
        one = by_cpus.get(1)
        if one and one["ok"]:
            verdict = "met" if one["cpu"] <= ONE_CPU_TARGET else "NOT met"
            print(f"1 CPU to the prompt: {one['cpu']:.1f} s, target <= "
                  f"{ONE_CPU_TARGET:.0f} s: {verdict}")
        two = by_cpus.get(2)
        if one and two and one["ok"] and two["ok"]:
            ratio = two["cpu"] / one["cpu"]
            verdict = "met" if ratio <= TWO_CPU_RATIO else "NOT met"
            print(f"2 CPUs / 1 CPU: {ratio:.2f}x, target <= {TWO_CPU_RATIO:.1f}x: "
                  f"{verdict}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
