"""The GDB remote stub, spoken to by a raw-socket client (as QEMU tests its stub)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.debugger.programs import machine_state, open_engine, write_program
from tests.debugger.rsp import Client, Served
from vmi.debugger.gdbstub import GDB_REGISTERS, SUPPORTED, frame, target_xml


@pytest.fixture
def served():
    engine = open_engine(cpus=2)
    serving = Served(engine)
    client = serving.client()
    yield engine, client, serving
    client.close()
    serving.close()


def le(value: int) -> str:
    return value.to_bytes(4, "little").hex()


def test_handshake_packets(served):
    engine, client, _ = served
    assert client.ask("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386") == \
        SUPPORTED
    assert SUPPORTED == ("PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;"
                         "ReverseStep+;ReverseContinue+")
    assert client.ask("vMustReplyEmpty") == ""
    assert client.ask("Hg0") == "OK"
    assert client.ask("?") == "T05thread:01;"
    assert client.ask("qfThreadInfo") == "m1,2"
    assert client.ask("qsThreadInfo") == "l"
    assert client.ask("qC") == "QC1"
    assert client.ask("qAttached") == "1"
    assert client.ask("vCont?") == "vCont;c;C;s;S"
    assert client.ask("qTStatus") == ""
    assert client.ask("T2") == "OK" and client.ask("T9") == "E01"
    info = bytes.fromhex(client.ask("qThreadExtraInfo,2")).decode()
    assert info.startswith("cpu1 eip=00001000 cpl=0 IF=0")


def test_target_xml_is_served_in_pieces(served):
    _, client, _ = served
    document = ""
    offset = 0
    while True:
        reply = client.ask(f"qXfer:features:read:target.xml:{offset:x},80")
        document += reply[1:]
        offset += len(reply) - 1
        if reply[0] == "l":
            break
        assert reply[0] == "m"
    assert document == target_xml()
    assert '<feature name="org.gnu.gdb.i386.core">' in document
    assert document.count("<reg ") == 32
    assert client.ask("qXfer:features:read:other.xml:0,10") == "E00"


def test_g_has_the_16_core_registers_in_gdb_order(served):
    engine, client, _ = served
    cpu = engine.machine.cpus[0]
    for index, name in enumerate(GDB_REGISTERS):
        setattr(cpu.regs, name, 0x1000 + index if name not in ("eflags",) else 0x246)
    reply = client.ask("g")
    assert len(reply) == 128
    values = [int.from_bytes(bytes.fromhex(reply[i:i + 8]), "little") for i in range(0, 128, 8)]
    assert values == [getattr(cpu.regs, name) for name in GDB_REGISTERS]


def test_p_and_P_round_trip_every_register(served):
    engine, client, _ = served
    for number, name in enumerate(GDB_REGISTERS):
        value = {"eflags": 0x202, "cs": 0x60, "ss": 0x68, "ds": 0x7B, "es": 0x7B, "fs": 0,
                 "gs": 0x33}.get(name, 0x11223300 + number)
        assert client.ask(f"P{number:x}={le(value)}") == "OK"
        assert client.ask(f"p{number:x}") == le(value)
        assert getattr(engine.machine.cpus[0].regs, name) == value
    assert client.ask("p10") == "x" * 20  # st0: declared for gdb, no FPU
    assert client.ask("p1f") == "x" * 8  # fop
    assert client.ask("p40") == "E00"
    assert client.ask("P40=00000000") == "E00"
    assert client.ask("P0=0011") == "E01"


def test_G_writes_all_and_g_reads_them_back(served):
    engine, client, _ = served
    values = [0x10 * (n + 1) for n in range(16)]
    values[9] = 0x203  # eflags
    data = "".join(le(v) for v in values)
    assert client.ask("G" + data) == "OK"
    assert client.ask("g") == data
    assert client.ask("G00") == "E01"
    assert engine.machine.cpus[0].regs.ecx == 0x20


def test_threads_select_the_cpu_for_registers(served):
    engine, client, _ = served
    engine.machine.cpus[1].regs.eax = 0xCAFE
    assert client.ask("Hg2") == "OK"
    assert client.ask("p0") == le(0xCAFE)
    assert client.ask("Hg1") == "OK"
    assert client.ask("p0") == le(0)
    assert client.ask("Hg7") == "E01"


def test_m_and_M_round_trip_and_unmapped_reads_give_E14(served):
    engine, client, _ = served
    start = engine.symbols["_start"]
    assert client.ask(f"m{start:x},5") == engine.machine.memory.read_bytes(start, 5).hex()
    counter = engine.symbols["counter"]
    assert client.ask(f"M{counter:x},4:efbeadde") == "OK"
    assert engine.machine.memory.read32(counter) == 0xDEADBEEF
    assert client.ask(f"m{counter:x},4") == "efbeadde"
    assert client.ask(f"M{counter:x},4:ef") == "E01"
    # turn paging on with nothing mapped at 0x400000
    memory = engine.machine.memory
    memory.write32(0x80000, 0x81000 | 3)
    for page in range(256):
        memory.write32(0x81000 + 4 * page, (page << 12) | 3)
    for cpu in engine.machine.cpus:
        cpu.cr[3] = 0x80000
        cpu.cr[0] |= 0x80000000
    assert client.ask("m400000,4") == "E14"
    assert client.ask("M400000,1:00") == "E14"
    assert client.ask("mfff,8") == memory.read_bytes(0xFFF, 8).hex()
    assert client.ask("mfffff,4") == memory.read_bytes(0xFFFFF, 1).hex()  # the mapped prefix


def test_step_continue_breakpoints_and_reverse(served):
    engine, client, _ = served
    bump = engine.symbols["bump"]
    assert client.ask("Hc1") == "OK"
    assert client.ask("vCont;s:1;c") == "T05thread:01;"
    assert engine.machine.cpus[0].eip == engine.symbols["_start"] + 5
    assert client.ask(f"Z0,{bump:x},1") == "OK"
    assert client.ask("vCont;c") == "T05swbreak:;thread:01;"
    assert engine.machine.cpus[engine.selected].eip == bump
    reply = client.ask("?")
    assert reply.startswith("T05swbreak:;thread:0")
    # cpu0 just stepped, so stepping thread 1 lets cpu1 take its turn first, and cpu1
    # reaches the breakpoint on the way
    assert client.ask("s") == "T05swbreak:;thread:02;"
    assert client.ask("bs") == "T05thread:01;"
    assert client.ask(f"z0,{bump:x},1") == "OK"
    # bs went back to just before cpu0's last step, so cpu0 has the next turn: s and bs
    # are one machine step each way, and the state comes back exactly
    steps = engine.machine.steps
    before = machine_state(engine.machine)
    assert client.ask("s") == "T05thread:01;"
    assert engine.machine.steps == steps + 1
    assert client.ask("bs") == "T05thread:01;"
    assert machine_state(engine.machine) == before
    # after one step of cpu0, cpu1 has the turn: the next step of thread 1 takes two
    assert client.ask("vCont;s:1") == "T05thread:01;"
    assert client.ask("vCont;s:1") == "T05thread:01;"
    assert engine.machine.steps == steps + 3
    assert not [p for p in engine.points.values() if p.owner == "gdb"]
    assert client.ask(f"Z1,{bump:x},1") == "OK"
    assert client.ask("c").startswith("T05hwbreak:;thread:0")
    assert client.ask(f"z1,{bump:x},1") == "OK"
    assert client.ask("bc") == f"T05replaylog:begin;thread:{engine.selected + 1:02x};"
    assert engine.machine.steps == 0


def test_write_watchpoint_reports_the_address(served):
    engine, client, _ = served
    counter = engine.symbols["counter"]
    assert client.ask(f"Z2,{counter:x},4") == "OK"
    reply = client.ask("c")
    assert reply == f"T05watch:{counter:x};thread:{engine.selected + 1:02x};"
    assert engine.machine.memory.read32(counter) == 1
    assert client.ask(f"z2,{counter:x},4") == "OK"
    assert client.ask(f"Z5,{counter:x},4") == ""  # no such kind: the empty reply


def test_monitor_runs_engine_commands(served):
    engine, client, _ = served
    assert client.ask("qRcmd," + b"info registers eip".hex()) == "OK"
    assert client.console[-1].startswith("eip            0x1000")
    assert client.ask("qRcmd," + b"nonsense".hex()) == "OK"
    assert "Undefined command" in client.console[-1]


def test_interrupt_stops_a_run(served):
    engine, client, _ = served
    engine.machine.memory.load(0x1000, bytes.fromhex("ebfe"))  # jmp .
    raw = b"vCont;c"
    client.send_raw(b"$" + raw + b"#" + f"{sum(raw) & 0xFF:02x}".encode())
    assert client.ack() == "+"
    time.sleep(0.2)
    client.send_raw(b"\x03")
    reply = client.packet()
    assert reply.startswith("T02thread:")
    assert engine.machine.steps > 0


def test_malformed_packets_get_answers_and_the_session_goes_on(served):
    engine, client, _ = served
    assert client.ask("m") == "E01"
    assert client.ask("mzz,4") == "E01"
    assert client.ask("M1000,4:zz") == "E01"
    assert client.ask("P") == "E01"
    assert client.ask("Z0") == "E01"
    assert client.ask("Hx1") == "E01"
    assert client.ask("vCont;r1,2") == ""
    assert client.ask("qRcmd,zz") == "E01"
    assert client.ask("unknownpacket") == ""
    assert client.ask("") == ""
    client.send_raw(b"$g#00")  # a bad checksum is answered with '-'
    assert client.ack() == "-"
    client.send_raw(b"+++garbage")
    assert client.ask("qC") == "QC1"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789abcdefgmMpPgGZzHTvqsc,:;=?-$", max_size=30))
def test_any_packet_is_answered(packet):
    engine = open_engine(command_limit=200, step_budget=200)
    from vmi.debugger.gdbstub import GdbSession

    session = GdbSession(engine, _Silent())  # type: ignore[arg-type]
    reply = session.dispatch(packet.replace("$", ""))
    assert reply is None or isinstance(reply, str)


def test_a_client_that_vanishes_leaves_the_server_serving():
    engine = open_engine()
    serving = Served(engine)
    try:
        first = serving.client()
        first.send_raw(b"$qSupp")  # half a packet, then gone
        first.close()
        second = serving.client()
        assert second.ask("qC") == "QC1"
        second.ask("D")
        second.close()
        third = serving.client()
        assert third.ask("p8") == (engine.machine.cpus[0].eip).to_bytes(4, "little").hex()
        third.close()
    finally:
        serving.close()


def test_the_gdbserver_command_once(tmp_path):
    program = write_program(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "vmi", "gdbserver", "--program",
                                str(program), "--port", "0", "--once"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = None
        for _ in range(5):
            line = process.stdout.readline()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None
        client = Client(port)
        assert client.ask("qC") == "QC1"
        assert client.ask("p8") == le(0x1000)
        client.ask("D")
        client.close()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_default_host_is_local_only():
    engine = open_engine()
    serving = Served(engine)
    try:
        assert serving.server.listener is not None
        assert serving.server.listener.getsockname()[0] == "127.0.0.1"
    finally:
        serving.close()
    assert frame("OK") == b"$OK#9a"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", serving.port), timeout=1).close()


class _Silent:
    """A connection stand-in for driving ``GdbSession.dispatch`` without a socket."""

    interrupted = False

    def send(self, data: str) -> None:
        pass

    def poll_interrupt(self) -> bool:
        return True


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 15), st.integers(0, 0xFFFFFFFF), st.integers(0, 1))
def test_P_then_p_and_g_agree_for_every_register(number, value, cpu):
    """The round trip that caught Bochs's swapped EBX/EDX (reference/debugger.md §1.4)."""
    from vmi.debugger.gdbstub import GdbSession

    engine = open_engine(cpus=2)
    session = GdbSession(engine, _Silent())  # type: ignore[arg-type]
    assert session.dispatch(f"Hg{cpu + 1}") == "OK"
    name = GDB_REGISTERS[number]
    assert session.dispatch(f"P{number:x}={le(value)}") == "OK"
    stored = getattr(engine.machine.cpus[cpu].regs, name)
    if name == "eflags":
        assert stored & 0x2  # bit 1 always reads 1; undefined bits read 0
    elif number >= 10:
        assert stored == value & 0xFFFF  # selectors are 16 bits
    else:
        assert stored == value
    assert session.dispatch(f"p{number:x}") == le(stored)
    assert session.dispatch("g")[8 * number:8 * number + 8] == le(stored)
    everything = session.dispatch("g")
    assert session.dispatch("G" + everything) == "OK"
    assert session.dispatch("g") == everything
