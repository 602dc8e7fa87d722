"""``vmi costs``: cycles per system-call round trip and per interrupt, by mode.

Boots the bundled kernel natively, as pure trap-and-emulate (the native image
under the VMI monitor) and under VMI, steps the workload and prints the median
cycles of an ``int $0x80`` getpid round trip, a ``sysenter`` getpid round trip
and a timer interrupt taken in user mode, with the sample counts and the ratio
to native (``vmi.costs`` says how the samples are taken; docs/hypervisor.md,
"Costs", what the figures are made of).
"""

from __future__ import annotations

import json
from typing import Any

import click

from vmi.commands import UsageLine, UserError

DEFAULT_MODES = "native,trap,vmi"
WINDOW_POLICIES = ("defer", "fixup")
HEADINGS = {"int80": "int $0x80 getpid", "sysenter": "sysenter getpid",
            "interrupt": "timer interrupt (user)"}


@click.command("costs")
@click.option("--modes", default=DEFAULT_MODES, show_default=True,
              help="Comma-separated modes to measure: native, trap (the native kernel "
                   "under the monitor: pure trap-and-emulate), vmi, naive.")
@click.option("--policy", default="defer", show_default=True,
              help="The window policy under --mode vmi: defer or fixup.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def command(modes: str, policy: str, as_json: bool) -> None:
    """Measure cycles per syscall round trip and per interrupt for each mode."""
    from vmi.costs import CostError, measure_modes
    from vmi.machine import MachineStopped
    from vmi.system import SystemError_

    chosen = parse_modes(modes)
    if policy not in WINDOW_POLICIES:
        raise UsageLine(f"--policy: unknown policy {policy!r} (choose defer or fixup)")
    try:
        figures = measure_modes(chosen, policy=policy)
    except (CostError, MachineStopped, SystemError_) as error:
        raise UserError(f"vmi costs: {error}") from None
    report = build_report(figures, policy)
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in format_report(report):
            click.echo(line)


def parse_modes(text: str) -> tuple[str, ...]:
    """The modes of ``--modes``, in the order given; ``UsageLine`` (exit status 2)
    for an empty, unknown or repeated one."""
    from vmi.costs import MODE_LABELS

    modes = tuple(part.strip() for part in text.split(","))
    for mode in modes:
        if not mode:
            raise UsageLine(f"--modes: empty mode in {text!r} (e.g. {DEFAULT_MODES})")
        if mode not in MODE_LABELS:
            raise UsageLine(f"--modes: unknown mode {mode!r} (choose from "
                            f"{', '.join(MODE_LABELS)})")
    repeated = sorted({mode for mode in modes if modes.count(mode) > 1})
    if repeated:
        raise UsageLine(f"--modes: {repeated[0]} given more than once")
    return modes


def build_report(figures: list[Any], policy: str) -> dict[str, Any]:
    """The JSON object: one entry per mode with its cells and its ratio to native."""
    from vmi.costs import KINDS, ratio

    native = next((f for f in figures if f.mode == "native"), None)
    rows = []
    for f in figures:
        row = f.as_dict()
        row["ratio"] = {kind: _rounded(ratio(f, native, kind)) for kind in KINDS}
        rows.append(row)
    return {"policy": policy, "cpus": 1, "kinds": list(KINDS), "modes": rows,
            "seconds": round(sum(f.seconds for f in figures), 2)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def format_report(report: dict[str, Any]) -> list[str]:
    """The text table and the lines under it."""
    kinds = report["kinds"]
    rows = report["modes"]
    policy = (f" (policy {report['policy']} under VMI)"
              if any(row["mode"] == "vmi" for row in rows) else "")
    lines = [f"vmi costs: cycles per round trip, bundled kernel on 1 CPU, median of n "
             f"samples{policy}",
             "runs: the whole workload; then the syscalls program alone, for ticks with "
             "no task to switch to", ""]
    lines += _main_table(rows, kinds)
    exit_rows = [row for row in rows if row["mode"] != "native"]
    if exit_rows:
        lines += ["", "monitor exits in the median round trip (cycles the monitor charged):"]
        lines += _align([["mode", *(HEADINGS[kind] for kind in kinds)]]
                        + [[row["label"], *(_exits_text(row[kind]) for kind in kinds)]
                           for row in exit_rows])
        lines += ["", "whole workload: " + "; ".join(_workload_text(row) for row in exit_rows)]
    lines.append("")
    timing = ", ".join(f"{row['label']} {row['seconds']:.1f} s" for row in rows)
    lines.append(f"measured in {report['seconds']:.1f} s ({timing})")
    return lines


def _main_table(rows: list[dict[str, Any]], kinds: list[str]) -> list[str]:
    """Rows = modes; per kind three right-aligned columns: the median cycles, the
    sample count and the ratio to native, under the kind's heading."""
    body = [[row["label"]] + [text for kind in kinds for text in _cell_texts(row, kind)]
            for row in rows]
    sub = ["mode"] + ["cycles", "n", "x native"] * len(kinds)
    widths = [max(len(line[i]) for line in [sub, *body]) for i in range(len(sub))]
    for k, kind in enumerate(kinds):  # widen a kind's first column to fit its heading
        span = sum(widths[1 + 3 * k: 4 + 3 * k]) + 2 * 2
        widths[1 + 3 * k] += max(0, len(HEADINGS[kind]) - span)

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        groups = ["  ".join(cells[i].rjust(widths[i]) for i in range(1 + 3 * k, 4 + 3 * k))
                  for k in range(len(kinds))]
        return "   ".join([first, *groups]).rstrip()

    spans = [sum(widths[1 + 3 * k: 4 + 3 * k]) + 2 * 2 for k in range(len(kinds))]
    heading = "   ".join([" " * widths[0]] + [HEADINGS[kind].rjust(span)
                                               for kind, span in zip(kinds, spans, strict=True)])
    return [heading.rstrip(), render(sub), *(render(cells) for cells in body)]


def _cell_texts(row: dict[str, Any], kind: str) -> list[str]:
    """The median, ``n`` and the ratio to native (``-`` where there is none)."""
    cell = row[kind]
    factor = row["ratio"][kind]
    median = "-" if cell["median"] is None else f"{cell['median']:,}"
    return [median, str(cell["count"]), "-" if factor is None else f"{factor:.2f}x"]


def _exits_text(cell: dict[str, Any]) -> str:
    if not cell["count"]:
        return "-"
    exits = ", ".join(f"{kind} {n}" for kind, n in cell["median_exits"].items()) or "none"
    return f"{exits} ({cell['median_exit_cycles']:,})"


def _workload_text(row: dict[str, Any]) -> str:
    return (f"{row['label']} {sum(row['exits'].values()):,} exits, "
            f"{row['exit_cycles']:,} cycles")


def _align(table: list[list[str]]) -> list[str]:
    """Left-aligned first column, the others padded to a common width."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["   ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
            .rstrip() for row in table]
