"""Frames for the debugger: ``backtrace``, ``frame``/``up``/``down``, ``finish``,
``reverse-finish`` and ``reverse-nexti``.

Guest code has no debug information, so frames are found as gdb finds them
without it: by looking at the stack. ``frames`` walks the words from ESP up to
the end of the 8 KiB-aligned stack area (Linux 2.6.16 i386's THREAD_SIZE, the
kernel stack) and keeps

* a **return address**: a word just past a ``call`` instruction (``E8 rel32``,
  or ``FF /2`` through a register or memory: SDM Vol.2 CALL) - the frame of
  the function that call entered ends there; when the word sits at EBP+4 the
  frame is also an EBP frame (``push %ebp; mov %esp,%ebp``), and the chain is
  followed through the saved EBP;
* an **interrupt frame**: EIP, a code selector and a plausible EFLAGS (SDM
  Vol.3A §6.12.1, Figure 6-4), named a ``pt_regs`` frame when the Linux
  SAVE_ALL words lie below it. A frame pushed on entry from an outer
  privilege (CPL 3) is the bottom of a kernel stack: the walk stops there.

A stale return address left in an uninitialised local shows as a frame, as it
does in gdb without debug information.

``finish`` runs until the selected frame's function returns: the call/ret
pairing says the return is the first ``ret``/``iret``/``sysexit`` of the selected
CPU after which ESP is above the frame's ESP, or the privilege level changed (a
return to user mode; a callee's ``ret`` only brings ESP back to where it was at
its call). ``reverse-finish`` replays the history and goes back
to the latest ``call`` of the selected CPU whose pushed return address has not
been popped since (ESP has stayed at or below the slot), which is the call that
entered the current function (an interrupt or exception delivery counts as the
call of its handler): the machine is left just before it.
``reverse-nexti`` is ``reverse-stepi``, except that when the step it undoes is
a callee's ``ret`` it continues back to the call.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from vmi.debugger.memview import Unmapped, code_linear, read_prefix, read_u32
from vmi.debugger.views import _code_selector, _plausible_eflags

M32 = 0xFFFFFFFF
#: The stack area a walk covers: Linux 2.6.16 i386 THREAD_SIZE (8 KiB, aligned).
STACK_AREA = 0x2000
#: The most frames ``backtrace`` lists.
MAX_FRAMES = 64
_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF2, 0xF3))
#: ``ret``, ``ret imm16``, ``lret``, ``lret imm16``, ``iret`` (SDM Vol.2 RET, IRET).
_RETURNS = frozenset((0xC3, 0xC2, 0xCB, 0xCA, 0xCF))


class FrameError(Exception):
    """A frame command that cannot be carried out (the engine shows the message)."""


@frozen
class Frame:
    """One frame of a backtrace.

    ``pc`` is where the frame's code is (the next instruction for #0, the return
    address otherwise); ``esp`` the stack pointer the frame has once the frames
    below it have returned; ``slot`` the linear address of the return address
    (or of the interrupt frame) it was found at; ``kind`` is ``pc`` (#0),
    ``call``, ``interrupt`` or ``pt_regs``; ``note`` says more for the listing.
    """

    level: int
    pc: int
    esp: int
    slot: int | None
    kind: str
    note: str = ""


def _opcode(data: bytes) -> int | None:
    """The first opcode byte after any prefixes (None if there is none)."""
    for byte in data:
        if byte not in _PREFIXES:
            return byte
    return None


def is_call(data: bytes) -> bool:
    """Whether the instruction whose bytes start ``data`` is a call (near or far)."""
    index = 0
    while index < len(data) and data[index] in _PREFIXES:
        index += 1
    if index >= len(data):
        return False
    opcode = data[index]
    if opcode in (0xE8, 0x9A):
        return True
    return opcode == 0xFF and index + 1 < len(data) and (data[index + 1] >> 3) & 7 in (2, 3)


def is_return(data: bytes) -> bool:
    """Whether the instruction whose bytes start ``data`` is a ret, lret, iret or
    sysexit (``0F 35``)."""
    index = 0
    while index < len(data) and data[index] in _PREFIXES:
        index += 1
    if index >= len(data):
        return False
    return data[index] in _RETURNS or data[index:index + 2] == b"\x0f\x35"


def next_is_return(cpu: Any) -> bool:
    """Whether CPU ``cpu`` is about to execute a return instruction."""
    return not cpu.halted and is_return(read_prefix(cpu, code_linear(cpu), 5))


def next_is_call(cpu: Any) -> bool:
    """Whether CPU ``cpu`` is about to execute a call."""
    return not cpu.halted and is_call(read_prefix(cpu, code_linear(cpu), 6))


def after_call(cpu: Any, address: int) -> bool:
    """Whether a call instruction ends just before linear ``address`` (so that
    ``address`` can be a return address): ``E8 rel32``, ``FF 15 disp32``,
    ``FF /2`` with a register, a disp8 or a disp32 operand."""
    if address < 7:
        return False
    try:
        before = read_prefix(cpu, address - 7, 7)
    except Unmapped:
        return False
    if len(before) < 7:
        return False
    if before[2] == 0xE8:
        return True
    if before[5] == 0xFF and before[6] >> 6 == 3 and (before[6] >> 3) & 7 == 2:
        return True  # call *%reg
    if before[4] == 0xFF and before[5] >> 6 == 1 and (before[5] >> 3) & 7 == 2 and \
            before[5] & 7 != 4:
        return True  # call *disp8(%reg)
    return before[1] == 0xFF and (before[2] & 0xC7 in (0x05, 0x80, 0x81, 0x82, 0x83, 0x85,
                                                       0x86, 0x87)) and \
        (before[2] >> 3) & 7 == 2  # call *disp32, call *disp32(%reg)


def frames(cpu: Any, symbolize: Any, limit: int = MAX_FRAMES) -> list[Frame]:
    """The frames of ``cpu``'s stack, innermost first (see the module docstring)."""
    esp = cpu.r[4] if cpu.stack_bits == 32 else cpu.r[4] & 0xFFFF
    linear = (cpu.seg_base[2] + esp) & M32
    found = [Frame(0, code_linear(cpu), esp, None, "pc")]
    ebp = (cpu.seg_base[2] + cpu.r[5]) & M32
    end = (linear | (STACK_AREA - 1)) + 1
    here = linear
    while here + 4 <= end and len(found) < limit:
        try:
            word = read_u32(cpu, here)
        except Unmapped:
            break
        interrupt = _interrupt_frame(cpu, here, linear)
        if interrupt is not None:
            kind, note, outer, resumed_esp, saved_ebp = interrupt
            found.append(Frame(len(found), word, resumed_esp, here, kind, note))
            if outer:
                break
            if saved_ebp is not None:
                ebp = saved_ebp
            here += 12
            continue
        if symbolize(word) and after_call(cpu, word):
            note = ""
            if here == ebp + 4:
                note = "ebp frame"
                try:
                    ebp = read_u32(cpu, ebp)
                except Unmapped:
                    ebp = 0
            found.append(Frame(len(found), word, (esp + here + 4 - linear) & M32, here,
                               "call", note))
        here += 4
    return found


def _interrupt_frame(cpu: Any, at: int,
                     bottom: int) -> tuple[str, str, bool, int, int | None] | None:
    """An interrupt frame (EIP, CS, EFLAGS[, ESP, SS]) at linear ``at``: its kind,
    note, whether it came from an outer privilege, the ESP after its iret and the
    EBP a pt_regs frame below it saved (SDM Vol.3A §6.12.1)."""
    try:
        eip, cs, eflags = (read_u32(cpu, at + 4 * i) for i in range(3))
    except Unmapped:
        return None
    if not (_code_selector(cpu, cs) and _plausible_eflags(eflags)):
        return None
    outer = (cs & 3) > cpu.cpl
    after = at + (20 if outer else 12) - cpu.seg_base[2]
    note = f"interrupt frame at {at:#x}, cs={cs:#06x}"
    kind = "interrupt"
    saved_ebp = None
    base = at - 40  # SAVE_ALL's EBX..ES and ORIG_EAX: 10 words (Linux 2.6.16 entry.S)
    if base >= bottom:
        try:
            words = [read_u32(cpu, base + 4 * i) for i in range(10)]
        except Unmapped:
            words = []
        if words and words[7] <= 0xFFFF and words[8] <= 0xFFFF:
            kind = "pt_regs"
            note = f"pt_regs at {base:#x}, orig_eax={words[9]:#x}, cs={cs:#06x}"
            saved_ebp = (cpu.seg_base[2] + words[5]) & M32
    if outer:
        try:
            note += f", from cpl {cs & 3} with esp={read_u32(cpu, at + 12):#x}"
        except Unmapped:
            note += f", from cpl {cs & 3}"
    return kind, note, outer, after & M32, saved_ebp


def frame_line(frame: Frame, symbolize: Any) -> str:
    """gdb's line for a frame without debug information: ``#1  0x... in name ()``."""
    label = symbolize(frame.pc)
    name = label.split("+")[0] if label else "??"
    text = f"#{frame.level:<2} {frame.pc:#010x} in {name} ()"
    if frame.note:
        text += f"  [{frame.note}]"
    return text


class FrameCommands:
    """The frame commands, mixed into ``Engine`` (which provides the stepping core
    these use: ``_run``, ``history``, ``_step``, ``_interrupted``...)."""

    #: The frame ``frame``/``up``/``down`` selected (0 after every stop).
    frame_level: int = 0

    # -- execution -------------------------------------------------------------------
    def finish(self: Any, level: int | None = None) -> Any:
        """Run until the function of frame ``level`` (default: the selected frame)
        returns: the selected CPU's first ret/iret after which ESP is above the
        frame's ESP."""
        from vmi.debugger.engine import Stop

        index = self.selected
        self._check_runs(index)
        cpu = self.machine.cpus[index]
        chosen = self._frame(self.frame_level if level is None else level)
        above = chosen.esp
        cpl = cpu.cpl
        state = [next_is_return(cpu)]

        def returned(record: Any) -> bool:
            if record.cpu != index:
                return False
            was, state[0] = state[0], next_is_return(cpu)
            return was and record.kind == "instruction" and (cpu.r[4] > above or
                                                             cpu.cpl != cpl)

        stop = self._run(self._limit(self.step_budget), until=returned)
        if stop.reason == "until":
            stop = Stop("step", index, last=stop.last, steps=stop.steps)
        return self._stopped(stop)

    def reverse_finish(self: Any) -> Any:
        """Go back to just before the call that entered the selected frame's function
        (see the module docstring); to the start of history if it is not in it."""
        from vmi.debugger.engine import Stop, _Interrupted

        index = self.selected
        cpu = self.machine.cpus[index]
        chosen = self._frame(self.frame_level)
        try:
            step = self._entry_call(index, chosen.esp, cpu.cpl)
        except _Interrupted:
            return self._stopped(Stop("interrupted", index))
        if step is None:
            self._goto(self.history.origin)
            return self._stopped(Stop("history-begin", index))
        if not self._goto_interruptibly(step):
            return self._stopped(Stop("interrupted", index))
        return self._stopped(Stop("step", index))

    def _entry_call(self: Any, index: int, esp: int, cpl: int) -> int | None:
        """The global step of CPU ``index``'s latest call (at privilege ``cpl``) that
        pushed its return address at or above ``esp`` and has not returned since;
        None if the history holds none. Replays the history backwards, a snapshot
        interval at a time."""
        from vmi.debugger.engine import _Interrupted

        machine = self.machine
        history = self.history
        cpu = machine.cpus[index]
        highest = esp  # the highest ESP of the CPU after the steps looked at so far
        last = machine.steps
        while last > history.origin:
            start = history.nearest(last - 1)
            history.restore(start)
            seen: list[tuple[int, bool, int, int]] = []
            while machine.steps < last:
                if self._interrupted():
                    raise _Interrupted
                call = self._upcoming_cpu() == index and next_is_call(cpu)
                record = self._step(replay=True)
                if record.cpu == index:  # a delivery enters a handler as a call would
                    entry = call and record.kind == "instruction" or \
                        record.kind in ("interrupt", "exception")
                    seen.append((record.step, entry, cpu.r[4], cpu.cpl))
            for step, call, after, level in reversed(seen):
                if level != cpl:
                    continue
                if call and highest <= after:
                    return step
                highest = max(highest, after)
            last = start
        return None

    def reverse_nexti(self: Any) -> Any:
        """``reverse-stepi``, except that undoing a callee's return goes back to the
        call (the mirror of ``nexti``)."""
        index = self.selected
        cpu = self.machine.cpus[index]
        esp, cpl = cpu.r[4], cpu.cpl
        stop = self.reverse_stepi(1)
        if stop.reason == "step" and cpu.cpl == cpl and cpu.r[4] < esp and \
                next_is_return(cpu) and _opcode(read_prefix(cpu, code_linear(cpu), 5)) != 0xCF:
            self.frame_level = 0
            stop = self.reverse_finish()
        return stop

    # -- commands ----------------------------------------------------------------------
    def _frame(self: Any, level: int, *, outer: str = "") -> Frame:
        """Frame ``level`` of the selected CPU; with ``outer`` (a command name), one
        with a frame above it, as finishing it needs."""
        cpu = self.machine.cpus[self.selected]
        found = frames(cpu, self.symbolize, limit=level + 2)
        if level >= len(found):
            raise FrameError(f"No frame at level {level}.")
        if outer and level + 1 >= len(found):
            raise FrameError(f'"{outer}" not meaningful in the outermost frame.')
        return found[level]

    def _do_finish(self: Any, args: str) -> str:
        if args:
            raise FrameError("finish takes no arguments (select a frame with frame N, up)")
        chosen = self._frame(self.frame_level, outer="finish")
        header = "Run till exit from " + frame_line(chosen, self.symbolize)
        return header + "\n" + self._run_command(self.finish)

    def _do_reverse_finish(self: Any, args: str) -> str:
        if args:
            raise FrameError("reverse-finish takes no arguments")
        chosen = self._frame(self.frame_level, outer="reverse-finish")
        header = "Run back to call of " + frame_line(chosen, self.symbolize)
        return header + "\n" + self._run_command(self.reverse_finish)

    def _do_reverse_nexti(self: Any, args: str) -> str:
        count = self._count_arg(args, "reverse-nexti")

        def back() -> Any:
            stop = None
            for _ in range(count):
                stop = self.reverse_nexti()
                if stop.reason != "step":
                    break
            return stop

        return self._run_command(back)

    def _do_backtrace(self: Any, args: str) -> str:
        limit = self._ranged(args, "backtrace: count", 1, MAX_FRAMES) if args else MAX_FRAMES
        cpu = self.machine.cpus[self.selected]
        found = frames(cpu, self.symbolize, limit=limit + 1)
        lines = [frame_line(f, self.symbolize) for f in found[:limit]]
        if len(found) > limit:
            lines.append("(More stack frames follow...)")
        return "\n".join(lines)

    def _do_frame(self: Any, args: str) -> str:
        level = self.frame_level if not args else \
            self._ranged(args, "frame", 0, MAX_FRAMES - 1)
        return self._select_frame(level)

    def _do_up(self: Any, args: str) -> str:
        count = self._ranged(args, "up: count", 1, MAX_FRAMES) if args else 1
        cpu = self.machine.cpus[self.selected]
        found = frames(cpu, self.symbolize, limit=self.frame_level + count + 1)
        if self.frame_level + 1 >= len(found):
            raise FrameError("Initial frame selected; you cannot go up.")
        return self._select_frame(min(self.frame_level + count, len(found) - 1))

    def _do_down(self: Any, args: str) -> str:
        count = self._ranged(args, "down: count", 1, MAX_FRAMES) if args else 1
        if self.frame_level == 0:
            raise FrameError("Bottom (innermost) frame selected; you cannot go down.")
        return self._select_frame(max(self.frame_level - count, 0))

    def _select_frame(self: Any, level: int) -> str:
        chosen = self._frame(level)
        self.frame_level = level
        lines = [frame_line(chosen, self.symbolize)]
        cpu = self.machine.cpus[self.selected]
        try:
            lines += self._examine_code(cpu, chosen.pc, 1)[0]
        except Unmapped:
            lines.append(f"(no page at linear {chosen.pc:#x})")
        return "\n".join(lines)
