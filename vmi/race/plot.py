"""Pictures of the race and of its price: the race map and the cost chart.

``plot_race_map(rows, path)`` draws one row per kernel configuration and one cell
per instruction boundary of a swept path (``PathReport.cells()``), each cell
coloured by the invariant an interrupt raised at that boundary broke, the cells
inside an IRET/SYSEXIT window outlined and underlined, and a legend.
``plot_costs(figures, path)`` draws the cycles of a system-call round trip and of
a user-mode timer interrupt per mode (``vmi.costs.measure``), with the share the
monitor charged for its exits.

Both return a ``matplotlib.figure.Figure`` and, given ``path``, also write it to
exactly that path, whole or not at all (a temporary file renamed into place), in
the format its suffix names (``image_format``: PNG without a suffix; a format
matplotlib does not write is refused). matplotlib is imported only inside the
functions, never by ``import vmi`` or ``import vmi.race``; without it they raise
``PlotDependencyError`` naming the extra that installs it. The figures are
built without pyplot, so nothing depends on a display or on global state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmi.race.invariants import INVARIANTS

if TYPE_CHECKING:  # pragma: no cover - for the annotations only
    from matplotlib.figure import Figure

    from vmi.costs import CostFigures
    from vmi.race.report import PathReport

#: The optional-dependency extra (pyproject.toml) that brings matplotlib.
EXTRA = "docs"
INSTALL_HINT = f"pip install 'vmi[{EXTRA}]'"

#: One colour per invariant (Okabe-Ito: told apart with the common colour-vision
#: deficiencies), and the colour of a boundary where every invariant held.
COLOURS = {
    "lost-work": "#E69F00",         # orange
    "nesting": "#D55E00",           # vermilion
    "exactly-once": "#CC79A7",      # purple
    "integrity": "#0072B2",         # blue
    "mutual-exclusion": "#009E73",  # green
    "spin-irq": "#56B4E9",          # sky blue
    "liveness": "#F0E442",          # yellow
    "transparency": "#555555",      # dark grey
}
HELD = "#E4E4E4"
#: A boundary no schedule of a search started at (hatched white: nothing is known).
UNTRIED = "#FFFFFF"
WINDOW = "#000000"
#: Colours of the modes in the cost chart, by ``vmi.costs`` mode name.
MODE_COLOURS = {"native": "#009E73", "trap": "#D55E00", "vmi": "#0072B2", "naive": "#CC79A7"}
#: Headings of the cost kinds (as ``vmi costs`` prints them).
KIND_HEADINGS = {"int80": "int $0x80 getpid", "sysenter": "sysenter getpid",
                 "interrupt": "timer interrupt (user)"}

assert set(COLOURS) == set(INVARIANTS), "a colour for every invariant"


class PlotDependencyError(ImportError):
    """matplotlib is not installed; the message names the extra that installs it."""


def _matplotlib() -> Any:
    """The matplotlib pieces the plots use, imported on first need."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch, Rectangle
    except ImportError as error:
        raise PlotDependencyError(
            f"plotting needs matplotlib, which the '{EXTRA}' extra installs: "
            f"{INSTALL_HINT}") from error
    return matplotlib, Figure, Patch, Rectangle


def image_format(path: str | Path, *, default: str | None = None) -> str:
    """The image format ``path``'s suffix names (``png``), checked against what
    matplotlib writes; without a suffix ``default`` (``ValueError`` if None: the
    command line refuses to guess), ``ValueError`` for a format matplotlib does not
    write, ``PlotDependencyError`` without matplotlib."""
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".") or (default or "")
    known = FigureCanvasBase.get_supported_filetypes()
    if not suffix:
        raise ValueError("no suffix to name the image format (e.g. map.png, map.svg)")
    if suffix not in known:
        raise ValueError(f"matplotlib does not write .{suffix} images (it writes "
                         f"{', '.join('.' + k for k in sorted(known))})")
    return suffix


def _save(figure: Any, path: str | Path | None) -> None:
    """Write ``figure`` to exactly ``path`` (no suffix added), atomically, in the
    format its suffix names (PNG without one). The API makes missing directories;
    ``vmi race --plot`` refuses such a path before it starts."""
    if path is None:
        return
    from vmi.files import write_atomically

    kind = image_format(path, default="png")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda out: figure.savefig(out, format=kind, dpi=110,
                                                      bbox_inches="tight"))


def _rows(rows: Iterable[Any]) -> list[tuple[str, PathReport]]:
    """``(label, report)`` pairs; a bare ``PathReport`` is labelled by its
    configuration (``naive``, ``vmi/defer (vmi-split)``)."""
    out = []
    for row in rows:
        if isinstance(row, tuple):
            label, report = row
        else:
            report = row
            label = report.scenario.config.label()
        out.append((str(label), report))
    if not out:
        raise ValueError("plot_race_map: no rows to plot")
    return out


def _window_runs(report: PathReport) -> list[tuple[int, int, str]]:
    """Runs ``(first, last, name)`` of consecutive boundaries inside one window; the
    name says whose window it is (``ROM iret``, ``inline iret``)."""
    monitor = report.scenario.system.monitor
    runs: list[tuple[int, int, str]] = []
    for b in report.scenario.boundaries:
        if b.window is None:
            continue
        rom = monitor is not None and monitor.rom.window_at(b.eip) is not None
        name = f"{'ROM' if rom else 'inline'} {b.window}"
        if runs and runs[-1][1] == b.index - 1 and runs[-1][2] == name:
            runs[-1] = (runs[-1][0], b.index, name)
        else:
            runs.append((b.index, b.index, name))
    return runs


def plot_race_map(rows: Iterable[tuple[str, PathReport] | PathReport],
                  path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """The race map of swept paths: one row per ``(label, PathReport)``, one cell per
    instruction boundary (k = 0 at the path's start), coloured by the invariant an
    interrupt raised there broke (``PathReport.cells()``; grey: every invariant
    held). Cells inside an IRET or SYSEXIT window (the ROM's, or the inline one a
    naive kernel has) are outlined and underlined with the window's name. Written
    to ``path`` when given."""
    _, Figure, Patch, Rectangle = _matplotlib()
    table = _rows(rows)
    widest = max(len(report.scenario.boundaries) for _, report in table)
    height = 0.62 * len(table) + 1.6
    figure = Figure(figsize=(max(7.0, 0.2 * widest + 3.2), height), layout="constrained")
    axes = figure.add_subplot()
    seen: list[str] = []
    any_window = False
    any_untried = False
    for row, (_, report) in enumerate(table):
        y = len(table) - 1 - row  # first row at the top
        boundaries = report.scenario.boundaries
        for b, cell, tried in zip(boundaries, report.cells(), report.tried(), strict=True):
            colour = HELD if cell is None else COLOURS[cell]
            if not tried:
                any_untried = True
                colour = UNTRIED
            if cell is not None and cell not in seen:
                seen.append(cell)
            axes.add_patch(Rectangle((b.index, y + 0.1), 0.92, 0.62, facecolor=colour,
                                     edgecolor=WINDOW if b.window else "white",
                                     linewidth=1.6 if b.window else 0.5,
                                     hatch=None if tried else "..."))
        for first, last, name in _window_runs(report):
            any_window = True
            axes.plot([first, last + 0.92], [y + 0.02, y + 0.02], color=WINDOW, linewidth=2.5,
                      solid_capstyle="butt")
            axes.text((first + last + 0.92) / 2, y - 0.04, f"{name} window", ha="center",
                      va="top", fontsize=7)
        broken = report.broken
        summary = ", ".join(f"{name} {count}" for name, count in sorted(broken.items()))
        if not summary:
            summary = "held" if report.complete else \
                f"none broke ({sum(report.tried())}/{len(boundaries)} tried)"
        axes.text(len(boundaries) + 0.4, y + 0.41, summary, va="center",
                  fontsize=8, color="black" if broken else "#555555")
    axes.set_xlim(-0.3, widest + 6)
    axes.set_ylim(-0.35, len(table))
    axes.set_yticks([len(table) - 1 - i + 0.41 for i in range(len(table))],
                    [label for label, _ in table])
    axes.set_xlabel("instruction boundary of the path where the interrupt is raised (k)")
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.tick_params(axis="y", length=0)
    paths = sorted({report.scenario.config.path for _, report in table})
    axes.set_title(title or f"race map: one interrupt at each boundary of the "
                   f"{'/'.join(paths)} path", fontsize=10)
    held = "no invariant broke (in the schedules tried)" if any_untried else \
        "every invariant held"
    handles = [Patch(facecolor=HELD, edgecolor="#999999", label=held)]
    if any_untried:
        handles.append(Patch(facecolor=UNTRIED, edgecolor="#999999", hatch="...",
                             label="not tried by the search"))
    handles += [Patch(facecolor=COLOURS[name], label=f"{name} broke")
                for name in INVARIANTS if name in seen]
    if any_window:
        handles.append(Patch(facecolor="white", edgecolor=WINDOW, linewidth=1.6,
                             label="inside an IRET/SYSEXIT window"))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
                  fontsize=8, frameon=False)
    _save(figure, path)
    return figure


def plot_costs(figures: Sequence[CostFigures], path: str | Path | None = None, *,
               kinds: Sequence[str] = ("int80", "sysenter", "interrupt"),
               title: str | None = None) -> Figure:
    """Median cycles per round trip (``vmi.costs.measure``), one group of bars per
    kind (``int80``, ``sysenter``, ``interrupt``) and one bar per mode, the part the
    monitor charged for its exits hatched, each bar labelled with its cycles and
    its ratio to native (when native is among ``figures``). Written to ``path``
    when given."""
    _, Figure, Patch, _ = _matplotlib()
    from vmi.costs import MODE_LABELS, ratio

    if not figures:
        raise ValueError("plot_costs: no figures to plot")
    native = next((f for f in figures if f.mode == "native"), None)
    figure = Figure(figsize=(8.0, 4.4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(figures)
    top = 0
    for i, fig in enumerate(figures):
        colour = MODE_COLOURS.get(fig.mode, "#777777")
        for j, kind in enumerate(kinds):
            cell = fig.cells[kind]
            typical = cell.typical
            if typical is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            guest = typical.cycles - typical.exit_cycles
            axes.bar(x, guest, width * 0.92, color=colour)
            if typical.exit_cycles:
                axes.bar(x, typical.exit_cycles, width * 0.92, bottom=guest, color=colour,
                         alpha=0.55, hatch="//", edgecolor="white", linewidth=0)
            times = ratio(fig, native, kind)
            note = f"{typical.cycles:,}" + (f"\n{times:.2f}x" if times is not None else "")
            axes.text(x, typical.cycles, note, ha="center", va="bottom", fontsize=7)
            top = max(top, typical.cycles)
    axes.set_xticks(range(len(kinds)), [KIND_HEADINGS.get(k, k) for k in kinds])
    axes.set_ylabel("cycles (median round trip)")
    axes.set_ylim(0, top * 1.22 + 1)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    policy = next((f.policy for f in figures if f.mode == "vmi"), None)
    axes.set_title(title or "cycles per system call and per interrupt"
                   + (f" (VMI policy {policy})" if policy else ""), fontsize=10)
    handles = [Patch(facecolor=MODE_COLOURS.get(f.mode, "#777777"),
                     label=MODE_LABELS.get(f.mode, f.mode)) for f in figures]
    handles.append(Patch(facecolor="#999999", alpha=0.55, hatch="//", edgecolor="white",
                         label="charged by the monitor (exits)"))
    axes.legend(handles=handles, fontsize=8, frameon=False, loc="upper left")
    _save(figure, path)
    return figure


__all__ = ["COLOURS", "EXTRA", "INSTALL_HINT", "PlotDependencyError", "image_format",
           "plot_costs", "plot_race_map"]
