"""Fixtures every test directory may use (one real Redis per session), and CI's rule on
skips: in CI (``CI=true``) a skipped test fails, unless ``ALLOWED_SKIPS`` lists it."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Generator, Iterator

import pytest

from redis_server import session_redis_url

IN_CI = os.environ.get("CI", "").lower() in {"1", "true"}  # as the noxfile reads it

# The skips CI accepts: a test id pattern (fnmatch) -> the skip reason it must give.
# Anything else that skips in CI fails the run, so that a passing CI means every test ran.
ALLOWED_SKIPS: dict[str, str] = {
    # The memory broker run declaring no capability proves the kit skips, by name, every
    # case that needs one, and calls nothing undeclared.
    "tests/conformance/test_memory.py::TestMemoryDeclaringNothing::*": "needs Capabilities.",
}


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL, or a throwaway redis-server on a free loopback port (see redis_server)."""
    yield from session_redis_url()


def _allowed(nodeid: str, reason: str) -> bool:
    return any(
        fnmatch.fnmatchcase(nodeid, pattern) and allowed in reason
        for pattern, allowed in ALLOWED_SKIPS.items()
    )


def _fail_if_skipped_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    # A skip's longrepr is (file, line, "Skipped: reason").
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if _allowed(report.nodeid, reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{reason}\nskipped in CI (CI=true), where only the skips listed with their "
        "reason in ALLOWED_SKIPS of tests/conftest.py are allowed"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_if_skipped_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_if_skipped_in_ci(report)
    return report
