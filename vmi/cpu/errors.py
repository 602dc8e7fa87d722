"""Errors of the processor model: decode errors and architectural exceptions."""

from __future__ import annotations

#: Exception vector -> mnemonic (SDM Vol.3A §6.3.1, Table 6-1).
VECTOR_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
    8: "#DF", 9: "CSO", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
    16: "#MF", 17: "#AC", 18: "#MC",
}
DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17,
)


class DecodeError(Exception):
    """Bytes that are not one instruction; ``address`` is where decoding started."""

    def __init__(self, address: int, message: str) -> None:
        super().__init__(f"{address:#010x}: {message}")
        self.address = address


class InvalidOpcode(DecodeError):
    """An undefined encoding (the processor raises #UD for it)."""


class TruncatedInstruction(DecodeError):
    """The bytes ended in the middle of an instruction (more are needed to decode it)."""


class CPUException(Exception):
    """An architectural exception raised while executing: a fault or trap.

    ``vector`` is the exception number and ``error_code`` the code the processor
    pushes (None for vectors without one). Delivery through the IDT/IVT belongs
    to the system model; a flat CPU without one lets it propagate to the caller.
    """

    def __init__(self, vector: int, error_code: int | None = None, detail: str = "") -> None:
        self.vector = vector
        self.error_code = error_code
        self.detail = detail
        name = VECTOR_NAMES.get(vector, f"vector {vector}")
        code = "" if error_code is None else f"({error_code:#x})"
        super().__init__(f"{name}{code}{': ' + detail if detail else ''}")


class ProcessorShutdown(Exception):
    """The processor shut down: an exception arose while it delivered a double
    fault (a triple fault, SDM Vol.3A §6.15). Real mode raises
    ``vmi.cpu.realmode.Shutdown``, protected mode ``vmi.cpu.protected.TripleFault``;
    a machine stops on either with ``str(exc)`` as the reason."""


class StopBatch(Exception):
    """Raised by an instruction that has retired but changed something the run
    loop's fast path does not watch (it set EFLAGS.TF): ``CPU.run`` returns and
    the next call picks the right loop. Never leaves ``CPU.run``."""
