"""What the race explorer needs to know about the booted guest, read from outside.

``KernelView`` looks at a ``vmi.system.System`` the way a kernel debugger would:
through the kernel's symbol table and its memory, never by asking the guest.
It finds, once per system:

* the entry of every external interrupt (``common_interrupt``, where the stub
  has pushed ``~vector`` on top of the processor's frame);
* the **IRET windows**: the code between the restore of the user's virtual IF
  and the instruction that completes the return, where an interrupt lands on a
  half-popped frame. For each IRET site of the kernel (the exception-table
  entries whose fixup is ``iret_exc``) the inline sequence up to its ``iret``
  (the ``naive`` macro set's store-pop-iret; the bare ``iret`` natively), and,
  under the monitor, the ROM's IRET window;
* the spinlock sites: every ``lock decb`` that tries a lock, every ``movb $1``
  that releases one, and every spin-wait loop with the register holding the
  saved flags (the seed's ``__raw_spin_lock_flags``).

It also answers per-boundary questions cheaply: the current task's thread_info
flags, the effective (virtual under the monitor) IF, pending interrupts.
"""

from __future__ import annotations

import bisect
from typing import Any

from attrs import frozen

from vmi.cpu import decode
from vmi.cpu.errors import DecodeError

PAGE_OFFSET = 0xC0000000
THREAD_SIZE = 8192
TI_FLAGS = 8
TIF_SIGPENDING = 1 << 2
TIF_NEED_RESCHED = 1 << 3
#: Work the return to user mode must act on (kernel/defs.S _TIF_WORK_MASK, the
#: bits this kernel sets).
TIF_WORK = TIF_SIGPENDING | TIF_NEED_RESCHED
TSS_STRUCT_SIZE = 384
TSS_ESP0 = 4
IF = 0x200
SPINLOCKS = ("runqueue_lock", "console_spinlock", "work_lock")
#: The bytes of the frame every entry from user mode builds at the top of the task's
#: kernel stack (pt_regs, entry.S: the processor's five words, ORIG_EAX and SAVE_ALL's
#: nine). Its return has begun once ESP rises back above its base.
PT_REGS_SIZE = 0x3C
#: Kernel counters whose growth during a branch means the kernel itself failed (an
#: oops, a failed kernel check): a liveness failure whatever the user saw.
FAILURE_COUNTERS = ("kernel_oopses", "checks_failed")
#: The vector of the console's interrupt (IRQ 1): ^C, SIGINT to the running task.
CONSOLE_VECTOR = 0x21
#: The exceptions for which the processor pushes an error code (SDM Vol.3A §6.13).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
REGISTER_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


@frozen
class SpinWait:
    """A spin-wait loop ``[start, end)`` whose saved flags are in register ``flags``."""

    start: int
    end: int
    flags: int  # register index


class KernelView:
    """See the module docstring. ``system`` is a booted ``vmi.system.System``."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.machine = system.machine
        self.memory = system.machine.memory
        self.monitor = system.monitor
        self.symbols = system.symbols
        build = system.guest.build
        self.kernel = build.kernel.program
        self.common_interrupt = self.symbols["common_interrupt"]
        #: where the C handler of an external interrupt has returned (its work done)
        self.ret_from_intr = self.symbols["ret_from_intr"]
        #: where signal work is handled, on the pt_regs its first argument (EAX) names
        self.do_notify_resume = self.symbols["do_notify_resume"]
        self.failure_counters = tuple(self.symbols[name] for name in FAILURE_COUNTERS)
        #: the entry of each processor exception -> whether the processor pushed an error
        #: code (read from the kernel's own IDT table: where a delivered fault lands)
        self.exception_entries = self._exception_entries()
        #: the entry stubs of the external vectors (entry.S ``interrupt``: each pushes
        #: ~vector and joins common_interrupt): where a delivered interrupt lands
        table = self.symbols["interrupt"]
        first = self.symbols["FIRST_EXTERNAL_VECTOR"]
        self.interrupt_stubs = frozenset(
            self.read32(table + 4 * i) for i in range(self.symbols["NR_VECTORS"] - first))
        self.system_call = self.symbols["system_call"]
        self.sysenter_entry = self.symbols["sysenter_entry"]
        self.sysenter_return = build.vsyscall.symbols["SYSENTER_RETURN"]
        self.init_tss = self.symbols["init_tss"]
        self._sorted = sorted((v, k) for k, v in self.symbols.items()
                              if not k.startswith("."))
        self._code = self._kernel_code()
        self.iret_windows = self._iret_windows()
        self.sysexit_windows = self._sysexit_windows()
        self.lock_addresses = {self.symbols[name]: name for name in SPINLOCKS}
        self.try_sites, self.release_sites, self.spin_waits = self._spinlock_sites()
        self.spin_wait_at = {eip: wait for wait in self.spin_waits
                             for eip in range(wait.start, wait.end)}

    def _exception_entries(self) -> dict[int, bool]:
        """The handlers of vectors 0-19 in the kernel's ``exception_table`` (entry.S:
        handler, gate bits; the task gate of #DF has none), with whether the vector
        pushes an error code (8, 10-14 and 17: SDM Vol.3A §6.13, Table 6-1)."""
        table = self.symbols["exception_table"]
        entries = {}
        for vector in range(20):
            handler = self.read32(table + 8 * vector)
            if handler:
                entries[handler] = vector in ERROR_CODE_VECTORS
        return entries

    # -- memory ---------------------------------------------------------------------------
    def read32(self, address: int) -> int:
        """A 32-bit word at a kernel virtual address (the kernel maps physical memory
        at PAGE_OFFSET)."""
        return self.memory.read32(address - PAGE_OFFSET)

    def thread_info(self, cpu: int) -> int:
        """The thread_info of the task the guest runs on ``cpu``: the base of the kernel
        stack whose top the CPU's TSS.esp0 holds (switch_to writes it)."""
        esp0 = self.read32(self.init_tss + cpu * TSS_STRUCT_SIZE + TSS_ESP0)
        return (esp0 - 1) & ~(THREAD_SIZE - 1)

    @staticmethod
    def frame_base(esp: int) -> tuple[int, int]:
        """For a kernel stack pointer: the stack's thread_info (its identity) and the
        base of the user frame at its top (``PT_REGS_SIZE`` below the top)."""
        thread = esp & ~(THREAD_SIZE - 1)
        return thread, thread + THREAD_SIZE - PT_REGS_SIZE

    def failures(self) -> tuple[int, ...]:
        """The kernel's own failure counters (oopses, failed kernel checks) now."""
        return tuple(self.read32(address) for address in self.failure_counters)

    def work_flags(self, cpu: int) -> int:
        """The current task's TIF work bits (need_resched, sigpending)."""
        return self.read32(self.thread_info(cpu) + TI_FLAGS) & TIF_WORK

    def interrupts_enabled(self, cpu: Any) -> bool:
        """The IF the guest kernel sees: the virtual one under the monitor."""
        if self.monitor is not None and self.monitor.active(cpu):
            return bool(self.monitor.vcpu(cpu).vif & IF)
        return bool(cpu.flags & IF)

    def pending(self, cpu: Any, vector: int | None = None) -> bool:
        """Whether an interrupt (``vector``, or any) is pending for ``cpu``: in the
        interrupt controller, in the monitor's pending set, or due in the schedule."""
        machine = self.machine
        index = cpu.index
        mask = machine.pic.pending[index]
        if self.monitor is not None and self.monitor.active(cpu):
            mask |= self.monitor.vcpu(cpu).pending
        if vector is not None:
            return bool(mask >> vector & 1)
        if mask:
            return True
        timer = machine.timer  # read, not timer.due(): that re-arms it (a tick consumed)
        return (machine.scheduled_due(index, cpu.cycles)
                or bool(timer.period) and cpu.cycles >= timer.deadline[index])

    # -- naming ---------------------------------------------------------------------------
    def name(self, address: int) -> str:
        """``symbol+0xoff`` for an address (the nearest symbol at or below it)."""
        i = bisect.bisect_right(self._sorted, (address, "\uffff")) - 1
        if i < 0:
            return f"{address:#010x}"
        base, symbol = self._sorted[i]
        offset = address - base
        if offset > 0x4000:
            return f"{address:#010x}"
        return symbol if offset == 0 else f"{symbol}+{offset:#x}"

    def in_iret_window(self, eip: int) -> bool:
        return any(start <= eip < end for start, end in self.iret_windows)

    # -- finding sites --------------------------------------------------------------------
    def _kernel_code(self) -> list[Any]:
        """The kernel's instructions as they are in memory now (patched, under the
        monitor), decoded linearly over its code sections."""
        out: list[Any] = []
        for section in self.kernel.sections:
            if not section.code:
                continue
            start = section.address
            data = self.memory.read_bytes(start - PAGE_OFFSET, section.size)
            offset = 0
            while offset < len(data):
                try:
                    insn = decode(data[offset:offset + 15], start + offset)
                except DecodeError:
                    offset += 1
                    continue
                out.append(insn)
                offset += insn.length
        return out

    def _decode_at(self, address: int, count: int) -> list[Any]:
        out = []
        for _ in range(count):
            data = self.memory.read_bytes(address - PAGE_OFFSET, 15) \
                if address >= PAGE_OFFSET else b""
            try:
                insn = decode(data, address)
            except DecodeError:
                break
            out.append(insn)
            address += insn.length
        return out

    def _iret_windows(self) -> list[tuple[int, int]]:
        windows = []
        fixup = self.symbols["iret_exc"]
        start, stop = self.symbols["__start___ex_table"], self.symbols["__stop___ex_table"]
        for entry in range(start, stop, 8):
            site, handler = self.read32(entry), self.read32(entry + 4)
            if handler != fixup:
                continue
            insns = self._decode_at(site, 8)
            for insn in insns:
                if insn.mnemonic in ("call", "jmp"):
                    break  # patched into a ROM call: the window is the ROM's
                if insn.mnemonic.startswith("iret"):
                    windows.append((site, insn.address + insn.length))
                    break
        if self.monitor is not None:
            window = self.monitor.rom.iret_window
            windows.append((window.start, window.end))
        return windows

    def _sysexit_windows(self) -> list[tuple[int, int]]:
        """The inline STI_SYSEXIT at ``sysenter_exit``: from after its first instruction
        (the one that enables interrupts) to the end of its ``sysexit``. Patched into a
        ROM call under VMI: then none (the ROM's window is the monitor's)."""
        site = self.symbols.get("sysenter_exit")
        if site is None:
            return []
        insns = self._decode_at(site, 8)
        for insn in insns:
            if insn.mnemonic in ("call", "jmp"):
                return []
            if insn.mnemonic == "sysexit" and insns:
                start = insns[0].address + insns[0].length
                return [(start, insn.address + insn.length)]
        return []

    def window_at(self, eip: int) -> str | None:
        """``"iret"`` or ``"sysexit"`` when ``eip`` is in one of the kernel's inline
        windows (the ROM's are the monitor's to name)."""
        if self.in_iret_window(eip):
            return "iret"
        if any(start <= eip < end for start, end in self.sysexit_windows):
            return "sysexit"
        return None

    def _spinlock_sites(self) -> tuple[dict[int, int], dict[int, int], list[SpinWait]]:
        """``lock decb (%reg)`` tries and ``movb $1, (%reg)`` releases (address ->
        register index), and the spin-wait loops."""
        tries: dict[int, int] = {}
        releases: dict[int, int] = {}
        waits: list[SpinWait] = []
        code = self._code
        for i, insn in enumerate(code):
            text = str(insn)
            if text.startswith("lock decb (%"):
                tries[insn.address] = REGISTER_NAMES.index(text[len("lock decb (%"):][:3])
            elif text.startswith("movb   $0x1,(%"):
                releases[insn.address] = REGISTER_NAMES.index(text[len("movb   $0x1,(%"):][:3])
            elif text == "pause" and i + 2 < len(code) and str(code[i + 2]).startswith("jle"):
                flags = self._flags_register(code, i)
                if flags is not None:
                    end = code[i + 2].address + code[i + 2].length
                    waits.append(SpinWait(insn.address, end, flags))
        return tries, releases, waits

    @staticmethod
    def _flags_register(code: list[Any], i: int) -> int | None:
        """The register of the ``test $0x200,%reg`` a few instructions before the wait."""
        for back in range(1, 12):
            text = str(code[i - back])
            if text.startswith("test   $0x200,%"):
                return REGISTER_NAMES.index(text.split("%")[1][:3])
        return None
