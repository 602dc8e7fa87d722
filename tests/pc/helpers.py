"""Small fakes the device tests wire devices to."""

from __future__ import annotations

import json


class Clock:
    """A cycle counter the test advances by hand."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Lines:
    """Records ``irq(line, level)`` calls and the present level of each line."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []
        self.level: dict[int, bool] = {}

    def __call__(self, line: int, level: bool) -> None:
        self.calls.append((line, level))
        self.level[line] = level

    def rises(self, line: int) -> int:
        return sum(1 for n, level in self.calls if n == line and level)


def through_json(state: dict) -> dict:
    """The state as a snapshot file would carry it."""
    return json.loads(json.dumps(state))


def fields(device) -> dict:
    """Every attrs field of ``device`` but the injected callables (the wiring)."""
    import attrs

    return {f.name: getattr(device, f.name) for f in attrs.fields(type(device))
            if not callable(getattr(device, f.name))}
