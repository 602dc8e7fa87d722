"""The hand-written, table-driven decoder: bytes -> ``Instruction``.

The table in ``vmi.cpu.isa`` (and ``vmi.cpu.x87`` for the escapes D8-DF) says
what each opcode means; this module reads prefixes, the opcode, ModRM/SIB,
displacements and immediates as the operand specs ask (SDM Vol.2 chapter 2,
"Instruction Format", and Appendix A, "Opcode Map"). ``docs/decoder.md``
describes the table, the error contract and how the decoder is checked
against iced-x86.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmi.cpu import isa, x87
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
_RM16: tuple[tuple[int, int | None], ...] = (
    (3, 6), (3, 7), (5, 6), (5, 7), (6, None), (7, None), (5, None), (3, None),
)
# x87 stack registers: "ST" is the stack top (Register.name "st"), "ST(i)" register i.
_ST = {"ST": Register("st", -1, 10), **{f"ST({i})": Register("st", i, 10) for i in range(8)}}
# Control registers the processor has: CR0, CR2, CR3 and (Pentium) CR4; moves to or
# from CR1 and CR5-CR7 raise #UD (SDM Vol.2 MOV-Move to/from Control Registers).
_VALID_CR = frozenset((0, 2, 3, 4))
# Test registers: the 386 has TR6-TR7, the 486 adds TR3-TR5 (Intel486 PRM §10.1.2).
_VALID_TR = frozenset(range(3, 8))


class _Reader:
    """A cursor over the instruction bytes that raises the right error at the end."""

    __slots__ = ("data", "pos", "address")

    def __init__(self, data: Sequence[int], address: int) -> None:
        self.data = data
        self.pos = 0
        self.address = address

    def byte(self) -> int:
        if self.pos >= isa.MAX_LENGTH:
            # No instruction is longer than 15 bytes, whatever would follow (SDM
            # Vol.2 §2.1), so this is decided before the end of the data matters.
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


class _ModRM:
    __slots__ = ("value", "mod", "reg", "rm", "memory")

    def __init__(self, value: int) -> None:
        self.value = value
        self.mod, self.reg, self.rm = value >> 6, (value >> 3) & 7, value & 7
        self.memory: MemoryOperand | None = None


def _read_memory(
    reader: _Reader, modrm: _ModRM, addrsize: int
) -> tuple[int | None, int | None, int, int, int]:
    """Read SIB and displacement: (base, index, scale, disp, default segment).

    The default segment is SS when the base is (E)BP or ESP, else DS (SDM Vol.1
    §3.7.5 and Vol.2 Tables 2-1 to 2-3); ``disp`` is masked to the address size.
    """
    mod, rm = modrm.mod, modrm.rm
    if addrsize == 16:
        return _read_memory16(reader, mod, rm)
    base: int | None = rm
    index: int | None = None
    scale = 1
    if rm == 4:
        sib = reader.byte()
        scale = 1 << (sib >> 6)  # kept as encoded even without an index, as iced does
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


def _read_memory16(
    reader: _Reader, mod: int, rm: int
) -> tuple[int | None, int | None, int, int, int]:
    """The 16-bit forms: fixed base/index pairs, disp8/disp16 (SDM Vol.2 Table 2-1)."""
    if mod == 0 and rm == 6:
        return None, None, 1, reader.unsigned(2), DS
    base, index = _RM16[rm]
    disp = reader.signed(1) if mod == 1 else reader.signed(2) if mod == 2 else 0
    return base, index, 1, disp & 0xFFFF, SS if base == 5 else DS


def decode(data: Sequence[int], address: int = 0, *, bits: int = 32) -> Instruction:
    """Decode one instruction from ``data`` (bytes-like) located at ``address``.

    ``bits`` is the code segment's default size, 32 (a 32-bit code segment) or
    16 (real mode or a 16-bit code segment); prefixes 66/67 switch operand and
    address size. ``address`` is the offset of the first byte (EIP/IP), used to
    resolve branch targets, which wrap at the operand size.

    Error contract: for any bytes-like ``data`` and ``bits`` in (16, 32) the
    result is an ``Instruction`` or one of two exceptions, nothing else:

    * ``InvalidOpcode`` (the processor raises #UD): an undefined opcode or
      ModRM ``reg`` extension, a register where memory is required (``lea``,
      ``les`` with ``mod`` 3), a segment register 6-7 or a move to CS, CR1 or
      CR5-7, TR0-2, LOCK on an instruction that cannot take it or on a
      register destination (SDM Vol.2 LOCK), or more than 15 bytes (SDM Vol.2
      §2.1). It is raised as soon as the bytes read so far decide it.
    * ``TruncatedInstruction``: ``data`` ended before the instruction did;
      more bytes could make it decode.

    Both carry ``address``. ``bits`` outside (16, 32) is a programming error
    (``ValueError``).
    """
    if bits not in (16, 32):
        raise ValueError(f"bits must be 16 or 32, not {bits!r}")
    reader = _Reader(data, address)
    prefixes: list[str] = []
    override: int | None = None
    opsize = addrsize = bits
    last_rep = 0
    while True:
        byte = reader.byte()
        name = isa.PREFIXES.get(byte)
        if name is None:
            break
        prefixes.append(name)
        if byte == 0x66:
            opsize = 48 - bits
        elif byte == 0x67:
            addrsize = 48 - bits
        elif byte == 0xF2 or byte == 0xF3:
            last_rep = byte
        elif byte != 0xF0:
            # The last segment override wins (SDM Vol.2 §2.1.1 leaves several in one
            # group undefined; every processor since the 386 takes the last).
            override = isa.SEGMENT_PREFIX[byte]
    modrm: _ModRM | None = None
    if 0xD8 <= byte <= 0xDF:
        modrm = _ModRM(reader.byte())
        if modrm.mod == 3:
            form = x87.REGISTER.get((byte, modrm.reg, modrm.rm))
        else:
            form = x87.MEMORY.get((byte, modrm.reg))
        if form is None:
            raise InvalidOpcode(address, f"undefined x87 opcode {byte:02x} {modrm.value:02x}")
    else:
        if byte == 0x0F:
            opcode: tuple[int, ...] = (0x0F, reader.byte())
        elif byte == 0x90 and last_rep == 0xF3:
            opcode = (0xF3, 0x90)  # PAUSE: F3 90 (the last of F2/F3 decides, as iced does)
        else:
            opcode = (byte,)
        entry = isa.OPCODES.get(opcode)
        if entry is None:
            raise InvalidOpcode(address, f"undefined opcode {bytes(opcode).hex()}")
        if isinstance(entry, dict):
            modrm = _ModRM(reader.byte())
            group_form = entry.get(modrm.reg)
            if group_form is None:
                raise InvalidOpcode(
                    address, f"undefined opcode {bytes(opcode).hex()} /{modrm.reg}"
                )
            form = group_form
        else:
            form = entry
            if form.has_modrm:
                modrm = _ModRM(reader.byte())
    _validate(form, modrm, "lock" in prefixes, opsize, address)
    operands = tuple(
        _operand(spec, reader, modrm, opsize, addrsize, override, address)
        for spec in form.operands
    )
    return Instruction(
        address=address,
        length=reader.pos,
        mnemonic=form.name(addrsize if "asize" in form.attrs else opsize),
        operands=operands,
        prefixes=tuple(prefixes),
        opsize=opsize,
        addrsize=addrsize,
        form=form,
        raw=bytes(data[: reader.pos]),
    )


def _validate(
    form: isa.Form, modrm: _ModRM | None, lock: bool, opsize: int, address: int
) -> None:
    """Raise ``InvalidOpcode`` for encodings the ModRM byte already makes undefined,
    before any displacement or immediate is read."""
    if lock and not ("lock" in form.attrs and modrm is not None and modrm.mod != 3):
        # SDM Vol.2 LOCK: #UD unless the instruction is lockable and its destination
        # is memory.
        raise InvalidOpcode(address, f"lock prefix not allowed on {form.name(opsize)}")
    if modrm is None:
        return
    for position, spec in enumerate(form.operands):
        if spec[0] == "M" and modrm.mod == 3:
            raise InvalidOpcode(address, f"{form.name(opsize)} needs a memory operand")
        if spec == "Sw":
            if modrm.reg > 5:
                raise InvalidOpcode(address, f"no segment register {modrm.reg}")
            if position == 0 and modrm.reg == 1:
                raise InvalidOpcode(address, "mov to CS")  # SDM Vol.2 MOV: #UD
        elif spec == "Cd" and modrm.reg not in _VALID_CR:
            raise InvalidOpcode(address, f"no control register cr{modrm.reg}")
        elif spec == "Td" and modrm.reg not in _VALID_TR:
            raise InvalidOpcode(address, f"no test register tr{modrm.reg}")


def _memory(
    reader: _Reader, modrm: _ModRM, size: int, addrsize: int, override: int | None
) -> MemoryOperand:
    """The ModRM memory operand (SIB and displacement are read on first use)."""
    if modrm.memory is None:
        base, index, scale, disp, default = _read_memory(reader, modrm, addrsize)
        modrm.memory = MemoryOperand(
            size, default if override is None else override, base, index, scale, disp,
            addrsize, override is not None,
        )
    return modrm.memory


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
    if spec in _ST:
        return _ST[spec]
    if spec == "1":
        return Constant(1)
    if spec.startswith("sI"):
        value = reader.signed(1) & ((1 << opsize) - 1)
        return Immediate(value, opsize // 8)
    kind, letter = spec[0], spec[1:]
    if kind in "EM":
        assert modrm is not None
        size = isa.operand_bytes(letter, opsize)
        if modrm.mod == 3:
            return Register("gpr", modrm.rm, size)
        return _memory(reader, modrm, size, addrsize, override)
    if spec == "Rv/Mw":
        assert modrm is not None
        if modrm.mod == 3:
            return Register("gpr", modrm.rm, opsize // 8)
        return _memory(reader, modrm, 2, addrsize, override)
    if kind == "G":
        assert modrm is not None
        return Register("gpr", modrm.reg, isa.operand_bytes(letter, opsize))
    if kind == "R":
        # MOV CRn/DRn/TRn: the r/m field names a register whatever ``mod`` says
        # (SDM Vol.2 MOV-Move to/from Control Registers: "mod bits are ignored").
        assert modrm is not None
        return Register("gpr", modrm.rm, 4)
    if kind == "S":
        assert modrm is not None
        return Register("seg", modrm.reg, 2)
    if kind in "CDT":
        assert modrm is not None
        return Register({"C": "cr", "D": "dr", "T": "tr"}[kind], modrm.reg, 4)
    if kind == "I":
        size = isa.operand_bytes(letter, opsize)
        return Immediate(reader.unsigned(size), size)
    if kind == "J":
        # The target wraps at the operand size: a 66-prefixed branch in 32-bit code
        # clears the upper half of EIP (SDM Vol.2 JMP/Jcc/CALL "Operation").
        size = isa.operand_bytes(letter, opsize)
        disp = reader.signed(size)
        mask = (1 << opsize) - 1
        return Relative((address + reader.pos + disp) & mask, size)
    if kind == "O":
        disp = reader.unsigned(addrsize // 8)  # moffs: the address size sets its width
        segment = DS if override is None else override
        return MemoryOperand(
            isa.operand_bytes(letter, opsize), segment, None, None, 1, disp, addrsize,
            override is not None,
        )
    if kind == "A":
        offset = reader.unsigned(opsize // 8)
        return FarPointer(reader.unsigned(2), offset)
    if kind in "XY":
        size = isa.operand_bytes(letter, opsize)
        if kind == "X":
            segment = DS if override is None else override
            return MemoryOperand(size, segment, 6, None, 1, 0, addrsize, override is not None)
        # ES:eDI cannot be overridden (SDM Vol.1 §3.7.5).
        return MemoryOperand(size, ES, 7, None, 1, 0, addrsize, False)
    raise AssertionError(f"unknown operand spec {spec!r}")
