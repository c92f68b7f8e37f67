"""The end of ``make test`` names, in one line, the tests this machine could not run."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_missing_tools_are_listed_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from tests.fixtures.tools import report_missing_tools\n"
        "def pytest_terminal_summary(terminalreporter):\n"
        "    report_missing_tools(terminalreporter)\n"
    )
    pytester.makepyfile(
        "import pytest\n"
        "from tests.fixtures.tools import requires_tool\n"
        "@requires_tool('no-such-program-a1', 'apt-get install a1')\n"
        "def test_needs_a1(): pass\n"
        "@requires_tool('no-such-program-a1', 'apt-get install a1')\n"
        "def test_needs_a1_too(): pass\n"
        "@requires_tool('sh', 'always there')\n"
        "def test_needs_sh(): pass\n"
        "@pytest.mark.skip(reason='not a tool')\n"
        "def test_skipped_otherwise(): pass\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    lines = [line for line in result.outlines if "lacks a program" in line]
    assert lines == [
        "not run, this machine lacks a program (.ci/run installs them):"
        " no-such-program-a1: test_needs_a1, test_needs_a1_too"
    ]


def test_nothing_is_said_when_no_tool_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from tests.fixtures.tools import report_missing_tools\n"
        "def pytest_terminal_summary(terminalreporter):\n"
        "    report_missing_tools(terminalreporter)\n"
    )
    pytester.makepyfile("def test_ok(): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if "lacks a program" in line]
