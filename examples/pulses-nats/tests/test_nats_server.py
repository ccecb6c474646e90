"""The server fixture: a missing nats-server skips, or fails where it is required."""

from __future__ import annotations

from pathlib import Path

import pytest

_USES_SERVER = """
from nats_server import running_nats_server

def test_needs_a_server():
    next(running_nats_server())
"""


@pytest.mark.parametrize(("required", "outcome"), [("1", "failed"), ("", "skipped")])
def test_a_missing_nats_server_fails_where_required_and_skips_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: str, outcome: str
) -> None:
    monkeypatch.setenv("PATH", str(pytester.path))  # no nats-server on it
    monkeypatch.setenv("PULSES_REQUIRE_NATS", required)
    pytester.syspathinsert(Path(__file__).parent)
    pytester.makepyfile(test_uses_server=_USES_SERVER)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:asyncio")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*nats-server is not installed*"])
