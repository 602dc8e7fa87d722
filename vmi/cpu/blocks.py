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
as a single instruction, as today. A block never extends past the page it
starts on (no lookahead translates or marks a page the code has not reached:
an instruction may start at most 15 bytes before the page's end), and it holds
``MAX_LENGTH`` instructions at most.

**Exactness.** The fused function keeps the state exact at every point where
it can be observed:

* EIP: set to the next instruction before the last body (which may overwrite
  it), as the run loop does; the bodies before it never read it;
* cycles: written (the block's starting count plus the cycles of the
  instructions before) before every instruction that reads or writes memory, so
  a device window (the local APIC's timer) sees the clock a one-by-one run
  would show it;
* faults, traps and batch ends: the function keeps the index of the running
  instruction in a local and, when anything propagates out of it, stores that
  index in ``cpu.block_index``; the run loop then settles EIP, cycles and the
  retired count as if the instructions before it had retired one by one (see
  ``CPU._block_exception``);
* writes to code: every instruction that stores is followed by a check of
  ``cpu.code_generation``, which ``CPU.forget_code`` bumps when a store hits a
  page holding decoded code. When it changed, the block sets EIP to the next
  instruction and returns the number of instructions it retired, so the stale
  rest never runs and the next instruction is decoded from the new bytes.

The run loop enters a block only when all of it fits: the instructions left
to the batch (``max_steps``) and the cycle limit (every instruction but the
last must leave the count below it; the last may bring it there, as a single
instruction may). Otherwise, and whenever TF is set or one instruction is asked
for (the debugger, the race explorer, the interrupt shadow's single step), the
per-instruction closures run as before.

**Caching.** A block's source is the concatenation of its instructions'
template sources with every parameter and local renamed apart (``a`` of the
third instruction becomes ``a_2``), and its constants are theirs; it is compiled
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
    """What the block compiler needs to know about one instruction's maker source."""

    params: tuple[str, ...]  # the maker's parameters (the instruction's constants)
    lines: tuple[str, ...]  # the body, dedented, every local and parameter ending in "_{k}"
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
    if not header.startswith("def _make(") or lines[1] != "    def execute(cpu):":
        return None
    inner = header[len("def _make("):header.rindex(")")]
    params = tuple(p.strip() for p in inner.split(",") if p.strip())
    end = lines.index("    return execute")
    body = "\n".join(line[8:] for line in lines[2:end]) + "\n"
    code = execute.__code__
    if code.co_cellvars:
        return None  # a nested function in the body: keep it whole
    rename = (set(code.co_varnames) | set(params)) - {"cpu"}
    attrs: set[str] = set()
    uses_return = False
    edits: list[tuple[int, int, int, str]] = []
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(body).readline)
                  if t.type not in _LAYOUT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    for i, token in enumerate(tokens):
        text = token.string
        prefix = text[:len(text) - len(text.lstrip("bBfFrRuU"))]
        if token.type == tokenize.STRING and "f" in prefix.lower():
            return None  # a name inside an f-string would escape the renaming
        if token.type == _FSTRING_START:
            return None
        if token.type != tokenize.NAME:
            continue
        after_dot = i > 0 and tokens[i - 1].string == "."
        if after_dot:
            if tokens[i - 2].string == "cpu" and (i < 3 or tokens[i - 3].string != "."):
                attrs.add(text)
        elif text == "return":
            uses_return = True
        elif text == "cpu":
            if i + 1 >= len(tokens) or tokens[i + 1].string != ".":
                attrs.add("<cpu handed on>")  # a helper given the processor: not fused
        elif text in rename:
            edits.append((token.start[0], token.start[1], token.end[1], text))
    body_lines = body.rstrip("\n").split("\n")
    for row, start, stop, name in sorted(edits, reverse=True):
        line = body_lines[row - 1]
        body_lines[row - 1] = f"{line[:start]}{name}_\0{line[stop:]}"
    inside = attrs <= INSIDE and not uses_return
    last = attrs <= LAST
    return Shape(params, tuple(body_lines), inside, last,
                 bool(attrs & MEMORY), bool(attrs & STORES))


#: Marks, in a composed body, where a block returns early (the registers kept in
#: locals are written back there).
_EXIT = "\x01exit"
_ALIAS = re.compile(r"^(\s*)(\w+) = cpu\.r$")


def block_source(shapes: list[Shape], values: dict[str, Any] | None = None,
                 clock: bool = True) -> str:
    """The maker source of a block of ``shapes``: parameters are every instruction's
    constants (renamed with the instruction's index) and then, per instruction,
    ``_next_k`` (the EIP after it) and ``_pre_k`` (cycles of the instructions before it).

    With ``values`` (each parameter's value), the general registers the block
    names by a constant index and the lazy flags are kept in locals (``R0``..``R7``,
    ``LF``): loaded on entry, written back at the end, before the early return
    after a store to code and when anything propagates out (see ``localise``).
    Blocks whose bodies reach the registers in any other way stay as they are.
    With ``clock`` false (no device window can read the clock), the cycle count
    is not written before memory accesses. The memory accessors are read once,
    into locals (only an instruction that ends a block can change them)."""
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
        body += [pad + line.replace("\0", str(k)) for line in shape.lines]
        if shape.stores and k != last:
            body += [f"{pad}if cpu.code_generation != g:",
                     f"{pad}    cpu.eip = _next_{k}",
                     f"{pad}    {_EXIT}",
                     f"{pad}    return {k + 1}"]
    local = localise(body, values) if values is not None else None
    loads: list[str] = []
    stores: list[str] = []
    if local is not None:
        body, read, written, flags = local
        loads = [f"R{i} = r[{i}]" for i in sorted(read | written)]
        stores = [f"r[{i}] = R{i}" for i in sorted(written)]
        if loads:
            loads.insert(0, "r = cpu.r")
            if stores:
                stores.insert(0, "r = cpu.r")
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


def localise(body: list[str], values: dict[str, Any],
             ) -> tuple[list[str], set[int], set[int], bool] | None:
    """``body`` with every ``r[i]`` (``r`` an alias of ``cpu.r``, ``i`` a constant
    register number or a parameter holding one) and ``cpu.r[i]`` read and written as
    the local ``Ri``, and ``cpu.lf`` as ``LF``; with the registers read and written
    and whether the flags were touched. None when a body uses ``cpu.r`` or an
    alias of it in any other way (an index computed at run time, the list handed
    on) or returns early: such a block keeps the registers in ``cpu.r``."""
    aliases: set[str] = set()
    lines = list(body)
    for n, line in enumerate(lines):
        match = _ALIAS.match(line)
        if match:
            aliases.add(match.group(2))
            lines[n] = f"{match.group(1)}pass"
    text = "\n".join(lines) + "\n"
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in _LAYOUT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    edits: list[tuple[int, int, int, str]] = []
    read: set[int] = set()
    written: set[int] = set()
    flags = False

    def index(token: tokenize.TokenInfo) -> int | None:
        if token.type == tokenize.NUMBER:
            try:
                value: Any = int(token.string, 0)
            except ValueError:
                return None
        elif token.type == tokenize.NAME and token.string in values:
            value = values[token.string]
        else:
            return None
        return value if type(value) is int and 0 <= value < 8 else None

    tokens += [tokenize.TokenInfo(tokenize.ENDMARKER, "", (0, 0), (0, 0), "")] * 6
    i = 0
    while i < len(tokens):
        token = tokens[i]
        after_dot = i > 0 and tokens[i - 1].string == "."
        if token.type != tokenize.NAME or after_dot:
            i += 1
            continue
        name = token.string
        if name == "return" and not tokens[i + 1].string.isdigit():
            return None  # a body's own return would skip the write-back
        if name == "cpu" and tokens[i + 2].string in ("r", "lf") and tokens[i + 1].string == ".":
            if tokens[i + 2].string == "lf":
                edits.append((token.start[0], token.start[1], tokens[i + 2].end[1], "LF"))
                flags = True
                i += 3
                continue
            subscript = tokens[i + 3:i + 6]
        elif name in aliases:
            subscript = tokens[i + 1:i + 4]
        else:
            i += 1
            continue
        if len(subscript) < 3 or subscript[0].string != "[" or subscript[2].string != "]":
            return None
        register = index(subscript[1])
        if register is None or subscript[2].start[0] != token.start[0]:
            return None
        edits.append((token.start[0], token.start[1], subscript[2].end[1], f"R{register}"))
        following = tokens[i + (6 if name == "cpu" else 4)]
        if following.type == tokenize.OP and following.string.endswith("=") \
                and following.string not in ("==", "<=", ">=", "!="):
            written.add(register)
        else:
            read.add(register)
        i += 6 if name == "cpu" else 4
    out = text.rstrip("\n").split("\n")
    for row, start, stop, replacement in sorted(edits, reverse=True):
        line = out[row - 1]
        out[row - 1] = line[:start] + replacement + line[stop:]
    return out, read, written, flags


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
