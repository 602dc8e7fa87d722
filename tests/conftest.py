"""Test configuration: hypothesis profiles, and a translation cache of the session's own.

``ci`` (the default) is derandomised so CI is repeatable; ``thorough`` runs
far more examples: ``VMI_HYPOTHESIS_PROFILE=thorough python -m pytest``.
Tests that must see a given number of examples set ``max_examples`` themselves
and scale it with ``example_scale()``.
"""

import os
import shutil
import tempfile

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


def pytest_configure(config):
    """Run the suite with its own translation cache (vmi.cpu.codecache), shared by
    the CLI commands it runs, so the user's cache is neither used nor filled with
    the random programs of the tests. ``VMI_CACHE_DIR`` set outside wins."""
    if "VMI_CACHE_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="vmi-test-cache-")
        os.environ["VMI_CACHE_DIR"] = directory
        config.vmi_cache_dir = directory


def pytest_unconfigure(config):
    directory = getattr(config, "vmi_cache_dir", None)
    if directory:
        from vmi.cpu import codecache

        codecache.reset(None)  # nothing is written after the directory goes
        shutil.rmtree(directory, ignore_errors=True)
