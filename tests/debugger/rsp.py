"""A minimal GDB remote-protocol client and an in-process server for the stub tests."""

from __future__ import annotations

import socket
import threading
from typing import Any

from vmi.debugger.gdbstub import GdbServer, checksum


class Client:
    """Sends packets, checks acknowledgements and checksums, collects replies."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.console: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def _byte(self) -> int:
        while not self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        byte, self.buffer = self.buffer[0], self.buffer[1:]
        return byte

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self) -> str:
        """The next packet from the server (acknowledged); ``O`` packets are collected
        in ``console`` and skipped."""
        while True:
            while (byte := self._byte()) != ord("$"):
                pass
            body = bytearray()
            while (byte := self._byte()) != ord("#"):
                body.append(byte)
            given = int(bytes([self._byte(), self._byte()]), 16)
            assert given == checksum(bytes(body)), "bad checksum from the stub"
            self.sock.sendall(b"+")
            text = body.decode("latin-1")
            if text.startswith("O") and text != "OK" and len(text) % 2 == 1 and \
                    all(c in "0123456789abcdef" for c in text[1:]):
                self.console.append(bytes.fromhex(text[1:]).decode())
                continue
            return text

    def ack(self) -> str:
        while (byte := self._byte()) not in (ord("+"), ord("-")):
            pass
        return chr(byte)

    def ask(self, data: str, *, reply: bool = True) -> str:
        raw = data.encode("latin-1")
        self.sock.sendall(b"$" + raw + b"#" + f"{checksum(raw):02x}".encode())
        assert self.ack() == "+"
        return self.packet() if reply else ""


class Served:
    """A ``GdbServer`` on an ephemeral port, serving in a background thread."""

    def __init__(self, engine: Any, *, once: bool = False, **options: Any) -> None:
        self.engine = engine
        self.notices: list[str] = []
        self.server = GdbServer(engine, notice=self.notices.append, **options)
        self.port = self.server.listen("127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve, kwargs={"once": once},
                                       daemon=True)
        self.thread.start()

    def client(self) -> Client:
        return Client(self.port)

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)
