"""Decoded operands and the decoded ``Instruction``.

Operands are plain values (attrs ``@frozen``) so that tests can compare them
field by field with other decoders; the executor compiles them into closures.
"""

from __future__ import annotations

from attrs import field, frozen

GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
GPR16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
GPR8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")
SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")
ES, CS, SS, DS, FS, GS = range(6)


@frozen
class Register:
    """A register operand. ``kind`` is gpr, seg, cr, dr, tr or st; ``size`` in bytes."""

    kind: str
    index: int
    size: int

    @property
    def name(self) -> str:
        if self.kind == "gpr":
            return {1: GPR8, 2: GPR16, 4: GPR32}[self.size][self.index]
        if self.kind == "seg":
            return SEGMENTS[self.index]
        if self.kind == "st":
            return f"st({self.index})" if self.index >= 0 else "st"
        return f"{self.kind}{self.index}"


@frozen
class MemoryOperand:
    """A memory operand: ``segment:[base + index*scale + disp]``.

    ``size`` is the access width in bytes (0 when the instruction does not
    access it, as for ``lea``; 6 for a descriptor, 10 for an x87 extended real).
    ``base``/``index`` are register numbers in the address size's register set
    (16-bit forms use the ``bx+si`` style pairs, recorded as base and index).
    ``segment`` is the effective segment (default or override);
    ``segment_override`` says whether a prefix chose it.
    """

    size: int
    segment: int
    base: int | None
    index: int | None
    scale: int
    disp: int
    addrsize: int
    segment_override: bool = False


@frozen
class Immediate:
    """An immediate, stored unsigned in ``size`` bytes (sign-extended imm8s already widened)."""

    value: int
    size: int


@frozen
class Relative:
    """A branch target, already resolved to an absolute address."""

    target: int
    size: int  # size of the encoded displacement


@frozen
class FarPointer:
    """A direct far pointer ``selector:offset`` (``ljmp $sel,$off``)."""

    selector: int
    offset: int


@frozen
class Constant:
    """The implicit constant of ``shl $1`` forms (D0/D1)."""

    value: int


Operand = Register | MemoryOperand | Immediate | Relative | FarPointer | Constant


@frozen(eq=False)
class Instruction:
    """One decoded instruction.

    ``mnemonic`` is Intel's lower-case base name for this operand size;
    ``operands`` are in Intel order (destination first); ``prefixes`` are the
    prefix names in byte order (see ``vmi.cpu.isa.PREFIXES``). ``str()`` is the
    AT&T text GNU objdump prints.
    """

    address: int
    length: int
    mnemonic: str
    operands: tuple[Operand, ...]
    prefixes: tuple[str, ...]
    opsize: int  # 16 or 32
    addrsize: int  # 16 or 32
    form: object = field(repr=False)  # vmi.cpu.isa.Form (or an x87 form)
    raw: bytes = field(repr=False)

    @property
    def next_address(self) -> int:
        return (self.address + self.length) & 0xFFFFFFFF

    @property
    def lock(self) -> bool:
        return "lock" in self.prefixes

    @property
    def rep(self) -> str | None:
        """``"rep"`` (F3) or ``"repne"`` (F2), the last one given, or None."""
        for name in reversed(self.prefixes):
            if name in ("rep", "repne"):
                return name
        return None

    def __str__(self) -> str:
        from vmi.cpu.disasm import format_att

        return format_att(self)
