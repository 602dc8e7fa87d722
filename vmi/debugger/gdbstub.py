"""A GDB remote-serial-protocol stub over the debugger engine.

gdb talks to it with ``target remote HOST:PORT``. What it answers (the tiers of
reference/debugger.md §1.2, checked against gdb 13.1):

* registers ``g``/``G``/``p``/``P`` in gdb's ``org.gnu.gdb.i386.core`` order
  (eax ecx edx ebx esp ebp esi edi eip eflags cs ss ds es fs gs: 16 registers
  of 4 little-endian bytes, 64 bytes in a ``g``), described by a target.xml
  served through ``qXfer:features:read``. gdb 13 accepts an i386 core feature
  only if it also names the 16 x87 registers (st0-7, fctrl..fop; regnums
  16-31), so the description names them and ``p`` reports them unavailable:
  the model has no FPU;
* memory ``m``/``M`` at linear addresses through the thread's page tables,
  ``E14`` (EFAULT) where nothing is mapped;
* execution ``s``/``c``, ``vCont`` (``vCont;c;C;s;S``), reverse ``bs``/``bc``
  with ``replaylog:begin`` at the start of history, ^C (a 0x03 byte) while
  running, answered ``T02``;
* breakpoints ``Z0``/``Z1`` (stop replies say ``swbreak:``/``hwbreak:``, so
  gdb does not rewind the PC), write, read and access watchpoints ``Z2``/``Z3``/
  ``Z4`` (``watch:``/``rwatch:``/``awatch:ADDR``);
* threads = CPUs, thread id = CPU index + 1 (as QEMU): ``qfThreadInfo``,
  ``qC``, ``Hg``/``Hc``, ``T``, ``qThreadExtraInfo``;
* ``qRcmd``: ``monitor CMD`` runs an engine command (``monitor info idt``).

Every other packet gets the empty reply, as the protocol asks. A packet that
cannot be parsed gets ``E01``; a client that disconnects ends its session
and the server waits for the next one. Breakpoint and memory addresses are
linear, which is what gdb's PC values are while CS has base 0 (flat
protected mode, as the kernel runs).

Stepping obeys the machine's interleaving: ``vCont;s:2`` runs the machine
until CPU 1 has taken one step, the other CPUs taking theirs in between
(gdb's scheduler-locking cannot freeze them; the interleaving is data of the
experiment).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

from vmi.debugger.engine import CommandError, Engine, Stop
from vmi.debugger.memview import Unmapped, read_prefix

#: gdb's i386 core register order (regnum = index).
GDB_REGISTERS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags",
                 "cs", "ss", "ds", "es", "fs", "gs")
#: The x87 registers gdb's i386 core feature must also name (gdb checks 32 core
#: registers before it accepts a target description). The model has no FPU, so they
#: are never in a ``g`` reply and ``p`` answers them as unavailable (``xx...``).
X87_REGISTERS = (*((f"st{i}", 10) for i in range(8)),
                 *((name, 4) for name in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg",
                                          "fooff", "fop")))
#: Largest packet we take and send, in bytes (announced in hex as PacketSize).
PACKET_SIZE = 0x4000
SUPPORTED = (f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;swbreak+;hwbreak+;"
             "ReverseStep+;ReverseContinue+")
#: Steps a ``c`` may take (^C stops it long before).
RUN_FOREVER = 10**12
#: Seconds a client may stay silent between packets before it is dropped (the
#: ``--idle-timeout`` default); a run it waits for does not count.
IDLE_TIMEOUT = 300.0
#: Seconds a second client waits for the first one to finish leaving (a client that
#: has just closed its socket) before it is told that another client is connected.
GRACE = 0.5
#: What a client connecting while another is served is told (an ``E.`` error text,
#: which gdb prints as "Remote failure reply: E.vmi gdbserver: ...").
BUSY = "vmi gdbserver: another client is connected; try again when it disconnects"
_EFLAGS_FIELDS = ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"),
                  (9, "IF"), (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"),
                  (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID"))


def target_xml() -> str:
    """The target description: architecture i386 and the 16-register core feature."""
    fields = "\n".join(f'      <field name="{name}" start="{bit}" end="{bit}"/>'
                       for bit, name in _EFLAGS_FIELDS)
    types = {"esp": "data_ptr", "ebp": "data_ptr", "eip": "code_ptr", "eflags": "i386_eflags"}
    registers = "\n".join(
        f'    <reg name="{name}" bitsize="32" type="{types.get(name, "int32")}" '
        f'regnum="{number}"/>' for number, name in enumerate(GDB_REGISTERS))
    for number, (name, size) in enumerate(X87_REGISTERS, start=len(GDB_REGISTERS)):
        kind = 'type="i387_ext"' if size == 10 else 'type="int" group="float"'
        registers += f'\n    <reg name="{name}" bitsize="{8 * size}" {kind} regnum="{number}"/>'
    return ('<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n'
            '<target version="1.0">\n  <architecture>i386</architecture>\n'
            '  <feature name="org.gnu.gdb.i386.core">\n'
            f'    <flags id="i386_eflags" size="4">\n{fields}\n    </flags>\n'
            f'{registers}\n  </feature>\n</target>\n')


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame(data: str) -> bytes:
    """``$data#cs`` as sent on the wire."""
    raw = data.encode("latin-1")
    return b"$" + raw + b"#" + f"{checksum(raw):02x}".encode()


def escape_binary(data: bytes) -> bytes:
    """The protocol's binary escape: ``}`` then the byte XOR 0x20 for ``# $ } *``."""
    out = bytearray()
    for byte in data:
        if byte in b"#$}*":
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


class Disconnected(Exception):
    """The client went away."""


class IdleTimeout(Disconnected):
    """The client sent nothing for the idle timeout; the server drops it."""


class Connection:
    """Packets over one socket: framing, checksums, acknowledgements, ^C.

    ``idle_timeout`` (seconds, None: forever) bounds the wait for a client's next
    packet: past it ``read_packet`` raises ``IdleTimeout``."""

    def __init__(self, sock: socket.socket, idle_timeout: float | None = None) -> None:
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.buffer = bytearray()
        self.last_sent = b""
        self.interrupted = False

    def _fill(self, timeout: float | None) -> bool:
        """Read what is available (waiting up to ``timeout``); False if nothing came."""
        if timeout is not None:
            ready, _w, _x = select.select([self.sock], [], [], timeout)
            if not ready:
                return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionError, OSError):
            raise Disconnected from None
        if not chunk:
            raise Disconnected
        self.buffer += chunk
        return True

    def read_packet(self) -> str:
        """The next packet's data (``"\\x03"`` for a ^C byte outside a packet)."""
        while True:
            packet = self._take()
            if packet is not None:
                return packet
            if not self._fill(self.idle_timeout):
                raise IdleTimeout

    def _take(self) -> str | None:
        buffer = self.buffer
        while buffer:
            first = buffer[0]
            if first == 0x03:
                del buffer[0]
                return "\x03"
            if first == ord("-"):
                del buffer[0]
                if self.last_sent:
                    self._send(self.last_sent)
                continue
            if first != ord("$"):
                del buffer[0]  # '+' acknowledgements and noise between packets
                continue
            end = buffer.find(b"#")
            if end < 0:
                if len(buffer) > 2 * PACKET_SIZE:
                    del buffer[:]  # a packet that never ends: drop it
                return None
            if len(buffer) < end + 3:
                return None
            body = bytes(buffer[1:end])
            given = bytes(buffer[end + 1:end + 3])
            del buffer[:end + 3]
            try:
                good = int(given, 16) == checksum(body)
            except ValueError:
                good = False
            if not good:
                self._send(b"-")
                continue
            self._send(b"+")
            return body.decode("latin-1")
        return None

    def poll_interrupt(self) -> bool:
        """True when a ^C (or a disconnect) arrived; other bytes wait in the buffer."""
        try:
            while self._fill(0):
                pass
        except Disconnected:
            self.interrupted = True
            return True
        if 0x03 in self.buffer:
            self.buffer.remove(0x03)
            return True
        return False

    def send(self, data: str) -> None:
        self.last_sent = frame(data)
        self._send(self.last_sent)

    def _send(self, raw: bytes) -> None:
        try:
            self.sock.sendall(raw)
        except (ConnectionError, OSError):
            raise Disconnected from None


class GdbSession:
    """One client's session: packet dispatch over the shared engine."""

    def __init__(self, engine: Engine, connection: Connection,
                 log: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.connection = connection
        self.log = log
        self.g_cpu = engine.selected
        self.c_cpu: int | None = None
        self.hardware: set[int] = set()
        self.last_reply = f"T05thread:{engine.selected + 1:02x};"
        self.done = False

    def run(self) -> None:
        """Serve packets until the client detaches, goes away or stays silent past
        the idle timeout. Every run the engine makes meanwhile (``c``, ``s``, a
        ``monitor stepi N``) looks at the socket for a ^C every few hundred steps."""
        self.engine.poll = self.connection.poll_interrupt
        try:
            while not self.done:
                packet = self.connection.read_packet()
                if packet == "\x03":
                    continue  # ^C while stopped: nothing runs, nothing to report
                if self.log is not None:
                    self.log(f"<- {packet[:200]}")
                reply = self.dispatch(packet)
                if reply is not None:
                    if self.log is not None:
                        self.log(f"-> {reply[:200]}")
                    self.connection.send(reply)
        finally:
            self.engine.poll = None
            self._remove_breakpoints()

    def _remove_breakpoints(self) -> None:
        """A client's breakpoints leave with it."""
        numbers = [n for n, p in self.engine.points.items() if p.owner == "gdb"]
        if numbers:
            self.engine.delete_points(numbers)

    # -- dispatch ------------------------------------------------------------------------
    def dispatch(self, packet: str) -> str | None:
        """The reply to ``packet`` (None: no reply). Never raises for bad input."""
        try:
            return self._dispatch(packet)
        except Disconnected:
            raise
        except (ValueError, IndexError, KeyError, CommandError, UnicodeError, OverflowError):
            return "E01"
        except Exception:  # a bug must not end the session
            return "E01"

    def _dispatch(self, packet: str) -> str | None:
        if not packet:
            return ""
        head = packet[0]
        body = packet[1:]
        if head == "?":
            return self.last_reply
        if head == "g":
            return self._read_registers()
        if head == "G":
            return self._write_registers(body)
        if head == "p":
            return self._read_register(int(body, 16))
        if head == "P":
            number, _eq, value = body.partition("=")
            return self._write_register(int(number, 16), value)
        if head == "m":
            address, _comma, length = body.partition(",")
            return self._read_memory(int(address, 16), int(length, 16))
        if head == "M":
            where, _colon, data = body.partition(":")
            address, _comma, length = where.partition(",")
            return self._write_memory(int(address, 16), int(length, 16), data)
        if head in "sc" and len(packet) == 1 or head in "sc" and _is_hex(body):
            if body:
                self.engine.set_register(self._c_cpu(), "eip", int(body, 16))
            return self._resume("s" if head == "s" else "c", self._c_cpu())
        if packet in ("bs", "bc"):
            return self._reverse(packet)
        if head in "Zz":
            return self._breakpoint(head == "Z", body)
        if head == "H":
            return self._set_thread(body)
        if head == "T":
            return "OK" if self._thread(body) is not None else "E01"
        if head == "D":
            self.done = True
            return "OK"
        if head == "k":
            self.done = True
            return None
        if packet.startswith("vKill"):
            self.done = True
            return "OK"
        if packet == "vCont?":
            return "vCont;c;C;s;S"
        if packet.startswith("vCont;"):
            return self._vcont(packet[6:])
        if packet.startswith("q") or packet.startswith("Q"):
            return self._query(packet)
        return ""

    # -- registers and memory ----------------------------------------------------------------
    def _cpu(self) -> object:
        return self.engine.machine.cpus[self.g_cpu]

    def _register_value(self, number: int) -> int:
        value: int = getattr(self.engine.machine.cpus[self.g_cpu].regs, GDB_REGISTERS[number])
        return value

    def _read_registers(self) -> str:
        return "".join(self._register_value(n).to_bytes(4, "little").hex()
                       for n in range(len(GDB_REGISTERS)))

    def _write_registers(self, data: str) -> str:
        raw = bytes.fromhex(data)
        if len(raw) < 4 * len(GDB_REGISTERS):
            return "E01"
        for number, name in enumerate(GDB_REGISTERS):
            value = int.from_bytes(raw[4 * number:4 * number + 4], "little")
            if value != self._register_value(number):
                self.engine.set_register(self.g_cpu, name, value)
        return "OK"

    def _read_register(self, number: int) -> str:
        if 0 <= number - len(GDB_REGISTERS) < len(X87_REGISTERS):
            return "xx" * X87_REGISTERS[number - len(GDB_REGISTERS)][1]
        if not 0 <= number < len(GDB_REGISTERS):
            return "E00"
        return self._register_value(number).to_bytes(4, "little").hex()

    def _write_register(self, number: int, text: str) -> str:
        if not 0 <= number < len(GDB_REGISTERS):
            return "E00"
        raw = bytes.fromhex(text)
        if len(raw) != 4:
            return "E01"
        value = int.from_bytes(raw, "little")
        if value != self._register_value(number):
            self.engine.set_register(self.g_cpu, GDB_REGISTERS[number], value)
        return "OK"

    def _read_memory(self, address: int, length: int) -> str:
        if length < 0 or address < 0 or address > 0xFFFFFFFF:
            return "E01"
        length = min(length, (PACKET_SIZE - 8) // 2)
        data = read_prefix(self.engine.machine.cpus[self.g_cpu], address, length)
        if not data and length:
            return "E14"
        return data.hex()

    def _write_memory(self, address: int, length: int, text: str) -> str:
        data = bytes.fromhex(text)
        if len(data) != length or address < 0 or address > 0xFFFFFFFF:
            return "E01"
        if not data:
            return "OK"
        try:
            current = self.engine.read_memory(address, length, self.g_cpu)
            if current != data:
                self.engine.write_memory(address, data, self.g_cpu)
        except Unmapped:
            return "E14"
        return "OK"

    # -- execution -----------------------------------------------------------------------
    def _c_cpu(self) -> int:
        return self.engine.selected if self.c_cpu is None else self.c_cpu

    def _resume(self, action: str, cpu: int) -> str:
        engine = self.engine
        if action == "s":
            stop = engine.stepi(1, cpu)
        else:
            stop = engine.cont(RUN_FOREVER)  # the session's poll looks for ^C
            if self.connection.interrupted:
                raise Disconnected
        return self._stop_reply(stop, stepped=cpu if action == "s" else None)

    def _reverse(self, packet: str) -> str:
        if packet == "bs":
            stop = self.engine.reverse_stepi(1, self._c_cpu())
        else:
            stop = self.engine.reverse_continue()
        return self._stop_reply(stop, stepped=self._c_cpu() if packet == "bs" else None)

    def _vcont(self, actions: str) -> str:
        step_cpu: int | None = None
        resume = False
        for action in actions.split(";"):
            verb, _colon, thread = action.partition(":")
            if not verb:
                continue
            if verb[0] in "sS":
                chosen = self._thread(thread) if thread else self._c_cpu()
                if chosen is None:
                    return "E01"
                if step_cpu is None:
                    step_cpu = chosen
            elif verb[0] in "cC":
                resume = True
            elif verb[0] != "t":
                return ""  # an action we do not offer (r): the empty reply, as the manual says
        if step_cpu is not None:
            return self._resume("s", step_cpu)
        if resume:
            return self._resume("c", self._c_cpu())
        return "E01"

    def _stop_reply(self, stop: Stop, *, stepped: int | None) -> str:
        """A ``T`` stop reply naming the thread and why (and console output first
        when the machine itself stopped). ``stepped`` is the CPU a step was asked
        of: its own step landing on a breakpoint is a plain step stop, while a
        breakpoint another CPU hits meanwhile is reported as one."""
        signal = 2 if stop.reason == "interrupted" else 5
        reason = ""
        if stop.reason == "history-begin":
            reason = "replaylog:begin;"
        elif stop.reason == "hit":
            for hit in stop.hits:
                if hit.kind == "watchpoint" and hit.address is not None:
                    point = self.engine.points.get(hit.number)
                    access = point.access if point is not None else "write"
                    word = {"write": "watch", "read": "rwatch", "access": "awatch"}[access]
                    reason = f"{word}:{hit.address:x};"
                    break
                if hit.kind == "breakpoint" and stop.cpu != stepped:
                    hardware = hit.address in self.hardware
                    reason = "hwbreak:;" if hardware else "swbreak:;"
        if stop.reason in ("machine-stopped", "halted"):
            note = stop.message or "every CPU is halted and nothing can wake one"
            self.connection.send("O" + f"vmi: {note}\n".encode().hex())
        self.g_cpu = stop.cpu
        self.last_reply = f"T{signal:02x}{reason}thread:{stop.cpu + 1:02x};"
        return self.last_reply

    # -- breakpoints and threads ---------------------------------------------------------------
    def _breakpoint(self, insert: bool, body: str) -> str:
        kind_text, address_text, size_text = body.split(";")[0].split(",")[:3]
        kind = int(kind_text)
        address = int(address_text, 16)
        size = int(size_text, 16)
        engine = self.engine
        if kind in (0, 1):
            if insert:
                engine.add_breakpoint(address, owner="gdb")
                if kind == 1:
                    self.hardware.add(address)
            else:
                engine.remove_owned("breakpoint", address, "gdb")
                self.hardware.discard(address)
            return "OK"
        if kind in (2, 3, 4):  # write, read, access watchpoints
            access = ("write", "read", "access")[kind - 2]
            if insert:
                engine.add_watchpoint(address, size, owner="gdb", access=access)
            else:
                engine.remove_owned("watchpoint", address, "gdb", access)
            return "OK"
        return ""

    def _thread(self, text: str) -> int | None:
        """The CPU index of thread id ``text`` (None if there is no such thread);
        ``0`` and ``-1`` (any, all) name the selected CPU."""
        text = text.strip()
        if text.startswith("p"):  # multiprocess form pPID.TID
            text = text.split(".")[-1]
        if text in ("0", "-1", ""):
            return self.engine.selected
        number = int(text, 16)
        if 1 <= number <= len(self.engine.machine.cpus):
            return number - 1
        return None

    def _set_thread(self, body: str) -> str:
        operation, thread = body[:1], body[1:]
        chosen = self._thread(thread)
        if chosen is None or operation not in "gc":
            return "E01"
        if operation == "g":
            self.g_cpu = chosen
            if thread not in ("0", "-1"):
                self.engine.selected = chosen
        else:
            self.c_cpu = None if thread in ("0", "-1") else chosen
        return "OK"

    # -- queries ---------------------------------------------------------------------------
    def _query(self, packet: str) -> str:
        engine = self.engine
        count = len(engine.machine.cpus)
        if packet.startswith("qSupported"):
            return SUPPORTED
        if packet.startswith("qXfer:features:read:"):
            annex, _colon, span = packet[len("qXfer:features:read:"):].partition(":")
            if annex != "target.xml":
                return "E00"
            offset_text, _comma, length_text = span.partition(",")
            offset, length = int(offset_text, 16), int(length_text, 16)
            document = target_xml().encode()
            chunk = document[offset:offset + min(length, PACKET_SIZE // 2)]
            more = offset + len(chunk) < len(document)
            return ("m" if more else "l") + escape_binary(chunk).decode("latin-1")
        if packet == "qfThreadInfo":
            return "m" + ",".join(f"{index + 1:x}" for index in range(count))
        if packet == "qsThreadInfo":
            return "l"
        if packet == "qC":
            return f"QC{engine.selected + 1:x}"
        if packet.startswith("qAttached"):
            return "1"
        if packet.startswith("qThreadExtraInfo,"):
            index = self._thread(packet.split(",", 1)[1])
            if index is None:
                return "E01"
            cpu = engine.machine.cpus[index]
            text = (f"cpu{index} eip={cpu.eip:08x} cpl={cpu.cpl} "
                    f"IF={1 if cpu.flags & 0x200 else 0}{' halted' if cpu.halted else ''}")
            view = engine.monitor_view
            if view is not None:  # the VMI monitor: virtual IF, window
                marker = view.marker(cpu)
                text += f" {view.fields(cpu)}{' ' + marker if marker else ''}"
            return text.encode().hex()
        if packet.startswith("qRcmd,"):
            line = bytes.fromhex(packet[len("qRcmd,"):]).decode("utf-8", "replace")
            before = engine.last_stop
            output = engine.execute(line)
            if self.connection.interrupted:
                raise Disconnected
            stop = engine.last_stop
            if stop is not None and stop is not before:  # the command ran the machine
                self.g_cpu = stop.cpu
                signal = 2 if stop.reason == "interrupted" else 5
                self.last_reply = f"T{signal:02x}thread:{stop.cpu + 1:02x};"
            if output:
                encoded = (output + "\n").encode("utf-8", "replace")
                step = (PACKET_SIZE - 16) // 2
                for start in range(0, len(encoded), step):
                    self.connection.send("O" + encoded[start:start + step].hex())
            return "OK"
        return ""


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


class GdbServer:
    """Listens on a TCP port and serves one gdb client at a time to the engine.

    A thread accepts connections as they come. The first is served; one that
    arrives while a client is being served waits ``GRACE`` seconds for it to
    leave, and is otherwise answered at once with ``E.`` and the ``BUSY`` text to
    its first packet and closed (gdb prints it and says the connection closed), so
    it never hangs. A client silent for ``idle_timeout`` seconds between packets
    (None: never) is dropped, and the next one is served.
    """

    def __init__(self, engine: Engine, *, log: Callable[[str], None] | None = None,
                 idle_timeout: float | None = IDLE_TIMEOUT,
                 notice: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.log = log
        self.notice = notice
        self.idle_timeout = idle_timeout
        self.listener: socket.socket | None = None
        self.sessions = 0
        self.refused = 0
        self._lock = threading.Condition()
        self._busy = False
        self._waiting: list[socket.socket | None] = []

    def listen(self, host: str = "127.0.0.1", port: int = 1234) -> int:
        """Bind and listen; returns the port (useful with port 0)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
            listener.listen(4)
        except OSError:
            listener.close()
            raise
        self.listener = listener
        chosen: int = listener.getsockname()[1]
        return chosen

    def serve(self, *, once: bool = False) -> None:
        """Serve clients one after another (only the first with ``once``) until the
        listener is closed."""
        listener = self.listener
        if listener is None:
            raise RuntimeError("listen() first")
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name="gdbstub-accept").start()
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                client = self._waiting.pop(0)
            if client is None:
                return  # the listener was closed
            self.sessions += 1
            try:
                GdbSession(self.engine, Connection(client, self.idle_timeout),
                           self.log).run()
            except IdleTimeout:
                self._say(f"dropped the client: silent for {self.idle_timeout:g} s")
            except Disconnected:
                pass
            finally:
                client.close()
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
            if once:
                return

    def _accept(self, listener: socket.socket) -> None:
        """Accept connections until the listener closes; each is served, or refused
        by a thread of its own."""
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                with self._lock:
                    self._waiting.append(None)
                    self._lock.notify_all()
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._admit, args=(client,), daemon=True,
                             name="gdbstub-admit").start()

    def _admit(self, client: socket.socket) -> None:
        """Queue ``client`` if no one is served (after a grace period), else refuse it."""
        with self._lock:
            self._lock.wait_for(lambda: not self._busy, timeout=GRACE)
            if not self._busy:
                self._busy = True
                self._waiting.append(client)
                self._lock.notify_all()
                return
            self.refused += 1
        self._say("refused a second client: another one is connected")
        refuse(client)

    def _say(self, text: str) -> None:
        if self.notice is not None:
            self.notice(text)

    def close(self) -> None:
        """Stop listening; ``serve`` returns once its current client is done (at once
        when none is)."""
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                pass
            listener.close()
        with self._lock:
            for client in self._waiting:
                if client is not None:
                    client.close()
            self._waiting[:] = [None]
            self._lock.notify_all()


def refuse(client: socket.socket, *, wait: float = 2.0) -> None:
    """Answer the first packet of ``client`` (waiting up to ``wait`` seconds for it)
    with ``E.`` and the ``BUSY`` text, then close the connection."""
    try:
        client.settimeout(wait)
        connection = Connection(client)
        connection._fill(wait)
        while connection._take() is None:
            if not connection._fill(wait):
                break
        connection.send("E." + BUSY)
        client.shutdown(socket.SHUT_WR)  # end of our side: the client reads EOF
        deadline = wait
        while deadline > 0 and connection._fill(0.1):  # its '+' and last words,
            connection.buffer.clear()  # so closing does not reset the connection
            deadline -= 0.1
    except (Disconnected, OSError):
        pass
    finally:
        client.close()
