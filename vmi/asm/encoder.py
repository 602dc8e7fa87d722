"""Instruction encoding driven by the ISA table (``vmi.cpu.isa.FORMS``).

There is no second opcode table here. For an AT&T statement the encoder finds
the table forms of its mnemonic, tries to fit the operands to each form's
operand specs (at 16- and 32-bit operand size where the form has ``v``
specs), and keeps the encoding GNU as would choose:

* the shortest encoding wins (``add $1,%eax`` takes 83 /0 ib, ``mov %eax,sym``
  takes A3 moffs, ``add $0x100,%eax`` the accumulator form 05 id);
* on equal length a sign-extended ``imm8`` form beats the accumulator form
  (``addw $16,%ax`` is 66 83 C0 10, as GNU as's template order has it),
  otherwise the table order decides (``mov %eax,%ecx`` is 89 C1, not 8B C8);
* a displacement or immediate that is not a known constant when the statement
  is read gets the full size, exactly as GNU as (it does not relax them).

What AT&T spelling adds (size suffixes, ``cwtl`` for ``cwde``, ``movzbl``,
``jz`` for ``je``, operand order) is in the spelling tables below; they name
table mnemonics and never opcodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import define, field, frozen

from vmi.asm.errors import StatementError
from vmi.asm.expr import Expr, Num
from vmi.asm.operands import ImmOperand, MemOperand, Operand, Reg, RegOperand
from vmi.cpu import isa

# ---------------------------------------------------------------------------
# The result of encoding one statement


@frozen
class Fixup:
    """A field of an encoding whose value is an expression evaluated after layout.

    ``kind``: ``imm`` (checked to fit ``size`` bytes signed or unsigned), ``disp``
    (an address component, wrapped to the address size), ``rel`` (PC-relative:
    target minus the address of the end of the instruction, which is ``end``
    bytes after its start).
    """

    offset: int
    size: int
    expr: Expr
    kind: str
    col: int
    end: int = 0
    wrap: int = 0  # ``disp``: the address size the value wraps at (16 or 32)


@frozen
class Encoded:
    """A fixed-size encoding: bytes (zero where fixups go) and fixups."""

    data: bytes
    fixups: tuple[Fixup, ...] = ()
    warnings: tuple[tuple[str, int], ...] = ()


@frozen
class Branch:
    """A ``jmp``/``jcc`` whose size is chosen by relaxation after layout.

    ``short`` is the opcode of the rel8 form, ``long`` that of the rel16/32
    form whose displacement is ``long_size`` bytes.
    """

    prefix: bytes
    short: bytes
    long: bytes
    long_size: int
    target: Expr
    col: int


#: Whether an expression is a known constant now: its value, or None.
Known = Callable[[Expr], "int | None"]


@define
class Context:
    """What encoding needs to know besides the statement."""

    code_bits: int
    known: Known
    pseudo: frozenset[str] = frozenset()  # {disp8}, {disp32}, {load}, {store}, ...


# ---------------------------------------------------------------------------
# Spelling: AT&T mnemonics -> table mnemonics


@frozen
class Spelling:
    """What an AT&T mnemonic means in table terms."""

    name: str  # the table mnemonic (one side of an "a/b" pair for those)
    suffix: str = ""  # b, w or l
    opsize: int | None = None  # operand size fixed by the spelling (bits)
    addrsize: int | None = None  # address size fixed by the spelling (bits)
    source_size: int | None = None  # movzx/movsx source size (bytes)


_CONDITIONS = {
    "o": "o", "no": "no", "b": "b", "c": "b", "nae": "b", "ae": "ae", "nb": "ae", "nc": "ae",
    "e": "e", "z": "e", "ne": "ne", "nz": "ne", "be": "be", "na": "be", "a": "a", "nbe": "a",
    "s": "s", "ns": "ns", "p": "p", "pe": "p", "np": "np", "po": "np", "l": "l", "nge": "l",
    "ge": "ge", "nl": "ge", "le": "le", "ng": "le", "g": "g", "nle": "g",
}

_ALIASES: dict[str, Spelling] = {
    "cbtw": Spelling("cbw", opsize=16), "cwtl": Spelling("cwde", opsize=32),
    "cbw": Spelling("cbw", opsize=16), "cwde": Spelling("cwde", opsize=32),
    "cwtd": Spelling("cwd", opsize=16), "cltd": Spelling("cdq", opsize=32),
    "cwd": Spelling("cwd", opsize=16), "cdq": Spelling("cdq", opsize=32),
    "jcxz": Spelling("jcxz", addrsize=16), "jecxz": Spelling("jecxz", addrsize=32),
    "sal": Spelling("shl"), "xlatb": Spelling("xlat"), "wait": Spelling("fwait"),
    "ud2a": Spelling("ud2"), "loopz": Spelling("loope"), "loopnz": Spelling("loopne"),
    "movzx": Spelling("movzx"), "movsx": Spelling("movsx"),
    "movzb": Spelling("movzx", source_size=1), "movzw": Spelling("movzx", source_size=2),
    "movzbw": Spelling("movzx", "w", source_size=1),
    "movzbl": Spelling("movzx", "l", source_size=1),
    "movzwl": Spelling("movzx", "l", source_size=2),
    "movsbw": Spelling("movsx", "w", source_size=1),
    "movsbl": Spelling("movsx", "l", source_size=1),
    "movswl": Spelling("movsx", "l", source_size=2),
    # objdump prints these for a 16-bit source and destination; GNU as rejects
    # them, vmi.asm accepts them so that disassembly always reassembles.
    "movsww": Spelling("movsx", "w", source_size=2),
    "movzww": Spelling("movzx", "w", source_size=2),
    **{f"j{cc}": Spelling(f"j{t}") for cc, t in _CONDITIONS.items()},
    **{f"set{cc}": Spelling(f"set{t}") for cc, t in _CONDITIONS.items()},
    **{f"cmov{cc}": Spelling(f"cmov{t}") for cc, t in _CONDITIONS.items()},
}

#: Table mnemonics whose "a/b" pair names are both AT&T spellings with a fixed size.
_PAIR_SPELLED = frozenset({"cbw", "cwde", "cwd", "cdq", "jcxz", "jecxz"})

#: Forms without ``v`` operands whose operand size still matters (66 prefix).
_OPSIZE_SENSITIVE = frozenset({
    "ret", "lret", "enter", "leave", "push", "pop", "lgdt", "lidt", "sgdt", "sidt",
    "pusha", "popa", "pushf", "popf", "iret", "cbw", "cwd",
})
#: Mnemonics GNU as sizes by the code size without a warning.
_DEFAULT_SIZE_OK = frozenset({"push", "pop", "call", "jmp", "lcall", "ljmp"})
#: Operands may be written in either order (GNU as accepts both).
_COMMUTATIVE = frozenset({"xchg", "test"})
#: AT&T keeps the Intel operand order for these.
_NOT_REVERSED = frozenset({"enter", "bound"})
#: ``rep`` prefixes are accepted on these besides the string instructions.
_REP_OK = frozenset({"nop", "ret", "lret"})
#: The table allows a 16-bit operand (the bytes decode), GNU as does not.
_NO_16BIT = frozenset({"bswap"})
_STRING = frozenset({"movs", "cmps", "stos", "lods", "scas", "ins", "outs"})
_SHIFTS = frozenset({"rol", "ror", "rcl", "rcr", "shl", "shr", "sar"})


def _table_names() -> dict[str, list[tuple[int, isa.Form]]]:
    names: dict[str, list[tuple[int, isa.Form]]] = {}
    for index, form in enumerate(isa.FORMS):
        parts = form.mnemonic.split("/")
        for name in parts:
            names.setdefault(name, []).append((index, form))
    return names


_BY_NAME = _table_names()
#: AT&T base names (for "a/b" pairs only the first, except _PAIR_SPELLED).
_BASES = frozenset(
    name for name, forms in _BY_NAME.items()
    if any(f.mnemonic.split("/")[0] == name or name in _PAIR_SPELLED for _, f in forms)
)


def spell(word: str) -> Spelling | None:
    """The meaning of an AT&T mnemonic (lower case), or None if unknown."""
    if word in _ALIASES:
        return _ALIASES[word]
    if word in _BASES or word == "pause":
        return Spelling(word)
    if len(word) > 1 and word[-1] in "bwl":
        stem = word[:-1]
        base = _ALIASES.get(stem)
        if base is not None and not base.suffix and base.opsize is None \
                and not base.name.startswith(("j", "set", "movzx", "movsx")):
            return Spelling(base.name, word[-1], base.opsize, base.addrsize)
        if base is not None and base.name in ("movzx", "movsx") and base.source_size:
            return Spelling(base.name, word[-1], source_size=base.source_size)
        if stem in _BASES:
            return Spelling(stem, word[-1])
    return None


def is_mnemonic(word: str) -> bool:
    from vmi.asm import x87

    return spell(word) is not None or x87.is_x87(word)


# ---------------------------------------------------------------------------
# Operand specs


_GPR_NAMES = {
    **{n: (i, 1) for i, n in enumerate(("AL", "CL", "DL", "BL", "AH", "CH", "DH", "BH"))},
    **{n: (i, 4) for i, n in enumerate(("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI",
                                        "EDI"))},
    **{n: (i, 0) for i, n in enumerate(("eAX", "eCX", "eDX", "eBX", "eSP", "eBP", "eSI",
                                        "eDI"))},
    "AX": (0, 2), "DX": (2, 2),
}
_SEG_NAMES = {n: i for i, n in enumerate(("ES", "CS", "SS", "DS", "FS", "GS"))}
_SEG_PREFIX = {0: 0x26, 1: 0x2E, 2: 0x36, 3: 0x3E, 4: 0x64, 5: 0x65}
_SLOTS = ("seg", "addr", "data", "rep", "lock")  # GNU as prefix emission order


def _spec_size(letter: str, opsize: int) -> int:
    """Bytes of an operand spec's size letter (``vmi.cpu.isa.operand_bytes``); the
    x87 images (``e``, ``f``) and letters the table does not size count as 0 here:
    their operands are matched by the x87 table (``vmi.asm.x87``)."""
    if letter in ("e", "f"):
        return 0
    try:
        return isa.operand_bytes(letter, opsize)
    except KeyError:
        return 0


@define
class _Fit:
    """The pieces of one operand-to-form fit, turned into bytes by ``_assemble``."""

    form: isa.Form
    index: int
    opsize: int
    addrsize: int
    code_bits: int
    reg_field: int | None = None
    rm_reg: int | None = None
    memory: MemOperand | None = None
    trailing: list[tuple[str, object, int, int]] = field(factory=list)  # kind, expr, size, col
    prefixes: dict[str, int] = field(factory=dict)
    op_size: int | None = None  # the size a suffix names (None: no sized operand)
    sized_by_register: bool = False
    uses_opsize: bool = False
    uses_sib8: bool = False
    swapped: bool = False
    memory_addrsize: int | None = None
    warnings: list[tuple[str, int]] = field(factory=list)


class _NoFit(Exception):
    """The operands do not fit this form (with a reason for the best message)."""


# ---------------------------------------------------------------------------
# Encoding entry point


def encode(mnemonic: str, operands: Sequence[Operand], keyword_prefixes: Sequence[tuple[str, int]],
           ctx: Context, col: int) -> Encoded | Branch:
    """Encode one instruction; raises ``StatementError`` when it cannot be encoded."""
    from vmi.asm import x87

    prefixes, addr_override = _keyword_prefixes(keyword_prefixes, ctx.code_bits)
    if any(word == "notrack" for word, _ in keyword_prefixes):
        base = spell(mnemonic)
        if base is None or base.name not in ("call", "jmp") or not (
                len(operands) == 1 and getattr(operands[0], "indirect", False)):
            raise StatementError("expecting indirect branch instruction after 'notrack'", col)
    if x87.is_x87(mnemonic):
        return x87.encode(mnemonic, operands, prefixes, ctx, col)
    spelling = spell(mnemonic)
    if spelling is None:
        raise StatementError(f"unknown instruction '{mnemonic}'", col)
    ops = list(operands)
    name = spelling.name
    if name == "pause":
        if ops:
            raise StatementError("'pause' takes no operands", ops[0].col)
        return _finish_plain(bytes([0xF3, 0x90]), prefixes, col)
    # Far jumps and calls written with two immediates: ljmp $sel,$off.
    if name in ("jmp", "call", "ljmp", "lcall") and len(ops) == 2 \
            and all(isinstance(op, ImmOperand) for op in ops):
        name = "l" + name if not name.startswith("l") else name
        far = ("far", ops[0], ops[1])
        return _encode_forms(name, spelling, [far], prefixes, addr_override, ctx, col, mnemonic)
    if name == "int" and len(ops) == 1 and isinstance(ops[0], ImmOperand) \
            and ctx.known(ops[0].expr) == 3:
        name, ops = "int3", []  # GNU as writes int $3 as the one-byte int3
    accumulators = [op.reg.size for op in ops if isinstance(op, RegOperand)
                    and op.reg.kind == "gpr" and op.reg.number == 0 and op.reg.size in (2, 4)]
    if name == "xchg" and len(ops) == 2 and len(accumulators) == 2 \
            and accumulators[0] == accumulators[1]:
        # xchg %eax,%eax is the one-byte 90 (the table's nop), as GNU as writes it.
        size = accumulators[0] * 8
        opcode = (b"\x66" if size != ctx.code_bits else b"") + b"\x90"
        return _finish_plain(opcode, prefixes, col)
    branch = _maybe_branch(name, spelling, ops, prefixes, ctx, col)
    if branch is not None:
        return branch
    if name == "xlat" and len(ops) == 1 and isinstance(ops[0], MemOperand):
        _xlat_operand(ops[0], prefixes, ctx)
        ops = []
    intel: list[object] = list(ops) if name in _NOT_REVERSED else list(reversed(ops))
    if name == "imul" and len(intel) == 2 and isinstance(intel[1], ImmOperand):
        intel = [intel[0], intel[0], intel[1]]  # imul $3,%eax == imul $3,%eax,%eax
    if name in ("shld", "shrd") and len(intel) == 2:
        intel.append(RegOperand(Reg.named("cl"), col))
    if name in ("aam", "aad") and not intel:
        intel = [ImmOperand(Num(10, col), col)]
    return _encode_forms(name, spelling, intel, prefixes, addr_override, ctx, col, mnemonic)


def _xlat_operand(mem: MemOperand, prefixes: dict[str, int], ctx: Context) -> None:
    """``xlat %ds:(%ebx)``: the operand only chooses the segment and address size."""
    if mem.base is None or mem.base.number != 3 or mem.index is not None or (
            mem.disp is not None and ctx.known(mem.disp) != 0):
        raise StatementError("xlat takes only (%ebx) or (%bx)", mem.col)
    if mem.segment is not None and mem.segment.number != 3:
        prefixes["seg"] = _SEG_PREFIX[mem.segment.number]
    if mem.base.size * 8 != ctx.code_bits:
        prefixes["addr"] = 0x67


def _keyword_prefixes(keywords: Sequence[tuple[str, int]],
                      code_bits: int) -> tuple[dict[str, int], int | None]:
    prefixes: dict[str, int] = {}
    addr_override = None
    for word, col in keywords:
        slot, byte = _KEYWORD_PREFIX[word]
        if word in ("data16", "addr16") and code_bits == 16 or \
                word in ("data32", "addr32") and code_bits == 32:
            raise StatementError(f"redundant {word} prefix", col)
        if slot in prefixes:
            raise StatementError("same type of prefix used twice", col)
        prefixes[slot] = byte
        if slot == "addr":
            addr_override = 48 - code_bits
    return prefixes, addr_override


_KEYWORD_PREFIX = {
    "lock": ("lock", 0xF0), "rep": ("rep", 0xF3), "repe": ("rep", 0xF3),
    "repz": ("rep", 0xF3), "repne": ("rep", 0xF2), "repnz": ("rep", 0xF2),
    "data16": ("data", 0x66), "data32": ("data", 0x66),
    "addr16": ("addr", 0x67), "addr32": ("addr", 0x67),
    "es": ("seg", 0x26), "cs": ("seg", 0x2E), "ss": ("seg", 0x36), "ds": ("seg", 0x3E),
    "fs": ("seg", 0x64), "gs": ("seg", 0x65), "notrack": ("seg", 0x3E),
}
KEYWORD_PREFIXES = frozenset(_KEYWORD_PREFIX)


def prefix_byte(word: str) -> int:
    """The byte a prefix keyword alone on a statement emits."""
    return _KEYWORD_PREFIX[word][1]


def _finish_plain(opcode: bytes, prefixes: dict[str, int], col: int) -> Encoded:
    """A fixed encoding (``pause``, ``xchg %eax,%eax``) after the keyword prefixes."""
    if "lock" in prefixes:
        raise StatementError("expecting lockable instruction after 'lock'", col)
    return Encoded(_prefix_bytes(prefixes) + opcode)


def _prefix_bytes(prefixes: dict[str, int]) -> bytes:
    return bytes(prefixes[slot] for slot in _SLOTS if slot in prefixes)


# ---------------------------------------------------------------------------
# Branches


def _maybe_branch(name: str, spelling: Spelling, ops: list[Operand], prefixes: dict[str, int],
                  ctx: Context, col: int) -> Encoded | Branch | None:
    """Relative branches: jmp/jcc relax; call, loop and jcxz have one size."""
    forms = _BY_NAME.get(name, [])
    rel_forms = [(i, f) for i, f in forms if f.operands and f.operands[0].startswith("J")]
    if not rel_forms or len(ops) != 1:
        return None
    target = ops[0]
    if not isinstance(target, MemOperand) or target.indirect or not target.bare \
            or target.segment is not None or target.disp is None:
        return None
    addrsize = spelling.addrsize
    if name == "jmp" and spelling.suffix:  # GNU as: jmpl/jmpw only for indirect jumps
        raise StatementError(f"invalid instruction suffix for '{name}'", col)
    if name in ("loop", "loope", "loopne") and spelling.suffix in ("w", "l"):
        addrsize = _suffix_bits(spelling.suffix)  # loopw uses %cx, loopl %ecx
        spelling = Spelling(name, addrsize=addrsize)
    elif spelling.suffix and name not in ("jmp", "call"):
        raise StatementError(f"invalid instruction suffix for '{name}'", col)
    opsize = _suffix_bits(spelling.suffix) or ctx.code_bits
    short = [f for _, f in rel_forms if f.operands[0] == "Jb"]
    long = [f for _, f in rel_forms if f.operands[0] == "Jv"]
    pre = dict(prefixes)
    if opsize != ctx.code_bits:
        if short:
            raise StatementError(f"operand size suffix not supported on '{name}'", col)
        pre["data"] = 0x66
    if "lock" in pre:
        raise StatementError("expecting lockable instruction after 'lock'", col)
    if short and long:
        return Branch(_prefix_bytes(pre), bytes(short[0].opcode), bytes(long[0].opcode),
                      opsize // 8, target.disp, target.col)
    form = (short or long)[0]
    if spelling.addrsize is not None and spelling.addrsize != ctx.code_bits:
        pre["addr"] = 0x67
    size = 1 if short else opsize // 8
    head = _prefix_bytes(pre) + bytes(form.opcode)
    end = len(head) + size
    return Encoded(head + bytes(size),
                   (Fixup(len(head), size, target.disp, "rel", target.col, end),))


def _suffix_bits(suffix: str) -> int | None:
    """The operand size a suffix names (None for no suffix)."""
    return {"": None, "w": 16, "l": 32, "b": 8}[suffix]


# ---------------------------------------------------------------------------
# General forms


def _encode_forms(name: str, spelling: Spelling, intel: list[object], prefixes: dict[str, int],
                  addr_override: int | None, ctx: Context, col: int,
                  mnemonic: str) -> Encoded:
    forms = _BY_NAME.get(name)
    if not forms:
        raise StatementError(f"unknown instruction '{mnemonic}'", col)
    orders = [(intel, False)]
    if name in _COMMUTATIVE and len(intel) == 2:
        orders.append(([intel[1], intel[0]], True))
    fits: list[_Fit] = []
    reasons: list[str] = []
    kinds = tuple(_operand_kind(op) for op in intel)
    candidates = _candidates(name, kinds, len(orders) > 1)
    if not candidates:
        too_many = all(len(kinds) > len(_ACCEPTS[i]) for i, _ in forms)
        reasons.append("operand count" if too_many else "operand")
    for index, form in candidates:
        for opsize in _opsizes(form, name, spelling, ctx):
            if opsize == 16 and name in _NO_16BIT:
                continue
            for order, swapped in orders:
                try:
                    fit = _fit(form, index, order, opsize, name, spelling, addr_override, ctx)
                except _NoFit as why:
                    reasons.append(str(why))
                    continue
                fit.swapped = swapped
                fits.append(fit)
    if not fits:
        raise StatementError(_mismatch_message(mnemonic, reasons), col)
    fits = _apply_suffix(fits, spelling, mnemonic, col)
    fits, warning = _resolve_size(fits, name, mnemonic, ctx)
    best = min(fits, key=lambda f: _rank(f, ctx))
    encoded = _assemble(best, prefixes, ctx, col, mnemonic)
    if warning:
        encoded = Encoded(encoded.data, encoded.fixups, encoded.warnings + ((warning, col),))
    return encoded


def _operand_kind(op: object) -> str:
    if isinstance(op, RegOperand):
        return op.reg.kind
    if isinstance(op, MemOperand):
        return "mem"
    if isinstance(op, ImmOperand):
        return "imm"
    return "far"


def _spec_accepts(spec: str) -> frozenset[str]:
    """Which operand kinds can fit a spec (a cheap test before the full fit)."""
    if spec in _GPR_NAMES:
        return frozenset({"gpr", "implicit", "mem"} if spec == "DX" else {"gpr", "implicit"})
    if spec in _SEG_NAMES:
        return frozenset({"seg"})
    if spec == "1":
        return frozenset({"imm", "implicit"})
    if spec.startswith("ST"):
        return frozenset({"st"})
    if spec == "Rv/Mw":
        return frozenset({"gpr", "mem"})
    kind = spec[:2] if spec.startswith("sI") else spec[0]
    return frozenset({
        "E": {"gpr", "mem"}, "M": {"mem"}, "R": {"gpr"}, "G": {"gpr"}, "S": {"seg"},
        "C": {"cr"}, "D": {"dr"}, "T": {"tr"}, "I": {"imm"}, "sI": {"imm"}, "J": {"mem"},
        "O": {"mem"}, "A": {"far"}, "X": {"mem", "implicit"}, "Y": {"mem", "implicit"},
    }.get(kind, set()))


def _kinds_fit(accepts: tuple[frozenset[str], ...], kinds: list[str]) -> bool:
    if len(kinds) > len(accepts):
        return False
    if len(kinds) < len(accepts):
        return any("implicit" in a for a in accepts) or len(kinds) + 1 == len(accepts)
    return all(k in a for k, a in zip(kinds, accepts, strict=True))


def _candidates(name: str, kinds: tuple[str, ...],
                commutative: bool) -> list[tuple[int, isa.Form]]:
    """The forms of ``name`` whose specs accept operands of these kinds (cached)."""
    key = (name, kinds, commutative)
    found = _CANDIDATES.get(key)
    if found is None:
        swapped = list(kinds[::-1])
        found = [(i, f) for i, f in _BY_NAME.get(name, [])
                 if _kinds_fit(_ACCEPTS[i], list(kinds))
                 or commutative and _kinds_fit(_ACCEPTS[i], swapped)]
        _CANDIDATES[key] = found
    return found


_CANDIDATES: dict[tuple[str, tuple[str, ...], bool], list[tuple[int, isa.Form]]] = {}

#: Per table index: the operand kinds each spec accepts.
_ACCEPTS = [tuple(_spec_accepts(spec) for spec in form.operands) for form in isa.FORMS]


def _mismatch_message(mnemonic: str, reasons: list[str]) -> str:
    specific = [r for r in reasons if r and not r.startswith("operand")]
    if specific:
        return f"{specific[0]} for '{mnemonic}'"
    if reasons and all(r == "operand count" for r in reasons):
        return f"number of operands mismatch for '{mnemonic}'"
    if "operand size" in reasons:
        return f"operand size mismatch for '{mnemonic}'"
    return f"operand type mismatch for '{mnemonic}'"


def _opsizes(form: isa.Form, name: str, spelling: Spelling, ctx: Context) -> tuple[int, ...]:
    """Operand sizes worth trying for ``form``."""
    if spelling.opsize is not None:
        return (spelling.opsize,)
    if "/" in form.mnemonic and name in _PAIR_SPELLED:
        short, _ = form.mnemonic.split("/")
        return (16,) if name == short else (32,)
    if _form_uses_opsize(form):
        return (16, 32)
    if form.mnemonic.split("/")[0] in _OPSIZE_SENSITIVE:
        bits = _suffix_bits(spelling.suffix)
        return (bits,) if bits in (16, 32) else (ctx.code_bits,)
    return (ctx.code_bits,)


def _form_uses_opsize(form: isa.Form) -> bool:
    cached = _USES_OPSIZE.get(form.key + str(form.opcode))
    if cached is None:
        cached = _USES_OPSIZE[form.key + str(form.opcode)] = _compute_uses_opsize(form)
    return cached


_USES_OPSIZE: dict[str, bool] = {}


def _compute_uses_opsize(form: isa.Form) -> bool:
    for spec in form.operands:
        if spec in _GPR_NAMES and _GPR_NAMES[spec][1] == 0:
            return True
        if spec == "Rv/Mw":
            return True
        if spec[-1:] in ("v", "p", "a") and not spec.startswith("ST"):
            return True
    return False


def _apply_suffix(fits: list[_Fit], spelling: Spelling, mnemonic: str, col: int) -> list[_Fit]:
    if not spelling.suffix:
        return fits
    size = {"b": 1, "w": 2, "l": 4}[spelling.suffix]
    kept = []
    for fit in fits:
        if fit.op_size is not None:
            if fit.op_size == size:
                kept.append(fit)
        elif fit.uses_opsize or fit.form.mnemonic.split("/")[0] in _OPSIZE_SENSITIVE:
            if fit.opsize == size * 8:
                kept.append(fit)
    if not kept:
        raise StatementError(f"invalid instruction suffix for '{mnemonic}'", col)
    return kept


def _resolve_size(fits: list[_Fit], name: str, mnemonic: str,
                  ctx: Context) -> tuple[list[_Fit], str | None]:
    """Without a suffix or a sizing register, GNU as takes the code size and warns."""
    sizes = {f.op_size if f.op_size is not None else (f.opsize // 8 if f.uses_opsize else None)
             for f in fits}
    if len(sizes) <= 1:
        return fits, None
    default = ctx.code_bits // 8
    kept = [f for f in fits if (f.op_size or f.opsize // 8) == default]
    if not kept:
        raise StatementError(
            f"no instruction mnemonic suffix given and no register operands; "
            f"can't size '{mnemonic}'", None)
    if name in _DEFAULT_SIZE_OK:
        return kept, None
    return kept, ("no instruction mnemonic suffix given and no register operands; "
                  f"using default for '{mnemonic}'")


def _rank(fit: _Fit, ctx: Context) -> tuple[int, ...]:
    length = len(_layout(fit, ctx)[0])
    direction = 0
    if "{load}" in ctx.pseudo or "{store}" in ctx.pseudo:
        first = fit.form.operands[0][:1] if fit.form.operands else ""
        wanted = "G" if "{load}" in ctx.pseudo else "E"
        direction = 0 if first == wanted else 1
    return (length, direction, int(fit.swapped), 0 if fit.uses_sib8 else 1, fit.index)


# ---------------------------------------------------------------------------
# Fitting operands to one form


def _fit(form: isa.Form, index: int, ops: list[object], opsize: int, name: str,
         spelling: Spelling, addr_override: int | None, ctx: Context) -> _Fit:
    specs = form.operands
    if len(ops) > len(specs):
        raise _NoFit("operand count")
    implicit = len(specs) - len(ops)
    if implicit:
        ops = _with_implicit(form, name, ops, specs)
    fit = _Fit(form, index, opsize, addr_override or ctx.code_bits, ctx.code_bits)
    fit.uses_opsize = _form_uses_opsize(form) or form.mnemonic.split("/")[0] in _OPSIZE_SENSITIVE
    if form.group is not None:
        fit.reg_field = form.group
    elif form.any_modrm:
        fit.reg_field = 0
    for position, (spec, op) in enumerate(zip(specs, ops, strict=True)):
        _fit_operand(fit, spec, op, position, name, spelling, ctx)
    if spelling.addrsize is not None:
        fit.addrsize = spelling.addrsize
    if fit.memory_addrsize is not None:
        fit.addrsize = fit.memory_addrsize
    return fit


_IMPLICIT = object()


def _with_implicit(form: isa.Form, name: str, ops: list[object],
                   specs: tuple[str, ...]) -> list[object]:
    """Fill operands AT&T lets you leave out: string operands, the in/out accumulator,
    the shift count 1."""
    base = form.mnemonic.split("/")[0]
    if base in _STRING and not ops:
        return [_IMPLICIT] * len(specs)
    if base in ("in", "out") and len(ops) == 1:
        acc = 0 if specs[0] in ("AL", "eAX", "AX") else 1
        filled = list(ops)
        filled.insert(acc, _IMPLICIT)
        return filled
    if base in _SHIFTS and len(ops) == 1 and specs[1:] == ("1",):
        return [ops[0], _IMPLICIT]
    if base == "xlat":
        return ops[: len(specs)]
    raise _NoFit("operand count")


def _fit_operand(fit: _Fit, spec: str, op: object, position: int, name: str,
                 spelling: Spelling, ctx: Context) -> None:
    opsize = fit.opsize
    if isinstance(op, RegOperand) or isinstance(op, MemOperand):
        if op.indirect and name not in ("call", "jmp", "lcall", "ljmp"):
            raise _NoFit("indirection ('*') not allowed")
    if spec in _GPR_NAMES:
        number, size = _GPR_NAMES[spec]
        size = size or opsize // 8
        # A shift count (CL) or a port (DX) does not size the instruction.
        sizes = spec != "DX" and (spec != "CL" or position == 0)
        if op is _IMPLICIT:
            if sizes:
                _note_size(fit, size, False)
            return
        if spec == "DX" and isinstance(op, MemOperand) and op.base is not None \
                and op.base.name == "dx" and op.index is None and op.disp is None \
                and op.segment is None:
            return  # in (%dx),%al
        if not (isinstance(op, RegOperand) and op.reg.kind == "gpr"
                and op.reg.number == number and op.reg.size == size):
            raise _NoFit("operand")
        if sizes:
            _note_size(fit, size, True)
        return
    if spec in _SEG_NAMES:
        if not (isinstance(op, RegOperand) and op.reg.kind == "seg"
                and op.reg.number == _SEG_NAMES[spec]):
            raise _NoFit("operand")
        return
    if spec == "1":
        if op is _IMPLICIT:
            return
        if isinstance(op, ImmOperand) and ctx.known(op.expr) == 1:
            return
        raise _NoFit("operand")
    if spec.startswith("ST"):
        raise _NoFit("operand")
    if spec == "Rv/Mw":
        _fit_rv_mw(fit, op, position, name)
        return
    kind, letter = (spec[:2], spec[2:]) if spec.startswith("sI") else (spec[0], spec[1:])
    size = _spec_size(letter, opsize)
    if kind in "EM":
        if spelling.source_size is not None and position == 1 \
                and size != spelling.source_size:
            raise _NoFit("operand size")
        if isinstance(op, RegOperand) and kind == "E":
            if op.reg.kind != "gpr" or op.reg.size != size:
                raise _NoFit("operand size")
            if name in ("call", "jmp") and not op.indirect:
                fit.warnings.append((f"indirect {name} without '*'", op.col))
            fit.rm_reg = op.reg.number
            _note_size(fit, size, True)
            return
        if isinstance(op, MemOperand):
            _set_memory(fit, op, ctx)
            if name in ("call", "jmp", "lcall", "ljmp") and not op.indirect:
                if name in ("call", "jmp"):
                    fit.warnings.append((f"indirect {name} without '*'", op.col))
            if letter in ("b", "w", "v", "d"):
                _note_size(fit, size, False)
            return
        raise _NoFit("operand")
    if kind == "G":
        if not (isinstance(op, RegOperand) and op.reg.kind == "gpr" and op.reg.size == size):
            raise _NoFit("operand size")
        fit.reg_field = op.reg.number
        _note_size(fit, size, True)
        return
    if kind == "R":
        if not (isinstance(op, RegOperand) and op.reg.kind == "gpr" and op.reg.size == 4):
            raise _NoFit("operand")
        fit.rm_reg = op.reg.number
        _note_size(fit, 4, True)
        return
    if kind in "SCDT":
        want = {"S": "seg", "C": "cr", "D": "dr", "T": "tr"}[kind]
        if not (isinstance(op, RegOperand) and op.reg.kind == want):
            raise _NoFit("operand")
        fit.reg_field = op.reg.number
        return
    if kind == "sI":
        if not isinstance(op, ImmOperand):
            raise _NoFit("operand")
        value = ctx.known(op.expr)
        if value is None or not _fits_sign_extended(wrap32(value), opsize):
            raise _NoFit("operand")
        fit.trailing.append(("imm8s", op.expr, 1, op.col))
        fit.uses_sib8 = True
        return
    if kind == "I":
        if not isinstance(op, ImmOperand):
            raise _NoFit("operand")
        fit.trailing.append(("imm", op.expr, size, op.col))
        return
    if kind == "O":
        if not (isinstance(op, MemOperand) and op.bare and not op.indirect
                and op.disp is not None):
            raise _NoFit("operand")
        if op.segment is not None and op.segment.number != 3:
            fit.prefixes["seg"] = _SEG_PREFIX[op.segment.number]
        fit.trailing.append(("moffs", op.disp, 0, op.col))
        _note_size(fit, size, False)
        return
    if kind == "A":
        if not (isinstance(op, tuple) and op[0] == "far"):
            raise _NoFit("operand")
        fit.trailing.append(("far", (op[1], op[2]), size, op[1].col))
        return
    if kind in "XY":
        _fit_string(fit, kind, op, size)
        return
    raise _NoFit("operand")


def _fit_rv_mw(fit: _Fit, op: object, position: int, name: str) -> None:
    """``Rv/Mw``: a 16/32-bit register or a word in memory (mov seg, sldt, lar).

    GNU as takes the operand size from a destination register (``mov %ds,%ax``
    gets 66) but never from a source (``mov %ax,%ds`` does not).
    """
    if isinstance(op, RegOperand):
        if op.reg.kind != "gpr" or op.reg.size == 1:
            raise _NoFit("operand")
        fit.rm_reg = op.reg.number
        if position == 0:
            if op.reg.size * 8 != fit.opsize:
                raise _NoFit("operand size")
            _note_size(fit, op.reg.size, True)
        elif not _other_v(fit.form, position) and fit.opsize != fit.code_bits:
            raise _NoFit("operand size")
        return
    if isinstance(op, MemOperand):
        _set_memory(fit, op, None)
        if not _other_v(fit.form, position) and fit.opsize != fit.code_bits:
            raise _NoFit("operand size")
        _note_size(fit, 2, False)
        return
    raise _NoFit("operand")


def _other_v(form: isa.Form, position: int) -> bool:
    return any(spec[-1:] == "v" or spec in ("eAX",)
               for k, spec in enumerate(form.operands) if k != position)


def _fit_string(fit: _Fit, kind: str, op: object, size: int) -> None:
    _note_size(fit, size, False)
    if op is _IMPLICIT:
        return
    if not isinstance(op, MemOperand) or op.index is not None or op.base is None or (
            op.disp is not None and not (isinstance(op.disp, Num) and op.disp.value == 0)):
        raise _NoFit("operand")
    want = 6 if kind == "X" else 7
    if op.base.number != want:
        raise _NoFit("operand")
    addrsize = op.base.size * 8
    if fit.memory_addrsize is not None and fit.memory_addrsize != addrsize:
        raise _NoFit("operand")
    fit.memory_addrsize = addrsize
    if kind == "Y":
        if op.segment is not None and op.segment.number != 0:
            raise _NoFit(f"'%{op.segment.name}:' must be '%es:' on the destination")
    elif op.segment is not None and op.segment.number != 3:
        fit.prefixes["seg"] = _SEG_PREFIX[op.segment.number]


def _note_size(fit: _Fit, size: int, by_register: bool) -> None:
    if fit.op_size is None:
        fit.op_size = size
        fit.sized_by_register = by_register


def _set_memory(fit: _Fit, mem: MemOperand, ctx: Context | None) -> None:
    if fit.memory is not None and fit.memory is not mem:
        raise _NoFit("operand")
    fit.memory = mem
    addrsize = mem.address_size
    if addrsize is not None:
        fit.memory_addrsize = addrsize


def wrap32(value: int) -> int:
    """``value`` as a signed 32-bit number: GNU as (for i386) checks and truncates
    fields of up to 32 bits after this wrap, so 0xffffffff fits where -1 does."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def _fits_sign_extended(value: int, opsize: int) -> bool:
    """Whether ``value`` (an immediate for an ``opsize`` operand) is a sign-extended byte."""
    mask = (1 << opsize) - 1
    if not -(1 << (opsize - 1)) <= value <= mask:
        return False
    value &= mask
    byte = value & 0xFF
    extended = (byte - 0x100 if byte & 0x80 else byte) & mask
    return extended == value


# ---------------------------------------------------------------------------
# Bytes


def _memory_fields(mem: MemOperand, addrsize: int, known: Known,
                   pseudo: frozenset[str]) -> tuple[int, int, bytes | None, int, object]:
    """ModRM mod and rm, SIB byte, displacement size and expression (or constant)."""
    disp = mem.disp
    value = known(disp) if disp is not None else 0
    if addrsize == 32:
        return _memory32(mem, disp, value, pseudo)
    return _memory16(mem, disp, value, pseudo)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _disp_choice(disp: object, value: int | None, bits: int, must_have: bool,
                 pseudo: frozenset[str]) -> tuple[int, int]:
    """(mod, displacement size in bytes) for a based address."""
    if "{disp32}" in pseudo or "{disp16}" in pseudo:
        return 2, bits // 8
    if value is None:
        return 2, bits // 8
    signed = _signed(value, bits)
    if signed == 0 and not must_have and "{disp8}" not in pseudo:
        return 0, 0
    if -128 <= signed <= 127:
        return 1, 1
    return 2, bits // 8


def _memory32(mem: MemOperand, disp: object, value: int | None,
              pseudo: frozenset[str]) -> tuple[int, int, bytes | None, int, object]:
    base, index = mem.base, mem.index
    for reg in (base, index):
        if reg is not None and reg.size != 4:
            raise StatementError(f"'%{reg.name}' mixes 16- and 32-bit addressing", mem.col)
    if index is not None and index.number == 4:
        raise StatementError("'%esp' cannot be an index register", mem.col)
    scale_bits = {1: 0, 2: 1, 4: 2, 8: 3}[mem.scale]
    disp_expr = disp if disp is not None else Num(0, mem.col)
    if base is None:
        if index is None:
            return 0, 5, None, 4, disp_expr
        return 0, 4, bytes([scale_bits << 6 | index.number << 3 | 5]), 4, disp_expr
    mod, size = _disp_choice(disp, value, 32, base.number == 5, pseudo)
    if index is None and base.number != 4:
        return mod, base.number, None, size, disp_expr
    sib = scale_bits << 6 | (4 if index is None else index.number) << 3 | base.number
    return mod, 4, bytes([sib]), size, disp_expr


_RM16 = {("bx", "si"): 0, ("bx", "di"): 1, ("bp", "si"): 2, ("bp", "di"): 3,
         ("si", None): 4, ("di", None): 5, ("bp", None): 6, ("bx", None): 7}


def _memory16(mem: MemOperand, disp: object, value: int | None,
              pseudo: frozenset[str]) -> tuple[int, int, bytes | None, int, object]:
    base, index = mem.base, mem.index
    for reg in (base, index):
        if reg is not None and reg.size != 2:
            raise StatementError(f"'%{reg.name}' mixes 16- and 32-bit addressing", mem.col)
    disp_expr = disp if disp is not None else Num(0, mem.col)
    if base is None and index is None:
        return 0, 6, None, 2, disp_expr
    key = (base.name if base else None, index.name if index else None)
    if key not in _RM16 or mem.scale != 1:
        raise StatementError("not a valid 16-bit base/index expression", mem.col)
    rm = _RM16[key]
    mod, size = _disp_choice(disp, value, 16, rm == 6, pseudo)
    return mod, rm, None, size, disp_expr


def _layout(fit: _Fit, ctx: Context) -> tuple[bytearray, list[Fixup]]:
    """The bytes of ``fit`` (zeros for fields) and the fixups that fill them."""
    form = fit.form
    prefixes = dict(fit.prefixes)
    if fit.addrsize != fit.code_bits and (fit.memory is not None or _string_form(form)
                                          or fit.memory_addrsize is not None
                                          or any(k == "moffs" for k, *_ in fit.trailing)
                                          or form.mnemonic == "xlat"):
        prefixes["addr"] = 0x67
    if fit.uses_opsize and fit.opsize != fit.code_bits:
        prefixes["data"] = 0x66
    memory = fit.memory
    if memory is not None and memory.segment is not None:
        default = 2 if memory.base is not None and memory.base.name in ("esp", "ebp", "bp") \
            else 3
        if memory.segment.number != default:
            prefixes["seg"] = _SEG_PREFIX[memory.segment.number]
    out = bytearray(_prefix_bytes(prefixes))
    out += bytes(form.opcode)
    fixups: list[Fixup] = []
    known, pseudo = ctx.known, ctx.pseudo
    if form.has_modrm:
        reg = fit.reg_field or 0
        if memory is not None and fit.rm_reg is None:
            mod, rm, sib, dsize, dexpr = _memory_fields(memory, fit.addrsize, known, pseudo)
            out.append(mod << 6 | reg << 3 | rm)
            if sib is not None:
                out += sib
            if dsize:
                fixups.append(Fixup(len(out), dsize, dexpr, "disp", memory.col,  # type: ignore[arg-type]
                                    wrap=fit.addrsize))
                out += bytes(dsize)
        else:
            out.append(0xC0 | reg << 3 | (fit.rm_reg or 0))
    for kind, expr, size, col in fit.trailing:
        if kind == "moffs":
            size = fit.addrsize // 8
            fixups.append(Fixup(len(out), size, expr, "disp", col,  # type: ignore[arg-type]
                                wrap=fit.addrsize))
            out += bytes(size)
        elif kind == "far":
            assert isinstance(expr, tuple)
            selector: ImmOperand = expr[0]
            offset: ImmOperand = expr[1]
            width = size - 2
            fixups.append(Fixup(len(out), width, offset.expr, "imm", offset.col))
            out += bytes(width)
            fixups.append(Fixup(len(out), 2, selector.expr, "imm", selector.col))
            out += bytes(2)
        elif kind == "imm8s":
            fixups.append(Fixup(len(out), 1, expr, "imm8s", col))  # type: ignore[arg-type]
            out += bytes(1)
        else:
            fixups.append(Fixup(len(out), size, expr, "imm", col))  # type: ignore[arg-type]
            out += bytes(size)
    return out, fixups


def memory_form_bytes(opcode: bytes, reg: int, mem: MemOperand, opsize: int,
                      keyword: dict[str, int], ctx: Context, wait: bool = False) -> Encoded:
    """Bytes of ``opcode`` with a ModRM memory operand (``reg`` in the reg field).

    ``opsize`` 16 or 32 adds 66 when it differs from the code size; ``wait``
    puts an FWAIT (9B) first, for the x87 ``fstsw``-style spellings.
    """
    prefixes = dict(keyword)
    addrsize = mem.address_size or (48 - ctx.code_bits if "addr" in keyword else ctx.code_bits)
    if addrsize != ctx.code_bits:
        prefixes["addr"] = 0x67
    if opsize != ctx.code_bits:
        prefixes["data"] = 0x66
    if mem.segment is not None:
        default = 2 if mem.base is not None and mem.base.name in ("esp", "ebp", "bp") else 3
        if mem.segment.number != default:
            prefixes["seg"] = _SEG_PREFIX[mem.segment.number]
    out = bytearray(b"\x9b" if wait else b"")
    out += _prefix_bytes(prefixes) + opcode
    mod, rm, sib, dsize, dexpr = _memory_fields(mem, addrsize, ctx.known, ctx.pseudo)
    out.append(mod << 6 | reg << 3 | rm)
    if sib is not None:
        out += sib
    fixups = []
    if dsize:
        fixups.append(Fixup(len(out), dsize, dexpr, "disp", mem.col, 0, addrsize))  # type: ignore[arg-type]
        out += bytes(dsize)
    return Encoded(bytes(out), tuple(fixups))


def plain_bytes(opcode: bytes, keyword: dict[str, int], wait: bool = False) -> Encoded:
    """Bytes of an instruction without operands (after any keyword prefixes)."""
    if "lock" in keyword:
        raise StatementError("expecting lockable instruction after 'lock'", None)
    return Encoded((b"\x9b" if wait else b"") + _prefix_bytes(keyword) + opcode)


def _string_form(form: isa.Form) -> bool:
    return any(spec[:1] in "XY" for spec in form.operands)


def _assemble(fit: _Fit, keyword: dict[str, int], ctx: Context, col: int,
              mnemonic: str) -> Encoded:
    for slot, byte in keyword.items():
        if slot in fit.prefixes and fit.prefixes[slot] != byte:
            raise StatementError("same type of prefix used twice", col)
        fit.prefixes[slot] = byte
    base = fit.form.mnemonic.split("/")[0]
    if "lock" in keyword and not ("lock" in fit.form.attrs and fit.memory is not None
                                  and fit.rm_reg is None):
        raise StatementError("expecting lockable instruction after 'lock'", col)
    if "rep" in keyword and not ("rep" in fit.form.attrs or "repz" in fit.form.attrs
                                 or base in _REP_OK):
        raise StatementError(f"invalid instruction '{mnemonic}' after 'rep'", col)
    data, fixups = _layout(fit, ctx)
    end = len(data)
    fixups = [Fixup(f.offset, f.size, f.expr, f.kind, f.col, end, f.wrap) for f in fixups]
    return Encoded(bytes(data), tuple(fixups), tuple(fit.warnings))
