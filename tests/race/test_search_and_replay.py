"""Hypothesis finds and shrinks the race; a counterexample replays from reset to the
same violation; ``vmi race`` prints the map and exits 1 exactly when one broke."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.race.conftest import scenario
from vmi.cli import main as cli
from vmi.race.explorer import sweep
from vmi.race.search import search
from vmi.system import boot_system


def test_search_shrinks_the_naive_race_to_one_interrupt_in_the_window():
    sc = scenario(mode="naive", policy="none", path="sysexit")
    worst, seen = search(sc, 60, max_interrupts=3)
    assert worst is not None and not worst.ok
    assert len(worst.schedule) == 1  # shrunk from whatever failed first
    assert sc.boundaries[worst.schedule[0]].window == "sysexit"
    assert worst.invariant == "lost-work"
    assert len(seen) > 1


def test_search_finds_nothing_in_the_vmi_kernel():
    sc = scenario(mode="vmi", policy="fixup", path="sysexit")
    worst, seen = search(sc, 40)
    assert worst is None and len(seen) > 10 and all(o.ok for o in seen)


def test_counterexample_replays_from_reset():
    """The replay file's schedule (absolute cycles) and stop step, played on a fresh
    boot, land on the state in which the explorer saw the violation."""
    sc = scenario(mode="naive", policy="none", path="sysexit")
    worst = next(o for o in sweep(sc, 1) if not o.ok)
    replay = sc.replay(worst)
    assert replay["format"] == "vmi-race-counterexample" and replay["replayable"]
    assert replay["invariant"] == "lost-work" and replay["schedule"]
    fresh = boot_system(replay["mode"], policy=replay["policy"], macros=replay["macros"],
                        cpus=replay["cpus"], seed=replay["seed"])
    fresh.machine.add_schedule(replay["schedule"])
    assert replay["stop_step"] == worst.injections[-1].machine_step + 1
    hold = replay["timer_hold"]  # the branch ran with the timer held off from its start
    assert hold is not None and hold["step"] < replay["stop_step"]
    while fresh.machine.steps < replay["violation_step"]:
        if fresh.machine.steps == hold["step"]:
            fresh.machine.timer.deadline[hold["cpu"]] = hold["deadline"]
        fresh.machine.step()
    cpu = fresh.machine.cpus[0]
    assert (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF == worst.violation.eip
    assert cpu.cpl == 3
    assert fresh.machine.pic.delivered[0] > 0


def invoke(*args: str):
    return CliRunner().invoke(cli, ["race", *args])


def test_cli_naive_iret_breaks_and_says_where(tmp_path):
    out = tmp_path / "cx.json"
    result = invoke("--mode", "naive", "--path", "iret", "--save", str(out))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("vmi race: mode naive")
    table = [line for line in lines if "restore_nocheck+" in line and line.rstrip().endswith(
        "nesting")]
    assert len(table) == 2
    assert any(line.strip().startswith("map: ") and "NN" in line for line in lines)
    assert "counterexample: 1 interrupt(s) at boundary" in result.output
    assert "invariants broken: liveness, nesting" in result.output
    saved = json.loads(out.read_text())
    assert saved["invariant"] == "liveness" and saved["stop_step"] > 0


def test_cli_json_reports_the_rate_and_holds_for_vmi():
    result = invoke("--mode", "vmi", "--policy", "fixup", "--path", "sysexit", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["exit_status"] == 0 and data["broken"] == []
    assert data["explored_boundaries"] == data["schedules"] > 10
    assert data["schedules_per_second"] > 0
    (path,) = data["paths"]
    assert path["cells"] == [None] * len(path["boundaries"])
    assert {b["window"] for b in path["boundaries"]} >= {"sysexit", None}


def test_cli_examples_runs_a_search():
    result = invoke("--mode", "vmi", "--macros", "vmi-split", "--path", "sysexit",
                    "--examples", "30", "--brief")
    assert result.exit_code == 1
    assert "(searched, up to 1 interrupt(s), first interrupt at " in result.output
    assert "lost-work" in result.output and "every invariant held" not in result.output


def test_cli_bad_input_is_a_usage_error():
    for args in (["--mode", "naive", "--macros", "vmi"], ["--cpus", "2", "--path", "iret"],
                 ["--depth", "4"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, args


def test_cli_vector_horizon_and_invariant_options():
    timer = json.loads(invoke("--path", "sysexit", "--vector", "timer", "--json").output)
    assert timer["exit_status"] == 0 and timer["schedules"] == 22
    assert "not console" in invoke("--vector", "0x10").output  # below the external vectors
    refused = invoke("--horizon", "5")
    assert refused.exit_code == 2 and "--depth 2 or 3" in refused.output
    nested = json.loads(invoke("--mode", "naive", "--path", "sysexit", "--depth", "2",
                               "--horizon", "5", "--json").output)
    assert nested["schedules"] == 11 * 5 and nested["exit_status"] == 1
    focused = json.loads(invoke("--mode", "naive", "--path", "iret", "--invariant", "nesting",
                                "--json").output)
    assert focused["paths"][0]["counterexample"]["invariant"] == "nesting"
    assert "liveness" in focused["broken"]  # the smallest of any would be liveness


def test_cli_reports_a_path_the_kernel_never_reaches(monkeypatch):
    """A path whose start is never reached is reported (exit 1) and the others still
    get their verdict."""
    from vmi.race import explorer

    prepare = explorer.prepare

    def not_iret16(config):
        if config.path == "iret16":
            raise explorer.PathNotReached("vmi/defer: the iret16 path's start was not reached")
        return prepare(config)
    monkeypatch.setattr(explorer, "prepare", not_iret16)
    result = invoke("--brief")
    assert result.exit_code == 1, result.output
    assert "path iret16: not explored: vmi/defer: the iret16 path's start" in result.output
    assert "path sysexit:" in result.output
    assert "every invariant held" not in result.output.splitlines()
    assert result.output.rstrip().endswith("paths not reached: iret16 (the kernel never got "
                                           "there: a hang or a crash on the way)")
