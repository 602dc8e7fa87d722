"""Seeing memory accesses for read and access watchpoints (``rwatch``, ``awatch``).

A write watchpoint needs no help: the engine compares the watched bytes after
every step. A read leaves no trace, so while a read or access watchpoint is
enabled the engine wraps each CPU's data accessors (``cpu.rd8``..``cpu.wr32``,
through which every instruction's memory operand, stack push and pop goes:
``vmi.cpu.access``) with ones that note the accesses overlapping a watched
range, and puts them back when the last such watchpoint goes. The CPU builds
new accessors when its segments, paging or privilege change (``install`` in
``vmi.cpu.paging`` and ``segmentation``) and keeps them in
``cpu.accessor_cache``; that cache is swapped for one that wraps what it holds,
and before each step the engine re-wraps whatever the CPU installed otherwise
(real mode, a restored snapshot). With no such watchpoint nothing is wrapped
and a step costs what it did.

Instruction fetches and the processor's own reads of descriptor tables and of
the TSS are not data accesses and are not seen (as with the debug registers'
data breakpoints, SDM Vol.3B §18.2.4, R/W = 11b).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

M32 = 0xFFFFFFFF
_NAMES = ("rd8", "rd16", "rd32", "wr8", "wr16", "wr32")
_SIZES = (1, 2, 4, 1, 2, 4)


@define
class Access:
    """A data access seen during a step: CPU, linear address, size, and whether it
    was a write."""

    cpu: int
    address: int
    size: int
    write: bool


class _WrappingCache(dict):  # type: ignore[type-arg]
    """A CPU's accessor cache whose entries come out wrapped (see the module)."""

    def __init__(self, original: dict[Any, Any], wrap: Callable[[tuple[Any, ...]],
                                                                tuple[Any, ...]]) -> None:
        super().__init__()
        self.original = original
        self.wrap = wrap

    def get(self, key: Any, default: Any = None) -> Any:
        made = super().get(key)
        if made is None:
            plain = self.original.get(key)
            if plain is None:
                return default
            made = self.wrap(plain)
            super().__setitem__(key, made)
        return made

    def __setitem__(self, key: Any, value: Any) -> None:
        self.original[key] = value
        super().__setitem__(key, self.wrap(value))

    def __getitem__(self, key: Any) -> Any:
        made = self.get(key)
        if made is None:
            raise KeyError(key)
        return made

    def clear(self) -> None:
        self.original.clear()
        super().clear()


@define
class AccessWatch:
    """Watches data accesses of every CPU of ``machine`` to ``ranges`` (linear
    ``(start, end)`` pairs, end exclusive) while ``ranges`` is not empty;
    ``writes`` says whether writes are noted too. ``seen`` collects the accesses
    of the current step (``arm`` empties it)."""

    machine: Any
    ranges: list[tuple[int, int]] = field(factory=list)
    writes: bool = False
    seen: list[Access] = field(factory=list)
    _wrapped: dict[int, Any] = field(factory=dict)  # id(plain function) -> wrapper
    _plain: dict[int, Any] = field(factory=dict)  # id(wrapper) -> plain function

    @property
    def active(self) -> bool:
        return bool(self.ranges)

    def watch(self, ranges: list[tuple[int, int]], writes: bool) -> None:
        """Watch ``ranges`` from now on (none: unwrap everything)."""
        self.ranges = list(ranges)
        self.writes = writes
        if ranges:
            self.arm()
        else:
            self._unwrap()

    def arm(self) -> None:
        """Before a step: forget the last step's accesses and make sure every CPU's
        accessors are the wrapping ones (a cheap identity test when they are)."""
        self.seen.clear()
        for cpu in self.machine.cpus:
            if id(cpu.rd8) not in self._plain or id(cpu.wr8) not in self._plain:
                self._wrap_cpu(cpu)

    # -- wrapping --------------------------------------------------------------------
    def _wrap_cpu(self, cpu: Any) -> None:
        cache = cpu.accessor_cache
        if not isinstance(cache, _WrappingCache):
            cpu.accessor_cache = _WrappingCache(
                cache, lambda made, cpu=cpu: self._wrap_set(cpu, made))
        wrapped = self._wrap_set(cpu, tuple(getattr(cpu, name) for name in _NAMES))
        for name, function in zip(_NAMES, wrapped, strict=True):
            setattr(cpu, name, function)

    def _wrap_set(self, cpu: Any, made: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self._wrap(cpu, function, size, index >= 3)
                     for index, (function, size) in enumerate(zip(made, _SIZES, strict=True)))

    def _wrap(self, cpu: Any, function: Any, size: int, write: bool) -> Any:
        if id(function) in self._plain:
            return function  # already a wrapper
        known = self._wrapped.get(id(function))
        if known is not None:
            return known
        base = cpu.seg_base
        index = cpu.index
        seen = self.seen
        watch = self

        if write:
            def wrapper(seg: int, offset: int, value: int) -> None:
                function(seg, offset, value)
                if watch.writes:
                    linear = (base[seg] + offset) & M32
                    for start, end in watch.ranges:
                        if linear < end and linear + size > start:
                            seen.append(Access(index, linear, size, True))
                            break
        else:
            def wrapper(seg: int, offset: int) -> int:  # type: ignore[misc]
                value = function(seg, offset)
                linear = (base[seg] + offset) & M32
                for start, end in watch.ranges:
                    if linear < end and linear + size > start:
                        seen.append(Access(index, linear, size, False))
                        break
                return value

        for attribute in ("mode_key", "flat"):  # what install() and others look at
            if hasattr(function, attribute):
                setattr(wrapper, attribute, getattr(function, attribute))
        self._wrapped[id(function)] = wrapper
        self._plain[id(wrapper)] = function
        return wrapper

    def _unwrap(self) -> None:
        for cpu in self.machine.cpus:
            cache = cpu.accessor_cache
            if isinstance(cache, _WrappingCache):
                cpu.accessor_cache = cache.original
            for name in _NAMES:
                current = getattr(cpu, name)
                plain = self._plain.get(id(current))
                if plain is not None:
                    setattr(cpu, name, plain)
        self._wrapped.clear()
        self._plain.clear()
        self.seen.clear()
