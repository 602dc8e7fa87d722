"""``vmi run``: boot the bundled program and print a summary."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.command("run")
@click.option("--steps", default=1_000_000, show_default=True, help="Stop after this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(steps: int, as_json: bool) -> None:
    """Run the bundled program and print a summary.

    Until the guest kernel lands this is the bundled demo (Fibonacci(20) on a
    flat 32-bit CPU); exit status 0 when it halted with the right answer.
    """
    from vmi.cpu import CPU, CPUException
    from vmi.demo import DEMO_BASE, DEMO_CODE, DEMO_EXPECTED, DEMO_RESULT

    cpu = CPU.flat()
    cpu.mem.load(DEMO_BASE, DEMO_CODE)
    cpu.eip = DEMO_BASE
    fault = None
    try:
        cpu.run(steps)
    except CPUException as exc:
        fault = f"{exc} at eip={cpu.eip:#x}"
    result = cpu.mem.read32(DEMO_RESULT)
    ok = cpu.halted and fault is None and result == DEMO_EXPECTED
    summary: dict[str, Any] = {
        "program": "demo: fibonacci(20)",
        "instructions": cpu.instructions,
        "cycles": cpu.cycles,
        "halted": cpu.halted,
        "result": result,
        "expected": DEMO_EXPECTED,
        "fault": fault,
        "checks_failed": 0 if ok else 1,
        "registers": cpu.regs.as_dict(),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=None))
    else:
        click.echo(f"program       {summary['program']}")
        click.echo(f"instructions  {cpu.instructions}")
        click.echo(f"cycles        {cpu.cycles}")
        click.echo(f"halted        {'yes' if cpu.halted else 'no'}")
        click.echo(f"result        {result} (expected {DEMO_EXPECTED})")
        if fault:
            click.echo(f"fault         {fault}")
        click.echo("registers     " + " ".join(
            f"{k}={v:08x}" for k, v in summary["registers"].items()))
        click.echo(f"checks        {'all held' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)

