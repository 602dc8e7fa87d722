"""Compile instruction semantics into specialised Python closures.

Each executor family writes the body of its instruction as source text in
which the instruction's constants (register numbers, displacements,
immediates, the segment) are free names. ``closure()`` compiles the body once
per distinct text (the *shape*) into a maker function and calls the maker
with this instruction's constants, so a decoded instruction costs one call of
a small closure and a shape costs one ``compile``. This is the "decode once"
of the design card; ``f.source`` keeps the text for anyone who wants to read
what runs. The compiled makers persist across processes in
``vmi.cpu.codecache``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from vmi.cpu import codecache
from vmi.cpu import flags as _flags
from vmi.cpu.errors import CPUException, StopBatch

#: Names every template may use.
TEMPLATE_GLOBALS: dict[str, Any] = {
    "CPUException": CPUException,
    "StopBatch": StopBatch,
    "ADD": _flags.ADD, "SUB": _flags.SUB, "LOGIC": _flags.LOGIC, "INC": _flags.INC,
    "DEC": _flags.DEC, "EXPLICIT": _flags.EXPLICIT, "SHL": _flags.SHL, "SHR": _flags.SHR,
    "PARITY": _flags.PARITY, "MASK": _flags.MASK,
    "get_cf": _flags.get_cf, "arith_flags": _flags.arith_flags,
    "CONDITIONS": _flags.CONDITIONS,
}

_MAKERS: dict[str, Callable[..., Any]] = {}
_SOURCES: dict[tuple[str, tuple[str, ...]], str] = {}


def maker(source: str, name: str = "_make", filename: str = "<vmi.cpu.codegen>",
          namespace: dict[str, Any] | None = None) -> Callable[..., Any]:
    """The function ``name`` defined by ``source`` (executed in ``namespace``, by
    default the template globals), compiled once per distinct source: from the
    persistent translation cache (``vmi.cpu.codecache``) when it holds it."""
    made = _MAKERS.get(source)
    if made is None:
        scope = dict(TEMPLATE_GLOBALS if namespace is None else namespace)
        exec(codecache.CACHE.code(source, filename), scope)  # noqa: S102
        made = scope[name]
        made.source = source  # type: ignore[attr-defined]
        _MAKERS[source] = made
    return made


def shape_source(body: str, names: tuple[str, ...]) -> str:
    """The maker source of a template ``body`` over the constants ``names``."""
    source = _SOURCES.get((body, names))
    if source is None:
        source = (
            f"def _make({', '.join(names)}):\n"
            f"    def execute(cpu):\n"
            f"{textwrap.indent(textwrap.dedent(body).strip(), ' ' * 8)}\n"
            f"    return execute\n"
        )
        _SOURCES[(body, names)] = source
    return source


def closure(body: str, params: dict[str, Any] | None = None) -> Callable[[Any], None]:
    """Return ``f(cpu)`` running ``body`` with ``params`` bound as constants."""
    params = params or {}
    names = tuple(sorted(params))
    return rebuild(shape_source(body, names), tuple(params[name] for name in names))


def rebuild(source: str, constants: tuple[Any, ...]) -> Callable[[Any], None]:
    """The closure of maker ``source`` over ``constants`` (in the maker's parameter
    order). ``f.source`` and ``f.constants`` are what the translation cache stores."""
    execute = maker(source)(*constants)
    execute.source = source
    execute.constants = constants
    return execute  # type: ignore[no-any-return]


def shape_count() -> int:
    """How many distinct shapes have been compiled (for tests and the benchmark)."""
    return len(_MAKERS)
