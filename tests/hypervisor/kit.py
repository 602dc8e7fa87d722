"""A small kernel-like harness for the monitor's tests: the same program runs natively
at ring 0 and under the monitor at ring 1.

The harness prepares what a kernel's early boot would have (a flat GDT in the 2.6.16
layout, an IDT built from the program's symbols, a TSS, an identity-mapped page
table with a user region) and starts the CPU in protected mode with paging at the
program's ``_start``. The program's prologue (``PROLOGUE``) loads the data segments,
looks for the ROM signature at 0xC0000 and, if it is there (under the monitor),
calls Init; natively there is no ROM and it stays at ring 0. The prologue also defines
two macros for the programs: ``SET_SYSENTER entry`` (the SYSENTER MSRs: the kernel
CS, ``SYSENTER_STACK``, ``entry``) and ``ENTER_USER`` (IRET to the user program at
``USER_BASE`` with interrupts enabled, on the user stack).

IDT gates come from symbols: ``int_N`` an interrupt gate, ``trap_N`` a trap gate,
``utrap_N`` a DPL-3 trap gate, ``uint_N`` a DPL-3 interrupt gate (N decimal).

Memory (physical = linear, 0-4 MiB identity-mapped):

==========  ===================================================================
0x01000     GDT: 0x60 kernel code, 0x68 kernel data, 0x73 user code, 0x7b user
            data, 0x80 TSS, 0x88 a 16-bit user data segment (B=0, base
            0x270000), 0x90 a second TSS, 0x98 a 16-bit kernel data segment (base
            0x60000)
0x02000     IDT (256 gates)
0x03000     TSS (esp0 = KSTACK, ss0 = 0x68); 0x03100 the second TSS
0x04000     page directory; 0x05000 its page table
0x10000     the kernel program (text, then data)
0x90000     top of the kernel stack
0x200000    the user program; 0x210000 a page both see (``USER_DATA``);
            0x280000 top of the user stack; everything in 0x200000-0x2FFFFF is
            user-accessible, the rest supervisor
==========  ===================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vmi.asm import Program, assemble
from vmi.cpu import protected
from vmi.cpu.ops import system
from vmi.hypervisor import VMIMonitor, boot, layout
from vmi.machine import Machine

GDT, IDT, TSS, TSS2, PD, PT = 0x1000, 0x2000, 0x3000, 0x3100, 0x4000, 0x5000
KERNEL_BASE, KSTACK = 0x10000, 0x90000
SYSENTER_STACK = KSTACK - 64
USER_BASE, USER_DATA, USER_STACK = 0x200000, 0x210000, 0x280000
USER_LOW, USER_HIGH = 0x200000, 0x300000
SEG16_BASE, KSEG16_BASE = 0x270000, 0x60000
KERNEL_CS, KERNEL_DS, USER_CS, USER_DS, TSS_SEL, SEG16, TSS2_SEL, KSEG16 = (
    0x60, 0x68, 0x73, 0x7B, 0x80, 0x88, 0x90, 0x98)

#: Symbols every program may use.
DEFINES = {
    "KERNEL_CS": KERNEL_CS, "KERNEL_DS": KERNEL_DS, "USER_CS": USER_CS, "USER_DS": USER_DS,
    "TSS_SEL": TSS_SEL, "SEG16": SEG16, "TSS2_SEL": TSS2_SEL, "KSTACK": KSTACK,
    "SYSENTER_STACK": SYSENTER_STACK,
    "USER_BASE": USER_BASE, "USER_DATA": USER_DATA, "USER_STACK": USER_STACK,
    "SEG16_BASE": SEG16_BASE, "KSEG16": KSEG16, "KSEG16_BASE": KSEG16_BASE,
    "GDT_BASE": GDT, "IDT_BASE": IDT, "PD_BASE": PD,
    "ROM_PHYSICAL": layout.ROM_PHYSICAL, "SIGNATURE": layout.SIGNATURE,
}

PROLOGUE = """
.macro SET_SYSENTER entry
	movl $0x174, %ecx		# IA32_SYSENTER_CS
	movl $KERNEL_CS, %eax
	xorl %edx, %edx
	WRMSR
	movl $0x175, %ecx		# IA32_SYSENTER_ESP
	movl $SYSENTER_STACK, %eax
	WRMSR
	movl $0x176, %ecx		# IA32_SYSENTER_EIP
	movl $\\entry, %eax
	WRMSR
.endm

.macro ENTER_USER
	pushl $USER_DS
	pushl $USER_STACK
	pushl $0x202
	pushl $USER_CS
	pushl $USER_BASE
	IRET
.endm

.text
_start:
	movl $USER_DS, %eax		# kernel data through the flat DPL-3 segment, as Linux 2.6
	mov %ax, %ds
	mov %ax, %es
	cmpw $0xAA55, ROM_PHYSICAL	# the VMI ROM's signature (reference §1)
	jne 1f
	cmpl $SIGNATURE, ROM_PHYSICAL + 8
	jne 1f
	movl $ROM_PHYSICAL + 0x80, %eax	# Init, through the ROM's physical mapping
	call *%eax
	movl %eax, init_result
	jmp main
1:	movl $-1, init_result
	jmp main
.data
init_result: .long 0
.text
"""


def descriptor(base: int, limit: int, access: int, flags: int = 0xC) -> bytes:
    """An 8-byte GDT entry (SDM Vol.3A §3.4.5): ``access`` is the byte P|DPL|S|type,
    ``flags`` the nibble G|D/B|0|AVL."""
    low = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    high = ((base >> 16) & 0xFF) | access << 8 | (limit & 0xF0000) | flags << 20 | \
        (base & 0xFF000000)
    return low.to_bytes(4, "little") + high.to_bytes(4, "little")


def gate(offset: int, kind: int, dpl: int = 0, selector: int = KERNEL_CS) -> bytes:
    """An IDT gate: ``kind`` 0xE interrupt, 0xF trap (SDM Vol.3A §6.11)."""
    low = (offset & 0xFFFF) | selector << 16
    high = (offset & 0xFFFF0000) | 0x8000 | dpl << 13 | kind << 8
    return low.to_bytes(4, "little") + high.to_bytes(4, "little")


GATE_PREFIXES = {"int_": (0xE, 0), "trap_": (0xF, 0), "utrap_": (0xF, 3), "uint_": (0xE, 3)}


def write_tables(machine: Machine, program: Program) -> None:
    mem = machine.memory
    gdt = bytearray(0x100)
    for selector, desc in (
        (KERNEL_CS, descriptor(0, 0xFFFFF, 0x9A)),
        (KERNEL_DS, descriptor(0, 0xFFFFF, 0x92)),
        (USER_CS, descriptor(0, 0xFFFFF, 0xFA)),
        (USER_DS, descriptor(0, 0xFFFFF, 0xF2)),
        (TSS_SEL, descriptor(TSS, 103, 0x89, 0)),
        (SEG16, descriptor(SEG16_BASE, 0xFFFF, 0xF2, 0)),
        (TSS2_SEL, descriptor(TSS2, 103, 0x89, 0)),
        (KSEG16, descriptor(KSEG16_BASE, 0xFFFF, 0x92, 0)),
    ):
        gdt[selector & ~7:(selector & ~7) + 8] = desc
    mem.write_bytes(GDT, bytes(gdt))
    idt = bytearray(0x800)
    for name, value in program.symbols.items():
        for prefix, (kind, dpl) in GATE_PREFIXES.items():
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                vector = int(name[len(prefix):])
                idt[vector * 8:vector * 8 + 8] = gate(value, kind, dpl)
    mem.write_bytes(IDT, bytes(idt))
    tss = bytearray(104)
    tss[4:8] = KSTACK.to_bytes(4, "little")
    tss[8:10] = KERNEL_DS.to_bytes(2, "little")
    mem.write_bytes(TSS, bytes(tss))
    mem.write_bytes(TSS2, bytes(tss))
    pd = bytearray(0x1000)
    pd[0:4] = (PT | 0x7).to_bytes(4, "little")
    mem.write_bytes(PD, bytes(pd))
    pt = bytearray(0x1000)
    for page in range(1024):
        address = page << 12
        user = 0x4 if USER_LOW <= address < USER_HIGH else 0
        pt[page * 4:page * 4 + 4] = (address | 0x3 | user).to_bytes(4, "little")
    mem.write_bytes(PT, bytes(pt))


def start_protected(cpu: Any, entry: int) -> None:
    """The CPU as a kernel leaves it after its early boot: protected mode, paging on
    (CR0.WP set, as Linux does), the tables loaded, CPL 0 at ``entry``. CPU 1 (the
    kit supports two) gets the second TSS and a stack 32 KiB lower."""
    cpu.gdtr[:] = [GDT, 0xFF]
    cpu.idtr[:] = [IDT, 0x7FF]
    system.write_cr(cpu, 3, PD)
    system.write_cr(cpu, 0, 0x80010011)
    cpu.cpl = 0
    protected.far_jump(cpu, KERNEL_CS, entry)
    for seg in (0, 2, 3, 4, 5):
        protected.load_segment(cpu, seg, KERNEL_DS)
    system.load_tr(cpu, TSS2_SEL if cpu.index else TSS_SEL)
    cpu.r[4] = KSTACK - 0x8000 * cpu.index
    cpu.flags = 0x2


class Guest:
    """A kernel program (and optionally a user program) on a machine, natively or
    under the monitor."""

    def __init__(self, kernel: str, user: str = "", *, macros: str = "vmi",
                 monitor: str | None = None, policy: str = "defer", cpus: int = 1,
                 defines: dict[str, int] | None = None,
                 schedule: Iterable[tuple[int, int, int]] = ()) -> None:
        extra = dict(DEFINES, **(defines or {}))
        if macros == "naive":
            extra.update(layout.NAIVE_DEFINES)
        self.kernel = assemble(PROLOGUE + kernel, macros=macros, base=KERNEL_BASE,
                               defines=extra)
        self.user = assemble(user or "nop\n", macros=None, base=USER_BASE,
                             defines=dict(extra, **{k: v for k, v in self.kernel.symbols.items()
                                                    if k.isupper()}))
        self.machine = Machine(cpus=cpus, memory_size=4 << 20, schedule=schedule)
        self._monitor: VMIMonitor | None = None
        if monitor is not None:
            self._monitor = boot(self.machine, [self.kernel], policy=policy, mode=monitor)
        mem = self.machine.memory
        mem.write_bytes(KERNEL_BASE, self.kernel.image)
        mem.write_bytes(USER_BASE, self.user.image)
        write_tables(self.machine, self.kernel)
        for cpu in self.machine.cpus:
            start_protected(cpu, self.kernel.symbols["_start"])
        self.cpu = self.machine.cpus[0]

    @property
    def monitor(self) -> VMIMonitor:
        """The monitor (only for a guest made with ``monitor=``)."""
        if self._monitor is None:
            raise AttributeError("this guest runs natively: there is no monitor")
        return self._monitor

    # -- running ------------------------------------------------------------------------
    def run(self, steps: int = 200_000, *, batched: bool = False) -> int:
        """Step until every CPU is stuck (or ``steps``). One ``Machine.step`` at a time
        unless ``batched`` (``Machine.run``, which batches quiet stretches)."""
        machine = self.machine
        if batched:
            return machine.run(steps)
        for done in range(steps):
            _cpu, kind, value = machine.step()
            if kind == "idle" and value == 0 and machine.all_stuck():
                return done + 1
        return steps

    def run_to(self, address: int, *, count: int = 1, limit: int = 100_000) -> None:
        """Step until CPU 0 is about to execute ``address`` for the ``count``-th time."""
        seen = 0
        for _ in range(limit):
            if (self.cpu.seg_base[1] + self.cpu.eip) & 0xFFFFFFFF == address \
                    and not self.cpu.halted:
                seen += 1
                if seen == count:
                    return
            self.machine.step()
        raise AssertionError(f"EIP never reached {address:#x} ({seen} of {count})")

    def interrupt(self, vector: int = 0x20) -> None:
        self.machine.pic.raise_vector(0, vector)

    # -- reading -------------------------------------------------------------------------
    def sym(self, name: str) -> int:
        if name in self.kernel.symbols:
            return self.kernel.symbols[name]
        return self.user.symbols[name]

    def u32(self, address: int) -> int:
        return int(self.machine.memory.read32(address))

    def var(self, name: str) -> int:
        return self.u32(self.sym(name))

    def words(self, address: int, count: int) -> list[int]:
        return [self.u32(address + 4 * i) for i in range(count)]

    @property
    def stuck(self) -> bool:
        return self.machine.all_stuck()
