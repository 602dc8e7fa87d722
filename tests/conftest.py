"""Test configuration: hypothesis profiles.

``ci`` (the default) is derandomised so CI is repeatable; ``thorough`` runs
far more examples: ``VMI_HYPOTHESIS_PROFILE=thorough python -m pytest``.
Tests that must see a given number of examples set ``max_examples`` themselves
and scale it with ``example_scale()``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=10_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("VMI_HYPOTHESIS_PROFILE", "ci"))


def example_scale() -> int:
    """How many times more examples the active profile wants (1 in CI)."""
    return 10 if os.environ.get("VMI_HYPOTHESIS_PROFILE") == "thorough" else 1
