"""No skipped test can hide a suite: any skip fails the session (pytest plugin, tests/conftest.py).

A test that may legitimately not run on some machines (e.g. it needs a GPU) says so with
``@pytest.mark.may_skip("why")``; every other skip — a missing file, a missing tool, a renamed
module — turns the run red and is listed at the end.
"""

from __future__ import annotations

import pytest

_skipped: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "may_skip(reason): this test may be skipped (say why); other skips fail the run")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "may_skip" not in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _skipped:
        terminalreporter.section("skipped tests fail this run (testlib/skip_guard.py)", red=True)
        for nodeid in _skipped:
            terminalreporter.line(nodeid)
