"""The debugger's history on the bundled kernel: time and peak memory of a long
forward run and the first reverse step after it.

Opens the bundled kernel in the debugger engine (as ``vmi debug`` does), runs
``--steps`` steps forward (100,000 by default), then one ``reverse-stepi``, then
``goto`` half-way, a fifth of the way and back to 99% (each restoring a snapshot
other than the last one taken), and prints the time of each phase, the history's
snapshot count and stored bytes, and the process's peak resident memory against
the target of issue 21 (150 MiB).
``--profile`` prints where the reverse step's time goes (cProfile, top functions).

    PYTHONPATH=$PWD python benchmarks/debugger_history.py [--steps N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import sys
import time

#: Peak resident memory the debugger may reach after 100,000 steps and a reverse
#: step (issue 21, "What it must show").
TARGET_MIB = 150.0


def peak_mib() -> float:
    """The process's peak resident set so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000,
                        help="steps to run forward before the reverse step (100000)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the reverse step and print its top functions")
    args = parser.parse_args(argv)

    from vmi.debugger.loader import open_engine

    began = time.perf_counter()
    engine, _banner = open_engine()
    opened = time.perf_counter() - began
    print(f"open engine         {opened:7.2f} s   peak RSS {peak_mib():6.1f} MiB")

    began = time.perf_counter()
    engine.stepi(args.steps)
    forward = time.perf_counter() - began
    history = engine.history
    print(f"{args.steps} steps forward {forward:7.2f} s   peak RSS {peak_mib():6.1f} MiB  "
          f"({len(history.snapshots)} snapshots every {history.interval} steps, "
          f"{stored(history) / (1 << 20):.1f} MiB stored)")
    expected = engine.machine.steps - 1

    profiler = cProfile.Profile() if args.profile else None
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    engine.reverse_stepi()
    if profiler is not None:
        profiler.disable()
    reverse = time.perf_counter() - began
    assert engine.machine.steps == expected, (engine.machine.steps, expected)
    peak = peak_mib()
    print(f"reverse-stepi       {reverse:7.2f} s   peak RSS {peak:6.1f} MiB  "
          f"({stored(history) / (1 << 20):.1f} MiB stored)")
    # Back to earlier snapshots than the last one taken (the machine's base), and
    # forward again: each restores a snapshot that is not the base.
    for fraction in (0.5, 0.2, 0.99):
        target = int(args.steps * fraction)
        began = time.perf_counter()
        engine.goto(target)
        spent = time.perf_counter() - began
        assert engine.machine.steps == target
        peak = peak_mib()
        print(f"goto {target:<14} {spent:7.2f} s   peak RSS {peak:6.1f} MiB  "
              f"({stored(history) / (1 << 20):.1f} MiB stored)")
    verdict = "met" if peak < TARGET_MIB else "NOT met"
    print(f"peak RSS {peak:.1f} MiB after {args.steps} steps, a reverse step and the "
          f"gotos, target < {TARGET_MIB:.0f} MiB: {verdict}")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
        print(out.getvalue())
    return 0


def stored(history: object) -> int:
    """The bytes the history's snapshots hold (its own count when it keeps one)."""
    count = getattr(history, "stored_bytes", None)
    return int(count()) if callable(count) else 0


if __name__ == "__main__":
    raise SystemExit(main())
