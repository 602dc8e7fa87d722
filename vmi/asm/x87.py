"""x87 spellings: the AT&T names GNU as uses for the forms of ``vmi.cpu.x87``.

The x87 table names forms the Intel way; AT&T differs in three ways, all
reproduced here from the table rather than listed per opcode:

* a memory operand's format is a suffix: ``s``/``l``/``t`` for 32/64/80-bit
  reals (``flds``, ``faddl``, ``fstpt``), ``s``/``l``/``ll`` (or ``q``) for
  16/32/64-bit integers (``fiadds``, ``fildll``); without a suffix GNU as
  takes the first (``s``) and warns;
* with ``%st(i)`` as destination (escapes DC and DE) ``fsub``/``fsubr`` and
  ``fdiv``/``fdivr`` swap names (the UnixWare convention GNU as and objdump
  keep): Intel ``fsub st(i),st`` is AT&T ``fsubr %st,%st(i)``;
* ``fstsw``, ``finit`` and the other non-``fn`` names are FWAIT (9B) followed
  by the ``fn`` form; ``fadd`` alone means ``faddp %st,%st(1)``, and
  ``fxch``/``fcom``/``fucom`` alone work on ``%st(1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from vmi.asm.encoder import Context, Encoded, memory_form_bytes, plain_bytes
from vmi.asm.errors import StatementError
from vmi.asm.operands import MemOperand, Operand, RegOperand
from vmi.cpu import isa

_REAL = frozenset("fadd fmul fcom fcomp fsub fsubr fdiv fdivr fld fst fstp".split())
_REAL_SUFFIX = {4: "s", 8: "l", 10: "t"}
_INTEGER_SUFFIX = {2: ("s",), 4: ("l",), 8: ("ll", "q")}
_SWAPPED = {"fsub": "fsubr", "fsubr": "fsub", "fdiv": "fdivr", "fdivr": "fdiv"}
_SWAPPED |= {a + "p": b + "p" for a, b in _SWAPPED.items()}
_ARITHMETIC = frozenset(n + p for n in ("fadd", "fmul", "fsub", "fsubr", "fdiv", "fdivr")
                        for p in ("", "p"))
#: Names that are FWAIT + the "fn" form.
_WAITED = ("finit", "fclex", "fstsw", "fstcw", "fstenv", "fsave", "feni", "fdisi", "fsetpm")
_ENVIRONMENT = frozenset({"fldenv", "fnstenv", "frstor", "fnsave"})
_SIZE = {"w": 2, "d": 4, "q": 8, "t": 10, "e": 0, "f": 0}


@frozen
class _Memory:
    form: isa.Form
    opsize: int | None  # environment forms: 16/32 from the s/l suffix
    default: bool  # reached without a suffix (GNU as warns)


def _forms() -> list[isa.Form]:
    try:
        from vmi.cpu import x87
    except ImportError:  # pragma: no cover - the x87 table is optional
        return []
    return list(getattr(x87, "FORMS", []))


def _index() -> tuple[dict[str, list[_Memory]], dict[str, list[isa.Form]]]:
    memory: dict[str, list[_Memory]] = {}
    register: dict[str, list[isa.Form]] = {}
    for form in _forms():
        base = form.mnemonic
        if form.group is not None:
            spec = form.operands[0]
            size = _SIZE.get(spec[1:], 0)
            names: list[tuple[str, int | None]] = []
            if base in _REAL:
                names = [(base + _REAL_SUFFIX[size], None)]
            elif base.startswith("fi"):
                names = [(base + s, None) for s in _INTEGER_SUFFIX[size]]
            elif base in _ENVIRONMENT:
                names = [(base + "s", 16), (base + "l", 32)]
            elif spec == "Mw":
                names = [(base + "w", None)]  # fldcww, fnstsww
            for name, opsize in names:
                memory.setdefault(name, []).append(_Memory(form, opsize, False))
            warn = bool(names) and base not in _ENVIRONMENT and spec != "Mw"
            memory.setdefault(base, []).append(_Memory(form, None, warn))
        else:
            name = _SWAPPED.get(base, base) if form.opcode[0] in (0xDC, 0xDE) else base
            register.setdefault(name, []).append(form)
    return memory, register


_MEMORY, _REGISTER = _index()


def _unwaited(word: str) -> str | None:
    """``fstsw`` -> ``fnstsw`` (the form after an FWAIT), else None."""
    for name in _WAITED:
        if word == name or word.startswith(name) and word[len(name):] in ("s", "l", "w"):
            return "fn" + word[1:]
    return None


def is_x87(word: str) -> bool:
    if word in _MEMORY or word in _REGISTER:
        return True
    inner = _unwaited(word)
    return inner is not None and (inner in _MEMORY or inner in _REGISTER)


def encode(word: str, operands: Sequence[Operand], prefixes: dict[str, int], ctx: Context,
           col: int) -> Encoded:
    """Encode an x87 instruction (``word`` is a lower-case AT&T mnemonic)."""
    wait = False
    inner = _unwaited(word)
    if inner is not None and word not in _MEMORY and word not in _REGISTER:
        word, wait = inner, True
    if "lock" in prefixes:
        raise StatementError("expecting lockable instruction after 'lock'", col)
    if "rep" in prefixes:
        raise StatementError(f"invalid instruction '{word}' after 'rep'", col)
    if len(operands) == 1 and isinstance(operands[0], MemOperand):
        return _memory(word, operands[0], prefixes, ctx, col, wait)
    if not all(isinstance(op, RegOperand) for op in operands):
        raise StatementError(f"operand type mismatch for '{word}'", col)
    return _registers(word, list(operands), prefixes, ctx, col, wait)  # type: ignore[arg-type]


def _memory(word: str, mem: MemOperand, prefixes: dict[str, int], ctx: Context, col: int,
            wait: bool) -> Encoded:
    if mem.indirect:
        raise StatementError("indirection ('*') not allowed", mem.col)
    choices = _MEMORY.get(word)
    if not choices:
        raise StatementError(f"operand type mismatch for '{word}'", col)
    # Without a suffix GNU as takes the "s" format: the smallest of the forms.
    choice = min(choices, key=lambda c: _SIZE.get(c.form.operands[0][1:], 0)) \
        if choices[0].default else choices[0]
    form = choice.form
    opsize = choice.opsize or ctx.code_bits
    encoded = memory_form_bytes(bytes(form.opcode), form.group or 0, mem, opsize, prefixes,
                                ctx, wait)
    if choice.default:
        return Encoded(encoded.data, encoded.fixups, (
            ("no instruction mnemonic suffix given and no register operands; "
             f"using default for '{word}'", col),))
    return encoded


def _registers(word: str, ops: list[RegOperand], prefixes: dict[str, int], ctx: Context,
               col: int, wait: bool) -> Encoded:
    warning: tuple[tuple[str, int], ...] = ()
    if not ops and word in _ARITHMETIC and not word.endswith("p"):
        word += "p"  # fadd alone: GNU as translates to faddp %st,%st(1)
        warning = ((f"translating to '{word}'", col),)
    forms = _REGISTER.get(word)
    if not forms:
        raise StatementError(f"operand type mismatch for '{word}'", col)
    for op in ops:
        if op.reg.kind != "st" and not (op.reg.name == "ax" and word == "fnstsw"):
            raise StatementError(f"operand type mismatch for '{word}'", op.col)
    numbers = [op.reg.number if op.reg.kind == "st" else -1 for op in ops][::-1]  # Intel order
    for form in forms:
        specs = form.operands
        wanted = [_register_number(spec) for spec in specs]
        if _matches(wanted, numbers, word):
            return plain_bytes(bytes(form.opcode), prefixes, wait) if not warning else \
                Encoded(plain_bytes(bytes(form.opcode), prefixes, wait).data, (), warning)
    raise StatementError(f"operand type mismatch for '{word}'", col)


def _register_number(spec: str) -> int:
    if spec == "ST":
        return 0
    if spec.startswith("ST("):
        return int(spec[3:-1])
    if spec == "AX":
        return -1
    return -2


def _matches(wanted: list[int], given: list[int], word: str) -> bool:
    """Whether operands (Intel order) select a form with these registers; a missing
    operand is %st (two-operand forms) and no operands at all mean %st(1)."""
    if len(wanted) == 2 and len(given) < 2:
        other = given[0] if given else 1
        given = [0, other] if wanted[0] == 0 else [other, 0]
    elif len(given) == 2 and word not in _ARITHMETIC:
        return False  # fcom %st(1),%st: GNU as wants the one-operand spelling
    if wanted == [-1] and not given:
        return True  # fnstsw: %ax implied
    return given == wanted
