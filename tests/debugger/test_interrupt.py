"""Interrupting long commands and sharing the stub fairly (issue 17).

^C (SIGINT) stops any long command of ``vmi debug`` at the next step and gives
the prompt back; the stub stops a run or a long ``monitor`` command when gdb's
interrupt byte (0x03) arrives; the stub serves one client at a time and tells
a second one so at once; a silent client is dropped after the idle timeout.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

from tests.debugger.programs import open_engine, write_program
from tests.debugger.rsp import Client, Served
from vmi.debugger.gdbstub import BUSY

#: A program that never stops: every long command runs until it is interrupted.
SPIN = """
        .globl _start
_start:
        incl %eax
        jmp _start
"""


class Debugger:
    """``vmi debug`` in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "vmi", "debug", *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until a line containing ``text`` appeared (AssertionError past
        ``timeout``)."""
        start = time.monotonic()
        while not any(text in line for line in self.lines):
            assert time.monotonic() - start < timeout, \
                f"no {text!r} within {timeout} s: {''.join(self.lines)[-2000:]}"
            time.sleep(0.02)
        return time.monotonic() - start

    def close(self) -> tuple[int, str]:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read()


def test_sigint_stops_a_long_stepi_and_gives_the_prompt_back(tmp_path):
    debugger = Debugger(["--program", str(write_program(tmp_path, SPIN))])
    try:
        debugger.send("print 1")
        debugger.wait_for("$1 = 1", 60)  # the session is up and reading commands
        debugger.send("stepi 10000000")
        time.sleep(1.0)
        debugger.process.send_signal(signal.SIGINT)
        debugger.send("print $eax")
        assert debugger.wait_for("$2 = ", 5) < 5
        out = "".join(debugger.lines)
        assert "Interrupted after " in out
        steps = int(out.split("Interrupted after ")[1].split()[0])
        assert 0 < steps < 10_000_000
        # the session is intact: the registers say where the run stopped
        eax = int(out.split("$2 = ")[1].split()[0])
        assert abs(eax - steps // 2) <= 1
        assert f"step={steps}" in out
    finally:
        status, err = debugger.close()
    assert status == 0, err
    assert "Traceback" not in err


def test_sigint_stops_a_continue_without_a_budget(tmp_path):
    debugger = Debugger(["--program", str(write_program(tmp_path, SPIN))])
    try:
        debugger.send("set step-budget 1000000000")
        debugger.wait_for("continue now stops after at most 1000000000 steps", 60)
        debugger.send("continue")
        time.sleep(0.5)
        debugger.process.send_signal(signal.SIGINT)
        assert debugger.wait_for("Interrupted after ", 5) < 5
        debugger.send("stepi")
        debugger.wait_for("_start", 5)
    finally:
        status, err = debugger.close()
    assert status == 0, err


def test_interrupt_byte_stops_a_long_monitor_stepi():
    engine = open_engine(SPIN)
    serving = Served(engine)
    client = serving.client()
    try:
        raw = b"qRcmd," + b"stepi 100000000".hex().encode()
        client.send_raw(b"$" + raw + b"#" + f"{sum(raw) & 0xFF:02x}".encode())
        assert client.ack() == "+"
        time.sleep(0.5)
        start = time.monotonic()
        client.send_raw(b"\x03")
        assert client.packet() == "OK"
        assert time.monotonic() - start < 5
        report = "".join(client.console)
        assert "Interrupted after " in report
        assert 0 < engine.machine.steps < 100_000_000
        assert client.ask("?") == "T02thread:01;"
        # the session goes on
        assert client.ask("p8") == engine.machine.cpus[0].eip.to_bytes(4, "little").hex()
    finally:
        client.close()
        serving.close()


def test_interrupt_byte_stops_a_long_reverse_continue():
    engine = open_engine(SPIN)
    serving = Served(engine)
    client = serving.client()
    try:
        assert client.ask("qRcmd," + b"continue 300000".hex()) == "OK"
        assert engine.machine.steps == 300_000
        assert client.ask("Z0,1,1") == "OK"  # never hit (mid-instruction)
        client.send_raw(b"$bc#c5")
        assert client.ack() == "+"
        time.sleep(0.3)
        start = time.monotonic()
        client.send_raw(b"\x03")
        assert client.packet().startswith("T02thread:01;")
        assert time.monotonic() - start < 5
        assert client.ask("qC") == "QC1"
    finally:
        client.close()
        serving.close()


def test_a_second_client_is_told_at_once_and_the_first_goes_on():
    engine = open_engine()
    serving = Served(engine)
    first = serving.client()
    try:
        assert first.ask("qC") == "QC1"
        second = Client(serving.port, timeout=10)
        start = time.monotonic()
        reply = second.ask("qSupported:multiprocess+")
        assert reply == "E." + BUSY
        assert time.monotonic() - start < 3
        second.sock.settimeout(5)
        assert second.sock.recv(100) == b""  # and closed (an orderly end, no reset)
        second.close()
        assert serving.server.refused == 1
        assert serving.notices == ["refused a second client: another one is connected"]
        assert first.ask("p8") == engine.machine.cpus[0].eip.to_bytes(4, "little").hex()
        first.ask("D")
        first.close()
        third = serving.client()  # once the first has gone, the next is served
        assert third.ask("qC") == "QC1"
        third.close()
    finally:
        first.close()
        serving.close()


def test_a_silent_client_is_dropped_after_the_idle_timeout():
    engine = open_engine()
    serving = Served(engine, idle_timeout=0.5)
    try:
        idle = serving.client()
        assert idle.ask("qC") == "QC1"
        idle.sock.settimeout(10)
        start = time.monotonic()
        assert idle.sock.recv(100) == b""  # the server closed it
        assert 0.4 < time.monotonic() - start < 5
        idle.close()
        assert serving.notices == ["dropped the client: silent for 0.5 s"]
        nxt = serving.client()
        assert nxt.ask("qC") == "QC1"
        nxt.close()
    finally:
        serving.close()


def test_a_run_is_not_cut_by_the_idle_timeout():
    """The timeout is for silence between packets; a client waiting for a run is
    not silent."""
    engine = open_engine(SPIN)
    serving = Served(engine, idle_timeout=0.3)
    client = serving.client()
    try:
        raw = b"vCont;c"
        client.send_raw(b"$" + raw + b"#" + f"{sum(raw) & 0xFF:02x}".encode())
        assert client.ack() == "+"
        time.sleep(0.8)
        client.send_raw(b"\x03")
        assert client.packet().startswith("T02")
    finally:
        client.close()
        serving.close()


def test_real_gdb_is_told_another_client_is_connected(tmp_path):
    import shutil

    gdb = shutil.which("gdb")
    if gdb is None:
        import pytest

        pytest.skip("gdb is not installed")
    engine = open_engine()
    serving = Served(engine)
    first = serving.client()
    try:
        assert first.ask("qC") == "QC1"
        start = time.monotonic()
        result = subprocess.run(
            [gdb, "-nx", "-batch", "-ex", "set architecture i386",
             "-ex", f"target remote 127.0.0.1:{serving.port}"],
            capture_output=True, text=True, timeout=60)
        assert time.monotonic() - start < 20
        assert BUSY in result.stdout + result.stderr
    finally:
        first.close()
        serving.close()


def test_the_listener_keeps_no_client_waiting_unanswered():
    """Connections beyond the first are answered even when they send nothing."""
    engine = open_engine()
    serving = Served(engine)
    first = serving.client()
    try:
        assert first.ask("qC") == "QC1"
        quiet = socket.create_connection(("127.0.0.1", serving.port), timeout=10)
        data = b""
        while not data.endswith(b"#") and b"#" not in data:
            chunk = quiet.recv(1000)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"$E.vmi gdbserver: another client is connected")
        quiet.close()
    finally:
        first.close()
        serving.close()
