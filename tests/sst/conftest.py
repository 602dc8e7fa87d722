"""Session summary of the SingleStepTests run: ``sst: N passed, M failed``.

Run alone (``python -m pytest -m sst``) the verdict is the last line of output:
pytest prints its own statistics line after every ``pytest_terminal_summary``
hook, so it is printed from ``pytest_unconfigure``, the last hook that runs.
In a run of the whole suite it goes into the terminal summary instead, so that
pytest's own "N passed" line stays the last line (CI reads that one).
It appears only when SST files actually ran in this session.
"""

from __future__ import annotations

import pytest

from tests.sst.test_sst import RESULTS, breakdown_line, totals_line


def _sst_only(config: pytest.Config) -> bool:
    return (config.option.markexpr or "").strip() == "sst"


def _lines() -> list[str]:
    results = list(RESULTS.values())
    return [breakdown_line(results), totals_line(results)]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if RESULTS and not _sst_only(config):
        for line in _lines():
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not RESULTS or not _sst_only(config):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in _lines():
            reporter.write_line(line)
    else:
        print("\n".join(_lines()))
