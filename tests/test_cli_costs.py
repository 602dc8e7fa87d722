"""``vmi costs``: cycles per system-call round trip and per interrupt, natively, as
pure trap-and-emulate and under VMI; the table's shape, and figures that agree
with the monitor's documented exit costs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vmi import costs
from vmi.cli import main
from vmi.hypervisor.monitor import EXIT_COSTS, FRAME_COST

MODES = ("native", "trap", "vmi")
LABELS = ["native", "trap-and-emulate", "VMI"]
CELL_KEYS = {"count", "median", "min", "max", "mean", "median_instructions",
             "median_exit_cycles", "median_exits", "discarded"}


@pytest.fixture(scope="module")
def figures() -> dict[str, costs.CostFigures]:
    """One real measurement of the three modes, shared by the tests (about 6 s)."""
    return {f.mode: f for f in costs.measure_modes(MODES, policy="defer")}


def invoke(*args: str):
    return CliRunner().invoke(main, ["costs", *args])


@pytest.fixture
def measured(figures, monkeypatch):
    """The command, fed the module's measurement instead of measuring again."""
    def fake(modes, *, policy="defer", seed=0):
        assert policy == "defer"
        return [figures[mode] for mode in modes]
    monkeypatch.setattr(costs, "measure_modes", fake)


def median(figures, mode: str, kind: str) -> int:
    value = figures[mode].cells[kind].median
    assert value is not None, f"{mode} {kind}: no samples"
    return value


def test_json_shape(measured, figures):
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"policy", "cpus", "kinds", "modes", "seconds"}
    assert data["kinds"] == ["int80", "sysenter", "interrupt"] and data["cpus"] == 1
    assert [row["label"] for row in data["modes"]] == LABELS
    for row in data["modes"]:
        for kind in data["kinds"]:
            assert set(row[kind]) == CELL_KEYS, (row["mode"], kind)
            assert row[kind]["median"] == median(figures, row["mode"], kind)
            assert row["ratio"][kind] == round(row[kind]["median"]
                                               / data["modes"][0][kind]["median"], 2)
    assert data["modes"][0]["ratio"] == {"int80": 1.0, "sysenter": 1.0, "interrupt": 1.0}
    assert data["modes"][0]["exits"] == {} and data["modes"][2]["exits"]["trap"] > 0


def test_text_table(measured, figures):
    result = invoke()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    heading = next(line for line in lines if "int $0x80 getpid" in line)
    assert "sysenter getpid" in heading and "timer interrupt (user)" in heading
    assert lines[lines.index(heading) + 1].split() == ["mode"] + ["cycles", "n", "x", "native"] * 3
    rows = lines[lines.index(heading) + 2: lines.index(heading) + 5]
    for row, label, mode in zip(rows, LABELS, MODES, strict=True):
        assert row.startswith(label)
        words = row[len(label):].split()
        for i, kind in enumerate(costs.KINDS):
            cell = figures[mode].cells[kind]
            assert words[3 * i: 3 * i + 2] == [f"{cell.median:,}", str(cell.count)], row
    assert any(line.startswith("monitor exits in the median round trip") for line in lines)
    assert any(line.startswith("measured in ") for line in lines)


def test_every_cell_has_samples(figures):
    for mode in MODES:
        for kind in costs.KINDS:
            cell = figures[mode].cells[kind].as_dict()
            assert cell["count"] > 0, (mode, kind, cell["discarded"])
            assert cell["min"] <= cell["median"] <= cell["max"]


def test_syscall_round_trips_native_then_vmi_then_trap_and_emulate(figures):
    for kind in ("int80", "sysenter"):
        assert (median(figures, "native", kind) < median(figures, "vmi", kind)
                < median(figures, "trap", kind)), kind


def test_vmi_exits_are_the_ones_that_must_happen(figures):
    """A getpid round trip under VMI exits only where the ROM cannot help: the user's
    sysenter (the real IA32_SYSENTER_CS is 0: #GP, emulated) or the int $0x80 (the
    real IDT is empty: taken and reflected, a frame built); the return through the
    ROM's SYSEXIT or IRET does not exit. Natively the monitor charges nothing."""
    vmi = figures["vmi"].cells
    assert vmi["sysenter"].typical.exits == (("emulation", 1),)
    assert vmi["sysenter"].typical.exit_cycles == EXIT_COSTS["emulation"]
    assert vmi["int80"].typical.exits == (("trap", 1),)
    assert vmi["int80"].typical.exit_cycles == EXIT_COSTS["trap"] + FRAME_COST
    assert dict(vmi["interrupt"].typical.exits)["interrupt"] == 1
    for kind in costs.KINDS:
        assert figures["native"].cells[kind].typical.exit_cycles == 0


def test_vmi_minus_native_is_at_least_the_exits_that_must_happen(figures):
    def extra(kind: str) -> int:
        return median(figures, "vmi", kind) - median(figures, "native", kind)

    assert extra("sysenter") >= EXIT_COSTS["emulation"]
    assert extra("int80") >= EXIT_COSTS["trap"]
    assert extra("interrupt") >= EXIT_COSTS["interrupt"]
    # once the exits are taken out, VMI runs about the native path (plus the ROM's
    # few instructions): what is left is less than one exit more than native
    for kind in ("sysenter", "int80"):
        guest = median(figures, "vmi", kind) - figures["vmi"].cells[kind].typical.exit_cycles
        assert 0 <= guest - median(figures, "native", kind) < EXIT_COSTS["trap"], kind


def test_trap_and_emulate_also_traps_the_kernels_hooks(figures):
    """Unpatched, the kernel's own sysexit, sti and cli trap too: more exits in a
    sysenter round trip than under VMI, each at least an emulation's cost."""
    trap, vmi = figures["trap"].cells["sysenter"], figures["vmi"].cells["sysenter"]
    assert dict(trap.typical.exits)["emulation"] >= 2  # the sysenter and the sysexit
    assert trap.median - vmi.median >= EXIT_COSTS["emulation"]
    assert figures["trap"].exit_cycles > 2 * figures["vmi"].exit_cycles


def test_the_command_measures_for_real():
    """Not fed: one mode, measured by the command itself."""
    result = invoke("--modes", "native", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["modes"]
    assert row["mode"] == "native" and row["sysenter"]["count"] > 0
    assert [run["workload"][0] for run in row["runs"]] == ["syscalls", "syscalls"]
    assert len(row["runs"][0]["workload"]) > 1  # the whole workload, then one program


@pytest.mark.parametrize("args, message", [
    (["--modes", "native,bogus"], "--modes: unknown mode 'bogus'"),
    (["--modes", "native,,vmi"], "--modes: empty mode"),
    (["--modes", "vmi,vmi"], "--modes: vmi given more than once"),
    (["--policy", "none"], "--policy: unknown policy 'none'"),
])
def test_bad_input_is_one_line(args, message):
    result = invoke(*args)
    assert result.exit_code == 2  # bad usage
    assert result.output.startswith(f"Error: {message}")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
