"""vmi.race.plot: the race map and the cost chart, and the promise that neither
``import vmi`` nor ``import vmi.race`` pulls in matplotlib or hypothesis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vmi.race import plot


def test_importing_vmi_and_the_race_explorer_stays_light() -> None:
    code = ("import vmi, vmi.race, vmi.race.explorer, vmi.race.report, vmi.race.plot, "
            "vmi.system, vmi.costs, sys; "
            "heavy = [m for m in ('matplotlib', 'hypothesis') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    for call in (lambda: plot.plot_race_map([]), lambda: plot.plot_costs([])):
        with pytest.raises(plot.PlotDependencyError, match=r"pip install 'vmi\[docs\]'"):
            call()
    assert issubclass(plot.PlotDependencyError, ImportError)


def test_the_extra_named_is_one_pyproject_defines() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml")
                            .read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"][plot.EXTRA]
    assert any(requirement.startswith("matplotlib") for requirement in extra)


@pytest.fixture(scope="module")
def sysexit_rows() -> list[tuple[str, object]]:
    pytest.importorskip("matplotlib")
    from vmi.race.explorer import Config, prepare, sweep
    from vmi.race.report import PathReport

    rows = []
    for label, config in (("naive", Config(mode="naive", path="sysexit")),
                          ("vmi/none", Config(mode="vmi", policy="none", path="sysexit"))):
        scenario = prepare(config)
        rows.append((label, PathReport(scenario, 1, sweep(scenario, 1))))
    return rows


def _texts(figure: object) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in figure.findobj(Text)]  # type: ignore[attr-defined]


def test_race_map_has_a_row_per_kernel_a_cell_per_boundary_and_a_legend(
        sysexit_rows: list[tuple[str, object]], tmp_path: object) -> None:
    from matplotlib.patches import Rectangle

    target = tmp_path / "map" / "race.png"  # type: ignore[operator]
    figure = plot.plot_race_map(sysexit_rows, target)
    assert target.is_file() and target.stat().st_size > 5_000
    axes = figure.axes[0]
    cells = [p for p in axes.patches if isinstance(p, Rectangle)]
    assert len(cells) == sum(len(r.scenario.boundaries) for _, r in sysexit_rows)
    colours = {tuple(round(c, 3) for c in p.get_facecolor()[:3]) for p in cells}
    from matplotlib.colors import to_rgb

    lost = tuple(round(c, 3) for c in to_rgb(plot.COLOURS["lost-work"]))
    assert lost in colours  # both kernels lose work on the sysexit path
    assert [t.get_text() for t in axes.get_yticklabels()] == ["naive", "vmi/none"]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "lost-work broke" in legend and "every invariant held" in legend
    assert "inside an IRET/SYSEXIT window" in legend
    assert "ROM sysexit window" in _texts(figure)  # the window is marked


def test_race_map_labels_bare_reports_by_their_configuration(
        sysexit_rows: list[tuple[str, object]]) -> None:
    figure = plot.plot_race_map([report for _, report in sysexit_rows])
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["naive", "vmi/none"]


def _figures(mode: str, cycles: dict[str, tuple[int, int]]) -> object:
    from vmi.costs import Cell, CostFigures, RunTotals, Sample

    cells = {kind: Cell(kind, (Sample(total, 10, charged, (("trap", 1),) if charged else ()),),
                        {}) for kind, (total, charged) in cycles.items()}
    run = RunTotals(("syscalls",), 1, 1, 1, {}, 0)
    return CostFigures(mode, "defer" if mode == "vmi" else "none", cells, (run,), 0.1)


def test_cost_chart_has_a_bar_per_mode_and_kind_and_labels_the_ratio(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    figures = [_figures("native", {"int80": (100, 0), "sysenter": (80, 0), "interrupt": (400, 0)}),
               _figures("vmi", {"int80": (250, 120), "sysenter": (160, 60),
                                "interrupt": (800, 300)})]
    target = tmp_path / "costs.png"  # type: ignore[operator]
    figure = plot.plot_costs(figures, target)
    assert target.is_file() and target.stat().st_size > 5_000
    texts = _texts(figure)
    assert "250\n2.50x" in texts and "100\n1.00x" in texts
    assert {"int $0x80 getpid", "sysenter getpid", "timer interrupt (user)"} <= set(texts)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["native", "VMI", "charged by the monitor (exits)"]
    # native: 3 bars; vmi: 3 guest parts + 3 monitor parts
    assert len(figure.axes[0].patches) == 3 + 6


def test_empty_input_is_refused() -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError):
        plot.plot_race_map([])
    with pytest.raises(ValueError):
        plot.plot_costs([])
