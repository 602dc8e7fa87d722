"""Errors of the monitor."""

from __future__ import annotations

from vmi.cpu.descriptors import UnsupportedSystemFeature


class MonitorRefusal(UnsupportedSystemFeature):
    """The guest asked the monitor for something it refuses rather than fakes (paging
    turned off under it, a GDT larger than a page, a 16-bit gate, a handler outside
    the guest's ring 0). A subclass of ``UnsupportedSystemFeature``, so a machine
    stops with the message instead of running on wrongly."""
