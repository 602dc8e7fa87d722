"""The assembler proper: statements -> sections of items -> layout -> flat image.

Reading follows GNU as: a stack of line sources (files, macro expansions,
``.rept`` bodies) feeds statements one at a time, so ``.if`` sees the symbols
defined so far and a macro expands where it is invoked. Each section is a
list of items: fixed-size chunks (data and instructions, with fixups),
relaxable branches, alignments and ``.org`` s. Labels point between items.

As in GNU as, a label's position is also recorded as (fragment, offset): a
fragment ends at every item whose size is not known while reading (a branch,
an alignment, an ``.org``), so the difference of two labels in one fragment
is a constant at once and can select a short encoding, while anything else
gets the long one.

After reading, branches are relaxed (all start short; any whose target is out
of rel8 range grows; repeat until nothing changes), sections are placed from
the base address, and every fixup is evaluated.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple, NoReturn

from attrs import define, field

from vmi.asm import arguments, encoder
from vmi.asm.encoder import Branch, Context, Encoded, Fixup, wrap32
from vmi.asm.errors import (
    MAX_ERRORS,
    AsmError,
    Diagnostic,
    Location,
    StatementError,
    TooManyErrors,
)
from vmi.asm.expr import (
    Binary,
    Deferred,
    Expr,
    Leaf,
    LeafFactory,
    Lin,
    Num,
    evaluate,
    parse_expression,
    wrap64,
)
from vmi.asm.lexer import is_name_start, scan_name, tokenize
from vmi.asm.operands import parse_operand, split_operands
from vmi.asm.program import (
    ANNOTATION_RECORD_SIZE,
    ANNOTATION_SECTION,
    Annotation,
    ListingLine,
    Program,
    Section,
)
from vmi.asm.source import (
    FileLines,
    Line,
    RefusedFile,
    clean_lines,
    read_regular_file,
    split_statements,
)

#: Limits that keep a hostile or mangled source from exhausting memory, time or
#: Python's stack. Each is reported as a located error that names it; docs/asm.md,
#: "Limits", lists them. (The expression nesting limit is ``expr.MAX_EXPR_DEPTH``.)
#: Bytes of output: all sections together, alignment and ``.org`` gaps included,
#: and the flat image from the base to the end of the last loaded section.
MAX_OUTPUT = 64 << 20
MAX_IMAGE = MAX_OUTPUT  # one section can be no larger than all of them
#: Files open at once through ``.include`` (the source itself counts as one).
MAX_INCLUDE_DEPTH = 32
#: Bytes of one ``.include`` d file.
MAX_INCLUDE_SIZE = 16 << 20
#: Macro expansions in progress at once (a macro invoking itself counts each level).
MAX_MACRO_DEPTH = 100
#: Copies of ``.rept``/``.irp``/``.irpc`` blocks in all. A block repeated inside a
#: repeated block counts its copies times the enclosing ones, and a block whose
#: product alone is over the limit is refused at once, before anything is copied.
MAX_REPETITIONS = 1_000_000
#: ``.rept``/``.irp``/``.irpc`` blocks being repeated at once, one inside another.
MAX_REPT_DEPTH = 32
#: Statements read from macro expansions and repeated blocks (the statements of
#: the files themselves are bounded by their size): a guard against expansion
#: trees, such as a macro invoking itself twice, that no single limit above stops.
MAX_EXPANDED_STATEMENTS = 1_000_000
MAX_RELAX_PASSES = 200
#: Distinct symbol-free instruction texts whose encodings are kept for reuse.
ENCODED_CACHE_SIZE = 65536

_LABEL = re.compile(r"\s*([A-Za-z_.][\w.$]*|\d+)\s*:(?![:])")
_ASSIGN = re.compile(r"\s*([A-Za-z_.][\w.$]*)\s*=(?!=)")
_WORD = re.compile(r"\s*([A-Za-z_.][\w.$]*)")
_PSEUDO = re.compile(r"\s*\{([a-z0-9]+)\}")
_PSEUDO_PREFIXES = frozenset({"disp8", "disp16", "disp32", "load", "store", "nooptimize"})

_CODE_SECTIONS = (".text", ".init", ".fini")
_ALLOC_SECTIONS = (".text", ".data", ".bss", ".rodata", ".init", ".fini", ".tbss", ".tdata")


# ---------------------------------------------------------------------------
# State


@define(eq=False)
class Symbol:
    """A symbol: ``kind`` is ``label``, ``equ`` or ``undefined`` (referenced only)."""

    name: str
    kind: str = "undefined"
    section: SectionState | None = None
    item_index: int = 0
    frag: int = 0
    frag_offset: int = 0
    expr: Expr | None = None
    const: int | None = None
    location: Location | None = None
    first_use: Location | None = None
    is_global: bool = False
    # The last value of ``expr`` and when it was computed (see Assembler._deferred).
    memo_key: tuple[str, int] | None = None
    memo_value: Lin | None = None

    @property
    def defined(self) -> bool:
        return self.kind != "undefined"


@define(eq=False)
class Chunk:
    """Fixed bytes and the fixups that complete them."""

    data: bytearray
    location: Location
    fixups: list[Fixup] = field(factory=list)
    nops: bool = False  # .nops: the patterns are chosen at output, like alignment

    @property
    def size(self) -> int:
        return len(self.data)


@define(eq=False)
class BranchItem:
    branch: Branch
    location: Location
    relaxable: bool = True
    long: bool = False

    @property
    def size(self) -> int:
        b = self.branch
        if self.long:
            return len(b.prefix) + len(b.long) + b.long_size
        return len(b.prefix) + len(b.short) + 1


@define(eq=False)
class AlignItem:
    alignment: int
    fill: int | None
    fill_size: int
    max_skip: int | None
    code_bits: int
    location: Location
    size: int = 0


@define(eq=False)
class OrgItem:
    target: Expr
    fill: int
    location: Location
    size: int = 0


Item = Chunk | BranchItem | AlignItem | OrgItem


@define(eq=False)
class SectionState:
    name: str
    index: int
    flags: str
    nobits: bool
    code: bool
    loaded: bool
    items: list[Item] = field(factory=list)
    frag: int = 0
    frag_offset: int = 0
    alignment: int = 1
    offsets: list[int] = field(factory=lambda: [0])
    address: int = 0

    def offset_of(self, index: int) -> int:
        return self.offsets[index] if index < len(self.offsets) else self.offsets[-1]


@define(eq=False)
class Macro:
    name: str
    params: list[tuple[str, str | None, bool, bool]]  # name, default, required, vararg
    body: list[Line]
    filename: str
    location: Location


@define(eq=False)
class Frame:
    """A source of lines: a file, a macro expansion or a repeated block."""

    kind: str
    filename: str
    lines: Sequence[Line]  # a FileLines for a file
    directory: Path
    pos: int = 0
    line: Line | None = None
    pending: deque[tuple[int, str]] = field(factory=deque)
    cond_depth: int = 0
    invocation: Location | None = None
    macro_name: str = ""
    listed: bool = True  # statements appear in the listing (not the prepended macro set)
    copies: int = 1  # product of the repeat counts of this block and the enclosing ones


@define
class Cond:
    active: bool
    taken: bool  # some branch of this .if has been taken
    parent_active: bool
    location: Location
    in_else: bool = False


class _Run(NamedTuple):
    """Listing entry of consecutive lines known to be one instruction each
    (``Assembler._fast_lines``), all in one chunk from byte ``delta`` of item
    ``index``: lines ``start`` to ``end`` (0-based, end excluded) of ``cleans``,
    whose bytes and text ``known`` (the ``fast_lines`` of then) holds. One
    entry for many lines: the listing of a large source is made from these."""

    section: SectionState
    index: int
    delta: int
    filename: str
    start: int
    end: int
    cleans: list[str]
    known: dict[str, _FastLine]
    depth: int


#: One listed statement: (section, first item, end item, text, file name, line,
#: macro depth), or a ``_Run`` of lines.
ListingEntry = tuple[SectionState, int, int, str, str, int, int] | _Run


# ---------------------------------------------------------------------------
# The assembler


class Assembler(LeafFactory):
    """Assemble one source (with an optional macro set prepended) into a ``Program``."""

    def __init__(self, base: int = 0, max_errors: int = MAX_ERRORS) -> None:
        self.base = base
        self.max_errors = max_errors
        self.diagnostics: list[Diagnostic] = []
        self.error_count = 0
        self.symbols: dict[str, Symbol] = {}
        self.locals_current: dict[str, Symbol] = {}
        self.locals_forward: dict[str, Symbol] = {}
        self.sections: list[SectionState] = []
        self.by_name: dict[str, SectionState] = {}
        self.current = self._section(".text", "")
        self.previous: SectionState | None = None
        self.section_stack: list[tuple[SectionState, SectionState | None]] = []
        self.code_bits = 32
        self.macros: dict[str, Macro] = {}
        self.macro_count = 0
        self.conds: list[Cond] = []
        self.frames: list[Frame] = []
        self.listing: list[ListingEntry] = []
        self.statements = 0  # read from macro expansions and repeated blocks
        self.repetitions = 0  # copies of .rept/.irp/.irpc blocks made so far
        self.output_size = 0  # bytes emitted so far (sizes known while reading)
        self.ended = False
        # Per statement:
        self.location = Location("<none>", 0, 1)
        self.statement_col = 0
        self.anchor: Symbol | None = None
        self.dot_delta = 0
        self.known_cache: dict[int, tuple[Expr, int | None]] = {}
        # Bumped when a symbol that was referenced gets defined (parse-time values
        # may change) and at each layout pass (section offsets change): the keys
        # of the values remembered in Symbol.memo_value.
        self.generation = 0
        self.layout_generation = 0
        # Encodings of instructions without symbols, by text, mode and pseudo-prefixes.
        self.encoded: dict[tuple[str, int, frozenset[str]], Encoded] = {}
        # Whole source lines that are one such instruction (no label, no warning):
        # read again, they skip parsing. Cleared when a macro is defined or purged
        # (a macro may take the instruction's name).
        self.fast_lines: dict[str, _FastLine] = {}
        self.whole_line = False  # the current statement is all of a source line
        # The chunk _fast_line may append to, and (its section, places) when it was
        # made: a label placed since (``places`` counts them) must see a new item.
        self.open_chunk: Chunk | None = None
        self.open_marks: tuple[SectionState, int] | None = None
        self.places = 0

    # -- diagnostics ---------------------------------------------------------

    def error(self, message: str, location: Location, notes: tuple[Diagnostic, ...] = ()) -> None:
        self.diagnostics.append(Diagnostic("error", message, location, notes))
        self.error_count += 1
        if self.error_count >= self.max_errors:
            raise TooManyErrors

    def warning(self, message: str, location: Location) -> None:
        self.diagnostics.append(Diagnostic("warning", message, location, self._notes()))

    def _notes(self) -> tuple[Diagnostic, ...]:
        """'In expansion of macro' notes for the current statement."""
        notes = []
        for frame in reversed(self.frames):
            if frame.kind == "macro" and frame.invocation is not None:
                notes.append(Diagnostic(
                    "note", f"in expansion of macro '{frame.macro_name}'", frame.invocation))
        return tuple(notes)

    def _limit(self, message: str, column: int | None) -> NoReturn:
        """Report that a limit was reached at ``column`` of the current statement,
        and stop: going on would only repeat the error (every copy of a repeated
        block hits it again) or do the work the limit is there to prevent."""
        self.error(message, self._at(column), self._notes())
        raise TooManyErrors

    def _at(self, column: int | None) -> Location:
        """The current statement's location at a 0-based statement column."""
        if column is None:
            return self.location
        return self.location.at_column(self.statement_col + column + 1)

    # -- entry point -----------------------------------------------------------

    def assemble(self, sources: list[tuple[str, str, Path]], listed_from: int = 0) -> Program:
        """Assemble ``(text, filename, directory)`` sources in order, as one stream.

        Statements of the sources before index ``listed_from`` (a prepended
        macro set) are left out of the listing.
        """
        try:
            for index in range(len(sources) - 1, -1, -1):
                text, filename, directory = sources[index]
                self._push_file(text, filename, directory, None)
                self.frames[-1].listed = index >= listed_from
            self._run()
            self._finish_reading()
            if self.error_count == 0:
                return self._link()
        except TooManyErrors:
            pass
        raise AsmError(self.diagnostics)

    # -- reading ---------------------------------------------------------------

    def _push_file(self, text: str, filename: str, directory: Path,
                   where: Location | None) -> None:
        lines, problems = clean_lines(text)
        for number, col, message in problems:
            original = lines[number - 1].text if number - 1 < len(lines) else ""
            self.error(message, Location(filename, number, col, original))
        self.frames.append(Frame("file", filename, lines, directory,
                                 cond_depth=len(self.conds), invocation=where))

    def _run(self) -> None:
        while self.frames and not self.ended:
            frame = self.frames[-1]
            if not frame.pending:
                if (isinstance(frame.lines, FileLines) and not self.current.nobits
                        and not (self.conds and not self.conds[-1].active)):
                    self._fast_lines(frame, frame.lines)
                if frame.pos >= len(frame.lines):
                    self._end_frame(frame)
                    continue
                line = frame.line = frame.lines[frame.pos]
                frame.pos += 1
                frame.pending = deque(split_statements(line.clean))
            col, text = frame.pending.popleft()
            self.whole_line = frame.kind == "file" and col == 0 and not frame.pending
            if frame.kind != "file":
                self.statements += 1
                if self.statements > MAX_EXPANDED_STATEMENTS:
                    self.error(f"more than {MAX_EXPANDED_STATEMENTS} statements from macro "
                               f"expansions and repeated blocks (the limit)",
                               self._frame_location(frame, col))
                    raise TooManyErrors
            self._statement(frame, col, text)

    def _fast_lines(self, frame: Frame, lines: FileLines) -> None:
        """Take the lines of a file from ``frame.pos`` on that are known to be one
        symbol-free instruction each (``fast_lines``), up to the first that is not:
        what ``_statement`` would do for them, without parsing them again (the
        caller checked that the section is not nobits and no ``.if`` skips).

        A line's bytes are appended to the chunk of the line before when nothing
        (no label, no other item) came between and it has no fixups, so a run of
        such lines is one item to lay out, and one listing entry (a ``_Run``).
        """
        known = self.fast_lines
        cleans, get, bits = lines.cleans, known.get, self.code_bits
        section, items, listing = self.current, self.current.items, self.listing
        filename = frame.filename
        depth = sum(1 for f in self.frames if f.kind == "macro" and f.listed) \
            if len(self.frames) > 1 else 0
        listed = frame.listed
        pos, end = frame.pos, len(cleans)
        run_start, run_index, run_delta = pos, -1, 0
        while pos < end:
            fast = get(cleans[pos])
            if fast is None or fast[3] != bits:
                break
            data, fixups, text, _bits = fast
            chunk = self.open_chunk
            if (chunk is not None and not fixups and items and items[-1] is chunk
                    and self.open_marks == (section, self.places)):
                if run_index < 0:
                    run_start, run_index, run_delta = pos, len(items) - 1, len(chunk.data)
                chunk.data += data
                section.frag_offset += len(data)
                self.output_size += len(data)
                if self.output_size > MAX_OUTPUT:
                    frame.pos = pos + 1
                    self.location = Location(filename, pos + 1, 1, lines.texts[pos])
                    self._limit(f"output larger than {MAX_OUTPUT >> 20} MiB (the limit)", None)
            else:
                if listed and run_index >= 0:
                    listing.append(_Run(section, run_index, run_delta, filename, run_start,
                                        pos, cleans, known, depth))
                self.location = Location(filename, pos + 1, 1, lines.texts[pos])
                run_start, run_index, run_delta = pos, len(items), 0
                chunk = Chunk(bytearray(data), self.location, list(fixups))
                self._emit(chunk)
                self.open_chunk, self.open_marks = chunk, (section, self.places)
            pos += 1
        if listed and run_index >= 0:
            listing.append(_Run(section, run_index, run_delta, filename, run_start, pos, cleans,
                                known, depth))
        frame.pos = pos

    def _frame_location(self, frame: Frame, col: int) -> Location:
        line = frame.line
        assert line is not None
        return Location(frame.filename, line.number, col + 1, line.text)

    def _end_frame(self, frame: Frame) -> None:
        self.frames.pop()
        if frame.kind == "file" and len(self.conds) > frame.cond_depth:
            for cond in self.conds[frame.cond_depth:]:
                self.error("end of file inside conditional (missing .endif)", cond.location)
            del self.conds[frame.cond_depth:]

    def _finish_reading(self) -> None:
        for digits, symbol in self.locals_forward.items():
            where = symbol.first_use or self.location
            self.error(f"undefined local label '{digits}f'", where)
        # A flat image has no linker after it: every symbol used must be defined.
        for name, symbol in self.symbols.items():
            if not symbol.defined and symbol.first_use is not None:
                self.error(f"undefined symbol '{name}'", symbol.first_use)

    # -- one statement -----------------------------------------------------------

    def _statement(self, frame: Frame, col: int, text: str) -> None:
        self.location = self._frame_location(frame, col)
        self.statement_col = col
        self.anchor = None
        self.dot_delta = 0
        self.known_cache = {}
        if self.conds and not self.conds[-1].active:
            self._skipped_statement(text)
            return
        section, start = self.current, len(self.current.items)
        depth = sum(1 for f in self.frames if f.kind == "macro" and f.listed)
        try:
            self._do_statement(frame, text)
        except StatementError as problem:
            self.error(problem.message, self._at(problem.column), self._notes())
        if text.strip() and frame.line is not None and frame.listed:
            end = len(section.items) if self.current is section else start
            self.listing.append((section, start, end, text.strip(), self.location.filename,
                                 self.location.line, depth))

    def _skipped_statement(self, text: str) -> None:
        match = _WORD.match(text)
        if not match:
            return
        word = match.group(1).lower()
        if word.startswith(".if") or word in (".else", ".elseif", ".endif"):
            try:
                self._conditional(word, text[match.end():], match.end())
            except StatementError as problem:
                self.error(problem.message, self._at(problem.column))

    def _do_statement(self, frame: Frame, text: str) -> None:
        pos = 0
        while True:
            match = _LABEL.match(text, pos)
            if not match:
                break
            self._define_label(match.group(1), match.start(1))
            pos = match.end()
        rest = text[pos:]
        if not rest.strip():
            return
        match = _ASSIGN.match(text, pos)
        if match:
            self._assign(match.group(1), text[match.end():], match.end(), "=", match.start(1))
            return
        pseudo: set[str] = set()
        while True:
            match = _PSEUDO.match(text, pos)
            if not match:
                break
            if match.group(1) not in _PSEUDO_PREFIXES:
                raise StatementError(f"unknown pseudo-prefix '{{{match.group(1)}}}'",
                                     match.start(1) - 1)
            pseudo.add("{" + match.group(1) + "}")
            pos = match.end()
        match = _WORD.match(text, pos)
        if not match:
            stripped = len(text[pos:]) - len(text[pos:].lstrip())
            raise StatementError("expected an instruction or directive", pos + stripped)
        word, word_col = match.group(1), match.start(1)
        lower = word.lower()
        after = match.end()
        if not pseudo:
            if lower.startswith(".") and lower in _DIRECTIVES:
                _DIRECTIVES[lower](self, text[after:], after, word_col, lower)
                return
            if lower in self.macros:
                self._invoke(self.macros[lower], text[after:], after, word_col)
                return
            if lower.startswith("."):
                raise StatementError(f"unknown directive '{word}'", word_col)
        self._instruction(text, pos, frozenset(pseudo))

    # -- symbols ----------------------------------------------------------------

    def symbol(self, name: str, col: int) -> Expr:
        symbol = self.symbols.get(name)
        if symbol is None:
            symbol = Symbol(name)
            self.symbols[name] = symbol
        if not symbol.defined and symbol.first_use is None:
            symbol.first_use = self._at(col)
        return Leaf(symbol, col)

    def local(self, digits: str, direction: str, col: int) -> Expr:
        if direction == "b":
            symbol = self.locals_current.get(digits)
            if symbol is None:
                raise StatementError(f"backward reference to unknown label '{digits}:'", col)
            return Leaf(symbol, col)
        symbol = self.locals_forward.get(digits)
        if symbol is None:
            symbol = Symbol(f"{digits}f", first_use=self._at(col))
            self.locals_forward[digits] = symbol
        return Leaf(symbol, col)

    def dot(self, col: int) -> Expr:
        if self.anchor is None:
            self.anchor = Symbol(".")
            self._place(self.anchor)
        return Leaf(self.anchor, col, self.dot_delta)

    def _place(self, symbol: Symbol) -> None:
        section = self.current
        self.places += 1
        if symbol.kind == "undefined" and symbol.first_use is not None:
            self.generation += 1
        symbol.kind = "label"
        symbol.section = section
        symbol.item_index = len(section.items)
        symbol.frag = section.frag
        symbol.frag_offset = section.frag_offset
        symbol.location = self.location

    def _define_label(self, name: str, col: int) -> None:
        if name.isdigit():
            digits = str(int(name))
            local = self.locals_forward.pop(digits, None) or Symbol(name)
            self._place(local)
            self.locals_current[digits] = local
            return
        symbol = self.symbols.get(name)
        if symbol is not None and symbol.defined:
            first = symbol.location
            notes = (Diagnostic("note", "first defined here", first),) if first else ()
            self.error(f"symbol '{name}' is already defined", self._at(col), notes)
            return
        if symbol is None:
            symbol = Symbol(name)
            self.symbols[name] = symbol
        self._place(symbol)
        symbol.location = self._at(col)

    def _assign(self, name: str, text: str, col: int, how: str, name_col: int) -> None:
        expr = self._expression(text, col)
        symbol = self.symbols.get(name)
        if symbol is not None and symbol.defined:
            if how == ".equiv" or symbol.kind == "label":
                raise StatementError(f"symbol '{name}' is already defined", name_col)
            symbol = Symbol(name, is_global=symbol.is_global)
            self.symbols[name] = symbol
        elif symbol is None:
            symbol = Symbol(name)
            self.symbols[name] = symbol
        elif symbol.first_use is not None:
            self.generation += 1
        value = evaluate(expr, self._parse_value)
        symbol.kind = "equ"
        symbol.expr = expr
        symbol.const = value.const if value is not None and value.is_const else None
        symbol.location = self._at(name_col)

    # -- values -----------------------------------------------------------------

    def _parse_value(self, leaf: Leaf) -> Lin | Deferred | None:
        """A symbol's value while reading: labels relative to their fragment."""
        symbol = leaf.symbol
        assert isinstance(symbol, Symbol)
        if symbol.kind == "label":
            assert symbol.section is not None
            return Lin(symbol.frag_offset, (((symbol.section.index, symbol.frag), 1),))
        if symbol.kind == "equ":
            if symbol.const is not None:
                return Lin(symbol.const)
            return self._deferred(symbol, "parse", self.generation)
        return None

    def _deferred(self, symbol: Symbol, kind: str, generation: int) -> Lin | Deferred | None:
        """``symbol``'s defining expression for ``evaluate``, or its value if that was
        computed since ``generation`` began (each value of a chain ``a1 = a0 + 1``,
        ``a2 = a1 + 1``, ... is then computed once, keeping the work linear)."""
        key = (kind, generation)
        if symbol.memo_key == key:
            return symbol.memo_value
        assert symbol.expr is not None

        def remember(value: Lin | None) -> None:
            symbol.memo_key = key
            symbol.memo_value = value

        return Deferred(symbol.expr, symbol.name, symbol, remember)

    def known(self, expr: Expr) -> int | None:
        """The value of ``expr`` if it is a constant now (GNU as's parse-time fold)."""
        # Keyed by identity; the entry keeps ``expr`` alive so its id is not reused.
        cached = self.known_cache.get(id(expr))
        if cached is not None and cached[0] is expr:
            return cached[1]
        value = evaluate(expr, self._parse_value)
        result = value.const if value is not None and value.is_const else None
        self.known_cache[id(expr)] = (expr, result)
        return result

    def _expression(self, text: str, col: int) -> Expr:
        tokens = tokenize(text, col)
        expr, pos = parse_expression(tokens, 0, self)
        if tokens[pos].kind != "eof":
            raise StatementError(f"junk '{tokens[pos].value}' after expression", tokens[pos].col)
        return expr

    def _constant(self, text: str, col: int, what: str) -> int:
        expr = self._expression(text, col)
        value = self.known(expr)
        if value is None:
            raise StatementError(f"{what} must be a constant expression", col + _lead(text))
        return value

    def _expressions(self, text: str, col: int) -> list[Expr]:
        tokens = tokenize(text, col)
        if tokens[0].kind == "eof":
            return []
        out = []
        pos = 0
        while True:
            expr, pos = parse_expression(tokens, pos, self)
            out.append(expr)
            tok = tokens[pos]
            if tok.kind == "eof":
                return out
            if not (tok.kind == "op" and tok.value == ","):
                raise StatementError(f"junk '{tok.value}' after expression", tok.col)
            pos += 1

    # -- emitting ---------------------------------------------------------------

    def _emit(self, item: Item, fixed: bool = True) -> None:
        section = self.current
        if section.nobits and isinstance(item, Chunk | BranchItem):
            if not isinstance(item, Chunk) or any(item.data) or item.fixups:
                raise StatementError(f"cannot store data or code in the nobits section "
                                     f"'{section.name}'")
        section.items.append(item)
        if isinstance(item, Chunk | BranchItem):
            self.output_size += item.size
            if self.output_size > MAX_OUTPUT:
                self.error(f"output larger than {MAX_OUTPUT >> 20} MiB (the limit)",
                           self.location)
                raise TooManyErrors
        if fixed:
            section.frag_offset += item.size  # type: ignore[union-attr]
        else:
            section.frag += 1
            section.frag_offset = 0

    def _emit_bytes(self, data: bytes, fixups: tuple[Fixup, ...] = ()) -> None:
        self._emit(Chunk(bytearray(data), self.location, list(fixups)))

    # -- instructions ------------------------------------------------------------

    def _instruction(self, text: str, pos: int, pseudo: frozenset[str]) -> None:
        # The same instruction text without symbols always encodes the same way
        # (in the same .code16/.code32 mode): a source of ordinary lines repeats
        # a small number of them, and encoding is most of the work per line.
        key = (text[pos:], self.code_bits, pseudo)
        cached = self.encoded.get(key)
        if cached is not None:
            if self.current.nobits:
                raise StatementError(f"cannot store code in the nobits section "
                                     f"'{self.current.name}'", _lead(text[pos:]) + pos)
            for message, col in cached.warnings:
                self.warning(message, self._at(col))
            self._emit_bytes(cached.data, cached.fixups)
            self._remember_line(text, pos, pseudo, cached)
            return
        keywords: list[tuple[str, int]] = []
        while True:
            match = _WORD.match(text, pos)
            if not match:
                break
            word = match.group(1).lower()
            if word not in encoder.KEYWORD_PREFIXES:
                break
            keywords.append((word, match.start(1)))
            pos = match.end()
        match = _WORD.match(text, pos)
        if not match:
            if text[pos:].strip():
                raise StatementError("expected an instruction after the prefix",
                                     pos + _lead(text[pos:]))
            if pseudo:
                raise StatementError("pseudo-prefix without an instruction", _lead(text))
            for word, _col in keywords:
                self._emit_bytes(bytes([encoder.prefix_byte(word)]))
            return
        mnemonic, mnemonic_col = match.group(1).lower(), match.start(1)
        if not encoder.is_mnemonic(mnemonic):
            raise StatementError(f"unknown instruction '{match.group(1)}'", mnemonic_col)
        tokens = tokenize(text[match.end():], match.end())
        operands = [parse_operand(part, self) for part in split_operands(tokens)]
        constant = not any(tok.kind in ("sym", "local") for tok in tokens)
        ctx = Context(self.code_bits, self.known, pseudo)
        result = encoder.encode(mnemonic, operands, keywords, ctx, mnemonic_col)
        if self.current.nobits:
            raise StatementError(f"cannot store code in the nobits section "
                                 f"'{self.current.name}'", mnemonic_col)
        if isinstance(result, Branch):
            self._emit(BranchItem(result, self.location), fixed=False)
            return
        assert isinstance(result, Encoded)
        for message, col in result.warnings:
            self.warning(message, self._at(col))
        for fixup in result.fixups:
            value = self.known(fixup.expr) if fixup.kind != "rel" else None
            problem = None if value is None else _field_problem(fixup, value)
            if problem is not None:
                raise StatementError(problem, fixup.col)
        if constant and len(self.encoded) < ENCODED_CACHE_SIZE:
            result = _bake(result)
            self.encoded[key] = result
            self._remember_line(text, pos, pseudo, result)
        self._emit_bytes(result.data, result.fixups)

    def _remember_line(self, text: str, pos: int, pseudo: frozenset[str],
                       encoded: Encoded) -> None:
        if (self.whole_line and not pseudo and not encoded.warnings and not text[:pos].strip()
                and len(self.fast_lines) < ENCODED_CACHE_SIZE):
            self.fast_lines[text] = (encoded.data, encoded.fixups, text.strip(), self.code_bits)

    # -- macros -------------------------------------------------------------------

    def _invoke(self, macro: Macro, text: str, col: int, word_col: int) -> None:
        if sum(1 for f in self.frames if f.kind == "macro") >= MAX_MACRO_DEPTH:
            self._limit(f"macros nested too deeply (expanding '{macro.name}'): "
                        f"more than {MAX_MACRO_DEPTH} levels (the limit)", word_col)
        values = arguments.bind(macro.name, macro.params, text, col)
        self.macro_count += 1
        values["@"] = str(self.macro_count - 1)
        body = [Line(line.number, sub, sub) for line in macro.body
                for sub in [_substitute(line.clean, values)]]
        self.frames.append(Frame("macro", macro.filename, body, self.frames[-1].directory,
                                 cond_depth=len(self.conds), invocation=self._at(word_col),
                                 macro_name=macro.name, listed=self.frames[-1].listed,
                                 copies=self.frames[-1].copies))

    def _collect_block(self, frame: Frame, opener: str, openers: tuple[str, ...],
                       closers: tuple[str, ...]) -> list[Line] | None:
        """Take lines up to the matching closer (``.endm``/``.endr``); None at end of input."""
        body: list[Line] = []
        depth = 0
        start = self.location
        # Statements after the opener on the same line form body lines of their own.
        pending = list(frame.pending)
        frame.pending.clear()
        lines = deque(Line(frame.line.number, text, text) for _col, text in pending
                      ) if frame.line else deque()
        while True:
            if lines:
                line = lines.popleft()
            elif frame.pos < len(frame.lines):
                line = frame.lines[frame.pos]
                frame.pos += 1
                frame.line = line
            else:
                self.error(f"missing {closers[0]} for {opener}", start)
                return None
            word = _first_word(line.clean)
            if word in openers:
                depth += 1
            elif word in closers:
                if depth == 0:
                    return body
                depth -= 1
            body.append(line)

    # -- layout and output ---------------------------------------------------------

    def _link(self) -> Program:
        order = ([s for s in self.sections if s.loaded and not s.nobits]
                 + [s for s in self.sections if s.loaded and s.nobits]
                 + [s for s in self.sections if not s.loaded])
        self._mark_relaxable()
        for _ in range(MAX_RELAX_PASSES):
            self._compute_offsets(order)
            if not self._grow_branches():
                break
        else:
            self.error("branch relaxation did not settle", self.location)
        contents = {s.index: self._section_bytes(s) for s in order if not s.nobits}
        if self.error_count:
            raise AsmError(self.diagnostics)
        image = bytearray()
        for section in order:
            if not section.loaded or section.nobits:
                continue
            start = section.address - self.base
            if len(image) < start:
                image += bytes(start - len(image))
            image[start:start + section.offsets[-1]] = contents[section.index]
        sections = tuple(Section(s.name, s.address, s.offsets[-1], s.alignment, s.loaded,
                                 s.nobits, s.code) for s in order)
        return Program(
            image=bytes(image), base=self.base, symbols=self._exported_symbols(),
            sections=sections, annotations=self._annotations(contents),
            listing=self._listing(contents),
            warnings=tuple(d for d in self.diagnostics if d.severity == "warning"),
            unloaded={s.name: bytes(contents[s.index]) for s in order
                      if not s.loaded and not s.nobits},
        )

    def _mark_relaxable(self) -> None:
        for section in self.sections:
            for item in section.items:
                if isinstance(item, BranchItem):
                    try:
                        value = evaluate(item.branch.target, self._section_value)
                    except StatementError:
                        value = None
                    item.relaxable = value is not None and value.terms == ((section.index, 1),)
                    item.long = not item.relaxable

    def _section_value(self, leaf: Leaf) -> Lin | Deferred | None:
        symbol = leaf.symbol
        assert isinstance(symbol, Symbol)
        if symbol.kind == "label":
            assert symbol.section is not None
            return Lin(symbol.section.offset_of(symbol.item_index),
                       ((symbol.section.index, 1),))
        if symbol.kind == "equ":
            return self._deferred(symbol, "section", self.layout_generation)
        return None

    def _compute_offsets(self, order: list[SectionState]) -> None:
        self.layout_generation += 1
        address = self.base
        total = extent = 0
        for section in order:
            offsets = section.offsets
            if len(offsets) != len(section.items) + 1:
                offsets[:] = [0] * (len(section.items) + 1)
            offset = 0
            for k, item in enumerate(section.items):
                offsets[k] = offset
                if isinstance(item, AlignItem):
                    pad = -offset % item.alignment
                    item.size = 0 if item.max_skip is not None and pad > item.max_skip else pad
                elif isinstance(item, OrgItem):
                    item.size = self._org_size(section, item, offset)
                offset += item.size
                if offset > MAX_IMAGE:
                    self.error(f"section '{section.name}' is larger than "
                               f"{MAX_IMAGE >> 20} MiB (the output limit)", item.location)
                    raise TooManyErrors
            offsets[-1] = offset
            address = -(-address // section.alignment) * section.alignment
            section.address = address
            address += offset
            total += offset
            if section.loaded and not section.nobits:
                extent = address - self.base
            if max(total, extent) > MAX_OUTPUT:
                where = section.items[-1].location if section.items else self.location
                self.error(f"output larger than {MAX_OUTPUT >> 20} MiB (the limit): "
                           f"sections and the gaps between them up to '{section.name}'",
                           where)
                raise TooManyErrors

    def _org_size(self, section: SectionState, item: OrgItem, offset: int) -> int:
        try:
            value = evaluate(item.target, self._section_value)
        except StatementError:
            value = None
        if value is None or not (value.is_const or value.terms == ((section.index, 1),)):
            return 0
        return max(0, value.const - offset)

    def _grow_branches(self) -> bool:
        changed = False
        for section in self.sections:
            for k, item in enumerate(section.items):
                if not isinstance(item, BranchItem) or item.long:
                    continue
                try:
                    target = self._final(item.branch.target)
                except StatementError:
                    item.long = True
                    changed = True
                    continue
                end = section.address + section.offsets[k] + item.size
                if not -128 <= target - end <= 127:
                    item.long = True
                    changed = True
        return changed

    def _final_value(self, leaf: Leaf) -> Lin | Deferred | None:
        symbol = leaf.symbol
        assert isinstance(symbol, Symbol)
        if symbol.kind == "label":
            assert symbol.section is not None
            section = symbol.section
            return Lin(section.address + section.offset_of(symbol.item_index))
        if symbol.kind == "equ":
            if symbol.const is not None:
                return Lin(symbol.const)
            return self._deferred(symbol, "final", self.layout_generation)
        raise StatementError(f"undefined symbol '{symbol.name}'", leaf.col)

    def _final(self, expr: Expr) -> int:
        value = evaluate(expr, self._final_value)
        if value is None or not value.is_const:
            raise StatementError("expression is not a constant", None)
        return value.const

    def _section_bytes(self, section: SectionState) -> bytearray:
        out = bytearray(section.offsets[-1])
        reported: set[tuple[str, int]] = set()
        for k, item in enumerate(section.items):
            offset = section.offsets[k]
            address = section.address + offset
            if isinstance(item, Chunk):
                out[offset:offset + item.size] = (nop_padding(item.size, self.code_bits)
                                                  if item.nops else item.data)
                for fixup in item.fixups:
                    self._apply_fixup(out, offset, address, fixup, item.location, reported)
            elif isinstance(item, BranchItem):
                out[offset:offset + item.size] = self._branch_bytes(item, address)
            elif isinstance(item, AlignItem):
                # GNU as 2.40 picks the no-op patterns when it writes the output,
                # by the mode in effect at the end of the source, not at the .align.
                out[offset:offset + item.size] = _padding(item, section.code, self.code_bits)
            elif isinstance(item, OrgItem):
                self._check_org(section, item, offset)
                out[offset:offset + item.size] = bytes([item.fill]) * item.size
        return out

    def _locate(self, location: Location, col: int | None) -> Location:
        if col is None:
            return location
        # Columns in fixups are statement-relative; the item keeps the statement start.
        return location.at_column(location.column + col)

    def _apply_fixup(self, out: bytearray, offset: int, address: int, fixup: Fixup,
                     location: Location, reported: set[tuple[str, int]]) -> None:
        where = self._locate(location, fixup.col)
        try:
            value = self._final(fixup.expr)
        except StatementError as failure:
            key = (failure.message, location.line)
            if key not in reported:
                reported.add(key)
                self.error(failure.message, self._locate(location, failure.column))
            return
        if fixup.kind == "rel":
            value -= address + fixup.end
        problem = _field_problem(fixup, value)
        if problem is not None:
            self.error(problem, where)
            return
        size = fixup.size
        pos = offset + fixup.offset
        out[pos:pos + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def _branch_bytes(self, item: BranchItem, address: int) -> bytes:
        branch = item.branch
        try:
            target = self._final(branch.target)
        except StatementError as problem:
            self.error(problem.message, self._locate(item.location, problem.column))
            return bytes(item.size)
        end = address + item.size
        if item.long:
            bits = branch.long_size * 8
            disp = (target - end) & ((1 << bits) - 1)
            return branch.prefix + branch.long + disp.to_bytes(branch.long_size, "little")
        return branch.prefix + branch.short + ((target - end) & 0xFF).to_bytes(1, "little")

    def _check_org(self, section: SectionState, item: OrgItem, offset: int) -> None:
        try:
            value = evaluate(item.target, self._section_value)
        except StatementError as problem:
            self.error(problem.message, self._locate(item.location, problem.column))
            return
        if value is None or not (value.is_const or value.terms == ((section.index, 1),)):
            self.error(".org needs an address in the same section or a constant",
                       item.location)
        elif value.const < offset:
            self.error("attempt to move .org backwards", item.location)

    def _exported_symbols(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, symbol in self.symbols.items():
            if not symbol.defined or name.startswith(".L"):
                continue
            try:
                value = evaluate(Leaf(symbol, 0), self._final_value)
            except StatementError:
                continue
            if value is not None and value.is_const:
                out[name] = value.const
        return out

    def _annotations(self, contents: dict[int, bytearray]) -> tuple[Annotation, ...]:
        section = self.by_name.get(ANNOTATION_SECTION)
        if section is None:
            return ()
        data = contents[section.index]
        if len(data) % ANNOTATION_RECORD_SIZE:
            self.error(f"{ANNOTATION_SECTION} holds {len(data)} bytes, not a multiple of "
                       f"{ANNOTATION_RECORD_SIZE}-byte records", self.location)
            raise AsmError(self.diagnostics)
        return tuple(
            Annotation(int.from_bytes(data[k:k + 4], "little"), data[k + 4], data[k + 5],
                       data[k + 6])
            for k in range(0, len(data), ANNOTATION_RECORD_SIZE))

    def _listing(self, contents: dict[int, bytearray]) -> Callable[[], tuple[ListingLine, ...]]:
        """A function that makes the listing when asked: it holds the listing
        entries, the sections' offsets and ``contents``, not the items."""
        for section in self.sections:
            section.items = []
        return partial(_make_listing, self.listing, contents)

    # -- sections -------------------------------------------------------------------

    def _section(self, name: str, flags: str, kind: str = "") -> SectionState:
        section = self.by_name.get(name)
        if section is not None:
            return section
        nobits = kind == "nobits" or name == ".bss" or name.startswith((".bss.", ".tbss"))
        code = "x" in flags or name in _CODE_SECTIONS or name.startswith(".text.")
        alloc = "a" in flags or name.startswith(_ALLOC_SECTIONS)
        loaded = alloc and name != ANNOTATION_SECTION
        section = SectionState(name, len(self.sections), flags, nobits, code, loaded)
        self.sections.append(section)
        self.by_name[name] = section
        return section

    def _switch(self, section: SectionState) -> None:
        if section is not self.current:
            self.previous = self.current
            self.current = section

    # -- conditionals ----------------------------------------------------------------

    def _conditional(self, word: str, text: str, col: int) -> None:
        active = not self.conds or self.conds[-1].active
        if word in (".else", ".elseif", ".endif"):
            if not self.conds:
                raise StatementError(f"{word} without .if", col - len(word))
            cond = self.conds[-1]
            if word == ".endif":
                self.conds.pop()
                return
            if cond.in_else:
                raise StatementError(f"{word} after .else", col - len(word))
            if word == ".else":
                cond.in_else = True
                cond.active = cond.parent_active and not cond.taken
                cond.taken = True
                return
            truth = cond.parent_active and not cond.taken and self._truth(".if", text, col)
            cond.active = truth
            cond.taken = cond.taken or truth
            return
        truth = active and self._truth(word, text, col)
        self.conds.append(Cond(truth, truth, active, self.location))

    def _truth(self, word: str, text: str, col: int) -> bool:
        arg = text.strip()
        if word in (".ifdef", ".ifndef", ".ifnotdef"):
            match = _WORD.fullmatch(text.strip())
            if not match:
                raise StatementError(f"{word} needs a symbol name", col + _lead(text))
            symbol = self.symbols.get(match.group(1))
            defined = symbol is not None and symbol.defined
            return defined if word == ".ifdef" else not defined
        if word in (".ifb", ".ifnb"):
            return (arg == "") == (word == ".ifb")
        if word in (".ifc", ".ifnc"):
            parts = _split_arguments(text, col, commas_only=True)
            if len(parts) != 2:
                raise StatementError(f"{word} needs two strings separated by ','", col)
            same = _unquote(parts[0][1]) == _unquote(parts[1][1])
            return same == (word == ".ifc")
        if word in _IF_COMPARE:
            value = self._constant(text, col, f"{word} condition")
            return _IF_COMPARE[word](value)
        raise StatementError(f"unknown directive '{word}'", col - len(word))


# ---------------------------------------------------------------------------
# Directives


#: A line for ``Assembler._fast_line``: bytes, fixups, listing text, .code16/32 mode.
_FastLine = tuple[bytes, tuple[Fixup, ...], str, int]


def _bake(encoded: Encoded) -> Encoded:
    """``encoded`` with the fixups whose value is a number (not PC-relative)
    written into the bytes, as ``_apply_fixup`` would write them at the end."""
    if not encoded.fixups:
        return encoded
    data = bytearray(encoded.data)
    rest = []
    for fixup in encoded.fixups:
        if fixup.kind == "rel" or type(fixup.expr) is not Num:
            rest.append(fixup)
            continue
        value = wrap64(fixup.expr.value)  # type: ignore[union-attr]
        pos = fixup.offset
        data[pos:pos + fixup.size] = (value & ((1 << (8 * fixup.size)) - 1)).to_bytes(
            fixup.size, "little")
    return Encoded(bytes(data), tuple(rest), encoded.warnings)


def _field_problem(fixup: Fixup, value: int) -> str | None:
    """Why ``value`` cannot go into the field of ``fixup`` (None if it can).

    As GNU as does for i386, fields narrower than 32 bits see values wrapped to
    32 bits first (0xffffffff fits a byte as -1); what still does not fit is an
    error here where GNU as warns and truncates.
    """
    bits = fixup.size * 8
    if bits < 32 and -(1 << 63) <= value < (1 << 32):
        value = wrap32(value)
    if fixup.kind == "rel":
        # rel16 wraps with IP (64 KiB); only rel8 can be out of reach.
        if bits == 8 and not -128 <= value <= 127:
            return f"branch target out of range ({value:+d} bytes does not fit in 8 bits)"
        return None
    if fixup.kind == "disp":
        wrap = fixup.wrap or 32
        if not -(1 << (wrap - 1)) <= value < (1 << wrap):
            return f"displacement {_hex(value)} does not fit in {wrap}-bit addressing"
        return None  # an 8-bit displacement was chosen because the value wraps to one
    if fixup.kind == "imm8s":
        return None  # chosen because the value is a sign-extended byte
    if bits < 64 and not -(1 << (bits - 1)) <= value < (1 << bits):
        return f"value {_hex(value)} does not fit in {bits} bits"
    return None


def _lead(text: str) -> int:
    return len(text) - len(text.lstrip())


def _hex(value: int) -> str:
    return f"{value:#x}" if value >= 0 else f"-{-value:#x}"


def _first_word(clean: str) -> str:
    text = clean
    while True:
        match = _LABEL.match(text)
        if not match:
            break
        text = text[match.end():]
    match = _WORD.match(text)
    return match.group(1).lower() if match else ""


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _split_arguments(text: str, col: int, commas_only: bool = False) -> list[tuple[int, str]]:
    """Split at commas, and at blanks outside parentheses and quotes that are not
    next to an operator: ``.macro`` parameter lists and ``.ifc`` operands
    (``arguments`` splits macro arguments and ``.irp`` lists as GNU as does)."""
    args: list[tuple[int, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        depth = 0
        out = []
        while i < n:
            ch = text[i]
            if ch == '"':
                end = i + 1
                while end < n and text[end] != '"':
                    end += 2 if text[end] == "\\" else 1
                out.append(text[i:end + 1])
                i = end + 1
                continue
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif depth <= 0 and ch == ",":
                break
            elif depth <= 0 and ch in " \t" and not commas_only:
                rest = text[i:].lstrip(" \t")
                prev = "".join(out).rstrip()
                if rest and (rest[0] in "-+*/%|&^<>=!~" and not rest.startswith(",")
                             or prev and prev[-1] in "-+*/%|&^<>=!~"):
                    i += len(text[i:]) - len(rest)
                    out.append(" ")
                    continue
                break
            out.append(ch)
            i += 1
        value = "".join(out).strip()
        args.append((col + start, value))
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ",":
            i += 1
            if i >= n or not text[i:].strip():
                args.append((col + i, ""))
    return args


def _substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``\\name``, ``\\@`` and ``\\()`` in a macro body line."""
    if "\\" not in text:
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if text.startswith("\\()", i):
            i += 3
            continue
        if text.startswith("\\@", i):
            out.append(values["@"])
            i += 2
            continue
        if i + 1 < n and is_name_start(text[i + 1]) or (i + 1 < n and text[i + 1].isdigit()):
            j = scan_name(text, i + 1) if is_name_start(text[i + 1]) else i + 2
            name = text[i + 1:j]
            # The longest parameter name that is a prefix (``\arg.x`` is arg then .x).
            for cut in range(len(name), 0, -1):
                if name[:cut] in values:
                    out.append(values[name[:cut]])
                    i += 1 + cut
                    break
            else:
                out.append(text[i:j])
                i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_IF_COMPARE: dict[str, Callable[[int], bool]] = {
    ".if": lambda v: v != 0, ".ifne": lambda v: v != 0, ".ifeq": lambda v: v == 0,
    ".ifgt": lambda v: v > 0, ".ifge": lambda v: v >= 0, ".iflt": lambda v: v < 0,
    ".ifle": lambda v: v <= 0,
}

Directive = Callable[[Assembler, str, int, int, str], None]
_DIRECTIVES: dict[str, Directive] = {}


def _directive(*names: str) -> Callable[[Directive], Directive]:
    def register(func: Directive) -> Directive:
        for name in names:
            _DIRECTIVES[name] = func
        return func
    return register


_DATA_SIZES = {".byte": 1, ".word": 2, ".short": 2, ".value": 2, ".2byte": 2, ".hword": 2,
               ".long": 4, ".int": 4, ".4byte": 4, ".quad": 8, ".8byte": 8}


@_directive(*_DATA_SIZES)
def _data(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    size = _DATA_SIZES[word]
    tokens = tokenize(text, col)
    if tokens[0].kind == "eof":
        return
    data = bytearray()
    fixups: list[Fixup] = []
    pos = 0
    while True:
        asm.dot_delta = len(data)
        expr, pos = parse_expression(tokens, pos, asm)
        value = asm.known(expr)
        start_col = _expr_col(expr)
        if value is None:
            fixups.append(Fixup(len(data), size, expr, "imm", start_col))
            data += bytes(size)
        else:
            bits = size * 8
            if bits < 32 and -(1 << 31) <= value < (1 << 32):
                value = wrap32(value)
            if bits < 64 and not -(1 << (bits - 1)) <= value < (1 << bits):
                raise StatementError(f"value {_hex(value)} does not fit in {bits} bits",
                                     start_col)
            data += (value & ((1 << bits) - 1)).to_bytes(size, "little")
        tok = tokens[pos]
        if tok.kind == "eof":
            break
        if not (tok.kind == "op" and tok.value == ","):
            raise StatementError(f"junk '{tok.value}' after expression", tok.col)
        pos += 1
    asm.dot_delta = 0
    asm._emit_bytes(bytes(data), tuple(fixups))


def _expr_col(expr: Expr) -> int:
    """The column where an expression starts (its leftmost operand)."""
    while isinstance(expr, Binary):
        expr = expr.left
    return expr.col


@_directive(".ascii", ".asciz", ".string")
def _ascii(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    tokens = tokenize(text, col)
    data = bytearray()
    pos = 0
    while tokens[pos].kind != "eof":
        tok = tokens[pos]
        if tok.kind != "str":
            raise StatementError(f"{word} expects strings", tok.col)
        assert isinstance(tok.value, bytes)
        data += tok.value
        if word != ".ascii":
            data.append(0)
        pos += 1
        if tokens[pos].kind == "op" and tokens[pos].value == ",":
            pos += 1
        elif tokens[pos].kind != "eof":
            raise StatementError(f"junk '{tokens[pos].value}' after string", tokens[pos].col)
    asm._emit_bytes(bytes(data))


def _split_commas(text: str, col: int) -> list[tuple[int, str]]:
    parts = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append((col + start, text[start:i]))
            start = i + 1
    parts.append((col + start, text[start:]))
    return parts


@_directive(".space", ".skip", ".zero")
def _space(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    if not text.strip():
        raise StatementError(f"{word} needs a size", col)
    count = asm._constant(parts[0][1], parts[0][0], f"{word} size")
    fill = asm._constant(parts[1][1], parts[1][0], "fill value") if len(parts) > 1 else 0
    if count < 0:
        raise StatementError(f"{word} size {count} is negative", parts[0][0])
    _check_size(count, parts[0][0])
    asm._emit_bytes(bytes([fill & 0xFF]) * count)


def _check_size(count: int, col: int) -> None:
    if count > MAX_OUTPUT:
        raise StatementError(f"size {count:#x} is larger than {MAX_OUTPUT >> 20} MiB "
                             f"(the output limit)", col)


@_directive(".fill")
def _fill(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    repeat = asm._constant(parts[0][1], parts[0][0], ".fill repeat count")
    size = asm._constant(parts[1][1], parts[1][0], ".fill size") \
        if len(parts) > 1 and parts[1][1].strip() else 1
    value = asm._constant(parts[2][1], parts[2][0], ".fill value") \
        if len(parts) > 2 and parts[2][1].strip() else 0
    if len(parts) > 3:
        raise StatementError("too many arguments for .fill", parts[3][0])
    if repeat < 0:
        raise StatementError(".fill repeat count is negative", parts[0][0])
    if not 0 <= size <= 8:
        raise StatementError(".fill size must be 0 to 8", parts[1][0])
    _check_size(repeat * size, parts[0][0])
    # GNU as writes the value in at most 4 bytes; wider units get zero upper bytes.
    unit = (value & 0xFFFFFFFF).to_bytes(4, "little")[:size].ljust(size, b"\0")
    asm._emit_bytes(unit * repeat)


@_directive(".align", ".balign", ".balignw", ".balignl", ".p2align", ".p2alignw", ".p2alignl")
def _align(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    amount = asm._constant(parts[0][1], parts[0][0], "alignment")
    if word.startswith(".p2align"):
        if not 0 <= amount <= 30:
            raise StatementError(f"alignment 2**{amount} is out of range", parts[0][0])
        alignment = 1 << amount
    else:
        alignment = amount or 1
        if alignment & (alignment - 1) or alignment < 0 or alignment > 1 << 30:
            raise StatementError(f"alignment {amount} is not a power of 2", parts[0][0])
    fill = None
    if len(parts) > 1 and parts[1][1].strip():
        fill = asm._constant(parts[1][1], parts[1][0], "fill value")
    max_skip = None
    if len(parts) > 2 and parts[2][1].strip():
        max_skip = asm._constant(parts[2][1], parts[2][0], "maximum skip")
    fill_size = {".balignw": 2, ".p2alignw": 2, ".balignl": 4, ".p2alignl": 4}.get(word, 1)
    section = asm.current
    if section.nobits and fill:
        raise StatementError("cannot fill a nobits section with non-zero bytes", parts[1][0])
    section.alignment = max(section.alignment, alignment)
    asm._emit(AlignItem(alignment, fill, fill_size, max_skip, asm.code_bits, asm.location),
              fixed=False)


def _padding(item: AlignItem, code: bool, code_bits: int) -> bytes:
    if item.fill is None and code:
        return nop_padding(item.size, code_bits)
    unit = ((item.fill or 0) & ((1 << (8 * item.fill_size)) - 1)).to_bytes(item.fill_size,
                                                                            "little")
    return (unit * (item.size // item.fill_size + 1))[: item.size]


_NOPS32 = {1: b"\x90", 2: b"\x66\x90", 3: b"\x8d\x76\x00", 4: b"\x8d\x74\x26\x00",
           6: b"\x8d\xb6\x00\x00\x00\x00", 7: b"\x8d\xb4\x26\x00\x00\x00\x00"}
_NOPS16 = {1: b"\x90", 2: b"\x66\x90", 3: b"\x8d\x74\x00", 4: b"\x8d\xb4\x00\x00"}


def nop_padding(count: int, code_bits: int = 32) -> bytes:
    """The no-op bytes GNU as 2.40 pads code with (i386 patterns, the default -march).

    Up to two of the longest patterns (7 bytes, 4 in 16-bit code) are used
    directly; longer padding starts with a jump over the rest.
    """
    patterns = _NOPS32 if code_bits == 32 else _NOPS16
    longest = max(patterns)
    out = bytearray()
    if count // longest > 2:
        disp = count - 2
        if disp <= 127:
            out += bytes([0xEB, disp])
            count = disp
        else:
            head = b"\xe9" if code_bits == 32 else b"\x66\xe9"
            count -= len(head) + 4
            out += head + count.to_bytes(4, "little")
    while count >= longest:
        out += patterns[longest]
        count -= longest
    if count:
        if count in patterns:
            out += patterns[count]
        else:
            out += patterns[count - 1] + patterns[1]
    return bytes(out)


@_directive(".nops")
def _nops(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    count = asm._constant(_split_commas(text, col)[0][1], col, ".nops size")
    if count < 0:
        raise StatementError(".nops size is negative", col)
    _check_size(count, col)
    asm._emit(Chunk(bytearray(count), asm.location, nops=True))


@_directive(".org")
def _org(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    target = asm._expression(parts[0][1], parts[0][0])
    fill = asm._constant(parts[1][1], parts[1][0], "fill value") if len(parts) > 1 else 0
    asm._emit(OrgItem(target, fill & 0xFF, asm.location), fixed=False)


@_directive(".equ", ".set", ".equiv", ".eqv")
def _equ(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    match = re.match(r"\s*([A-Za-z_.][\w.$]*)\s*,", text)
    if not match:
        raise StatementError(f"{word} needs 'symbol, expression'", col + _lead(text))
    asm._assign(match.group(1), text[match.end():], col + match.end(), word,
                col + match.start(1))


@_directive(".globl", ".global", ".weak", ".local", ".hidden", ".protected", ".internal")
def _global(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    for part_col, part in _split_commas(text, col):
        name = part.strip()
        if not re.fullmatch(r"[A-Za-z_.][\w.$]*", name):
            raise StatementError(f"{word} expects symbol names", part_col + _lead(part))
        symbol = asm.symbols.get(name)
        if symbol is None:
            symbol = Symbol(name)
            asm.symbols[name] = symbol
        symbol.is_global = word != ".local"


@_directive(".type", ".size", ".file", ".ident", ".loc", ".att_syntax", ".arch", ".text_end",
            ".cfi_startproc", ".cfi_endproc", ".cfi_def_cfa_offset", ".cfi_offset",
            ".cfi_adjust_cfa_offset", ".cfi_rel_offset", ".cfi_restore", ".cfi_def_cfa",
            ".cfi_def_cfa_register", ".cfi_sections", ".cfi_signal_frame", ".linefile")
def _ignored(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    if word == ".att_syntax" and text.strip() not in ("", "prefix"):
        raise StatementError(".att_syntax noprefix is not supported", col + _lead(text))


@_directive(".intel_syntax", ".code16gcc", ".code64", ".subsection")
def _unsupported(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    raise StatementError(f"{word} is not supported by vmi.asm", word_col)


@_directive(".code16", ".code32")
def _code(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    asm.code_bits = 16 if word == ".code16" else 32


@_directive(".text", ".data", ".bss")
def _simple_section(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    if text.strip() and asm._constant(text, col, "subsection") != 0:
        raise StatementError("subsections are not supported by vmi.asm", col + _lead(text))
    asm._switch(asm._section(word, {".text": "ax", ".data": "aw", ".bss": "aw"}[word]))


def _section_arguments(asm: Assembler, text: str, col: int, word: str) -> SectionState:
    parts = _split_commas(text, col)
    name_text = parts[0][1].strip()
    if name_text.startswith('"'):
        name = _unquote(name_text)
    else:
        name = name_text
    if not name or not re.fullmatch(r'[^\s,"]+', name):
        raise StatementError(f"{word} needs a section name", parts[0][0] + _lead(parts[0][1]))
    flags = ""
    kind = ""
    if len(parts) > 1:
        flag_text = parts[1][1].strip()
        if flag_text.startswith('"'):
            flags = _unquote(flag_text)
        elif flag_text:
            kind = flag_text.lstrip("@%")
    if len(parts) > 2:
        kind = parts[2][1].strip().lstrip("@%")
    if name.isdigit() and word == ".section":
        raise StatementError("subsections are not supported by vmi.asm", parts[0][0])
    return asm._section(name, flags, kind)


@_directive(".section")
def _section_directive(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    asm._switch(_section_arguments(asm, text, col, word))


@_directive(".pushsection")
def _pushsection(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    section = _section_arguments(asm, text, col, word)
    asm.section_stack.append((asm.current, asm.previous))
    asm._switch(section)


@_directive(".popsection")
def _popsection(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    if not asm.section_stack:
        raise StatementError(".popsection without .pushsection", word_col)
    asm.current, asm.previous = asm.section_stack.pop()


@_directive(".previous")
def _previous(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    if asm.previous is None:
        raise StatementError(".previous without a previous section", word_col)
    asm.current, asm.previous = asm.previous, asm.current


@_directive(".comm", ".lcomm")
def _comm(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    name = parts[0][1].strip()
    if len(parts) < 2 or not re.fullmatch(r"[A-Za-z_.][\w.$]*", name):
        raise StatementError(f"{word} needs 'symbol, size'", col)
    size = asm._constant(parts[1][1], parts[1][0], "size")
    align = asm._constant(parts[2][1], parts[2][0], "alignment") if len(parts) > 2 else (
        4 if size >= 4 else 1)
    _check_size(size, parts[1][0])
    saved, saved_prev = asm.current, asm.previous
    asm.current = asm._section(".bss", "aw")
    if align > 1:
        asm.current.alignment = max(asm.current.alignment, align)
        asm._emit(AlignItem(align, None, 1, None, asm.code_bits, asm.location), fixed=False)
    asm._define_label(name, parts[0][0] + _lead(parts[0][1]))
    asm._emit_bytes(bytes(size))
    asm.current, asm.previous = saved, saved_prev


@_directive(".if", ".ifdef", ".ifndef", ".ifnotdef", ".ifeq", ".ifne", ".ifgt", ".ifge",
            ".iflt", ".ifle", ".ifb", ".ifnb", ".ifc", ".ifnc", ".else", ".elseif", ".endif")
def _if(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    asm._conditional(word, text, col)


@_directive(".macro")
def _macro(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    frame = asm.frames[-1]
    match = _WORD.match(text)
    if not match:
        raise StatementError(".macro needs a name", col + _lead(text))
    name = match.group(1)
    params: list[tuple[str, str | None, bool, bool]] = []
    for part_col, part in _split_arguments(text[match.end():], col + match.end()):
        pname, eq, default = part.partition("=")
        pname = pname.strip()
        required = vararg = False
        if ":" in pname:
            pname, qualifier = pname.split(":", 1)
            required = qualifier == "req"
            vararg = qualifier == "vararg"
            if qualifier not in ("req", "vararg"):
                raise StatementError(f"bad qualifier ':{qualifier}'", part_col)
        if not re.fullmatch(r"[A-Za-z_][\w.$]*", pname):
            raise StatementError(f"bad macro parameter '{pname}'", part_col)
        params.append((pname, default.strip() if eq else None, required, vararg))
    location = asm._at(word_col)
    body = asm._collect_block(frame, ".macro", (".macro",), (".endm", ".endmacro"))
    if body is None:
        return
    if name.lower() in asm.macros:
        raise StatementError(f"macro '{name}' was already defined", match.start(1) + col)
    asm.macros[name.lower()] = Macro(name, params, body, frame.filename, location)
    asm.fast_lines = {}  # not clear(): the listing's _Run entries keep the old one


@_directive(".endm", ".endmacro", ".endr")
def _stray_end(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    raise StatementError(f"{word} without a matching opening directive", word_col)


@_directive(".exitm")
def _exitm(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    for depth in range(len(asm.frames) - 1, -1, -1):
        if asm.frames[depth].kind == "macro":
            del asm.conds[asm.frames[depth].cond_depth:]
            del asm.frames[depth:]
            return
    raise StatementError(".exitm outside a macro", word_col)


@_directive(".purgem")
def _purgem(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    name = text.strip().lower()
    if name not in asm.macros:
        raise StatementError(f"macro '{text.strip()}' is not defined", col + _lead(text))
    del asm.macros[name]
    asm.fast_lines = {}  # not clear(): the listing's _Run entries keep the old one


@_directive(".rept", ".irp", ".irpc")
def _rept(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    frame = asm.frames[-1]
    # Each level reads the rest of the enclosing body again to find its .endr.
    if sum(1 for f in asm.frames if f.kind == "rept") >= MAX_REPT_DEPTH:
        asm._limit(f"repeated blocks nested too deeply: more than {MAX_REPT_DEPTH} levels "
                   f"(the limit)", word_col)
    if word == ".rept":
        count = asm._constant(text, col, ".rept count")
        if count > MAX_REPETITIONS:
            asm._limit(f".rept count {count} is too large: more than "
                       f"{MAX_REPETITIONS} copies (the limit)", col + _lead(text))
        copies: list[dict[str, str]] = [{}] * max(0, count)
    else:
        match = re.match(r"\s*([A-Za-z_][\w.$]*)\s*(,|\s)?", text)
        if not match:
            raise StatementError(f"{word} needs a parameter name", col + _lead(text))
        pname = match.group(1)
        rest = text[match.end():]
        if word == ".irp":
            values = arguments.irp_values(rest)
        else:
            values = list(rest.strip())
        copies = [{pname: v} for v in values] or [{pname: ""}]
    body = asm._collect_block(frame, word, (".rept", ".irp", ".irpc"), (".endr",))
    if body is None:
        return
    nested = frame.copies * len(copies)
    if nested > MAX_REPETITIONS:
        asm._limit(f"{word} inside repeated blocks makes {nested} copies "
                   f"(nested counts multiply): more than {MAX_REPETITIONS} (the limit)",
                   word_col)
    asm.repetitions += len(copies)
    if asm.repetitions > MAX_REPETITIONS:
        asm._limit(f"more than {MAX_REPETITIONS} copies of repeated blocks in all "
                   f"(the limit)", word_col)
    lines: list[Line] = []
    for values_map in copies:
        for line in body:
            if word == ".rept":
                lines.append(line)
            else:
                text_line = _substitute(line.clean, dict(values_map, **{"@": "0"}))
                lines.append(Line(line.number, text_line, text_line))
        if len(lines) > MAX_EXPANDED_STATEMENTS:
            asm._limit(f"repeated block is too large: more than "
                       f"{MAX_EXPANDED_STATEMENTS} lines (the limit)", word_col)
    asm.frames.append(Frame("rept", frame.filename, lines, frame.directory,
                            cond_depth=len(asm.conds), invocation=asm.location,
                            listed=frame.listed, copies=max(1, nested)))


@_directive(".include")
def _include(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    name = text.strip()
    if not (len(name) >= 2 and name[0] == name[-1] == '"'):
        raise StatementError('.include needs a quoted file name: .include "file.S"',
                             col + _lead(text))
    frame = asm.frames[-1]
    if sum(1 for f in asm.frames if f.kind == "file") > MAX_INCLUDE_DEPTH:
        asm._limit(f".include nested too deeply: more than {MAX_INCLUDE_DEPTH} "
                   f"files open at once (the limit)", word_col)
    path = frame.directory / name[1:-1]
    where = col + _lead(text)
    try:
        data = read_regular_file(path, limit=MAX_INCLUDE_SIZE, what=".include size")
    except RefusedFile as problem:
        raise StatementError(f"cannot include '{name[1:-1]}': it {problem}", where) from None
    except OSError as problem:
        raise StatementError(f"cannot read '{name[1:-1]}': {problem.strerror or problem}",
                             where) from None
    source = data.decode("utf-8", errors="replace")
    asm._push_file(source, str(path), path.parent, asm.location)
    asm.frames[-1].listed = frame.listed


@_directive(".incbin")
def _incbin(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    parts = _split_commas(text, col)
    name = parts[0][1].strip()
    if not (len(name) >= 2 and name[0] == name[-1] == '"'):
        raise StatementError('.incbin needs a quoted file name: .incbin "file.bin"',
                             col + _lead(text))
    skip = asm._constant(parts[1][1], parts[1][0], ".incbin skip") if len(parts) > 1 else 0
    count = asm._constant(parts[2][1], parts[2][0], ".incbin count") if len(parts) > 2 \
        else None
    path = asm.frames[-1].directory / name[1:-1]
    where = col + _lead(text)
    if skip < 0:
        raise StatementError(f".incbin skip {skip} is negative", parts[1][0])
    if count is not None:
        if count < 0:
            raise StatementError(f".incbin count {count} is negative", parts[2][0])
        _check_size(count, parts[2][0])
    try:
        data = read_regular_file(path, skip=skip, count=count, limit=None if count is not None
                                 else skip + MAX_OUTPUT, what=".incbin output size")
    except RefusedFile as problem:
        raise StatementError(f".incbin '{name[1:-1]}': the file {problem}", where) from None
    except OSError as problem:
        raise StatementError(f"cannot read '{name[1:-1]}': {problem.strerror or problem}",
                             where) from None
    asm._emit_bytes(data)


@_directive(".err", ".error", ".warning", ".print")
def _message(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    message = _unquote(text) if text.strip() else ".err encountered"
    if word in (".err", ".error"):
        raise StatementError(message, word_col)
    if word == ".warning":
        asm.warning(message, asm._at(word_col))


@_directive(".end")
def _end(asm: Assembler, text: str, col: int, word_col: int, word: str) -> None:
    asm.ended = True


def _make_listing(entries: list[ListingEntry],
                  contents: dict[int, bytearray]) -> tuple[ListingLine, ...]:
    lines = []
    for entry in entries:
        if isinstance(entry, _Run):
            section = entry.section
            start = section.offset_of(entry.index) + entry.delta
            data = contents[section.index]
            for pos in range(entry.start, entry.end):
                code, _fixups, text, _bits = entry.known[entry.cleans[pos]]
                end = start + len(code)
                lines.append(ListingLine(section.address + start, bytes(data[start:end]), text,
                                         entry.filename, pos + 1, section.name, entry.depth))
                start = end
            continue
        section, first, last, text, filename, line, depth = entry
        start = section.offset_of(first)
        end = section.offset_of(last)
        data = b"" if section.nobits else bytes(contents[section.index][start:end])
        lines.append(ListingLine(section.address + start, data, text, filename, line,
                                 section.name, depth))
    return tuple(lines)
