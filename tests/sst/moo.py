"""A reader for MOO files, the chunked binary format of the SingleStepTests x86 suites.

Written from the format description (``dbalsom/moo`` ``doc/moo_format_v1.md``,
MOO 1.1; summarised in ``shared/reference/oracles-and-speed.md`` section 1.3).
Every field is little-endian. A chunk is ``[4-char id][u32 length][payload]``
and a reader must step over it by its length and skip ids it does not know,
so later format revisions stay readable.

A file is a ``MOO `` header chunk (major, minor, 2 reserved bytes, ``u32``
test count, 4-char CPU id such as ``C286``), optional ``META`` and top-level
``RMSK``/``RM32`` chunks, then one ``TEST`` chunk per test. A ``TEST`` payload
is ``u32`` index followed by subchunks: ``NAME`` and ``BYTS`` (each a ``u32``
length and data), ``INIT`` and ``FINA`` (holding ``REGS``/``RG32``, ``RAM ``,
``QUEU``, masks), ``CYCL`` (bus cycles; not read here), ``EXCP`` (``u8``
vector, ``u32`` address of the FLAGS word the exception pushed) and ``HASH``
(SHA-1, the key of the revocation list).

``REGS`` is a ``u16`` presence mask and one ``u16`` per set bit, in the order
of ``REGS16``; ``RG32`` is the same with ``u32`` values and the order of
``REGS32``. ``INIT`` holds every register, ``FINA`` only those that changed.

Usage: ``for test in read_moo(path).tests: ...``; ``python -m tests.sst.moo FILE``
prints the tests of one file.
"""

from __future__ import annotations

import gzip
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from attrs import define, field

#: Register order of a ``REGS``/``RMSK`` chunk, bit 0 first.
REGS16 = ("ax", "bx", "cx", "dx", "cs", "ss", "ds", "es", "sp", "bp", "si", "di", "ip",
          "flags")
#: Register order of a ``RG32``/``RM32`` chunk, bit 0 first.
REGS32 = ("cr0", "cr3", "eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "cs", "ds",
          "es", "fs", "gs", "ss", "eip", "eflags", "dr6", "dr7")

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_RAM_ENTRY = struct.Struct("<IB")


class MooFormatError(ValueError):
    """The bytes are not a MOO file this reader understands."""


@define
class CpuState:
    """One side of a test: registers (by name; only changed ones in a final state),
    RAM as ``(address, byte)`` pairs, the prefetch queue, and any register masks."""

    regs: dict[str, int] = field(factory=dict)
    ram: list[tuple[int, int]] = field(factory=list)
    queue: bytes = b""
    masks: dict[str, int] = field(factory=dict)


@define
class MooTest:
    """One test: the instruction bytes, the state before and after, the exception it
    raised (vector and the linear address of the FLAGS word pushed), and its hash."""

    index: int
    name: str
    code: bytes
    initial: CpuState
    final: CpuState
    exception: tuple[int, int] | None = None
    hash: str = ""


@define
class MooFile:
    """A parsed file: format version, CPU id, file-wide register masks and the tests."""

    version: tuple[int, int]
    cpu: str
    count: int
    masks: dict[str, int] = field(factory=dict)
    tests: list[MooTest] = field(factory=list)


def chunks(data: bytes | memoryview, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[str, memoryview]]:
    """Yield ``(id, payload)`` for each chunk in ``data[start:end]``."""
    view = memoryview(data)
    end = len(view) if end is None else end
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise MooFormatError(f"truncated chunk header at offset {pos}")
        ident = bytes(view[pos:pos + 4]).decode("ascii", "replace")
        (length,) = _U32.unpack_from(view, pos + 4)
        body = pos + 8
        if body + length > end:
            raise MooFormatError(f"chunk {ident!r} at offset {pos} runs past the end")
        yield ident, view[body:body + length]
        pos = body + length


def _registers(payload: memoryview, names: tuple[str, ...], wide: bool) -> dict[str, int]:
    """Decode a REGS/RMSK (``wide`` False) or RG32/RM32 (True) chunk."""
    unit = _U32 if wide else _U16
    (mask,) = unit.unpack_from(payload, 0)
    values: dict[str, int] = {}
    pos = unit.size
    for bit, name in enumerate(names):
        if mask >> bit & 1:
            (values[name],) = unit.unpack_from(payload, pos)
            pos += unit.size
    return values


def _length_prefixed(payload: memoryview) -> bytes:
    (length,) = _U32.unpack_from(payload, 0)
    return bytes(payload[4:4 + length])


def _state(payload: memoryview) -> CpuState:
    state = CpuState()
    for ident, body in chunks(payload):
        if ident == "REGS":
            state.regs.update(_registers(body, REGS16, wide=False))
        elif ident == "RG32":
            state.regs.update(_registers(body, REGS32, wide=True))
        elif ident == "RMSK":
            state.masks.update(_registers(body, REGS16, wide=False))
        elif ident == "RM32":
            state.masks.update(_registers(body, REGS32, wide=True))
        elif ident == "RAM ":
            (count,) = _U32.unpack_from(body, 0)
            state.ram = list(_RAM_ENTRY.iter_unpack(body[4:4 + count * _RAM_ENTRY.size]))
        elif ident == "QUEU":
            state.queue = _length_prefixed(body)
    return state


def _test(payload: memoryview) -> MooTest:
    (index,) = _U32.unpack_from(payload, 0)
    test = MooTest(index, "", b"", CpuState(), CpuState())
    for ident, body in chunks(payload, 4):
        if ident == "NAME":
            test.name = _length_prefixed(body).decode("ascii", "replace")
        elif ident == "BYTS":
            test.code = _length_prefixed(body)
        elif ident == "INIT":
            test.initial = _state(body)
        elif ident == "FINA":
            test.final = _state(body)
        elif ident == "EXCP":
            test.exception = (body[0], _U32.unpack_from(body, 1)[0])
        elif ident == "HASH":
            test.hash = bytes(body).hex()
    return test


def parse_moo(data: bytes) -> MooFile:
    """Parse the bytes of an (uncompressed) MOO file."""
    if data[:4] != b"MOO ":
        raise MooFormatError("not a MOO file (no 'MOO ' header chunk)")
    result: MooFile | None = None
    for ident, body in chunks(data):
        if ident == "MOO ":
            if len(body) < 12:
                raise MooFormatError("MOO header shorter than 12 bytes")
            (count,) = _U32.unpack_from(body, 4)
            cpu = bytes(body[8:12]).decode("ascii", "replace").strip()
            result = MooFile((body[0], body[1]), cpu, count)
        elif result is None:
            raise MooFormatError(f"chunk {ident!r} before the MOO header")
        elif ident == "TEST":
            result.tests.append(_test(body))
        elif ident == "RMSK":
            result.masks.update(_registers(body, REGS16, wide=False))
        elif ident == "RM32":
            result.masks.update(_registers(body, REGS32, wide=True))
    assert result is not None
    return result


def read_moo(path: str | Path) -> MooFile:
    """Read a ``.MOO`` or gzip-compressed ``.MOO.gz`` file."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return parse_moo(raw)


def read_revocations(path: str | Path) -> frozenset[str]:
    """The hashes of a ``revocation_list.txt`` (one hex SHA-1 a line, ``#`` comments)."""
    path = Path(path)
    if not path.exists():
        return frozenset()
    lines = (line.split("#", 1)[0].strip().lower() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line)


def main(argv: list[str]) -> int:
    """Print the tests of the MOO files named on the command line."""
    for name in argv:
        moo = read_moo(name)
        print(f"{name}: MOO {moo.version[0]}.{moo.version[1]} cpu={moo.cpu} "
              f"tests={len(moo.tests)}/{moo.count}")
        for test in moo.tests:
            print(f"  #{test.index} {test.name!r} bytes={test.code.hex()} "
                  f"exception={test.exception} hash={test.hash}")
            print(f"    init {test.initial.regs}")
            print(f"    final {test.final.regs} ram={test.final.ram}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
