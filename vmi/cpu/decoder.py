"""The hand-written, table-driven decoder: bytes -> ``Instruction``.

The table in ``vmi.cpu.isa`` says what each opcode means; this module reads
prefixes, ModRM/SIB, displacements and immediates as the operand specs ask
(SDM Vol.2 chapter 2, "Instruction Format").
"""

from __future__ import annotations

from collections.abc import Sequence

from vmi.cpu import isa
from vmi.cpu.errors import InvalidOpcode, TruncatedInstruction
from vmi.cpu.operands import (
    DS,
    ES,
    SS,
    Constant,
    FarPointer,
    Immediate,
    Instruction,
    MemoryOperand,
    Operand,
    Register,
    Relative,
)

_SIZES = {"b": 1, "w": 2, "d": 4, "q": 8, "t": 10, "s": 6, "": 0}
_GPR_NAMES32 = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
_FIXED_GPR = {
    **{name: (i, 1) for i, name in enumerate(("AL", "CL", "DL", "BL", "AH", "CH", "DH", "BH"))},
    **{name: (i, 4) for i, name in enumerate(_GPR_NAMES32)},
    "AX": (0, 2),
    "DX": (2, 2),
}
_V_GPR = {
    name: i for i, name in enumerate(("eAX", "eCX", "eDX", "eBX", "eSP", "eBP", "eSI", "eDI"))
}
_FIXED_SEG = {name: i for i, name in enumerate(("ES", "CS", "SS", "DS", "FS", "GS"))}
# 16-bit ModRM r/m -> (base, index) register numbers (SDM Vol.2 Table 2-1).
_RM16 = ((3, 6), (3, 7), (5, 6), (5, 7), (6, None), (7, None), (5, None), (3, None))


class _Reader:
    """A cursor over the instruction bytes that raises the right error at the end."""

    __slots__ = ("data", "pos", "address")

    def __init__(self, data: Sequence[int], address: int) -> None:
        self.data = data
        self.pos = 0
        self.address = address

    def byte(self) -> int:
        if self.pos >= isa.MAX_LENGTH:
            raise InvalidOpcode(self.address, "instruction longer than 15 bytes")
        if self.pos >= len(self.data):
            raise TruncatedInstruction(self.address, "truncated instruction")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def unsigned(self, size: int) -> int:
        value = 0
        for shift in range(0, size * 8, 8):
            value |= self.byte() << shift
        return value

    def signed(self, size: int) -> int:
        value = self.unsigned(size)
        top = 1 << (size * 8 - 1)
        return value - (top << 1) if value & top else value


def _size_of(letter: str, opsize: int) -> int:
    if letter == "v":
        return opsize // 8
    if letter == "p":
        return opsize // 8 + 2
    if letter == "a":
        return opsize // 4
    return _SIZES[letter]


class _ModRM:
    __slots__ = ("mod", "reg", "rm", "memory")

    def __init__(self, mod: int, reg: int, rm: int) -> None:
        self.mod, self.reg, self.rm = mod, reg, rm
        self.memory: MemoryOperand | None = None


def _read_memory(
    reader: _Reader, modrm: _ModRM, addrsize: int, override: int | None
) -> tuple[int | None, int | None, int, int, int]:
    """Read SIB and displacement: (base, index, scale, disp, default segment)."""
    mod, rm = modrm.mod, modrm.rm
    if addrsize == 16:
        if mod == 0 and rm == 6:
            return None, None, 1, reader.unsigned(2), DS
        base, index = _RM16[rm]
        disp = reader.signed(1) if mod == 1 else reader.signed(2) if mod == 2 else 0
        return base, index, 1, disp & 0xFFFF, SS if base == 5 else DS
    base: int | None = rm
    index: int | None = None
    scale = 1
    if rm == 4:
        sib = reader.byte()
        scale = 1 << (sib >> 6)
        index = (sib >> 3) & 7
        if index == 4:
            index = None
        base = sib & 7
        if base == 5 and mod == 0:
            base = None
    elif rm == 5 and mod == 0:
        base = None
    if mod == 1:
        disp = reader.signed(1)
    elif mod == 2 or base is None:
        disp = reader.signed(4)
    else:
        disp = 0
    return base, index, scale, disp & 0xFFFFFFFF, SS if base in (4, 5) else DS


def decode(data: Sequence[int], address: int = 0, *, bits: int = 32) -> Instruction:
    """Decode one instruction from ``data`` (bytes-like) located at ``address``.

    ``bits`` is the code segment's default size, 32 (protected mode) or 16
    (real mode or a 16-bit code segment). Raises ``InvalidOpcode`` for an
    undefined encoding and ``TruncatedInstruction`` when ``data`` ends early.
    """
    if bits not in (16, 32):
        raise ValueError(f"bits must be 16 or 32, not {bits!r}")
    reader = _Reader(data, address)
    prefixes: list[str] = []
    override: int | None = None
    opsize = addrsize = bits
    while True:
        byte = reader.byte()
        name = isa.PREFIXES.get(byte)
        if name is None:
            break
        prefixes.append(name)
        if byte in isa.SEGMENT_PREFIX:
            override = isa.SEGMENT_PREFIX[byte]
        elif byte == 0x66:
            opsize = 48 - bits
        elif byte == 0x67:
            addrsize = 48 - bits
    opcode: tuple[int, ...] = (byte,)
    if byte == 0x0F:
        opcode = (0x0F, reader.byte())
    elif 0xD8 <= byte <= 0xDF:
        from vmi.cpu import x87

        return x87.decode_x87(reader, byte, address, tuple(prefixes), opsize, addrsize,
                              override, _read_memory, _ModRM)
    entry = isa.OPCODES.get(opcode)
    if entry is None:
        raise InvalidOpcode(address, f"undefined opcode {bytes(opcode).hex()}")
    modrm: _ModRM | None = None
    if isinstance(entry, dict) or entry.has_modrm:
        value = reader.byte()
        modrm = _ModRM(value >> 6, (value >> 3) & 7, value & 7)
    if isinstance(entry, dict):
        assert modrm is not None
        form = entry.get(modrm.reg)
        if form is None:
            raise InvalidOpcode(address, f"undefined opcode {bytes(opcode).hex()} /{modrm.reg}")
    else:
        form = entry
    operands = tuple(
        _operand(spec, reader, modrm, opsize, addrsize, override, address) for spec in form.operands
    )
    if "lock" in prefixes and not (
        "lock" in form.attrs and operands and isinstance(operands[0], MemoryOperand)
    ):
        raise InvalidOpcode(address, f"lock prefix not allowed on {form.name(opsize)}")
    return Instruction(
        address=address,
        length=reader.pos,
        mnemonic=form.name(opsize),
        operands=operands,
        prefixes=tuple(prefixes),
        opsize=opsize,
        addrsize=addrsize,
        form=form,
        raw=bytes(data[: reader.pos]),
    )


def _operand(
    spec: str,
    reader: _Reader,
    modrm: _ModRM | None,
    opsize: int,
    addrsize: int,
    override: int | None,
    address: int,
) -> Operand:
    """Decode one operand spec (see the ``vmi.cpu.isa`` docstring)."""
    if spec in _FIXED_GPR:
        index, size = _FIXED_GPR[spec]
        return Register("gpr", index, size)
    if spec in _V_GPR:
        return Register("gpr", _V_GPR[spec], opsize // 8)
    if spec in _FIXED_SEG:
        return Register("seg", _FIXED_SEG[spec], 2)
    if spec == "1":
        return Constant(1)
    if spec.startswith("sI"):
        value = reader.signed(1) & ((1 << opsize) - 1)
        return Immediate(value, opsize // 8)
    kind, letter = spec[0], spec[1:]
    if kind in "EM":
        assert modrm is not None
        size = _size_of(letter, opsize)
        if modrm.mod == 3:
            if kind == "M":
                raise InvalidOpcode(address, "register operand where memory is required")
            return Register("gpr", modrm.rm, size)
        if modrm.memory is None:
            base, index, scale, disp, default = _read_memory(reader, modrm, addrsize, override)
            modrm.memory = MemoryOperand(
                size, default if override is None else override, base, index, scale, disp,
                addrsize, override is not None,
            )
        return modrm.memory
    if kind == "G":
        assert modrm is not None
        return Register("gpr", modrm.reg, _size_of(letter, opsize))
    if kind == "R":
        assert modrm is not None
        return Register("gpr", modrm.rm, 4)
    if kind == "S":
        assert modrm is not None
        if modrm.reg > 5:
            raise InvalidOpcode(address, f"no segment register {modrm.reg}")
        return Register("seg", modrm.reg, 2)
    if kind in "CDT":
        assert modrm is not None
        return Register({"C": "cr", "D": "dr", "T": "tr"}[kind], modrm.reg, 4)
    if kind == "I":
        size = _size_of(letter, opsize)
        return Immediate(reader.unsigned(size), size)
    if kind == "J":
        size = _size_of(letter, opsize)
        disp = reader.signed(size)
        mask = (1 << opsize) - 1
        return Relative((address + reader.pos + disp) & mask, size)
    if kind == "O":
        disp = reader.unsigned(addrsize // 8)
        segment = DS if override is None else override
        return MemoryOperand(_size_of(letter, opsize), segment, None, None, 1, disp, addrsize,
                      override is not None)
    if kind == "A":
        offset = reader.unsigned(opsize // 8)
        return FarPointer(reader.unsigned(2), offset)
    if kind in "XY":
        size = _size_of(letter, opsize)
        if kind == "X":
            segment = DS if override is None else override
            return MemoryOperand(size, segment, 6, None, 1, 0, addrsize, override is not None)
        return MemoryOperand(size, ES, 7, None, 1, 0, addrsize, False)
    raise AssertionError(f"unknown operand spec {spec!r}")

