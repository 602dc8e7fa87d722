"""The PC board: a ``Machine`` whose CPUs see the devices of ``vmi.pc`` where a PC
has them, so a kernel written for a PC (MIT xv6) boots on it from its disk.

What is wired, and how (see docs/pc.md):

* **Memory**: RAM from 0 (224 MiB by default, xv6's PHYSTOP), the CGA text
  memory at 0xB8000 as plain RAM the display reads, the local APICs' window at
  0xFEE00000 (each CPU sees its own) and the IOAPIC's at 0xFEC00000 above RAM
  (``Memory.map_device``), and the A20 gate driven by the keyboard controller
  (off at reset, as an AT BIOS leaves it: the boot sector must open it).
* **Ports**: the 8259 pair (0x20/0x21, 0xA0/0xA1), the PIT (0x40-0x43: the
  machine's interval timer), the keyboard controller (0x60, 0x64, 0x92), CMOS
  (0x70/0x71), the IDE channel (0x1F0-0x1F7, 0x3F6), the CGA's CRTC (0x3D4..),
  COM1 (0x3F8-0x3FF) and the 0xE9 debug console.
* **Interrupts**: an ISA device's ``irq(line, level)`` goes to both the IOAPIC
  pin of the same number and the 8259 pair; the IOAPIC sends to the local
  APICs over the APIC bus; a CPU takes the highest vector its local APIC
  offers, and CPU 0 also the 8259's when its LINT0 is in ExtINT mode or the
  APIC is software-disabled (the virtual-wire mode a PC starts in, MP spec
  §3.6.2.2). The local APIC timers run on their CPU's cycle clock.
* **CPUs**: CPU 0 (the bootstrap processor) starts at the reset vector, where
  the firmware (``vmi.pc.firmware``) enters the boot sector; every other CPU
  waits for INIT and STARTUP (``waiting``) and then starts in real mode at
  the STARTUP vector's page (SDM Vol.3A §8.4.4.1).
* **Running**: several CPUs run in deterministic quanta (``Machine.quantum``);
  an MMIO write inside a quantum takes effect at once but an interrupt it
  raises is taken at the next boundary the machine checks (at most a quantum
  later), as on a machine whose interrupt wires have latency.

An instruction the model does not decode (``undefined opcode`` from the decoder:
a real i686 may know it, so the guest's #UD would be the model's failure, not
the guest's) stops the machine with ``MachineStopped`` naming the CPU, the
address and the bytes, unless ``stop_on_unmodelled`` is False (then the guest
gets the #UD, as a CPU without that instruction would give it).

Everything a snapshot needs is in ``state()`` of the board's interrupt seam
(``PcInterrupts``), so ``snapshot()``/``restore()``/``save()``/``load()`` of a
``PcMachine`` carry the devices as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vmi.cpu import CPU
from vmi.cpu.platform import NativePlatform
from vmi.cpu.realmode import reset
from vmi.devices import Console, IntervalTimer, PortBus
from vmi.machine import Machine, MachineStopped
from vmi.pc.cga import Cga
from vmi.pc.cmos import Cmos
from vmi.pc.ide import Disk, IdeChannel
from vmi.pc.ioapic import IoApic
from vmi.pc.kbc import KeyboardController
from vmi.pc.lapic import LVT_LINT0, LVT_MASKED, SVR_ENABLE, ApicBus, LocalApic
from vmi.pc.pic8259 import PicPair
from vmi.pc.uart import Uart16550

#: xv6's PHYSTOP: the RAM it expects.
DEFAULT_MEMORY = 224 << 20
#: Boundaries one CPU runs before the next takes its turn (and the longest a
#: device change made inside a batch waits to be seen).
DEFAULT_QUANTUM = 2000
#: LVT delivery mode ExtINT (SDM Figure 10-8).
_EXTINT = 7 << 8


class UnmodelledWatch:
    """The platform seam of a PC: delivers every event through ``inner`` (the native
    platform, or a monitor), but stops the machine at an instruction the decoder
    does not know (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def deliver_exception(self, cpu: Any, exc: Any) -> None:
        if exc.vector == 6 and exc.detail and "undefined opcode" in exc.detail:
            from vmi.cpu.paging import fetch_code

            try:
                data = fetch_code(cpu, (cpu.seg_base[1] + cpu.eip) & 0xFFFFFFFF, 8)[0]
            except Exception:  # noqa: BLE001 - the bytes are a courtesy of the report
                data = b""
            raise MachineStopped(
                f"cpu{cpu.index}: an instruction the model does not implement at "
                f"{cpu.sreg[1]:04x}:{cpu.eip:08x} (bytes {data.hex(' ')}; "
                f"{exc.detail.split(': ', 1)[-1]})")
        self.inner.deliver_exception(cpu, exc)

    def deliver_interrupt(self, cpu: Any, vector: int) -> None:
        self.inner.deliver_interrupt(cpu, vector)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PcInterrupts:
    """The machine's interrupt seam (``Machine.pic``) on a PC: which vector each
    CPU would take now, and taking it (see the module docstring)."""

    def __init__(self, board: PcMachine) -> None:
        self.board = board
        self.pending = _Pending(self)
        self.delivered = [0] * len(board.cpus)

    def _extint(self, index: int) -> bool:
        """Whether CPU ``index`` listens to the 8259 pair (virtual-wire mode)."""
        if index != 0:
            return False
        apic = self.board.apics.apics[0]
        if not apic.svr & SVR_ENABLE:
            return True
        lint0 = apic.lvt[LVT_LINT0]
        return not lint0 & LVT_MASKED and lint0 & 0x700 == _EXTINT

    def next_vector(self, index: int) -> int | None:
        """The vector CPU ``index`` would take at this boundary, or None (no side
        effect: the 8259's answer is read, not acknowledged)."""
        vector = self.board.apics.apics[index].pending_vector()
        if vector is not None:
            return vector
        if self._extint(index) and self.board.pics.pending():
            return self.board.pics.peek_vector()
        return None

    def raise_irq(self, irq: int, cpu: int) -> None:
        """The interval timer's tick (IRQ 0): an edge on the ISA line."""
        self.board.irq(irq, True)
        self.board.irq(irq, False)

    def acknowledge(self, index: int, vector: int) -> None:
        """The CPU takes ``vector`` (the INTA cycle of the controller that offered it)."""
        self.delivered[index] += 1
        if self.board.apics.apics[index].pending_vector() == vector:
            self.board.apics.apics[index].acknowledge()
        else:
            self.board.pics.acknowledge()

    def state(self) -> dict[str, Any]:
        board = self.board
        cga = board.cga.state()
        del cga["memory"]  # it is RAM: the memory image holds it
        return {"pics": board.pics.state(), "apics": board.apics.state(),
                "ioapic": board.ioapic.state(), "uart": board.uart.state(),
                "ide": board.ide.state(), "kbc": board.kbc.state(),
                "cmos": board.cmos.state(), "cga": cga,
                "disks": [None if d is None else d.state() for d in board.ide.disks],
                "waiting": list(board.waiting), "a20": board.memory.a20,
                "delivered": list(self.delivered)}

    def set_state(self, state: dict[str, Any]) -> None:
        board = self.board
        board.pics.set_state(state["pics"])
        board.apics.set_state(state["apics"])
        board.ioapic.set_state(state["ioapic"])
        board.uart.set_state(state["uart"])
        board.ide.set_state(state["ide"])
        board.kbc.set_state(state["kbc"])
        board.cmos.set_state(state["cmos"])
        cga = dict(state["cga"], memory=bytes(board.cga.memory).hex())
        board.cga.set_state(cga)
        board.cga.memory = board.memory.view[Cga.BASE:Cga.BASE + Cga.SIZE]
        for disk, saved in zip(board.ide.disks, state["disks"], strict=True):
            if disk is not None and saved is not None:
                disk.set_state(saved)
        board.waiting = list(state["waiting"])
        board.set_a20(state["a20"])
        self.delivered = list(state["delivered"])


class _Pending:
    """``pic.pending[i]``: whether CPU ``i`` has an interrupt it could take."""

    def __init__(self, interrupts: PcInterrupts) -> None:
        self._interrupts = interrupts

    def __getitem__(self, index: int) -> bool:
        return self._interrupts.next_vector(index) is not None


class PcMachine(Machine):
    """A PC of ``cpus`` CPUs and ``memory_size`` bytes of RAM with ``disks`` (drive 0
    and drive 1 of the IDE channel, either may be None). ``serial(byte)`` is
    called with each byte the guest sends on COM1 (``output`` collects them too).
    Nothing runs until the firmware is installed (``install_firmware``)."""

    def __init__(self, *, cpus: int = 1, memory_size: int = DEFAULT_MEMORY,
                 disks: Sequence[Disk | None] = (), serial: Callable[[int], None] | None = None,
                 quantum: int | None = DEFAULT_QUANTUM, platform: Any = None,
                 stop_on_unmodelled: bool = True) -> None:
        if memory_size > 0xFEC00000:
            raise ValueError("a PC's RAM must end below the IOAPIC at 0xFEC00000")
        if stop_on_unmodelled:
            platform = UnmodelledWatch(NativePlatform() if platform is None else platform)
        super().__init__(cpus=cpus, memory_size=memory_size, platform=platform,
                         quantum=quantum)
        self.output = bytearray()
        self._serial = serial
        self._build_devices(list(disks) + [None] * (2 - len(disks)))
        self.waiting = [index != 0 for index in range(cpus)]
        for index, cpu in enumerate(self.cpus):
            cpu.halted = self.waiting[index]
        self.set_a20(False)

    # -- wiring ---------------------------------------------------------------
    def _build_devices(self, disks: list[Disk | None]) -> None:
        if len(disks) != 2:
            raise ValueError("the IDE channel holds two disks")
        self.apics = ApicBus(init=self._init_cpu, startup=self._startup_cpu)
        for cpu in self.cpus:
            self.apics.attach(LocalApic(apic_id=cpu.index, clock=_clock_of(cpu)))
        self.ioapic = IoApic(deliver=self._from_ioapic, apic_id=len(self.cpus))
        self.apics.eoi = self.ioapic.eoi
        self.pics = PicPair()
        self.uart = Uart16550(output=self._serial_out, irq=self.irq)
        self.ide = IdeChannel(disks=disks, irq=self.irq)
        self.kbc = KeyboardController(irq=self.irq, a20=self.set_a20)
        self.cmos = Cmos.with_memory(self.memory.size)
        self.cga = Cga(memory=self.memory.view[Cga.BASE:Cga.BASE + Cga.SIZE])
        self.memory.map_device(IoApic.BASE, IoApic.SIZE, self.ioapic)
        self.memory.map_device(ApicBus.BASE, ApicBus.SIZE, self.apics)
        self.ports = PortBus()
        self.timer = IntervalTimer(len(self.cpus), clock=lambda i: self.cpus[i].cycles)
        self.console = Console()
        self.ports.attach(self.pics, *PicPair.PORTS)
        self.ports.attach(self.timer, 0x40, 0x43)
        for device in (self.kbc, self.cmos, self.ide, self.cga, self.uart):
            self.ports.attach(device, *device.PORTS)
        self.ports.attach(self.console, 0xE9)
        for cpu in self.cpus:
            cpu.io = self.ports
        self.pic = PcInterrupts(self)

    def irq(self, line: int, level: bool) -> None:
        """An ISA interrupt request line changed level: to the IOAPIC and the 8259s."""
        self.ioapic.irq(line, level)
        self.pics.irq(line, level)

    def _from_ioapic(self, destination: int, vector: int, logical: bool, level: bool,
                     mode: int) -> None:
        self.apics.deliver_io(destination, vector, logical, level, mode)

    def _serial_out(self, byte: int) -> None:
        self.output.append(byte)
        if self._serial is not None:
            self._serial(byte)

    def set_a20(self, enabled: bool) -> None:
        """Open or close the A20 gate; every CPU takes its memory accessors again and
        forgets code decoded through the other mapping."""
        if self.memory.a20 == enabled:
            return
        self.memory.set_a20(enabled)
        from vmi.cpu.segmentation import install_accessors

        for cpu in self.cpus:
            cpu.accessor_cache.clear()
            if hasattr(cpu.rd8, "mode_key"):
                del cpu.rd8.mode_key
            install_accessors(cpu)
            cpu.forget_code()
            cpu.tlb.clear()

    # -- application processors (SDM Vol.3A §8.4.4) ---------------------------
    def _init_cpu(self, index: int) -> None:
        """INIT: the CPU resets and waits for a STARTUP (the BSP too, here)."""
        cpu = self.cpus[index]
        reset(cpu)
        cpu.halted = True
        self.waiting[index] = True

    def _startup_cpu(self, index: int, address: int) -> None:
        """STARTUP: a waiting CPU starts in real mode at CS = address >> 4, IP = 0;
        a CPU not waiting ignores it (the second STARTUP of the MP protocol)."""
        if not self.waiting[index]:
            return
        cpu = self.cpus[index]
        reset(cpu)
        from vmi.cpu.segmentation import CS, load_segment

        load_segment(cpu, CS, address >> 4)
        cpu.eip = 0
        cpu.halted = False
        self.waiting[index] = False

    # -- the machine's hooks ----------------------------------------------------
    def _raise_due(self, cpu: CPU) -> None:
        super()._raise_due(cpu)
        self.apics.apics[cpu.index].poll()

    def _next_event_cycle(self, cpu: CPU) -> int | None:
        own = super()._next_event_cycle(cpu)
        timer = self.apics.apics[cpu.index].next_event()
        if timer is None:
            return own
        return timer if own is None else min(own, timer)

    def _step_cpu(self, cpu: CPU) -> tuple[int, str, int]:
        self.memory.cpu_index = cpu.index
        return super()._step_cpu(cpu)

    def _run_quietly(self, cpu: CPU, count: int, wake: int | None) -> int:
        self.memory.cpu_index = cpu.index
        return super()._run_quietly(cpu, count, wake)


def _clock_of(cpu: CPU) -> Callable[[], int]:
    return lambda: cpu.cycles
