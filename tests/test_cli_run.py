"""``vmi run``: boots the guest kernel, runs the workload, summarises, exit status."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vmi.cli import main

REQUIRED_KEYS = {"mode", "cpus", "instructions", "cycles", "syscalls", "interrupts",
                 "reschedules", "checks_failed", "exit_status"}


def invoke(*args: str):
    return CliRunner().invoke(main, ["run", *args])


@pytest.mark.parametrize("cpus", [1, 2])
def test_json_summary(cpus):
    result = invoke("--cpus", str(cpus), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert REQUIRED_KEYS <= set(data)
    assert data["mode"] == "native" and data["macros"] == "native" and data["cpus"] == cpus
    assert data["exit_status"] == 0 and data["checks_failed"] == 0 and data["completed"]
    assert data["instructions"] > 100_000 and data["cycles"] > data["instructions"]
    assert data["syscalls"]["int80"] > 0 and data["syscalls"]["sysenter"] > 0
    assert data["interrupts"] > 0 and data["reschedules"]["switches"] > 0
    assert len(data["per_cpu"]) == cpus
    assert {task["exit_code"] for task in data["tasks"]} == {0}


def test_text_summary():
    result = invoke("--seed", "5", "--macros", "vmi")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "vmi run: mode native, 1 CPU, kernel macro set vmi, seed 5" in out
    assert "  | vmi guest kernel (Linux 2.6.16-style entry paths), macro set vmi" in out
    for label in ("instructions", "cycles", "syscalls", "interrupts", "reschedules",
                  "signals", "per CPU:", "tasks:"):
        assert label in out
    assert "checks        all held" in out


def test_out_of_steps_is_a_failure():
    result = invoke("--steps", "20000")
    assert result.exit_code == 1
    assert "FAILED" in result.output and "not finished after 20,000 steps" in result.output


def test_vmi_mode_runs_under_the_monitor_and_reports_exits():
    """Every check holds as natively; the 16-bit-stack returns (the seed's deferred
    case) go through the monitor's espfix."""
    result = invoke("--mode", "vmi", "--policy", "fixup", "--json")
    data = json.loads(result.output)
    assert data["mode"] == "vmi" and data["policy"] == "fixup"
    assert data["patched_sites"] > 0 and data["exits"]["rom_call"] > 0
    assert data["checks_failed"] == 0
    assert data["failures"] == []
    assert data["monitor"]["iret16_espfix"] > 0 and data["monitor"]["iret16_refused"] == 0
    assert result.exit_code == 0


def test_naive_mode_shows_failed_checks():
    result = invoke("--mode", "naive", "--json")
    data = json.loads(result.output)
    assert data["patched_sites"] == 0 and result.exit_code == 1


def test_macros_with_a_hypervisor_mode_is_a_usage_error():
    result = invoke("--mode", "vmi", "--macros", "native")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_bad_cpu_count_is_a_usage_error():
    result = invoke("--cpus", "5")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_trap_mode_is_pure_trap_and_emulate():
    """The native image under the monitor: nothing patched, every cli/sti/out traps
    and is emulated; its raw iret cannot do the espfix, so the 16-bit-stack task's
    checks fail (the seed's point), and the run says so."""
    result = invoke("--mode", "trap", "--json")
    data = json.loads(result.output)
    assert data["macros"] == "native" and data["patched_sites"] == 0
    assert data["monitor"]["emulated"]["cli"] > 0 and data["monitor"]["emulated"]["sti"] > 0
    assert data["work"]["counter"] == data["work"]["expected"]
    assert any("stack16" in failure for failure in data["failures"])
    assert result.exit_code == 1


def test_text_summary_shows_the_monitor():
    result = invoke("--mode", "vmi", "--policy", "fixup")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("vmi run: mode vmi, policy fixup, 1 CPU")
    for label in ("exits ", "emulated ", "patched ", "injected ", "window ", "iret16 "):
        assert any(line.startswith(label) for line in result.output.splitlines()), label


def test_quantum_is_shown_and_one_is_the_exact_interleaving():
    """Two CPUs run in quanta by default; --quantum 1 is the exact interleaving
    (the steps of the machine stepped one boundary per CPU per turn): both hold."""
    from vmi.machine import DEFAULT_QUANTUM
    from vmi.system import boot_system

    default = json.loads(invoke("--cpus", "2", "--json").output)
    exact = json.loads(invoke("--cpus", "2", "--quantum", "1", "--json").output)
    assert default["quantum"] == DEFAULT_QUANTUM and exact["quantum"] == 1
    assert default["exit_status"] == exact["exit_status"] == 0
    stepped = boot_system("native", cpus=2).machine
    assert stepped.run(10_000_000) == exact["steps"] != default["steps"]
    text = invoke("--cpus", "2", "--quantum", "250").output
    assert text.startswith("vmi run: mode native, 2 CPUs (quantum 250), kernel macro set")


def test_quantum_zero_is_a_usage_error():
    result = invoke("--cpus", "2", "--quantum", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--quantum" in result.output
