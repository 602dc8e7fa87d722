"""Basic blocks: a run of straight-line instructions executed by one generated function.

The run loop (``CPU._run_fast``) pays about a third of an instruction's time in
dispatch: a cache lookup, a tuple unpack, a closure call and the cycle
bookkeeping, once per instruction. A *block* fuses the bodies of several
consecutive instructions (their templates' source, see ``vmi.cpu.codegen``) into
one function, so that cost is paid once per block.

**What may be in a block.** An instruction joins only if its closure was made
from a template (it has a ``source``) and its body touches the processor only
through the register list, the lazy flags, the flags word and the memory
accessors (``cpu.r``, ``cpu.lf``, ``cpu.flags``, ``cpu.rd8``..``cpu.wr32``): so
nothing it does reads or writes the cycle count, EIP, the code context, ports,
model-specific registers or the platform, and nothing inside it can observe that
the bookkeeping of the instructions before it is deferred. Such an instruction
has no ``return`` (it would leave the block) and touches no ``rep_*`` field (the
bulk string forms depend on being first in a batch). The last instruction may
also write ``cpu.eip`` and ``return``: it is the branch (jmp, jcc, call, ret,
loop) that ends the block. Anything else ends the block *before* it and runs
as a single instruction, as before. A block never extends past the page it
starts on (no lookahead translates or marks a page the code has not reached:
an instruction may start at most 15 bytes before the page's end), and it holds
``MAX_LENGTH`` instructions at most.

**Exactness.** The fused function keeps the state exact at every point where
it can be observed:

* EIP: set to the next instruction before the last body (which may overwrite
  it), as the run loop does; the bodies before it never read it;
* registers: the general registers a block names by constant indices and the
  lazy-flags record live in locals (``R0``..``R7``, ``LF``; ``Shape.local``),
  loaded on entry and written back at the end, at the early return below and
  when anything propagates out, so every fault and every caller sees them as a
  one-by-one run leaves them (a block with a body that reaches ``cpu.r`` any
  other way keeps its registers in ``cpu.r``);
* cycles: when memory has device windows, written (the block's starting count
  plus the cycles of the instructions before) before every instruction that
  reads or writes memory, so a device (the local APIC's timer) sees the clock a
  one-by-one run would show it;
* faults, traps and batch ends: the function keeps the index of the running
  instruction in a local and, when anything propagates out of it, stores that
  index in ``cpu.block_index``; the run loop then settles EIP, cycles and the
  retired count as if the instructions before it had retired one by one (see
  ``CPU._run_blocks`` and ``CPU._settle``);
* writes to code: every instruction that stores is followed by a check of
  ``cpu.code_generation``, which ``CPU.forget_code`` bumps when a store hits a
  page holding decoded code. When it changed, the block sets EIP to the next
  instruction and returns the number of instructions it retired, so the stale
  rest never runs and the next instruction is decoded from the new bytes.

A block is built at an EIP the ``HOT``-th time the run loop reaches it, so code
run only a few times (most of a boot) does not pay for building one. The run
loop enters a block only when all of it fits: the instructions left
to the batch (``max_steps``) and the cycle limit (every instruction but the
last must leave the count below it; the last may bring it there, as a single
instruction may). Otherwise, and whenever TF is set or one instruction is asked
for (the debugger, the race explorer, the interrupt shadow's single step), the
per-instruction closures run as before.

**Caching.** A block's source is the concatenation of its instructions'
template sources with every parameter and local renamed apart (``a`` of the
third instruction becomes ``a_2``) and its register numbers written in
(``R3``), and its constants are theirs; it is compiled
through ``codegen.maker``, so its code object is kept by the persistent
translation cache like any shape, and the instructions themselves come from
their cached recipes. ``BLOCKS`` shares built blocks across the CPUs of a
process, keyed by the instruction closures they were made from.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
from collections.abc import Callable
from typing import Any

from attrs import frozen

from vmi.cpu.codegen import maker

#: Whether blocks keep general registers and lazy flags in locals (``localise``).
LOCALS = True
#: A block is built at an EIP reached this many times (see ``CPU._run_blocks``).
HOT = 64
#: At most this many instructions in one block.
MAX_LENGTH = 32
#: ``VMI_BLOCKS=0`` (or off/no/false) turns fusion off for new CPUs; each CPU's
#: ``fuse`` attribute switches it for that CPU.
ENV = "VMI_BLOCKS"
#: The attributes of ``cpu`` a body inside a block may use.
INSIDE = frozenset({"r", "lf", "flags", "rd8", "rd16", "rd32", "wr8", "wr16", "wr32"})
#: ... and the last one of a block, besides.
LAST = INSIDE | {"eip"}
#: Accessors that read or write memory (the cycle count is written before them).
MEMORY = frozenset({"rd8", "rd16", "rd32", "wr8", "wr16", "wr32"})
STORES = frozenset({"wr8", "wr16", "wr32"})


def enabled_by_default() -> bool:
    """Whether a new CPU fuses blocks (``VMI_BLOCKS`` unset or not off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "no", "false")


@frozen
class Shape:
    """What the block compiler needs to know about one instruction's maker source.

    ``lines`` is the body with every local and parameter renamed apart (``a``
    becomes ``a_\\0``; ``\\0`` stands for the instruction's index in the block).
    ``local`` is the same body with the registers in locals: ``r[i]`` and
    ``cpu.r[i]`` read and written as ``Ri`` (an index that is a parameter left as
    ``\\x02name\\x03``, resolved when the block is built from the parameter's
    value) and ``cpu.lf`` as ``LF``; None when the body reaches the registers in
    any other way or returns early."""

    params: tuple[str, ...]  # the maker's parameters (the instruction's constants)
    lines: tuple[str, ...]
    local: tuple[str, ...] | None
    registers: tuple[tuple[str, bool], ...]  # (index or parameter, written?) in ``local``
    flags: bool  # ``local`` uses ``LF``
    inside: bool  # may stand before the last instruction of a block
    last: bool  # may end a block
    memory: bool  # reads or writes memory
    stores: bool  # writes memory


@frozen
class Block:
    """A compiled block and what the run loop needs to account for it."""

    execute: Callable[[Any], int | None]
    length: int
    #: Cycles of every instruction but the last (entered only while the count
    #: plus this is below the limit) and of all of them.
    before_last: int
    total: int
    starts: tuple[int, ...]  # the EIP of each instruction
    nexts: tuple[int, ...]  # the EIP after each
    cycles: tuple[int, ...]  # the cycles of each
    prefix: tuple[int, ...]  # cycles of the instructions before each (and of all, last)


_SHAPES: dict[str, Shape | None] = {}
_LAYOUT = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                     tokenize.DEDENT, tokenize.ENDMARKER})
_FSTRING_START = getattr(tokenize, "FSTRING_START", -1)  # Python 3.12 and later
_ASSIGN = frozenset({"=", "+=", "-=", "*=", "//=", "%=", "&=", "|=", "^=", "<<=", ">>=", "**="})
_DIGITS = frozenset("01234567")
_END = tokenize.TokenInfo(tokenize.ENDMARKER, "", (0, 0), (0, 0), "")
#: Blocks built in this process, keyed by the instruction closures they fuse.
BLOCKS: dict[tuple[Any, ...], Block] = {}
BLOCKS_LIMIT = 50_000


def shape_of(execute: Any) -> Shape | None:
    """The ``Shape`` of a compiled instruction, or None when it cannot be fused
    (no template source, or a body the renaming cannot handle safely)."""
    source = getattr(execute, "source", None)
    if source is None:
        return None
    if source in _SHAPES:
        return _SHAPES[source]
    shape = _analyse(source, execute)
    _SHAPES[source] = shape
    return shape


def _analyse(source: str, execute: Any) -> Shape | None:
    lines = source.split("\n")
    header = lines[0]
    if not header.startswith("def _make(") or len(lines) < 3 \
            or lines[1] != "    def execute(cpu):" or "    return execute" not in lines:
        return None
    inner = header[len("def _make("):header.rindex(")")]
    params = tuple(p.strip() for p in inner.split(",") if p.strip())
    end = lines.index("    return execute")
    body = [line[8:] for line in lines[2:end]]
    code = execute.__code__
    if code.co_cellvars:
        return None  # a nested function in the body: keep it whole
    rename = (set(code.co_varnames) | set(params)) - {"cpu"}
    aliases = {line.split(" = ")[0] for line in body if line.endswith(" = cpu.r")
               and line.split(" = ")[0].isidentifier()}
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO("\n".join(body) + "\n").readline)
                  if t.type not in _LAYOUT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    tokens += [_END] * 6
    attrs: set[str] = set()
    uses_return = False
    localisable = True
    flags = False
    renames: list[tuple[int, int, int, str]] = []  # (row, start, stop, text)
    local: list[tuple[int, int, int, str]] = []
    registers: list[tuple[str, bool]] = []
    i = 0
    while i < len(tokens) and tokens[i] is not _END:
        token = tokens[i]
        text = token.string
        step = 1
        if token.type == tokenize.STRING:
            prefix = text[:len(text) - len(text.lstrip("bBfFrRuU"))]
            if "f" in prefix.lower():
                return None  # a name inside an f-string would escape the renaming
        elif token.type == _FSTRING_START:
            return None
        elif token.type == tokenize.NAME and tokens[i - 1].string != "." if i else \
                token.type == tokenize.NAME:
            row, start = token.start
            subscript = None
            if text == "return":
                uses_return = True
            elif text == "cpu":
                if tokens[i + 1].string != ".":
                    attrs.add("<cpu handed on>")  # a helper given the processor
                else:
                    attrs.add(tokens[i + 2].string)
                    if tokens[i + 2].string == "lf":
                        local.append((row, start, tokens[i + 2].end[1], "LF"))
                        flags = True
                        step = 3
                    elif tokens[i + 2].string == "r":
                        subscript = (tokens[i + 3:i + 6], i + 6)
            elif text in aliases:
                subscript = (tokens[i + 1:i + 4], i + 4)
            if subscript is not None:
                (opening, index, closing), after = subscript
                if opening.string != "[" or closing.string != "]" \
                        or closing.start[0] != row or not (
                            index.type == tokenize.NUMBER and index.string in _DIGITS
                            or index.string in params):
                    if not (text in aliases and tokens[i + 1].string == "="
                            and tokens[i + 2].string == "cpu"):
                        localisable = False  # the list itself: handed on, indexed at run time
                    else:  # ``r = cpu.r``: the alias goes
                        local.append((row, start, tokens[i + 4].end[1], "pass"))
                        renames.append((row, token.start[1], token.end[1], text))
                        step = 5
                else:
                    written = tokens[after].string in _ASSIGN
                    name = index.string if index.type == tokenize.NAME else index.string
                    local.append((row, start, closing.end[1],
                                  f"R{name}" if index.type == tokenize.NUMBER
                                  else f"\x02{name}\x03"))
                    registers.append((name, written))
                    if text in rename:
                        renames.append((row, start, token.end[1], text))
                    if index.type == tokenize.NAME and index.string in rename:
                        renames.append((row, index.start[1], index.end[1], index.string))
                    step = after - i
            if text in rename and step == 1:
                renames.append((row, start, token.end[1], text))
        i += step
    attrs.discard("")
    plain = _apply(body, [(row, a, b, f"{name}_\0") for row, a, b, name in renames])
    local_lines = None
    if localisable and not uses_return:
        spans = [(row, a, b) for row, a, b, _ in local]
        kept = [(row, a, b, f"{name}_\0") for row, a, b, name in renames
                if not any(r == row and s <= a and b <= e for r, s, e in spans)]
        local_lines = tuple(_apply(body, local + kept))
    inside = attrs <= INSIDE and not uses_return
    last = attrs <= LAST
    return Shape(params, tuple(plain), local_lines, tuple(registers), flags, inside, last,
                 bool(attrs & MEMORY), bool(attrs & STORES))


def _apply(body: list[str], edits: list[tuple[int, int, int, str]]) -> list[str]:
    """``body`` with each (row, start, stop, text) span replaced (spans do not overlap)."""
    out = list(body)
    for row, start, stop, text in sorted(edits, reverse=True):
        line = out[row - 1]
        out[row - 1] = line[:start] + text + line[stop:]
    return out


#: Marks, in a composed body, where a block returns early (the registers kept in
#: locals are written back there).
_EXIT = "\x01exit"
_PARAMETER = re.compile("\x02(\\w+)\x03")


def block_source(shapes: list[Shape], values: dict[str, Any] | None = None,
                 clock: bool = True) -> str:
    """The maker source of a block of ``shapes``: parameters are every instruction's
    constants (renamed with the instruction's index) and then, per instruction,
    ``_next_k`` (the EIP after it) and ``_pre_k`` (cycles of the instructions before it).

    With ``values`` (each parameter's value) and every shape localisable, the
    general registers and the lazy flags are kept in locals (``R0``..``R7``,
    ``LF``): loaded on entry, written back at the end, before the early return
    after a store to code and when anything propagates out. With ``clock`` false
    (no device window can read the clock) the cycle count is not written before
    memory accesses. The memory accessors are read once, into locals (only an
    instruction that ends a block can change them)."""
    registers: set[int] = set()
    written: set[int] = set()
    local = values is not None and all(s.local is not None for s in shapes)
    if local:
        for k, shape in enumerate(shapes):
            for name, _writes in shape.registers:
                value = int(name) if name.isdigit() else values.get(f"{name}_{k}")  # type: ignore[union-attr]
                if type(value) is not int or not 0 <= value < 8:
                    local = False
                    break
                registers.add(value)
                written.add(value)  # (every one: a write may hide in a tuple assignment)
    flags = local and any(s.flags for s in shapes)
    params: list[str] = []
    body: list[str] = []
    last = len(shapes) - 1
    pad = " " * 12
    for k, shape in enumerate(shapes):
        params += [f"{p}_{k}" for p in shape.params]
        params += [f"_next_{k}", f"_pre_{k}"]
        if k:
            body.append(f"{pad}k = {k}")
        if k == last:
            body.append(f"{pad}cpu.eip = _next_{k}")
        if shape.memory and k and clock:
            body.append(f"{pad}cpu.cycles = c0 + _pre_{k}")
        suffix = str(k)
        if local:
            for line in shape.local:  # type: ignore[union-attr]
                line = _PARAMETER.sub(lambda m, k=k: f"R{values[f'{m.group(1)}_{k}']}",  # type: ignore[index]
                                      line)
                body.append(pad + line.replace("\0", suffix))
        else:
            body += [pad + line.replace("\0", suffix) for line in shape.lines]
        if shape.stores and k != last:
            body += [f"{pad}if cpu.code_generation != g:",
                     f"{pad}    cpu.eip = _next_{k}",
                     f"{pad}    {_EXIT}",
                     f"{pad}    return {k + 1}"]
    loads: list[str] = []
    stores: list[str] = []
    if local:
        if registers:
            loads = ["r = cpu.r", *(f"R{i} = r[{i}]" for i in sorted(registers))]
        if written:
            stores = ["r = cpu.r", *(f"r[{i}] = R{i}" for i in sorted(written))]
        if flags:
            loads.append("LF = cpu.lf")
            stores.append("cpu.lf = LF")
    out = ["    def execute(cpu):", "        k = 0"]
    out += ["        " + line for line in loads]
    for accessor in sorted(MEMORY):
        if any(f"cpu.{accessor}(" in line for line in body):
            out.append(f"        _{accessor} = cpu.{accessor}")
            body = [line.replace(f"cpu.{accessor}(", f"_{accessor}(") for line in body]
    if clock and any(s.memory for s in shapes[1:]):
        out.append("        c0 = cpu.cycles")
    if any(s.stores for s in shapes[:last]):
        out.append("        g = cpu.code_generation")
    out.append("        try:")
    for line in body:
        if line.endswith(_EXIT):
            indent = line[:len(line) - len(_EXIT)]
            out += [indent + store for store in stores]
        else:
            out.append(line)
    out += [pad + store for store in stores]
    out += ["        except BaseException:",
            *("            " + store for store in stores),
            "            cpu.block_index = k",
            "            raise",
            "    return execute", ""]
    return f"def _make({', '.join(params)}):\n" + "\n".join(out)


def build(entries: list[tuple[Any, int, int]], starts: list[int], clock: bool = True,
          ) -> Block:
    """The block fusing ``entries`` (the icache's (execute, next EIP, cycles) of
    each instruction, in order, starting at ``starts``); ``clock``: whether a
    device window may read the cycle count during its memory accesses."""
    key = (*(entry[0] for entry in entries), *starts, clock)
    block = BLOCKS.get(key)
    if block is not None:
        return block
    shapes = [shape_of(entry[0]) for entry in entries]
    prefix = [0]
    for entry in entries:
        prefix.append(prefix[-1] + entry[2])
    constants: list[Any] = []
    for k, entry in enumerate(entries):
        constants += list(entry[0].constants)
        constants += [entry[1], prefix[k]]
    values: dict[str, Any] = {}
    for k, (entry, shape) in enumerate(zip(entries, shapes, strict=True)):
        values.update({f"{p}_{k}": v for p, v in zip(shape.params,  # type: ignore[union-attr]
                                                      entry[0].constants, strict=True)})
    source = block_source(shapes, values if LOCALS else None, clock)  # type: ignore[arg-type]
    execute = maker(source, filename="<vmi.cpu.blocks>")(*constants)
    execute.source = source
    execute.constants = tuple(constants)
    block = Block(execute, len(entries), prefix[-2], prefix[-1], tuple(starts),
                  tuple(entry[1] for entry in entries), tuple(entry[2] for entry in entries),
                  tuple(prefix))
    if len(BLOCKS) >= BLOCKS_LIMIT:
        BLOCKS.clear()
    BLOCKS[key] = block
    return block
