"""Instruction semantics by family, compiled into closures (see ``vmi.cpu.codegen``).

Each family module registers a *factory* per mnemonic with ``@semantics``. A
factory takes a decoded ``Instruction`` and the CPU it is compiled for (whose
code context, such as ``stack_bits``, it may bake in) and returns either a
``Template`` (source text plus constants, made with ``build``: the fast,
preferred form, which a block compiler may also inline) or a plain
``execute(cpu)`` callable (for semantics too intricate to template).

Before ``execute`` runs, the run loop has already set ``cpu.eip`` to the
next instruction; branches overwrite it. A fault is a ``CPUException``
raised before any architectural state changed (the run loop puts EIP back
on the instruction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define

from vmi.cpu.codegen import closure
from vmi.cpu.errors import UD, CPUException
from vmi.cpu.operands import Instruction, MemoryOperand

Execute = Callable[[Any], None]
Factory = Callable[[Instruction, Any], "Execute | Template"]

SEMANTICS: dict[str, Factory] = {}


def semantics(*mnemonics: str) -> Callable[[Factory], Factory]:
    """Register the decorated factory for each of ``mnemonics``."""

    def register(factory: Factory) -> Factory:
        for mnemonic in mnemonics:
            assert mnemonic not in SEMANTICS, f"two factories for {mnemonic}"
            SEMANTICS[mnemonic] = factory
        return factory

    return register


def raise_invalid(detail: str) -> Execute:
    """An ``execute`` that raises #UD (undefined or unimplemented encodings)."""

    def execute(cpu: Any) -> None:
        raise CPUException(UD, None, detail)

    return execute


def instruction_cycles(insn: Instruction) -> int:
    """The cycles one execution of ``insn`` adds (its form's, with a memory operand
    or without)."""
    form = insn.form
    memory = any(isinstance(op, MemoryOperand) for op in insn.operands)
    return form.cycles_mem if memory else form.cycles  # type: ignore[attr-defined]


def compile_instruction(insn: Instruction, cpu: Any) -> tuple[Execute, int]:
    """Return the closure that executes ``insn`` and its cycle cost."""
    cycles = instruction_cycles(insn)
    factory = SEMANTICS.get(insn.mnemonic)
    if factory is None:
        return raise_invalid(f"{insn.mnemonic} is not implemented"), cycles
    made = factory(insn, cpu)
    execute = made.compile() if isinstance(made, Template) else made
    execute.mnemonic = insn.mnemonic  # type: ignore[attr-defined]
    return execute, cycles


# -- shared snippets ------------------------------------------------------------
#: Ends a machine's quiet batch after an instruction that has done everything
#: but changed what may happen at the next boundaries: a port write (it may
#: program the timer or the interrupt controller) or an interrupt shadow (STI,
#: MOV/POP SS: the machine must clear it after the next instruction). Raised
#: last; ``CPU.run`` goes on unless asked to stop on event changes.
END_BATCH = "raise StopBatch()"


def push_source(value: str, size: int, stack_bits: int) -> str:
    """Statements pushing expression ``value`` (``size`` bytes) onto SS:eSP.

    The store comes before ESP changes, so a fault leaves ESP as it was.
    """
    if stack_bits == 32:
        return (f"sp = (r[4] - {size}) & 0xFFFFFFFF\n"
                f"cpu.wr{size * 8}(2, sp, {value})\n"
                f"r[4] = sp")
    return (f"sp = (r[4] - {size}) & 0xFFFF\n"
            f"cpu.wr{size * 8}(2, sp, {value})\n"
            f"r[4] = (r[4] & 0xFFFF0000) | sp")


def pop_source(target: str, size: int, stack_bits: int) -> str:
    """Statements reading the top of stack into variable ``target`` and releasing it."""
    if stack_bits == 32:
        return (f"{target} = cpu.rd{size * 8}(2, r[4])\n"
                f"r[4] = (r[4] + {size}) & 0xFFFFFFFF")
    return (f"{target} = cpu.rd{size * 8}(2, r[4] & 0xFFFF)\n"
            f"r[4] = (r[4] & 0xFFFF0000) | ((r[4] + {size}) & 0xFFFF)")


@define(frozen=True)
class Template:
    """An instruction's semantics as source text (the body of ``execute(cpu)``)
    and the constants its free names stand for."""

    body: str
    params: dict[str, Any]

    def compile(self) -> Execute:
        return closure(self.body, self.params)


def build(body: str, *params: dict[str, Any], **extra: Any) -> Template:
    """A ``Template`` over the union of several operands' parameter dicts."""
    merged: dict[str, Any] = {}
    for p in params:
        merged.update(p)
    merged.update(extra)
    return Template(body, merged)


# Importing the family modules fills SEMANTICS.
from vmi.cpu.ops import (  # noqa: E402,F401
    alu,
    bcd,
    bits,
    control,
    far,
    fpu,
    misc,
    move,
    muldiv,
    shift,
    stack,
    string,
    system,
)
