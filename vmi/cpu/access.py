"""Source snippets that read and write one decoded operand inside a template.

``operand_access(op, slot)`` describes how generated code reaches an operand:
statements to run first (computing a memory operand's effective address once,
so a read-modify-write touches one address), an expression that reads it and a
function that makes the statement writing it. The names it introduces all
start with ``slot`` so two operands never collide.

Registers live in ``r = cpu.r`` (eight 32-bit ints); 8- and 16-bit registers
are views of them. Memory goes through ``cpu.rd8/16/32(seg, offset)`` and
``cpu.wr8/16/32(seg, offset, value)``, which apply segmentation, paging and
faults (``vmi.cpu.core``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from vmi.cpu.operands import Constant, Immediate, MemoryOperand, Operand, Register


@define
class Access:
    setup: list[str]
    read: str
    write: Callable[[str], str]
    params: dict[str, Any] = field(factory=dict)
    is_memory: bool = False
    bits: int = 32


def effective_address(m: MemoryOperand, slot: str) -> tuple[str, dict[str, Any]]:
    """Source of the offset of ``m`` within its segment, and its constants."""
    params: dict[str, Any] = {}
    parts = []
    wide = m.addrsize == 32
    if m.base is not None:
        params[f"{slot}_b"] = m.base
        parts.append(f"r[{slot}_b]" if wide else f"(r[{slot}_b] & 0xFFFF)")
    if m.index is not None:
        params[f"{slot}_x"] = m.index
        reg = f"r[{slot}_x]" if wide else f"(r[{slot}_x] & 0xFFFF)"
        shift = {1: 0, 2: 1, 4: 2, 8: 3}[m.scale]
        parts.append(f"({reg} << {shift})" if shift else reg)
    if m.disp or not parts:
        params[f"{slot}_disp"] = m.disp
        parts.append(f"{slot}_disp")
    if len(parts) == 1 and m.base is None and m.index is None:
        return parts[0], params
    mask = "0xFFFFFFFF" if wide else "0xFFFF"
    return f"({' + '.join(parts)}) & {mask}", params


def operand_access(op: Operand, slot: str, size: int | None = None) -> Access:
    """Describe operand ``op`` for generated code; ``size`` overrides its width in bytes."""
    if isinstance(op, Register) and op.kind == "gpr":
        idx = f"{slot}_r"
        width = size or op.size
        if width == 4:
            return Access([], f"r[{idx}]", lambda v: f"r[{idx}] = {v}", {idx: op.index}, bits=32)
        if width == 2:
            return Access([], f"(r[{idx}] & 0xFFFF)",
                          lambda v: f"r[{idx}] = (r[{idx}] & 0xFFFF0000) | {v}",
                          {idx: op.index}, bits=16)
        if op.index < 4:
            return Access([], f"(r[{idx}] & 0xFF)",
                          lambda v: f"r[{idx}] = (r[{idx}] & 0xFFFFFF00) | {v}",
                          {idx: op.index}, bits=8)
        return Access([], f"((r[{idx}] >> 8) & 0xFF)",
                      lambda v: f"r[{idx}] = (r[{idx}] & 0xFFFF00FF) | (({v}) << 8)",
                      {idx: op.index - 4}, bits=8)
    if isinstance(op, MemoryOperand):
        width = size or op.size
        bits = width * 8
        ea, params = effective_address(op, slot)
        params[f"{slot}_seg"] = op.segment
        addr = f"{slot}_a"
        return Access(
            [f"{addr} = {ea}"],
            f"cpu.rd{bits}({slot}_seg, {addr})",
            lambda v: f"cpu.wr{bits}({slot}_seg, {addr}, {v})",
            params, is_memory=True, bits=bits,
        )
    if isinstance(op, Immediate):
        name = f"{slot}_imm"
        width = size or op.size
        return Access([], name, _read_only(op), {name: op.value & ((1 << width * 8) - 1)},
                      bits=width * 8)
    if isinstance(op, Constant):
        return Access([], str(op.value), _read_only(op), bits=8)
    raise NotImplementedError(f"no generic access to operand {op!r}")


def _read_only(op: Operand) -> Callable[[str], str]:
    def write(value: str) -> str:
        raise TypeError(f"operand {op!r} cannot be written")
    return write
