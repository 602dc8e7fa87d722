"""Real-address mode: the processor state after RESET, and event delivery through the
interrupt vector table (IVT).

``reset(cpu)`` puts a CPU where RESET leaves it (SDM Vol.3A §9.1.1, Table 9-1):
real mode, executing at F000:FFF0 with the CS base FFFF0000 so the first fetch
is 16 bytes below 4 GiB, where a PC maps its BIOS ROM.

``RealModePlatform`` is the CPU's ``platform`` while it runs in real mode: it
delivers exceptions (faults and the traps of ``int n``, ``int3``, ``into``) and
external interrupts through the IVT (SDM Vol.3A §20.1.4 "Interrupt and Exception
Handling"; Vol.2 INT n "Operation", the REAL-ADDRESS-MODE branch):

1. the 4-byte vector ``IP, CS`` lies at ``IDTR.base + 4 * vector`` (``cpu.idtr``;
   LIDT moves the table in real mode too); a vector whose entry passes the IDTR
   limit raises #GP;
2. the 6-byte frame must fit in the stack segment, otherwise #SS;
3. push FLAGS (the low 16 bits of EFLAGS), clear IF, TF and AC, push CS, push IP;
4. load CS:IP from the vector (CS base = selector << 4).

No error code is pushed in real mode, whatever the vector. A fault's IP is the
faulting instruction (the run loop has put EIP back), a trap's the next one.

An exception raised while delivering another follows the double-fault rules of
SDM Vol.3A §6.15 ("Interrupt 8—Double Fault Exception", Tables 6-4 and 6-5):
two contributory exceptions, or a page fault followed by a contributory fault or
a page fault, make a #DF; otherwise the second exception is delivered in place
of the first. An exception while delivering #DF shuts the processor down
(``Shutdown`` is raised and the CPU stays halted): the "triple fault" a PC
answers with a reset.

Protected mode (virtual-8086 mode included) delivers through IDT gates, which
belong to the descriptor model; this platform re-raises the exception to the
caller when CR0.PE is set (the behaviour of a CPU without a platform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define

from vmi.cpu import flags as fl
from vmi.cpu.errors import DF, GP, PF, SS, CPUException, ProcessorShutdown
from vmi.cpu.segmentation import CR0_PE, REAL_CODE_ATTR, REAL_DATA_ATTR

M32 = 0xFFFFFFFF

#: CR0 after RESET: CD and NW set (caches off), ET set (SDM Vol.3A Table 9-1).
RESET_CR0 = 0x60000010
#: EDX after RESET holds the component and stepping id; for an Intel386 DX the
#: component id (DH) is 3 and the stepping (DL) 08h for the D1 stepping
#: (Intel386 DX data sheet, "Component and revision identifiers").
RESET_EDX = 0x0308
#: GDTR and IDTR after RESET: base 0, limit FFFFh (SDM Vol.3A Table 9-1; the
#: Intel386 PRM gives the IDTR limit as 03FFh, which makes no difference: the
#: entry of vector 255 ends at 03FFh).
RESET_TABLE = (0, 0xFFFF)
#: DR6 and DR7 after RESET (SDM Vol.3A Table 9-1).
RESET_DR6, RESET_DR7 = 0xFFFF0FF0, 0x400

#: Exceptions that are "contributory" for the double-fault rule (SDM Vol.3A Table 6-4):
#: #DE, #TS, #NP, #SS, #GP.
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})


class Shutdown(ProcessorShutdown):
    """The processor shut down: an exception occurred while it delivered a double
    fault (SDM Vol.3A §6.15, "triple fault"). The CPU is left halted."""

    def __init__(self, cpu: Any, detail: str) -> None:
        super().__init__(f"CPU{cpu.index} shut down at "
                         f"{cpu.sreg[1]:04x}:{cpu.eip:04x}: {detail}")
        self.detail = detail


def reset(cpu: Any, *, edx: int = RESET_EDX) -> None:
    """Put ``cpu`` into the state after RESET (SDM Vol.3A §9.1.1, Table 9-1).

    EFLAGS 00000002h, EIP 0000FFF0h, CR0 60000010h, CR2-CR4 0; CS selector F000h
    with base FFFF0000h and limit FFFFh; DS, ES, FS, GS, SS selector 0, base 0,
    limit FFFFh; EDX the component id; the other general registers 0 (EAX 0 means
    "no built-in self-test requested or passed"); GDTR and IDTR base 0 limit
    FFFFh; LDTR and TR selector 0, base 0, limit FFFFh; DR6 FFFF0FF0h, DR7 400h,
    the other debug registers 0. CPL 0, 16-bit code and stack, no interrupt
    shadow, empty TLB. Cached code is forgotten and the segmented memory
    accessors installed.
    """
    cpu.r[:] = [0] * 8
    cpu.r[2] = edx & M32
    cpu.eip = 0xFFF0
    cpu.eflags = fl.FIXED_ONE
    cpu.cr[:] = [0] * len(cpu.cr)
    cpu.cr[0] = RESET_CR0
    cpu.sreg[:] = [0, 0xF000, 0, 0, 0, 0]
    cpu.seg_base[:] = [0, 0xFFFF0000, 0, 0, 0, 0]
    cpu.seg_limit[:] = [0xFFFF] * 6
    cpu.seg_attr[:] = [REAL_DATA_ATTR, REAL_CODE_ATTR] + [REAL_DATA_ATTR] * 4
    cpu.gdtr[:] = RESET_TABLE
    cpu.idtr[:] = RESET_TABLE
    cpu.ldtr[:] = [0, 0, 0xFFFF, 0x82]  # selector 0, base 0, limit FFFFh, present LDT
    cpu.tr[:] = [0, 0, 0xFFFF, 0x8B]  # selector 0, base 0, limit FFFFh, present busy TSS
    cpu.dr[:] = [0] * len(cpu.dr)
    cpu.dr[6], cpu.dr[7] = RESET_DR6, RESET_DR7
    cpu.tlb.clear()
    cpu.cpl = 0
    cpu.code_bits = 16
    cpu.stack_bits = 16
    cpu.halted = False
    cpu.shadow = False
    cpu.msr.clear()
    cpu.mode_changed()


def deliver_real_mode(cpu: Any, vector: int) -> None:
    """Deliver ``vector`` through the real-mode IVT, or raise the exception that
    stops it, before changing any state (SDM Vol.2 INT n, REAL-ADDRESS-MODE).

    The IVT and the frame are reached through the segmented accessors for the
    stack and by linear address for the table, as the processor does.
    """
    base, limit = cpu.idtr[0], cpu.idtr[1]
    entry = vector * 4
    if entry + 3 > limit:
        raise CPUException(GP, None, f"vector {vector:#x} beyond the IDT limit {limit:#x}")
    table = (base + entry) & M32
    read16 = cpu.mem.read16
    new_ip = read16(cpu.linear_to_physical(table))
    new_cs = read16(cpu.linear_to_physical((table + 2) & M32))
    r = cpu.r
    if cpu.stack_bits == 16:
        sp = r[4] & 0xFFFF
        offsets = [(sp - 2 * i) & 0xFFFF for i in (1, 2, 3)]
    else:
        sp = r[4]
        offsets = [(sp - 2 * i) & M32 for i in (1, 2, 3)]
    ss_limit = cpu.seg_limit[2]
    for off in offsets:
        if off + 1 > ss_limit:
            raise CPUException(SS, 0, "interrupt frame beyond the SS limit")
    flags = cpu.eflags
    cpu.wr16(2, offsets[0], flags & 0xFFFF)
    cpu.wr16(2, offsets[1], cpu.sreg[1])
    cpu.wr16(2, offsets[2], cpu.eip & 0xFFFF)
    if cpu.stack_bits == 16:
        r[4] = (r[4] & 0xFFFF0000) | offsets[2]
    else:
        r[4] = offsets[2]
    cpu.flags &= ~(fl.IF | fl.TF | fl.AC)
    cpu.sreg[1] = new_cs
    cs_base = new_cs << 4
    if cpu.seg_base[1] != cs_base:
        cpu.seg_base[1] = cs_base
        cpu.code_context_changed()
    cpu.eip = new_ip


def _double_fault(first: int, second: int) -> bool:
    """Whether ``second``, raised while delivering ``first``, makes a #DF (SDM Vol.3A
    Table 6-5)."""
    if first in CONTRIBUTORY:
        return second in CONTRIBUTORY
    if first == PF:
        return second == PF or second in CONTRIBUTORY
    return False


@define
class RealModePlatform:
    """Delivers a real-mode CPU's exceptions and interrupts through the IVT.

    ``trace``, when given, is called with each vector as it is delivered (nested
    ones included), which tests and the SingleStepTests runner use to see what
    happened.
    """

    trace: Callable[[int], None] | None = None

    def deliver_exception(self, cpu: Any, exc: CPUException) -> None:
        """Deliver a fault or trap raised by an instruction (``exc.vector``). In
        protected mode, virtual-8086 mode included (whose events go through the IDT
        to ring 0, SDM Vol.3A §20.3), the exception goes back to the caller."""
        if cpu.cr[0] & CR0_PE:
            raise exc
        self._deliver(cpu, exc.vector)

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        """Deliver an external interrupt (or NMI) between instructions; it wakes a
        halted CPU, whose EIP is already past the HLT."""
        if cpu.cr[0] & CR0_PE:
            raise CPUException(vector, None, "protected-mode interrupt delivery "
                               "through the IDT is not implemented")
        cpu.halted = False
        self._deliver(cpu, vector)

    def _deliver(self, cpu: Any, vector: int) -> None:
        while True:
            if self.trace is not None:
                self.trace(vector)
            try:
                deliver_real_mode(cpu, vector)
                return
            except CPUException as nested:
                if vector == DF:
                    cpu.halted = True
                    raise Shutdown(cpu, f"{nested} while delivering #DF") from nested
                vector = DF if _double_fault(vector, nested.vector) else nested.vector

