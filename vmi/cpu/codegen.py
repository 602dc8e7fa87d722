"""Compile instruction semantics into specialised Python closures.

Each executor family writes the body of its instruction as source text in
which the instruction's constants (register numbers, displacements,
immediates, the segment) are free names. ``closure()`` compiles the body once
per distinct text (the *shape*) into a maker function and calls the maker
with this instruction's constants, so a decoded instruction costs one call of
a small closure and a shape costs one ``compile``. This is the "decode once"
of the design card; ``f.source`` keeps the text for anyone who wants to read
what runs.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from vmi.cpu import flags as _flags
from vmi.cpu.errors import CPUException, StopBatch

#: Names every template may use.
TEMPLATE_GLOBALS: dict[str, Any] = {
    "CPUException": CPUException,
    "StopBatch": StopBatch,
    "ADD": _flags.ADD, "SUB": _flags.SUB, "LOGIC": _flags.LOGIC, "INC": _flags.INC,
    "DEC": _flags.DEC, "EXPLICIT": _flags.EXPLICIT, "SHL": _flags.SHL, "SHR": _flags.SHR,
    "PARITY": _flags.PARITY,
    "get_cf": _flags.get_cf, "arith_flags": _flags.arith_flags,
    "CONDITIONS": _flags.CONDITIONS,
}

_MAKERS: dict[str, Callable[..., Callable[[Any], None]]] = {}


def closure(body: str, params: dict[str, Any] | None = None,
            extra_globals: dict[str, Any] | None = None) -> Callable[[Any], None]:
    """Return ``f(cpu)`` running ``body`` with ``params`` bound as constants."""
    params = params or {}
    names = sorted(params)
    source = (
        f"def _make({', '.join(names)}):\n"
        f"    def execute(cpu):\n"
        f"{textwrap.indent(textwrap.dedent(body).strip(), ' ' * 8)}\n"
        f"    return execute\n"
    )
    maker = _MAKERS.get(source)
    if maker is None:
        namespace: dict[str, Any] = dict(TEMPLATE_GLOBALS)
        if extra_globals:
            namespace.update(extra_globals)
        exec(compile(source, "<vmi.cpu.codegen>", "exec"), namespace)  # noqa: S102
        maker = namespace["_make"]
        maker.source = source  # type: ignore[attr-defined]
        _MAKERS[source] = maker
    execute = maker(*(params[name] for name in names))
    execute.source = source  # type: ignore[union-attr,attr-defined]
    return execute


def shape_count() -> int:
    """How many distinct shapes have been compiled (for tests and the benchmark)."""
    return len(_MAKERS)
