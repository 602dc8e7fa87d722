"""The VMI monitor: a platform (``deliver_exception``, ``deliver_interrupt``; see
``vmi.cpu.platform``) that runs a guest kernel deprivileged at ring 1 with IOPL 0 and
the real IF always 1, as the 32-bit hypervisors of 2006 did, behind the ROM of
``rom.S``. docs/hypervisor.md describes the whole design; in short:

* **Before Init** a CPU runs natively (the monitor hands its events to the native
  platform), standing in for the full-virtualisation phase before a guest opts in.
  The guest finds the ROM by its signature and calls Init (call 4) at CPL 0 with
  paging on; the first Init patches every annotated hook site of the images given to
  the monitor; each Init deprivileges its CPU: virtual copies of CR0-CR4, GDTR, IDTR,
  TR, LDTR and the SYSENTER MSRs; a shadow GDT and page directory (``shadow``); CPL 1.
* **Trap and emulate**: #GP from a privileged instruction at ring 1 is decoded and
  done on the virtual state (``emulate``); a user ``sysenter`` (the real
  IA32_SYSENTER_CS is 0) is done from the virtual MSRs.
* **Injection**: external interrupts, the guest's exceptions and ``int $0x80`` are
  delivered through the guest's own IDT by building the native frame (EIP, CS,
  EFLAGS with the virtual IF in bit 9, ESP/SS from ring 3, error code) on the guest
  kernel stack (esp0 read from the guest's TSS at that moment) and entering the
  handler at ring 1; an interrupt gate clears the virtual IF.
* **Task gates and call gates** of the guest: an event whose guest IDT entry is
  a task gate (the bundled kernel's #DF) is switched by the monitor on the guest's
  TSSs and GDT; a far CALL or JMP through a guest call gate (shadowed not
  present, so it faults here) is performed by the monitor at ring 1.
* **Virtual IF**: a word in the shared page. An interrupt that arrives while it is 0
  becomes pending (in memory, with a flag the ROM tests); the ROM's Enable,
  SetInterruptMask, IRET and SYSEXIT take pending events through hypercalls, and
  every exit ends by delivering what is deliverable.
* **The window** (the seed's IRET race): an interrupt that arrives while EIP is in
  the ROM's IRET or SYSEXIT window is handled by the policy: ``defer`` (lguest: run
  the guest to the end of the window, then deliver), ``fixup`` (Xen: deliver on the
  frame the IRET was returning through, as if the IRET had completed, so the exit
  path re-runs), ``none`` (ignore the window: the race happens).
* **16-bit stacks** (the seed's deferred case): an IRET that lands on a 16-bit
  stack segment is handed by the ROM to the monitor, which performs it with the
  frame's whole ESP (its espfix); one that runs on a 16-bit stack is refused: a
  report and #GP at the site.
* **Costs**: every exit adds a documented number of cycles (``EXIT_COSTS``) to the
  CPU's counter and is counted by kind (``MonitorStats``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from attrs import define, field

from vmi.cpu import flags as fl
from vmi.cpu import gates, iobitmap, paging, protected, tasks
from vmi.cpu.descriptors import (
    ATTR_UNUSABLE,
    SYS_CALL_GATE16,
    SYS_CALL_GATE32,
    SYS_LDT,
    SYS_TSS32_AVAILABLE,
    SegmentDescriptor,
    cache_of,
    describe,
    fetch_descriptor,
    idt_error,
    is_null,
    read_gate,
    read_linear32,
    selector_error,
)
from vmi.cpu.errors import (
    GP,
    NP,
    PF,
    SS,
    TS,
    UD,
    VECTOR_NAMES,
    CPUException,
    DecodeError,
)
from vmi.cpu.platform import NativePlatform
from vmi.cpu.protected import (
    CS,
    DS,
    ES,
    FS,
    GS,
    M32,
    SEGMENT_NAMES,
    SS_REG,
    is_software,
    refresh,
)
from vmi.hypervisor import emulate, layout, shadow
from vmi.hypervisor.errors import MonitorRefusal
from vmi.hypervisor.patcher import PatchedSite, SkippedSite, patch_sites
from vmi.hypervisor.rom import Rom, Window, build_rom
from vmi.hypervisor.vcpu import VirtualCPU

POLICIES = ("defer", "fixup", "none")
MODES = ("vmi", "naive")

#: Cycles an exit adds to the CPU's counter, by kind. The round trip into a monitor
#: and back costs about an i486 INT to an inner level (71 cycles) plus an IRET to an
#: outer level (36): 107; the kinds add the monitor's own work on top.
EXIT_COSTS = {
    "trap": 107,  # a guest exception (or int n) taken by the monitor and reflected
    "emulation": 107 + 50,  # a privileged instruction decoded and emulated
    "interrupt": 107,  # an external interrupt taken by the monitor
    "rom_call": 107,  # a hypercall from the ROM (its ud2)
    "shadow": 107 + 60,  # a hidden fault: shadow directory or GDT refreshed, retried
}
#: Building one native frame in software: about what the hardware delivery it
#: replaces costs on an i486 (INT through an interrupt gate, 71 cycles).
FRAME_COST = 71
#: Rewriting a window's state for a fixup delivery (a few loads and stores).
FIXUP_COST = 20
#: At most this many guest instructions are stepped to leave a window (``defer``);
#: the ROM's windows are straight-line code of a handful of instructions.
WINDOW_STEP_LIMIT = 32


@define
class MonitorStats:
    """What the monitor counted (``as_dict()`` is what ``vmi run --json`` prints)."""

    exits: Counter[str] = field(factory=Counter)
    exit_cycles: int = 0
    emulated: Counter[str] = field(factory=Counter)
    hypercalls: Counter[str] = field(factory=Counter)
    injected: Counter[str] = field(factory=Counter)  # by vector name
    frames: int = 0
    pending_recorded: int = 0
    deferred: int = 0
    fixups: int = 0
    nested_in_window: int = 0
    stale_pending: int = 0
    iret16_refused: int = 0
    iret16_espfix: int = 0
    unimplemented_calls: Counter[int] = field(factory=Counter)
    patched: list[PatchedSite] = field(factory=list)
    skipped: list[SkippedSite] = field(factory=list)
    reports: list[str] = field(factory=list)

    def copy(self) -> MonitorStats:
        """An independent copy (counters and lists copied; their items are immutable),
        cheap enough for a snapshot at every boundary."""
        return attrs.evolve(
            self, exits=Counter(self.exits), emulated=Counter(self.emulated),
            hypercalls=Counter(self.hypercalls), injected=Counter(self.injected),
            unimplemented_calls=Counter(self.unimplemented_calls),
            patched=list(self.patched), skipped=list(self.skipped),
            reports=list(self.reports))

    @property
    def patched_sites(self) -> int:
        return len(self.patched)

    def as_dict(self) -> dict[str, Any]:
        return {
            "exits": dict(sorted(self.exits.items())),
            "exit_cycles": self.exit_cycles,
            "emulated": dict(sorted(self.emulated.items())),
            "hypercalls": dict(sorted(self.hypercalls.items())),
            "injected": dict(sorted(self.injected.items())),
            "frames": self.frames,
            "pending_recorded": self.pending_recorded,
            "deferred": self.deferred,
            "fixups": self.fixups,
            "nested_in_window": self.nested_in_window,
            "stale_pending": self.stale_pending,
            "iret16_refused": self.iret16_refused,
            "iret16_espfix": self.iret16_espfix,
            "unimplemented_calls": {str(k): v for k, v in self.unimplemented_calls.items()},
            "patched_sites": self.patched_sites,
            "skipped_sites": len(self.skipped),
            "reports": list(self.reports),
        }


def _vector_name(vector: int) -> str:
    return VECTOR_NAMES.get(vector, f"{vector:#04x}")


class VMIMonitor:
    """The monitor (see the module docstring). ``policy`` is ``defer``, ``fixup`` or
    ``none``; ``mode`` is ``vmi`` (patched images, the ROM's windows known) or
    ``naive`` (the ``naive`` macro set's inline hooks: nothing is patched and no
    window is known, so the policy is ``none``). ``programs`` are the guest images
    whose ``annotations`` the first Init patches (anything with an ``annotations``
    attribute of ``vmi.asm.Annotation`` records).

    Attach it to a machine with ``attach(machine)`` (or use ``vmi.hypervisor.boot``).
    """

    def __init__(self, *, policy: str = "defer", mode: str = "vmi",
                 programs: Iterable[Any] = ()) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose one of {', '.join(MODES)})")
        if policy not in POLICIES:
            raise ValueError(f"unknown window policy {policy!r} (choose one of "
                             f"{', '.join(POLICIES)})")
        self.mode = mode
        self.policy = policy if mode == "vmi" else "none"
        self.rom: Rom = build_rom()
        self.annotations = [note for program in programs
                            for note in getattr(program, "annotations", ())]
        self.native = NativePlatform()
        self.stats = MonitorStats()
        #: Called with ``(vector, kind)`` for each event handed to the monitor (kind
        #: "exception" or "interrupt"), as ``NativePlatform.trace`` (the debugger's
        #: ``catch exception`` listens here).
        self.trace: Callable[[int, str], None] | None = None
        self.machine: Any = None
        self._vcpus: dict[int, VirtualCPU] = {}
        self._hypercall_offsets = self.rom.hypercalls
        symbols = self.rom.symbols
        self._iret_pop = symbols["vmi_iret_pop"]
        self._iret_drop = symbols["vmi_iret_drop"]
        self._iret_insn = symbols["vmi_iret_insn"]
        self._sysexit_insn = symbols["vmi_sysexit_insn"]

    # -- setting up ---------------------------------------------------------------------
    def attach(self, machine: Any) -> VMIMonitor:
        """Become ``machine``'s platform: write the ROM into the option-ROM hole, clear
        the monitor's pages, and take every CPU's events from now on."""
        if len(machine.cpus) > layout.MAX_CPUS:
            raise ValueError(f"the monitor has room for {layout.MAX_CPUS} CPUs, the "
                             f"machine has {len(machine.cpus)}")
        mem = machine.memory
        if mem.size < layout.MONITOR_PHYSICAL_END:
            raise ValueError("the monitor needs at least 1 MiB of memory")
        mem.write_bytes(layout.ROM_PHYSICAL, self.rom.image)
        end = layout.cpu_page(len(machine.cpus) - 1, layout.PER_CPU_PAGES - 1) + 0x1000
        mem.write_bytes(layout.GLOBAL_PHYSICAL, bytes(end - layout.GLOBAL_PHYSICAL))
        self.machine = machine
        machine.platform = self
        for cpu in machine.cpus:
            cpu.platform = self
        return self

    def vcpu(self, cpu: Any) -> VirtualCPU:
        v = self._vcpus.get(cpu.index)
        if v is None or v.mem is not cpu.mem:
            v = self._vcpus[cpu.index] = VirtualCPU(cpu.mem, cpu.index)
        return v

    def active(self, cpu: Any) -> bool:
        """Whether ``cpu`` runs deprivileged under the monitor (it called Init)."""
        return bool(self.vcpu(cpu).active)

    # -- for the debugger (docs/debugger.md, "Hooks for the hypervisor") ----------------
    def annotate(self, machine: Any, cpu: Any) -> list[str]:
        """Lines the debugger prints under a CPU's state: whether it runs under the
        monitor, the virtual IF, pending events, and the ROM window EIP is in."""
        vcpu = self.vcpu(cpu)
        if not vcpu.active:
            return [f"vmi: native (Init not called); policy {self.policy}, mode {self.mode}"]
        pending = vcpu.pending
        vectors = ",".join(f"{v:#x}" for v in range(256) if pending >> v & 1) or "none"
        line = (f"vmi: ring {cpu.cpl} under the monitor, virtual IF "
                f"{'on' if vcpu.interrupts_enabled else 'off'}, pending {vectors}")
        lines = [line]
        window = self.rom.window_at((cpu.seg_base[CS] + cpu.eip) & M32)
        if window is not None and cpu.cpl == 1:
            lines.append(f"vmi: inside the {window.name.upper()} window "
                         f"[{window.start:#x}, {window.end:#x}) (policy {self.policy})")
        return lines

    def snapshot(self) -> MonitorStats:
        """The monitor's state outside guest memory (its statistics: the virtual
        processor state is in memory and travels with ``Machine.snapshot``)."""
        return self.stats.copy()

    def restore(self, state: MonitorStats) -> None:
        self.stats = state.copy()

    # -- accounting ---------------------------------------------------------------------
    def _exit(self, cpu: Any, kind: str) -> None:
        cost = EXIT_COSTS[kind]
        self.stats.exits[kind] += 1
        self.stats.exit_cycles += cost
        cpu.cycles += cost
        if kind == "rom_call":
            return  # the ROM's Enable comes here on purpose, with the IF on and events
        vcpu = self.vcpu(cpu)
        if vcpu.pending and vcpu.interrupts_enabled and not cpu.halted:
            # an event waited although the guest had interrupts on: it was left
            # behind by a window (policy none) or an inline naive hook
            self.stats.stale_pending += 1

    def _charge(self, cpu: Any, cycles: int) -> None:
        self.stats.exit_cycles += cycles
        cpu.cycles += cycles

    def report(self, text: str) -> None:
        self.stats.reports.append(text)

    # -- the platform ---------------------------------------------------------------------
    def io_map_denied(self, cpu: Any, port: int, size: int) -> str | None:
        """The I/O permission check of the real processor (``vmi.cpu.iobitmap``): the
        monitor owns the real task state, so it answers for a deprivileged guest
        (``emulate.io_map_denied``); a CPU not yet under the monitor has its own TSS."""
        vcpu = self.vcpu(cpu)
        if not vcpu.active:
            return iobitmap.io_denied(cpu, port, size)
        return emulate.io_map_denied(cpu, vcpu, port, size)

    def deliver_exception(self, cpu: Any, exc: CPUException) -> None:
        if self.trace is not None:
            self.trace(exc.vector, "exception")
        vcpu = self.vcpu(cpu)
        if not vcpu.active:
            if exc.vector == UD and cpu.cpl == 0 and self._hypercall_name(cpu) == "init":
                self._exit(cpu, "rom_call")
                self.stats.hypercalls["init"] += 1
                self._init(cpu, vcpu)
                return
            self.native.deliver_exception(cpu, exc)
            return
        if cpu.cpl == 0:
            raise MonitorRefusal(f"cpu{cpu.index} is at CPL 0 under the monitor")
        vector = exc.vector
        if vector == UD and cpu.cpl == 1:
            name = self._hypercall_name(cpu)
            if name is not None:
                self._exit(cpu, "rom_call")
                self.stats.hypercalls[name] += 1
                self._hypercall(cpu, vcpu, name)
                self._resume(cpu, vcpu)
                return
        if vector == GP and not is_software(exc) and self._try_emulate(cpu, vcpu):
            self._resume(cpu, vcpu)
            return
        if vector == PF and not is_software(exc):
            if shadow.sync_entry(cpu.mem, vcpu.cr3, vcpu.index, cpu.cr[2] >> 22):
                self._exit(cpu, "shadow")
                paging.flush_tlb(cpu)
                cpu.forget_code()
                return
        if vector in (GP, NP, SS, TS) and exc.error_code and not is_software(exc):
            if self.rebuild_gdt(cpu, vcpu):  # a descriptor the guest changed: retry
                self._exit(cpu, "shadow")
                return
        if vector == NP and not is_software(exc) and self._try_call_gate(cpu, vcpu, exc):
            self._resume(cpu, vcpu)
            return
        self._exit(cpu, "trap")
        self._reflect(cpu, vcpu, exc)
        self._resume(cpu, vcpu)

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        if self.trace is not None:
            self.trace(vector, "interrupt")
        vcpu = self.vcpu(cpu)
        if not vcpu.active:
            self.native.deliver_interrupt(cpu, vector)
            return
        self._exit(cpu, "interrupt")
        if vcpu.add_pending(vector):
            self.stats.pending_recorded += 1
        self._resume(cpu, vcpu)

    # -- resuming the guest: deliver what is deliverable, under the window policy -------
    def _resume(self, cpu: Any, vcpu: VirtualCPU) -> None:
        if not vcpu.pending:
            return
        window = self._window(cpu)
        if window is not None:
            if self.policy == "defer":
                self.stats.deferred += 1
                self._leave_window(cpu)
            elif self.policy == "fixup":
                frame, eax = self._window_frame(cpu, window)
                if self._frame_enables(cpu, window, frame):
                    self.stats.fixups += 1
                    self._charge(cpu, FIXUP_COST)
                    self._deliver_on_frame(cpu, vcpu, frame, eax)
                return
        while vcpu.pending and vcpu.interrupts_enabled:
            if self._window(cpu) is not None:
                self.stats.nested_in_window += 1
            vector = vcpu.take_pending()
            assert vector is not None
            self._inject(cpu, vcpu, vector, None, external=True)

    def _window(self, cpu: Any) -> Window | None:
        if self.mode != "vmi" or cpu.cpl != 1:
            return None
        return self.rom.window_at((cpu.seg_base[CS] + cpu.eip) & M32)

    def _leave_window(self, cpu: Any) -> None:
        """``defer``: run the guest until its EIP has left the window (the lguest rule:
        no injection inside ``[noirq_start, noirq_end)``, reference §3), as a monitor
        would by single-stepping it; the instructions retire on the CPU as usual."""
        for _ in range(WINDOW_STEP_LIMIT):
            if self._window(cpu) is None or cpu.halted:
                return
            cpu.run(1)
        raise MonitorRefusal(f"cpu{cpu.index} did not leave the ROM window at "
                             f"{cpu.eip:#x} within {WINDOW_STEP_LIMIT} instructions")

    def _window_frame(self, cpu: Any, window: Window | None) -> tuple[int, int | None]:
        """Where the frame the window is returning through lies, and the guest's EAX if
        the ROM still holds it on the stack (the table of Xen's fixup, reference §2:
        what the window has popped so far, read from EIP)."""
        eip = (cpu.seg_base[CS] + cpu.eip) & M32
        esp = cpu.r[4]
        if window is self.rom.sysexit_window or eip == self.rom.symbols["hc_sysexit_pending"]:
            return esp, None  # the ROM-built frame is complete at ESP
        if eip <= self._iret_pop or eip == self.rom.symbols["hc_iret_pending"]:
            return (esp + 8) & M32, int(cpu.rd32(SS_REG, esp))
        if eip == self._iret_drop:
            return (esp + 4) & M32, None
        return esp, None  # at the iret itself

    def _frame_enables(self, cpu: Any, window: Window, frame: int) -> bool:
        """Whether completing the window turns the virtual IF on: SYSEXIT always does;
        IRET if the frame's EFLAGS image has IF."""
        if window is self.rom.sysexit_window:
            return True
        return bool(cpu.rd32(SS_REG, (frame + 8) & M32) & fl.IF)

    # -- hypercalls ------------------------------------------------------------------------
    def _hypercall_name(self, cpu: Any) -> str | None:
        """The hypercall whose ``ud2`` is at CS:EIP (found by its physical address in
        the ROM, whatever the mapping it was called through), or None."""
        linear = (cpu.seg_base[CS] + cpu.eip) & M32
        if cpu.cr[0] & 0x80000000:
            physical = shadow.walk(cpu.mem, cpu.cr[3], cpu.cr[4], linear)
        else:
            physical = linear
        if physical is None:
            return None
        offset = physical - layout.ROM_PHYSICAL
        if not 0 <= offset < layout.ROM_SIZE:
            return None
        name = self._hypercall_offsets.get(offset)
        if name is None and offset in self.rom.unimplemented:
            return "unimplemented"
        return name

    def _return_from_call(self, cpu: Any) -> int:
        """Finish the ``call ROM+32*N`` as the ROM's ``ret`` would; returns the site."""
        ret = int(cpu.rd32(SS_REG, cpu.r[4]))
        cpu.r[4] = (cpu.r[4] + 4) & M32
        cpu.eip = ret
        return (ret - 5) & M32

    def _hypercall(self, cpu: Any, vcpu: VirtualCPU, name: str) -> None:
        try:
            if name == "init":
                cpu.r[0] = 0  # already deprivileged: nothing to do
                self._return_from_call(cpu)
            elif name == "wrmsr":
                emulate.write_guest_msr(cpu, vcpu, cpu.r[1], cpu.r[2] << 32 | cpu.r[0])
                self._return_from_call(cpu)
            elif name == "rdmsr":
                value = emulate.read_guest_msr(cpu, vcpu, cpu.r[1])
                cpu.r[0], cpu.r[2] = value & M32, value >> 32 & M32
                self._return_from_call(cpu)
            elif name == "clts":
                emulate.emulate_clts(self, cpu, vcpu, None)
                self._return_from_call(cpu)
            elif name == "halt":
                self._return_from_call(cpu)
                self.halt(cpu, vcpu)
            elif name == "sti_pending":
                self._return_from_call(cpu)  # the virtual IF is on: _resume delivers
            elif name in ("iret_pending", "sysexit_pending"):
                self._take_on_window_frame(cpu, vcpu)
            elif name == "iret16":
                if cpu.stack_bits == 32:
                    self._espfix_iret(cpu, vcpu)
                else:
                    self._refuse_iret16(cpu, vcpu)
            else:
                self._unimplemented_call(cpu, vcpu)
        except CPUException as fault:  # an MSR the guest may not use, a bad stack...
            self._reflect(cpu, vcpu, fault)

    def _take_on_window_frame(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """The ROM's IRET or SYSEXIT found events pending while it was about to enable
        the virtual IF: deliver the first one on the frame it was returning through
        ("IRET enabling IF takes the pending interrupt", reference §2 pv-ops)."""
        frame, eax = self._window_frame(cpu, None)
        self._deliver_on_frame(cpu, vcpu, frame, eax)

    def _espfix_iret(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """An IRET from the flat kernel stack that lands on a 16-bit user stack: the
        monitor's espfix. The real ``iret`` would load only SP and leave the kernel's
        ESP[31:16] in the user's ESP (reference §4); natively ldt_ss avoids that by
        returning through a 16-bit stack whose ESP[31:16] is already the user's. A
        ring-1 guest cannot use that trick through the ROM (VMI calls need a flat SS),
        so the monitor performs the return itself, as one step outside any window:
        the processor's own IRET checks and commit, then the frame's whole ESP, and
        the virtual IF from the frame's EFLAGS image. A fault of the return is
        reported at the call site with the stack as it was there, like a native
        ``iret`` fault (the kernel's exception table applies)."""
        frame = self._back_to_iret_site(cpu, vcpu)  # where a fault is reported
        user_esp = int(cpu.rd32(SS_REG, (frame + 12) & M32))
        image = int(cpu.rd32(SS_REG, (frame + 8) & M32))
        try:
            protected.iret(cpu, 32)
        except CPUException as fault:
            self._inject(cpu, vcpu, fault.vector, fault.error_code)
            return
        cpu.r[4] = user_esp  # the espfix: ESP[31:16] is the user's, not the kernel's
        cpu.flags |= fl.IF  # the real IF stays 1 (CPL 1 > IOPL 0 kept it anyway)
        vcpu.vif = image & fl.IF
        self.stats.iret16_espfix += 1
        self._resume(cpu, vcpu)

    def _refuse_iret16(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """An IRET that runs on a 16-bit stack segment (the seed: no hypervisor support
        for IRETs on 16-bit stacks; a ring-1 guest's VMI calls need a flat SS): undo
        the ROM's work so the state is the site's, report, and raise #GP naming the
        16-bit stack segment at the site, where the kernel's exception table sends it
        to its iret fault path. (One that lands on a 16-bit stack from a flat one gets
        ``_espfix_iret``.)"""
        self._back_to_iret_site(cpu, vcpu)
        selector = cpu.sreg[SS_REG]
        self.stats.iret16_refused += 1
        self.report(f"cpu{cpu.index}: IRET at {cpu.eip:#010x} running on the 16-bit stack "
                    f"segment {selector:#06x} refused (not supported under VMI, as the seed "
                    f"says); #GP({selector & 0xFFFC:#x}) raised in the guest")
        self._inject(cpu, vcpu, GP, selector & 0xFFFC)

    @staticmethod
    def _back_to_iret_site(cpu: Any, vcpu: VirtualCPU) -> int:
        """Undo what the ROM's IRET did before its ``hc_iret16`` hypercall (it pushed
        EAX; the call pushed the return address): EAX restored, ESP on the IRET frame,
        EIP at the site (return address - 5), the virtual IF off as the kernel had it
        (entry.S calls IRET with interrupts off). Returns the frame's address."""
        mask = M32 if cpu.stack_bits == 32 else 0xFFFF
        sp = cpu.r[4] & mask
        cpu.r[0] = int(cpu.rd32(SS_REG, sp))
        ret = int(cpu.rd32(SS_REG, (sp + 4) & mask))
        frame = (sp + 8) & mask
        cpu.r[4] = (cpu.r[4] & ~mask & M32) | frame
        cpu.eip = (ret - 5) & M32
        vcpu.vif = 0
        return frame

    def _unimplemented_call(self, cpu: Any, vcpu: VirtualCPU) -> None:
        linear = (cpu.seg_base[CS] + cpu.eip) & M32
        call = (linear - layout.ROM_LINEAR) // layout.SLOT_SIZE
        site = self._return_from_call(cpu)
        cpu.r[4] = (cpu.r[4] - 4) & M32  # leave the stack as at the site
        cpu.eip = site
        self.stats.unimplemented_calls[call] += 1
        self.report(f"cpu{cpu.index}: VMI call {call} (from {site:#010x}) is not "
                    "implemented by this ROM; #UD raised in the guest")
        self._inject(cpu, vcpu, UD, None)

    # -- Init: patch, then deprivilege ----------------------------------------------------------
    def _init(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """VMI_Init at CPL 0 (reference §1 "Binding"): needs protected mode with paging;
        returns EAX = 0 and the CPU at ring 1, or EAX = 1 and nothing changed."""
        if not cpu.cr[0] & 0x1 or not cpu.cr[0] & 0x80000000 or cpu.flags & fl.VM:
            cpu.r[0] = 1
            self._return_from_call(cpu)
            self.report(f"cpu{cpu.index}: Init refused: paging is off")
            return
        mem = cpu.mem
        glob = layout.GLOBAL_PHYSICAL
        if self.mode == "vmi" and not mem.read32(glob + layout.GLOBAL_PATCHED):
            cr3, cr4 = cpu.cr[3], cpu.cr[4]
            patched, skipped = patch_sites(
                mem, lambda linear: shadow.walk(mem, cr3, cr4, linear), self.annotations)
            self.stats.patched += patched
            self.stats.skipped += skipped
            for site in skipped:
                self.report(f"site {site.site:#010x} (call {site.call}) not patched: "
                            f"{site.reason}")
            mem.write32(glob + layout.GLOBAL_PATCHED, 1)
            mem.write32(glob + layout.GLOBAL_PATCHED_SITES, len(patched))
        self._return_from_call(cpu)  # still at CPL 0, on the guest's stack
        # the virtual processor: what the guest had set up natively
        for page in (vcpu.shared, vcpu.private):
            mem.write_bytes(page, bytes(0x1000))
        vcpu.set_cr0(cpu.cr[0])
        vcpu.cr2, vcpu.cr3, vcpu.cr4 = cpu.cr[2], cpu.cr[3], cpu.cr[4]
        vcpu.shared_cr2, vcpu.shared_cr3, vcpu.shared_cr4 = cpu.cr[2], cpu.cr[3], cpu.cr[4]
        vcpu.gdt_base, vcpu.gdt_limit = cpu.gdtr
        vcpu.idt_base, vcpu.idt_limit = cpu.idtr
        vcpu.tr_selector, vcpu.tr_base, vcpu.tr_limit = cpu.tr[:3]
        vcpu.ldt_selector, vcpu.ldt_base, vcpu.ldt_limit = cpu.ldtr[:3]
        vcpu.set_sysenter_cs(cpu.msr.get(protected.MSR_SYSENTER_CS, 0) & M32)
        vcpu.sysenter_esp = cpu.msr.get(protected.MSR_SYSENTER_ESP, 0) & M32
        vcpu.sysenter_eip = cpu.msr.get(protected.MSR_SYSENTER_EIP, 0) & M32
        vcpu.vif = cpu.flags & fl.IF
        vcpu.shared_cpu = cpu.index
        # the real processor: shadow paging structures, shadow GDT, ring 1
        shadow.init_top_table(mem, vcpu.index)
        shadow.sync_directory(mem, vcpu.cr3, vcpu.index)
        from vmi.cpu.ops import system

        system.write_cr(cpu, 3, vcpu.pd)
        system.write_cr(cpu, 4, vcpu.cr4 & emulate.CR4_MIRRORED)
        system.write_cr(cpu, 0, emulate.real_cr0(vcpu.cr0))
        mem.write_bytes(vcpu.gdt, bytes(0x1000))
        self.rebuild_gdt(cpu, vcpu)
        # no real IDT: every event comes to the monitor; a stray native delivery
        # would find an empty table and shut the processor down, loudly
        cpu.idtr[:] = [layout.MONITOR_LINEAR + 0x1000, 0]
        cpu.msr[protected.MSR_SYSENTER_CS] = 0
        for seg in (ES, SS_REG, DS, FS, GS):
            selector = cpu.sreg[seg]
            if seg == SS_REG:
                selector = (selector & 0xFFFC) | 1
            self._load_shadow(cpu, seg, selector)
        vcpu.active = 1
        cpu.cpl = 1
        self._load_shadow(cpu, CS, (cpu.sreg[CS] & 0xFFFC) | 1)
        cpu.flags = (cpu.flags & ~fl.IOPL) | fl.IF
        cpu.r[0] = 0
        cpu.mode_changed()
        refresh(cpu)
        self.report(f"cpu{cpu.index}: Init: running at ring 1 under the monitor "
                    f"(policy {self.policy}, mode {self.mode})")

    def _load_shadow(self, cpu: Any, seg: int, selector: int) -> None:
        """Load a segment register from the shadow GDT (or the guest's LDT) without the
        checks of a guest load: the monitor vouches for it."""
        selector &= 0xFFFF
        if is_null(selector) and seg != CS:
            cpu.sreg[seg] = selector
            cpu.seg_base[seg] = 0
            cpu.seg_limit[seg] = 0
            cpu.seg_attr[seg] = 0x10000  # unusable
            return
        desc = fetch_descriptor(cpu, selector)
        if desc is None:
            raise MonitorRefusal(f"{SEGMENT_NAMES[seg]} selector {selector:#x} is beyond "
                                 "the guest's descriptor table")
        base, limit, attr = cache_of(desc)
        cpu.sreg[seg] = selector
        cpu.seg_base[seg], cpu.seg_limit[seg], cpu.seg_attr[seg] = base, limit, attr
        if seg == CS:
            cpu.code_context_changed()

    # -- the guest's tables -------------------------------------------------------------------
    def rebuild_gdt(self, cpu: Any, vcpu: VirtualCPU) -> bool:
        """Rebuild the shadow GDT from the guest's; True when it changed. The processor
        reads a descriptor table only when it loads a selector, so a guest table that
        is not mapped now (a boot GDT behind an identity map the kernel has dropped)
        is not an error: the shadow stays as it was until the table can be read.
        The real GDTR points at the shadow with the guest's limit."""
        cpu.gdtr[:] = [layout.SHADOW_GDT_LINEAR, vcpu.gdt_limit]
        try:
            return shadow.build_shadow_gdt(
                cpu.mem, lambda linear: read_linear32(cpu, linear), vcpu.gdt_base,
                vcpu.gdt_limit, vcpu.gdt)
        except CPUException:
            return False

    def load_cr3(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """A guest CR3 load: copy its page directory into the shadow, reload the real
        CR3 (which flushes the TLB), and refresh the shadow GDT (context switches are
        where a kernel changes per-task descriptors)."""
        from vmi.cpu.ops import system

        shadow.sync_directory(cpu.mem, vcpu.cr3, vcpu.index)
        system.write_cr(cpu, 3, vcpu.pd)
        self.rebuild_gdt(cpu, vcpu)

    def guest_descriptor(self, cpu: Any, vcpu: VirtualCPU,
                         selector: int) -> SegmentDescriptor | None:
        """The descriptor ``selector`` names in the guest's own GDT or LDT, or None
        beyond the limit."""
        if selector & 4:
            if is_null(vcpu.ldt_selector):
                return None
            base, limit = vcpu.ldt_base, vcpu.ldt_limit
        else:
            base, limit = vcpu.gdt_base, vcpu.gdt_limit
        offset = selector & 0xFFF8
        if offset + 7 > limit:
            return None
        address = (base + offset) & M32
        return SegmentDescriptor(selector & 0xFFFF, address, read_linear32(cpu, address),
                                 read_linear32(cpu, address + 4))

    def _guest_gate(self, cpu: Any, vcpu: VirtualCPU, vector: int) -> Any:
        """IDT entry ``vector`` of the guest's IDT (the virtual IDTR), or None."""
        saved = cpu.idtr
        cpu.idtr = [vcpu.idt_base, vcpu.idt_limit]
        try:
            return read_gate(cpu, vector)
        finally:
            cpu.idtr = saved

    # -- emulation ------------------------------------------------------------------------------
    def _try_emulate(self, cpu: Any, vcpu: VirtualCPU) -> bool:
        """Emulate the instruction at CS:EIP if it is one a deprivileged guest may
        execute; False to reflect the #GP instead."""
        try:
            insn = cpu.fetch(cpu.eip)
        except (DecodeError, CPUException):
            return False
        mnemonic = insn.mnemonic
        if cpu.cpl == 3:
            if mnemonic != "sysenter":
                return False
            handler = emulate.emulate_sysenter
        elif cpu.cpl == 1:
            handler = emulate.EMULATED.get(mnemonic)  # type: ignore[assignment]
            if handler is None:
                return False
            if mnemonic == "mov" and not any(getattr(op, "kind", "") in ("cr", "dr")
                                             for op in insn.operands):
                return False
        else:
            return False
        self._exit(cpu, "emulation")
        self.stats.emulated[mnemonic] += 1
        try:
            handler(self, cpu, vcpu, insn)
        except CPUException as fault:
            self._reflect(cpu, vcpu, fault)
            return True
        if mnemonic not in emulate.TRANSFERS:
            cpu.eip = insn.next_address & (M32 if cpu.code_bits == 32 else 0xFFFF)
        return True

    def finish_transfer(self, cpu: Any, eip: int) -> None:
        """After an emulated SYSENTER or SYSEXIT changed CS, SS and CPL: set EIP and let
        the processor re-derive its accessors."""
        cpu.eip = eip & M32
        refresh(cpu)
        cpu.code_context_changed()

    def halt(self, cpu: Any, vcpu: VirtualCPU) -> None:
        """HLT (or the Halt call): idle the virtual CPU until an event. With the virtual
        IF off that is forever (``cli; hlt``); the real IF is then cleared too, so the
        machine sees a CPU nothing can wake, as natively."""
        if vcpu.interrupts_enabled and vcpu.pending:
            return  # _resume delivers at once: the CPU halts and wakes at the same time
        cpu.halted = True
        if not vcpu.interrupts_enabled:
            vcpu.halted_cli = 1
            cpu.flags &= ~fl.IF

    # -- reflection and injection --------------------------------------------------------------
    def _reflect(self, cpu: Any, vcpu: VirtualCPU, exc: CPUException) -> None:
        """Deliver a guest exception through the guest's IDT. A fault on the ROM's IRET
        or SYSEXIT ``iret`` is reported at the call site with the stack as it was
        there, so the kernel's exception table (``1: IRET`` -> ``iret_exc``) applies:
        the ROM was entered by call so the site is known (reference §1, VMI_IRET)."""
        if exc.vector == PF:
            vcpu.cr2 = cpu.cr[2]
            vcpu.shared_cr2 = cpu.cr[2]
        if cpu.cpl == 1 and not getattr(exc, "trap", False):
            linear = (cpu.seg_base[CS] + cpu.eip) & M32
            if linear == self._iret_insn:
                ret = int(cpu.rd32(SS_REG, (cpu.r[4] - 4) & M32))
                cpu.eip = (ret - 5) & M32
                vcpu.vif = 0  # as before the call (restore_all runs with interrupts off)
            elif linear == self._sysexit_insn:
                ret = int(cpu.rd32(SS_REG, (cpu.r[4] + 20) & M32))
                cpu.eip = (ret - 5) & M32
                cpu.r[4] = (cpu.r[4] + 24) & M32
        self._inject(cpu, vcpu, exc.vector, exc.error_code, software=is_software(exc))

    def _inject(self, cpu: Any, vcpu: VirtualCPU, vector: int, error_code: int | None, *,
                software: bool = False, external: bool = False) -> None:
        """Deliver ``vector`` into the guest, resolving faults raised on the way by the
        double-fault rules (SDM Vol.3A §6.15), as ``vmi.cpu.protected.deliver`` does."""
        chain, benign = protected.open_chain(vector, error_code, software, external)
        ext = 0 if software else 1
        while True:
            try:
                self._inject_once(cpu, vcpu, vector, error_code, software, ext)
                return
            except CPUException as nested:
                if nested.vector == PF and shadow.sync_entry(
                        cpu.mem, vcpu.cr3, vcpu.index, cpu.cr[2] >> 22):
                    # the guest's stack, IDT or TSS lies behind a directory entry the
                    # shadow had not seen: a hidden fault; deliver again
                    self._exit(cpu, "shadow")
                    paging.flush_tlb(cpu)
                    continue
                vector, error_code, benign = protected.escalate(cpu, chain, vector, benign,
                                                                software, nested)
                software = False
                ext = 1

    def _handler_of(self, cpu: Any, vcpu: VirtualCPU, vector: int, software: bool,
                    ext: int) -> tuple[Any, int]:
        """The guest's gate for ``vector`` and the real (RPL 1) selector of its handler,
        with the checks of SDM Vol.3A §6.12.1 made against the guest's tables and the
        guest's privilege (ring 0 for the kernel, 3 for user)."""
        gate = self._guest_gate(cpu, vcpu, vector)
        if gate is None:
            raise CPUException(GP, idt_error(vector, ext), f"vector {vector:#x} beyond the "
                               f"guest IDT limit {vcpu.idt_limit:#x}")
        if gate.kind == "task":
            raise MonitorRefusal(f"guest IDT entry {vector:#x} is a task gate, taken where "
                                 "the monitor delivers on a frame (a ROM window)")
        if gate.kind == "invalid":
            raise CPUException(GP, idt_error(vector, ext),
                               f"guest IDT entry {vector:#x} has type {gate.type}")
        if gate.bits != 32:
            raise MonitorRefusal(f"guest IDT entry {vector:#x} is a 16-bit gate")
        guest_cpl = 3 if cpu.cpl == 3 else 0
        if software and gate.dpl < guest_cpl:
            raise CPUException(GP, idt_error(vector, 0),
                               f"int {vector:#x} at CPL {guest_cpl} through a DPL "
                               f"{gate.dpl} gate")
        if not gate.present:
            raise CPUException(NP, idt_error(vector, ext),
                               f"guest IDT entry {vector:#x} not present")
        selector = gate.selector
        if is_null(selector):
            raise CPUException(GP, ext, f"guest IDT entry {vector:#x} names a null selector")
        desc = self.guest_descriptor(cpu, vcpu, selector)
        if desc is None:
            raise CPUException(GP, selector_error(selector, ext),
                               f"handler CS {selector:#x} beyond the guest's table")
        if not desc.is_code:
            raise CPUException(GP, selector_error(selector, ext), f"handler CS: {describe(desc)}")
        if desc.dpl != 0 or desc.conforming:
            raise MonitorRefusal(f"guest handler of vector {vector:#x} is not ring-0 "
                                 f"non-conforming code: {describe(desc)}")
        if not desc.present:
            raise CPUException(NP, selector_error(selector, ext), f"not present: {describe(desc)}")
        return gate, (selector & 0xFFFC) | 1

    def _inject_once(self, cpu: Any, vcpu: VirtualCPU, vector: int, error_code: int | None,
                     software: bool, ext: int) -> None:
        """Build the native frame on the guest kernel stack and enter the handler at
        ring 1 (SDM Vol.3A §6.12.1, Figure 6-4; reference §5 fact 6): from ring 3 the
        stack is the guest TSS's ss0:esp0, read now (Linux writes tss.esp0 with a plain
        store at each context switch); the EFLAGS image carries the virtual IF."""
        gate = self._guest_gate(cpu, vcpu, vector)
        if gate is not None and gate.kind == "task":
            self._task_gate(cpu, vcpu, vector, gate, error_code, software, ext)
            return
        gate, handler_cs = self._handler_of(cpu, vcpu, vector, software, ext)
        from_user = cpu.cpl == 3
        values: list[int] = []
        ss_desc = None
        new_ss = esp0 = 0
        if from_user:
            ss0, esp0 = self._guest_stack0(cpu, vcpu, ext)
            guest_ss = self.guest_descriptor(cpu, vcpu, ss0)
            if guest_ss is None or not guest_ss.writable or guest_ss.dpl != 0 or ss0 & 3:
                raise CPUException(TS, selector_error(ss0, ext), f"guest TSS ss0 {ss0:#x} is "
                                   "not a writable ring-0 data segment")
            if not guest_ss.present:
                raise CPUException(SS, selector_error(ss0, ext), f"not present: "
                                   f"{describe(guest_ss)}")
            new_ss = (ss0 & 0xFFFC) | 1
            ss_desc = fetch_descriptor(cpu, new_ss)
            assert ss_desc is not None
            base, limit, attr = cache_of(ss_desc)
            bits = 32 if ss_desc.big else 16
            start = esp0
            values += [cpu.sreg[SS_REG], cpu.r[4]]
            stack_error = selector_error(ss0, ext)
        else:
            base, limit, attr, bits, start = protected.current_stack(cpu)
            stack_error = ext
        image = (cpu.eflags & ~fl.IF) | (fl.IF if vcpu.interrupts_enabled else 0)
        values += protected.frame_tail(cpu, image, vector, software, error_code)
        mask = M32 if bits == 32 else 0xFFFF
        offsets = [(start - 4 * (i + 1)) & mask for i in range(len(values))]
        if not protected.stack_fits(limit, attr, offsets, 4):
            raise CPUException(SS, stack_error, f"no room for the {4 * len(values)}-byte "
                               f"frame of vector {vector:#x} on the guest kernel stack")
        handler_desc = fetch_descriptor(cpu, handler_cs)
        assert handler_desc is not None
        if gate.offset > handler_desc.limit:
            raise CPUException(GP, ext, f"handler EIP {gate.offset:#x} beyond the CS limit")
        for off, value in zip(offsets, values, strict=True):
            paging.write_linear(cpu, (base + off) & M32, 4, value & M32, user=False)
        # commit
        if from_user:
            assert ss_desc is not None
            self._load_shadow(cpu, SS_REG, new_ss)
            cpu.r[4] = offsets[-1] if bits == 32 else (esp0 & ~mask & M32) | offsets[-1]
        else:
            cpu.r[4] = offsets[-1] if bits == 32 else (cpu.r[4] & ~mask & M32) | offsets[-1]
        self._enter_handler(cpu, vcpu, gate, handler_cs)
        self.stats.frames += 1
        self.stats.injected[_vector_name(vector)] += 1
        self._charge(cpu, FRAME_COST)

    def _guest_stack0(self, cpu: Any, vcpu: VirtualCPU, ext: int) -> tuple[int, int]:
        """ss0 and esp0 of the guest's TSS (offsets 8 and 4 of a 32-bit TSS; SDM Vol.3A
        §7.2.1), read from guest memory at this moment."""
        selector = vcpu.tr_selector
        if is_null(selector):
            raise CPUException(TS, ext, "the guest has loaded no task register (ltr)")
        if vcpu.tr_limit < 11:
            raise CPUException(TS, selector_error(selector, ext),
                               f"ss0/esp0 beyond the guest TSS limit {vcpu.tr_limit:#x}")
        esp0 = read_linear32(cpu, vcpu.tr_base + 4)
        ss0 = read_linear32(cpu, vcpu.tr_base + 8) & 0xFFFF
        return ss0, esp0

    def _enter_handler(self, cpu: Any, vcpu: VirtualCPU, gate: Any, handler_cs: int) -> None:
        """CS:EIP from the gate at ring 1; TF, VM, RF, NT cleared; an interrupt gate
        clears the virtual IF (SDM Vol.3A §6.12.1.2)."""
        self._load_shadow(cpu, CS, handler_cs)
        cpu.cpl = 1
        cpu.eip = gate.offset
        cpu.flags &= ~(fl.TF | fl.VM | fl.RF | fl.NT)
        cpu.flags |= fl.IF
        if gate.kind == "interrupt":
            vcpu.vif = 0
        vcpu.halted_cli = 0
        cpu.shadow = False
        cpu.halted = False
        refresh(cpu)

    # -- task gates and call gates: the guest's, carried out by the monitor --------------------
    def _task_gate(self, cpu: Any, vcpu: VirtualCPU, vector: int, gate: Any,
                   error_code: int | None, software: bool, ext: int) -> None:
        """Deliver ``vector`` through a task gate of the guest's IDT (Linux 2.6.16's #DF:
        doublefault.c) by doing the task switch on the guest's behalf: the real
        processor cannot, because the new task's CS and SS have RPL 0 while their
        shadow descriptors have DPL 1 (SDM Vol.3A Table 7-1: #TS), and the TSS, the
        GDT and CR3 it would use are the guest's, not the real ones. The steps are
        those of ``vmi.cpu.tasks.switch_tasks`` for an interrupt (SDM Vol.3A §7.3,
        Table 7-2), on the guest's tables:

        * the gate: DPL < CPL for INT n -> #GP; not present -> #NP (§6.12.1.1); its
          TSS selector must name an available, present 32-bit TSS in the guest's
          GDT (#GP / #NP (TSS selector, EXT)); a 16-bit TSS is refused;
        * the current state is saved in the guest's current TSS (the virtual TR),
          with the virtual IF in the EFLAGS image and the selectors as the guest
          sees them at ring 1 (RPL 1 for its kernel's, as in injected frames);
        * the new TSS gets the busy bit and the old TR in its link, the new EFLAGS
          NT; the virtual TR, TS in CR0 (virtual and real), CR3 (through the
          shadow directory) and the LDT (virtual and real) are the new task's;
        * the new task's CS and SS of RPL 0 are loaded with RPL 1 (as the handler
          CS of an interrupt gate), so a ring-0 task of the guest runs at ring 1;
          the virtual IF takes the new EFLAGS' IF, the real one stays 1;
        * the error code, if any, is pushed on the new task's stack.

        A fault before the save is the old task's (and escalates as any nested
        fault of a delivery); one after it is refused: a guest whose double-fault
        task cannot start has nothing left to run."""
        guest_cpl = 3 if cpu.cpl == 3 else 0
        if software and gate.dpl < guest_cpl:
            raise CPUException(GP, idt_error(vector, 0), f"int {vector:#x} at CPL "
                               f"{guest_cpl} through a DPL {gate.dpl} task gate")
        if not gate.present:
            raise CPUException(NP, idt_error(vector, ext), f"guest IDT entry {vector:#x} "
                               "(a task gate) not present")
        selector = gate.selector
        what = f"vector {vector:#x} through the guest's task gate"
        desc = None if selector & 4 else self.guest_descriptor(cpu, vcpu, selector)
        if desc is None or not tasks.is_tss(desc):
            raise CPUException(GP, selector_error(selector, ext), f"{what}: TSS selector "
                               f"{selector:#x} does not name a TSS in the guest's GDT")
        if tasks.is_busy(desc):
            raise CPUException(GP, selector_error(selector, ext), f"{what} to a busy TSS: "
                               f"{describe(desc)}")
        if not desc.present:
            raise CPUException(NP, selector_error(selector, ext), f"not present: {describe(desc)}")
        if desc.type != SYS_TSS32_AVAILABLE:
            raise MonitorRefusal(f"{what}: a 16-bit TSS ({describe(desc)}) under the monitor")
        if desc.limit < tasks.MIN_LIMIT[32]:
            raise CPUException(TS, selector_error(selector, ext), f"new TSS {selector:#x} "
                               f"limit {desc.limit:#x} below {tasks.MIN_LIMIT[32]:#x}")
        old_selector, old_base = vcpu.tr_selector, vcpu.tr_base
        if is_null(old_selector) or vcpu.tr_limit < tasks.SAVE_END[32]:
            raise CPUException(TS, selector_error(old_selector, ext), f"the guest's current "
                               f"TSS {old_selector:#x} cannot hold the task it leaves")
        image = tasks._read_image(cpu, desc.base, 32)
        if image["eflags"] & fl.VM or image["trap"]:
            raise MonitorRefusal(f"{what}: a new task in virtual-8086 mode or with the T "
                                 "bit is not supported under the monitor")
        tasks._probe_write(cpu, old_base + tasks.TSS32_EIP, tasks.SAVE_END[32] + 1
                           - tasks.TSS32_EIP)
        tasks._probe_write(cpu, desc.base, 2)
        tasks._probe_write(cpu, desc.address + 5, 1)
        # save the old task, then the link and the busy bit (Table 7-2, interrupt)
        eflags = (cpu.eflags & ~fl.IF) | (fl.IF if vcpu.interrupts_enabled else 0)
        tasks._save_state(cpu, old_base, 32, eflags)
        paging.write_linear(cpu, desc.base, 2, old_selector & 0xFFFF, user=False)
        paging.write_linear(cpu, (desc.address + 5) & M32, 1,
                            ((desc.high >> 8) & 0xFF) | 2, user=False)
        # commit: from here on the new task is current
        try:
            self._enter_task(cpu, vcpu, selector, desc, image, error_code)
        except CPUException as fault:
            raise MonitorRefusal(f"{what}: the new task faulted while it was loaded "
                                 f"({fault})") from None
        self.stats.injected[_vector_name(vector)] += 1
        self.report(f"cpu{cpu.index}: {_vector_name(vector)} through the guest's task gate: "
                    f"task switch from TSS {old_selector:#06x} to {selector:#06x}")

    def _enter_task(self, cpu: Any, vcpu: VirtualCPU, selector: int, desc: SegmentDescriptor,
                    image: dict[str, Any], error_code: int | None) -> None:
        """The commit of ``_task_gate``: the virtual and real TR, CR0.TS, CR3, LDTR, the
        registers, EFLAGS and the segments of the new task (RPL 0 -> 1 for CS and
        SS), and its error code (SDM Vol.3A §7.3 steps 8-10, Table 7-1)."""
        base, limit, attr = cache_of(desc)
        vcpu.tr_selector, vcpu.tr_base, vcpu.tr_limit = selector, base, limit
        self.rebuild_gdt(cpu, vcpu)  # the busy bit the guest's GDT now has
        cpu.tr[:] = [selector, base, limit, attr | 2]
        vcpu.set_cr0(vcpu.cr0 | tasks.CR0_TS)
        cpu.cr[0] |= tasks.CR0_TS
        cr3 = image["cr3"] & 0xFFFFF018
        if cr3 != vcpu.cr3:
            vcpu.cr3 = vcpu.shared_cr3 = cr3
        self.load_cr3(cpu, vcpu)
        cpu.dr[7] &= ~tasks.DR7_LOCAL
        ldt = image["ldt"]
        if is_null(ldt):
            vcpu.ldt_selector, vcpu.ldt_base, vcpu.ldt_limit = ldt, 0, 0
            cpu.ldtr[:] = [ldt, 0, 0, ATTR_UNUSABLE]
        else:
            ldt_desc = None if ldt & 4 else self.guest_descriptor(cpu, vcpu, ldt)
            if ldt_desc is None or ldt_desc.s or ldt_desc.type != SYS_LDT or not ldt_desc.present:
                raise CPUException(TS, selector_error(ldt, 1), f"new task's LDT {ldt:#x}")
            ldt_base, ldt_limit, ldt_attr = cache_of(ldt_desc)
            vcpu.ldt_selector, vcpu.ldt_base, vcpu.ldt_limit = ldt, ldt_base, ldt_limit
            cpu.ldtr[:] = [ldt, ldt_base, ldt_limit, ldt_attr]
        for i, value in enumerate(image["regs"]):
            cpu.r[i] = value & M32
        cpu.eip = image["eip"] & M32
        new_eflags = image["eflags"] | fl.NT
        vcpu.vif = new_eflags & fl.IF
        vcpu.halted_cli = 0
        cpu.eflags = (new_eflags & ~(fl.IF | fl.IOPL)) | fl.IF
        segs = list(image["segs"])
        for seg in (CS, SS_REG):
            if segs[seg] & 3 == 0:
                segs[seg] |= 1  # the guest kernel's ring 0 is ring 1
        cs_desc = self.guest_descriptor(cpu, vcpu, segs[CS])
        if cs_desc is None or not cs_desc.is_code or not cs_desc.present:
            raise CPUException(TS, selector_error(segs[CS], 1), f"new task's CS {segs[CS]:#x}")
        cpu.cpl = segs[CS] & 3
        for seg in (SS_REG, DS, ES, FS, GS, CS):
            self._load_shadow(cpu, seg, segs[seg])
        cpu.shadow = False
        cpu.halted = False
        cpu.mode_changed()
        refresh(cpu)
        cpu.code_context_changed()
        if error_code is not None:
            esp = (cpu.r[4] - 4) & M32
            paging.write_linear(cpu, (cpu.seg_base[SS_REG] + esp) & M32, 4, error_code & M32,
                                user=False)
            cpu.r[4] = esp

    def _try_call_gate(self, cpu: Any, vcpu: VirtualCPU, exc: CPUException) -> bool:
        """A far CALL or JMP through a call gate of the guest's GDT. The shadow GDT holds
        every call gate not present (``shadow.shadow_descriptor``): its target is the
        guest's code, whose privilege the real processor does not see (a gate to the
        guest kernel's ring 0 would take the real TSS's ring-1 stack, ss1:esp1, which
        the guest never set), so the transfer faults with #NP(gate selector) after
        the gate's DPL and RPL checks, which the processor made (SDM Vol.2 CALL
        "CALL-GATE": DPL < CPL or DPL < RPL -> #GP first). When the guest's own gate is
        present the monitor performs the transfer (``_call_gate``) and returns True;
        otherwise (the guest's gate is absent too, or the fault was not a gate's)
        False, and the #NP is the guest's."""
        code = exc.error_code
        if code is None or code & 7:  # EXT, IDT or TI: not a GDT gate of an instruction
            return False
        desc = self.guest_descriptor(cpu, vcpu, code)
        if desc is None or desc.s or desc.type not in (SYS_CALL_GATE16, SYS_CALL_GATE32):
            return False
        if not desc.present:
            return False
        try:
            insn = cpu.fetch(cpu.eip)
        except (DecodeError, CPUException):
            return False
        if insn.mnemonic not in ("lcall", "ljmp"):
            return False
        self._exit(cpu, "emulation")
        self.stats.emulated[f"{insn.mnemonic} (call gate)"] += 1
        try:
            self._call_gate(cpu, vcpu, code, desc, insn)
        except CPUException as fault:
            self._reflect(cpu, vcpu, fault)
        return True

    def _call_gate(self, cpu: Any, vcpu: VirtualCPU, selector: int, gate: SegmentDescriptor,
                   insn: Any) -> None:
        """The rest of a CALL or JMP through the guest's 32-bit call gate ``gate``
        (SDM Vol.2 CALL "CALL-GATE", JMP "CALL-GATE"; Vol.3A §5.8.4-§5.8.5), with the
        checks of ``vmi.cpu.gates`` on the guest's descriptors and at the guest's
        privilege (ring 0 for its kernel, 3 for user): its code segment must be the
        guest kernel's (DPL 0, non-conforming; anything else is refused); from user
        mode, CALL switches to the guest TSS's ss0:esp0 (read now, as for an
        interrupt), copies the gate's parameter count of dwords and pushes the
        caller's SS, ESP, CS and EIP; from the kernel, CALL pushes CS and EIP on the
        current stack and JMP pushes nothing. The routine runs at ring 1 with CS
        RPL 1; its far RET to ring 3 is the processor's own."""
        if gate.type != SYS_CALL_GATE32:
            raise MonitorRefusal(f"far {insn.mnemonic[1:]} at {cpu.eip:#010x} through the "
                                 f"guest's 16-bit call gate {selector:#x} (not supported "
                                 "under the monitor)")
        target = gates.gate_selector(gate)
        offset = gates.gate_offset(gate)
        count = gates.gate_count(gate)
        if is_null(target):
            raise CPUException(GP, 0, f"call gate {selector:#x} names a null code selector")
        code = self.guest_descriptor(cpu, vcpu, target)
        if code is None:
            raise CPUException(GP, selector_error(target), f"call gate {selector:#x}: code "
                               f"selector {target:#x} beyond the guest's table")
        guest_cpl = 3 if cpu.cpl == 3 else 0
        jump = insn.mnemonic == "ljmp"
        if not code.is_code or code.dpl > guest_cpl or (
                jump and not code.conforming and code.dpl != guest_cpl):
            raise CPUException(GP, selector_error(target), f"call gate {selector:#x}: "
                               f"{describe(code)} at CPL {guest_cpl}")
        if not code.present:
            raise CPUException(NP, selector_error(target), f"not present: {describe(code)}")
        if code.dpl != 0 or code.conforming:
            raise MonitorRefusal(f"the guest's call gate {selector:#x} leads to "
                                 f"{describe(code)}, not the guest kernel's ring-0 code")
        handler_cs = (target & 0xFFFC) | 1
        cs_desc = fetch_descriptor(cpu, handler_cs)
        assert cs_desc is not None
        if offset > cs_desc.limit:
            raise CPUException(GP, 0, f"call gate entry {offset:#x} beyond the CS limit")
        return_eip = insn.next_address & M32
        if jump:
            values: list[int] = []
        elif cpu.cpl == 3:
            values = [cpu.sreg[SS_REG], cpu.r[4]]
            values += [int(cpu.rd32(SS_REG, (cpu.r[4] + 4 * i) & M32))
                       for i in reversed(range(count))]
            values += [cpu.sreg[CS], return_eip]
        else:
            values = [cpu.sreg[CS], return_eip]
        if cpu.cpl == 3 and not jump:
            ss0, esp0 = self._guest_stack0(cpu, vcpu, 0)
            guest_ss = self.guest_descriptor(cpu, vcpu, ss0)
            if guest_ss is None or not guest_ss.writable or guest_ss.dpl != 0 or ss0 & 3:
                raise CPUException(TS, selector_error(ss0), f"guest TSS ss0 {ss0:#x} is "
                                   "not a writable ring-0 data segment")
            if not guest_ss.present:
                raise CPUException(SS, selector_error(ss0), f"not present: {describe(guest_ss)}")
            new_ss = (ss0 & 0xFFFC) | 1
            ss_desc = fetch_descriptor(cpu, new_ss)
            assert ss_desc is not None
            base, limit, attr = cache_of(ss_desc)
            bits, start, stack_error = (32 if ss_desc.big else 16), esp0, selector_error(ss0)
        else:
            new_ss = None
            base, limit, attr, bits, start = protected.current_stack(cpu)
            stack_error = 0
        mask = M32 if bits == 32 else 0xFFFF
        offsets = [(start - 4 * (i + 1)) & mask for i in range(len(values))]
        if values and not protected.stack_fits(limit, attr, offsets, 4):
            raise CPUException(SS, stack_error, "no room for the call gate's frame")
        for off, value in zip(offsets, values, strict=True):
            paging.write_linear(cpu, (base + off) & M32, 4, value & M32, user=False)
        # commit
        if new_ss is not None:
            self._load_shadow(cpu, SS_REG, new_ss)
            cpu.r[4] = offsets[-1] if bits == 32 else (start & ~mask & M32) | offsets[-1]
        elif values:
            cpu.r[4] = offsets[-1] if bits == 32 else (cpu.r[4] & ~mask & M32) | offsets[-1]
        self._load_shadow(cpu, CS, handler_cs)
        cpu.cpl = 1
        cpu.eip = offset
        refresh(cpu)

    def _deliver_on_frame(self, cpu: Any, vcpu: VirtualCPU, frame: int,
                          eax: int | None) -> None:
        """Deliver the first pending event with the frame an IRET (or the ROM's
        SYSEXIT) was returning through as its frame, in place: the state is that of
        an interrupt taken at the first boundary after the return (its frame holds
        exactly what the native delivery would push: EIP, CS, EFLAGS with IF set,
        and ESP, SS for ring 3), and the kernel's exit path runs again from its
        handler, so work the event raised is seen before the return to user space
        (the Xen merge of reference §2; the frames' registers were already popped,
        so only EAX, which the ROM still holds, is restored)."""
        vector = vcpu.take_pending()
        if vector is None:
            return
        try:
            gate, handler_cs = self._handler_of(cpu, vcpu, vector, False, 1)
        except CPUException as fault:
            vcpu.add_pending(vector)
            self._reflect(cpu, vcpu, fault)
            return
        if eax is not None:
            cpu.r[0] = eax
        image = int(cpu.rd32(SS_REG, (frame + 8) & M32))
        cpu.r[4] = frame
        # the live flags as the return would have left them (the ROM clobbered the
        # arithmetic ones); IF stays 1 and IOPL 0 in the real register
        cpu.eflags = (image & ~(fl.IF | fl.IOPL)) | fl.IF
        self._enter_handler(cpu, vcpu, gate, handler_cs)
        self.stats.injected[_vector_name(vector)] += 1


def boot(machine: Any, programs: Iterable[Any] = (), *, policy: str = "defer",
         mode: str = "vmi") -> VMIMonitor:
    """Make a ``VMIMonitor`` for ``programs`` (the guest images, for the patcher) and
    attach it to ``machine``. The guest then boots as it does natively and opts in by
    calling Init (``layout.CALL_INIT``) on every CPU."""
    return VMIMonitor(policy=policy, mode=mode, programs=programs).attach(machine)
