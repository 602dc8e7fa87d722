"""The local APIC (xAPIC, memory-mapped at 0xFEE00000), one per CPU, and the bus
that carries interrupts and IPIs between them.

Modelled after the Intel SDM Vol. 3A, chapter 10 ("Advanced Programmable
Interrupt Controller"):

* ID, version, TPR, PPR, EOI, LDR, DFR, SVR (software enable, 10.9), ESR
  (10.5.3: a write latches the errors seen since the previous write and a read
  returns the latched value), ISR/IRR/TMR with priority classes (10.8.3), and
  the LVT (10.5.1).
* The LVT timer (10.5.4) counts down on the machine's cycle clock, one count
  every ``divisor * cycles_per_count`` cycles, one-shot or periodic; the
  timer's expiry is computed from the clock lazily, so nothing has to tick: a
  machine asks :meth:`LocalApic.next_event` for the cycle of the next expiry
  and calls :meth:`LocalApic.poll` when it gets there.
* The ICR (10.6): fixed and lowest-priority IPIs by physical or logical
  destination or by shorthand (self, all, all but self), INIT and STARTUP
  (reported to the board, which owns the CPUs' run states), NMI (reported).
  Sending completes at once, so the delivery status bit always reads idle.

Not modelled: x2APIC, the TSC-deadline timer mode, SMI, the thermal and
performance counters themselves (their LVT entries are plain registers), the
arbitration priority (APR reads 0), remote read, level-triggered LINT inputs.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field

from vmi.pc import mask

#: Register offsets (SDM Vol. 3A, Table 10-1).
ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = (
    0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0)
ISR, TMR, IRR, ESR = 0x100, 0x180, 0x200, 0x280
ICR_LOW, ICR_HIGH = 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = (
    0x320, 0x330, 0x340, 0x350, 0x360, 0x370)
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0

#: Version register: version 0x14 (an integrated xAPIC), max LVT entry 5 (six
#: entries: timer, thermal, performance, LINT0, LINT1, error), as QEMU reports.
VERSION_VALUE = 0x0005_0014
LVT_OFFSETS = (LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR)
#: Writable bits of each LVT entry (SDM Figure 10-8; delivery status and
#: remote IRR are read-only).
LVT_WRITABLE = {LVT_TIMER: 0x700FF, LVT_THERMAL: 0x107FF, LVT_PERF: 0x107FF,
                LVT_LINT0: 0x1A7FF, LVT_LINT1: 0x1A7FF, LVT_ERROR: 0x100FF}
LVT_MASKED = 1 << 16
TIMER_PERIODIC = 1 << 17
SVR_ENABLE = 1 << 8
#: ICR fields (SDM Figure 10-12).
ICR_WRITABLE = 0x000C_CFFF
DELIVERY_STATUS = 1 << 12
MODE_FIXED, MODE_LOWEST, MODE_SMI, MODE_NMI, MODE_INIT, MODE_STARTUP = 0, 1, 2, 4, 5, 6
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = 0, 1, 2, 3
#: ESR bits (SDM Figure 10-9).
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

_DEFINED = frozenset(
    [ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR, ESR, ICR_LOW, ICR_HIGH,
     TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE, *LVT_OFFSETS]
    + [base + 0x10 * i for base in (ISR, TMR, IRR) for i in range(8)])


def _highest(bits: int) -> int:
    """The highest set bit's index, or -1."""
    return bits.bit_length() - 1


def divisor(divide_config: int) -> int:
    """The timer's divisor from the divide configuration register (SDM Figure
    10-10: bits 3, 1 and 0; 0b111 divides by 1, else by 2 ** (value + 1))."""
    value = (divide_config >> 1 & 4) | (divide_config & 3)
    return 1 if value == 7 else 2 << value


def _zero_clock() -> int:
    return 0


def _nothing() -> None:
    pass


@define(eq=False)
class LocalApic:
    """One CPU's local APIC. ``clock()`` reads the machine's cycle count;
    ``signal()`` is called whenever a vector lands in the IRR (so a halted CPU
    can wake); ``bus`` carries its IPIs (set by :meth:`ApicBus.attach`)."""

    apic_id: int = 0
    clock: Callable[[], int] = _zero_clock
    signal: Callable[[], None] = _nothing
    #: Machine cycles per timer count before the divider (the "bus clock" ratio).
    cycles_per_count: int = 1
    bus: ApicBus | None = None
    tpr: int = 0
    ldr: int = 0
    dfr: int = 0xFFFF_FFFF
    svr: int = 0xFF
    irr: int = 0
    isr: int = 0
    tmr: int = 0
    esr: int = 0
    #: Errors seen since the last ESR write (latched into ``esr`` by the next write).
    esr_pending: int = 0
    icr_low: int = 0
    icr_high: int = 0
    lvt: dict[int, int] = field(factory=lambda: dict.fromkeys(LVT_OFFSETS, LVT_MASKED))
    timer_initial: int = 0
    timer_divide: int = 0
    #: The count ``timer_start_count`` was loaded (or rebased) at cycle ``timer_start``.
    timer_start: int = 0
    timer_start_count: int = 0
    #: Cycle of the next expiry, or None when the timer is stopped.
    timer_deadline: int | None = None
    timer_expiries: int = 0
    accepted: int = 0

    # -- the MMIO interface (offset within the 4 KiB page) -------------------

    def read(self, offset: int, size: int, cpu_index: int = 0) -> int:
        self.poll()
        reg = offset & ~0xF
        if reg not in _DEFINED:
            self._error(ESR_ILLEGAL_REGISTER)
        return self._narrow(self._register(reg), offset, size)

    def peek(self, offset: int, size: int, cpu_index: int = 0) -> int:
        """The value a read would give, with no side effect (no timer update, no
        error latched)."""
        return self._narrow(self._register(offset & ~0xF), offset, size)

    def write(self, offset: int, size: int, value: int, cpu_index: int = 0) -> None:
        self.poll()
        # Registers are 32 bits wide at 16-byte alignment (SDM 10.4.1); a narrower
        # write lands in its bytes of the register, the rest written as zeros.
        value = (value & mask(size)) << (8 * (offset & 3))
        reg = offset & ~0xF
        if reg == ID:
            self.apic_id = value >> 24
        elif reg == TPR:
            self.tpr = value & 0xFF
        elif reg == EOI:
            self._eoi()
        elif reg == LDR:
            self.ldr = value & 0xFF00_0000
        elif reg == DFR:
            self.dfr = value | 0x0FFF_FFFF
        elif reg == SVR:
            self.svr = value & 0x13FF
            if not self.svr & SVR_ENABLE:  # SDM 10.4.7.2: disabling masks every LVT entry
                for lvt in LVT_OFFSETS:
                    self.lvt[lvt] |= LVT_MASKED
        elif reg == ESR:
            self.esr, self.esr_pending = self.esr_pending, 0
        elif reg == ICR_LOW:
            self.icr_low = value & ICR_WRITABLE
            self._send()
        elif reg == ICR_HIGH:
            self.icr_high = value & 0xFF00_0000
        elif reg in self.lvt:
            if reg == LVT_TIMER:
                self._rebase()
            value &= LVT_WRITABLE[reg]
            if not self.svr & SVR_ENABLE:
                value |= LVT_MASKED  # the mask cannot be cleared while disabled
            self.lvt[reg] = value
        elif reg == TIMER_INITIAL:
            self.timer_initial = value
            self._start(value)
        elif reg == TIMER_DIVIDE:
            self._rebase()
            self.timer_divide = value & 0xB
            if self.timer_deadline is not None:  # go on from the current count
                self._start(self.timer_start_count)
        elif reg not in _DEFINED:
            self._error(ESR_ILLEGAL_REGISTER)
        # Read-only registers (version, PPR, APR, ISR, TMR, IRR, current count)
        # ignore writes.

    @staticmethod
    def _narrow(value: int, offset: int, size: int) -> int:
        return (value >> (8 * (offset & 3))) & mask(size)

    def _register(self, reg: int) -> int:
        if reg == ID:
            return self.apic_id << 24
        if reg == VERSION:
            return VERSION_VALUE
        if reg == TPR:
            return self.tpr
        if reg == PPR:
            return self.ppr()
        if reg == LDR:
            return self.ldr
        if reg == DFR:
            return self.dfr
        if reg == SVR:
            return self.svr
        if ISR <= reg < ISR + 0x80:
            return self.isr >> (2 * (reg - ISR)) & 0xFFFF_FFFF
        if TMR <= reg < TMR + 0x80:
            return self.tmr >> (2 * (reg - TMR)) & 0xFFFF_FFFF
        if IRR <= reg < IRR + 0x80:
            return self.irr >> (2 * (reg - IRR)) & 0xFFFF_FFFF
        if reg == ESR:
            return self.esr
        if reg == ICR_LOW:
            return self.icr_low  # delivery status: idle, sending completes at once
        if reg == ICR_HIGH:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == TIMER_INITIAL:
            return self.timer_initial
        if reg == TIMER_CURRENT:
            return self.current_count()
        if reg == TIMER_DIVIDE:
            return self.timer_divide
        return 0  # APR, EOI, RRD (write-only or unmodelled) and reserved offsets

    # -- priorities and interrupt acceptance (SDM 10.8) ----------------------

    def ppr(self) -> int:
        """Processor priority (SDM 10.8.3.1): the TPR, or the class of the
        highest in-service vector when that is higher."""
        isrv = max(_highest(self.isr), 0)
        return self.tpr if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    def accept(self, vector: int, level: bool = False) -> None:
        """A fixed interrupt arrives (from an IPI, the IOAPIC or an LVT entry):
        it is held in the IRR; vectors 0-15 are illegal (SDM 10.5.2) and only
        latch an error."""
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        self.irr |= bit
        self.tmr = self.tmr | bit if level else self.tmr & ~bit
        self.accepted += 1
        self.signal()

    def pending_vector(self) -> int | None:
        """The vector the CPU would take now (the highest IRR vector whose
        priority class is above the PPR's), or None. No side effect."""
        vector = _highest(self.irr)
        if vector < 0 or (vector >> 4) <= (self.ppr() >> 4):
            return None
        return vector

    def acknowledge(self) -> int:
        """The CPU takes an interrupt (the INTA cycle): the pending vector moves
        from the IRR to the ISR. With nothing deliverable the answer is the
        spurious vector from the SVR (SDM 10.9), which is not put in service."""
        self.poll()
        vector = self.pending_vector()
        if vector is None:
            return self.svr & 0xFF
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    def _eoi(self) -> None:
        vector = _highest(self.isr)
        if vector < 0:
            return
        self.isr &= ~(1 << vector)
        if self.tmr >> vector & 1 and self.bus is not None:
            self.bus.broadcast_eoi(vector)  # level-triggered: tell the IOAPICs

    def _error(self, bit: int) -> None:
        self.esr_pending |= bit
        lvt = self.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED:
            self.accept(lvt & 0xFF)

    # -- the timer (SDM 10.5.4) ----------------------------------------------

    def _period(self) -> int:
        return divisor(self.timer_divide) * self.cycles_per_count

    def _periodic(self) -> bool:
        return bool(self.lvt[LVT_TIMER] & TIMER_PERIODIC)

    def _start(self, count: int) -> None:
        now = self.clock()
        self.timer_start, self.timer_start_count = now, count
        self.timer_deadline = now + count * self._period() if count else None

    def _rebase(self) -> None:
        """Restart counting from the current count at the current cycle (before
        the divider or the mode changes), so the count goes on from where it is."""
        if self.timer_deadline is None:
            return
        elapsed = (self.clock() - self.timer_start) // self._period()
        count = self.current_count()
        self.timer_start += elapsed * self._period()
        self.timer_start_count = count

    def current_count(self) -> int:
        """The current-count register at the clock's cycle."""
        if self.timer_deadline is None:
            return 0
        elapsed = (self.clock() - self.timer_start) // self._period()
        if elapsed < self.timer_start_count:
            return self.timer_start_count - elapsed
        if not self._periodic() or not self.timer_initial:
            return 0
        return self.timer_initial - (elapsed - self.timer_start_count) % self.timer_initial

    def next_event(self) -> int | None:
        """The cycle at which this APIC next wants :meth:`poll` (its timer's
        next unmasked expiry), or None."""
        if self.timer_deadline is None or self.lvt[LVT_TIMER] & LVT_MASKED:
            return None
        return self.timer_deadline

    def poll(self) -> None:
        """Bring the timer up to the clock: an expiry at or before now puts the
        timer's vector in the IRR (once, however many periods passed: the IRR
        holds one of each vector) unless masked, and re-arms a periodic timer."""
        deadline = self.timer_deadline
        if deadline is None:
            return
        now = self.clock()
        if now < deadline:
            return
        self.timer_expiries += 1
        lvt = self.lvt[LVT_TIMER]
        if self._periodic() and self.timer_initial:
            reload = self.timer_initial * self._period()
            self.timer_deadline = deadline + reload * (1 + (now - deadline) // reload)
        else:
            self.timer_deadline = None
        if not lvt & LVT_MASKED:
            self.accept(lvt & 0xFF)

    # -- IPIs ----------------------------------------------------------------

    def _send(self) -> None:
        mode = self.icr_low >> 8 & 7
        vector = self.icr_low & 0xFF
        if mode in (MODE_FIXED, MODE_LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        if self.bus is not None:
            self.bus.send(self, self.icr_low, self.icr_high >> 24)

    def reset(self) -> None:
        """Power-up or INIT state (SDM 10.4.7.1, 10.4.7.3): everything but the ID."""
        keep = (self.apic_id, self.clock, self.signal, self.cycles_per_count, self.bus)
        fresh = LocalApic(*keep)
        for name in _STATE:
            setattr(self, name, getattr(fresh, name))

    # -- snapshots -----------------------------------------------------------

    def state(self) -> dict:
        out = {name: getattr(self, name) for name in _STATE}
        for name in ("irr", "isr", "tmr"):
            out[name] = f"{out[name]:x}"  # 256-bit: hex keeps every JSON reader exact
        out["lvt"] = {f"{k:#x}": v for k, v in self.lvt.items()}
        out["apic_id"] = self.apic_id
        return out

    def set_state(self, state: dict) -> None:
        for name in _STATE:
            setattr(self, name, state[name])
        for name in ("irr", "isr", "tmr"):
            setattr(self, name, int(state[name], 16))
        self.lvt = {int(k, 16): v for k, v in state["lvt"].items()}
        self.apic_id = state["apic_id"]


_STATE = ("tpr", "ldr", "dfr", "svr", "irr", "isr", "tmr", "esr", "esr_pending",
          "icr_low", "icr_high", "lvt", "timer_initial", "timer_divide", "timer_start",
          "timer_start_count", "timer_deadline", "timer_expiries", "accepted")


def _no_init(cpu_index: int) -> None:
    pass


def _no_startup(cpu_index: int, address: int) -> None:
    pass


def _no_eoi(vector: int) -> None:
    pass


@define(eq=False)
class ApicBus:
    """The APIC bus of a machine: every CPU's local APIC, the 0xFEE00000 window
    that shows each CPU its own APIC, and the routing of IPIs and IOAPIC
    messages (SDM 10.6.2). INIT resets the target's APIC and calls
    ``init(cpu_index)``; STARTUP calls ``startup(cpu_index, address)`` with the
    vector's 4 KiB page (vector << 12, SDM 10.6.1); NMI calls ``nmi(cpu_index)``.
    Whether a CPU heeds them (a STARTUP only wakes a CPU waiting for one) is the
    board's business. Level-triggered EOIs go to ``eoi(vector)`` (the IOAPIC)."""

    BASE = 0xFEE0_0000
    SIZE = 0x1000

    apics: list[LocalApic] = field(factory=list)
    init: Callable[[int], None] = _no_init
    startup: Callable[[int, int], None] = _no_startup
    nmi: Callable[[int], None] = _no_init
    eoi: Callable[[int], None] = _no_eoi
    #: IPIs sent and INIT level de-asserts seen (the latter do nothing here).
    sent: int = 0
    deasserts: int = 0

    def attach(self, apic: LocalApic) -> LocalApic:
        """Add the next CPU's APIC (CPU index = order of attachment)."""
        apic.bus = self
        self.apics.append(apic)
        return apic

    # The window: each CPU sees its own APIC at the same address.
    def read(self, offset: int, size: int, cpu_index: int) -> int:
        return self.apics[cpu_index].read(offset, size, cpu_index)

    def write(self, offset: int, size: int, value: int, cpu_index: int) -> None:
        self.apics[cpu_index].write(offset, size, value, cpu_index)

    def peek(self, offset: int, size: int, cpu_index: int) -> int:
        return self.apics[cpu_index].peek(offset, size, cpu_index)

    def next_event(self) -> int | None:
        events = [e for apic in self.apics if (e := apic.next_event()) is not None]
        return min(events, default=None)

    def poll(self) -> None:
        for apic in self.apics:
            apic.poll()

    def _matches(self, apic: LocalApic, destination: int, logical: bool) -> bool:
        if not logical:
            return destination == 0xFF or apic.apic_id == destination
        ldr = apic.ldr >> 24
        if apic.dfr >> 28 == 0xF:  # flat model: a bit per APIC
            return bool(ldr & destination)
        # cluster model: high nibble the cluster (15 = all), low nibble a bit mask
        cluster = destination >> 4
        return (cluster in (0xF, ldr >> 4)) and bool(ldr & destination & 0xF)

    def targets(self, destination: int, logical: bool) -> list[LocalApic]:
        return [a for a in self.apics if self._matches(a, destination, logical)]

    def send(self, source: LocalApic, icr_low: int, destination: int) -> None:
        """Deliver the IPI ``source`` wrote to its ICR."""
        self.sent += 1
        shorthand = icr_low >> 18 & 3
        if shorthand == SHORTHAND_SELF:
            targets = [source]
        elif shorthand == SHORTHAND_ALL:
            targets = list(self.apics)
        elif shorthand == SHORTHAND_OTHERS:
            targets = [a for a in self.apics if a is not source]
        else:
            targets = self.targets(destination, bool(icr_low & 1 << 11))
        mode = icr_low >> 8 & 7
        vector = icr_low & 0xFF
        level = bool(icr_low & 1 << 15)
        if mode == MODE_INIT and level and not icr_low & 1 << 14:
            self.deasserts += 1  # INIT level de-assert (SDM 10.6.1): no effect here
            return
        self._deliver(targets, mode, vector, level)

    def _deliver(self, targets: list[LocalApic], mode: int, vector: int,
                 level: bool) -> None:
        if mode == MODE_LOWEST and targets:
            targets = [min(targets, key=lambda a: (a.tpr, a.apic_id))]
        for apic in targets:
            index = self.apics.index(apic)
            if mode in (MODE_FIXED, MODE_LOWEST):
                apic.accept(vector, level)
            elif mode == MODE_INIT:
                apic.reset()
                self.init(index)
            elif mode == MODE_STARTUP:
                self.startup(index, vector << 12)
            elif mode == MODE_NMI:
                self.nmi(index)
            # SMI and the reserved modes are not modelled: dropped.

    def deliver_io(self, destination: int, vector: int, logical: bool = False,
                   level: bool = False, mode: int = MODE_FIXED) -> None:
        """A message from the IOAPIC (its redirection entry's fields)."""
        self._deliver(self.targets(destination, logical), mode, vector, level)

    def broadcast_eoi(self, vector: int) -> None:
        self.eoi(vector)

    def state(self) -> dict:
        return {"apics": [a.state() for a in self.apics], "sent": self.sent,
                "deasserts": self.deasserts}

    def set_state(self, state: dict) -> None:
        if len(state["apics"]) != len(self.apics):
            raise ValueError(f"the state has {len(state['apics'])} local APICs, "
                             f"this machine {len(self.apics)}")
        for apic, s in zip(self.apics, state["apics"], strict=True):
            apic.set_state(s)
        self.sent = state["sent"]
        self.deasserts = state["deasserts"]
