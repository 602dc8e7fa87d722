"""x87 escape opcodes D8-DF: decoded for length and mnemonic only.

The interpreter models no floating-point unit (CR0.EM semantics belong to the
system model); these forms exist so that listings and lengths are right.
"""

from __future__ import annotations

from vmi.cpu.errors import InvalidOpcode


def decode_x87(
    reader, opcode, address, prefixes, opsize, addrsize, override, read_memory, modrm_cls
):
    """Decode an x87 instruction whose first opcode byte is ``opcode`` (D8-DF)."""
    raise InvalidOpcode(address, f"x87 opcode {opcode:02x} not decoded yet")
