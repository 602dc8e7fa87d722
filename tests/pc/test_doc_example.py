"""docs/pc.md's wiring sketch runs, and every device it names keeps the conventions
the page states (ports, windows, snapshots)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pc.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run_example() -> dict:
    blocks = FENCE.findall(PAGE.read_text(encoding="utf-8"))
    assert blocks, "docs/pc.md has no python block"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # the page is ours
    return namespace


def test_the_wiring_sketch_runs():
    ns = run_example()
    assert ns["started"] == [(1, 0x7000)]
    assert ns["ioapic"].delivered == 1


def test_every_device_snapshot_is_json_and_round_trips():
    ns = run_example()
    for name in ("apics", "ioapic", "pics", "uart", "ide", "kbc", "cga", "cmos"):
        device = ns[name]
        saved = json.loads(json.dumps(device.state()))
        device.set_state(saved)
        assert device.state() == saved, name
        assert attrs.has(type(device)), name


def test_mmio_devices_state_their_window():
    ns = run_example()
    windows = {name: (type(ns[name]).BASE, type(ns[name]).SIZE)
               for name in ("apics", "ioapic", "cga")}
    assert windows == {"apics": (0xFEE0_0000, 0x1000), "ioapic": (0xFEC0_0000, 0x1000),
                       "cga": (0xB8000, 0x8000)}
