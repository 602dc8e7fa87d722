"""AT&T text of decoded instructions, exactly as GNU objdump 2.40 prints it.

``format_att(insn)`` (which is ``str(insn)``) follows ``objdump -D -b binary
-m i386`` (``-m i8086`` for 16-bit code) character for character: the mnemonic
and any prefix words padded to six columns and a space, operands source first.
``disassemble`` walks a byte string the way objdump does, giving ``(bad)`` and
``.byte`` lines for bytes that are not an instruction, and ``listing_lines``
renders objdump's listing columns. ``docs/disasm.md`` lists where and why we
differ from objdump.

Most of the text follows from the decoded operands; the rest are objdump's
conventions, each implemented here where it applies:

* size suffixes (``movl $0x1,(%eax)``) only where no register operand shows
  the size; stack-width instructions (``push``, ``call``, ``ret``, ``iret``,
  ...) take one only when an operand-size prefix changes their width;
* prefixes that the instruction does not use are printed as words before the
  mnemonic (``data16 hlt``, ``es stos``), in byte order; ``rep``/``repz``/
  ``repnz``, ``lock`` and objdump's renamings of them (``bnd``, ``xacquire``,
  ``xrelease``, ``notrack``, the ``,pt``/``,pn`` branch hints) likewise;
* memory operands show a displacement whenever the encoding has one (``0x0(%eax)``)
  and a SIB byte without an index as ``%eiz``, so the text tells apart every
  encoding objdump tells apart; for this the ModRM and SIB bytes are re-read
  from ``insn.raw``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from attrs import evolve, frozen

from vmi.cpu.errors import DecodeError, TruncatedInstruction
from vmi.cpu.isa import MAX_LENGTH, PREFIXES
from vmi.cpu.operands import (
    GPR16,
    GPR32,
    SEGMENTS,
    Constant,
    FarPointer,
    Immediate,
    Instruction,
    MemoryOperand,
    Operand,
    Register,
    Relative,
)

_SUFFIX = {1: "b", 2: "w", 4: "l"}
#: Intel names whose AT&T spelling differs (the operand-size forms of one opcode).
_ATT_NAMES = {
    "cbw": "cbtw", "cwde": "cwtl", "cwd": "cwtd", "cdq": "cltd", "sal": "shl",
    "iretd": "iret", "pushad": "pusha", "popad": "popa", "pushfd": "pushf", "popfd": "popf",
}
#: Instructions whose width is the stack width: a suffix only when a data16 prefix
#: (data32 in 16-bit code) changes it, and never beside a general register.
_STACK_WIDTH = frozenset(
    "push pop call jmp ret lret lcall ljmp enter leave iret pusha popa pushf popf".split()
)
_CONDITIONS = "o no b ae e ne be a s ns p np l ge le g".split()
#: Instructions that never take a suffix even with only a memory operand.
_NO_SUFFIX = frozenset(
    "sldt str lldt ltr verr verw smsw lmsw invlpg cmpxchg8b".split()
    + [f"set{cc}" for cc in _CONDITIONS]
)
_JCC = frozenset(f"j{cc}" for cc in _CONDITIONS)
_LOOPS = frozenset(("loop", "loope", "loopne"))
_STRING_REP = frozenset(("movs", "lods", "stos", "ins", "outs"))
_STRING_SUFFIX = frozenset(("movs", "cmps", "ins", "outs"))
_DESCRIPTOR_TABLE = frozenset(("sgdt", "sidt", "lgdt", "lidt"))
#: Fixed operands whose size is the operand size (``eAX`` .. ``eDI``).
_SIZED_REGISTERS = frozenset(("eAX", "eCX", "eDX", "eBX", "eSP", "eBP", "eSI", "eDI"))
_SEGMENT_NAMES = frozenset(SEGMENTS)

#: x87 arithmetic with two register operands; the rest show only ``%st(i)``.
_X87_ARITHMETIC = frozenset(
    name + pop for name in ("fadd", "fmul", "fsub", "fsubr", "fdiv", "fdivr") for pop in ("", "p")
)
#: AT&T's reversed names for DC/DE E0-FF (the "UnixWare" convention GNU as and
#: objdump keep): Intel ``fsub st(i),st`` is AT&T ``fsubr %st,%st(i)``.
_X87_SWAPPED = {"fsub": "fsubr", "fsubr": "fsub", "fdiv": "fdivr", "fdivr": "fdiv"}
_X87_SWAPPED |= {a + "p": b + "p" for a, b in _X87_SWAPPED.items()}
#: Memory-operand suffixes: real formats by size (s/l/t), integer formats (s/l/ll).
_X87_REAL_SUFFIX = {4: "s", 8: "l", 10: "t"}
_X87_INTEGER_SUFFIX = {2: "s", 4: "l", 8: "ll"}
_X87_REAL = frozenset(
    "fadd fmul fcom fcomp fsub fsubr fdiv fdivr fld fst fstp".split()
)
_X87_ENVIRONMENT = frozenset(("fldenv", "fnstenv", "frstor", "fnsave"))
#: objdump's names for the 8087/287 leftovers the 387 ignores.
_X87_NAMES = {
    "fneni": "fneni(8087 only)", "fndisi": "fndisi(8087 only)", "fnsetpm": "fnsetpm(287 only)",
}


def format_att(insn: Instruction) -> str:
    """The AT&T text objdump prints for ``insn`` (prefix words, mnemonic, operands)."""
    return _Formatter(insn).text()


class _Formatter:
    """One instruction's text; the attributes record which prefixes it used."""

    def __init__(self, insn: Instruction) -> None:
        self.insn = insn
        self.prefixes = list(insn.prefixes)
        self.opcode = _opcode(insn)
        self.mode = 48 - insn.opsize if "data16" in insn.prefixes else insn.opsize
        specs = getattr(insn.form, "operands", ())
        self.specs: tuple[str | None, ...] = (
            tuple(specs) if len(specs) == len(insn.operands) else (None,) * len(insn.operands)
        )
        self.base = _ATT_NAMES.get(insn.mnemonic, insn.mnemonic)
        # Indices into self.prefixes that the instruction consumed (not printed).
        self.used: set[int] = set()
        # Indices whose printed name differs from the prefix's own.
        self.renamed: dict[int, str] = {}
        self.show_segment = True  # False when notrack consumed the segment prefix
        self.address_registers = False  # a memory operand names address registers
        self.x87 = "x87" in getattr(insn.form, "attrs", ())

    # -- prefixes -------------------------------------------------------------

    def _last(self, *names: str) -> int | None:
        """The index of the last prefix named one of ``names`` (the one that counts)."""
        for index in range(len(self.prefixes) - 1, -1, -1):
            if self.prefixes[index] in names:
                return index
        return None

    def _use(self, *names: str) -> None:
        index = self._last(*names)
        if index is not None:
            self.used.add(index)

    def _prefix_words(self) -> list[str]:
        """objdump's words for the prefixes not consumed, in byte order."""
        words = []
        for index, name in enumerate(self.prefixes):
            if index in self.used:
                continue
            if index in self.renamed:
                words.append(self.renamed[index])
            elif name == "data16":
                words.append("data32" if self.mode == 16 else "data16")
            elif name == "addr16":
                words.append("addr32" if self.mode == 16 else "addr16")
            elif name == "rep":
                words.append("repz")
            elif name == "repne":
                words.append("repnz")
            else:
                words.append(name)
        return words

    def _rename_reps(self) -> None:
        """objdump's names for F3/F2: rep on string moves, bnd on branches, HLE hints."""
        rep, repne = self._last("rep"), self._last("repne")
        base, opcode = self.base, self.opcode
        if base in _STRING_REP and rep is not None:
            self.renamed[rep] = "rep"
        branch = base in _JCC or opcode in ((0xE8,), (0xE9,), (0xEB,), (0xC2,), (0xC3,)) or (
            opcode == (0xFF,) and base in ("call", "jmp")
        )
        if branch and repne is not None:
            self.renamed[repne] = "bnd"
        memory_destination = bool(self.insn.operands) and self._is_modrm_memory(0)
        if not memory_destination:
            return
        attrs: frozenset[str] = getattr(self.insn.form, "attrs", frozenset())
        if "lock" in attrs and (base == "xchg" or "lock" in self.prefixes):
            if rep is not None:
                self.renamed[rep] = "xrelease"
            if repne is not None:
                self.renamed[repne] = "xacquire"
        elif opcode in ((0x88,), (0x89,), (0xC6,), (0xC7,)) and rep is not None:
            if repne is None or rep > repne:
                self.renamed[rep] = "xrelease"

    def _segment_use(self) -> str:
        """Mark the segment prefix used by an operand or a branch hint; return the hint."""
        segments = {name for name in self.prefixes if name in _SEGMENT_NAMES}
        if not segments:
            return ""
        last = self._last(*_SEGMENT_NAMES)
        assert last is not None
        if self.base in _JCC or self.base in _LOOPS or self.base in ("jcxz", "jecxz"):
            # A hint takes exactly one of cs/ds among the prefixes; objdump then
            # counts the last segment prefix as consumed, whichever it is.
            hints = segments & {"cs", "ds"}
            if len(hints) != 1:
                return ""
            self.used.add(last)
            return ",pn" if hints == {"cs"} else ",pt"
        if self.opcode == (0xFF,) and self.base in ("call", "jmp") and "ds" in segments:
            self.renamed[last] = "notrack"
            self.show_segment = False
            return ""
        overridden = any(
            isinstance(op, MemoryOperand) and op.segment_override for op in self.insn.operands
        )
        if overridden or self.base == "xlat":
            self.used.add(last)
        return ""

    def _uses_opsize(self) -> bool:
        """Whether objdump counts the operand-size prefix as used (not printed)."""
        base = self.base
        if self.x87:
            return base in _X87_ENVIRONMENT
        if base in _STACK_WIDTH and self.opcode != (0xEB,):
            return True
        if base in ("cbtw", "cwtl", "cwtd", "cltd") or base in _DESCRIPTOR_TABLE:
            return True
        for op, spec in zip(self.insn.operands, self.specs, strict=True):
            if spec is None:
                continue
            if spec.startswith("sI") or spec in _SIZED_REGISTERS:
                return True
            letter = spec[1:]
            if "/" in spec:  # "Rv/Mw": the register form has the operand size
                register, memory = spec.split("/")
                letter = register[1:] if isinstance(op, Register) else memory[1:]
            if spec[:1] in "EGIJMOXYAR" and letter in ("v", "p", "a"):
                return True
        return False

    def _uses_addrsize(self) -> bool:
        """Whether objdump counts the address-size prefix as used (after ``_operands``).

        Loops, jcxz, xlat and string operands use it; a ModRM operand only when
        it names address registers; a moffs operand never does (objdump quirk).
        """
        if self.base in _LOOPS or self.base in ("jcxz", "jecxz", "xlat"):
            return True
        return self.address_registers or any(spec in _STRING_SPECS for spec in self.specs)

    # -- mnemonic -------------------------------------------------------------

    def _x87_mnemonic(self) -> str:
        """x87 names: size suffixes from the memory format, AT&T's fsub/fdiv swap."""
        insn, base = self.insn, self.base
        memory = [op for op in insn.operands if isinstance(op, MemoryOperand)]
        if memory:
            size = memory[0].size
            if base in _X87_REAL:
                return base + _X87_REAL_SUFFIX.get(size, "")
            if base.startswith("fi"):
                return base + _X87_INTEGER_SUFFIX.get(size, "")
            if base in _X87_ENVIRONMENT and insn.opsize != self.mode:
                return base + ("s" if insn.opsize == 16 else "l")
            return base
        if insn.raw[len(insn.prefixes)] in (0xDC, 0xDE) and base in _X87_SWAPPED:
            return _X87_SWAPPED[base]
        return _X87_NAMES.get(base, base)

    def _mnemonic(self) -> str:
        """The AT&T mnemonic: objdump's name plus a size suffix where it prints one."""
        insn, base = self.insn, self.base
        if self.x87:
            return self._x87_mnemonic()
        operands = insn.operands
        gpr = any(
            isinstance(op, Register) and op.kind == "gpr" and spec != "CL"
            for op, spec in zip(operands, self.specs, strict=True)
        )
        if base in _STACK_WIDTH:
            if self.mode != insn.opsize and self._uses_opsize() and not gpr:
                return base + ("w" if insn.opsize == 16 else "l")
            return base
        if base in ("movzx", "movsx"):
            target, source = operands[0], operands[1]
            assert isinstance(target, Register) and isinstance(source, Register | MemoryOperand)
            return base[:4] + _SUFFIX[source.size] + _SUFFIX[target.size]  # movzbl, movswl
        if base in _STRING_SUFFIX:
            sizes = [op.size for op in operands if isinstance(op, MemoryOperand)]
            return base + _SUFFIX[sizes[0]]  # movsb, cmpsl, insw, outsb
        if base in _DESCRIPTOR_TABLE:
            return base + ("w" if insn.opsize == 16 else "l")
        if base in _LOOPS and "addr16" in insn.prefixes:
            return base + ("w" if insn.addrsize == 16 else "l")
        if base in _NO_SUFFIX or base in _STRING_REP or gpr:
            return base
        if any(isinstance(op, Register) and op.kind != "gpr" for op in operands):
            return base  # mov to or from a segment, control or debug register
        memory = [
            op for i, op in enumerate(operands)
            if isinstance(op, MemoryOperand) and self._is_modrm_memory(i)
        ]
        if memory and memory[0].size in _SUFFIX:
            return base + _SUFFIX[memory[0].size]
        return base

    # -- operands -------------------------------------------------------------

    def _is_modrm_memory(self, position: int) -> bool:
        """Whether operand ``position`` is a ModRM memory operand (not moffs or string)."""
        op = self.insn.operands[position]
        spec = self.specs[position]
        return isinstance(op, MemoryOperand) and not (
            spec is not None and (spec[:1] == "O" or spec in _STRING_SPECS)
        )

    def _operands(self) -> list[str]:
        """The operand texts in AT&T order (source first)."""
        insn = self.insn
        texts = []
        for op, spec in zip(insn.operands, self.specs, strict=True):
            if isinstance(op, Constant):
                continue  # the implicit 1 of D0/D1 shifts is not printed
            texts.append(self._operand(op, spec))
        if self.base == "xlat":
            seg = self._last(*_SEGMENT_NAMES)
            segment = self.prefixes[seg] if seg is not None else "ds"
            texts.append(f"%{segment}:({'%bx' if insn.addrsize == 16 else '%ebx'})")
        if self.base in ("call", "jmp", "lcall", "ljmp") and self.opcode == (0xFF,):
            texts[0] = "*" + texts[0]
        if self.base in ("enter", "bound"):
            return texts  # objdump keeps Intel's order for these two
        if self.x87 and self.base not in _X87_ARITHMETIC and len(texts) == 2:
            texts.remove("%st")  # fcom, fxch, fucom: only the %st(i) operand
        return texts[::-1]

    def _operand(self, op: Operand, spec: str | None) -> str:
        """One operand; ``spec`` is its ISA-table spec (None if the form has none)."""
        insn = self.insn
        if isinstance(op, Register):
            if spec == "DX" and self.base in ("in", "out", "ins", "outs"):
                return "(%dx)"
            return "%" + _register_name(op)
        if isinstance(op, Immediate):
            return f"${op.value:#x}"
        if isinstance(op, FarPointer):
            return f"${op.selector:#x},${op.offset:#x}"
        if isinstance(op, Relative):
            return f"{_branch_target(insn, op, self.mode):#x}"
        if isinstance(op, MemoryOperand):
            if spec in _STRING_SPECS:
                registers = GPR16 if op.addrsize == 16 else GPR32
                return f"%{SEGMENTS[op.segment]}:(%{registers[op.base or 0]})"
            segment = (
                f"%{SEGMENTS[op.segment]}:" if op.segment_override and self.show_segment else ""
            )
            if spec is not None and spec[:1] == "O":
                return f"{segment}{op.disp:#x}"
            text, names_registers = _modrm_memory(insn, op, self.mode)
            self.address_registers |= names_registers
            return segment + text
        raise TypeError(f"cannot format operand {op!r}")

    # -- the whole text -------------------------------------------------------

    def text(self) -> str:
        """The whole text. Operands are formatted before the prefix words because
        formatting them decides which prefixes the instruction used."""
        insn = self.insn
        if self.opcode == (0x90,) or insn.mnemonic == "pause":
            rep, repne = self._last("rep"), self._last("repne")
            if rep is not None and (repne is None or rep > repne):
                self.used.add(rep)
                return self._finish("pause", [])
            if "data16" in self.prefixes:
                self._use("data16")
                reg = "%ax,%ax" if insn.opsize == 16 else "%eax,%eax"
                return self._finish("xchg", [reg])
        hint = self._segment_use()
        self._rename_reps()
        operands = self._operands()
        if "data16" in self.prefixes and self._uses_opsize():
            self._use("data16")
        if "addr16" in self.prefixes and self._uses_addrsize():
            self._use("addr16")
        return self._finish(self._mnemonic() + hint, operands)

    def _finish(self, mnemonic: str, operands: list[str]) -> str:
        """Prefix words and mnemonic padded to six columns, a space, then operands."""
        text = " ".join([*self._prefix_words(), mnemonic])
        if operands:
            text = text.ljust(6) + " " + ",".join(operands)
        return text


_STRING_SPECS = frozenset(("Xb", "Xv", "Yb", "Yv"))


def _register_name(op: Register) -> str:
    """AT&T register names: objdump calls the debug registers ``%db0``..``%db7``."""
    if op.kind == "dr":
        return f"db{op.index}"
    return op.name


def _opcode(insn: Instruction) -> tuple[int, ...]:
    """The opcode bytes (after the prefixes), as ``vmi.cpu.isa`` keys them."""
    start = len(insn.prefixes)
    raw = insn.raw
    if start < len(raw) and raw[start] == 0x0F and start + 1 < len(raw):
        return (0x0F, raw[start + 1])
    return (raw[start],) if start < len(raw) else ()


def _modrm_bytes(insn: Instruction) -> tuple[int, int | None]:
    """The ModRM byte and the SIB byte (None without one), re-read from the raw bytes."""
    position = len(insn.prefixes) + len(_opcode(insn))
    modrm = insn.raw[position]
    has_sib = insn.addrsize == 32 and modrm >> 6 != 3 and modrm & 7 == 4
    return modrm, insn.raw[position + 1] if has_sib else None


def _signed(value: int, bits: int) -> int:
    """``value`` read as a ``bits``-bit two's-complement number."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _displacement(value: int) -> str:
    """A displacement beside registers: signed, and ``0x0`` when encoded as zero."""
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def _modrm_memory(insn: Instruction, op: MemoryOperand, mode: int) -> tuple[str, bool]:
    """A ModRM memory operand as objdump shows it, and whether the text names address
    registers (objdump counts an address-size prefix as used only then).

    Displacements beside registers, and all 16-bit ones, are signed and shown
    whenever encoded (``0x0(%eax)``); a 32-bit absolute address is unsigned. A
    SIB byte without an index shows ``%eiz`` (in 32-bit code, where objdump
    must tell ``[disp]`` from ``[eiz*1+disp]``).
    """
    modrm, sib = _modrm_bytes(insn)
    mod, rm = modrm >> 6, modrm & 7
    if op.addrsize == 16:
        disp = _displacement(_signed(op.disp, 16)) if mod or rm == 6 else ""
        if mod == 0 and rm == 6:
            return disp, True
        registers = "%" + GPR16[op.base or 0] + ("" if op.index is None else ",%" + GPR16[op.index])
        return f"{disp}({registers})", True
    if sib is None:
        if mod == 0 and rm == 5:
            return f"{op.disp & 0xFFFFFFFF:#x}", False
        disp = _displacement(_signed(op.disp, 32)) if mod else ""
        return f"{disp}(%{GPR32[rm]})", True
    scale, index, base = sib >> 6, sib >> 3 & 7, sib & 7
    has_base = not (base == 5 and mod == 0)
    has_index = index != 4
    need_index = not has_base and not has_index and mode == 32
    if not (has_base or need_index or has_index or scale):
        return f"{op.disp & 0xFFFFFFFF:#x}", False
    disp = _displacement(_signed(op.disp, 32)) if mod or not has_base else ""
    inner = "%" + GPR32[base] if has_base else ""
    if scale or need_index or has_index or (has_base and base != 4):
        inner += f",%{GPR32[index] if has_index else 'eiz'},{1 << scale}"
    return f"{disp}({inner})", has_base or has_index or need_index


def _branch_target(insn: Instruction, op: Relative, mode: int) -> int:
    """The target as objdump computes it from the displacement bytes.

    objdump wraps a 16-bit ``Jv`` target within the current 64 KiB (and to 16 bits
    under a data16 prefix) but adds an 8-bit displacement to the full address.
    """
    disp = int.from_bytes(insn.raw[-op.size:], "little", signed=True)
    following = insn.address + insn.length
    if op.size == 2:
        high = following & ~0xFFFF if mode == 16 else 0
        return ((following + disp) & 0xFFFF | high) & 0xFFFFFFFF
    return (following + disp) & 0xFFFFFFFF


# -- walking bytes: what objdump prints for every byte ---------------------------


@frozen
class Line:
    """One disassembled item: the bytes ``data`` at ``address`` and their text.

    ``insn`` is the decoded instruction, or None for the items that cover bytes
    the processor would not execute as one (``(bad)``, ``.byte``, a lone prefix,
    a rejected ``lock``).
    """

    address: int
    data: bytes
    text: str
    insn: Instruction | None = None


def disassemble(data: Sequence[int], address: int = 0, *, bits: int = 32) -> Iterator[Line]:
    """Decode ``data`` (placed at ``address``) instruction by instruction.

    Where our decoder gives no instruction the items are objdump's: an
    instruction cut off by the end of the data becomes one byte, named if it is
    a prefix (``lock``, ``data16``) and ``.byte 0x..`` otherwise; an undefined
    encoding becomes ``(bad)`` covering its prefixes and opcode bytes, the
    prefixes named before it. A LOCK prefix the processor would reject (#UD) is
    shown as objdump shows it, ``lock nop``, with ``insn`` None. The walk then
    goes on with the next byte.
    """
    from vmi.cpu.decoder import decode

    data = bytes(data)
    offset = 0
    while offset < len(data):
        here = (address + offset) & 0xFFFFFFFF
        try:
            # A window one byte longer than the longest instruction (15 bytes)
            # decodes like the whole rest of the data, without copying it.
            insn = decode(data[offset : offset + MAX_LENGTH + 1], here, bits=bits)
        except TruncatedInstruction:
            name = _prefix_name(data[offset], bits)
            yield Line(here, data[offset : offset + 1], name or f".byte {data[offset]:#x}")
            offset += 1
            continue
        except DecodeError:
            line = _locked(data, offset, here, bits) or _bad(data, offset, here, bits)
            yield line
            offset += len(line.data)
            continue
        yield Line(here, bytes(insn.raw), str(insn), insn)
        offset += insn.length


_PREFIX_NAMES = {
    0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs",
    0xF0: "lock", 0xF2: "repnz", 0xF3: "repz",
}


def _prefix_name(byte: int, bits: int) -> str | None:
    """objdump's word for a prefix byte on its own (None if ``byte`` is no prefix)."""
    if byte == 0x66:
        return "data32" if bits == 16 else "data16"
    if byte == 0x67:
        return "addr32" if bits == 16 else "addr16"
    return _PREFIX_NAMES.get(byte)


def _prefix_count(data: bytes, offset: int) -> int:
    count = 0
    while offset + count < len(data) - 1 and _prefix_name(data[offset + count], 32):
        count += 1
    return count


def _bad(data: bytes, offset: int, address: int, bits: int) -> Line:
    """objdump's ``(bad)``: the prefixes (named) and the opcode byte(s)."""
    count = _prefix_count(data, offset)
    position = offset + count
    length = count + (2 if data[position] == 0x0F and position + 1 < len(data) else 1)
    words = [_prefix_name(byte, bits) or "" for byte in data[offset:position]]
    return Line(address, data[offset : offset + length], " ".join([*words, "(bad)"]))


def _locked(data: bytes, offset: int, address: int, bits: int) -> Line | None:
    """An instruction that decodes once its LOCK prefixes are dropped, shown with them."""
    from vmi.cpu.decoder import decode

    count = _prefix_count(data, offset)
    prefixes = data[offset : offset + count]
    if 0xF0 not in prefixes:
        return None
    kept = bytes(byte for byte in prefixes if byte != 0xF0)
    try:
        insn = decode(kept + data[offset + count : offset + MAX_LENGTH + 1], address, bits=bits)
    except DecodeError:
        return None
    length = insn.length + count - len(kept)
    names = tuple(PREFIXES[byte] for byte in prefixes)
    shown = evolve(insn, prefixes=names, length=length, raw=data[offset : offset + length])
    return Line(address, shown.raw, str(shown))


def listing_lines(lines: Sequence[Line], *, bytes_per_line: int = 7) -> Iterator[str]:
    """objdump's listing: ``address:<TAB>bytes<TAB>text``, long byte runs wrapped.

    The address column is as wide as objdump makes it for the end address:
    leading zeros dropped in groups of four, then blank-padded.
    """
    if not lines:
        return
    end = (lines[-1].address + len(lines[-1].data)) & 0xFFFFFFFF
    digits = f"{end:08x}"
    zeros = len(digits) - len(digits.lstrip("0"))
    skip = (zeros - 1) & ~3 if zeros else 0
    if zeros == 8 and lines[0].address != 0:
        skip = 0
    width = 8 - skip

    def column(address: int) -> str:
        text = f"{address & 0xFFFFFFFF:08x}"[skip:]
        return text.lstrip("0").rjust(width) if text.strip("0") else "0".rjust(width)

    for line in lines:
        head = " ".join(f"{b:02x}" for b in line.data[:bytes_per_line]) + " "
        yield f"{column(line.address)}:\t{head.ljust(3 * bytes_per_line)}\t{line.text}"
        for start in range(bytes_per_line, len(line.data), bytes_per_line):
            chunk = " ".join(f"{b:02x}" for b in line.data[start : start + bytes_per_line])
            yield f"{column(line.address + start)}:\t{chunk} "
