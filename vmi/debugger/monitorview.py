"""What the debugger shows of the VMI monitor (``vmi.hypervisor``): the virtual
processor beside the real one, the windows of the IRET race, and what the
monitor's policy did with an interrupt.

The engine asks ``MonitorView`` for

* ``fields(cpu)``: ``VIF=0 vpending=[0x20]`` for the state line (``VIF=native``
  before the CPU has called the monitor's Init: its real IF is the IF), plus
  ``pic=[...]`` while the interrupt controller holds a vector the monitor has not
  taken yet;
* ``marker(cpu)``: ``[in VMI IRET window]`` / ``[in VMI SYSEXIT window]`` when
  EIP is inside one of the ROM's windows at ring 1 (the condition under which the
  monitor applies its policy), or ``[in naive inline IRET window]`` /
  ``[in naive inline SYSEXIT window]`` for a ``naive`` kernel, whose windows are
  inline in the kernel, after the store of ``VMI_VIF``, and unknown to the monitor;
* ``counters()`` before and after every step, and ``describe(...)`` for a step
  whose counters moved: ``deferred by policy defer``, ``fixed up by policy
  fixup``, a nested injection inside a window (policy ``none``), an injection
  inside a naive window, a delivery through the ROM's pending check, an ordinary
  delivery, an interrupt made pending. The first four are *notable* (the engine
  keeps them for the whole command); the rest are reported for the last step only.

Nothing here changes the machine or the monitor: it reads the statistics
(``monitor.stats``, which ``monitor.snapshot()``/``restore()`` carry across
reverse execution) and guest memory through ``memview``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from vmi.cpu.errors import VECTOR_NAMES
from vmi.cpu.protected import ERROR_CODE_VECTORS
from vmi.debugger.memview import Unmapped, code_linear, read_linear

M32 = 0xFFFFFFFF
SS = 2
#: The monitor's names (``stats.injected``) of the exceptions that push an error code.
_ERROR_CODE_NAMES = frozenset(VECTOR_NAMES.get(v, f"{v:#04x}") for v in ERROR_CODE_VECTORS)


@frozen
class Window:
    """A stretch of code in which the IRET race can happen: ``start <= eip < end``."""

    name: str  # "VMI IRET", "naive inline SYSEXIT", ...
    start: int
    end: int
    rom: bool  # a ROM window, which the monitor knows


@frozen
class Counters:
    """The monitor statistics a step's description is computed from."""

    deferred: int
    fixups: int
    nested: int
    pending_recorded: int
    hypercalls: tuple[tuple[str, int], ...]
    injected: tuple[tuple[str, int], ...]


@frozen
class Before:
    """The stepping CPU just before a step: index, CPL, linear EIP."""

    cpu: int
    cpl: int
    linear: int


def naive_windows(program: Any) -> list[Window]:
    """The inline windows of a kernel built with the ``naive`` macro set: every
    expansion of its IRET (``... movl %eax, %ss:VMI_VIF; popl %eax; iret``) and
    STI_SYSEXIT (``movl $0x200, %ss:VMI_VIF; sysexit``) found in ``program``'s
    image; a window runs from just after the store to just after the return
    instruction. Empty if the macros cannot be assembled here."""
    try:
        from vmi.asm import assemble
        from vmi.hypervisor.layout import NAIVE_DEFINES

        patterns = []
        for macro, name, tail in (("IRET", "IRET", b"\x58\xcf"),
                                  ("STI_SYSEXIT", "SYSEXIT", b"\x0f\x35")):
            code = assemble(f"{macro}\n", macros="naive", defines=NAIVE_DEFINES, base=0).image
            if code.endswith(tail):
                patterns.append((name, code, len(code) - len(tail)))
    except Exception:  # the macro set changed shape: no markers rather than wrong ones
        return []
    image, base = program.image, program.base
    windows = []
    for name, code, start in patterns:
        offset = image.find(code)
        while offset >= 0:
            windows.append(Window(f"naive inline {name}", base + offset + start,
                                  base + offset + len(code), False))
            offset = image.find(code, offset + 1)
    return sorted(windows, key=lambda w: w.start)


class MonitorView:
    """The monitor as the debugger shows it (see the module docstring).
    ``symbolize(address)`` gives ``name+offset`` or an empty string."""

    def __init__(self, monitor: Any, machine: Any, *, windows: list[Window] | None = None,
                 symbolize: Callable[[int], str] = lambda address: "") -> None:
        self.monitor = monitor
        self.machine = machine
        self.symbolize = symbolize
        rom = monitor.rom
        self.windows: list[Window] = []
        if monitor.mode == "vmi":
            self.windows += [Window("VMI IRET", rom.iret_window.start, rom.iret_window.end, True),
                             Window("VMI SYSEXIT", rom.sysexit_window.start,
                                    rom.sysexit_window.end, True)]
        self.windows += list(windows or ())

    # -- the state line -----------------------------------------------------------------
    def active(self, cpu: Any) -> bool:
        return bool(self.monitor.vcpu(cpu).active)

    def window_at(self, cpl: int, linear: int) -> Window | None:
        """The window holding linear ``linear`` for code running at ``cpl`` (the
        deprivileged kernel runs at ring 1; nothing else is in a window)."""
        if cpl != 1:
            return None
        for window in self.windows:
            if window.start <= linear < window.end:
                return window
        return None

    def window(self, cpu: Any) -> Window | None:
        if cpu.halted or not self.active(cpu):
            return None
        return self.window_at(cpu.cpl, code_linear(cpu))

    def fields(self, cpu: Any) -> str:
        """``VIF=... vpending=[...]`` (and ``pic=[...]``) for the state line."""
        vcpu = self.monitor.vcpu(cpu)
        if not vcpu.active:
            text = "VIF=native"
        else:
            text = (f"VIF={1 if vcpu.interrupts_enabled else 0} "
                    f"vpending=[{_vectors(vcpu.pending)}]")
        pic = self.machine.pic.pending[cpu.index]
        if pic:
            text += f" pic=[{_vectors(pic)}]"
        return text

    def marker(self, cpu: Any) -> str:
        window = self.window(cpu)
        return f"[in {window.name} window]" if window is not None else ""

    # -- what a step did ------------------------------------------------------------------
    def counters(self) -> Counters:
        stats = self.monitor.stats
        return Counters(stats.deferred, stats.fixups, stats.nested_in_window,
                        stats.pending_recorded, tuple(stats.hypercalls.items()),
                        tuple(stats.injected.items()))

    def before(self, cpu: Any) -> Before:
        return Before(cpu.index, cpu.cpl, code_linear(cpu))

    def describe(self, before: Counters, after: Counters, pre: Before, kind: str,
                 value: int) -> tuple[list[str], bool]:
        """Lines saying what the monitor did in one step (``kind``/``value`` as the
        machine's step returned them), and whether they are notable."""
        cpu = self.machine.cpus[pre.cpu]
        window = self.window_at(pre.cpl, pre.linear)
        where = self._place(pre.linear)
        delivered = _increase(before.injected, after.injected)
        calls = _increase(before.hypercalls, after.hypercalls)
        # an exception with an error code has it on top of the frame
        skip = 4 if kind == "exception" and any(name in _ERROR_CODE_NAMES
                                                 for name in delivered) else 0
        frame = self._frame_eip(cpu, skip) if delivered else ""
        what = f"interrupt {value:#x}" if kind == "interrupt" else "the event"
        wname = window.name if window is not None else "ROM"
        policy = self.monitor.policy
        if after.deferred > before.deferred:
            text = (f"{what} deferred by policy {policy}: EIP {where} in the {wname} window; "
                    f"the monitor ran the guest out of the window")
            if delivered:
                text += f", then delivered {', '.join(delivered)} (frame EIP {frame})"
            else:
                text += (f" to {self._place(code_linear(cpu))}; still pending (virtual IF "
                         f"{'on' if self.monitor.vcpu(cpu).interrupts_enabled else 'off'})")
            return [text], True
        if after.fixups > before.fixups:
            return [f"{what} fixed up by policy {policy}: EIP {where} in the {wname} window; "
                    f"delivered {', '.join(delivered) or 'it'} on the frame the window was "
                    f"returning through (frame EIP {frame}), as if the return had completed: "
                    "the kernel's exit path runs again"], True
        if after.nested > before.nested:
            return [f"{what} injected inside the {wname} window (EIP {where}) by policy "
                    f"{policy}: a nested frame on the half-returned kernel stack "
                    f"(frame EIP {frame})"], True
        if kind == "interrupt" and delivered and window is not None and not window.rom:
            return [f"{what} injected inside the {wname} window (EIP {where}), which the "
                    f"monitor does not know (mode {self.monitor.mode}): a nested frame on the "
                    f"half-returned kernel stack (frame EIP {frame})"], True
        pending_calls = [name for name in calls if name.endswith("_pending")]
        if pending_calls and delivered:
            rom_call = "IRET" if "iret_pending" in pending_calls else "SYSEXIT"
            return [f"the ROM's {rom_call} found {', '.join(delivered)} pending as it "
                    f"re-enabled the virtual IF (hypercall {pending_calls[0]}): delivered on "
                    f"its frame (frame EIP {frame})"], True
        lines = []
        if calls:
            lines.append(f"hypercall {', '.join(calls)} (the ROM's ud2 at {where})")
        if delivered:
            lines.append(f"delivered {', '.join(delivered)} through the guest's IDT "
                         f"(frame EIP {frame})")
        elif kind == "interrupt":
            if after.pending_recorded > before.pending_recorded:
                text = f"{what} made pending: the virtual IF is off"
                if window is not None:
                    text += (f" (EIP {where} in the {wname} window, policy {policy}: it "
                             "waits until the guest enables interrupts)")
                lines.append(text)
            else:
                lines.append(f"{what} was already pending (it coalesces)")
        return lines, False

    # -- info monitor / info vcpu --------------------------------------------------------------
    def info_lines(self) -> list[str]:
        monitor = self.monitor
        stats = monitor.stats
        data = stats.as_dict()
        lines = [f"monitor: mode {monitor.mode}, policy {monitor.policy}"]
        exits = ", ".join(f"{k} {v}" for k, v in data["exits"].items()) or "none"
        lines.append(f"  exits          {sum(data['exits'].values())} ({exits}), "
                     f"{data['exit_cycles']} cycles")
        lines.append("  hypercalls     " + (", ".join(f"{k} {v}" for k, v in
                                                     data["hypercalls"].items()) or "none"))
        injected = ", ".join(f"{k} {v}" for k, v in data["injected"].items()) or "none"
        lines.append(f"  injected       {injected}; {data['frames']} frames built")
        lines.append(f"  window         deferred {stats.deferred}, fixed up {stats.fixups}, "
                     f"nested in the window {stats.nested_in_window}")
        lines.append(f"  pending        recorded {stats.pending_recorded}, stale "
                     f"{stats.stale_pending}")
        lines.append(f"  iret16         espfix {stats.iret16_espfix}, refused "
                     f"{stats.iret16_refused}")
        lines.append(f"  patched sites  {data['patched_sites']} ({data['skipped_sites']} "
                     "skipped)")
        for window in self.windows:
            label = self.symbolize(window.start)
            lines.append(f"  window {window.name:<22} [{window.start:#010x}, {window.end:#010x})"
                         f"{' <' + label + '>' if label else ''}")
        reports = data["reports"]
        if reports:
            lines.append(f"  reports        {len(reports)}; the last: {reports[-1]}")
        return lines

    # -- helpers -----------------------------------------------------------------------------------
    def _place(self, linear: int) -> str:
        label = self.symbolize(linear)
        return f"{linear:#x}{' <' + label + '>' if label else ''}"

    def _frame_eip(self, cpu: Any, skip: int = 0) -> str:
        """The EIP of the frame at the top of ``cpu``'s stack, ``skip`` bytes up (at a
        handler's first instruction: the interrupted place)."""
        try:
            data = read_linear(cpu, (cpu.seg_base[SS] + cpu.regs.esp + skip) & M32, 4)
        except Unmapped:
            return "unreadable"
        return self._place(int.from_bytes(data, "little"))


def _vectors(mask: int) -> str:
    return " ".join(f"{v:#x}" for v in range(256) if mask >> v & 1)


def _increase(before: tuple[tuple[str, int], ...],
              after: tuple[tuple[str, int], ...]) -> list[str]:
    """The names whose count grew from ``before`` to ``after``."""
    old = dict(before)
    return [name for name, count in after if count > old.get(name, 0)]
