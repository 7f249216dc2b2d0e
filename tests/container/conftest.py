"""The container tests' figures (image size, build time, start-up, shutdown) in the run's summary."""

from __future__ import annotations

import pytest
from helpers.container import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("container image")
        for line in REPORT:
            terminalreporter.write_line(line)
