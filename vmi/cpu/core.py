"""The processor: register file, memory access, the decode-once cache and the run loop.

``CPU`` knows nothing of hypervisors. Exceptions it cannot deliver itself go
to ``cpu.platform`` (the seam of the system model); a CPU without a platform
lets a ``CPUException`` propagate to its caller with EIP on the faulting
instruction (after it, for traps such as ``int``), which is what tests of a
flat CPU want.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmi.cpu import blocks, codecache, paging
from vmi.cpu import flags as fl
from vmi.cpu.codegen import rebuild
from vmi.cpu.decoder import decode
from vmi.cpu.descriptors import UnsupportedSystemFeature
from vmi.cpu.errors import CPUException, DecodeError, StopBatch, TruncatedInstruction
from vmi.cpu.memory import Memory
from vmi.cpu.operands import GPR8, GPR16, GPR32, SEGMENTS, Instruction

M32 = 0xFFFFFFFF

# Flat selectors for the convenience constructor (the 2.6.16 GDT layout:
# __KERNEL_CS 0x60, __KERNEL_DS 0x68, __USER_CS 0x73, __USER_DS 0x7b).
FLAT_SELECTORS = {0: (0x60, 0x68), 3: (0x73, 0x7B)}


class Halted(Exception):
    """Raised by ``hlt`` to leave the run loop; ``cpu.halted`` stays set until an event."""


#: Compiled instructions shared by every CPU of the process: the closure depends
#: only on the instruction's bytes, its address, the code size (decoding) and the
#: stack size (pushes and pops compile for it), so a new machine running the same
#: code starts warm (the race explorer's workers, the debugger's replays).
COMPILED: dict[tuple[bytes, int, int, int], tuple[tuple[Any, int, int], int]] = {}
COMPILED_LIMIT = 200_000
#: ``run``'s cycle limit when there is none.
NO_LIMIT = 1 << 62
#: Added to an EIP, the key under which a decoded-code cache keeps the block
#: starting there (or ``NO_BLOCK``): EIPs are below 2**32.
BLOCK = 1 << 32
#: Kept for an EIP where no block of two instructions or more starts.
NO_BLOCK = False
#: Kept for an EIP reached before: a block is built there once it has been
#: reached ``blocks.HOT`` times (code run a few times, as most of a boot is,
#: does not pay for building a block); the counts are kept under ``HEAT``.
SEEN = 0
HEAT = "heat"
#: The key in each decoded-code cache under which it keeps the linear page ->
#: physical page map of the code it decoded (never an EIP: EIPs are ints).
PAGES = "pages"


class CPU:
    """One i386 processor attached to a physical ``Memory``.

    Registers: ``cpu.r`` holds EAX..EDI as Python ints (the hot path);
    ``cpu.regs`` reads and writes them, and every other register, by name.

    Decoded instructions are cached per EIP as compiled closures, in one cache
    per **code context** (``code_context()``: the CS base, ``code_bits``,
    ``stack_bits``, CR0's PE/PG/WP, CR3, CR4 and EFLAGS.VM: everything a closure
    may depend on besides the code bytes). ``icache`` is the current context's
    cache; whoever changes one of those must call ``code_context_changed()``, which
    switches caches without forgetting the others, so a kernel and its user
    programs keep their decoded code across every privilege transition. Writes to
    memory holding cached code forget every context (``forget_code``).
    """

    __slots__ = (
        "r", "eip", "flags", "lf", "sreg", "seg_base", "seg_limit", "cr", "cpl",
        "code_bits", "stack_bits", "mem", "icache", "cycles", "instructions", "halted", "msr",
        "platform", "io", "seg_attr", "shadow", "gdtr", "idtr", "ldtr", "tr", "dr", "tlb",
        "batch_ended", "faulted", "icaches", "accessor_cache", "rep_start", "rep_room", "rep_limit",
        "rep_extra", "rep_bulk", "fuse", "block_index", "code_generation", "block_devices",
        "rd8", "rd16", "rd32", "wr8", "wr16", "wr32", "regs", "index",
        "__weakref__",
    )

    def __init__(self, memory: Memory, *, index: int = 0) -> None:
        self.mem = memory
        self.index = index
        self.r = [0] * 8
        self.eip = 0
        self.flags = fl.FIXED_ONE  # non-arithmetic EFLAGS bits
        self.lf: tuple[int, int, int, int, int] = fl.CLEAN
        self.sreg = [0] * 6
        self.seg_base = [0] * 6
        self.seg_limit = [M32] * 6
        self.cr = [0] * 5
        self.cpl = 0
        self.code_bits = 32  # CS.D: default operand/address size of code
        self.stack_bits = 32  # SS.B: ESP or SP addresses the stack
        self.icache: dict[int, tuple[Callable[[CPU], None], int, int]] = {}
        self.icaches: dict[tuple[int, ...], dict[int, Any]] = {}
        self.accessor_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.cycles = 0
        self.instructions = 0
        self.halted = False
        self.msr: dict[int, int] = {}
        self.platform: Any = None  # delivers exceptions/interrupts (system model)
        self.io: Any = None  # port bus: read(port, size) -> int, write(port, size, value)
        # Attribute bits of each segment cache: bits 8..23 of the descriptor's high
        # dword shifted right by 8 (type 0-3, S 4, DPL 5-6, P 7, AVL 12, D/B 14, G 15).
        self.seg_attr = [0] * 6
        self.gdtr = [0, 0xFFFF]  # base, limit
        self.idtr = [0, 0x3FF]  # base, limit (the real-mode IVT after reset)
        self.ldtr = [0, 0, 0, 0]  # selector, base, limit, attributes
        self.tr = [0, 0, 0, 0]  # selector, base, limit, attributes
        self.dr = [0] * 8  # debug registers DR0-DR7
        self.tlb: dict[int, int] = {}  # linear page -> physical page entry (paging)
        # Interrupt shadow: set by STI (when IF was 0) and by MOV SS / POP SS; it
        # blocks delivery at the next boundary only (SDM Vol.3A §6.8.1, §6.8.3).
        # The machine clears it when the following instruction retires.
        self.shadow = False
        self.batch_ended = False  # the last fast batch ended on hlt, StopBatch or an event
        self.faulted = False  # the last run() delivered a fault (a boundary retiring nothing)
        # What a fast batch allows an instruction that does several iterations in
        # one call (a long rep stos, ops.string.bulk_stos): set at the start of
        # each ``_run_fast`` call (its cycles, boundaries and cycle limit); the extra
        # iterations it ran, which that call counts as instructions.
        self.rep_start = -1
        self.rep_room = 1
        self.rep_limit = NO_LIMIT
        self.rep_extra = 0
        #: Iterations of string instructions done in bulk, in all (a machine giving
        #: CPUs turns counts such a stretch as one instruction: ``Machine.run``).
        self.rep_bulk = 0
        #: Whether batches run basic blocks as one function each (``vmi.cpu.blocks``);
        #: off, every instruction runs as its own closure. ``VMI_BLOCKS=0`` turns
        #: it off for new CPUs.
        self.fuse = blocks.enabled_by_default()
        #: Set by a block when something propagates out of it: the index of the
        #: instruction that raised it.
        self.block_index = 0
        #: Bumped whenever decoded code is forgotten (a store hit a code page): a
        #: block checks it after each store and stops before running stale code.
        self.code_generation = 0
        #: The device windows of memory when this CPU's blocks were built: blocks
        #: write the cycle count before memory accesses only when there are some.
        self.block_devices = memory.mmio
        self.regs = Registers(self)
        memory.code_listeners.append(self.forget_code)
        self.mode_changed()

    @classmethod
    def flat(cls, memory: Memory | None = None, *, cpl: int = 0,
             memory_size: int = 16 << 20) -> CPU:
        """A CPU in flat 32-bit protected mode: every segment base 0, limit 4 GiB,
        paging off, CPL ``cpl`` (0 or 3), EFLAGS 0x2. No descriptor tables exist,
        so exceptions propagate to the caller as ``CPUException``.
        """
        cpu = cls(memory if memory is not None else Memory(memory_size))
        cpu.enter_flat_mode(cpl)
        return cpu

    def enter_flat_mode(self, cpl: int = 0) -> None:
        """Put this CPU in flat 32-bit protected mode without descriptor tables
        (see ``flat``); general registers and memory are left as they are."""
        if cpl not in FLAT_SELECTORS:
            raise ValueError(f"flat CPU runs at CPL 0 or 3, not {cpl}")
        code, data = FLAT_SELECTORS[cpl]
        self.sreg[:] = [data, code, data, data, data, data]
        self.seg_base[:] = [0] * 6
        self.seg_limit[:] = [M32] * 6
        self.seg_attr[:] = [0] * 6
        self.cpl = cpl
        self.cr[0] = 0x11  # PE | ET
        self.code_bits = self.stack_bits = 32
        self.mode_changed()

    # -- memory access ----------------------------------------------------------
    def mode_changed(self) -> None:
        """Re-derive everything cached from the mode: forget decoded code and pick
        the memory accessors (``rd8``..``wr32``) that fit the segments and paging
        now in force. Call after changing CR0, CR3, a segment cache, ``code_bits``
        or ``stack_bits``.
        """
        from vmi.cpu.segmentation import install_accessors

        self.code_context_changed()
        self.icache.clear()
        install_accessors(self)

    # -- decoded-code caches ----------------------------------------------------------
    def code_context(self) -> tuple[int, ...]:
        """What decoded code depends on besides its bytes (see the class docstring)."""
        cr = self.cr
        return (self.seg_base[1], self.code_bits, self.stack_bits, cr[0] & 0x80010001,
                cr[3], cr[4], self.flags & 0x20000)

    def code_context_changed(self) -> None:
        """Switch ``icache`` to the cache of the code context now in force."""
        key = self.code_context()
        cache = self.icaches.get(key)
        if cache is None:
            if len(self.icaches) >= 64:  # many contexts come and go: start over
                self.icaches.clear()
            cache = self.icaches[key] = {}
        self.icache = cache

    def revalidate_code(self) -> None:
        """After the memory under this CPU was replaced by equal code bytes (a snapshot
        restore): keep each context's decoded code only if every page it was decoded
        from still maps to the same physical page."""
        from vmi.cpu.paging import peek

        for key, cache in self.icaches.items():
            cr0, cr3, cr4 = key[3], key[4], key[5]
            if not cr0 & 0x80000000:
                continue  # paging off: linear is physical
            pages = cache.get(PAGES, {})
            for page, frame in pages.items():
                physical = peek(self.mem, cr3, cr4, page << 12)
                if physical is None or physical >> 12 != frame:
                    cache.clear()
                    self.code_generation += 1
                    break

    def forget_code(self) -> None:
        """Forget the decoded code of every context (its bytes or mappings changed)."""
        for cache in self.icaches.values():
            cache.clear()
        self.icache.clear()
        self.code_generation += 1

    def linear_to_physical(self, linear: int, *, write: bool = False) -> int:
        """Translate a linear address through paging (identity while it is off);
        raises #PF as the access would."""
        return paging.linear_to_physical(self, linear, write=write)

    # -- EFLAGS ---------------------------------------------------------------
    @property
    def eflags(self) -> int:
        return (self.flags & ~fl.ARITH) | fl.arith_flags(self.lf) | fl.FIXED_ONE

    @eflags.setter
    def eflags(self, value: int) -> None:
        value &= fl.IMPLEMENTED
        self.flags = (value & ~fl.ARITH) | fl.FIXED_ONE
        self.lf = (fl.EXPLICIT, 32, value & fl.ARITH, 0, 0)

    # -- decoding ---------------------------------------------------------------
    def fetch(self, eip: int | None = None) -> Instruction:
        """Decode the instruction at ``eip`` (default: the current EIP).

        Instruction bytes are translated page by page; a #PF on a later page is
        raised only if the instruction really extends into it.
        """
        eip = self.eip if eip is None else eip
        linear = (self.seg_base[1] + eip) & M32
        data, pending = paging.fetch_code(self, linear)
        try:
            return decode(data, eip, bits=self.code_bits)
        except TruncatedInstruction:
            if pending is not None:
                raise pending from None
            raise

    def _compile_at(self, eip: int) -> tuple[Callable[[CPU], None], int, int]:
        linear = (self.seg_base[1] + eip) & M32
        data, pending = paging.fetch_code(self, linear)
        key = (data, eip, self.code_bits, self.stack_bits)
        shared = COMPILED.get(key) or self._translate(key, pending)
        entry, length = shared
        cache = self.icache
        self._mark_code_page(linear, cache)
        last = (linear + length - 1) & M32
        if last >> 12 != linear >> 12:  # the instruction crosses a page
            self._mark_code_page(last, cache)
        cache[eip] = entry
        return entry

    def _mark_code_page(self, linear: int, cache: dict[Any, Any]) -> None:
        """Note the page of ``linear`` as holding code decoded into ``cache`` (writes
        to it forget the code; a restore checks its mapping)."""
        physical = paging.linear_to_physical(self, linear)
        self.mem.mark_code(physical, 1)
        cache.setdefault(PAGES, {})[linear >> 12] = physical >> 12

    def _translate(self, key: tuple[bytes, int, int, int], pending: CPUException | None,
                   ) -> tuple[tuple[Callable[[CPU], None], int, int], int]:
        """The compiled entry and length of the instruction at ``key`` (bytes, EIP,
        code and stack size): rebuilt from the persistent translation cache when it
        holds a recipe, else decoded and compiled (and the recipe kept). An
        undecodable instruction gets an entry raising #UD, not shared (rewriting
        the bytes retries)."""
        data, eip = key[0], key[1]
        recipe = codecache.CACHE.recipe(key)
        if recipe is not None:
            source, constants, next_eip, cycles, length, mnemonic = recipe
            execute = rebuild(source, constants)
            execute.mnemonic = mnemonic  # type: ignore[attr-defined]
        else:
            from vmi.cpu.ops import compile_instruction, raise_invalid  # (imports core)

            try:
                try:
                    insn = decode(data, eip, bits=self.code_bits)
                except TruncatedInstruction:
                    if pending is not None:
                        raise pending from None
                    raise
            except DecodeError as error:
                return (raise_invalid(str(error)), eip, 1), 1
            execute, cycles = compile_instruction(insn, self)
            next_eip, length = insn.next_address & self._ip_mask(), insn.length
            source = getattr(execute, "source", None)
            if source is not None:
                codecache.CACHE.remember(key, source, execute.constants,  # type: ignore[attr-defined]
                                         next_eip, cycles, length, insn.mnemonic)
        shared = ((execute, next_eip, cycles), length)
        if len(COMPILED) >= COMPILED_LIMIT:
            COMPILED.clear()
        COMPILED[key] = shared
        return shared

    def _ip_mask(self) -> int:
        return M32 if self.code_bits == 32 else 0xFFFF

    # -- execution --------------------------------------------------------------
    def step(self) -> None:
        """Retire one instruction (or raise the exception it causes)."""
        self.run(1)

    def run(self, max_steps: int, *, stop_on_event_change: bool = False,
            cycle_limit: int | None = None) -> int:
        """Execute up to ``max_steps`` instructions; stop early on ``hlt`` (and,
        when ``stop_on_event_change``, after a port write, an instruction that
        makes an interrupt shadow or one that sets IF, or an exception's delivery:
        the machine's quiet batches end there, ``faulted`` telling whether that
        delivery was of a fault, a boundary of its own that retired nothing; and
        after the instruction that brings ``cycles`` to ``cycle_limit`` or past it:
        the boundary where the machine's next event is due).

        Returns the number of instructions retired. A fault leaves EIP on the
        faulting instruction and goes to the platform (and ``run`` returns if it
        came before any instruction retired), or propagates as a
        ``CPUException`` when there is none. A feature the model refuses
        (``UnsupportedSystemFeature``, raised by an instruction or by the
        delivery of its exception or INT n) propagates with EIP on that
        instruction and the instructions before it counted, so the state can
        be inspected or the run resumed. With EFLAGS.TF set, every
        instruction is followed by a single-step trap (#DB).
        """
        retired = 0
        self.faulted = False
        limit = NO_LIMIT if cycle_limit is None else cycle_limit
        while retired < max_steps and not self.halted and self.cycles < limit:
            self.batch_ended = False
            if self.flags & fl.TF:
                done = self._run_single_stepping(max_steps - retired)
            else:
                done = self._run_fast(max_steps - retired, limit)
            if done == 0:
                break
            retired += done
            if stop_on_event_change and self.batch_ended and not self.flags & fl.TF:
                break
        return retired

    def _run_single_stepping(self, max_steps: int) -> int:
        """One instruction at a time while TF is set: after an instruction that
        began with TF=1 and retired normally, a debug trap with DR6.BS set is
        delivered (SDM Vol.3A §17.3.1.4). No trap follows a fault (the handler
        runs instead) or INT n/INT3/INTO (they clear TF on the way in)."""
        retired = 0
        while retired < max_steps and not self.halted and self.flags & fl.TF:
            before = self.instructions
            entry = self.icache.get(self.eip) or self._compile_at(self.eip)
            mnemonic = getattr(entry[0], "mnemonic", None)
            done = self._run_fast(1)
            retired += done
            if done == 0 or self.instructions == before:
                break  # a fault was delivered: its handler runs next
            if mnemonic in ("int", "int3", "into"):
                continue
            self.dr[6] |= 0x4000  # BS: the trap came from single-stepping
            trap = CPUException(1, None, "single-step trap (EFLAGS.TF)")
            trap.trap = True  # type: ignore[attr-defined]
            if self.platform is None:
                raise trap
            self.platform.deliver_exception(self, trap)
        return retired

    def _run_fast(self, max_steps: int, limit: int = 1 << 62) -> int:
        """The hot loop (see ``run``): stops after ``max_steps`` instructions or after
        the one that brings ``cycles`` to ``limit``. With ``fuse`` set and more than
        one instruction asked for, basic blocks run as one function each
        (``_run_blocks``)."""
        if self.fuse and max_steps > 1:
            return self._run_blocks(max_steps, limit)
        return self._run_single(max_steps, limit)

    def _run_single(self, max_steps: int, limit: int) -> int:
        """``_run_fast`` one instruction, one closure at a time."""
        retired = 0
        eip = self.eip
        cycles = 0
        self.rep_start, self.rep_room, self.rep_limit = self.cycles, max_steps, limit
        try:
            # ``for ... in range`` measured 1.6x faster here than a while loop
            # with its own counter (benchmarks/throughput.py). ``self.icache`` is
            # read each time: an instruction may switch code contexts.
            for retired in range(max_steps):  # noqa: B007 (read after the loop)
                eip = self.eip
                entry = self.icache.get(eip)
                if entry is None:
                    entry = self._compile_at(eip)
                execute, self.eip, cycles = entry
                execute(self)
                now = self.cycles + cycles
                self.cycles = now
                if now >= limit:
                    retired += 1
                    break
            else:
                retired = max_steps
        except (Halted, StopBatch, CPUException, UnsupportedSystemFeature) as exc:
            return self._settle(exc, retired, eip, cycles)
        self.instructions += retired
        return retired

    def _run_blocks(self, max_steps: int, limit: int) -> int:
        """``_run_fast`` with basic blocks (``vmi.cpu.blocks``): at each EIP, the
        block starting there runs whole when it fits in the instructions and
        cycles left (every instruction but its last must leave ``cycles`` below
        ``limit``); otherwise, or where no block starts, one instruction runs as
        in the per-instruction loop. The result is the same state, instruction
        for instruction."""
        if self.mem.mmio is not self.block_devices:  # a device mapped: rebuild
            self.block_devices = self.mem.mmio
            self.forget_code()
        retired = 0
        eip = self.eip
        cycles = 0
        running = None
        start = self.cycles
        self.rep_start, self.rep_room, self.rep_limit = start, max_steps, limit
        try:
            while retired < max_steps:
                eip = self.eip
                cache = self.icache
                block = cache.get(eip + BLOCK)
                if not block:
                    if block is None:  # first time here: one instruction
                        cache[eip + BLOCK] = SEEN
                    elif block is SEEN:  # again: a block once it is hot
                        heat = cache.get(HEAT)
                        if heat is None:
                            heat = cache[HEAT] = {}
                        count = heat.get(eip, 1) + 1
                        if count >= blocks.HOT:
                            block = self._block_at(eip)
                        else:
                            heat[eip] = count
                if block:
                    if retired + block.length > max_steps \
                            or (start := self.cycles) + block.before_last >= limit:
                        break  # the batch ends inside this block: one by one
                    running = block
                    done = block.execute(self)
                    running = None
                    if done is None:
                        retired += block.length
                        now = start + block.total
                    else:  # a store rewrote decoded code: stopped after it
                        retired += done
                        now = start + block.prefix[done]
                else:
                    entry = cache.get(eip)
                    if entry is None:
                        entry = self._compile_at(eip)
                    execute, self.eip, cycles = entry
                    execute(self)
                    retired += 1
                    now = self.cycles + cycles
                self.cycles = now
                if now >= limit:
                    break
        except (Halted, StopBatch, CPUException, UnsupportedSystemFeature) as exc:
            if running is not None:
                # as if the instructions before the one that raised had retired one
                # by one, and the run loop had set EIP past it before its body
                k = self.block_index
                retired += k
                self.cycles = start + running.prefix[k]
                eip, cycles = running.starts[k], running.cycles[k]
                if k < running.length - 1:
                    self.eip = running.nexts[k]
            return self._settle(exc, retired, eip, cycles)
        self.instructions += retired
        if retired < max_steps and self.cycles < limit:
            retired += self._run_single(max_steps - retired, limit)
        return retired

    def _block_at(self, eip: int) -> blocks.Block | bool:
        """The block starting at ``eip`` in the current code context, built and kept
        in ``icache`` (``NO_BLOCK`` where fewer than two instructions would fuse).
        Its instructions are decoded as the single-instruction path would, never
        past the page of ``eip`` (see ``vmi.cpu.blocks``)."""
        cache = self.icache
        base = self.seg_base[1]
        page = ((base + eip) & M32) >> 12
        entries: list[tuple[Any, int, int]] = []
        starts: list[int] = []
        at = eip
        while len(entries) < blocks.MAX_LENGTH:
            linear = (base + at) & M32
            if linear >> 12 != page or linear & 0xFFF > 0x1000 - 16:
                break  # the instruction might reach into the next page
            entry = cache.get(at)
            if entry is None:
                try:
                    entry = self._compile_at(at)
                except (CPUException, UnsupportedSystemFeature):
                    if not entries:
                        return NO_BLOCK  # the single path raises it when it runs
                    break
            shape = blocks.shape_of(entry[0])
            if shape is None:
                break
            if shape.inside or shape.last:
                entries.append(entry)
                starts.append(at)
            if not shape.inside:
                break
            at = entry[1]
        block = (blocks.build(entries, starts, bool(self.mem.mmio)) if len(entries) >= 2
                 else NO_BLOCK)
        cache[eip + BLOCK] = block
        return block

    def _settle(self, exc: BaseException, retired: int, eip: int, cycles: int) -> int:
        """End a batch on ``exc``, raised by the instruction at ``eip`` (costing
        ``cycles``) after ``retired`` others of the batch: count what retired and
        deliver a fault or trap to the platform. Returns the batch's count, or
        raises what the caller must see."""
        if isinstance(exc, Halted | StopBatch):
            retired += 1 + self.rep_extra  # with the iterations done in bulk
            self.rep_bulk += self.rep_extra
            self.rep_extra = 0
            self.cycles += cycles
            self.batch_ended = True
            self.instructions += retired
            return retired
        if isinstance(exc, CPUException):
            if getattr(exc, "trap", False):
                retired += 1
                self.cycles += cycles
            else:
                self.eip = eip
                self.faulted = True  # a boundary that retired nothing: its delivery
            self.instructions += retired
            # the delivery may change what the machine checks at a boundary (IF, a
            # monitor's emulation): a quiet batch ends here
            self.batch_ended = True
            if self.platform is None:
                raise exc
            try:
                self.platform.deliver_exception(self, exc)
            except UnsupportedSystemFeature:
                self._refused(eip, exc, cycles)
                raise
            return retired
        # UnsupportedSystemFeature, refused by the instruction itself: nothing
        # retired, EIP back on it
        self.eip = eip
        self.instructions += retired
        self.batch_ended = True
        raise exc

    def _refused(self, eip: int, exc: CPUException, cycles: int) -> None:
        """A refused feature met while delivering ``exc`` (a task gate, say): leave
        EIP on the instruction that raised it, so the state can be inspected or the
        run resumed there once the feature exists. A trap (INT n) had retired:
        take it back."""
        if getattr(exc, "trap", False):
            self.instructions -= 1
            self.cycles -= cycles
            self.eip = eip

    # -- snapshots ----------------------------------------------------------------
    #: Everything architectural or counted that a snapshot must carry. Whoever adds
    #: state to the CPU (descriptor-table registers, ...) adds its slot here.
    SNAPSHOT_FIELDS = (
        "r", "eip", "flags", "lf", "sreg", "seg_base", "seg_limit", "seg_attr", "cr", "cpl",
        "code_bits", "stack_bits", "cycles", "instructions", "halted", "shadow", "msr",
        "gdtr", "idtr", "ldtr", "tr", "dr",
    )

    def state(self) -> dict[str, Any]:
        """A JSON-able copy of the CPU's state (see ``SNAPSHOT_FIELDS``)."""
        out: dict[str, Any] = {}
        for name in self.SNAPSHOT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, dict):
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, list | tuple):
                value = list(value)
            out[name] = value
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        """Load a ``state()``; forgets decoded code and re-derives the mode."""
        for name in self.SNAPSHOT_FIELDS:
            value = state[name]
            current = getattr(self, name)
            if isinstance(current, dict):
                value = {int(k): v for k, v in value.items()}
            elif isinstance(current, tuple):
                value = tuple(value)
            elif isinstance(current, list):
                value = list(value)
            setattr(self, name, value)
        self.tlb.clear()
        from vmi.cpu.segmentation import install_accessors

        self.code_context_changed()  # decoded code stays valid while its bytes do
        install_accessors(self)

    def __repr__(self) -> str:
        names = " ".join(f"{n}={v:08x}" for n, v in zip(GPR32, self.r, strict=True))
        return f"<CPU{self.index} eip={self.eip:08x} eflags={self.eflags:08x} {names}>"


class Registers:
    """Name-based access to a CPU's registers: ``regs.eax``, ``regs.al = 1``, ``regs.cs``.

    Segment selectors are plain values here; loading one with the checks and
    descriptor caches of protected mode is the system model's job.
    """

    __slots__ = ("_cpu",)
    _cpu: CPU

    def __init__(self, cpu: CPU) -> None:
        object.__setattr__(self, "_cpu", cpu)

    def __getattr__(self, name: str) -> int:
        cpu = self._cpu
        if name in _GPR32:
            return cpu.r[_GPR32[name]]
        if name in _GPR16:
            return cpu.r[_GPR16[name]] & 0xFFFF
        if name in _GPR8:
            i = _GPR8[name]
            return (cpu.r[i & 3] >> (8 if i & 4 else 0)) & 0xFF
        if name in _SEG:
            return cpu.sreg[_SEG[name]]
        if name in ("eip", "eflags"):
            return getattr(cpu, name)
        if name.startswith("cr") and name[2:].isdigit() and int(name[2:]) < len(cpu.cr):
            return cpu.cr[int(name[2:])]
        raise AttributeError(f"no register named {name!r}")

    def __setattr__(self, name: str, value: int) -> None:
        cpu = self._cpu
        if name in _GPR32:
            cpu.r[_GPR32[name]] = value & M32
        elif name in _GPR16:
            i = _GPR16[name]
            cpu.r[i] = (cpu.r[i] & 0xFFFF0000) | (value & 0xFFFF)
        elif name in _GPR8:
            i = _GPR8[name]
            shift = 8 if i & 4 else 0
            cpu.r[i & 3] = (cpu.r[i & 3] & ~(0xFF << shift) & M32) | ((value & 0xFF) << shift)
        elif name in _SEG:
            cpu.sreg[_SEG[name]] = value & 0xFFFF
        elif name == "eip":
            cpu.eip = value & M32
        elif name == "eflags":
            cpu.eflags = value
        elif name.startswith("cr") and name[2:].isdigit() and int(name[2:]) < len(cpu.cr):
            cpu.cr[int(name[2:])] = value & M32
        else:
            raise AttributeError(f"no register named {name!r}")

    def as_dict(self) -> dict[str, int]:
        """The general registers, EIP and EFLAGS (what tests compare)."""
        values = {name: getattr(self, name) for name in GPR32}
        values["eip"] = self._cpu.eip
        values["eflags"] = self._cpu.eflags
        return values


_GPR32 = {n: i for i, n in enumerate(GPR32)}
_GPR16 = {n: i for i, n in enumerate(GPR16)}
_GPR8 = {n: i for i, n in enumerate(GPR8)}
_SEG = {n: i for i, n in enumerate(SEGMENTS)}
