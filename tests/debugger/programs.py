"""Small guest programs for the debugger tests, and helpers to open them.

``PROGRAM`` runs on a flat CPU at CPL 0 with its own GDT and IDT: a loop that
calls ``bump`` five times with interrupts enabled, then ``int $0x31`` into a
Linux 2.6.16-style entry that builds a ``pt_regs`` frame (orig_eax, then
SAVE_ALL), then halts. Vector 0x30 goes to ``handler``, a plain interrupt
handler for injected interrupts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROGRAM = r"""
        .text
        .globl _start
_start:
        movl $stack_top, %esp
        lgdt gdt_ptr
        lidt idt_ptr
        movl $5, %ecx
        sti
loop:
        call bump
        decl %ecx
        jnz loop
        movl $0x1234, %eax
        int $0x31
after_int:
        movl $0xdead, %eax
done:
        hlt
        jmp done

bump:
        incl counter
        ret

handler:
        pushl %eax
        movl $0x77, %eax
        incl ticks
        popl %eax
        iret

entry:
        pushl $-1
        cld
        pushl %es
        pushl %ds
        pushl %eax
        pushl %ebp
        pushl %edi
        pushl %esi
        pushl %edx
        pushl %ecx
        pushl %ebx
saved:
        popl %ebx
        popl %ecx
        popl %edx
        popl %esi
        popl %edi
        popl %ebp
        popl %eax
        popl %ds
        popl %es
        addl $4, %esp
        iret

        .data
        .align 8
gdt:
        .quad 0
        .fill 11, 8, 0
        .quad 0x00cf9a000000ffff
        .quad 0x00cf92000000ffff
gdt_end:
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
idt_ptr:
        .word 0x31 * 8 + 7
        .long idt
        .align 8
idt:
        .fill 0x30, 8, 0
        .word handler, 0x60, 0x8e00, 0
        .word entry, 0x60, 0x8e00, 0
counter:
        .long 0
ticks:
        .long 0
        .fill 64, 4, 0
stack_top:
"""

#: A program without descriptor tables whose int3 cannot be delivered: a triple fault.
TRIPLE = r"""
        .globl _start
_start:
        movl $1, %eax
        lidt empty
        int3
        hlt
empty:
        .word 0
        .long 0
"""

BASE = 0x1000


def write_program(directory: Path, source: str = PROGRAM, name: str = "prog.S") -> Path:
    path = directory / name
    path.write_text(source)
    return path


def open_engine(source: str = PROGRAM, *, cpus: int = 1, interleaving: list[int] | None = None,
                **options: Any) -> Any:
    """An ``Engine`` over ``source`` loaded at ``BASE`` on flat CPUs (1 MiB of memory).

    The interleaving is set before the engine starts its history: the machine's
    configuration is part of the snapshots the engine goes back to."""
    from vmi.asm import assemble
    from vmi.debugger import Engine
    from vmi.machine import Machine

    program = assemble(source, base=BASE)
    machine = Machine(cpus=cpus, memory_size=1 << 20, interleaving=interleaving)
    machine.memory.load(BASE, program.image)
    for index, cpu in enumerate(machine.cpus):
        cpu.enter_flat_mode(0)
        cpu.eip = program.symbols["_start"]
        cpu.regs.esp = (1 << 20) - index * 0x4000
    return Engine(machine, program.symbols, **options)


def machine_state(machine: Any) -> tuple[Any, bytes]:
    """Everything a snapshot holds, in a form ``==`` compares exactly."""
    snap = machine.snapshot()
    memory = snap.pop("memory")
    return snap, memory.tobytes()
