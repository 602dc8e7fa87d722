"""Scenarios are booted once per configuration and path for the whole session."""

from __future__ import annotations

from typing import Any

import pytest

from vmi.race.explorer import Config, Scenario, prepare

_CACHE: dict[Config, Scenario] = {}


def scenario(**options: Any) -> Scenario:
    """The prepared scenario for ``Config(**options)`` (booted once)."""
    config = Config(**options)
    if config not in _CACHE:
        _CACHE[config] = prepare(config)
    return _CACHE[config]


@pytest.fixture
def get_scenario() -> Any:
    return scenario
