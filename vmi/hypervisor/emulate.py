"""Trap-and-emulate: the privileged instructions a ring-1 guest kernel executes, which
fault #GP(0) (SDM Vol.3A §5.9; reference §5 facts 3, 8, 10), done by the monitor on
the guest's virtual state. This is the slow path the ROM exists to avoid: a patched
kernel reaches it only for what has no hook (``mov %cr3``, ``lgdt``, ``hlt``,
``in``/``out``, ...), an unpatched one for every ``cli`` and ``sti`` too.

Each ``emulate_*`` takes the monitor, the CPU, its ``VirtualCPU`` and the decoded
instruction, does the work, and returns; the caller moves EIP past the instruction.
A fault the instruction would raise natively (an unknown MSR, a bad descriptor, a
page fault on the operand) is raised as a ``CPUException`` and reflected into the
guest. ``EMULATED`` maps mnemonics to them; ``sysenter`` (from ring 3) is separate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmi.cpu import flags as fl
from vmi.cpu import iobitmap, paging
from vmi.cpu.descriptors import (
    ATTR_UNUSABLE,
    FLAT_CODE_ATTR,
    FLAT_DATA_ATTR,
    SYS_TSS32_AVAILABLE,
    cache_of,
    describe,
    is_null,
)
from vmi.cpu.errors import GP, UD, CPUException
from vmi.cpu.operands import Immediate, MemoryOperand, Register
from vmi.cpu.ops import system
from vmi.cpu.ops.system import (
    CR0_AM,
    CR0_CD,
    CR0_EM,
    CR0_ET,
    CR0_MP,
    CR0_NE,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
)
from vmi.cpu.protected import CS, M32, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, SS_REG
from vmi.hypervisor import layout, shadow
from vmi.hypervisor.errors import MonitorRefusal
from vmi.hypervisor.vcpu import VirtualCPU

if TYPE_CHECKING:
    from vmi.hypervisor.monitor import VMIMonitor

#: Guest CR0 bits the real CR0 follows; PE, PG and WP are always set in the real CR0
#: (WP so that the read-only ROM page is read-only for the ring-1 guest, which is a
#: supervisor for paging: SDM Vol.3A §4.6).
CR0_MIRRORED = CR0_MP | CR0_EM | CR0_TS | CR0_NE | CR0_AM | CR0_NW | CR0_CD
CR0_FORCED = CR0_PE | CR0_PG | CR0_WP | CR0_ET
#: Guest CR4 bits the real CR4 follows: PSE (the guest's 4 MiB pages), DE, PGE.
CR4_MIRRORED = 0x08 | 0x10 | 0x80
MSR_TSC = 0x10


def real_cr0(guest: int) -> int:
    return (guest & CR0_MIRRORED) | CR0_FORCED


def effective_address(cpu: Any, op: MemoryOperand) -> int:
    """The offset of memory operand ``op`` within its segment (SDM Vol.2 §2.1.5)."""
    r = cpu.r
    if op.addrsize == 32:
        ea = op.disp
        if op.base is not None:
            ea += r[op.base]
        if op.index is not None:
            ea += r[op.index] * op.scale
        return ea & M32
    ea = op.disp
    if op.base is not None:
        ea += r[op.base] & 0xFFFF
    if op.index is not None:
        ea += r[op.index] & 0xFFFF
    return ea & 0xFFFF


def _read16_operand(cpu: Any, op: Any) -> int:
    if isinstance(op, Register):
        return cpu.r[op.index] & 0xFFFF
    return int(cpu.rd16(op.segment, effective_address(cpu, op)))


# -- control and debug registers ------------------------------------------------------------
def write_guest_cr(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, index: int,
                   value: int) -> None:
    """MOV CRn, r32 on the virtual registers (SDM Vol.2 MOV—Move to/from Control
    Registers), then what the real processor must follow."""
    value &= M32
    if index == 0:
        value = system.checked_cr0(value)
        if not value & CR0_PG:
            raise MonitorRefusal("the guest turned paging off under the monitor (CR0 = "
                                 f"{value:#x}); the monitor needs it on after Init")
        vcpu.set_cr0(value)
        system.write_cr(cpu, 0, real_cr0(value))
    elif index == 2:
        vcpu.cr2 = value
        vcpu.shared_cr2 = value
    elif index == 3:
        vcpu.cr3 = value
        vcpu.shared_cr3 = value
        monitor.load_cr3(cpu, vcpu)
    elif index == 4:
        if value & ~system.CR4_DEFINED:
            raise CPUException(GP, 0, f"reserved CR4 bits {value & ~system.CR4_DEFINED:#x}")
        vcpu.cr4 = value
        vcpu.shared_cr4 = value
        system.write_cr(cpu, 4, value & CR4_MIRRORED)
    else:
        raise CPUException(UD, None, f"there is no CR{index}")


def read_guest_cr(vcpu: VirtualCPU, index: int) -> int:
    if index == 0:
        return vcpu.cr0
    if index == 2:
        return vcpu.cr2
    if index == 3:
        return vcpu.cr3
    if index == 4:
        return vcpu.cr4
    raise CPUException(UD, None, f"there is no CR{index}")


def emulate_mov(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    dst, src = insn.operands
    if isinstance(dst, Register) and dst.kind == "cr":
        write_guest_cr(monitor, cpu, vcpu, dst.index, cpu.r[src.index])
    elif isinstance(src, Register) and src.kind == "cr":
        cpu.r[dst.index] = read_guest_cr(vcpu, src.index) & M32
    elif isinstance(dst, Register) and dst.kind == "dr":
        system.write_dr(cpu, dst.index, cpu.r[src.index])
    elif isinstance(src, Register) and src.kind == "dr":
        cpu.r[dst.index] = system.read_dr(cpu, src.index)
    else:
        raise _not_emulated(insn)


def emulate_clts(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """CLTS: clear TS in the virtual CR0 and in the real one (#NM needs the real TS)."""
    vcpu.set_cr0(vcpu.cr0 & ~CR0_TS)
    cpu.cr[0] &= ~CR0_TS


def emulate_lmsw(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """LMSW: PE, MP, EM, TS from the operand; PE cannot be cleared (SDM Vol.2 LMSW)."""
    value = _read16_operand(cpu, insn.operands[0])
    old = vcpu.cr0
    write_guest_cr(monitor, cpu, vcpu, 0, (old & ~0xE) | (value & 0xE) | ((old | value) & 1))


def emulate_invlpg(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """INVLPG: refresh the shadow directory entry of the page, then invalidate it."""
    op = insn.operands[0]
    linear = (cpu.seg_base[op.segment] + effective_address(cpu, op)) & M32
    if shadow.sync_entry(cpu.mem, vcpu.cr3, vcpu.index, linear >> 22):
        paging.flush_tlb(cpu)
    else:
        paging.invalidate_page(cpu, linear)
    cpu.forget_code()


# -- descriptor tables -------------------------------------------------------------------------
def emulate_lgdt_lidt(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """LGDT/LIDT: the virtual register takes the operand (SDM Vol.2 LGDT/LIDT); a new
    GDT is shadowed at once."""
    op = insn.operands[0]
    ea = effective_address(cpu, op)
    mask = M32 if op.addrsize == 32 else 0xFFFF
    limit = int(cpu.rd16(op.segment, ea))
    base = int(cpu.rd32(op.segment, (ea + 2) & mask)) & (M32 if insn.opsize == 32 else 0xFFFFFF)
    if insn.mnemonic == "lgdt":
        vcpu.gdt_base, vcpu.gdt_limit = base, limit
        monitor.rebuild_gdt(cpu, vcpu)
    else:
        vcpu.idt_base, vcpu.idt_limit = base, limit


def emulate_ltr(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """LTR on the guest's GDT (SDM Vol.2 LTR; Vol.3A §7.2.4): the checks, the busy bit
    in the guest's descriptor (and its shadow), the virtual TR. The real TR shows the
    same selector, base and limit (``str`` reads it); the monitor reads esp0 from the
    guest's TSS itself, so no real task-state access is ever made."""
    selector = _read16_operand(cpu, insn.operands[0])
    desc = system.tss_descriptor(selector, lambda s: monitor.guest_descriptor(cpu, vcpu, s))
    if desc.type != SYS_TSS32_AVAILABLE:
        raise MonitorRefusal(f"LTR of a 16-bit TSS ({describe(desc)}) under the monitor")
    paging.write_linear(cpu, (desc.address + 5) & M32, 1, ((desc.high >> 8) & 0xFF) | 2)
    base, limit, attr = cache_of(desc)
    vcpu.tr_selector, vcpu.tr_base, vcpu.tr_limit = selector, base, limit
    cpu.tr[:] = [selector, base, limit, attr | 0x2]
    monitor.rebuild_gdt(cpu, vcpu)


def emulate_lldt(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """LLDT on the guest's GDT (SDM Vol.2 LLDT). The LDT itself is used as the guest
    wrote it (its segments are the user's, DPL 3)."""
    selector = _read16_operand(cpu, insn.operands[0])
    if is_null(selector):
        vcpu.ldt_selector, vcpu.ldt_base, vcpu.ldt_limit = selector, 0, 0
        cpu.ldtr[:] = [selector, 0, 0, ATTR_UNUSABLE]
        return
    desc = system.ldt_descriptor(selector, lambda s: monitor.guest_descriptor(cpu, vcpu, s))
    base, limit, attr = cache_of(desc)
    vcpu.ldt_selector, vcpu.ldt_base, vcpu.ldt_limit = selector, base, limit
    cpu.ldtr[:] = [selector, base, limit, attr]


# -- interrupts, halt, I/O, MSRs -----------------------------------------------------------------
def emulate_cli(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    vcpu.vif = 0


def emulate_sti(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """STI on the virtual IF. Pending events are delivered when the monitor resumes the
    guest, right after this instruction (the one-instruction shadow of a native sti is
    not modelled for the emulated one; reference §1: Enable delivers at once)."""
    vcpu.vif = fl.IF


def emulate_hlt(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    monitor.halt(cpu, vcpu)


def emulate_in(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """IN from a port of the machine's bus (the guest kernel owns the devices).

    Only the guest kernel's I/O reaches here (ring 1, the guest's CPL 0): in the
    guest's view CPL 0 <= IOPL always, so no I/O permission map applies (SDM Vol.1
    §18.5.1). See ``io_map_denied`` for why it trapped and for the guest's users.
    """
    dst, src = insn.operands
    port = src.value & 0xFF if isinstance(src, Immediate) else cpu.r[2] & 0xFFFF
    size = dst.size
    ones = (1 << size * 8) - 1
    value = ones if cpu.io is None else cpu.io.read(port, size) & ones
    cpu.r[0] = (cpu.r[0] & ~ones & M32) | value


def emulate_out(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """OUT to a port of the machine's bus; the permission rules are ``emulate_in``'s."""
    dst, src = insn.operands
    port = dst.value & 0xFF if isinstance(dst, Immediate) else cpu.r[2] & 0xFFFF
    size = src.size
    if cpu.io is not None:
        cpu.io.write(port, size, cpu.r[0] & ((1 << size * 8) - 1))


def io_map_denied(cpu: Any, vcpu: VirtualCPU, port: int, size: int) -> str | None:
    """What the real processor's I/O permission check (``vmi.cpu.iobitmap``; SDM
    Vol.1 §18.5.2) finds for a deprivileged guest: the monitor owns the real task
    state, so it answers instead of the TSS in the real TR (which only mirrors the
    guest's selector, base and limit for STR and is never read).

    * **Ring 1** (the guest kernel, real CPL 1 > IOPL 0): the monitor's task state
      has no I/O map for it, so every IN, OUT, INS, OUTS faults #GP(0) and is
      emulated (``emulate_in``, ``emulate_out``), as the guest's CPL 0 may do
      any I/O. The guest's own TSS is not read: before its LTR it may not exist.
    * **Ring 3** (a guest user): the guest's view. The guest's own 32-bit TSS (the
      virtual TR: ``vcpu.tr_base``, ``vcpu.tr_limit``; ``emulate_ltr`` refuses a
      16-bit one) is checked by the rules of ``iobitmap.map_denied``, its bytes read
      as supervisor accesses through the shadow page tables (a #PF there is the
      guest's, as on hardware). An allowed port runs natively; a forbidden one is
      #GP(0), which the monitor reflects into the guest with EIP on the
      instruction, exactly what bare hardware would do.

    Limitation: the guest's IOPL is not virtualized (the real IOPL stays 0 and
    SetIOPLMask is not implemented), so a guest user the guest kernel gave IOPL 3
    is still held to the map."""
    if cpu.cpl != 3:
        return "the monitor's task state has no I/O map for the guest kernel (emulated)"
    return iobitmap.map_denied(cpu, vcpu.tr_base, vcpu.tr_limit, port, size)


def read_guest_msr(cpu: Any, vcpu: VirtualCPU, number: int) -> int:
    """RDMSR on the virtual MSRs (SDM Vol.2 RDMSR): the SYSENTER MSRs are the guest's
    values (the real IA32_SYSENTER_CS stays 0 so a user sysenter traps), the TSC is
    the real one; any other MSR faults as natively."""
    if number == MSR_SYSENTER_CS:
        return vcpu.sysenter_cs
    if number == MSR_SYSENTER_ESP:
        return vcpu.sysenter_esp
    if number == MSR_SYSENTER_EIP:
        return vcpu.sysenter_eip
    if number == MSR_TSC:
        return (cpu.cycles + cpu.msr.get(MSR_TSC, 0)) & 0xFFFFFFFFFFFFFFFF
    raise CPUException(GP, 0, f"unknown MSR {number:#x}")


def write_guest_msr(cpu: Any, vcpu: VirtualCPU, number: int, value: int) -> None:
    if number == MSR_SYSENTER_CS:
        vcpu.set_sysenter_cs(value & M32)
    elif number == MSR_SYSENTER_ESP:
        vcpu.sysenter_esp = value & M32
    elif number == MSR_SYSENTER_EIP:
        vcpu.sysenter_eip = value & M32
    elif number == MSR_TSC:
        cpu.msr[MSR_TSC] = value - cpu.cycles
    else:
        raise CPUException(GP, 0, f"unknown MSR {number:#x}")


def emulate_rdmsr(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    value = read_guest_msr(cpu, vcpu, cpu.r[1])
    cpu.r[0], cpu.r[2] = value & M32, value >> 32 & M32


def emulate_wrmsr(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    write_guest_msr(cpu, vcpu, cpu.r[1], cpu.r[2] << 32 | cpu.r[0])


def emulate_rdtsc(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    t = (cpu.cycles + cpu.msr.get(MSR_TSC, 0)) & 0xFFFFFFFFFFFFFFFF
    cpu.r[0], cpu.r[2] = t & M32, t >> 32


# -- fast system calls ---------------------------------------------------------------------------
def _flat(cpu: Any, seg: int, selector: int, attr: int) -> None:
    cpu.sreg[seg] = selector & 0xFFFF
    cpu.seg_base[seg] = 0
    cpu.seg_limit[seg] = layout.GUEST_LIMIT
    cpu.seg_attr[seg] = attr


def emulate_sysexit(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """A raw SYSEXIT at ring 1 (#GP there; SDM Vol.2 SYSEXIT): to ring 3 with the
    selectors of the virtual IA32_SYSENTER_CS, EIP = EDX, ESP = ECX, flat segments
    (limits truncated like every guest segment); the virtual IF is not changed."""
    cs = vcpu.sysenter_cs & 0xFFFF
    if cs & 0xFFFC == 0:
        raise CPUException(GP, 0, "sysexit with IA32_SYSENTER_CS = 0")
    _flat(cpu, CS, (cs + 16) | 3, FLAT_CODE_ATTR[3])
    _flat(cpu, SS_REG, (cs + 24) | 3, FLAT_DATA_ATTR[3])
    cpu.cpl = 3
    cpu.r[4] = cpu.r[1]
    monitor.finish_transfer(cpu, cpu.r[2])


def emulate_sysenter(monitor: VMIMonitor, cpu: Any, vcpu: VirtualCPU, insn: Any) -> None:
    """SYSENTER from ring 3 (the real IA32_SYSENTER_CS is 0, so it faults #GP(0)): to
    the guest kernel at ring 1 with the virtual MSRs; clears VM, RF and the virtual
    IF, as SYSENTER clears IF (SDM Vol.3A §5.8.7; reference §5 fact 7)."""
    cs = vcpu.sysenter_cs & 0xFFFF
    if cs & 0xFFFC == 0:
        raise CPUException(GP, 0, "sysenter with IA32_SYSENTER_CS = 0")
    vcpu.vif = 0
    cpu.flags &= ~(fl.VM | fl.RF)
    _flat(cpu, CS, (cs & 0xFFFC) | 1, FLAT_CODE_ATTR[0] | 0x20)
    _flat(cpu, SS_REG, ((cs & 0xFFFC) + 8) | 1, FLAT_DATA_ATTR[0] | 0x20)
    cpu.cpl = 1
    cpu.r[4] = vcpu.sysenter_esp
    monitor.finish_transfer(cpu, vcpu.sysenter_eip)


def _not_emulated(insn: Any) -> CPUException:
    return CPUException(GP, 0, f"{insn} is not emulated")


Emulator = Callable[["VMIMonitor", Any, VirtualCPU, Any], None]

#: Mnemonic -> emulation at ring 1 (the guest kernel).
EMULATED: dict[str, Emulator] = {
    "cli": emulate_cli, "sti": emulate_sti, "hlt": emulate_hlt,
    "mov": emulate_mov, "clts": emulate_clts, "lmsw": emulate_lmsw,
    "invlpg": emulate_invlpg, "lgdt": emulate_lgdt_lidt, "lidt": emulate_lgdt_lidt,
    "ltr": emulate_ltr, "lldt": emulate_lldt,
    "in": emulate_in, "out": emulate_out,
    "rdmsr": emulate_rdmsr, "wrmsr": emulate_wrmsr, "rdtsc": emulate_rdtsc,
    "sysexit": emulate_sysexit,
}
#: Instructions that end with a transfer of their own (EIP is not advanced after).
TRANSFERS = frozenset({"sysexit", "sysenter"})
