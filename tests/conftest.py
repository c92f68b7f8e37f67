"""Shared fixtures live in tests/fixtures/, one plugin module per concern."""

from __future__ import annotations

from typing import Any

from tests.fixtures.tools import report_missing_tools

pytest_plugins = [
    "tests.fixtures.zohosim",
    "tests.fixtures.db",
    "tests.fixtures.celery",
]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line at the end naming the tests skipped because this machine lacks a program."""
    report_missing_tools(terminalreporter)
